//! Node-to-node transport for abi.
//!
//! - [`certs`]: cluster CA and node certificates (rcgen), the `--tls-dir` layout.
//! - [`tls`]: rustls configs (TLS 1.3, ALPN `abi/1`, mutual TLS) and peer identity checks.
//! - [`frame`]: length-prefixed postcard frames with limits checked before allocation.
//! - [`envelope`]: the hello handshake and request/reply headers.
//! - [`endpoint`]: [`Transport`], the QUIC endpoint and connection manager.
//! - `remote` (feature `runtime`): `abi_runtime::Remote` for [`Transport`] and the inbound glue to a `Node`.
//! - [`backoff`]: reconnect backoff.

pub mod backoff;
pub mod certs;
pub mod endpoint;
pub mod envelope;
mod error;
pub mod frame;
#[cfg(feature = "runtime")]
pub mod remote;
pub mod tls;

pub use endpoint::{
    Inbound, InboundHandler, PeerEvent, PeerStats, PingHook, RequestMeta, Transport,
    TransportConfig,
};
pub use error::{RemoteError, TransportError};
