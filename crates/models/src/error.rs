//! The typed error of the models crate.

use std::path::PathBuf;

/// Everything that can go wrong while building, training, evaluating or checkpointing a model.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// A tensor operation failed inside candle.
    #[error("tensor operation failed: {0}")]
    Candle(#[from] candle_core::Error),
    /// A configuration value is out of range or inconsistent; `field` names it.
    #[error("invalid configuration `{field}`: {reason}")]
    Config {
        /// Name of the offending field, e.g. `lr` or `kernel2`.
        field: String,
        /// Why the value is rejected.
        reason: String,
    },
    /// A parameter name that the model does not have.
    #[error("unknown parameter `{0}`")]
    UnknownParam(String),
    /// A tensor whose shape differs from what the model expects.
    #[error("shape mismatch for `{name}`: expected {expected:?}, found {found:?}")]
    Shape {
        /// Parameter or tensor name.
        name: String,
        /// Shape the model expects.
        expected: Vec<usize>,
        /// Shape that was supplied.
        found: Vec<usize>,
    },
    /// A checkpoint file could not be read or written, or its content is malformed.
    #[error("checkpoint {path}: {reason}")]
    Checkpoint {
        /// The checkpoint file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// An I/O error on `path`.
    #[error("{path}: {source}")]
    Io {
        /// The file involved.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A training hook (masks, centroid training, ...) reported an error.
    #[error("training hook failed: {0}")]
    Hook(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// Shorthand result type of this crate.
pub type Result<T, E = ModelError> = std::result::Result<T, E>;
