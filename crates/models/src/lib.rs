//! (essay to be written)

pub mod arch;
pub mod checkpoint;
pub mod error;
pub mod hook;
pub mod init;
pub mod io;
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
pub use io::{load_safetensors, read_safetensors, save_safetensors, write_safetensors};
pub use model::{LayerKind, Model, Param, ParamRole, ParamStore, PrunableWeight};
pub use optim::{AdamW, AdamWConfig, Optimizer, OptimizerConfig, Sgd, SgdConfig};
pub use report::{layer_report, LayerCost, LayerInfo, LayerOp, ModelReport};
pub use schedule::{LrSchedule, Schedule, Warmup};
pub use train::{
    evaluate, fit, train_epoch, Batches, EpochRecord, EpochStats, EvalStats, ProgressConfig,
    TrainConfig,
};
