//! The crate's error type.

use thiserror::Error;

/// Everything that can go wrong in `deepcomp-sparsity`.
///
/// Every variant names the offending field, layer or schedule element and says why it
/// was rejected, so a CLI can print the message as is.
#[derive(Debug, Error)]
pub enum SparsityError {
    /// A percentile `q` outside `[0, 100]` (or not finite).
    #[error("{field} = {value}: a percentile must be a finite number in [0, 100]")]
    InvalidPercentile {
        /// Which parameter carried the value (e.g. `Criterion::Percentile.q`).
        field: &'static str,
        /// The rejected value.
        value: f64,
    },
    /// A fraction (sparsity target, removal ratio) outside `[0, 1]` (or not finite).
    #[error("{field} = {value}: must be a finite fraction in [0, 1]")]
    InvalidFraction {
        /// Which parameter carried the value.
        field: &'static str,
        /// The rejected value.
        value: f64,
    },
    /// A negative or non-finite standard-deviation factor `s`.
    #[error("{field} = {value}: the standard-deviation factor must be finite and >= 0")]
    InvalidStdFactor {
        /// Which parameter carried the value.
        field: &'static str,
        /// The rejected value.
        value: f64,
    },
    /// A numeric parameter that is out of its documented range.
    #[error("{field} = {value}: {reason}")]
    InvalidParameter {
        /// Which parameter carried the value.
        field: &'static str,
        /// The rejected value, printed.
        value: String,
        /// Why it was rejected.
        reason: &'static str,
    },
    /// A layer name that is not among the weights given.
    #[error("unknown layer `{name}` ({context})")]
    UnknownLayer {
        /// The name that was not found.
        name: String,
        /// Where the name came from (restriction list, previous masks, mask lookup...).
        context: &'static str,
    },
    /// The same layer name twice in one list of weights.
    #[error("layer `{name}` is given twice")]
    DuplicateLayer {
        /// The repeated name.
        name: String,
    },
    /// A weight tensor without any element.
    #[error("layer `{name}` has no elements; nothing to prune")]
    EmptyLayer {
        /// The layer.
        name: String,
    },
    /// A weight that is NaN or infinite: thresholds would be meaningless.
    #[error("layer `{name}` contains a non-finite value (NaN or infinity) at flat index {index}")]
    NonFinite {
        /// The layer.
        name: String,
        /// Flat (row-major) index of the first offending element.
        index: usize,
    },
    /// Shapes that do not agree (mask vs tensor, layer vs next layer...).
    #[error("shape mismatch for `{name}`: expected {expected:?}, got {got:?}")]
    ShapeMismatch {
        /// What was being matched.
        name: String,
        /// The shape required.
        expected: Vec<usize>,
        /// The shape found.
        got: Vec<usize>,
    },
    /// A schedule whose sparsity target goes down from one step to the next.
    #[error("schedule decreases: step {index} has target {target} after {previous}; pruning schedules must be non-decreasing")]
    DecreasingSchedule {
        /// Index of the offending step (round index, or 1 for AGP's final value).
        index: usize,
        /// The earlier target.
        previous: f64,
        /// The (smaller) later target.
        target: f64,
    },
    /// A criterion that cannot be driven by a sparsity target (the std rule).
    #[error("criterion `{criterion}` has no sparsity target: {reason}")]
    NoTarget {
        /// The criterion's name.
        criterion: &'static str,
        /// Why.
        reason: &'static str,
    },
    /// The user-supplied evaluation closure of [`crate::sensitivity`] failed.
    #[error("evaluation failed for layer `{layer}` at {level}% pruning: {message}")]
    Eval {
        /// The layer being pruned (`<dense>` for the baseline).
        layer: String,
        /// The pruning percentage.
        level: f64,
        /// The closure's error, printed.
        message: String,
    },
    /// An error from candle (device, dtype, shape operations).
    #[error("candle: {0}")]
    Candle(#[from] candle_core::Error),
}

/// `Result` with [`SparsityError`].
pub type Result<T, E = SparsityError> = std::result::Result<T, E>;

/// Rejects `q` outside `[0, 100]`.
pub(crate) fn check_percentile(field: &'static str, q: f64) -> Result<()> {
    if q.is_finite() && (0.0..=100.0).contains(&q) {
        Ok(())
    } else {
        Err(SparsityError::InvalidPercentile { field, value: q })
    }
}

/// Rejects fractions outside `[0, 1]`.
pub(crate) fn check_fraction(field: &'static str, v: f64) -> Result<()> {
    if v.is_finite() && (0.0..=1.0).contains(&v) {
        Ok(())
    } else {
        Err(SparsityError::InvalidFraction { field, value: v })
    }
}
