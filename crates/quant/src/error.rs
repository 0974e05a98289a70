//! The crate's error type.

/// Everything that can go wrong in `deepcomp-quant`.
///
/// Every variant names the offending argument or field and says why it was
/// rejected, so a driver can surface the message to the user unchanged.
#[derive(Debug, thiserror::Error)]
pub enum QuantError {
    /// The number of clusters requested is zero.
    #[error("invalid k = {k}: the number of clusters must be at least 1")]
    InvalidK {
        /// The rejected cluster count.
        k: usize,
    },
    /// A bit width outside the supported range was requested.
    #[error("invalid {what} = {bits}: must be in {min}..={max}")]
    InvalidBits {
        /// Which bit width (e.g. "weight-sharing bits").
        what: &'static str,
        /// The rejected value.
        bits: u8,
        /// Smallest accepted value.
        min: u8,
        /// Largest accepted value.
        max: u8,
    },
    /// An input contained NaN or an infinity.
    #[error("{what}[{index}] is {value}: only finite values can be quantized")]
    NonFinite {
        /// Which input (e.g. "values", "weights", "grad").
        what: &'static str,
        /// Flat index of the first offending element.
        index: usize,
        /// The offending value.
        value: f32,
    },
    /// Two inputs that must have the same length do not.
    #[error("length mismatch: {what} has {got} elements, expected {expected}")]
    LengthMismatch {
        /// Which input has the wrong length.
        what: &'static str,
        /// Expected length.
        expected: usize,
        /// Actual length.
        got: usize,
    },
    /// A scalar parameter is out of its valid domain.
    #[error("invalid {name} = {value}: {reason}")]
    InvalidParam {
        /// Parameter name.
        name: &'static str,
        /// The rejected value, formatted.
        value: String,
        /// Why it was rejected.
        reason: &'static str,
    },
    /// The exact (dynamic-programming) 1-D solver would need too much memory.
    #[error(
        "exact 1-D k-means on {distinct} distinct values with k = {k} needs a \
         {k}x{distinct} backtracking table ({cells} cells), above the limit of {limit} cells; \
         use Lloyd (exact = false) or fewer distinct values"
    )]
    ExactTooLarge {
        /// Number of distinct input values.
        distinct: usize,
        /// Requested number of clusters.
        k: usize,
        /// Cells the table would need.
        cells: usize,
        /// The limit ([`crate::kmeans::EXACT_MAX_CELLS`]).
        limit: usize,
    },
    /// A tensor has a shape the operation cannot handle.
    #[error("invalid shape for {what}: {reason} (got {dims:?})")]
    InvalidShape {
        /// Which tensor.
        what: &'static str,
        /// Its dimensions.
        dims: Vec<usize>,
        /// Why it is rejected.
        reason: &'static str,
    },
    /// An error from candle (tensor creation, dtype conversion, ...).
    #[error("candle: {0}")]
    Candle(#[from] candle_core::Error),
}

/// Result alias for this crate.
pub type Result<T, E = QuantError> = std::result::Result<T, E>;
