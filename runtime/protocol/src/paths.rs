//! Well-known actor names under a node's root, so callers never spell them.

/// The HTTP gateway.
pub const GATEWAY: &str = "gateway";
/// The vector collections manager (issue: vector collections).
pub const VECTOR: &str = "vector";
/// The inference pools' parent supervisor; pools are `inference/<model>`.
pub const INFERENCE: &str = "inference";
/// The GPU device manager.
pub const GPU: &str = "gpu";
/// The Raft group.
pub const RAFT: &str = "raft";
/// The telemetry sink.
pub const TELEMETRY: &str = "telemetry";
