//! Consul discovery through rs-consul (the catalog API).
//!
//! Each node registers a service instance `abi-<node id>` of service
//! `<service>` with its QUIC address and port; its incarnation and labels
//! travel as tags (`abi-incarnation=N`, `abi-label:k=v`) because the catalog
//! returns no service metadata. Peers read and watch the service with
//! blocking queries (`index` + `wait`).
//!
//! Limits, said plainly: rs-consul 0.15 wraps the catalog API only, not the
//! agent API, so a TTL check that Consul itself expires cannot be registered
//! through it. The registration is refreshed every `refresh` and removed on
//! leave; a node that dies without leaving stays in the catalog, and it is
//! membership's heartbeats that declare it dead. No Consul server is
//! installable on the build machines (it is not packaged in Debian), so the
//! tests cover the record encoding and the error path against no server.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use abi_protocol::NodeId;
use futures::future::BoxFuture;
use futures::stream::BoxStream;
use rs_consul::{
    Config, Consul, DeregisterEntityPayload, GetServiceNodesRequest, QueryOptions,
    RegisterEntityPayload, RegisterEntityService, ServiceNode,
};
use tracing::warn;

use crate::{Discovery, DiscoveryError, DiscoveryEvent, MemberInfo, Registration, Seed};

const INCARNATION_TAG: &str = "abi-incarnation=";
const LABEL_TAG: &str = "abi-label:";
const ID_PREFIX: &str = "abi-";

/// Settings of the Consul backend (`discovery = { kind = "consul", ... }`).
#[derive(Debug, Clone)]
pub struct ConsulConfig {
    /// Agent address with scheme, e.g. `http://127.0.0.1:8500`.
    pub address: String,
    /// ACL token, if any.
    pub token: Option<String>,
    /// Service name shared by the cluster's nodes, e.g. `abi-demo`.
    pub service: String,
    /// How often the registration is refreshed.
    pub refresh: Duration,
    /// Longest blocking-query wait.
    pub wait: Duration,
}

/// Discovery through a Consul agent.
pub struct ConsulDiscovery {
    client: std::sync::Arc<Consul>,
    cfg: ConsulConfig,
}

impl std::fmt::Debug for ConsulDiscovery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConsulDiscovery")
            .field("cfg", &self.cfg)
            .finish()
    }
}

fn consul_err(e: impl std::fmt::Display) -> DiscoveryError {
    DiscoveryError::Consul(e.to_string())
}

/// The catalog registration for `me` (pure: tested without a server).
pub fn registration_payload(me: &MemberInfo, service: &str) -> RegisterEntityPayload {
    let mut tags = vec![format!("{INCARNATION_TAG}{}", me.incarnation)];
    tags.extend(me.labels.iter().map(|(k, v)| format!("{LABEL_TAG}{k}={v}")));
    RegisterEntityPayload {
        ID: None,
        Node: me.id.to_string(),
        Address: me.addr.ip().to_string(),
        Datacenter: None,
        TaggedAddresses: HashMap::new(),
        NodeMeta: HashMap::new(),
        Service: Some(RegisterEntityService {
            ID: Some(format!("{ID_PREFIX}{}", me.id)),
            Service: service.to_string(),
            Tags: tags,
            TaggedAddresses: HashMap::new(),
            Meta: HashMap::new(),
            Port: Some(me.addr.port()),
            Namespace: None,
        }),
        Checks: Vec::new(),
        SkipNodeUpdate: None,
    }
}

/// Rebuilds a member record from a catalog entry (pure: tested without a server).
pub fn member_from_service(sn: &ServiceNode) -> Result<MemberInfo, DiscoveryError> {
    let s = &sn.service;
    let bad = |reason: String| DiscoveryError::BadRecord {
        key: s.id.clone(),
        reason,
    };
    let id =
        s.id.strip_prefix(ID_PREFIX)
            .ok_or_else(|| bad(format!("service id does not start with {ID_PREFIX:?}")))?;
    let id = NodeId::new(id).map_err(|e| bad(e.to_string()))?;
    let host = if s.address.is_empty() {
        &sn.node.address
    } else {
        &s.address
    };
    let ip: std::net::IpAddr = host
        .parse()
        .map_err(|e| bad(format!("address {host:?}: {e}")))?;
    let mut incarnation = None;
    let mut labels = BTreeMap::new();
    for t in &s.tags {
        if let Some(n) = t.strip_prefix(INCARNATION_TAG) {
            incarnation = Some(
                n.parse::<u64>()
                    .map_err(|e| bad(format!("tag {t:?}: {e}")))?,
            );
        } else if let Some(kv) = t.strip_prefix(LABEL_TAG)
            && let Some((k, v)) = kv.split_once('=')
        {
            labels.insert(k.to_string(), v.to_string());
        }
    }
    Ok(MemberInfo {
        id,
        addr: std::net::SocketAddr::new(ip, s.port),
        incarnation: incarnation.ok_or_else(|| bad("no incarnation tag".into()))?,
        labels,
    })
}

impl ConsulDiscovery {
    /// Builds the client (no request is made until the first operation).
    pub fn new(cfg: ConsulConfig) -> Self {
        let client = Consul::new(Config {
            address: cfg.address.clone(),
            token: cfg.token.clone(),
            ..Config::default()
        });
        Self {
            client: std::sync::Arc::new(client),
            cfg,
        }
    }

    async fn query(
        client: &Consul,
        service: &str,
        index: Option<u64>,
        wait: Duration,
    ) -> Result<(Vec<MemberInfo>, u64), DiscoveryError> {
        let req = GetServiceNodesRequest {
            service,
            passing: false,
            ..Default::default()
        };
        let opts = QueryOptions {
            index,
            wait: index.map(|_| wait),
            timeout: Some(wait + Duration::from_secs(5)),
            ..Default::default()
        };
        let resp = client
            .get_service_nodes(req, Some(opts))
            .await
            .map_err(consul_err)?;
        let mut out = Vec::new();
        for sn in &resp.response {
            match member_from_service(sn) {
                Ok(m) => out.push(m),
                Err(e) => warn!(error = %e, "skipping bad consul record"),
            }
        }
        Ok((out, resp.index))
    }
}

impl Discovery for ConsulDiscovery {
    fn register(&self, me: MemberInfo) -> BoxFuture<'_, Result<Registration, DiscoveryError>> {
        Box::pin(async move {
            let payload = registration_payload(&me, &self.cfg.service);
            self.client
                .register_entity(&payload)
                .await
                .map_err(consul_err)?;
            let client = self.client.clone();
            let refresh = self.cfg.refresh;
            let again = payload.clone();
            let task = tokio::spawn(async move {
                loop {
                    tokio::time::sleep(refresh).await;
                    if let Err(e) = client.register_entity(&again).await {
                        warn!(error = %e, "consul re-registration failed");
                    }
                }
            });
            let client = self.client.clone();
            let leave = Box::new(move || -> BoxFuture<'static, Result<(), DiscoveryError>> {
                Box::pin(async move {
                    let d = DeregisterEntityPayload {
                        Node: Some(payload.Node.clone()),
                        Datacenter: None,
                        CheckID: None,
                        ServiceID: payload.Service.as_ref().and_then(|s| s.ID.clone()),
                        Namespace: None,
                    };
                    client.deregister_entity(&d).await.map_err(consul_err)
                })
            });
            Ok(Registration::new(task, leave))
        })
    }

    fn seeds(&self) -> BoxFuture<'_, Result<Vec<Seed>, DiscoveryError>> {
        Box::pin(async move {
            let (members, _) =
                Self::query(&self.client, &self.cfg.service, None, self.cfg.wait).await?;
            Ok(members
                .into_iter()
                .map(|m| Seed {
                    addr: m.addr,
                    member: Some(m),
                })
                .collect())
        })
    }

    fn watch(
        &self,
    ) -> BoxFuture<
        '_,
        Result<BoxStream<'static, Result<DiscoveryEvent, DiscoveryError>>, DiscoveryError>,
    > {
        Box::pin(async move {
            let (members, index) =
                Self::query(&self.client, &self.cfg.service, None, self.cfg.wait).await?;
            let known: BTreeMap<NodeId, MemberInfo> =
                members.into_iter().map(|m| (m.id.clone(), m)).collect();
            let state = (self.client.clone(), self.cfg.clone(), known, index);
            // Each blocking query returns the whole list; diff it against the last one.
            let s = futures::stream::unfold(state, |(client, cfg, known, index)| async move {
                match Self::query(&client, &cfg.service, Some(index), cfg.wait).await {
                    Ok((members, new_index)) => {
                        let now: BTreeMap<NodeId, MemberInfo> =
                            members.into_iter().map(|m| (m.id.clone(), m)).collect();
                        let mut evs: Vec<Result<DiscoveryEvent, DiscoveryError>> = now
                            .values()
                            .filter(|m| known.get(&m.id) != Some(m))
                            .map(|m| Ok(DiscoveryEvent::Up(m.clone())))
                            .collect();
                        evs.extend(
                            known
                                .keys()
                                .filter(|id| !now.contains_key(*id))
                                .map(|id| Ok(DiscoveryEvent::Down(id.clone()))),
                        );
                        // An index that goes backwards means a reset: start over (Consul docs).
                        let next = if new_index < index { 0 } else { new_index };
                        Some((futures::stream::iter(evs), (client, cfg, now, next)))
                    }
                    Err(e) => {
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        Some((
                            futures::stream::iter(vec![Err(e)]),
                            (client, cfg, known, index),
                        ))
                    }
                }
            });
            Ok(Box::pin(futures::StreamExt::flatten(s)) as BoxStream<'static, _>)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn me() -> MemberInfo {
        MemberInfo {
            id: NodeId::new("node-a").expect("id"),
            addr: "10.0.0.5:7700".parse().expect("addr"),
            incarnation: 42,
            labels: BTreeMap::from([("gpu".to_string(), "true".to_string())]),
        }
    }

    #[test]
    fn record_round_trips_through_a_catalog_entry() {
        let p = registration_payload(&me(), "abi-demo");
        let svc = p.Service.clone().expect("service");
        // What the catalog answers for that registration (JSON as Consul sends it).
        let json = serde_json::json!({
            "Node": {"ID": "x", "Node": p.Node, "Address": p.Address, "Datacenter": "dc1"},
            "Service": {"ID": svc.ID, "Service": svc.Service, "Address": "",
                        "Port": svc.Port, "Tags": svc.Tags}
        });
        let sn: ServiceNode = serde_json::from_value(json).expect("catalog entry");
        assert_eq!(member_from_service(&sn).expect("member"), me());
    }

    #[test]
    fn foreign_or_broken_entries_are_refused() {
        let entry = |id: &str, tags: Vec<&str>| -> ServiceNode {
            serde_json::from_value(serde_json::json!({
                "Node": {"ID": "x", "Node": "n", "Address": "10.0.0.1", "Datacenter": "dc1"},
                "Service": {"ID": id, "Service": "abi-demo", "Address": "", "Port": 1, "Tags": tags}
            }))
            .expect("entry")
        };
        assert!(member_from_service(&entry("web-1", vec!["abi-incarnation=1"])).is_err());
        assert!(member_from_service(&entry("abi-a", vec![])).is_err());
        assert!(member_from_service(&entry("abi-a", vec!["abi-incarnation=x"])).is_err());
        assert!(member_from_service(&entry("abi-a b", vec!["abi-incarnation=1"])).is_err());
        let ok = member_from_service(&entry("abi-a", vec!["abi-incarnation=1"])).expect("ok");
        assert_eq!(ok.addr, "10.0.0.1:1".parse().expect("addr"));
    }

    #[tokio::test]
    async fn no_server_is_a_clear_error() {
        // A port nobody listens on.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("port");
        let d = ConsulDiscovery::new(ConsulConfig {
            address: format!("http://127.0.0.1:{port}"),
            token: None,
            service: "abi-test".into(),
            refresh: Duration::from_secs(5),
            wait: Duration::from_secs(1),
        });
        let e = d.seeds().await.expect_err("no server");
        assert!(matches!(e, DiscoveryError::Consul(_)), "{e}");
        let e = d.register(me()).await.expect_err("no server");
        assert!(matches!(e, DiscoveryError::Consul(_)), "{e}");
    }
}
