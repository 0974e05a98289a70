//! # deepcomp-models
//!
//! The networks deepcomp compresses, and everything needed to train them, in one crate that knows
//! nothing about pruning or quantization.
//!
//! Every network is a [`Model`]: a forward pass plus a [`ParamStore`], the list of every tensor the
//! network owns under its PyTorch name (`fc1.weight`, `features.0.weight`,
//! `layer1.0.bn1.running_mean`, ...) in PyTorch `state_dict` order, so safetensors checkpoints move
//! between deepcomp and PyTorch unchanged. [`Model::prunable`] is the ordered subset the compression
//! stages act on: conv and fc weights, never biases or BatchNorm. [`arch::build`] makes any of the
//! seeds' architectures (LeNet-300-100, LeNet-5, an MLP, the CIFAR LeNet, VGG16-half, ResNet-20) from an
//! id, an [`ArchConfig`] and a seed; initialization draws from a seeded ChaCha8 stream, because candle's
//! CPU RNG cannot be seeded.
//!
//! Training is ours rather than candle's defaults: [`Sgd`] (momentum, Nesterov, weight decay, PyTorch
//! semantics) and [`AdamW`] behind the [`Optimizer`] trait, LR [`Schedule`]s, [`train_epoch`] /
//! [`evaluate`] / [`fit`] with top-1/top-5 and throughput, and [`Checkpoint`]s holding weights,
//! optimizer state, masks and the epoch so a killed run resumes bit for bit. The one seam to the rest
//! of deepcomp is [`TrainHook`]: called after backward and after each optimizer step, it is where the
//! driver keeps pruned weights at zero and trains shared centroids; its [`TrainHook::loss`] lets
//! [`distill::Distill`] add a teacher's soft targets to the loss.
//!
//! [`layer_report`] gives the per-layer MACs and memory footprint (fp32 and at k bits) that seed 004
//! computes by hand. Where candle 0.11 is slow, wrong or missing something, [`kernels`] has our own CPU
//! ops (fused linear + ReLU, im2col conv2d, max-pool with PyTorch's gradient rule, training-mode
//! BatchNorm) as candle custom ops, each with a candle-op path for other devices; [`layers`] uses them,
//! so the architectures never name them.

pub mod arch;
pub mod checkpoint;
pub mod distill;
pub mod error;
pub mod hook;
pub mod init;
pub mod io;
pub mod kernels;
pub mod layers;
pub mod model;
pub mod optim;
pub mod report;
pub mod schedule;
pub mod train;

pub use arch::{build, ArchConfig, ARCHS};
pub use checkpoint::Checkpoint;
pub use error::{ModelError, Result};
pub use hook::{NoHook, TrainHook};
pub use init::InitScheme;
pub use io::{
    load_safetensors, read_safetensors, save_safetensors, save_safetensors_with, write_safetensors,
};
pub use model::{LayerKind, Model, Param, ParamRole, ParamStore, PrunableWeight};
pub use optim::{AdamW, AdamWConfig, Optimizer, OptimizerConfig, Sgd, SgdConfig};
pub use report::{layer_report, LayerCost, LayerInfo, LayerOp, ModelReport};
pub use schedule::{LrSchedule, Schedule, Warmup};
pub use train::{
    evaluate, fit, train_epoch, Batches, EpochRecord, EpochStats, EvalStats, ProgressConfig,
    TrainConfig,
};
