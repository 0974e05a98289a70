//! The driver's typed error: every library error it can meet, plus verification failures.

use std::path::{Path, PathBuf};

/// Everything that can go wrong in a pipeline run or a CLI command.
#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    /// Recipe loading or validation.
    #[error(transparent)]
    Recipe(#[from] crate::recipe::RecipeError),
    /// Dataset discovery, download or reading.
    #[error(transparent)]
    Dataset(#[from] deepcomp_datasets::DatasetError),
    /// Model building, training, checkpoints.
    #[error(transparent)]
    Model(#[from] deepcomp_models::ModelError),
    /// Pruning.
    #[error(transparent)]
    Sparsity(#[from] deepcomp_sparsity::SparsityError),
    /// Weight sharing.
    #[error(transparent)]
    Quant(#[from] deepcomp_quant::QuantError),
    /// Entropy coding.
    #[error(transparent)]
    Entropy(#[from] deepcomp_entropy::EntropyError),
    /// The `.dcz` container.
    #[error(transparent)]
    Container(#[from] crate::container::ContainerError),
    /// A tensor operation.
    #[error("tensor operation failed: {0}")]
    Candle(#[from] candle_core::Error),
    /// An I/O error on a file.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// A JSON file that does not parse.
    #[error("{path}: {message}")]
    Json {
        /// The file.
        path: PathBuf,
        /// The parser's message.
        message: String,
    },
    /// A `--device` that does not parse or cannot be opened.
    #[error("--device `{spec}`: {reason}")]
    Device {
        /// The device as given.
        spec: String,
        /// Why it cannot be used.
        reason: String,
    },
    /// An experiment file that cannot be run as written (see [`crate::experiment`]).
    #[error("experiment {file}: {reason}")]
    Experiment {
        /// The experiment file.
        file: PathBuf,
        /// What is wrong, naming the sweep, entry or column.
        reason: String,
    },
    /// The decoded file differs from the model it was written from.
    #[error("verification failed: {0}")]
    Verify(String),
    /// Anything else, described.
    #[error("{0}")]
    Other(String),
}

impl DriverError {
    /// An I/O error on `path`.
    pub fn io(path: &Path, source: std::io::Error) -> Self {
        DriverError::Io {
            path: path.to_path_buf(),
            source,
        }
    }

    /// A described error.
    pub fn msg(s: impl Into<String>) -> Self {
        DriverError::Other(s.into())
    }
}

/// Shorthand result type of the driver.
pub type Result<T, E = DriverError> = std::result::Result<T, E>;
