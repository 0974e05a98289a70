//! The pipeline: every stage of Deep Compression, each resumable from its checkpoint.
//!
//! ```text
//! train ─► prune rounds (+ masked finetune) ─► k-means sharing ─► centroid finetune ─► encode ─► decode+verify+eval
//! ```
//!
//! The output folder holds `checkpoints/` (one safetensors file per finished stage or round, with masks),
//! `progress.json` (the report so far), and at the end `model.dcz`, `report.json`, `report.md` and
//! `plots/`. A re-run with the same recipe and folder skips every stage whose checkpoint exists.

use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::{Device, Tensor};
use deepcomp_datasets::{BatchConfig, Dataset, DatasetId, LoadOptions, Split, Splits};
use deepcomp_models::{LayerKind, Model, Optimizer, TrainHook};
use deepcomp_quant::{Init, SharedWeights};
use deepcomp_sparsity::{compute_masks, Criterion, Mask, MaskSet};

use crate::container::{self, DczFile, DenseTensor, SparseLayer};
use crate::error::{DriverError, Result};
use crate::hooks::{CentroidHook, Chain, MaskHook, Regularizer, RegularizerHook, SharedLayer};
use crate::recipe::{LoadedRecipe, OptimSection, Recipe};
use crate::report::{EpochRow, LayerRow, Report, SensitivityRow};
use crate::resume::{self, StageInputs};
use crate::{fsutil, plot};
use serde_json::Value;

mod quantize;
pub mod structured;

/// How to run a pipeline.
#[derive(Debug, Clone)]
pub struct PipelineOptions {
    /// The recipe.
    pub recipe: LoadedRecipe,
    /// Output folder.
    pub out: PathBuf,
    /// Ignore existing checkpoints and start over.
    pub fresh: bool,
    /// Show progress bars.
    pub progress: bool,
    /// Dataset folder overriding the recipe's.
    pub data_path: Option<PathBuf>,
}

/// Everything a stage needs.
struct Ctx<'a> {
    recipe: &'a Recipe,
    device: Device,
    data: Dataset,
    out: PathBuf,
    progress: bool,
    inputs: StageInputs,
    /// Held out of the training split for the pipeline's choices.
    val: Option<Split>,
    /// The dense model, when a compression stage distills from it (`prune.distill`, `quant.distill`).
    teacher: Option<Box<dyn Model>>,
}

fn ckpt_dir(out: &Path) -> PathBuf {
    out.join("checkpoints")
}

/// Builds the recipe's model with the recipe's seed.
pub fn build_model(recipe: &Recipe, device: &Device) -> Result<Box<dyn Model>> {
    let mut cfg = deepcomp_models::ArchConfig {
        in_channels: recipe.arch.in_channels,
        num_classes: recipe.arch.num_classes,
        kernels: recipe.arch.kernels.clone(),
        hidden: recipe.arch.hidden.clone(),
        channels: recipe.arch.channels.clone(),
        init: recipe.arch.init,
        ..Default::default()
    };
    if let Some(side) = recipe.data.pad_to {
        cfg.input_size = Some(side);
        if cfg.in_channels.is_none() && matches!(recipe.dataset.as_str(), "fashion-mnist" | "mnist")
        {
            cfg.in_channels = Some(1);
        }
    }
    Ok(deepcomp_models::build(
        &recipe.model,
        &cfg,
        recipe.seed,
        device,
    )?)
}

/// Renames tensor names by `(regex, replacement)` pairs, in order; a name renamed onto another tensor's
/// name is an error naming both.
pub fn apply_key_map(names: &[String], map: &[[String; 2]]) -> Result<Vec<String>> {
    let rules = map
        .iter()
        .map(|[from, to]| {
            regex::Regex::new(from)
                .map(|re| (re, to.as_str()))
                .map_err(|e| {
                    DriverError::msg(format!(
                        "key map: `{from}` is not a regular expression: {e}"
                    ))
                })
        })
        .collect::<Result<Vec<_>>>()?;
    let mut out: Vec<String> = Vec::with_capacity(names.len());
    for n in names {
        let mut m = n.clone();
        for (re, to) in &rules {
            m = re.replace_all(&m, *to).into_owned();
        }
        if let Some(i) = out.iter().position(|o| *o == m) {
            return Err(DriverError::msg(format!(
                "key map: `{}` and `{n}` both become `{m}`",
                names[i]
            )));
        }
        out.push(m);
    }
    Ok(out)
}

/// Loads a safetensors `state_dict` into `model` after renaming its keys by `key_map`; the error lists
/// missing and unexpected keys (after renaming) as PyTorch's strict load does.
pub fn load_state_dict(
    model: &dyn Model,
    path: &Path,
    key_map: Option<&[[String; 2]]>,
) -> Result<()> {
    let (mut tensors, _) = deepcomp_models::read_safetensors(path)?;
    if let Some(map) = key_map.filter(|m| !m.is_empty()) {
        let names: Vec<String> = tensors.iter().map(|(n, _)| n.clone()).collect();
        for ((n, _), new) in tensors.iter_mut().zip(apply_key_map(&names, map)?) {
            *n = new;
        }
    }
    deepcomp_models::io::assign_tensors(model, &tensors, path)?;
    Ok(())
}

/// The recipe's normalization (`data.mean` / `data.std`) in place of the dataset's default, checked
/// against the number of channels.
pub fn apply_normalization(recipe: &Recipe, data: &mut Dataset) -> Result<()> {
    if let (Some(mean), Some(std)) = (&recipe.data.mean, &recipe.data.std) {
        data.set_normalization(mean.clone(), std.clone())
            .map_err(|e| match e {
                deepcomp_datasets::DatasetError::Config { field, message } => {
                    crate::recipe::RecipeError::Field {
                        origin: recipe.name.clone(),
                        field: format!("data.{field}"),
                        reason: message,
                    }
                    .into()
                }
                other => DriverError::from(other),
            })?;
    }
    Ok(())
}

/// What [`DataCache`] holds: how many guards are alive, and the last data set loaded (as read,
/// before normalization and reordering) under the key of its load options.
struct DataCacheState {
    users: usize,
    entry: Option<(String, Dataset)>,
}

static DATA_CACHE: std::sync::Mutex<DataCacheState> = std::sync::Mutex::new(DataCacheState {
    users: 0,
    entry: None,
});

fn data_cache() -> std::sync::MutexGuard<'static, DataCacheState> {
    DATA_CACHE
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// While one of these lives, [`load_data`] keeps the last data set it read in memory and hands out
/// copies of it to calls with the same load options (data set, path, search roots, verification,
/// splits), so the points of a sweep read and decode their data once instead of once each (the
/// 60,000 JPEGs of the CIFAR-10 copy take seconds). The copy is dropped with the last guard; without
/// a guard nothing is kept. Verification happened when the data was read.
#[derive(Debug)]
pub struct DataCache(());

impl DataCache {
    /// Turns the cache on until the guard is dropped (guards nest).
    pub fn enable() -> DataCache {
        data_cache().users += 1;
        DataCache(())
    }
}

impl Drop for DataCache {
    fn drop(&mut self) {
        let mut c = data_cache();
        c.users = c.users.saturating_sub(1);
        if c.users == 0 {
            c.entry = None;
        }
    }
}

/// Loads the recipe's dataset (discovery order: explicit path, `DEEPCOMP_DATA`, cache, system,
/// download), only the `splits` asked for, checked against the manifest's digests unless the recipe
/// says `data.verify = false`, normalized as the recipe says, and class-interleaved when it sets
/// `data.balanced_limits`. Inside a [`DataCache`] scope a data set read before is reused.
pub fn load_data(
    recipe: &Recipe,
    data_path: Option<&Path>,
    progress: bool,
    splits: Splits,
) -> Result<Dataset> {
    let id: DatasetId = recipe.dataset.parse()?;
    let opts = LoadOptions {
        explicit: data_path
            .map(Path::to_path_buf)
            .or_else(|| recipe.data.path.clone()),
        allow_download: recipe.data.allow_download,
        progress,
        verify_checksums: recipe.data.verify,
        splits,
        ..LoadOptions::default()
    };
    let key = format!(
        "{id:?} {:?} {:?} {} {} {splits:?}",
        opts.explicit,
        deepcomp_datasets::SearchRoots::from_env(),
        opts.allow_download,
        opts.verify_checksums
    );
    let cached = {
        let c = data_cache();
        match &c.entry {
            Some((k, d)) if c.users > 0 && *k == key => Some(d.clone()),
            _ => None,
        }
    };
    let mut data = match cached {
        Some(d) => d,
        None => {
            let d = deepcomp_datasets::load(id, &opts)?;
            let mut c = data_cache();
            if c.users > 0 {
                c.entry = Some((key, d.clone()));
            }
            d
        }
    };
    apply_normalization(recipe, &mut data)?;
    if recipe.data.balanced_limits {
        data.train.interleave_classes()?;
        data.test.interleave_classes()?;
    }
    Ok(data)
}

/// Batching for training (`tag` names the stage and round, so the data order of every epoch of every
/// stage is fixed by the seed alone and a resumed run replays it exactly) or evaluation.
fn batch_config(recipe: &Recipe, train: bool, tag: u64) -> BatchConfig {
    BatchConfig {
        batch_size: if train {
            recipe.data.batch_size
        } else {
            recipe.data.eval_batch_size
        },
        shuffle: train,
        drop_last: false,
        seed: recipe.seed ^ tag.wrapping_mul(0x9E37_79B9_7F4A_7C15),
        augment: (train && recipe.data.augment).then(|| deepcomp_datasets::Augment {
            padding: recipe
                .data
                .augment_padding
                .unwrap_or(deepcomp_datasets::CROP_PADDING),
            flip: recipe.data.augment_flip.unwrap_or(true),
        }),
        pad_to: recipe.data.pad_to,
        limit: if train {
            recipe.data.train_limit
        } else {
            recipe.data.test_limit
        },
    }
}

/// Holds `data.validation` examples out of the training split (stratified, seeded by the recipe's
/// seed): the pipeline makes its choices on them and reports on the test split. The default is
/// 5,000 examples, or a tenth of the training split when that is smaller; 0 holds none out.
pub fn split_validation(recipe: &Recipe, data: &mut Dataset) -> Result<Option<Split>> {
    let n = recipe
        .data
        .validation
        .unwrap_or_else(|| 5000.min(data.train.n / 10));
    if n == 0 {
        return Ok(None);
    }
    if n >= data.train.n {
        return Err(crate::recipe::RecipeError::Field {
            origin: recipe.name.clone(),
            field: "data.validation".into(),
            reason: format!(
                "{n} examples would leave none of the {} training examples to train on",
                data.train.n
            ),
        }
        .into());
    }
    let (rest, val) = data
        .train
        .split_off_validation(n, recipe.seed ^ 0x5641_4C49_4441_5445)?;
    data.train = rest;
    Ok(Some(val))
}

impl Ctx<'_> {
    /// Top-1 and top-5 on the test split: the figures a report gives.
    fn evaluate(&self, model: &dyn Model) -> Result<(f64, f64)> {
        self.evaluate_on(&self.data.test, self.recipe.data.test_limit, model)
    }

    /// Top-1 on the validation split, the one the pipeline makes its choices on (NaN without one).
    fn validate(&self, model: &dyn Model) -> Result<f64> {
        match &self.val {
            Some(v) => Ok(self.evaluate_on(v, None, model)?.0),
            None => Ok(f64::NAN),
        }
    }

    /// Top-1 and top-5 on the first `limit` examples of `split` (all with `None`).
    fn evaluate_on(
        &self,
        split: &Split,
        limit: Option<usize>,
        model: &dyn Model,
    ) -> Result<(f64, f64)> {
        let cfg = BatchConfig {
            limit,
            ..batch_config(self.recipe, false, 0)
        };
        let batches = split.batches(&cfg, &self.data.mean, &self.data.std, 0, &self.device)?;
        let s = deepcomp_models::evaluate(model, batches)?;
        Ok((s.top1, s.top5.unwrap_or(f64::NAN)))
    }

    /// Trains `epochs` epochs with the optimizer section `o` and `hook`; appends to `history`.
    fn train(
        &self,
        model: &dyn Model,
        o: &OptimSection,
        epochs: usize,
        hook: &mut dyn TrainHook,
        stage: &str,
        round: usize,
        epoch_offset: usize,
        sparsity: f64,
        history: &mut Vec<EpochRow>,
    ) -> Result<()> {
        let tag = match stage {
            "train" => 1,
            "finetune" => 2 + round as u64,
            _ => 1000 + round as u64,
        };
        // Rows this call is about to (re)write, and any later ones of the same stage.
        history.retain(|e| {
            !(e.stage == stage
                && (e.round > round || (e.round == round && e.epoch >= epoch_offset)))
        });
        // Distillation from the dense model wraps the stage's hook (the teacher only changes the loss).
        let distill = match stage {
            "finetune" => self.recipe.prune.distill.as_ref(),
            "centroids" | "qat" => self.recipe.quant.distill.as_ref(),
            _ => None,
        };
        let mut kd = match (distill, &self.teacher) {
            (Some(d), Some(t)) => Some(deepcomp_models::distill::Distill::new(
                t.as_ref(),
                d.alpha,
                d.temperature,
            )?),
            (Some(_), None) => {
                return Err(DriverError::Other(format!(
                    "stage `{stage}` distills from the dense model, but no teacher was loaded"
                )))
            }
            _ => None,
        };
        let mut chain;
        let hook: &mut dyn TrainHook = match kd.as_mut() {
            Some(kd) => {
                chain = Chain(vec![kd, hook]);
                &mut chain
            }
            None => hook,
        };
        let mut opt = make_optimizer(o)?;
        let sched = make_schedule(o, epochs)?;
        let progress = deepcomp_models::ProgressConfig {
            enabled: self.progress,
            log_every: 0,
        };
        for epoch in 0..epochs {
            let lr = sched.lr_at(o.lr, epoch);
            opt.set_lr(lr);
            hook.on_epoch_start(epoch, model)?;
            let cfg = batch_config(self.recipe, true, tag);
            let batches = self.data.train.batches(
                &cfg,
                &self.data.mean,
                &self.data.std,
                (epoch_offset + epoch) as u64,
                &self.device,
            )?;
            let st =
                deepcomp_models::train_epoch(model, opt.as_mut(), batches, hook, epoch, &progress)?;
            let (top1, top5) = self.evaluate(model)?;
            let val = self.validate(model)?;
            // In the centroid stage the optimizer only moves what is not shared (`quant.other_lr`);
            // the centroids move at `quant.lr`.
            let lr_text = if stage == "centroids" {
                format!(
                    "centroid lr {:.5}  other lr {:.5}",
                    self.recipe.quant.lr,
                    if lr > 1e-300 { lr } else { 0.0 }
                )
            } else {
                format!("lr {lr:.5}")
            };
            crate::detail!(
                "{stage:>9} epoch {:>3}/{epochs}  {lr_text}  loss {:.4}  train {:.4}  val {val:.4}  test {top1:.4}  {:.0} ex/s",
                epoch + 1,
                st.loss,
                st.top1,
                st.ex_per_s
            );
            history.push(EpochRow {
                stage: stage.to_string(),
                round,
                epoch: epoch_offset + epoch,
                sparsity,
                lr,
                centroid_lr: (stage == "centroids").then_some(self.recipe.quant.lr),
                loss: st.loss,
                train_top1: st.top1,
                val_top1: val,
                test_top1: top1,
                test_top5: top5,
                ex_per_s: st.ex_per_s,
            });
        }
        Ok(())
    }
}

fn make_optimizer(o: &OptimSection) -> Result<Box<dyn Optimizer>> {
    use deepcomp_models::{AdamWConfig, OptimizerConfig, SgdConfig};
    let cfg = match o.optimizer.as_str() {
        "adamw" => OptimizerConfig::AdamW(AdamWConfig {
            lr: o.lr,
            weight_decay: o.weight_decay,
            ..AdamWConfig::default()
        }),
        _ => OptimizerConfig::Sgd(SgdConfig {
            lr: o.lr,
            momentum: o.momentum,
            nesterov: o.nesterov,
            weight_decay: o.weight_decay,
            ..SgdConfig::default()
        }),
    };
    Ok(cfg.build()?)
}

fn make_schedule(o: &OptimSection, epochs: usize) -> Result<deepcomp_models::Schedule> {
    use deepcomp_models::LrSchedule;
    let kind = match o.lr_schedule.as_str() {
        "step" => LrSchedule::Step {
            step_size: o.step_size.unwrap_or(1),
            gamma: o.gamma.unwrap_or(0.1),
        },
        "multistep" => LrSchedule::MultiStep {
            milestones: o.milestones.clone().unwrap_or_default(),
            gamma: o.gamma.unwrap_or(0.1),
        },
        "cosine" => LrSchedule::Cosine {
            t_max: epochs.max(1),
            eta_min: o.eta_min,
        },
        _ => LrSchedule::Constant,
    };
    let s = deepcomp_models::Schedule::new(kind);
    s.validate(o.lr)?;
    Ok(s)
}

/// The prunable weights of `model` as (name, tensor) pairs.
fn prunable_tensors(model: &dyn Model) -> Vec<(String, Tensor)> {
    model
        .prunable()
        .into_iter()
        .map(|p| (p.name, p.var.as_tensor().clone()))
        .collect()
}

/// Masks of a model whose pruned weights are exact zeros.
fn masks_from_zeros(model: &dyn Model) -> Result<MaskSet> {
    let mut set = MaskSet::new();
    for p in model.prunable() {
        set.insert(p.name.clone(), Mask::from_nonzero(p.var.as_tensor())?);
    }
    Ok(set)
}

/// Masks for one pruning step reaching `target` sparsity per layer (times the layer's scale).
fn masks_for_target(
    recipe: &Recipe,
    model: &dyn Model,
    target: f64,
    round: usize,
    prev: Option<&MaskSet>,
) -> Result<MaskSet> {
    let tensors = prunable_tensors(model);
    let named: Vec<(&str, &Tensor)> = tensors.iter().map(|(n, t)| (n.as_str(), t)).collect();
    let p = &recipe.prune;
    let q_of =
        |name: &str| 100.0 * (target * p.layer_scale.get(name).copied().unwrap_or(1.0)).min(0.999);
    let criterion = match p.method.as_str() {
        "std" => Criterion::Std {
            s: p.std_s.get(round).copied().unwrap_or(0.0),
        },
        "global" => Criterion::Global { q: 100.0 * target },
        "random" => Criterion::Random {
            q: 100.0 * target,
            seed: recipe.seed,
        },
        _ => Criterion::PerLayerPercentile {
            q: tensors.iter().map(|(n, _)| (n.clone(), q_of(n))).collect(),
        },
    };
    Ok(compute_masks(&named, &criterion, prev, None)?)
}

fn weight_values(model: &dyn Model, name: &str) -> Result<Vec<f32>> {
    let p = model
        .params()
        .get(name)
        .ok_or_else(|| DriverError::msg(format!("model has no `{name}`")))?;
    Ok(p.var.as_tensor().flatten_all()?.to_vec1::<f32>()?)
}

/// The recipe section's regularizer as a hook over the prunable weights.
fn regularizer_hook(
    reg: Option<&crate::recipe::RegularizerSection>,
    model: &dyn Model,
) -> Option<RegularizerHook> {
    reg.map(|r| RegularizerHook {
        reg: Regularizer::from_recipe(r),
        names: model.prunable().into_iter().map(|p| p.name).collect(),
    })
}

/// `hook` after the regularizer, if any (alone otherwise: the same calls as `hook` by itself).
fn with_regularizer<'a>(
    reg: &'a mut Option<RegularizerHook>,
    hook: &'a mut dyn TrainHook,
) -> Chain<'a> {
    let mut v: Vec<&mut dyn TrainHook> = Vec::new();
    if let Some(r) = reg.as_mut() {
        v.push(r);
    }
    v.push(hook);
    Chain(v)
}

/// A report row for the regularizer of `stage`, with the fraction of exactly-zero prunable weights.
fn regularizer_row(
    stage: &str,
    r: &crate::recipe::RegularizerSection,
    model: &dyn Model,
) -> Result<crate::report::RegularizerRow> {
    let (mut zeros, mut total) = (0usize, 0usize);
    for p in model.prunable() {
        let v = weight_values(model, &p.name)?;
        zeros += v.iter().filter(|x| **x == 0.0).count();
        total += v.len();
    }
    let zero_fraction = if total == 0 {
        0.0
    } else {
        zeros as f64 / total as f64
    };
    eprintln!(
        "deepcomp: {stage} regularizer {} (λ {}): {:.4} of the prunable weights are exactly zero",
        r.kind, r.lambda, zero_fraction
    );
    Ok(crate::report::RegularizerRow {
        stage: stage.into(),
        kind: r.kind.clone(),
        lambda: r.lambda,
        k: r.k,
        fraction: r.fraction,
        zero_fraction,
    })
}

fn init_of(recipe: &Recipe) -> Init {
    match recipe.quant.init.as_str() {
        "density" => Init::Density,
        "random" => Init::Random { seed: recipe.seed },
        "kmeans++" => Init::KMeansPlusPlus { seed: recipe.seed },
        _ => Init::Linear,
    }
}

/// Runs (or resumes) the whole pipeline on the CPU and writes every output file. Returns the report.
pub fn run(opts: &PipelineOptions) -> Result<Report> {
    run_on(opts, &Device::Cpu)
}

/// Saves a stage checkpoint with its inputs and the report so far (see [`crate::resume`]).
fn save_stage(model: &dyn Model, path: &Path, inputs: &Value, report: &Report) -> Result<()> {
    let meta = resume::metadata(inputs, report)?;
    deepcomp_models::save_safetensors_with(model, path, &meta)?;
    Ok(())
}

/// The checkpoints of a run, in stage order, with the inputs each depends on.
pub(crate) fn stage_files(
    out: &Path,
    recipe: &Recipe,
    inputs: &StageInputs,
) -> Vec<(PathBuf, Value)> {
    let dir = ckpt_dir(out);
    let mut v = vec![(dir.join("dense.safetensors"), inputs.dense.clone())];
    if matches!(recipe.prune.schedule.as_str(), "rounds" | "oneshot") {
        for (i, inp) in inputs.rounds.iter().enumerate() {
            v.push((dir.join(format!("prune-round{i}.safetensors")), inp.clone()));
        }
    }
    v.push((dir.join("pruned.safetensors"), inputs.pruned.clone()));
    v.push((dir.join("quantized.safetensors"), inputs.quantized.clone()));
    v
}

/// Checks every checkpoint of an earlier run against the recipe: keeps the longest prefix of stages
/// whose inputs are unchanged, deletes every later checkpoint (and any checkpoint file this recipe
/// would not write), and returns the report of the last kept checkpoint.
fn reconcile_checkpoints(
    out: &Path,
    recipe: &Recipe,
    inputs: &StageInputs,
) -> Result<Option<Report>> {
    let files = stage_files(out, recipe, inputs);
    let mut report = None;
    let mut broken = false;
    for (path, want) in &files {
        if broken {
            remove_if_exists(path)?;
            continue;
        }
        match resume::check(path, want)? {
            resume::Reuse::Yes(r) => report = Some(*r),
            resume::Reuse::Absent => broken = true,
            resume::Reuse::No(why) => {
                crate::note!(
                    "deepcomp: not reusing {}: {why}; redoing from this stage",
                    path.display()
                );
                remove_if_exists(path)?;
                broken = true;
            }
        }
    }
    // Round checkpoints of a longer earlier schedule, or of another schedule kind.
    if let Ok(entries) = std::fs::read_dir(ckpt_dir(out)) {
        for e in entries.flatten() {
            let p = e.path();
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with("prune-round")
                && name.ends_with(".safetensors")
                && !files.iter().any(|(f, _)| *f == p)
            {
                remove_if_exists(&p)?;
            }
        }
    }
    Ok(report)
}

fn remove_if_exists(path: &Path) -> Result<()> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(DriverError::io(path, e)),
    }
}

/// Every layer name a recipe gives (`quant.bits`, `prune.layer_scale`) must be a prunable layer of the
/// model; a name that matches none would otherwise be ignored without a word.
pub fn check_layer_names(recipe: &Recipe, model: &dyn Model) -> Result<()> {
    let names: Vec<String> = model.prunable().into_iter().map(|p| p.name).collect();
    let fields = recipe
        .quant
        .bits
        .keys()
        .map(|k| ("quant.bits", k))
        .chain(
            recipe
                .prune
                .layer_scale
                .keys()
                .map(|k| ("prune.layer_scale", k)),
        )
        .chain(
            recipe
                .quant
                .method_layers
                .keys()
                .map(|k| ("quant.method_layers", k)),
        )
        .chain(
            recipe
                .quant
                .float_layers
                .iter()
                .map(|k| ("quant.float_layers", k)),
        );
    for p in model.prunable() {
        let method = recipe.method_for(&p.name);
        let bits = recipe.bits_for(&p.name, p.kind == LayerKind::Conv);
        if (method == "uniform" || method == "ste") && !crate::recipe::UNIFORM_BITS.contains(&bits)
        {
            let field = if recipe.quant.bits.contains_key(&p.name) {
                format!("quant.bits.\"{}\"", p.name)
            } else if p.kind == LayerKind::Conv {
                "quant.conv_bits".into()
            } else {
                "quant.fc_bits".into()
            };
            return Err(crate::recipe::RecipeError::Field {
                origin: recipe.name.clone(),
                field,
                reason: format!(
                    "{bits} bits for `{}` (method `{method}`) is outside {}..={}",
                    p.name,
                    crate::recipe::UNIFORM_BITS.start(),
                    crate::recipe::UNIFORM_BITS.end()
                ),
            }
            .into());
        }
    }
    for (field, key) in fields {
        if !names.contains(key) {
            return Err(crate::recipe::RecipeError::Field {
                origin: recipe.name.clone(),
                field: format!("{field}.\"{key}\""),
                reason: format!(
                    "matches no prunable layer of `{}` (its layers: {})",
                    recipe.model,
                    names.join(", ")
                ),
            }
            .into());
        }
    }
    Ok(())
}

/// The description of the loaded data that every checkpoint's stage inputs record (source and split
/// sizes).
fn data_inputs(data: &Dataset, val: Option<&Split>) -> Value {
    serde_json::json!({
        "source": data.source.display().to_string(),
        "train": data.train.n,
        "validation": val.map_or(0, |v| v.n),
        "test": data.test.n,
    })
}

/// Loads the recipe's data as a run would and describes it as the stage inputs record it (see
/// [`StageInputs::new`]); `data_path` is the run's `--data`.
pub fn data_description(recipe: &Recipe, data_path: Option<&Path>) -> Result<Value> {
    let mut data = load_data(recipe, data_path, false, Splits::Both)?;
    let val = split_validation(recipe, &mut data)?;
    Ok(data_inputs(&data, val.as_ref()))
}

/// The checks a run makes before it creates any file that need no data: the model builds and every
/// layer name the recipe gives is one of its layers.
pub fn check_recipe(recipe: &Recipe) -> Result<()> {
    let model = build_model(recipe, &Device::Cpu)?;
    check_layer_names(recipe, model.as_ref())
}

/// [`run`] with the model, the batches and the training on `device` (see
/// [`crate::epoch::parse_device`]); k-means, encoding and the report work on host copies.
pub fn run_on(opts: &PipelineOptions, device: &Device) -> Result<Report> {
    let t_total = Instant::now();
    let recipe = &opts.recipe.recipe;
    let device = device.clone();
    // Everything that can be checked is checked before any file or folder is created.
    let mut model = build_model(recipe, &device)?;
    check_layer_names(recipe, model.as_ref())?;
    let mut data = load_data(
        recipe,
        opts.data_path.as_deref(),
        opts.progress,
        Splits::Both,
    )?;
    let val = split_validation(recipe, &mut data)?;
    let inputs = StageInputs::new(&opts.recipe, data_inputs(&data, val.as_ref()))?;
    let _lock = resume::OutputLock::acquire(&opts.out)?;
    let removed = resume::remove_stale_temps(&[opts.out.clone(), ckpt_dir(&opts.out)])?;
    if removed > 0 {
        crate::note!("deepcomp: removed {removed} temp file(s) left by an interrupted run");
    }
    if opts.fresh {
        for sub in ["checkpoints", "plots"] {
            let p = opts.out.join(sub);
            if p.exists() {
                std::fs::remove_dir_all(&p).map_err(|e| DriverError::io(&p, e))?;
            }
        }
        for f in ["progress.json", "model.dcz", "report.json", "report.md"] {
            remove_if_exists(&opts.out.join(f))?;
        }
    }
    fsutil::create_dir_all(&ckpt_dir(&opts.out))?;
    // The report comes from the last checkpoint kept, never from progress.json (which a kill may
    // leave one step behind).
    let mut report = reconcile_checkpoints(&opts.out, recipe, &inputs)?.unwrap_or_default();
    report.reused = stage_files(&opts.out, recipe, &inputs)
        .iter()
        .filter(|(p, _)| p.exists())
        .filter_map(|(p, _)| Some(p.file_stem()?.to_string_lossy().into_owned()))
        .collect();
    let progress_path = opts.out.join("progress.json");
    if let Ok(Some(earlier)) = fsutil::read_json::<Report>(&progress_path) {
        let kept = |f: &str| ckpt_dir(&opts.out).join(f).exists();
        let stages = resume::KeptStages {
            dense: kept("dense.safetensors"),
            pruned: kept("pruned.safetensors"),
            quantized: kept("quantized.safetensors"),
        };
        resume::restore_timings(&mut report, &earlier, stages);
    }
    for f in ["model.dcz", "report.json", "report.md"] {
        remove_if_exists(&opts.out.join(f))?;
    }
    // The recipe with the per-layer targets `prune.from_sensitivity` chooses (set after the scan).
    let scaled_recipe: Recipe;
    let mut ctx = Ctx {
        recipe,
        device: device.clone(),
        data,
        out: opts.out.clone(),
        progress: opts.progress,
        inputs,
        val,
        teacher: None,
    };
    report.recipe = recipe.name.clone();
    report.model = recipe.model.clone();
    report.dataset = recipe.dataset.clone();
    report.seed = recipe.seed;
    report.data_source = ctx.data.source.display().to_string();
    report.examples = crate::report::Examples {
        train: ctx
            .data
            .train
            .n
            .min(recipe.data.train_limit.unwrap_or(usize::MAX)),
        validation: ctx.val.as_ref().map_or(0, |v| v.n),
        test: ctx
            .data
            .test
            .n
            .min(recipe.data.test_limit.unwrap_or(usize::MAX)),
    };
    let (version, commit) = crate::report::build_info();
    report.version = version.to_string();
    report.commit = commit.to_string();
    report.recipe_text = opts.recipe.text.clone();
    let limited = |n: usize, all: usize| {
        if n < all {
            format!("{n} of {all}")
        } else {
            n.to_string()
        }
    };
    crate::note!(
        "deepcomp: recipe `{}` ({}), model {}, dataset {} from {} ({} train / {} validation / {} test)",
        recipe.name,
        opts.recipe.origin,
        recipe.model,
        recipe.dataset,
        ctx.data.source.display(),
        limited(report.examples.train, ctx.data.train.n),
        report.examples.validation,
        limited(report.examples.test, ctx.data.test.n)
    );

    // --- train ---------------------------------------------------------------------------------
    let dense_ckpt = ckpt_dir(&ctx.out).join("dense.safetensors");
    if dense_ckpt.exists() {
        crate::note!(
            "deepcomp: resuming: dense model from {}",
            dense_ckpt.display()
        );
        deepcomp_models::load_safetensors(model.as_ref(), &dense_ckpt)?;
    } else {
        let t = Instant::now();
        if let Some(ck) = &recipe.train.checkpoint {
            crate::note!("deepcomp: loading dense weights from {}", ck.display());
            load_state_dict(model.as_ref(), ck, recipe.train.key_map.as_deref())?;
        }
        if recipe.train.epochs > 0 {
            let mut reg = regularizer_hook(recipe.train.regularizer.as_ref(), model.as_ref());
            let mut none = deepcomp_models::NoHook;
            ctx.train(
                model.as_ref(),
                &recipe.train.optim(),
                recipe.train.epochs,
                &mut with_regularizer(&mut reg, &mut none),
                "train",
                0,
                0,
                0.0,
                &mut report.history,
            )?;
        }
        report
            .regularizers
            .retain(|r| r.stage != "train" && r.stage != "prune");
        if let Some(r) = &recipe.train.regularizer {
            report
                .regularizers
                .push(regularizer_row("train", r, model.as_ref())?);
        }
        let (top1, _) = ctx.evaluate(model.as_ref())?;
        report.accuracy.dense = top1;
        report.seconds.train = t.elapsed().as_secs_f64();
        save_stage(model.as_ref(), &dense_ckpt, &ctx.inputs.dense, &report)?;
        fsutil::write_json(&progress_path, &report)?;
    }
    crate::note!("deepcomp: dense top-1 {:.4}", report.accuracy.dense);
    if recipe.prune.distill.is_some() || recipe.quant.distill.is_some() {
        // The teacher: a second copy of the dense model, from the checkpoint just written or resumed.
        let teacher = build_model(recipe, &device)?;
        deepcomp_models::load_safetensors(teacher.as_ref(), &dense_ckpt)?;
        ctx.teacher = Some(teacher);
    }
    // The dense weights, for the weight-distribution plots.
    let dense_values: Vec<(String, Vec<f32>)> = model
        .prunable()
        .iter()
        .map(|p| Ok((p.name.clone(), weight_values(model.as_ref(), &p.name)?)))
        .collect::<Result<_>>()?;

    // --- sensitivity (optional) ------------------------------------------------------------------
    let scan_levels = crate::sensitivity::levels(&recipe.prune);
    let scan_stale = report.sensitivity.is_empty()
        || report.sensitivity_baseline.is_none()
        || report.sensitivity.iter().any(|r| r.levels != scan_levels);
    if crate::sensitivity::scan_enabled(&recipe.prune) && scan_stale {
        let (rows, baseline) = sensitivity(&ctx, model.as_ref(), &scan_levels)?;
        report.sensitivity = rows;
        report.sensitivity_baseline = Some(baseline);
        fsutil::write_json(&progress_path, &report)?;
    }
    if let Some(fs) = &recipe.prune.from_sensitivity {
        let baseline = report.sensitivity_baseline.unwrap_or(f64::NAN);
        let targets =
            crate::sensitivity::choose_targets(&report.sensitivity, baseline, fs.max_drop);
        for (layer, t) in &targets {
            crate::note!(
                "deepcomp: from sensitivity (max drop {}): {layer} → {:.0} %",
                fs.max_drop,
                100.0 * t
            );
        }
        scaled_recipe = crate::sensitivity::apply_targets(recipe, &targets);
        ctx.recipe = &scaled_recipe;
        report.sensitivity_targets = Some(crate::sensitivity::ChosenTargets {
            max_drop: fs.max_drop,
            baseline,
            targets,
        });
    }

    // --- prune + masked finetune ---------------------------------------------------------------------
    let pruned_ckpt = ckpt_dir(&ctx.out).join("pruned.safetensors");
    // Structured pruning replaces the model by a smaller one; `loaded` describes it (its widths go
    // into the `.dcz` metadata).
    let structured = recipe.prune.method == "structured";
    let mut loaded = opts.recipe.clone();
    let masks = if pruned_ckpt.exists() {
        crate::note!(
            "deepcomp: resuming: pruned model from {}",
            pruned_ckpt.display()
        );
        if structured {
            (loaded.recipe, model) = structured::load_checkpoint(recipe, &pruned_ckpt, &device)?;
        } else {
            deepcomp_models::load_safetensors(model.as_ref(), &pruned_ckpt)?;
        }
        masks_from_zeros(model.as_ref())?
    } else if structured {
        (loaded.recipe, model) =
            structured::prune_stage(&ctx, model.as_ref(), &mut report, &progress_path)?;
        save_stage(model.as_ref(), &pruned_ckpt, &ctx.inputs.pruned, &report)?;
        fsutil::write_json(&progress_path, &report)?;
        masks_from_zeros(model.as_ref())?
    } else {
        let m = prune_and_finetune(&ctx, model.as_ref(), &mut report, &progress_path)?;
        save_stage(model.as_ref(), &pruned_ckpt, &ctx.inputs.pruned, &report)?;
        fsutil::write_json(&progress_path, &report)?;
        m
    };
    crate::detail!("{}", masks.summary());

    // --- quantize + centroid finetune -----------------------------------------------------------------
    let quant_ckpt = ckpt_dir(&ctx.out).join("quantized.safetensors");
    let before: Vec<(String, Vec<f32>)> = model
        .prunable()
        .iter()
        .map(|p| Ok((p.name.clone(), weight_values(model.as_ref(), &p.name)?)))
        .collect::<Result<_>>()?;
    let shared = if quant_ckpt.exists() {
        crate::note!(
            "deepcomp: resuming: quantized model from {}",
            quant_ckpt.display()
        );
        deepcomp_models::load_safetensors(model.as_ref(), &quant_ckpt)?;
        shared_from_model(recipe, model.as_ref(), &masks, &report.quant_steps)?
    } else {
        let t = Instant::now();
        let s = quantize(&ctx, model.as_ref(), &masks, &mut report)?;
        report.seconds.quantize = t.elapsed().as_secs_f64();
        save_stage(model.as_ref(), &quant_ckpt, &ctx.inputs.quantized, &report)?;
        fsutil::write_json(&progress_path, &report)?;
        s
    };

    // --- encode, decode, verify, evaluate ---------------------------------------------------------------
    let t = Instant::now();
    let rounded = round_raw_tensors(&loaded.recipe, model.as_ref())?;
    if rounded > 0 {
        crate::note!(
            "deepcomp: {rounded} raw tensors rounded to {} for storage",
            loaded.recipe.encode.raw_dtype()
        );
    }
    let file = build_dcz(&loaded, model.as_ref(), &shared)?;
    let dcz_path = ctx.out.join("model.dcz");
    let dcz_bytes = file.write_atomic(&dcz_path)?;
    let decoded = DczFile::read(&dcz_path)?;
    verify_decoded(model.as_ref(), &decoded)?;
    let fresh_model = build_model(&loaded.recipe, &device)?;
    load_dcz_into(fresh_model.as_ref(), &decoded, &device)?;
    report.seconds.encode = t.elapsed().as_secs_f64();
    let (dec1, dec5) = ctx.evaluate(fresh_model.as_ref())?;
    report.runtime_check = cross_check(&ctx, &decoded, fresh_model.as_ref())?;
    report.accuracy.decoded = dec1;
    report.decoded_top5 = dec5;
    crate::note!(
        "deepcomp: wrote {} ({dcz_bytes} bytes); decoded bit-exact; decoded top-1 {dec1:.4}",
        dcz_path.display()
    );

    // --- report ---------------------------------------------------------------------------------------------
    fill_sizes(&mut report, model.as_ref(), &decoded, dcz_bytes)?;
    if let Some(st) = &report.structured {
        // Ratios against the dense model, not the smaller one.
        report.bytes.dense_f32 = 4 * st.params_dense;
    }
    report.dcz_sha256 = fsutil::sha256_file(&dcz_path)?;
    report.seconds.total += t_total.elapsed().as_secs_f64();
    report.compute_ratios();
    if report.accuracy.shared == 0.0 {
        // A report resumed from a checkpoint of an older version: the history has the figure.
        if let Some(e) = report.history.iter().find(|e| e.stage == "shared") {
            report.accuracy.shared = e.test_top1;
        }
    }
    write_outputs(&ctx.out, &report, &dense_values, &before, model.as_ref())?;
    fsutil::write_json(&progress_path, &report)?;
    Ok(report)
}

fn prune_and_finetune(
    ctx: &Ctx<'_>,
    model: &dyn Model,
    report: &mut Report,
    progress_path: &Path,
) -> Result<MaskSet> {
    let recipe = ctx.recipe;
    let p = &recipe.prune;
    let mut masks: Option<MaskSet> = None;
    match p.schedule.as_str() {
        "linear" | "agp" => {
            // One pruning step per epoch following the ramp. Epochs before the linear ramp's final step
            // train without the mask, so pruned weights may regrow (seed 003); after it, masks hold.
            let epochs = p.epochs.unwrap_or(1);
            let fin = p.final_target.unwrap_or(0.0);
            let extra = p.extra_epochs.unwrap_or(0);
            let sched = if p.schedule == "linear" {
                let per_epoch = fin / epochs as f64;
                deepcomp_sparsity::Schedule::Linear {
                    per_epoch,
                    max: fin,
                    extra_epochs: extra,
                }
            } else if epochs == 1 {
                deepcomp_sparsity::Schedule::OneShot {
                    target: fin,
                    epochs: 1 + extra,
                }
            } else {
                // Zhu & Gupta's cubic ramp over `epochs` pruning steps, the first one already pruning
                // (step t of n reaches fin·(1 − (1 − t/n)³), t = 1..=n): the ramp from `initial` =
                // its value at t = 1 over the remaining n − 1 steps is exactly that.
                let n = epochs as f64;
                deepcomp_sparsity::Schedule::Agp {
                    initial: fin * (1.0 - (1.0 - 1.0 / n).powi(3)),
                    final_: fin,
                    start_epoch: 0,
                    steps: epochs - 1,
                    frequency: 1,
                    extra_epochs: extra,
                }
            };
            sched.validate()?;
            let total = sched.total_epochs();
            let lr_sched = make_schedule(&p.optim(), total)?;
            for e in 0..total {
                if let Some(step) = sched.prune_at(e) {
                    let t = Instant::now();
                    let prev = if step.from_scratch {
                        None
                    } else {
                        masks.as_ref()
                    };
                    let m = masks_for_target(recipe, model, step.target, 0, prev)?;
                    MaskHook::new(&m, &ctx.device)?.apply_to_weights(model)?;
                    report.seconds.prune += t.elapsed().as_secs_f64();
                    report.accuracy.pruned = ctx.evaluate(model)?.0;
                    masks = Some(m);
                }
                let mut o = p.optim();
                o.lr = lr_sched.lr_at(p.optim().lr, e);
                o.lr_schedule = "constant".into();
                let target = sched.target_at(e);
                let t = Instant::now();
                let mut reg = regularizer_hook(p.regularizer.as_ref(), model);
                if sched.allows_regrowth_at(e) {
                    let mut none = deepcomp_models::NoHook;
                    ctx.train(
                        model,
                        &o,
                        1,
                        &mut with_regularizer(&mut reg, &mut none),
                        "finetune",
                        0,
                        e,
                        target,
                        &mut report.history,
                    )?;
                } else if let Some(m) = &masks {
                    let mut hook = MaskHook::new(m, &ctx.device)?;
                    ctx.train(
                        model,
                        &o,
                        1,
                        &mut with_regularizer(&mut reg, &mut hook),
                        "finetune",
                        0,
                        e,
                        target,
                        &mut report.history,
                    )?;
                }
                report.seconds.finetune += t.elapsed().as_secs_f64();
            }
        }
        _ => {
            let rounds: Vec<_> = if p.schedule == "oneshot" {
                p.rounds.last().cloned().into_iter().collect()
            } else {
                p.rounds.clone()
            };
            for (i, r) in rounds.iter().enumerate() {
                let round_ckpt = ckpt_dir(&ctx.out).join(format!("prune-round{i}.safetensors"));
                if round_ckpt.exists() {
                    crate::note!(
                        "deepcomp: resuming: pruning round {i} from {}",
                        round_ckpt.display()
                    );
                    deepcomp_models::load_safetensors(model, &round_ckpt)?;
                    masks = Some(masks_from_zeros(model)?);
                    continue;
                }
                let t = Instant::now();
                let m =
                    masks_for_target(recipe, model, r.target.unwrap_or(0.0), i, masks.as_ref())?;
                let mut hook = MaskHook::new(&m, &ctx.device)?;
                hook.apply_to_weights(model)?;
                report.seconds.prune += t.elapsed().as_secs_f64();
                let (acc, _) = ctx.evaluate(model)?;
                report.accuracy.pruned = acc;
                let s = m.summary();
                crate::note!(
                    "deepcomp: round {}/{}: sparsity {:.4} ({} of {} kept), top-1 before finetune {acc:.4}",
                    i + 1,
                    rounds.len(),
                    s.total_sparsity(),
                    s.total_nonzero(),
                    s.total()
                );
                let t = Instant::now();
                let mut reg = regularizer_hook(p.regularizer.as_ref(), model);
                // Quantization-aware finetuning (prune.qat_bits): the STE hook applies the masks too.
                let mut ste = match p.qat_bits {
                    Some(bits) => Some(crate::hooks::SteHook::new(
                        model
                            .prunable()
                            .into_iter()
                            .map(|q| crate::hooks::SteLayer {
                                keep: m.get(&q.name).map(|k| k.keep().to_vec()),
                                name: q.name,
                                shape: q.shape,
                                bits,
                                per_channel: false,
                            })
                            .collect(),
                        Some(MaskHook::new(&m, &ctx.device)?),
                        ctx.device.clone(),
                    )),
                    None => None,
                };
                let inner: &mut dyn TrainHook = match ste.as_mut() {
                    Some(s) => s,
                    None => &mut hook,
                };
                ctx.train(
                    model,
                    &p.optim(),
                    r.epochs,
                    &mut with_regularizer(&mut reg, inner),
                    "finetune",
                    i,
                    0,
                    s.total_sparsity(),
                    &mut report.history,
                )?;
                report.seconds.finetune += t.elapsed().as_secs_f64();
                save_stage(model, &round_ckpt, &ctx.inputs.rounds[i], report)?;
                fsutil::write_json(progress_path, report)?;
                // After quantization-aware finetuning, weights quantized to zero are pruned from here
                // on (as a resumed run, which takes its masks from the zeros, sees them).
                masks = Some(if ste.is_some() {
                    masks_from_zeros(model)?
                } else {
                    m
                });
            }
        }
    }
    let (acc, _) = ctx.evaluate(model)?;
    report.accuracy.finetuned = acc;
    if let Some(r) = &p.regularizer {
        report.regularizers.retain(|r| r.stage != "prune");
        report
            .regularizers
            .push(regularizer_row("prune", r, model)?);
        // Zeros the regularizer made are pruned from here on (as a resumed run, which takes its masks
        // from the zeros of the checkpoint, sees them).
        return masks_from_zeros(model);
    }
    masks.map_or_else(|| masks_from_zeros(model), Ok)
}

fn quantize(
    ctx: &Ctx<'_>,
    model: &dyn Model,
    masks: &MaskSet,
    report: &mut Report,
) -> Result<Vec<SharedLayer>> {
    let recipe = ctx.recipe;
    if model
        .prunable()
        .iter()
        .any(|p| recipe.method_for(&p.name) != "kmeans")
    {
        return quantize::quantize_methods(ctx, model, masks, report);
    }
    let mut layers = Vec::new();
    for p in model.prunable() {
        let values = weight_values(model, &p.name)?;
        let bits = recipe.bits_for(&p.name, p.kind == LayerKind::Conv);
        let keep = kept_positions(masks, &p.name, &values);
        let shared = deepcomp_quant::share_weights(&values, Some(&keep), bits, init_of(recipe))?;
        layers.push(SharedLayer {
            name: p.name.clone(),
            shape: p.shape.clone(),
            shared,
            channel_steps: None,
        });
    }
    let mut hook = CentroidHook::new(layers, recipe.quant.lr as f32, ctx.device.clone());
    hook.write_weights(model)?;
    let (acc, top5) = ctx.evaluate(model)?;
    crate::note!("deepcomp: weight sharing done; top-1 before centroid training {acc:.4}");
    report.accuracy.shared = acc;
    let sparsity = masks.summary().total_sparsity();
    let val = ctx.validate(model)?;
    report.history.retain(|e| e.stage != "shared");
    report.history.push(EpochRow {
        stage: "shared".into(),
        sparsity,
        val_top1: val,
        test_top1: acc,
        test_top5: top5,
        ..Default::default()
    });
    if recipe.quant.epochs > 0 {
        // The optimizer only moves the non-shared parameters (biases, BatchNorm); the hook owns the centroids.
        let mut o = recipe.prune.optim();
        o.lr = if recipe.quant.other_lr > 0.0 {
            recipe.quant.other_lr
        } else {
            f64::MIN_POSITIVE
        };
        o.lr_schedule = "cosine".into();
        ctx.train(
            model,
            &o,
            recipe.quant.epochs,
            &mut hook,
            "centroids",
            0,
            0,
            0.0,
            &mut report.history,
        )?;
    }
    let (acc, _) = ctx.evaluate(model)?;
    report.accuracy.quantized = acc;
    Ok(hook.layers)
}

/// Which weights of `name` are kept: its mask, or its nonzeros when it has none.
fn kept_positions(masks: &MaskSet, name: &str, values: &[f32]) -> Vec<bool> {
    match masks.get(name) {
        Some(m) => m.keep().to_vec(),
        None => values.iter().map(|v| *v != 0.0).collect(),
    }
}

/// Rebuilds codebooks and codes from a quantized model (resume path): a layer's codebook is the sorted
/// set of its kept values.
fn shared_from_model(
    recipe: &Recipe,
    model: &dyn Model,
    masks: &MaskSet,
    steps: &std::collections::BTreeMap<String, Vec<f32>>,
) -> Result<Vec<SharedLayer>> {
    let mut out = Vec::new();
    for p in model.prunable() {
        let values = weight_values(model, &p.name)?;
        let bits = recipe.bits_for(&p.name, p.kind == LayerKind::Conv);
        let keep = kept_positions(masks, &p.name, &values);
        match recipe.method_for(&p.name) {
            "float" => continue,
            "kmeans" => out.push(SharedLayer {
                name: p.name.clone(),
                shape: p.shape.clone(),
                shared: shared_from_values(&values, &keep, bits)?,
                channel_steps: None,
            }),
            _ => {
                let steps = steps.get(&p.name).ok_or_else(|| {
                    DriverError::msg(format!(
                        "the quantized checkpoint's report has no uniform steps for `{}`",
                        p.name
                    ))
                })?;
                let codes = quantize::codes_from_steps(&values, &keep, steps, bits)?;
                out.push(quantize::uniform_shared(
                    &p.name,
                    &p.shape,
                    &codes,
                    recipe.per_channel(),
                )?);
            }
        }
    }
    Ok(out)
}

/// Codebook = sorted distinct kept values; fails if there are more than 2^bits.
pub fn shared_from_values(values: &[f32], keep: &[bool], bits: u8) -> Result<SharedWeights> {
    let mut book: Vec<f32> = values
        .iter()
        .zip(keep)
        .filter(|(_, k)| **k)
        .map(|(v, _)| *v)
        .collect();
    book.sort_by(f32::total_cmp);
    book.dedup_by(|a, b| a.to_bits() == b.to_bits());
    if book.len() > 1usize << bits {
        return Err(DriverError::msg(format!(
            "a quantized layer has {} distinct values, more than 2^{bits}",
            book.len()
        )));
    }
    let mut positions = Vec::new();
    let mut codes = Vec::new();
    for (i, (v, k)) in values.iter().zip(keep).enumerate() {
        if *k {
            positions.push(i as u64);
            let c = book
                .binary_search_by(|b| b.total_cmp(v))
                .map_err(|_| DriverError::msg("value not in codebook"))?;
            codes.push(c as u32);
        }
    }
    Ok(SharedWeights::from_parts(
        values.len(),
        book,
        positions,
        codes,
        bits,
    )?)
}

fn kind_of(k: LayerKind) -> container::LayerKind {
    match k {
        LayerKind::Conv => container::LayerKind::Conv,
        LayerKind::Fc => container::LayerKind::Fc,
    }
}

/// Builds the `.dcz` content: shared layers + every other tensor raw. The index width of each layer is
/// the one (in 2..=12) giving the smallest layer section, unless the recipe fixes it.
pub fn build_dcz(
    recipe: &LoadedRecipe,
    model: &dyn Model,
    shared: &[SharedLayer],
) -> Result<DczFile> {
    let mut layers = Vec::new();
    let mut channel_scales = Vec::new();
    let coded: Vec<_> = model
        .prunable()
        .into_iter()
        .filter(|p| recipe.recipe.method_for(&p.name) != "float")
        .collect();
    if coded.len() != shared.len() {
        return Err(DriverError::msg(format!(
            "{} quantized layers for {} layers to code",
            shared.len(),
            coded.len()
        )));
    }
    for (p, s) in coded.iter().zip(shared) {
        if p.name != s.name {
            return Err(DriverError::msg(format!(
                "layer order mismatch: {} vs {}",
                p.name, s.name
            )));
        }
        layers.push(sparse_layer(
            &s.name,
            kind_of(p.kind),
            &s.shape,
            &s.shared,
            recipe.recipe.encode.index_bits,
        )?);
        if let Some(steps) = &s.channel_steps {
            channel_scales.push(deepcomp_format::ChannelScales {
                layer: s.name.clone(),
                scales: steps.clone(),
            });
        }
    }
    // Layers kept in float are stored raw, like biases: as `f32` (DENS sections) or, with
    // `encode.raw_dtype`, as `f16` / `bf16` (TYPD sections; [`round_raw_tensors`] made the values
    // exact in that type).
    let raw_dtype = raw_storage_dtype(&recipe.recipe);
    let mut dense = Vec::new();
    let mut typed = Vec::new();
    let raw = raw_tensor_names(&recipe.recipe, model);
    for p in model.params().iter().filter(|p| raw.contains(&p.name)) {
        let (name, shape) = (p.name.clone(), p.var.dims().to_vec());
        let values = p.var.as_tensor().flatten_all()?.to_vec1::<f32>()?;
        match raw_dtype {
            None => dense.push(DenseTensor {
                name,
                shape,
                data: values,
            }),
            Some(dtype) => typed.push(container::TypedTensor {
                name,
                dtype,
                shape,
                data: crate::compress::floats_to_bytes(dtype, &values),
            }),
        }
    }
    Ok(DczFile {
        model: recipe.recipe.model.clone(),
        recipe_hash: recipe.hash(),
        layers,
        dense,
        typed,
        channel_scales,
        metadata: Some(crate::meta::for_recipe(&recipe.recipe, "deepcomp pipeline").to_json()),
        ..Default::default()
    })
}

/// The decoded model against deepcomp-runtime on the first test images (up to 64): an error when they
/// disagree ([`crate::engine::runtime_cross_check`]).
fn cross_check(ctx: &Ctx<'_>, file: &DczFile, model: &dyn Model) -> Result<Option<f64>> {
    let cfg = BatchConfig {
        limit: Some(64),
        ..batch_config(ctx.recipe, false, 0)
    };
    let mut batches = ctx
        .data
        .test
        .batches(&cfg, &ctx.data.mean, &ctx.data.std, 0, &ctx.device)?;
    let Some(first) = batches.next() else {
        return Ok(None);
    };
    let (images, _) = first?;
    let d = crate::engine::runtime_cross_check(file, model, &images)?;
    match d {
        Some(d) => crate::detail!("deepcomp: deepcomp-runtime agrees with the decoded model (relative difference {d:.1e})"),
        None => crate::detail!("deepcomp: deepcomp-runtime does not run this model; no cross-check"),
    }
    Ok(d)
}

/// The tensors a `.dcz` stores raw: every parameter and buffer of the model except the weights it
/// codes (the prunable layers not kept in float), in the model's order.
fn raw_tensor_names(recipe: &Recipe, model: &dyn Model) -> Vec<String> {
    let coded: Vec<String> = model
        .prunable()
        .into_iter()
        .filter(|p| recipe.method_for(&p.name) != "float")
        .map(|p| p.name)
        .collect();
    model
        .params()
        .iter()
        .map(|p| p.name.clone())
        .filter(|n| !coded.contains(n))
        .collect()
}

/// The element type raw tensors are stored in: `None` for `f32` (DENS sections), else the 16-bit
/// type of `encode.raw_dtype`.
fn raw_storage_dtype(recipe: &Recipe) -> Option<container::Dtype> {
    crate::compress::parse_raw_dtype(recipe.encode.raw_dtype())
        .ok()
        .filter(|&d| d != container::Dtype::F32)
}

/// Rounds the model's raw tensors ([`raw_tensor_names`]) to `encode.raw_dtype` (round to nearest
/// even), so that the model evaluated after decoding is the one the file holds. A value the type
/// cannot hold (beyond ±65,504 in `f16`) is an error naming the tensor, never a silent infinity.
/// Returns how many tensors were rounded (0 for `f32`).
pub fn round_raw_tensors(recipe: &Recipe, model: &dyn Model) -> Result<usize> {
    let Some(dtype) = raw_storage_dtype(recipe) else {
        return Ok(0);
    };
    let names = raw_tensor_names(recipe, model);
    for name in &names {
        let p = model
            .params()
            .get(name)
            .ok_or_else(|| DriverError::msg(format!("model has no tensor `{name}`")))?;
        let bytes = crate::compress::raw_bytes(name, dtype, &weight_values(model, name)?)?;
        let rounded = crate::compress::floats_from_bytes(dtype, &bytes);
        let t = Tensor::from_vec(rounded, p.var.dims(), p.var.device())?;
        p.var.set(&t)?;
    }
    Ok(names.len())
}

/// A container layer from shared weights; `index_bits` `None` picks the smallest width
/// ([`best_index_bits`]).
pub(crate) fn sparse_layer(
    name: &str,
    kind: container::LayerKind,
    shape: &[usize],
    shared: &SharedWeights,
    index_bits: Option<u8>,
) -> Result<SparseLayer> {
    let mut layer = SparseLayer {
        name: name.to_string(),
        kind,
        shape: shape.to_vec(),
        bits: shared.bits(),
        index_bits: index_bits.unwrap_or(5),
        codebook: shared.codebook().to_vec(),
        positions: shared.positions().to_vec(),
        codes: shared.codes().to_vec(),
    };
    if index_bits.is_none() {
        layer.index_bits = best_index_bits(&layer)?;
    }
    Ok(layer)
}

/// The index width in 2..=12 that gives the smallest encoded layer (its section's bytes, measured
/// without the file limits: a layer alone is not a file, and its implicit zeros may need the
/// allowance the whole file's size gives).
fn best_index_bits(layer: &SparseLayer) -> Result<u8> {
    let mut best = (u64::MAX, layer.index_bits);
    for b in 2..=12u8 {
        let mut l = layer.clone();
        l.index_bits = b;
        let f = DczFile {
            model: String::new(),
            recipe_hash: [0; 32],
            layers: vec![l],
            dense: vec![],
            ..Default::default()
        };
        let size = container::layer_stats(&f)?
            .first()
            .map_or(u64::MAX, |s| s.bytes);
        if size < best.0 {
            best = (size, b);
        }
    }
    Ok(best.1)
}

/// Checks that every decoded tensor equals the model's tensor bit for bit.
pub fn verify_decoded(model: &dyn Model, file: &DczFile) -> Result<()> {
    for (i, l) in file.layers.iter().enumerate() {
        let want = weight_values(model, &l.name)?;
        let got = file.layer_values(i);
        if want.len() != got.len()
            || want
                .iter()
                .zip(&got)
                .any(|(a, b)| a.to_bits() != b.to_bits())
        {
            let first = want
                .iter()
                .zip(&got)
                .position(|(a, b)| a.to_bits() != b.to_bits())
                .unwrap_or(0);
            return Err(DriverError::Verify(format!(
                "layer `{}` decodes differently at element {first}",
                l.name
            )));
        }
    }
    for d in &file.dense {
        let want = weight_values(model, &d.name)?;
        if want.len() != d.data.len()
            || want
                .iter()
                .zip(&d.data)
                .any(|(a, b)| a.to_bits() != b.to_bits())
        {
            return Err(DriverError::Verify(format!(
                "tensor `{}` decodes differently",
                d.name
            )));
        }
    }
    for t in file.typed.iter().filter(|t| t.dtype.is_float()) {
        let want = weight_values(model, &t.name)?;
        let got = crate::compress::floats_from_bytes(t.dtype, &t.data);
        if want.len() != got.len()
            || want
                .iter()
                .zip(&got)
                .any(|(a, b)| a.to_bits() != b.to_bits())
        {
            return Err(DriverError::Verify(format!(
                "tensor `{}` ({:?}) decodes differently",
                t.name, t.dtype
            )));
        }
    }
    Ok(())
}

/// Writes a decoded file's tensors into `model`. Every parameter and buffer of the model must come
/// from the file (a model half-filled with its random initial weights would evaluate without a word),
/// and every tensor of the file must belong to the model; the error lists the missing and unexpected
/// names, as PyTorch's strict `load_state_dict` does. Nothing is assigned unless all names match.
pub fn load_dcz_into(model: &dyn Model, file: &DczFile, device: &Device) -> Result<()> {
    let in_file: Vec<&str> = file
        .layers
        .iter()
        .map(|l| l.name.as_str())
        .chain(file.dense.iter().map(|d| d.name.as_str()))
        .chain(
            file.typed
                .iter()
                .filter(|t| t.dtype.is_float())
                .map(|t| t.name.as_str()),
        )
        .collect();
    let params = model.params();
    let missing: Vec<&str> = params
        .iter()
        .map(|p| p.name.as_str())
        .filter(|n| !in_file.contains(n))
        .collect();
    let unexpected: Vec<&str> = in_file
        .iter()
        .copied()
        .filter(|n| params.get(n).is_none())
        .collect();
    if !missing.is_empty() || !unexpected.is_empty() {
        return Err(DriverError::msg(format!(
            "the file does not hold model `{}`: missing tensors [{}]; unexpected tensors [{}]",
            model.arch(),
            missing.join(", "),
            unexpected.join(", ")
        )));
    }
    let set = |name: &str, shape: &[usize], data: Vec<f32>| -> Result<()> {
        let p = model.params().get(name).ok_or_else(|| {
            DriverError::msg(format!("model `{}` has no tensor `{name}`", model.arch()))
        })?;
        if p.var.dims() != shape {
            return Err(DriverError::msg(format!(
                "tensor `{name}`: file shape {shape:?}, model shape {:?}",
                p.var.dims()
            )));
        }
        p.var.set(&Tensor::from_vec(data, shape, device)?)?;
        Ok(())
    };
    for (i, l) in file.layers.iter().enumerate() {
        set(&l.name, &l.shape, file.layer_values(i))?;
    }
    for d in &file.dense {
        set(&d.name, &d.shape, d.data.clone())?;
    }
    // Raw float tensors of other types (f16, bf16, f64 models), as f32; integer buffers
    // (`num_batches_tracked`) are not model parameters.
    for t in file.typed.iter().filter(|t| t.dtype.is_float()) {
        set(
            &t.name,
            &t.shape,
            crate::compress::floats_from_bytes(t.dtype, &t.data),
        )?;
    }
    Ok(())
}

fn fill_sizes(
    report: &mut Report,
    model: &dyn Model,
    file: &DczFile,
    dcz_bytes: u64,
) -> Result<()> {
    let stats = container::layer_stats(file)?;
    let macs = deepcomp_models::report::layer_report(model)?;
    let dense_f32: u64 = model
        .params()
        .iter()
        .map(|p| 4 * p.var.elem_count() as u64)
        .sum();
    // Raw tensors count at the bytes the file stores them in (`f32`, or 16-bit with raw_dtype).
    let other_raw: u64 = file
        .dense
        .iter()
        .map(|d| 4 * d.data.len() as u64)
        .sum::<u64>()
        + file.typed.iter().map(|t| t.data.len() as u64).sum::<u64>();
    report.bytes.dense_f32 = dense_f32;
    report.bytes.dcz = dcz_bytes;
    report.bytes.p = other_raw + stats.iter().map(|s| s.p_bytes).sum::<u64>();
    report.bytes.pq = other_raw + stats.iter().map(|s| s.pq_bytes).sum::<u64>();
    report.layers = file
        .layers
        .iter()
        .zip(&stats)
        .map(|(l, s)| LayerRow {
            name: l.name.clone(),
            kind: match l.kind {
                container::LayerKind::Conv => "conv".into(),
                container::LayerKind::Fc => "fc".into(),
            },
            shape: l.shape.clone(),
            params: s.params,
            nonzero: s.nonzero,
            bits: l.bits,
            huffman_avg_bits: s.huffman_avg_bits,
            index_avg_bits: s.index_avg_bits,
            bytes: s.bytes,
            macs: macs
                .layers
                .iter()
                .find(|m| format!("{}.weight", m.name) == l.name)
                .map_or(0, |m| m.macs),
            ..Default::default()
        })
        .collect();
    for l in &mut report.layers {
        // Every weight is used once per output position: MACs = weights × positions.
        let positions = l.macs / l.params.max(1);
        l.macs_dense = l.macs;
        l.macs_pruned = l.nonzero * positions;
    }
    report.memory = crate::sensitivity::memory_rows(&report.layers, &macs);
    report.prunable_params = report.layers.iter().map(|l| l.params).sum();
    report.prunable_nonzero = report.layers.iter().map(|l| l.nonzero).sum();
    Ok(())
}

/// Each layer pruned alone at `levels` (fractions; percentile rule), the rest dense; top-1 on the
/// validation split. Returns the rows and the dense validation top-1.
fn sensitivity(
    ctx: &Ctx<'_>,
    model: &dyn Model,
    levels: &[f64],
) -> Result<(Vec<SensitivityRow>, f64)> {
    if ctx.val.is_none() {
        return Err(crate::recipe::RecipeError::Field {
            origin: ctx.recipe.name.clone(),
            field: "prune.sensitivity".into(),
            reason: "the scan chooses on a validation split, and data.validation is 0".into(),
        }
        .into());
    }
    let percents: Vec<f64> = levels.iter().map(|l| 100.0 * l).collect();
    let costs = deepcomp_models::report::layer_report(model)?;
    let originals: Vec<(String, Tensor)> = model
        .prunable()
        .into_iter()
        .map(|p| Ok((p.name, p.var.as_tensor().copy()?)))
        .collect::<Result<_>>()?;
    let named: Vec<(&str, &Tensor)> = originals.iter().map(|(n, t)| (n.as_str(), t)).collect();
    // Evaluates the dense model with exactly the layers in `masks` masked, then restores them.
    let mut eval = |masks: &MaskSet| -> Result<f64> {
        for (name, t) in &originals {
            let var = &model
                .params()
                .get(name)
                .ok_or_else(|| DriverError::msg(format!("no `{name}`")))?
                .var;
            var.set(&masks.apply_if_masked(name, t)?)?;
        }
        ctx.validate(model)
    };
    let table = deepcomp_sparsity::sensitivity(&named, &percents, &mut eval)?;
    for (name, t) in &originals {
        if let Some(p) = model.params().get(name) {
            p.var.set(t)?;
        }
    }
    crate::detail!("deepcomp: sensitivity scan\n{table}");
    let rows = table
        .rows
        .iter()
        .map(|r| {
            let macs_dense = costs
                .layers
                .iter()
                .find(|c| format!("{}.weight", c.name) == r.layer)
                .map_or(0, |c| c.macs);
            // Every weight is used once per output position.
            let positions = macs_dense / (r.params as u64).max(1);
            let nonzero = |s: f64| r.params as u64 - (s * r.params as f64).round() as u64;
            SensitivityRow {
                layer: r.layer.clone(),
                points: r
                    .sparsity
                    .iter()
                    .zip(&r.accuracy)
                    .map(|(s, a)| (*s, *a))
                    .collect(),
                levels: levels.to_vec(),
                macs: r.sparsity.iter().map(|s| nonzero(*s) * positions).collect(),
                macs_dense,
            }
        })
        .collect();
    Ok((rows, table.baseline))
}

/// File name of a layer's weight-distribution plot.
pub fn hist_file_name(layer: &str) -> String {
    let safe: String = layer
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("hist-{safe}.svg")
}

/// The accuracy-per-stage points of the report's chart, each noted with the seeds' formula ratio at
/// that stage (P after pruning, P+Q after sharing, P+Q+H and the measured file ratio at the end).
pub fn stage_points(report: &Report) -> Vec<plot::StagePoint> {
    let a = &report.accuracy;
    let st = report.stage_ratios();
    let p = |stage: &str, accuracy: f64, note: String| plot::StagePoint {
        stage: stage.into(),
        accuracy,
        note,
    };
    vec![
        p("dense", a.dense, "1×".into()),
        p("pruned", a.pruned, format!("P {:.1}×", st.p)),
        p("finetuned", a.finetuned, format!("P {:.1}×", st.p)),
        p(
            "quantized",
            if a.shared > 0.0 { a.shared } else { f64::NAN },
            format!("P+Q {:.1}×", st.pq),
        ),
        p(
            "centroid-trained",
            a.quantized,
            format!("P+Q {:.1}×", st.pq),
        ),
        p(
            "decoded",
            a.decoded,
            format!("P+Q+H {:.1}×\nfile {:.1}×", st.pqh, report.ratio.file),
        ),
    ]
}

fn write_outputs(
    out: &Path,
    report: &Report,
    dense: &[(String, Vec<f32>)],
    before: &[(String, Vec<f32>)],
    model: &dyn Model,
) -> Result<()> {
    fsutil::write_json(&out.join("report.json"), report)?;
    fsutil::write_atomic(&out.join("report.md"), report.to_markdown().as_bytes())?;
    let plots = out.join("plots");
    fsutil::create_dir_all(&plots)?;
    for (name, vals) in before {
        let mut centroids: Vec<f32> = weight_values(model, name)?
            .into_iter()
            .filter(|v| *v != 0.0)
            .collect();
        centroids.sort_by(f32::total_cmp);
        centroids.dedup_by(|a, b| a.to_bits() == b.to_bits());
        let dense_vals = dense
            .iter()
            .find(|(n, _)| n == name)
            .map_or(&[][..], |(_, v)| v.as_slice());
        let svg = plot::weight_distribution(name, dense_vals, vals, &centroids, 80)?;
        fsutil::write_atomic(&plots.join(hist_file_name(name)), svg.as_bytes())?;
    }
    let svg = plot::stage_accuracy(
        &format!(
            "top-1 per stage ({} split, {} examples) and compression ratio",
            report.drop.split, report.examples.test
        ),
        &stage_points(report),
        "pruned: after the last pruning step, before its finetune; quantized: k-means sharing, \
         before centroid finetune.\nRatios: the seeds' formula (P pruning, Q sharing, H Huffman); \
         file: measured on model.dcz.",
    )?;
    fsutil::write_atomic(&plots.join("accuracy.svg"), svg.as_bytes())?;
    if !report.sensitivity.is_empty() {
        let series: Vec<plot::Series> = report
            .sensitivity
            .iter()
            .map(|r| plot::Series {
                label: r.layer.clone(),
                // The dense model (0 % pruned) first, when the scan recorded it.
                points: report
                    .sensitivity_baseline
                    .filter(|_| r.points.first().is_some_and(|(l, _)| *l > 0.0))
                    .map(|b| (0.0, b))
                    .into_iter()
                    .chain(r.points.iter().map(|(l, a)| (100.0 * l, *a)))
                    .collect(),
            })
            .collect();
        let svg = plot::lines(
            "sensitivity: each layer pruned alone (validation split)",
            "pruned % of the layer",
            "top-1",
            &series,
        )?;
        fsutil::write_atomic(&plots.join("sensitivity.svg"), svg.as_bytes())?;
    }
    Ok(())
}

/// Evaluates a `.dcz` or safetensors model file on the recipe's test set: (top-1, top-5). A safetensors
/// file's keys are renamed by `key_map` first (the recipe's `train.key_map` when `None`).
pub fn eval_file(
    recipe: &Recipe,
    path: &Path,
    data_path: Option<&Path>,
    key_map: Option<&[[String; 2]]>,
) -> Result<(f64, f64)> {
    let (top1, top5, _) = eval_file_counted(recipe, path, data_path, key_map)?;
    Ok((top1, top5))
}

/// [`eval_file`], with the number of test examples evaluated.
pub fn eval_file_counted(
    recipe: &Recipe,
    path: &Path,
    data_path: Option<&Path>,
    key_map: Option<&[[String; 2]]>,
) -> Result<(f64, f64, usize)> {
    let device = Device::Cpu;
    let model = build_model(recipe, &device)?;
    if path.extension().is_some_and(|e| e == "dcz") {
        let file = DczFile::read(path)?;
        load_dcz_into(model.as_ref(), &file, &device)?;
    } else {
        let map = key_map.or(recipe.train.key_map.as_deref());
        load_state_dict(model.as_ref(), path, map)?;
    }
    let data = load_data(recipe, data_path, false, Splits::TestOnly)?;
    let examples = data
        .test
        .n
        .min(recipe.data.test_limit.unwrap_or(usize::MAX));
    let (top1, top5) = eval_on_test(recipe, model.as_ref(), data)?;
    Ok((top1, top5, examples))
}

/// Top-1 and top-5 of `model` on the test split of `data` (loaded for `recipe`), batched as the
/// recipe says.
pub fn eval_on_test(recipe: &Recipe, model: &dyn Model, data: Dataset) -> Result<(f64, f64)> {
    let ctx = Ctx {
        recipe,
        device: Device::Cpu,
        data,
        out: PathBuf::new(),
        progress: false,
        inputs: StageInputs::default(),
        val: None,
        teacher: None,
    };
    ctx.evaluate(model)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 2^25-element layer pruned to nothing is more implicit zeros than a file of that layer alone
    /// may hold; choosing its index width must still work (the whole file carries other data).
    #[test]
    fn the_index_width_of_a_large_empty_layer_is_chosen_without_file_limits() {
        let layer = SparseLayer {
            name: "fc3.weight".into(),
            kind: container::LayerKind::Fc,
            shape: vec![1 << 13, 1 << 12],
            bits: 2,
            index_bits: 5,
            codebook: vec![-0.5, 0.5],
            positions: vec![],
            codes: vec![],
        };
        let b = best_index_bits(&layer).unwrap();
        assert!((2..=12).contains(&b));
        let alone = DczFile {
            layers: vec![layer],
            ..Default::default()
        };
        assert!(
            alone.to_bytes().is_err(),
            "a file of the layer alone is refused"
        );
    }
}
