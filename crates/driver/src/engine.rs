//! Evaluation with the compressed engine (`deepcomp-runtime`): the `.dcz` is run as stored (sparse
//! rows of relative indices and cluster codes), not decoded into the candle model.
//!
//! [`eval_compressed`] is the `--engine compressed` counterpart of [`crate::pipeline::eval_file`]: same
//! dataset, normalization and batching (the recipe's `eval_batch_size`, `pad_to`, `test_limit`), same
//! top-1 / top-5. [`run_file`] adds timing and weight bytes for `deepcomp run`.

use std::path::Path;
use std::time::Instant;

use deepcomp_datasets::BatchConfig;
use deepcomp_runtime::{CompressedModel, RuntimeError};

use crate::error::{DriverError, Result};
use crate::pipeline::load_data;
use crate::recipe::Recipe;

/// What [`run_file`] measured.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RunReport {
    /// The model id stored in the file.
    pub model: String,
    /// Test examples evaluated.
    pub examples: usize,
    /// Top-1 accuracy on them.
    pub top1: f64,
    /// Top-5 accuracy (NaN with fewer than 5 classes).
    pub top5: f64,
    /// Seconds in the forward passes (batch assembly excluded).
    pub forward_seconds: f64,
    /// Examples per second through the forward passes.
    pub ex_per_s: f64,
    /// Batch size used.
    pub batch_size: usize,
    /// Resident bytes of the compressed weights.
    pub weight_bytes: usize,
    /// Bytes of the same weights as dense `f32`.
    pub dense_bytes: usize,
}

fn runtime_err(e: RuntimeError) -> DriverError {
    DriverError::msg(e.to_string())
}

/// Loads a `.dcz` into the compressed engine.
pub fn load_compressed(path: &Path) -> Result<CompressedModel> {
    CompressedModel::load(path).map_err(runtime_err)
}

/// Top-1 and top-5 of the `.dcz` at `path` on the recipe's test split, run by the compressed engine.
pub fn eval_compressed(
    recipe: &Recipe,
    path: &Path,
    data_path: Option<&Path>,
) -> Result<(f64, f64)> {
    let r = run_file(recipe, path, data_path)?;
    Ok((r.top1, r.top5))
}

/// Runs the `.dcz` at `path` over the recipe's test split with the compressed engine: accuracy,
/// forward time and weight bytes.
pub fn run_file(recipe: &Recipe, path: &Path, data_path: Option<&Path>) -> Result<RunReport> {
    let mut model = load_compressed(path)?;
    let data = load_data(
        recipe,
        data_path,
        false,
        deepcomp_datasets::Splits::TestOnly,
    )?;
    let cfg = BatchConfig {
        batch_size: recipe.data.eval_batch_size,
        shuffle: false,
        drop_last: false,
        seed: recipe.seed,
        augment: None,
        pad_to: recipe.data.pad_to,
        limit: recipe.data.test_limit,
    };
    let device = candle_core::Device::Cpu;
    let batches = data.test.batches(&cfg, &data.mean, &data.std, 0, &device)?;
    let classes = model.num_classes();
    let (mut n, mut hit1, mut hit5) = (0usize, 0usize, 0usize);
    let mut seconds = 0f64;
    for batch in batches {
        let (images, labels) = batch?;
        let dims = images.dims().to_vec();
        let b = dims[0];
        let shape = model.input_shape();
        if dims[1..] != shape[..] {
            if dims.len() == 4 && dims[1] == shape[0] && dims[2] == dims[3] {
                model.set_input_side(dims[2]).map_err(runtime_err)?;
            }
            if model.input_len() * b != images.elem_count() {
                return Err(DriverError::msg(format!(
                    "{}: the model takes {:?} inputs, the data set gives {:?}",
                    path.display(),
                    model.input_shape(),
                    &dims[1..]
                )));
            }
        }
        let x = images.flatten_all()?.to_vec1::<f32>()?;
        let labels = labels.to_vec1::<u32>()?;
        let start = Instant::now();
        let logits = model.forward(&x, b).map_err(runtime_err)?;
        seconds += start.elapsed().as_secs_f64();
        for (row, &label) in logits.chunks(classes).zip(&labels) {
            let target = row
                .get(label as usize)
                .copied()
                .unwrap_or(f32::NEG_INFINITY);
            // Rank of the label: how many logits beat it (ties to the lower index, as arg-max).
            let above = row
                .iter()
                .enumerate()
                .filter(|&(i, &v)| v > target || (v == target && i < label as usize))
                .count();
            hit1 += usize::from(above == 0);
            hit5 += usize::from(above < 5);
        }
        n += b;
    }
    if n == 0 {
        return Err(DriverError::msg(format!(
            "{}: the test split has no examples",
            path.display()
        )));
    }
    Ok(RunReport {
        model: model.model_id().to_string(),
        examples: n,
        top1: hit1 as f64 / n as f64,
        top5: if classes >= 5 {
            hit5 as f64 / n as f64
        } else {
            f64::NAN
        },
        forward_seconds: seconds,
        ex_per_s: n as f64 / seconds.max(1e-9),
        batch_size: recipe.data.eval_batch_size,
        weight_bytes: model.weight_bytes(),
        dense_bytes: model.dense_bytes(),
    })
}

/// Largest relative logit difference [`runtime_cross_check`] accepts (max |Δ| over max(1, max |logit|)):
/// summation order alone stays below 1e-4 on ResNet-20; a kernel that drops or misplaces a channel is
/// off by orders of magnitude more.
pub const CROSS_CHECK_TOLERANCE: f64 = 1e-3;

/// Runs `images` (N, C, H, W, normalized) through `model` (the decoded candle model) and through
/// deepcomp-runtime built from `file` (an independent implementation: its own decoding of the sparse
/// layers and its own kernels), and compares the logits. `Ok(Some(d))`: the largest relative difference
/// `d`, within [`CROSS_CHECK_TOLERANCE`]; `Ok(None)`: the runtime does not run this model (an
/// architecture or input it does not know); an error when the two disagree — a kernel bug in one of
/// them, which would otherwise surface only when someone loads the decoded weights elsewhere.
pub fn runtime_cross_check(
    file: &deepcomp_format::DczFile,
    model: &dyn deepcomp_models::Model,
    images: &candle_core::Tensor,
) -> Result<Option<f64>> {
    let Ok(mut rt) = CompressedModel::from_file(file) else {
        return Ok(None);
    };
    let dims = images.dims().to_vec();
    if dims.len() == 4
        && dims[1..] != rt.input_shape()[..]
        && dims[2] == dims[3]
        && rt.set_input_side(dims[2]).is_err()
    {
        return Ok(None);
    }
    if dims.is_empty() || dims[1..] != rt.input_shape()[..] {
        return Ok(None);
    }
    let n = dims[0];
    let x = images
        .to_device(&candle_core::Device::Cpu)?
        .flatten_all()?
        .to_vec1::<f32>()?;
    let ours = rt.forward(&x, n).map_err(runtime_err)?;
    let theirs = model
        .forward_t(images, false)?
        .to_device(&candle_core::Device::Cpu)?
        .flatten_all()?
        .to_vec1::<f32>()?;
    if ours.len() != theirs.len() {
        return Err(DriverError::Verify(format!(
            "the runtime gives {} logits for {n} images, the decoded model {}",
            ours.len(),
            theirs.len()
        )));
    }
    let scale = theirs.iter().fold(1f32, |m, v| m.max(v.abs()));
    let (at, diff) = ours
        .iter()
        .zip(&theirs)
        .map(|(a, b)| (a - b).abs())
        .enumerate()
        .fold(
            (0, 0f32),
            |best, (i, d)| if d > best.1 { (i, d) } else { best },
        );
    let rel = f64::from(diff / scale);
    // NaN logits disagree too.
    if rel.is_nan() || rel > CROSS_CHECK_TOLERANCE {
        let classes = rt.num_classes().max(1);
        return Err(DriverError::Verify(format!(
            "the decoded model and deepcomp-runtime disagree on the same weights: image {}, class {}: \
             {} vs {} (relative difference {rel:.3e} > {CROSS_CHECK_TOLERANCE:e}); one of the two \
             implementations computes this network wrongly",
            at / classes,
            at % classes,
            theirs[at],
            ours[at]
        )));
    }
    Ok(Some(rel))
}
