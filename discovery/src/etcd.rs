//! etcd discovery: each node stores its [`MemberInfo`] (JSON) under
//! `<prefix>/<node id>`, attached to a lease with a TTL that a keep-alive task
//! renews at a third of the TTL. A node that dies stops renewing and its key
//! vanishes when the lease expires; a node that leaves revokes the lease.
//! Peers learn both through a watch on the prefix.

use std::time::Duration;

use abi_protocol::NodeId;
use etcd_client::{Client, ConnectOptions, EventType, GetOptions, PutOptions, WatchOptions};
use futures::StreamExt;
use futures::future::BoxFuture;
use futures::stream::BoxStream;
use tracing::{debug, warn};

use crate::{Discovery, DiscoveryError, DiscoveryEvent, MemberInfo, Registration, Seed};

/// Settings of the etcd backend (`discovery = { kind = "etcd", ... }`).
#[derive(Debug, Clone)]
pub struct EtcdConfig {
    /// etcd client URLs, e.g. `["http://127.0.0.1:2379"]`.
    pub endpoints: Vec<String>,
    /// Key prefix of this cluster, e.g. `/abi/demo/nodes`.
    pub prefix: String,
    /// Lease TTL: how long a dead node's record survives.
    pub ttl: Duration,
}

/// Discovery through etcd.
#[derive(Clone)]
pub struct EtcdDiscovery {
    client: Client,
    cfg: EtcdConfig,
}

impl std::fmt::Debug for EtcdDiscovery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdDiscovery")
            .field("cfg", &self.cfg)
            .finish()
    }
}

impl EtcdDiscovery {
    /// Connects to etcd and checks that it answers (connecting alone succeeds
    /// even with no server, so a first read is the real check).
    pub async fn connect(cfg: EtcdConfig) -> Result<Self, DiscoveryError> {
        let opts = ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(3))
            .with_timeout(Duration::from_secs(5));
        let mut client = Client::connect(&cfg.endpoints, Some(opts)).await?;
        client.get(cfg.prefix.as_bytes(), None).await?;
        Ok(Self { client, cfg })
    }

    fn key(&self, id: &NodeId) -> String {
        format!("{}/{}", self.cfg.prefix.trim_end_matches('/'), id)
    }

    fn prefix(&self) -> String {
        format!("{}/", self.cfg.prefix.trim_end_matches('/'))
    }
}

fn decode(key: &[u8], value: &[u8]) -> Result<MemberInfo, DiscoveryError> {
    serde_json::from_slice(value).map_err(|e| DiscoveryError::BadRecord {
        key: String::from_utf8_lossy(key).into_owned(),
        reason: e.to_string(),
    })
}

/// Grants a lease and stores the record under it; returns the lease id.
async fn put_record(
    client: &mut Client,
    key: &str,
    value: &str,
    ttl: Duration,
) -> Result<i64, DiscoveryError> {
    let ttl_s = i64::try_from(ttl.as_secs().max(1)).unwrap_or(i64::MAX);
    let lease = client.lease_grant(ttl_s, None).await?.id();
    client
        .put(key, value, Some(PutOptions::new().with_lease(lease)))
        .await?;
    Ok(lease)
}

/// Renews `lease` every ttl/3; if it was lost (expired during a partition),
/// registers again under a fresh lease so the node reappears.
async fn keep_alive(mut client: Client, key: String, value: String, ttl: Duration, mut lease: i64) {
    let period = (ttl / 3).max(Duration::from_millis(200));
    loop {
        let renewed: Result<bool, etcd_client::Error> = async {
            let (mut keeper, mut stream) = client.lease_keep_alive(lease).await?;
            loop {
                keeper.keep_alive().await?;
                match stream.message().await? {
                    Some(r) if r.ttl() > 0 => {}
                    _ => return Ok(false),
                }
                tokio::time::sleep(period).await;
            }
        }
        .await;
        match renewed {
            Ok(_) => debug!(%key, "etcd lease lost; registering again"),
            Err(e) => warn!(%key, error = %e, "etcd keep-alive failed; retrying"),
        }
        tokio::time::sleep(period).await;
        match put_record(&mut client, &key, &value, ttl).await {
            Ok(l) => lease = l,
            Err(e) => warn!(%key, error = %e, "etcd re-registration failed"),
        }
    }
}

impl Discovery for EtcdDiscovery {
    fn register(&self, me: MemberInfo) -> BoxFuture<'_, Result<Registration, DiscoveryError>> {
        Box::pin(async move {
            let key = self.key(&me.id);
            let value = serde_json::to_string(&me).map_err(|e| DiscoveryError::BadRecord {
                key: key.clone(),
                reason: e.to_string(),
            })?;
            let mut client = self.client.clone();
            let lease = put_record(&mut client, &key, &value, self.cfg.ttl).await?;
            let task = tokio::spawn(keep_alive(
                client.clone(),
                key.clone(),
                value,
                self.cfg.ttl,
                lease,
            ));
            let leave = Box::new(move || -> BoxFuture<'static, Result<(), DiscoveryError>> {
                Box::pin(async move {
                    // Deleting the key is what peers watch for; revoking the
                    // lease cleans up (a re-registration may have changed it).
                    client.delete(key, None).await?;
                    let _ = client.lease_revoke(lease).await;
                    Ok(())
                })
            });
            Ok(Registration::new(task, leave))
        })
    }

    fn seeds(&self) -> BoxFuture<'_, Result<Vec<Seed>, DiscoveryError>> {
        Box::pin(async move {
            let mut client = self.client.clone();
            let resp = client
                .get(self.prefix(), Some(GetOptions::new().with_prefix()))
                .await?;
            let mut out = Vec::new();
            for kv in resp.kvs() {
                match decode(kv.key(), kv.value()) {
                    Ok(m) => out.push(Seed {
                        addr: m.addr,
                        member: Some(m),
                    }),
                    Err(e) => warn!(error = %e, "skipping bad etcd member record"),
                }
            }
            Ok(out)
        })
    }

    fn watch(
        &self,
    ) -> BoxFuture<
        '_,
        Result<BoxStream<'static, Result<DiscoveryEvent, DiscoveryError>>, DiscoveryError>,
    > {
        Box::pin(async move {
            let mut client = self.client.clone();
            let prefix = self.prefix();
            let stream = client
                .watch(prefix.clone(), Some(WatchOptions::new().with_prefix()))
                .await?;
            let events = stream.flat_map(move |resp| {
                let items: Vec<Result<DiscoveryEvent, DiscoveryError>> = match resp {
                    Err(e) => vec![Err(e.into())],
                    Ok(resp) => resp
                        .events()
                        .iter()
                        .filter_map(|ev| {
                            let kv = ev.kv()?;
                            Some(match ev.event_type() {
                                EventType::Put => {
                                    decode(kv.key(), kv.value()).map(DiscoveryEvent::Up)
                                }
                                EventType::Delete => {
                                    let key = String::from_utf8_lossy(kv.key()).into_owned();
                                    let id = key.strip_prefix(&prefix).unwrap_or(&key).to_string();
                                    NodeId::new(id).map(DiscoveryEvent::Down).map_err(|e| {
                                        DiscoveryError::BadRecord {
                                            key,
                                            reason: e.to_string(),
                                        }
                                    })
                                }
                            })
                        })
                        .collect(),
                };
                futures::stream::iter(items)
            });
            Ok(Box::pin(events) as BoxStream<'static, _>)
        })
    }
}
