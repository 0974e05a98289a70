//! # deepcomp-driver
//!
//! The part of deepcomp that users run. The other crates each own one idea (entropy coding, datasets,
//! sparsity, weight sharing, models); this crate strings them into Deep Compression's pipeline and
//! owns everything that is about *files a user keeps*:
//!
//! - [`recipe`]: TOML recipes (model, dataset, schedules, pruning, bits per layer), validated with
//!   errors that name the field; built-in recipes are embedded.
//! - [`pipeline`]: the stages train → prune → masked finetune → k-means sharing → centroid finetune →
//!   encode → decode + verify + evaluate, each resumable from its checkpoint.
//! - [`hooks`]: the training hooks that keep pruned weights at zero and train shared centroids.
//! - [`container`]: the `.dcz` file format, re-exported from the `deepcomp-format` crate (specified
//!   byte by byte in `docs/FORMAT.md`).
//! - [`compress`]: data-free compression of any safetensors file, and decompression back to one.
//! - [`report`] and [`plot`]: `report.json`, `report.md` and SVG charts.
//! - [`summary`]: the JSON documents of `compress`, `inspect` and `eval` with `--json`.
//! - [`verbosity`]: how much goes to standard error (`-q`, `-v`).
//! - [`overrides`]: `--set KEY=VALUE` on any recipe field, applied to the TOML before it is read.
//! - [`sweep`] and [`sweep_plot`]: `deepcomp sweep`, the pipeline over a grid of overrides with shared
//!   stages reused, its summary and its accuracy-vs-ratio chart.
//! - [`experiment`]: `deepcomp experiment`, a file of sweeps that reproduces a notebook's tables,
//!   with the notebook's figures beside ours in `experiment.md`.
//! - [`resume`]: stage inputs recorded in every checkpoint (a changed recipe redoes the stages it
//!   affects), the output-folder lock and the clean-up after a kill.
//! - [`lsq`]: `deepcomp lsq`, seed 003's sparse least-squares lab with its figures.
//! - [`bench`](mod@bench): throughput figures for `cargo xtask bench`.
//! - [`epoch`]: `--device` parsing (`cpu`, `cuda`, `cuda:N`) and the per-epoch timing of
//!   `deepcomp train-epoch`, compared with PyTorch on a GPU (built with the `cuda` feature).
//!
//! The compression ratio this crate reports as `ratio.file` is always measured on the bytes of a file
//! that was written, read back and checked bit-exact against the quantized model.

pub mod bench;
pub mod compress;
pub mod engine;
pub mod epoch;
pub mod error;
pub mod experiment;
pub mod fsutil;
pub mod hooks;
pub mod lsq;
pub mod meta;
pub mod overrides;
pub mod pipeline;
pub mod plot;
pub mod recipe;
pub mod report;
pub mod resume;
pub mod sensitivity;
pub mod summary;
pub mod sweep;
pub mod sweep_plot;
pub mod verbosity;

pub use error::{DriverError, Result};

/// The `.dcz` container, re-exported from `deepcomp-format` (which has no candle dependency).
pub use deepcomp_format as container;
