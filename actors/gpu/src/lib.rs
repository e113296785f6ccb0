//! abi-gpu: the GPU device manager subsystem.
//!
//! - [`loader`]: finds backend plugins (cdylibs) in plugin dirs, checks sha256 pins, the entry
//!   symbol, `abi_version` and `struct_size`, runs `init`, and reports every skipped plugin with
//!   a clear reason; [`inspect`] backs `abi-node plugin inspect FILE`.
//! - [`manager`]: the device manager actor ([`child_spec`]): device list, compute with cpu
//!   fallback, memory leases released when the holder is gone, periodic health checks.
//! - [`compute`]: validation of protocol compute requests into SDK ops.
#![deny(unsafe_code)]

pub mod compute;
#[allow(unsafe_code)]
mod dl;
mod elf;
pub mod loader;
pub mod manager;

pub use loader::{
    LoadError, LoadReport, LoadedPlugin, PluginConfig, PluginError, Skipped, default_plugin_dirs,
    inspect, load_all, load_plugin,
};
pub use manager::{ManagerConfig, child_spec, child_spec_with};
