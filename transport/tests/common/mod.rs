//! Shared helpers for the transport integration tests: real certificates in
//! temp dirs, real QUIC endpoints on 127.0.0.1.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use abi_protocol::{ActorPath, NodeId};
use abi_transport::certs::{self, TlsFiles};
use abi_transport::{Inbound, RemoteError, Transport, TransportConfig};
use futures::future::BoxFuture;

pub fn id(s: &str) -> NodeId {
    NodeId::new(s).expect("valid node id")
}

pub fn path(node: &str, name: &str) -> ActorPath {
    ActorPath::new(id(node), 0, name).expect("valid path")
}

/// A fresh cluster CA in `dir`.
pub fn ca(dir: &Path) {
    certs::init_ca(dir).expect("init CA");
}

/// Issues and loads a certificate for `node` from the CA in `ca_dir`.
pub fn files(ca_dir: &Path, node: &str) -> TlsFiles {
    let out = ca_dir.join(format!("node-{node}"));
    certs::issue(ca_dir, &id(node), &out).expect("issue");
    TlsFiles::load(&out).expect("load")
}

pub fn config() -> TransportConfig {
    TransportConfig {
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        idle_timeout: Duration::from_secs(2),
        keep_alive: Duration::from_millis(300),
        connect_timeout: Duration::from_secs(2),
        backoff_min: Duration::from_millis(50),
        backoff_max: Duration::from_millis(400),
        max_payload: 16 * 1024 * 1024,
        ..TransportConfig::default()
    }
}

/// Test actors behind the inbound handler:
/// `echo` answers "from:type:payload", `mirror` returns the payload,
/// `slow` never answers in time, anything else does not exist.
pub fn handler(m: Inbound) -> BoxFuture<'static, Result<Vec<u8>, RemoteError>> {
    Box::pin(async move {
        match m.to.name.as_str() {
            "echo" => Ok(format!(
                "{}:{}:{}",
                m.from_node,
                m.type_name,
                String::from_utf8_lossy(&m.payload)
            )
            .into_bytes()),
            "mirror" => Ok(m.payload),
            "slow" => {
                tokio::time::sleep(Duration::from_secs(600)).await;
                Ok(Vec::new())
            }
            _ => Err(RemoteError::NoSuchActor(m.to.to_string())),
        }
    })
}

pub fn bind(files: &TlsFiles, node: &str, incarnation: u64) -> Transport {
    bind_cfg(files, node, incarnation, config())
}

pub fn bind_cfg(files: &TlsFiles, node: &str, incarnation: u64, cfg: TransportConfig) -> Transport {
    Transport::bind(id(node), incarnation, files, cfg, Arc::new(handler)).expect("bind")
}

/// Makes each transport know every other one's address.
pub fn mesh(ts: &[&Transport]) {
    for a in ts {
        for b in ts {
            if a.node_id() != b.node_id() {
                a.add_peer(b.node_id().clone(), b.local_addr().expect("addr"));
            }
        }
    }
}
