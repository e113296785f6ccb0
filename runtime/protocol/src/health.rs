//! Readiness probes: "can this actor do its work right now?"

use serde::{Deserialize, Serialize};

use crate::Request;

/// Asks an actor to prove it can do real work (a tiny search, a one-token
/// forward pass), not merely that its mailbox is alive.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Check;

/// The outcome of a [`Check`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    /// True when the actor can serve.
    pub ready: bool,
    /// What was checked, or why it failed (paths, reasons).
    pub detail: String,
}

impl Request for Check {
    type Reply = Report;
    const TYPE: &'static str = "health.check";
}
