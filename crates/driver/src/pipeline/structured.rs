//! `prune.method = "structured"`: seed 002's L2-norm neuron / filter pruning as a pipeline stage.
//!
//! The model is a chain of layers: its prunable weights in `state_dict` order (conv filters, then fully
//! connected layers), each followed by its bias and, in `vgg16_half`, the BatchNorm over its outputs.
//! Each round removes, from every layer but the last, the outputs with the smallest L2 norm (rows of a
//! linear weight, whole filters `weight[o, :, :, :]` of a conv), with their bias entries, their
//! BatchNorm channels (weight, bias, running mean and variance) and the matching inputs of the next
//! layer: columns of a linear layer, input channels of a conv, and for the last conv → first linear
//! layer, the `h·w` consecutive columns each channel owns in PyTorch's channel-major flatten. A layer
//! loses `floor(width · target · layer_scale)` of its original outputs (at least one is kept; the last
//! layer's outputs, the classes, are never removed). The result is a smaller dense model of the same
//! architecture with new widths (`arch.channels` for the convs, `arch.hidden` for the fully connected
//! layers), built by the models crate, finetuned without masks, and carried by the rest of the pipeline
//! (k-means, Huffman, `.dcz`, whose metadata records the new widths). The arithmetic is
//! `deepcomp_sparsity::structured::shrink_chain`.
//!
//! Supported: `mlp`, `lenet300`, `lenet5`, `cifar_lenet` and `vgg16_half`. In `vgg16_half` a filter's
//! L2 norm is a weak score, since the BatchNorm after it rescales the channel anyway (its `gamma` would
//! be the better one); the filter's norm is used as for the other nets. `resnet20` is refused by the
//! recipe check: the residual additions tie each block's output channels to its input's, across the
//! whole stage, and the compressed-model runtime expects equal widths inside a block, so its inner
//! convolutions are not pruned either.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use std::time::Instant;

use candle_core::{Device, Tensor};
use deepcomp_models::Model;
use serde::{Deserialize, Serialize};

use super::{
    build_model, ckpt_dir, regularizer_hook, regularizer_row, save_stage, with_regularizer, Ctx,
};
use crate::error::{DriverError, Result};
use crate::fsutil;
use crate::recipe::{Recipe, RecipeError};
use crate::report::Report;

/// Architectures `prune.method = "structured"` supports.
pub const SUPPORTED: &[&str] = &["mlp", "lenet300", "lenet5", "cifar_lenet", "vgg16_half"];

/// Batch sizes of the latency measurement.
pub const LATENCY_BATCHES: [usize; 2] = [1, 128];

/// What structured pruning did: widths, parameter counts and eval-mode forward latency of the dense
/// and the smaller model (`report.json` field `structured`).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct StructuredReport {
    /// The layers whose outputs were pruned (every prunable weight but the last, `.weight` left
    /// out): the widths below are theirs, in this order.
    #[serde(default)]
    pub layers: Vec<String>,
    /// Widths of the dense model: conv filters and hidden neurons of [`Self::layers`].
    pub hidden_dense: Vec<usize>,
    /// Widths after structured pruning.
    pub hidden: Vec<usize>,
    /// Parameters (weights and biases) of the dense model.
    pub params_dense: u64,
    /// Parameters of the smaller model.
    pub params: u64,
    /// Worker threads of the process (the same for both models).
    pub threads: usize,
    /// One row per batch size.
    pub latency: Vec<LatencyRow>,
}

/// Median eval-mode forward time of one batch size.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct LatencyRow {
    /// Batch size.
    pub batch: usize,
    /// Timed repeats per model (after one warm-up forward).
    pub repeats: usize,
    /// Median milliseconds per forward, dense model.
    pub dense_ms: f64,
    /// Median milliseconds per forward, smaller model.
    pub structured_ms: f64,
}

impl StructuredReport {
    /// The report's Markdown section.
    pub fn to_markdown(&self) -> String {
        let mut s = String::new();
        let w = |v: &[usize]| {
            v.iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("-")
        };
        let _ = writeln!(s, "## Structured pruning\n");
        let layers = if self.layers.is_empty() {
            String::new()
        } else {
            format!(" ({})", self.layers.join(", "))
        };
        let _ = writeln!(
            s,
            "Widths{layers} {} → {}; parameters {} → {} ({:.2} % kept). Latency: median eval-mode \
             forward, {} thread(s), same process.\n",
            w(&self.hidden_dense),
            w(&self.hidden),
            self.params_dense,
            self.params,
            100.0 * self.params as f64 / self.params_dense.max(1) as f64,
            self.threads
        );
        let _ = writeln!(
            s,
            "| batch | repeats | dense ms | structured ms | speed-up |"
        );
        let _ = writeln!(s, "|---:|---:|---:|---:|---:|");
        for r in &self.latency {
            let _ = writeln!(
                s,
                "| {} | {} | {:.3} | {:.3} | {:.2}× |",
                r.batch,
                r.repeats,
                r.dense_ms,
                r.structured_ms,
                r.dense_ms / r.structured_ms.max(1e-12)
            );
        }
        s.push('\n');
        s
    }
}

/// Recipe checks of method `structured` (called by [`Recipe::validate`]); targets are checked there.
pub fn validate_recipe(
    recipe: &Recipe,
    err: &dyn Fn(&str, String) -> RecipeError,
) -> std::result::Result<(), RecipeError> {
    let p = &recipe.prune;
    if !SUPPORTED.contains(&recipe.model.as_str()) {
        let why = if recipe.model == "resnet20" {
            "its residual additions tie each block's output channels to the shortcut's across the \
             whole stage, so a filter cannot be removed from one convolution alone (and the \
             compressed-model runtime expects equal widths inside a block)"
        } else {
            "the architecture is not a chain of conv and linear layers this stage knows"
        };
        return Err(err(
            "prune.method",
            format!(
                "`structured` does not support model `{}`: {why}; supported: {}",
                recipe.model,
                SUPPORTED.join(", ")
            ),
        ));
    }
    if !matches!(p.schedule.as_str(), "rounds" | "oneshot") {
        return Err(err(
            "prune.schedule",
            format!(
                "method `structured` takes its targets from prune.rounds (schedules `rounds`, \
                 `oneshot`), not schedule `{}`",
                p.schedule
            ),
        ));
    }
    if p.qat_bits.is_some() {
        return Err(err(
            "prune.qat_bits",
            "quantization-aware finetuning is not available with method `structured`".into(),
        ));
    }
    Ok(())
}

/// Widths to keep per pruned layer: layer `j` (the outputs of weight `names[j]`: neurons or conv
/// filters) of original width `orig[j]` loses `floor(orig[j] · min(target · scale, 0.999))` of them,
/// at least one stays.
pub fn kept_widths(
    orig: &[usize],
    names: &[String],
    target: f64,
    layer_scale: &BTreeMap<String, f64>,
) -> Vec<usize> {
    orig.iter()
        .zip(names)
        .map(|(&n, name)| {
            let frac = (target * layer_scale.get(name).copied().unwrap_or(1.0)).clamp(0.0, 0.999);
            let remove = (n as f64 * frac).floor() as usize;
            n.saturating_sub(remove).max(1)
        })
        .collect()
}

/// A model after structured pruning.
pub struct Shrunk {
    /// The recipe with the new `arch.channels` / `arch.hidden`.
    pub recipe: Recipe,
    /// The smaller model.
    pub model: Box<dyn Model>,
    /// Per pruned layer, the original indices (in the model that was shrunk) of the kept outputs.
    pub kept: Vec<Vec<usize>>,
}

impl std::fmt::Debug for Shrunk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shrunk")
            .field("channels", &self.recipe.arch.channels)
            .field("hidden", &self.recipe.arch.hidden)
            .field("kept", &self.kept)
            .finish_non_exhaustive()
    }
}

/// The names of one layer of the chain: its weight, its bias, and the tensors indexed by its outputs
/// that follow it (a BatchNorm's weight, bias, running mean and running variance).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainNames {
    /// The prunable weight.
    pub weight: String,
    /// Its bias, if any.
    pub bias: Option<String>,
    /// BatchNorm tensors over its outputs.
    pub per_output: Vec<String>,
}

/// The model as a chain of layers: every prunable weight in `state_dict` order, with the bias and
/// BatchNorm tensors that follow it before the next prunable weight. Errors when something else sits
/// between two weights, or a BatchNorm tensor does not match the layer's outputs.
pub fn chain_names(model: &dyn Model) -> Result<Vec<ChainNames>> {
    use deepcomp_models::ParamRole;
    let mut chain: Vec<ChainNames> = Vec::new();
    for p in model.params().iter() {
        if let ParamRole::Weight(_) = p.role {
            chain.push(ChainNames {
                weight: p.name.clone(),
                bias: None,
                per_output: Vec::new(),
            });
            continue;
        }
        let Some(layer) = chain.last_mut() else {
            return Err(DriverError::msg(format!(
                "structured pruning: `{}` comes before any weight of `{}`",
                p.name,
                model.arch()
            )));
        };
        let out = model
            .params()
            .get(&layer.weight)
            .map(|w| w.var.dims()[0])
            .unwrap_or(0);
        if p.var.dims() != [out] {
            return Err(DriverError::msg(format!(
                "structured pruning: `{}` {:?} follows `{}` but is not one entry per its {out} outputs",
                p.name,
                p.var.dims(),
                layer.weight
            )));
        }
        match p.role {
            ParamRole::Bias if layer.bias.is_none() && layer.per_output.is_empty() => {
                layer.bias = Some(p.name.clone());
            }
            ParamRole::BnWeight | ParamRole::BnBias | ParamRole::Buffer => {
                layer.per_output.push(p.name.clone());
            }
            _ => {
                return Err(DriverError::msg(format!(
                    "structured pruning: unexpected `{}` after `{}` in `{}`",
                    p.name,
                    layer.weight,
                    model.arch()
                )))
            }
        }
    }
    Ok(chain)
}

/// The chain's layers with the model's current tensors.
fn chain_layers(
    model: &dyn Model,
    names: &[ChainNames],
) -> Result<Vec<deepcomp_sparsity::structured::ChainLayer>> {
    let get = |n: &str| -> Result<Tensor> {
        model
            .params()
            .get(n)
            .map(|p| p.var.as_tensor().clone())
            .ok_or_else(|| DriverError::msg(format!("structured pruning: no `{n}`")))
    };
    names
        .iter()
        .map(|c| {
            Ok(deepcomp_sparsity::structured::ChainLayer {
                weight: get(&c.weight)?,
                bias: c.bias.as_deref().map(get).transpose()?,
                per_output: c.per_output.iter().map(|n| get(n)).collect::<Result<_>>()?,
            })
        })
        .collect()
}

/// Widths of the pruned layers (outputs of every prunable weight but the last): conv filters, then
/// hidden neurons.
pub fn hidden_widths(model: &dyn Model) -> Vec<usize> {
    let p = model.prunable();
    p.iter()
        .take(p.len().saturating_sub(1))
        .map(|w| w.shape[0])
        .collect()
}

/// Names of the pruned layers (`conv1`, `fc1`, `features.0`, …), as [`hidden_widths`] lists them.
pub fn pruned_layers(model: &dyn Model) -> Vec<String> {
    let p = model.prunable();
    p.iter()
        .take(p.len().saturating_sub(1))
        .map(|w| {
            w.name
                .strip_suffix(".weight")
                .unwrap_or(&w.name)
                .to_string()
        })
        .collect()
}

/// `recipe` with the architecture widths of a model whose pruned layers (weights of rank `ranks[j]`)
/// have `widths[j]` outputs: conv widths go to `arch.channels`, the others to `arch.hidden`.
fn with_widths(recipe: &Recipe, ranks: &[usize], widths: &[usize]) -> Recipe {
    let pick = |conv: bool| -> Vec<usize> {
        ranks
            .iter()
            .zip(widths)
            .filter(|(r, _)| (**r > 2) == conv)
            .map(|(_, w)| *w)
            .collect()
    };
    let (channels, hidden) = (pick(true), pick(false));
    let mut r = recipe.clone();
    r.arch.channels = (!channels.is_empty()).then_some(channels);
    r.arch.hidden = (!hidden.is_empty()).then_some(hidden);
    r
}

/// Parameters (weights, biases, buffers) of a model.
pub fn param_count(model: &dyn Model) -> u64 {
    model
        .params()
        .iter()
        .map(|p| p.var.elem_count() as u64)
        .sum()
}

/// Keeps `keep[j]` outputs of pruned layer `j` of `model` (built from `recipe`), the ones with the
/// largest L2 norms, layer after layer (layer `j + 1`'s norms are those of its rows after its
/// inputs were removed, as seed 002 does), and builds the smaller model.
pub fn shrink(
    recipe: &Recipe,
    model: &dyn Model,
    keep: &[usize],
    device: &Device,
) -> Result<Shrunk> {
    let names = chain_names(model)?;
    if names.len() != keep.len() + 1 {
        return Err(DriverError::msg(format!(
            "structured pruning: {} widths for the {} pruned layers of `{}`",
            keep.len(),
            names.len().saturating_sub(1),
            model.arch()
        )));
    }
    let mut layers = chain_layers(model, &names)?;
    let kept = deepcomp_sparsity::structured::shrink_chain(&mut layers, keep)?;
    let ranks: Vec<usize> = layers.iter().map(|l| l.weight.rank()).collect();
    let widths: Vec<usize> = kept.iter().map(Vec::len).collect();
    let r = with_widths(recipe, &ranks[..widths.len()], &widths);
    let small = build_model(&r, device)?;
    let mut named: Vec<(String, Tensor)> = Vec::new();
    for (n, l) in names.iter().zip(layers) {
        named.push((n.weight.clone(), l.weight));
        if let (Some(bn), Some(b)) = (&n.bias, l.bias) {
            named.push((bn.clone(), b));
        }
        named.extend(n.per_output.iter().cloned().zip(l.per_output));
    }
    deepcomp_models::io::assign_tensors(small.as_ref(), &named, Path::new("structured pruning"))?;
    Ok(Shrunk {
        recipe: r,
        model: small,
        kept,
    })
}

/// Loads a checkpoint written after structured pruning: the widths are read from its tensor shapes
/// (the outputs of each pruned layer's weight, named as in the model `recipe` builds), the model
/// built with them and filled.
pub fn load_checkpoint(
    recipe: &Recipe,
    path: &Path,
    device: &Device,
) -> Result<(Recipe, Box<dyn Model>)> {
    let (tensors, _) = deepcomp_models::read_safetensors(path)?;
    let template = build_model(recipe, device)?;
    let prunable = template.prunable();
    let pruned = &prunable[..prunable.len().saturating_sub(1)];
    let mut widths = Vec::with_capacity(pruned.len());
    for w in pruned {
        let t = tensors.iter().find(|(n, _)| *n == w.name).ok_or_else(|| {
            DriverError::msg(format!(
                "{}: no `{}` in a structured-pruning checkpoint",
                path.display(),
                w.name
            ))
        })?;
        widths.push(t.1.dims().first().copied().unwrap_or(0));
    }
    let ranks: Vec<usize> = pruned.iter().map(|w| w.shape.len()).collect();
    drop(template);
    let r = with_widths(recipe, &ranks, &widths);
    let model = build_model(&r, device)?;
    deepcomp_models::load_safetensors(model.as_ref(), path)?;
    Ok((r, model))
}

/// Median milliseconds of an eval-mode forward of `model` on a batch of `batch` random inputs: one
/// warm-up, then at least 5 and at most 31 timed repeats, stopping after about 2 s.
pub fn latency_ms(model: &dyn Model, batch: usize, device: &Device) -> Result<(f64, usize)> {
    let [c, h, w] = model.input_shape();
    let x = Tensor::rand(0f32, 1f32, (batch, c, h, w), device)?;
    model.forward_t(&x, false)?;
    let start = Instant::now();
    let mut times = Vec::new();
    while times.len() < 5 || (times.len() < 31 && start.elapsed().as_secs_f64() < 2.0) {
        let t = Instant::now();
        let y = model.forward_t(&x, false)?;
        y.device().synchronize()?;
        times.push(1e3 * t.elapsed().as_secs_f64());
    }
    times.sort_by(f64::total_cmp);
    let n = times.len();
    let median = if n % 2 == 1 {
        times[n / 2]
    } else {
        0.5 * (times[n / 2 - 1] + times[n / 2])
    };
    Ok((median, n))
}

/// Parameters and latency of the dense and the smaller model.
pub fn measure(dense: &dyn Model, small: &dyn Model, device: &Device) -> Result<StructuredReport> {
    let mut latency = Vec::new();
    for batch in LATENCY_BATCHES {
        let (dense_ms, n1) = latency_ms(dense, batch, device)?;
        let (structured_ms, n2) = latency_ms(small, batch, device)?;
        latency.push(LatencyRow {
            batch,
            repeats: n1.min(n2),
            dense_ms,
            structured_ms,
        });
    }
    Ok(StructuredReport {
        layers: pruned_layers(dense),
        hidden_dense: hidden_widths(dense),
        hidden: hidden_widths(small),
        params_dense: param_count(dense),
        params: param_count(small),
        threads: rayon::current_num_threads(),
        latency,
    })
}

/// The stage: every round shrinks the model to its target widths and finetunes it (no masks: the
/// smaller model is dense). Returns the recipe with the final widths and the smaller model.
pub(super) fn prune_stage(
    ctx: &Ctx<'_>,
    dense: &dyn Model,
    report: &mut Report,
    progress_path: &Path,
) -> Result<(Recipe, Box<dyn Model>)> {
    let recipe = ctx.recipe;
    let p = &recipe.prune;
    let rounds: Vec<_> = if p.schedule == "oneshot" {
        p.rounds.last().cloned().into_iter().collect()
    } else {
        p.rounds.clone()
    };
    let names: Vec<String> = dense.prunable().into_iter().map(|w| w.name).collect();
    let orig = hidden_widths(dense);
    let dense_weights: usize = dense.prunable().iter().map(|w| w.var.elem_count()).sum();
    let mut current: Option<(Recipe, Box<dyn Model>)> = None;
    for (i, r) in rounds.iter().enumerate() {
        let round_ckpt = ckpt_dir(&ctx.out).join(format!("prune-round{i}.safetensors"));
        if round_ckpt.exists() {
            crate::note!(
                "deepcomp: resuming: structured pruning round {i} from {}",
                round_ckpt.display()
            );
            current = Some(load_checkpoint(recipe, &round_ckpt, &ctx.device)?);
            continue;
        }
        let t = Instant::now();
        let keep = kept_widths(&orig, &names, r.target.unwrap_or(0.0), &p.layer_scale);
        let (cur_recipe, cur_model): (&Recipe, &dyn Model) = match &current {
            Some((rc, m)) => (rc, m.as_ref()),
            None => (recipe, dense),
        };
        let s = shrink(cur_recipe, cur_model, &keep, &ctx.device)?;
        report.seconds.prune += t.elapsed().as_secs_f64();
        let model = s.model;
        let (acc, _) = ctx.evaluate(model.as_ref())?;
        report.accuracy.pruned = acc;
        let weights: usize = model.prunable().iter().map(|w| w.var.elem_count()).sum();
        let removed = 1.0 - weights as f64 / dense_weights.max(1) as f64;
        crate::note!(
            "deepcomp: structured round {}/{}: widths {:?} → {:?} ({weights} of {dense_weights} weights), top-1 before finetune {acc:.4}",
            i + 1,
            rounds.len(),
            orig,
            hidden_widths(model.as_ref())
        );
        let t = Instant::now();
        let mut reg = regularizer_hook(p.regularizer.as_ref(), model.as_ref());
        let mut none = deepcomp_models::NoHook;
        ctx.train(
            model.as_ref(),
            &p.optim(),
            r.epochs,
            &mut with_regularizer(&mut reg, &mut none),
            "finetune",
            i,
            0,
            removed,
            &mut report.history,
        )?;
        report.seconds.finetune += t.elapsed().as_secs_f64();
        save_stage(model.as_ref(), &round_ckpt, &ctx.inputs.rounds[i], report)?;
        fsutil::write_json(progress_path, report)?;
        current = Some((s.recipe, model));
    }
    let (r, model) = current.ok_or_else(|| DriverError::msg("structured pruning: no round"))?;
    report.accuracy.finetuned = ctx.evaluate(model.as_ref())?.0;
    report.regularizers.retain(|x| x.stage != "prune");
    if let Some(reg) = &p.regularizer {
        report
            .regularizers
            .push(regularizer_row("prune", reg, model.as_ref())?);
    }
    let st = measure(dense, model.as_ref(), &ctx.device)?;
    for l in &st.latency {
        crate::note!(
            "deepcomp: latency batch {}: dense {:.3} ms, structured {:.3} ms (median of {})",
            l.batch,
            l.dense_ms,
            l.structured_ms,
            l.repeats
        );
    }
    report.structured = Some(st);
    Ok((r, model))
}
