//! Errors of the runtime.

use std::path::PathBuf;

/// Everything that can go wrong loading a `.dcz` into a [`crate::CompressedModel`] or running it.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// The file could not be read or is not a valid `.dcz` container.
    #[error("{path}: {source}")]
    Container {
        /// The file.
        path: PathBuf,
        /// Why the container was rejected.
        #[source]
        source: deepcomp_format::ContainerError,
    },
    /// The file's model id names an architecture this runtime has no forward pass for.
    #[error(
        "model `{model}` is not supported by the runtime (supported: lenet300, mlp, lenet5, \
         cifar_lenet, resnet20)"
    )]
    UnknownModel {
        /// The model id stored in the file.
        model: String,
    },
    /// A tensor the architecture needs is absent from the file.
    #[error("model `{model}`: tensor `{name}` is missing from the file")]
    MissingTensor {
        /// The model id.
        model: String,
        /// The tensor name.
        name: String,
    },
    /// A tensor has a shape that does not fit the architecture.
    #[error("tensor `{name}`: shape {found:?} does not fit: {reason}")]
    Shape {
        /// The tensor name.
        name: String,
        /// Its shape in the file.
        found: Vec<usize>,
        /// What was expected.
        reason: String,
    },
    /// A tensor's content is unusable (e.g. a code outside the codebook, a non-finite value).
    #[error("tensor `{name}`: {reason}")]
    Tensor {
        /// The tensor name.
        name: String,
        /// Why.
        reason: String,
    },
    /// The input given to `forward` does not match the model's input shape.
    #[error("input: {reason}")]
    Input {
        /// Why.
        reason: String,
    },
}

/// `Result` with [`RuntimeError`].
pub type Result<T, E = RuntimeError> = std::result::Result<T, E>;
