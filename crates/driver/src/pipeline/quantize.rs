//! The quantization stage for recipes that use methods other than k-means on some layer
//! (`quant.method`, `quant.method_layers`, `quant.float_layers`).
//!
//! * `kmeans` layers are shared and their centroids trained exactly as in the default path.
//! * `uniform` layers are quantized once, after pruning, by the range quantizer (seed 002: step
//!   `Δ = 2q / 2^bits`, clip to `[−q, q − Δ]`, with `q = quant.range` or the max |w| of each tensor or
//!   output channel, seed 004); they stay fixed while other layers train.
//! * `ste` layers are trained `quant.epochs` epochs with the straight-through estimator (seed 003): the
//!   forward uses the quantized weights with a fresh max-|w| scale every step, the optimizer moves float
//!   weights, pruned weights stay zero (keep-zeros) and do not count in the scale.
//! * `float` layers are not quantized and go into the file raw.
//!
//! A uniform or ste layer is coded in the `.dcz` as an ordinary codebook layer: per tensor the codebook
//! is the `2^bits` grid values `k·Δ`; per channel it holds the integer levels `k` and a channel-scales
//! section holds each channel's `Δ`.

use std::collections::BTreeMap;

use deepcomp_models::{LayerKind, Model};
use deepcomp_quant::{range_codes, RangeCodes, RangeScale, SharedWeights};
use deepcomp_sparsity::MaskSet;

use super::{kept_positions, weight_values, Ctx};
use crate::error::{DriverError, Result};
use crate::hooks::{CentroidHook, Chain, FreezeHook, MaskHook, SharedLayer, SteHook, SteLayer};
use crate::report::{EpochRow, Report};

/// The masks of the named layers only (`None` when none of them has one).
fn subset(masks: &MaskSet, names: &[String], ctx: &Ctx<'_>) -> Result<Option<MaskHook>> {
    let mut set = MaskSet::new();
    for n in names {
        if let Some(m) = masks.get(n) {
            set.insert(n.clone(), m.clone());
        }
    }
    if set.is_empty() {
        return Ok(None);
    }
    Ok(Some(MaskHook::new(&set, &ctx.device)?))
}

/// A coded layer from uniform codes: kept nonzero positions, code `level + 2^(bits-1)`; the codebook is
/// the grid `k·Δ` (per tensor) or the integer levels `k` with the steps as channel scales (per channel).
pub(super) fn uniform_shared(
    name: &str,
    shape: &[usize],
    codes: &RangeCodes,
    per_channel: bool,
) -> Result<SharedLayer> {
    let mut positions = Vec::new();
    let mut out = Vec::new();
    for (i, v) in codes.values.iter().enumerate() {
        if *v != 0.0 {
            positions.push(i as u64);
            out.push(codes.code(i));
        }
    }
    let codebook = if per_channel {
        codes.grid(1.0)
    } else {
        codes.grid(codes.steps.first().copied().unwrap_or(1.0))
    };
    Ok(SharedLayer {
        name: name.to_string(),
        shape: shape.to_vec(),
        shared: SharedWeights::from_parts(
            codes.values.len(),
            codebook,
            positions,
            out,
            codes.bits,
        )?,
        channel_steps: per_channel.then(|| codes.steps.clone()),
    })
}

/// The codes of values already on the grids of `steps` (one per group): the resume path, where only
/// the quantized weights and the steps are stored. Fails if a value is not on its grid.
pub(super) fn codes_from_steps(
    values: &[f32],
    keep: &[bool],
    steps: &[f32],
    bits: u8,
) -> Result<RangeCodes> {
    let groups = steps.len().max(1);
    let per = values.len() / groups;
    let h = 1i32 << (bits - 1);
    let mut levels = vec![0i32; values.len()];
    let mut out = vec![0.0f32; values.len()];
    for (i, v) in values.iter().enumerate() {
        if !keep[i] {
            continue;
        }
        let step = steps[(i / per.max(1)).min(groups - 1)];
        let k = (v / step)
            .round_ties_even()
            .clamp(-(h as f32), (h - 1) as f32) as i32;
        let back = k as f32 * step;
        if back != *v {
            return Err(DriverError::msg(format!(
                "value {v} at {i} is not on the grid of step {step}"
            )));
        }
        levels[i] = k;
        out[i] = back;
    }
    Ok(RangeCodes {
        bits,
        steps: steps.to_vec(),
        levels,
        values: out,
    })
}

/// Quantizes every prunable layer by its method, trains `quant.epochs` epochs (centroids of k-means
/// layers, float weights of ste layers, the other parameters), and returns the coded layers in model
/// order (float layers left out).
pub(super) fn quantize_methods(
    ctx: &Ctx<'_>,
    model: &dyn Model,
    masks: &MaskSet,
    report: &mut Report,
) -> Result<Vec<SharedLayer>> {
    let recipe = ctx.recipe;
    let per_channel = recipe.per_channel();
    let mut kmeans = Vec::new();
    let mut uniform: BTreeMap<String, RangeCodes> = BTreeMap::new();
    let mut ste_layers = Vec::new();
    let mut float_names = Vec::new();
    report.quant_methods.clear();
    for p in model.prunable() {
        let method = recipe.method_for(&p.name);
        report
            .quant_methods
            .insert(p.name.clone(), method.to_string());
        let values = weight_values(model, &p.name)?;
        let bits = recipe.bits_for(&p.name, p.kind == LayerKind::Conv);
        let keep = kept_positions(masks, &p.name, &values);
        let groups = if per_channel {
            p.shape.first().copied().unwrap_or(1).max(1)
        } else {
            1
        };
        match method {
            "float" => float_names.push(p.name.clone()),
            "uniform" => {
                let scale = match recipe.quant.range {
                    Some(q) => RangeScale::Fixed(q as f32),
                    None => RangeScale::MaxAbs,
                };
                let codes = range_codes(&values, Some(&keep), groups, bits, scale)?;
                let var = &model
                    .params()
                    .get(&p.name)
                    .ok_or_else(|| DriverError::msg(format!("model has no `{}`", p.name)))?
                    .var;
                var.set(&candle_core::Tensor::from_vec(
                    codes.values.clone(),
                    p.shape.as_slice(),
                    &ctx.device,
                )?)?;
                uniform.insert(p.name.clone(), codes);
            }
            "ste" => ste_layers.push(SteLayer {
                name: p.name.clone(),
                shape: p.shape.clone(),
                bits,
                per_channel,
                keep: Some(keep),
            }),
            _ => {
                let shared = deepcomp_quant::share_weights(
                    &values,
                    Some(&keep),
                    bits,
                    super::init_of(recipe),
                )?;
                kmeans.push(SharedLayer {
                    name: p.name.clone(),
                    shape: p.shape.clone(),
                    shared,
                    channel_steps: None,
                });
            }
        }
    }
    let has_ste = !ste_layers.is_empty();
    let ste_names: Vec<String> = ste_layers.iter().map(|l| l.name.clone()).collect();
    let mut centroid = CentroidHook::new(kmeans, recipe.quant.lr as f32, ctx.device.clone());
    centroid.write_weights(model)?;
    let mut ste = SteHook::new(
        ste_layers,
        subset(masks, &ste_names, ctx)?,
        ctx.device.clone(),
    );
    if has_ste {
        ste.start(model).map_err(DriverError::from)?;
    }
    let (acc, top5) = ctx.evaluate(model)?;
    eprintln!("deepcomp: quantization done; top-1 before training {acc:.4}");
    report.history.retain(|e| e.stage != "shared");
    report.history.push(EpochRow {
        stage: "shared".into(),
        test_top1: acc,
        test_top5: top5,
        ..Default::default()
    });
    if recipe.quant.epochs > 0 {
        let mut o = recipe.prune.optim();
        // With ste layers the optimizer trains their float weights (and every other parameter) at
        // quant.lr; otherwise it trains only the non-shared parameters, as in the k-means path.
        o.lr = if has_ste {
            recipe.quant.lr
        } else if recipe.quant.other_lr > 0.0 {
            recipe.quant.other_lr
        } else {
            f64::MIN_POSITIVE
        };
        o.lr_schedule = "cosine".into();
        let mut freeze = FreezeHook {
            names: uniform.keys().cloned().collect(),
        };
        let mut float_masks = subset(masks, &float_names, ctx)?;
        let mut hooks: Vec<&mut dyn deepcomp_models::TrainHook> =
            vec![&mut centroid, &mut ste, &mut freeze];
        if let Some(m) = float_masks.as_mut() {
            hooks.push(m);
        }
        let mut chain = Chain(hooks);
        ctx.train(
            model,
            &o,
            recipe.quant.epochs,
            &mut chain,
            if has_ste { "qat" } else { "centroids" },
            0,
            0,
            0.0,
            &mut report.history,
        )?;
    }
    let (acc, _) = ctx.evaluate(model)?;
    report.accuracy.quantized = acc;

    let mut ste_codes: BTreeMap<String, RangeCodes> = if has_ste {
        ste_names
            .iter()
            .cloned()
            .zip(ste.codes().map_err(DriverError::from)?)
            .collect()
    } else {
        BTreeMap::new()
    };
    let mut kmeans_layers: BTreeMap<String, SharedLayer> = centroid
        .layers
        .into_iter()
        .map(|l| (l.name.clone(), l))
        .collect();
    report.quant_steps.clear();
    let mut out = Vec::new();
    for p in model.prunable() {
        let name = &p.name;
        if let Some(l) = kmeans_layers.remove(name) {
            out.push(l);
        } else if let Some(c) = uniform.remove(name).or_else(|| ste_codes.remove(name)) {
            report.quant_steps.insert(name.clone(), c.steps.clone());
            out.push(uniform_shared(name, &p.shape, &c, per_channel)?);
        }
    }
    Ok(out)
}
