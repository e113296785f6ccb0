//! The abi runtime core: OTP-style supervision on ractor and location-transparent
//! messaging by [`ActorPath`].
//!
//! # Layout
//! - [`node`]: [`Node`], the cheap-clone handle every actor gets; `ask`/`tell` by path.
//! - [`call`]: [`Call`], what an actor receives for a [`Request`], and [`ReplyTo`].
//! - [`registry`]: which local actor serves which path and which message types.
//! - [`remote`]: the [`Remote`] trait a transport implements to reach other nodes.
//! - [`error`]: [`AskError`] — timeout, no such actor, actor stopped, peer unreachable.
//! - [`supervisor`]: strategies, restart types, intensity, backoff, ordered start and
//!   reverse-order shutdown; decisions in a pure state machine ([`supervisor::decide`]),
//!   I/O in a thin ractor actor.
//! - [`events`]: the node's log of supervision events (restarts, escalations).
//! - [`metrics`]: the node's Prometheus registry (actor restarts, failures, up).
//! - [`trace`]: spans for actor messages and W3C trace context (filled in by `abi-telemetry`).
//!
//! # Usage
//! ```
//! # use std::time::Duration;
//! # use abi_runtime::*;
//! # use abi_protocol::{Request, NodeId};
//! # use ractor::{Actor, ActorRef, ActorProcessingErr};
//! # use serde::{Serialize, Deserialize};
//! #[derive(Serialize, Deserialize)]
//! struct Ping(u32);
//! impl Request for Ping { type Reply = u32; const TYPE: &'static str = "doc.ping"; }
//!
//! struct Echo;
//! impl Actor for Echo {
//!     type Msg = Call<Ping>;
//!     type State = ();
//!     type Arguments = ();
//!     async fn pre_start(&self, _: ActorRef<Self::Msg>, _: ()) -> Result<(), ActorProcessingErr> { Ok(()) }
//!     async fn handle(&self, _: ActorRef<Self::Msg>, call: Call<Ping>, _: &mut ()) -> Result<(), ActorProcessingErr> {
//!         let n = call.request().0;
//!         call.reply(n + 1);
//!         Ok(())
//!     }
//! }
//!
//! # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let node = Node::new(NodeId::new("n1")?, 1);
//! let spec = SupervisorSpec::new(Strategy::OneForOne).child(ChildSpec::worker("echo", |ctx| async move {
//!     let r = ctx.spawn(Echo, ()).await?;
//!     Ok(Started::new(r).serves::<Ping>())
//! }));
//! let root = node.start_root(spec).await?;
//! assert_eq!(node.ask(&node.path("echo")?, Ping(41), Duration::from_secs(1)).await?, 42);
//! root.shutdown(Duration::from_secs(5)).await;
//! # Ok(()) }
//! ```

pub mod call;
mod deadline;
pub mod error;
pub mod events;
pub mod metrics;
pub mod node;
pub mod registry;
pub mod remote;
mod reply;
pub mod supervisor;
pub mod trace;

pub use abi_protocol::{ActorPath, NodeId, Request};
pub use call::{Call, ReplyTo};
pub use error::AskError;
pub use node::Node;
pub use registry::{DirectRead, Started};
pub use remote::Remote;
pub use supervisor::{
    Backoff, ChildContext, ChildSpec, Intensity, Restart, RootHandle, StartError, Strategy,
    SupervisorError, SupervisorRef, SupervisorSpec,
};
