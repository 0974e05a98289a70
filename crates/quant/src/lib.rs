//! # deepcomp-quant: weight sharing and quantization
//!
//! The second compression stage of Deep Compression (Han, Mao & Dally, ICLR
//! 2016) replaces the surviving weights of each layer by a small codebook of
//! shared values plus one short code per weight. This crate implements that
//! stage and the uniform fixed-point quantizers users compare it with. It
//! works on plain `f32` slices and candle [`Tensor`](candle_core::Tensor)s and
//! knows nothing about models: the driver extracts a layer's weights (and its
//! pruning mask), calls in here, and writes the result back or into the
//! compressed container.
//!
//! ## Pieces
//!
//! * [`kmeans`] — exact-enough and fast **1-D k-means**. Data are sorted once;
//!   each Lloyd step then costs `O(k log n)` (midpoint boundaries by binary
//!   search, means and SSE from prefix sums). Initialisations: linear (the
//!   paper's default), density (CDF), random (Forgy) and k-means++
//!   ([`Init`]). An optional exact solver (dynamic programming with the
//!   divide-and-conquer optimisation) gives the optimal clustering for
//!   moderate inputs. Degenerate inputs are handled: empty, all equal, fewer
//!   distinct values than `k` (exact, SSE 0); NaN/inf is an error.
//! * [`share`] — **weight sharing** of one layer: [`share_weights`] clusters
//!   only the kept (nonzero or mask-selected) weights into `k = 2^bits`
//!   clusters and returns a [`SharedWeights`]: sorted codebook, positions of
//!   the kept weights, one code each. Pruned positions are not a cluster and
//!   reconstruct to exactly zero. [`SharedWeights::centroid_step`] is the
//!   paper's **trained quantization** (§3.3): codes fixed, each centroid moves
//!   by the learning rate times the summed gradient of its weights.
//!   [`default_bits`] gives the paper's widths (conv 8, fc 5).
//! * [`uniform`] — **uniform quantization**: the range-`q`, `l`-bit rounding
//!   with clipping of seed 002 (per tensor or per output channel), and the
//!   dynamic-scaling min/max fixed-point quantizer of seed 003 with a
//!   straight-through estimator for quantization-aware training (optionally
//!   keeping pruned zeros at zero).
//! * [`plan`] — [`BitPlan`]: mixed precision, i.e. bits per layer with
//!   conv/fc defaults and per-layer overrides.
//! * [`synth`] — deterministic Gaussian weights for tests and benchmarks.
//!
//! All functions are deterministic (seeded ChaCha8 where randomness is asked
//! for, ties broken towards the lower centroid) and report bad input through
//! [`QuantError`] instead of panicking.
//!
//! ```
//! use deepcomp_quant::{share_weights, Init};
//! let w = [0.0f32, 0.31, -0.52, 0.0, 0.29, -0.48, 1.1];
//! let shared = share_weights(&w, None, 2, Init::Linear).unwrap();
//! assert!(shared.codebook().len() <= 4);
//! let back = shared.reconstruct();
//! assert_eq!(back[0], 0.0); // pruned stays pruned
//! assert_eq!(back[3], 0.0);
//! ```

pub mod error;
pub mod kmeans;
pub mod plan;
pub mod share;
pub mod synth;
pub mod uniform;

pub use error::{QuantError, Result};
pub use kmeans::{assign, kmeans_1d, Init, KMeans1d, KMeansConfig, EXACT_MAX_CELLS};
pub use plan::BitPlan;
pub use share::{
    default_bits, share_tensor, share_weights, share_weights_with, tensor_to_f32_vec, SharedWeights,
};
pub use uniform::{range_codes, RangeCodes, RangeScale};
