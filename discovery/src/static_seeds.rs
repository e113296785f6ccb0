//! Static discovery: seed addresses from TOML or `--seeds`.
//!
//! Seeds are addresses only; a seed's node id is learnt from its certificate
//! when it is dialled. Nothing is registered anywhere: the other nodes learn
//! about this one when it dials them.

use std::net::{SocketAddr, ToSocketAddrs};

use futures::future::BoxFuture;
use futures::stream::BoxStream;

use crate::{Discovery, DiscoveryError, DiscoveryEvent, MemberInfo, Registration, Seed};

/// Discovery from a fixed list of seed addresses.
#[derive(Debug, Clone)]
pub struct StaticSeeds {
    seeds: Vec<SocketAddr>,
}

impl StaticSeeds {
    /// Parses `host:port` seeds (names are resolved once, here).
    pub fn parse<S: AsRef<str>>(seeds: &[S]) -> Result<Self, DiscoveryError> {
        let mut out = Vec::new();
        for s in seeds {
            let s = s.as_ref().trim();
            if s.is_empty() {
                continue;
            }
            let bad = |reason: String| DiscoveryError::BadAddress {
                addr: s.to_string(),
                reason,
            };
            let addr = s
                .to_socket_addrs()
                .map_err(|e| bad(format!("{e} (expected host:port)")))?
                .next()
                .ok_or_else(|| bad("name resolves to no address".into()))?;
            if !out.contains(&addr) {
                out.push(addr);
            }
        }
        Ok(Self { seeds: out })
    }

    /// The parsed seed addresses.
    pub fn addrs(&self) -> &[SocketAddr] {
        &self.seeds
    }
}

impl Discovery for StaticSeeds {
    fn register(&self, _me: MemberInfo) -> BoxFuture<'_, Result<Registration, DiscoveryError>> {
        Box::pin(async { Ok(Registration::none()) })
    }

    fn seeds(&self) -> BoxFuture<'_, Result<Vec<Seed>, DiscoveryError>> {
        let seeds = self
            .seeds
            .iter()
            .map(|&addr| Seed { addr, member: None })
            .collect();
        Box::pin(async move { Ok(seeds) })
    }

    fn watch(
        &self,
    ) -> BoxFuture<
        '_,
        Result<BoxStream<'static, Result<DiscoveryEvent, DiscoveryError>>, DiscoveryError>,
    > {
        Box::pin(async { Ok(Box::pin(futures::stream::empty()) as BoxStream<'static, _>) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_dedups_and_rejects() {
        let s = StaticSeeds::parse(&["127.0.0.1:7700", " 127.0.0.1:7701", "", "127.0.0.1:7700"])
            .expect("parse");
        assert_eq!(s.addrs().len(), 2);
        let e = StaticSeeds::parse(&["127.0.0.1"]).expect_err("no port");
        assert!(e.to_string().contains("127.0.0.1"), "{e}");
        assert!(StaticSeeds::parse(&["nonsense:port"]).is_err());
    }

    #[tokio::test]
    async fn seeds_have_no_ids_and_watch_ends() {
        use futures::StreamExt;
        let s = StaticSeeds::parse(&["127.0.0.1:7700"]).expect("parse");
        let seeds = s.seeds().await.expect("seeds");
        assert_eq!(
            seeds,
            vec![Seed {
                addr: "127.0.0.1:7700".parse().expect("addr"),
                member: None
            }]
        );
        let mut w = s.watch().await.expect("watch");
        assert!(w.next().await.is_none());
    }
}
