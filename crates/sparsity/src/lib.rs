//! # deepcomp-sparsity: the pruning stage of Deep Compression
//!
//! Deep Compression starts by pruning: weights of small magnitude are removed, the network
//! is finetuned with the removed weights held at zero, and the resulting sparse layers
//! are later quantized and entropy coded. This crate owns everything about *which*
//! weights are removed and *when*, working on named candle [`Tensor`](candle_core::Tensor)s (or `f32`
//! slices). It knows nothing about models or optimizers: the driver glues it to the
//! training loop of the models crate.
//!
//! ## Main types
//!
//! * [`Mask`] / [`MaskSet`]: one keep/prune flag per element of each named weight. They
//!   implement the **masked-finetune contract** — [`Mask::apply`] sets pruned positions
//!   to exactly `+0.0` in a weight, a gradient or any optimizer state tensor alike — and
//!   [`MaskSet::to_device`] uploads them once for per-step use ([`DeviceMasks`]).
//! * [`Criterion`] + [`compute_masks`]: magnitude by per-layer percentile (numpy
//!   semantics, bit for bit), by `s ·` standard deviation (Han's rule, `torch.std`),
//!   global magnitude (one threshold for all layers), per-layer percentiles, and random
//!   pruning as a baseline. Given the previous masks, criteria prune further among the
//!   survivors towards an *overall* target and never revive a pruned weight.
//! * [`Schedule`]: one-shot, hand-made rounds, seed 003's linear ramp (with regrowth
//!   before its final step) and Zhu & Gupta's cubic AGP ramp; it tells the loop before
//!   which epoch to prune, to what target, and whether masks are enforced.
//! * [`SparsitySummary`]: nonzero / total / sparsity per layer and in total, printed like
//!   the seeds (`Total nonzero parameters: … / Total parameters: … / Total sparsity: …`).
//! * [`sensitivity()`] → [`SensitivityTable`]: each layer pruned alone at several levels,
//!   accuracy from a caller-supplied closure, as a markdown table or CSV, and per-layer
//!   levels suggested from an accuracy budget.
//! * [`structured`]: L2-norm neuron / filter removal that physically shrinks a layer and
//!   the inputs of the next one (seed 002's `prune_layer`), giving a smaller dense model;
//!   [`structured::shrink_chain`] does it for a whole chain of linear and conv layers
//!   (conv → flatten → linear column blocks, BatchNorm channels included).
//! * [`regularize`] and [`lsq`]: L1, soft thresholding, trimmed L1 and `‖w‖₀ <= k`
//!   projection, and seed 003's Lab 1 (sparse least squares) to compare them.
//!
//! ## Units
//!
//! Criteria and sensitivity levels take **percentages** `q ∈ [0, 100]` (numpy's
//! `percentile` convention used by the seeds); schedules produce sparsity **fractions**
//! in `[0, 1]` (the seeds' "Total sparsity: 0.65"). [`Criterion::with_target`] converts.
//!
//! ## Errors
//!
//! All fallible functions return [`SparsityError`]; nonsense input (a percentile outside
//! `[0, 100]`, `s < 0`, an unknown layer name, a decreasing schedule, NaN weights, shapes
//! that do not chain) is an error naming the field, never a panic.

mod criterion;
mod error;
pub mod lsq;
mod mask;
pub mod regularize;
mod schedule;
mod sensitivity;
pub mod structured;
mod summary;

pub use criterion::{compute_masks, numpy_percentile, torch_std, Criterion};
pub use error::{Result, SparsityError};
pub use mask::{DeviceMasks, Mask, MaskSet};
pub use schedule::{PruneStep, Round, Schedule, MAX_EPOCHS};
pub use sensitivity::{sensitivity, SensitivityRow, SensitivityTable};
pub use summary::{LayerSparsity, SparsitySummary};
