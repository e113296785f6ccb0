//! Who may call what: API keys (salted hashes in a keys file), roles per
//! route, per-key rate limits.
//!
//! - [`keys`]: the keys file, key creation and verification.
//! - [`jwt`]: HS256/RS256 bearer tokens.
//! - [`roles`]: the role every route requires.
//! - [`limit`]: per-key token buckets (429 with `Retry-After`).
//! - [`middleware`]: the actix middleware tying them together, plus request ids.

pub mod jwt;
pub mod keys;
pub mod limit;
pub mod middleware;
pub mod roles;

pub use keys::{KeyStore, Role};
