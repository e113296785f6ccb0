//! abi-sdk: the versioned C ABI for hardware backend plugins.
//!
//! - [`ffi`]: the raw `#[repr(C)]` types, identical to `include/abi_plugin.h`.
//! - [`Backend`] + [`export_backend!`]: write a plugin in safe Rust; the macro emits the
//!   `abi_plugin_entry` symbol and C glue that validates arguments and catches panics.
//! - [`host`]: load-side wrapper ([`host::Plugin`], [`host::Context`]) that checks a table's
//!   `abi_version` and `struct_size` and calls it safely.
//! - [`testing`]: the conformance suite every backend must pass; [`reference`]: scalar truth.
#![deny(unsafe_code)]

pub mod backend;
#[allow(unsafe_code)]
pub mod boundary;
pub mod bytes;
pub mod device;
pub mod error;
pub mod ffi;
pub mod op;
pub mod reference;
pub mod testing;

pub use backend::Backend;
pub use boundary::host;
pub use device::{DeviceInfo, DeviceKind};
pub use error::{BackendError, ErrorKind};
pub use op::{Metric, Op, OpKind};

/// Path of the C header, for build scripts and tests that compile C plugins.
pub const C_HEADER_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/include");

/// Exports a [`Backend`] implementation as this library's `abi_plugin_entry`.
///
/// ```ignore
/// abi_sdk::export_backend!(CpuBackend, name = "cpu", version = env!("CARGO_PKG_VERSION"));
/// ```
#[macro_export]
macro_rules! export_backend {
    ($ty:ty, name = $name:expr, version = $version:expr) => {
        impl $crate::boundary::export::Exported for $ty {
            fn slot()
            -> &'static ::std::sync::OnceLock<::std::result::Result<Self, ::std::string::String>>
            {
                static SLOT: ::std::sync::OnceLock<
                    ::std::result::Result<$ty, ::std::string::String>,
                > = ::std::sync::OnceLock::new();
                &SLOT
            }
        }

        /// The plugin entry point (see `abi_plugin.h`).
        #[unsafe(no_mangle)]
        pub extern "C" fn abi_plugin_entry() -> *const $crate::ffi::AbiBackend {
            static DESCRIPTOR: $crate::boundary::export::StaticDescriptor =
                $crate::boundary::export::descriptor::<$ty>(
                    concat!($name, "\0"),
                    concat!($version, "\0"),
                );
            DESCRIPTOR.as_ptr()
        }
    };
}
