//! Training and evaluation loops.
//!
//! [`train_epoch`] runs one epoch of mini-batch training: forward in training mode, cross-entropy loss on the
//! logits (which [`TrainHook::loss`] may change, e.g. to distill from a teacher), backward, the hook's [`TrainHook::after_backward`] (masks, grouped centroid gradients), the
//! optimizer step, then [`TrainHook::after_step`]. [`evaluate`] runs the model in inference mode. Both report
//! mean loss, top-1 and top-5 accuracy (top-5 when the model has at least 5 classes) and throughput.
//! [`fit`] strings epochs together: it sets the scheduled learning rate, trains, evaluates, keeps a history
//! and writes a [`Checkpoint`] after every epoch when asked to.
//!
//! Batches are `(images, labels)`: images `f32` of shape (B, C, H, W), labels `u32` of shape (B). The loops
//! take any iterator of `candle_core::Result<(Tensor, Tensor)>`, which is what the datasets crate yields.
//!
//! Per batch the loop copies the logits to the host once (for the accuracy counts) and reads the loss
//! scalar; nothing proportional to the parameter list is allocated beyond what backward itself creates.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::Instant;

use candle_core::{DType, Tensor};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::checkpoint::Checkpoint;
use crate::error::{ModelError, Result};
use crate::hook::TrainHook;
use crate::model::Model;
use crate::optim::{Optimizer, OptimizerConfig};
use crate::schedule::Schedule;

/// A boxed batch iterator, as [`fit`] asks for one per epoch.
pub type Batches<'d> = Box<dyn Iterator<Item = candle_core::Result<(Tensor, Tensor)>> + 'd>;

/// How an epoch reports progress.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProgressConfig {
    /// Show an indicatif progress bar on stderr (it stays hidden anyway when stderr is not a terminal).
    pub enabled: bool,
    /// Print a log line to stderr every `log_every` batches (0: never).
    pub log_every: usize,
}

/// Statistics of one training epoch.
#[derive(Debug, Clone, PartialEq)]
pub struct EpochStats {
    /// 0-based epoch index.
    pub epoch: usize,
    /// Learning rate used during the epoch.
    pub lr: f64,
    /// Mean cross-entropy per example (as computed during training, with the weights of each step).
    pub loss: f64,
    /// Fraction of examples whose label had the highest logit.
    pub top1: f64,
    /// Fraction of examples whose label was among the 5 highest logits; `None` below 5 classes.
    pub top5: Option<f64>,
    /// Number of examples seen.
    pub examples: usize,
    /// Number of batches (= optimizer steps).
    pub batches: usize,
    /// Wall time of the epoch, data loading included.
    pub seconds: f64,
    /// Training throughput, examples per second.
    pub ex_per_s: f64,
}

/// Statistics of one evaluation pass.
#[derive(Debug, Clone, PartialEq)]
pub struct EvalStats {
    /// Mean cross-entropy per example.
    pub loss: f64,
    /// Top-1 accuracy (fraction).
    pub top1: f64,
    /// Top-5 accuracy (fraction); `None` below 5 classes.
    pub top5: Option<f64>,
    /// Number of examples.
    pub examples: usize,
    /// Wall time, data loading included.
    pub seconds: f64,
    /// Inference throughput, examples per second.
    pub ex_per_s: f64,
}

/// One epoch of a [`fit`] history.
#[derive(Debug, Clone, PartialEq)]
pub struct EpochRecord {
    /// Training statistics (its `epoch` and `lr` identify the epoch).
    pub train: EpochStats,
    /// Evaluation after the epoch, when evaluation data was given.
    pub eval: Option<EvalStats>,
}

/// Everything [`fit`] needs besides the model, the data and the hook.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainConfig {
    /// Total number of epochs of the run (a resumed run stops at the same total).
    pub epochs: usize,
    /// Optimizer and its base learning rate (the schedule scales this rate).
    pub optimizer: OptimizerConfig,
    /// Learning-rate schedule, evaluated per epoch.
    pub schedule: Schedule,
    /// Log a line every `log_every` batches (0: never).
    pub log_every: usize,
    /// Show a progress bar.
    pub progress: bool,
    /// Write a checkpoint here after every epoch.
    pub checkpoint: Option<PathBuf>,
    /// Seed of the run (data order, initialization), recorded in checkpoints as `seed`.
    pub seed: Option<u64>,
    /// Extra metadata recorded in checkpoints.
    pub meta: BTreeMap<String, String>,
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            epochs: 1,
            optimizer: OptimizerConfig::default(),
            schedule: Schedule::default(),
            log_every: 0,
            progress: false,
            checkpoint: None,
            seed: None,
            meta: BTreeMap::new(),
        }
    }
}

impl TrainConfig {
    /// Checks the optimizer and schedule; errors name the field.
    pub fn validate(&self) -> Result<()> {
        self.optimizer.validate()?;
        self.schedule.validate(self.optimizer.lr())
    }

    fn progress(&self) -> ProgressConfig {
        ProgressConfig {
            enabled: self.progress,
            log_every: self.log_every,
        }
    }
}

/// Running sums of loss and top-k hits.
#[derive(Debug, Default)]
struct Tally {
    loss_sum: f64,
    top1: usize,
    top5: usize,
    examples: usize,
}

impl Tally {
    /// Adds one batch: `logits` row-major (B × classes), `mean_loss` the batch mean.
    fn add(&mut self, logits: &[f32], labels: &[u32], classes: usize, mean_loss: f64) {
        self.loss_sum += mean_loss * labels.len() as f64;
        self.examples += labels.len();
        for (row, &label) in logits.chunks_exact(classes).zip(labels) {
            let label = label as usize;
            let target = row[label];
            // Rank of the label: larger logits, plus equal ones at a lower index (argmax takes the first).
            let rank = if target.is_nan() {
                classes
            } else {
                row.iter()
                    .enumerate()
                    .filter(|&(j, &v)| v > target || (v == target && j < label))
                    .count()
            };
            self.top1 += usize::from(rank < 1);
            self.top5 += usize::from(rank < 5);
        }
    }

    fn loss(&self) -> f64 {
        self.loss_sum / self.examples.max(1) as f64
    }

    fn top1(&self) -> f64 {
        self.top1 as f64 / self.examples.max(1) as f64
    }

    fn top5(&self, classes: usize) -> Option<f64> {
        (classes >= 5).then(|| self.top5 as f64 / self.examples.max(1) as f64)
    }
}

/// Runs `f` on a thread of rayon's pool (the caller waits).
///
/// The kernels split every large op between rayon's threads. Called from a thread outside the pool,
/// each split wakes the pool and puts the caller to sleep until the pool is done: three context
/// switches per op, ~15 % of a LeNet-300-100 step on 2 cores. From inside the pool the calling
/// thread takes a share of the work itself and only the other threads are woken.
fn in_pool<R: Send>(f: impl FnOnce() -> Result<R> + Send) -> Result<R> {
    rayon::scope(|_| f())
}

/// Checks a batch against the model and returns the labels on the host.
fn check_batch(model: &dyn Model, images: &Tensor, labels: &Tensor) -> Result<Vec<u32>> {
    if labels.dtype() != DType::U32 {
        return Err(ModelError::Config {
            field: "labels".into(),
            reason: format!("must be u32, got {:?}", labels.dtype()),
        });
    }
    let &[b] = labels.dims() else {
        return Err(ModelError::Config {
            field: "labels".into(),
            reason: format!("must have shape (B), got {:?}", labels.dims()),
        });
    };
    if images.rank() == 0 || images.dim(0)? != b {
        return Err(ModelError::Shape {
            name: "images".into(),
            expected: vec![b],
            found: images.dims().to_vec(),
        });
    }
    if b == 0 {
        return Err(ModelError::Config {
            field: "batch".into(),
            reason: "empty batch".into(),
        });
    }
    let host = labels.to_vec1::<u32>()?;
    let classes = model.num_classes();
    if let Some(&bad) = host.iter().find(|&&l| l as usize >= classes) {
        return Err(ModelError::Config {
            field: "labels".into(),
            reason: format!("label {bad} out of range for {classes} classes"),
        });
    }
    Ok(host)
}

/// Forward pass, loss and host copy of the logits for one checked batch.
fn forward_loss(
    model: &dyn Model,
    images: &Tensor,
    labels: &Tensor,
    train: bool,
) -> Result<(Tensor, Tensor, Vec<f32>)> {
    let logits = model.forward_t(images, train)?;
    let expected = [labels.dim(0)?, model.num_classes()];
    if logits.dims() != expected {
        return Err(ModelError::Shape {
            name: "logits".into(),
            expected: expected.to_vec(),
            found: logits.dims().to_vec(),
        });
    }
    let loss = candle_nn::loss::cross_entropy(&logits, labels)?;
    let host = logits
        .to_dtype(DType::F32)?
        .flatten_all()?
        .to_vec1::<f32>()?;
    Ok((logits, loss, host))
}

fn scalar(loss: &Tensor) -> Result<f64> {
    Ok(loss.to_dtype(DType::F64)?.to_scalar::<f64>()?)
}

fn no_batches() -> ModelError {
    ModelError::Config {
        field: "batches".into(),
        reason: "the data iterator yielded no batch".into(),
    }
}

fn make_bar(progress: &ProgressConfig, len: Option<usize>, prefix: String) -> ProgressBar {
    if !progress.enabled || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = match len {
        Some(n) => ProgressBar::with_draw_target(Some(n as u64), ProgressDrawTarget::stderr()),
        None => ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr()),
    };
    if let Ok(style) =
        ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} {elapsed} {msg}")
    {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_prefix(prefix);
    bar
}

fn log_line(bar: &ProgressBar, line: String) {
    if bar.is_hidden() {
        eprintln!("{line}");
    } else {
        bar.println(line);
    }
}

/// Trains `model` for one epoch over `batches` with `opt`, calling `hook` around every step.
///
/// Order per batch: `forward_t(train = true)` → cross-entropy → `hook.loss` → `backward` → `hook.after_backward` →
/// `opt.step` → `hook.after_step`. `hook.on_epoch_start(epoch)` runs before the first batch. The learning
/// rate is whatever `opt` holds (see [`fit`] for schedules).
pub fn train_epoch(
    model: &dyn Model,
    opt: &mut dyn Optimizer,
    batches: impl Iterator<Item = candle_core::Result<(Tensor, Tensor)>>,
    hook: &mut dyn TrainHook,
    epoch: usize,
    progress: &ProgressConfig,
) -> Result<EpochStats> {
    let len = match batches.size_hint() {
        (lo, Some(hi)) if lo == hi => Some(lo),
        _ => None,
    };
    let bar = make_bar(progress, len, format!("epoch {epoch}"));
    let classes = model.num_classes();
    let start = Instant::now();
    hook.on_epoch_start(epoch, model)?;
    let mut tally = Tally::default();
    let mut n_batches = 0usize;
    for batch in batches {
        let (images, labels) = batch?;
        let host_labels = check_batch(model, &images, &labels)?;
        let (loss, host_logits, mut grads) = in_pool(|| {
            let (logits, loss, host_logits) = forward_loss(model, &images, &labels, true)?;
            let loss = hook.loss(&images, &logits, loss)?;
            let grads = loss.backward()?;
            Ok((loss, host_logits, grads))
        })?;
        hook.after_backward(model, &mut grads)?;
        opt.step(model.params(), &grads)?;
        drop(grads);
        hook.after_step(model, opt)?;
        let loss = scalar(&loss)?;
        tally.add(&host_logits, &host_labels, classes, loss);
        n_batches += 1;
        bar.inc(1);
        if n_batches.is_multiple_of(16) || Some(n_batches) == len {
            let rate = tally.examples as f64 / start.elapsed().as_secs_f64().max(1e-9);
            bar.set_message(format!(
                "loss {:.4} top1 {:.2}% {:.0} ex/s",
                tally.loss(),
                100.0 * tally.top1(),
                rate
            ));
        }
        if progress.log_every > 0 && n_batches.is_multiple_of(progress.log_every) {
            let rate = tally.examples as f64 / start.elapsed().as_secs_f64().max(1e-9);
            log_line(
                &bar,
                format!(
                    "epoch {epoch} batch {n_batches}: loss {loss:.4} (mean {:.4}) top1 {:.2}% lr {} {:.0} ex/s",
                    tally.loss(),
                    100.0 * tally.top1(),
                    opt.lr(),
                    rate
                ),
            );
        }
    }
    bar.finish_and_clear();
    if n_batches == 0 {
        return Err(no_batches());
    }
    let seconds = start.elapsed().as_secs_f64();
    Ok(EpochStats {
        epoch,
        lr: opt.lr(),
        loss: tally.loss(),
        top1: tally.top1(),
        top5: tally.top5(classes),
        examples: tally.examples,
        batches: n_batches,
        seconds,
        ex_per_s: tally.examples as f64 / seconds.max(1e-9),
    })
}

/// Evaluates `model` in inference mode (`forward_t(train = false)`) over `batches`.
pub fn evaluate(
    model: &dyn Model,
    batches: impl Iterator<Item = candle_core::Result<(Tensor, Tensor)>>,
) -> Result<EvalStats> {
    let classes = model.num_classes();
    let start = Instant::now();
    let mut tally = Tally::default();
    for batch in batches {
        let (images, labels) = batch?;
        let host_labels = check_batch(model, &images, &labels)?;
        let (_, loss, host_logits) = in_pool(|| forward_loss(model, &images, &labels, false))?;
        tally.add(&host_logits, &host_labels, classes, scalar(&loss)?);
    }
    if tally.examples == 0 {
        return Err(no_batches());
    }
    let seconds = start.elapsed().as_secs_f64();
    Ok(EvalStats {
        loss: tally.loss(),
        top1: tally.top1(),
        top5: tally.top5(classes),
        examples: tally.examples,
        seconds,
        ex_per_s: tally.examples as f64 / seconds.max(1e-9),
    })
}

/// Runs epochs `start_epoch..config.epochs`: sets the scheduled rate, trains, evaluates (when `eval_data`
/// is given), and writes a checkpoint after every epoch when `config.checkpoint` is set (with the hook's
/// [`TrainHook::masks`], `seed` and `config.meta`, and the epoch's `train.*`/`eval.*` figures).
///
/// `train_data(epoch)` returns that epoch's batches; it must be reproducible per epoch (the datasets crate
/// seeds each epoch's shuffle from (seed, epoch)), so that resuming gives the same run. To resume, load the
/// checkpoint with [`Checkpoint::resume`] into a fresh model and optimizer, hand its masks to the hook, and
/// call `fit` with `start_epoch = checkpoint.epoch`. Returns the history of the epochs run by this call.
pub fn fit<'d>(
    model: &dyn Model,
    opt: &mut dyn Optimizer,
    config: &TrainConfig,
    hook: &mut dyn TrainHook,
    train_data: &mut dyn FnMut(usize) -> Result<Batches<'d>>,
    mut eval_data: Option<&mut dyn FnMut() -> Result<Batches<'d>>>,
    start_epoch: usize,
) -> Result<Vec<EpochRecord>> {
    config.validate()?;
    if opt.kind() != config.optimizer.kind() {
        return Err(ModelError::Config {
            field: "optimizer".into(),
            reason: format!(
                "the configuration asks for `{}` but the optimizer given is `{}`",
                config.optimizer.kind(),
                opt.kind()
            ),
        });
    }
    if start_epoch > config.epochs {
        return Err(ModelError::Config {
            field: "start_epoch".into(),
            reason: format!(
                "{start_epoch} is past the last epoch ({} epochs)",
                config.epochs
            ),
        });
    }
    let progress = config.progress();
    let base_lr = config.optimizer.lr();
    let mut history = Vec::with_capacity(config.epochs - start_epoch);
    for epoch in start_epoch..config.epochs {
        opt.set_lr(config.schedule.lr_at(base_lr, epoch));
        let train = train_epoch(model, opt, train_data(epoch)?, hook, epoch, &progress)?;
        let eval = match eval_data.as_deref_mut() {
            Some(f) => Some(evaluate(model, f()?)?),
            None => None,
        };
        if progress.enabled || progress.log_every > 0 {
            let mut line = format!(
                "epoch {epoch}: lr {} train loss {:.4} top1 {:.2}% ({:.0} ex/s)",
                train.lr,
                train.loss,
                100.0 * train.top1,
                train.ex_per_s
            );
            if let Some(e) = &eval {
                line.push_str(&format!(
                    " | eval loss {:.4} top1 {:.2}%",
                    e.loss,
                    100.0 * e.top1
                ));
                if let Some(t5) = e.top5 {
                    line.push_str(&format!(" top5 {:.2}%", 100.0 * t5));
                }
            }
            eprintln!("{line}");
        }
        if let Some(path) = &config.checkpoint {
            let mut ckpt = Checkpoint::capture(model, opt, epoch + 1, hook.masks())?;
            ckpt.meta.extend(config.meta.clone());
            if let Some(seed) = config.seed {
                ckpt.meta.insert("seed".into(), seed.to_string());
            }
            ckpt.meta
                .insert("train.loss".into(), train.loss.to_string());
            ckpt.meta
                .insert("train.top1".into(), train.top1.to_string());
            if let Some(e) = &eval {
                ckpt.meta.insert("eval.loss".into(), e.loss.to_string());
                ckpt.meta.insert("eval.top1".into(), e.top1.to_string());
                if let Some(t5) = e.top5 {
                    ckpt.meta.insert("eval.top5".into(), t5.to_string());
                }
            }
            ckpt.save(path)?;
        }
        history.push(EpochRecord { train, eval });
    }
    Ok(history)
}
