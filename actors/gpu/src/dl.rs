//! The only place that calls into the dynamic loader.

use std::path::Path;

use abi_sdk::ffi::{AbiPluginEntry, ENTRY_SYMBOL};
use abi_sdk::host::Plugin;

use crate::loader::PluginError;

/// Opens `path`, resolves the entry symbol and validates the table it returns.
/// A library whose table is accepted stays loaded for the life of the process: function
/// pointers into it are kept in [`Plugin`]s, and unloading plugins is a non-goal.
pub(crate) fn open(path: &Path) -> Result<Plugin, PluginError> {
    // SAFETY: loading a library runs its initialisers; plugin dirs are operator-controlled and
    // optionally sha256-pinned (checked by the caller before we get here).
    let lib =
        unsafe { libloading::Library::new(path) }.map_err(|e| PluginError::Open(e.to_string()))?;
    // SAFETY: we ask for the entry symbol with the signature the ABI defines for it.
    let entry: AbiPluginEntry = match unsafe { lib.get::<AbiPluginEntry>(ENTRY_SYMBOL.as_bytes()) }
    {
        Ok(sym) => *sym,
        Err(e) => {
            return Err(PluginError::MissingSymbol(format!(
                "`{ENTRY_SYMBOL}` not found: {e}"
            )));
        }
    };
    // SAFETY: `entry` follows the ABI by contract of the symbol name; the library is kept
    // loaded forever below if the table is accepted.
    let plugin = unsafe { Plugin::from_entry(entry) }.map_err(PluginError::Table)?;
    std::mem::forget(lib);
    Ok(plugin)
}
