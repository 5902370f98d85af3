//! The crate's error type: every variant says what was wrong and where.

use std::path::PathBuf;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: cannot decode image: {reason} (is the file complete and a JPEG, PNG or BMP?)")]
    Decode { path: PathBuf, reason: String },
    #[error("{path}: cannot encode image: {reason}")]
    Encode { path: PathBuf, reason: String },
    #[error("{path}: not a Middlebury .flo file: {reason}")]
    FloFormat { path: PathBuf, reason: String },
    #[error("size mismatch: {what}: expected {expected}, got {got}")]
    SizeMismatch { what: String, expected: String, got: String },
    #[error("{what}: non-finite value {value} at index {index}")]
    NonFinite { what: String, index: usize, value: f32 },
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    #[error("unknown label {label:?} for {taxonomy}; known labels: {known}")]
    UnknownLabel { label: String, taxonomy: String, known: String },
    #[error("{path}: {reason}")]
    Data { path: PathBuf, reason: String },
    /// A model file, manifest or inference problem.
    #[error("{0}")]
    Model(String),
    /// A model bundle that cannot be read or must not be trusted; the text says which.
    #[error("{0}")]
    Bundle(String),
    /// Key text that is not a usable key, or a key that cannot be made.
    #[error("{0}")]
    Key(String),
    /// A key file that cannot be read, written or used.
    #[error("{path}: {reason}")]
    KeyFile { path: PathBuf, reason: String },
    /// A model push that failed or that the device refused; the text says which.
    #[error("{0}")]
    Push(String),
    /// A peer whose key is not the expected one, or that does not trust ours: never retried.
    #[error("{0}")]
    Untrusted(String),
    /// The device is busy with the same upload from another client.
    #[error("busy: {0}")]
    PushBusy(String),
}

impl Error {
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io { path: path.into(), source }
    }
    pub fn size(what: impl Into<String>, expected: impl ToString, got: impl ToString) -> Self {
        Error::SizeMismatch { what: what.into(), expected: expected.to_string(), got: got.to_string() }
    }
}

/// Fails with the index of the first NaN or infinity in `values`.
pub fn check_finite(what: &str, values: &[f32]) -> Result<()> {
    match values.iter().position(|v| !v.is_finite()) {
        None => Ok(()),
        Some(index) => Err(Error::NonFinite { what: what.to_string(), index, value: values[index] }),
    }
}
