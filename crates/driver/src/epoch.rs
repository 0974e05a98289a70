//! Device selection and the `deepcomp train-epoch` measurement: seconds per training epoch of one
//! architecture on one device, the figure compared with PyTorch on the GPU machine
//! (`xtask/gpu/torch_epoch.py` runs the same epoch there).
//!
//! [`parse_device`] turns `cpu`, `cuda` or `cuda:N` into a candle [`Device`]; a build without the `cuda`
//! feature rejects the CUDA forms with an error that says how to build one. [`train_epochs`] trains a
//! freshly initialized model for a few epochs with SGD + momentum on seeded generated data of the
//! model's input shape (or on CIFAR-10 when a path is given), through the same batch iterator and
//! training loop as the pipeline, and times each epoch, synchronizing the device at its end.

use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::{Device, DeviceLocation};
use deepcomp_datasets::{BatchConfig, DatasetId, LoadOptions, Split};
use rand::{Rng, RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use crate::error::{DriverError, Result};

/// What the error says when a CUDA device is asked of a build without the `cuda` feature.
pub const NO_CUDA: &str =
    "built without the cuda feature; build with `cargo xtask gpu-build` (see docs/SCALING.md, GPU)";

/// Parses a device name: `cpu`, `cuda` (= `cuda:0`) or `cuda:N`, and opens the device.
pub fn parse_device(spec: &str) -> Result<Device> {
    let err = |reason: String| DriverError::Device {
        spec: spec.to_string(),
        reason,
    };
    let ordinal = match spec.trim() {
        "cpu" => return Ok(Device::Cpu),
        "cuda" => 0,
        s => match s.strip_prefix("cuda:") {
            Some(n) => n
                .parse::<usize>()
                .map_err(|_| err(format!("`{n}` is not a device number")))?,
            None => return Err(err("expected cpu, cuda or cuda:N".into())),
        },
    };
    if !candle_core::utils::cuda_is_available() {
        return Err(err(NO_CUDA.into()));
    }
    Device::new_cuda(ordinal).map_err(|e| err(format!("cannot open CUDA device {ordinal}: {e}")))
}

/// A short name of `device`: `cpu`, `cuda:0`, `metal:0`.
pub fn device_label(device: &Device) -> String {
    match device.location() {
        DeviceLocation::Cpu => "cpu".into(),
        DeviceLocation::Cuda { gpu_id } => format!("cuda:{gpu_id}"),
        DeviceLocation::Metal { gpu_id } => format!("metal:{gpu_id}"),
    }
}

/// How [`train_epochs`] trains.
#[derive(Debug, Clone)]
pub struct EpochOptions {
    /// Architecture id (see `deepcomp_models::ARCHS`), default configuration.
    pub arch: String,
    /// Training examples per epoch (generated, or the first ones of CIFAR-10's training split).
    pub examples: usize,
    /// Batch size (the last batch of an epoch may be smaller).
    pub batch: usize,
    /// Number of epochs (≥ 1); the second one is reported as the warm epoch.
    pub epochs: usize,
    /// SGD learning rate.
    pub lr: f64,
    /// SGD momentum.
    pub momentum: f64,
    /// L2 weight decay.
    pub weight_decay: f64,
    /// Seed of the weights, the generated data and the shuffling.
    pub seed: u64,
    /// CIFAR-10 location (folder or archive); `None` trains on generated data.
    pub data: Option<PathBuf>,
}

impl Default for EpochOptions {
    fn default() -> Self {
        Self {
            arch: "resnet20".into(),
            examples: 50_000,
            batch: 128,
            epochs: 2,
            lr: 0.01,
            momentum: 0.9,
            weight_decay: 5e-4,
            seed: 0,
            data: None,
        }
    }
}

/// Timing and training figures of one epoch.
#[derive(Debug, Clone, Serialize)]
pub struct EpochTiming {
    /// 0-based epoch.
    pub epoch: usize,
    /// Wall seconds, from the first batch's preparation to the device being idle after the last step.
    pub seconds: f64,
    /// Examples per second.
    pub ex_per_s: f64,
    /// Mean training loss.
    pub loss: f64,
    /// Training top-1 accuracy.
    pub top1: f64,
    /// Optimizer steps.
    pub batches: usize,
}

/// What `deepcomp train-epoch` prints and writes as JSON.
#[derive(Debug, Clone, Serialize)]
pub struct EpochReport {
    /// `deepcomp` (the PyTorch script writes `pytorch`).
    pub tool: String,
    /// Architecture id.
    pub arch: String,
    /// Device label (`cpu`, `cuda:0`).
    pub device: String,
    /// `generated` or the CIFAR-10 path.
    pub data: String,
    /// Examples per epoch.
    pub examples: usize,
    /// Batch size.
    pub batch: usize,
    /// Trainable parameters of the model.
    pub parameters: usize,
    /// Every epoch, in order.
    pub epochs: Vec<EpochTiming>,
    /// The epoch reported as warm: the second one (index 1), or the only one.
    pub warm_epoch: usize,
    /// Seconds of the warm epoch.
    pub warm_seconds: f64,
    /// Examples per second of the warm epoch.
    pub warm_ex_per_s: f64,
}

/// `n` seeded random images of shape `(c, h, w)` with labels below `classes`.
pub fn generated_split(n: usize, shape: [usize; 3], classes: usize, seed: u64) -> Split {
    let [c, h, w] = shape;
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut images = vec![0u8; n * c * h * w];
    rng.fill_bytes(&mut images);
    let labels = (0..n)
        .map(|_| rng.random_range(0..classes.max(1) as u32))
        .collect();
    Split {
        images,
        labels,
        n,
        c,
        h,
        w,
    }
}

fn config_error(field: &str, reason: impl Into<String>) -> DriverError {
    DriverError::msg(format!("train-epoch: {field}: {}", reason.into()))
}

/// Trains `opts.arch` on `device` for `opts.epochs` epochs and times each one.
pub fn train_epochs(opts: &EpochOptions, device: &Device) -> Result<EpochReport> {
    if opts.examples == 0 {
        return Err(config_error("--examples", "must be at least 1"));
    }
    if opts.batch == 0 {
        return Err(config_error("--batch", "must be at least 1"));
    }
    if opts.epochs == 0 {
        return Err(config_error("--epochs", "must be at least 1"));
    }
    let model = deepcomp_models::build(
        &opts.arch,
        &deepcomp_models::ArchConfig::default(),
        opts.seed,
        device,
    )?;
    let shape = model.input_shape();
    let classes = model.num_classes();
    let id = DatasetId::Cifar10;
    let (split, data_label) = match &opts.data {
        None => (
            generated_split(opts.examples, shape, classes, opts.seed ^ 0xDA7A),
            "generated".to_string(),
        ),
        Some(path) => (load_cifar10(path)?, path.display().to_string()),
    };
    let split_shape = [split.c, split.h, split.w];
    if split_shape != shape {
        return Err(config_error(
            "--arch",
            format!(
                "`{}` takes {shape:?} inputs but the data is {split_shape:?}",
                opts.arch
            ),
        ));
    }
    let (mean, std) = if split.c == 3 {
        (id.mean(), id.std())
    } else {
        (vec![0.5; split.c], vec![0.5; split.c])
    };
    let mut opt = deepcomp_models::OptimizerConfig::Sgd(deepcomp_models::SgdConfig {
        lr: opts.lr,
        momentum: opts.momentum,
        weight_decay: opts.weight_decay,
        ..Default::default()
    })
    .build()?;
    let cfg = BatchConfig {
        batch_size: opts.batch,
        shuffle: true,
        drop_last: false,
        seed: opts.seed,
        augment: None,
        pad_to: None,
        limit: Some(opts.examples),
    };
    let parameters = model.params().trainable().map(|p| p.var.elem_count()).sum();
    let progress = deepcomp_models::ProgressConfig::default();
    let mut hook = deepcomp_models::NoHook;
    let mut epochs = Vec::with_capacity(opts.epochs);
    device.synchronize()?;
    for epoch in 0..opts.epochs {
        let start = Instant::now();
        let batches = split.batches(&cfg, &mean, &std, epoch as u64, device)?;
        let st = deepcomp_models::train_epoch(
            model.as_ref(),
            opt.as_mut(),
            batches,
            &mut hook,
            epoch,
            &progress,
        )?;
        device.synchronize()?;
        let seconds = start.elapsed().as_secs_f64();
        let t = EpochTiming {
            epoch,
            seconds,
            ex_per_s: st.examples as f64 / seconds.max(1e-9),
            loss: st.loss,
            top1: st.top1,
            batches: st.batches,
        };
        crate::note!(
            "train-epoch {} on {}: epoch {epoch}: {:.3} s, {:.0} ex/s, loss {:.4}, top-1 {:.4}",
            opts.arch,
            device_label(device),
            t.seconds,
            t.ex_per_s,
            t.loss,
            t.top1
        );
        epochs.push(t);
    }
    let warm_epoch = if epochs.len() > 1 { 1 } else { 0 };
    let (warm_seconds, warm_ex_per_s) = epochs
        .get(warm_epoch)
        .map_or((f64::NAN, f64::NAN), |t| (t.seconds, t.ex_per_s));
    Ok(EpochReport {
        tool: "deepcomp".into(),
        arch: opts.arch.clone(),
        device: device_label(device),
        data: data_label,
        examples: split.n.min(opts.examples),
        batch: opts.batch,
        parameters,
        epochs,
        warm_epoch,
        warm_seconds,
        warm_ex_per_s,
    })
}

/// CIFAR-10's training split from `path` (nothing else is searched, nothing is downloaded).
fn load_cifar10(path: &Path) -> Result<Split> {
    let opts = LoadOptions {
        explicit: Some(path.to_path_buf()),
        ..LoadOptions::default()
    };
    Ok(deepcomp_datasets::load(DatasetId::Cifar10, &opts)?.train)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn devices_parse() {
        assert!(matches!(parse_device("cpu").unwrap(), Device::Cpu));
        for bad in ["gpu", "cuda:x", "cuda:-1", ""] {
            let e = parse_device(bad).unwrap_err().to_string();
            assert!(e.contains(&format!("--device `{bad}`")), "{e}");
        }
        if !candle_core::utils::cuda_is_available() {
            for spec in ["cuda", "cuda:1"] {
                let e = parse_device(spec).unwrap_err().to_string();
                assert!(e.contains("built without the cuda feature"), "{e}");
                assert!(e.contains("cargo xtask gpu-build"), "{e}");
            }
        }
    }

    #[test]
    fn generated_split_is_seeded_and_in_range() {
        let a = generated_split(50, [3, 4, 4], 10, 7);
        assert_eq!(a, generated_split(50, [3, 4, 4], 10, 7));
        assert_ne!(a.images, generated_split(50, [3, 4, 4], 10, 8).images);
        assert_eq!(a.images.len(), 50 * 48);
        assert!(a.labels.iter().all(|&l| l < 10));
        a.check_consistent().unwrap();
    }

    #[test]
    fn zero_sizes_are_rejected() {
        for (field, opts) in [
            (
                "--examples",
                EpochOptions {
                    examples: 0,
                    ..Default::default()
                },
            ),
            (
                "--batch",
                EpochOptions {
                    batch: 0,
                    ..Default::default()
                },
            ),
            (
                "--epochs",
                EpochOptions {
                    epochs: 0,
                    ..Default::default()
                },
            ),
        ] {
            let e = train_epochs(&opts, &Device::Cpu).unwrap_err().to_string();
            assert!(e.contains(field), "{e}");
        }
    }
}
