//! Everything that touches raw pointers: the plugin-side glue behind [`crate::export_backend!`]
//! ([`export`]) and the host-side wrapper around a loaded table ([`host`]). This is the only
//! module of the crate allowed to use `unsafe`.

pub mod export;
pub mod host;
