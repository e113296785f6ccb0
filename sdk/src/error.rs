//! Errors on both sides of the boundary, and their mapping to status codes.

use crate::ffi;

/// What went wrong, as a status class (maps 1:1 to `ABI_ERR_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// Bad sizes, null pointers, unknown op.
    InvalidArgument,
    /// Allocation failed.
    OutOfMemory,
    /// Op or feature not provided by this backend or device.
    Unsupported,
    /// The device or driver failed.
    Device,
    /// A panic was caught inside the plugin.
    Panic,
    /// `init` was not called or failed.
    NotInitialized,
    /// A status code this version does not know.
    Unknown(i32),
}

impl ErrorKind {
    /// The status code.
    pub fn status(self) -> ffi::AbiStatus {
        match self {
            ErrorKind::InvalidArgument => ffi::ABI_ERR_INVALID_ARGUMENT,
            ErrorKind::OutOfMemory => ffi::ABI_ERR_OUT_OF_MEMORY,
            ErrorKind::Unsupported => ffi::ABI_ERR_UNSUPPORTED,
            ErrorKind::Device => ffi::ABI_ERR_DEVICE,
            ErrorKind::Panic => ffi::ABI_ERR_PANIC,
            ErrorKind::NotInitialized => ffi::ABI_ERR_NOT_INITIALIZED,
            ErrorKind::Unknown(c) => c,
        }
    }

    /// Parses a non-OK status code.
    pub fn from_status(code: ffi::AbiStatus) -> Self {
        match code {
            ffi::ABI_ERR_INVALID_ARGUMENT => ErrorKind::InvalidArgument,
            ffi::ABI_ERR_OUT_OF_MEMORY => ErrorKind::OutOfMemory,
            ffi::ABI_ERR_UNSUPPORTED => ErrorKind::Unsupported,
            ffi::ABI_ERR_DEVICE => ErrorKind::Device,
            ffi::ABI_ERR_PANIC => ErrorKind::Panic,
            ffi::ABI_ERR_NOT_INITIALIZED => ErrorKind::NotInitialized,
            other => ErrorKind::Unknown(other),
        }
    }
}

/// An error raised by a backend (plugin side) or reported through the ABI (host side).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{kind:?}: {message}")]
pub struct BackendError {
    /// Status class.
    pub kind: ErrorKind,
    /// Human-readable reason.
    pub message: String,
}

impl BackendError {
    /// Builds an error of any kind.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }
    /// `InvalidArgument`.
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::InvalidArgument, message)
    }
    /// `Unsupported`.
    pub fn unsupported(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Unsupported, message)
    }
    /// `Device`.
    pub fn device(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Device, message)
    }
    /// `OutOfMemory`.
    pub fn oom(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::OutOfMemory, message)
    }
}
