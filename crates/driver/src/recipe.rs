//! Recipes: one TOML file says everything a pipeline run does.
//!
//! A recipe names the model and dataset, the training schedule, the pruning method and schedule, the bits
//! per layer and the finetuning of the centroids. Built-in recipes live in `crates/driver/recipes/` and are
//! embedded in the binary, so `--recipe lenet300-fashion` works from any directory; `--recipe path.toml`
//! reads a file. Unknown fields are errors (`deny_unknown_fields`), and [`Recipe::validate`] checks every
//! value, naming the field in its message (`prune.rounds[2].target: 1.3 is outside [0, 1)`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Built-in recipes: (name, TOML text).
pub const BUILTIN: &[(&str, &str)] = &[
    (
        "lenet300-fashion",
        include_str!("../recipes/lenet300-fashion.toml"),
    ),
    (
        "lenet5-fashion",
        include_str!("../recipes/lenet5-fashion.toml"),
    ),
    ("mlp-mnist", include_str!("../recipes/mlp-mnist.toml")),
    (
        "mlp-mnist-structured",
        include_str!("../recipes/mlp-mnist-structured.toml"),
    ),
    (
        "lenet5-mnist-structured",
        include_str!("../recipes/lenet5-mnist-structured.toml"),
    ),
    ("cifar-lenet", include_str!("../recipes/cifar-lenet.toml")),
    (
        "cifar-lenet-sensitivity",
        include_str!("../recipes/cifar-lenet-sensitivity.toml"),
    ),
    (
        "vgg16-half-cifar10",
        include_str!("../recipes/vgg16-half-cifar10.toml"),
    ),
    (
        "resnet20-cifar10",
        include_str!("../recipes/resnet20-cifar10.toml"),
    ),
    (
        "lenet300-mnist",
        include_str!("../recipes/lenet300-mnist.toml"),
    ),
    ("lenet5-mnist", include_str!("../recipes/lenet5-mnist.toml")),
    (
        "resnet20-cifar10-jpeg",
        include_str!("../recipes/resnet20-cifar10-jpeg.toml"),
    ),
    (
        "resnet20-cifar10-jpeg-seed001",
        include_str!("../recipes/resnet20-cifar10-jpeg-seed001.toml"),
    ),
    (
        "lenet300-fashion-uniform",
        include_str!("../recipes/lenet300-fashion-uniform.toml"),
    ),
    (
        "lenet300-fashion-ste",
        include_str!("../recipes/lenet300-fashion-ste.toml"),
    ),
    ("ci", include_str!("../recipes/ci.toml")),
    ("ci-mnist", include_str!("../recipes/ci-mnist.toml")),
];

/// Errors of recipe loading and validation.
#[derive(Debug, thiserror::Error)]
pub enum RecipeError {
    /// The recipe file could not be read.
    #[error("recipe {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The TOML does not parse or has unknown / mistyped fields.
    #[error("recipe {origin}: {message}")]
    Parse {
        /// File path or built-in name.
        origin: String,
        /// The parser's message (names the field and line).
        message: String,
    },
    /// A field has a value out of range.
    #[error("recipe {origin}: field `{field}`: {reason}")]
    Field {
        /// File path or built-in name.
        origin: String,
        /// Dotted field path.
        field: String,
        /// Why it is rejected.
        reason: String,
    },
    /// Neither a built-in name nor an existing file.
    #[error("unknown recipe `{0}`: not a built-in ({1}) and no such file")]
    Unknown(String, String),
    /// A `--set KEY=VALUE` override that cannot be applied (see [`crate::overrides`]).
    #[error("--set {assignment}: {reason}")]
    Override {
        /// The override as given (`KEY=VALUE`).
        assignment: String,
        /// Why it is rejected; names the key and, for a bad value, the value.
        reason: String,
    },
}

/// A whole pipeline run.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Recipe {
    /// Recipe name; the default output folder is `target/deepcomp/<name>/`.
    pub name: String,
    /// One-line description.
    #[serde(default)]
    pub description: String,
    /// Architecture id (`lenet300`, `lenet5`, `mlp`, `cifar_lenet`, `vgg16_half`, `resnet20`).
    pub model: String,
    /// Dataset id (`fashion-mnist`, `mnist`, `cifar10`, `cifar100`).
    pub dataset: String,
    /// Seed of initialization, shuffling, augmentation and random pruning.
    #[serde(default = "default_seed")]
    pub seed: u64,
    /// Architecture options.
    #[serde(default)]
    pub arch: ArchSection,
    /// Data options.
    #[serde(default)]
    pub data: DataSection,
    /// Dense training (or loading a checkpoint).
    pub train: TrainSection,
    /// Pruning and masked finetuning.
    pub prune: PruneSection,
    /// Weight sharing and centroid finetuning.
    pub quant: QuantSection,
    /// Encoding options.
    #[serde(default)]
    pub encode: EncodeSection,
}

fn default_seed() -> u64 {
    42
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// Architecture options (all optional; the architecture's defaults otherwise).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ArchSection {
    /// Input channels (1 for MNIST-like sets, 3 for CIFAR).
    pub in_channels: Option<usize>,
    /// Number of classes.
    pub num_classes: Option<usize>,
    /// Hidden sizes of the configurable MLP (and of the fully connected layers that structured pruning
    /// shrinks in `lenet300`, `lenet5`, `cifar_lenet`, `vgg16_half`).
    pub hidden: Option<Vec<usize>>,
    /// Filters of each convolution (`lenet5`, `cifar_lenet`, `vgg16_half`): what structured pruning
    /// leaves of them. Left out of the serialized recipe when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channels: Option<Vec<usize>>,
    /// Kernel sizes of the CIFAR LeNet's two convolutions.
    pub kernels: Option<Vec<usize>>,
    /// Weight initialization: `torch_default` (PyTorch's Kaiming-uniform), `caffe_xavier`,
    /// `kaiming_normal`, `glorot_normal`; default: the scheme of the architecture's original code.
    pub init: Option<deepcomp_models::InitScheme>,
}

/// Data options.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct DataSection {
    /// Explicit dataset folder (first in the discovery order).
    pub path: Option<PathBuf>,
    /// Mini-batch size for training.
    pub batch_size: usize,
    /// Batch size for evaluation.
    pub eval_batch_size: usize,
    /// Training-time augmentation: random crop of the zero-padded image (a shift of up to
    /// ±`augment_padding` pixels) and, unless `augment_flip = false`, a horizontal flip with
    /// probability 1/2 (the CIFAR recipe's 4-pixel crop and flip by default).
    pub augment: bool,
    /// Padding of the random crop, pixels on each side (default 4); needs `augment`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub augment_padding: Option<usize>,
    /// Horizontal flips in the augmentation (default true; false for digits); needs `augment`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub augment_flip: Option<bool>,
    /// Pad 28×28 images to this size (32 lets CIFAR architectures run on Fashion-MNIST).
    pub pad_to: Option<usize>,
    /// Use only the first n training examples (short runs, CI).
    pub train_limit: Option<usize>,
    /// Use only the first n test examples.
    pub test_limit: Option<usize>,
    /// Let the limits take every class in turn: both splits are reordered class-interleaved (the
    /// first example of each class, then the second of each, …), so `train_limit` / `test_limit`
    /// keep the classes balanced also on a set stored class by class (an image folder such as the
    /// JPEG CIFAR-10 copy, whose first 1,000 test images are all airplanes). Needs a limit.
    #[serde(skip_serializing_if = "is_false")]
    pub balanced_limits: bool,
    /// Whether a missing dataset may be downloaded.
    pub allow_download: bool,
    /// Examples held out of the training split for the pipeline's choices (sensitivity scan, any
    /// selection); default 5,000 or a tenth of the training split, whichever is smaller; 0: none.
    pub validation: Option<usize>,
    /// Check data files against the manifest's digests (published or known copies); turn off only
    /// for data you made yourself under the official file names.
    pub verify: bool,
    /// Per-channel mean of the input normalization, on pixels scaled to [0, 1] (default: the
    /// dataset's customary values). Used by training and every evaluation.
    pub mean: Option<Vec<f32>>,
    /// Per-channel standard deviation matching `mean`.
    pub std: Option<Vec<f32>>,
}

impl Default for DataSection {
    fn default() -> Self {
        Self {
            path: None,
            batch_size: 128,
            eval_batch_size: 1000,
            augment: false,
            augment_padding: None,
            augment_flip: None,
            pad_to: None,
            train_limit: None,
            test_limit: None,
            balanced_limits: false,
            allow_download: true,
            validation: None,
            verify: true,
            mean: None,
            std: None,
        }
    }
}

/// Defines a recipe section struct that carries the optimizer fields (`optimizer`, `lr`, `momentum`,
/// `nesterov`, `weight_decay`, `lr_schedule`, `step_size`, `gamma`, `milestones`, `eta_min`) next to its
/// own, so recipes stay flat (`[train] epochs = 20, lr = 0.05`) while unknown fields are still rejected
/// (serde's `flatten` cannot be combined with `deny_unknown_fields`).
macro_rules! with_optim_fields {
    ($(#[$meta:meta])* pub struct $name:ident { $($(#[$fmeta:meta])* pub $field:ident : $ty:ty,)* }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
        #[serde(deny_unknown_fields)]
        pub struct $name {
            $($(#[$fmeta])* pub $field: $ty,)*
            /// `sgd` or `adamw`.
            #[serde(default = "default_optimizer")]
            pub optimizer: String,
            /// Initial learning rate (needed only when the section trains: a `[train]` that only
            /// loads a checkpoint, or a `[prune]` without finetuning epochs, may leave it out).
            #[serde(default)]
            pub lr: f64,
            /// SGD momentum.
            #[serde(default = "default_momentum")]
            pub momentum: f64,
            /// Nesterov momentum (SGD).
            #[serde(default)]
            pub nesterov: bool,
            /// Weight decay (L2 for SGD, decoupled for AdamW).
            #[serde(default)]
            pub weight_decay: f64,
            /// `constant`, `step`, `multistep` or `cosine`.
            #[serde(default = "default_schedule")]
            pub lr_schedule: String,
            /// Step schedule: epochs between decays.
            pub step_size: Option<usize>,
            /// Step / multi-step decay factor.
            pub gamma: Option<f64>,
            /// Multi-step milestones (epochs).
            pub milestones: Option<Vec<usize>>,
            /// Cosine floor.
            #[serde(default)]
            pub eta_min: f64,
            /// Sparsity-inducing regularizer of the prunable weights while this section trains.
            #[serde(default, skip_serializing_if = "Option::is_none")]
            pub regularizer: Option<RegularizerSection>,
        }

        impl $name {
            /// The optimizer settings of this section.
            pub fn optim(&self) -> OptimSection {
                OptimSection {
                    optimizer: self.optimizer.clone(),
                    lr: self.lr,
                    momentum: self.momentum,
                    nesterov: self.nesterov,
                    weight_decay: self.weight_decay,
                    lr_schedule: self.lr_schedule.clone(),
                    step_size: self.step_size,
                    gamma: self.gamma,
                    milestones: self.milestones.clone(),
                    eta_min: self.eta_min,
                }
            }
        }
    };
}

/// Optimizer settings of one training stage (see [`TrainSection::optim`], [`PruneSection::optim`]).
#[derive(Debug, Clone, PartialEq)]
pub struct OptimSection {
    /// `sgd` or `adamw`.
    pub optimizer: String,
    /// Initial learning rate.
    pub lr: f64,
    /// SGD momentum.
    pub momentum: f64,
    /// Nesterov momentum (SGD).
    pub nesterov: bool,
    /// Weight decay.
    pub weight_decay: f64,
    /// `constant`, `step`, `multistep` or `cosine`.
    pub lr_schedule: String,
    /// Step schedule: epochs between decays.
    pub step_size: Option<usize>,
    /// Step / multi-step decay factor.
    pub gamma: Option<f64>,
    /// Multi-step milestones (epochs).
    pub milestones: Option<Vec<usize>>,
    /// Cosine floor.
    pub eta_min: f64,
}

/// Knowledge distillation (Hinton et al. 2015) from the dense model, the teacher, while a compression
/// stage finetunes: `{ alpha = 0.5, temperature = 4.0 }`. The loss becomes
/// `(1 − alpha)·CE + alpha·T²·KL(softmax(teacher/T) ‖ softmax(student/T))`
/// ([`deepcomp_models::distill`]). The teacher is the model the `train` stage ends with (trained, or
/// loaded from `train.checkpoint`), run in inference mode.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DistillSection {
    /// Weight of the soft term, in [0, 1] (0: labels only; 1: the teacher only).
    pub alpha: f64,
    /// Softmax temperature T > 0 (Hinton et al. use 2–20; 1 compares the plain probabilities).
    #[serde(default = "default_temperature")]
    pub temperature: f64,
}

fn default_temperature() -> f64 {
    4.0
}

/// A regularizer of the prunable weights (seed 003, Lab 1, on a network): `{ kind = "l1", lambda = 1e-5 }`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RegularizerSection {
    /// `l1` (adds `lambda · sign(w)` to the gradient), `prox_l1` (soft thresholding by `lr · lambda`
    /// after each optimizer step) or `trimmed_l1` (the same soft thresholding on the `k` smallest
    /// magnitudes of each layer only).
    pub kind: String,
    /// Strength λ ≥ 0.
    pub lambda: f64,
    /// `trimmed_l1`: how many of the smallest magnitudes of each layer are penalized.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub k: Option<usize>,
    /// `trimmed_l1`: the same as a fraction of each layer's elements, in (0, 1].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fraction: Option<f64>,
}

fn default_optimizer() -> String {
    "sgd".into()
}
fn default_momentum() -> f64 {
    0.9
}
fn default_schedule() -> String {
    "constant".into()
}

with_optim_fields! {
    /// Dense training.
    pub struct TrainSection {
        /// Epochs of dense training (0: only load `checkpoint`).
        #[serde(default)]
        pub epochs: usize,
        /// Load this safetensors checkpoint as the dense model (PyTorch names); with `epochs > 0` it
        /// is trained further from there.
        pub checkpoint: Option<PathBuf>,
        /// Renames applied to the checkpoint's tensor names before loading, in order: pairs of a
        /// regular expression and its replacement (`[["^module\\.", ""]]` strips DataParallel's
        /// prefix; `$1` refers to a group).
        pub key_map: Option<Vec<[String; 2]>>,
    }
}

/// One pruning round: reach `target` sparsity, then finetune `epochs`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Round {
    /// Target sparsity in [0, 1) (fraction of weights that are zero); required by the methods
    /// `percentile`, `global` and `random`, refused by `std` (which prunes by `prune.std_s`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<f64>,
    /// Finetune epochs after this round.
    pub epochs: usize,
}

with_optim_fields! {
    /// Pruning and masked finetuning.
    pub struct PruneSection {
        /// `percentile` (per layer), `std` (threshold s·std, Han's rule), `global`, `random` or
        /// `structured` (whole neurons and conv filters by L2 norm, giving a smaller dense model;
        /// `mlp`, `lenet300`, `lenet5`, `cifar_lenet`, `vgg16_half`; not `resnet20`, whose residual
        /// sums tie channels across layers).
        pub method: String,
        /// `rounds`, `oneshot`, `linear` or `agp`.
        #[serde(default = "default_prune_schedule")]
        pub schedule: String,
        /// Rounds (schedule `rounds`; `oneshot` uses the last round only).
        #[serde(default)]
        pub rounds: Vec<Round>,
        /// Per-layer target scale: a layer's target is `target × scale` (clamped below 1); lets
        /// sensitive layers be pruned less, as the paper does (e.g. the last fc layer).
        #[serde(default)]
        pub layer_scale: BTreeMap<String, f64>,
        /// Std rule multiplier(s) per round (method `std`); one per round.
        #[serde(default)]
        pub std_s: Vec<f64>,
        /// Final target of `linear` / `agp` schedules.
        pub final_target: Option<f64>,
        /// Epochs of `linear` / `agp` schedules (one pruning step each).
        pub epochs: Option<usize>,
        /// Masked finetuning epochs after the last step of a `linear` / `agp` schedule (default 0).
        pub extra_epochs: Option<usize>,
        /// Run the per-layer sensitivity scan (10 %…90 %, or `sensitivity_levels`) before pruning.
        #[serde(default)]
        pub sensitivity: bool,
        /// Levels of the sensitivity scan: fractions in [0, 1], sorted and unique (default
        /// 0.1…0.9; 1.0 zeroes the layer).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub sensitivity_levels: Option<Vec<f64>>,
        /// Per-layer targets chosen from the sensitivity scan (implies the scan); see
        /// [`crate::sensitivity`].
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub from_sensitivity: Option<crate::sensitivity::FromSensitivity>,
        /// Quantization-aware finetuning in every round (seed 003, Lab 3 (e)): the finetuning trains
        /// through `qat_bits`-bit fixed-point weights (straight-through estimator, max-|w| scale per
        /// tensor, pruned weights kept at zero); schedules `rounds` and `oneshot` only.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub qat_bits: Option<u8>,
        /// Knowledge distillation from the dense model during masked finetuning.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub distill: Option<DistillSection>,
    }
}

fn default_prune_schedule() -> String {
    "rounds".into()
}

/// Weight sharing and centroid finetuning.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct QuantSection {
    /// Bits of conv layers (paper: 8).
    #[serde(default = "default_conv_bits")]
    pub conv_bits: u8,
    /// Bits of fc layers (paper: 5).
    #[serde(default = "default_fc_bits")]
    pub fc_bits: u8,
    /// Per-layer overrides (layer name → bits).
    #[serde(default)]
    pub bits: BTreeMap<String, u8>,
    /// Centroid init: `linear`, `density`, `random`, `kmeans++`.
    #[serde(default = "default_init")]
    pub init: String,
    /// Centroid finetuning epochs (paper §3.3).
    #[serde(default)]
    pub epochs: usize,
    /// Centroid learning rate.
    #[serde(default = "default_centroid_lr")]
    pub lr: f64,
    /// Learning rate of the non-shared parameters (biases, BatchNorm) during centroid finetuning.
    #[serde(default)]
    pub other_lr: f64,
    /// `kmeans` (weight sharing, the default), `uniform` (fixed point after training, seeds 002 and
    /// 004) or `ste` (fixed point trained for `epochs` epochs with the straight-through estimator,
    /// seed 003).
    #[serde(default = "default_method", skip_serializing_if = "is_default_method")]
    pub method: String,
    /// Per-layer method overrides (layer name → method).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub method_layers: BTreeMap<String, String>,
    /// Layers kept in float: not quantized, stored as raw `f32` tensors.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub float_layers: Vec<String>,
    /// `uniform`: a fixed half-range q (step Δ = 2q / 2^bits, values clipped to [−q, q − Δ]); without
    /// it q is the largest |w| of each tensor or channel.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub range: Option<f64>,
    /// `uniform` / `ste`: one scale per `tensor` (default) or per output `channel`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub granularity: Option<String>,
    /// Knowledge distillation from the dense model during centroid (or QAT) finetuning.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub distill: Option<DistillSection>,
}

fn default_method() -> String {
    "kmeans".into()
}
fn is_default_method(m: &str) -> bool {
    m == "kmeans"
}

/// Quantization methods of `quant.method`.
pub const QUANT_METHODS: &[&str] = &["kmeans", "uniform", "ste"];
/// Bits a `uniform` or `ste` layer may have.
pub const UNIFORM_BITS: std::ops::RangeInclusive<u8> = 1..=8;

fn default_conv_bits() -> u8 {
    8
}
fn default_fc_bits() -> u8 {
    5
}
fn default_init() -> String {
    "linear".into()
}
fn default_centroid_lr() -> f64 {
    0.001
}

/// Encoding options.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct EncodeSection {
    /// Bits of a relative-index field (paper: 5 for fc, 8 for conv); `auto` picks the smallest file.
    pub index_bits: Option<u8>,
    /// Element type of the tensors stored raw (biases, BatchNorm parameters and statistics, layers
    /// kept in float): `f32` (the default, exact), `f16` or `bf16` (half the bytes; the model's raw
    /// tensors are rounded to it before the file is written, so the decoded model, the one evaluated
    /// and reported, is the rounded one).
    pub raw_dtype: Option<String>,
}

impl EncodeSection {
    /// The element types [`raw_dtype`](Self::raw_dtype) may name.
    pub const RAW_DTYPES: &'static [&'static str] = &["f32", "f16", "bf16"];

    /// The element type of raw tensors (`f32` unless the recipe says otherwise).
    pub fn raw_dtype(&self) -> &str {
        self.raw_dtype.as_deref().unwrap_or("f32")
    }
}

/// Where a recipe came from and its text (hashed into the `.dcz` header).
#[derive(Debug, Clone)]
pub struct LoadedRecipe {
    /// The parsed recipe.
    pub recipe: Recipe,
    /// Built-in name or file path.
    pub origin: String,
    /// The exact text.
    pub text: String,
}

impl LoadedRecipe {
    /// SHA-256 of the recipe text.
    pub fn hash(&self) -> [u8; 32] {
        Sha256::digest(self.text.as_bytes()).into()
    }
}

/// Names of the built-in recipes.
pub fn builtin_names() -> Vec<&'static str> {
    BUILTIN.iter().map(|(n, _)| *n).collect()
}

/// Loads a recipe by built-in name or file path, parses and validates it.
pub fn load(name_or_path: &str) -> Result<LoadedRecipe, RecipeError> {
    let (text, origin) = load_text(name_or_path)?;
    parse(&text, &origin)
}

/// The text of a recipe given by built-in name or file path, and its origin (as errors name it),
/// unparsed.
pub fn load_text(name_or_path: &str) -> Result<(String, String), RecipeError> {
    if let Some((name, text)) = BUILTIN.iter().find(|(n, _)| *n == name_or_path) {
        return Ok((text.to_string(), format!("built-in `{name}`")));
    }
    let path = Path::new(name_or_path);
    if path.exists() {
        let text = std::fs::read_to_string(path).map_err(|source| RecipeError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        return Ok((text, path.display().to_string()));
    }
    Err(RecipeError::Unknown(
        name_or_path.to_string(),
        builtin_names().join(", "),
    ))
}

/// Parses and validates recipe text; `origin` names it in errors.
pub fn parse(text: &str, origin: &str) -> Result<LoadedRecipe, RecipeError> {
    let recipe: Recipe = toml::from_str(text).map_err(|e| RecipeError::Parse {
        origin: origin.to_string(),
        message: e.to_string(),
    })?;
    recipe.validate(origin)?;
    Ok(LoadedRecipe {
        recipe,
        origin: origin.to_string(),
        text: text.to_string(),
    })
}

const MODELS: &[&str] = &[
    "lenet300",
    "lenet5",
    "mlp",
    "cifar_lenet",
    "vgg16_half",
    "resnet20",
];
const DATASETS: &[&str] = &["fashion-mnist", "mnist", "cifar10", "cifar100"];

impl Recipe {
    /// Checks every value; the error names the field.
    pub fn validate(&self, origin: &str) -> Result<(), RecipeError> {
        let err = |field: &str, reason: String| RecipeError::Field {
            origin: origin.to_string(),
            field: field.to_string(),
            reason,
        };
        if self.name.is_empty()
            || !self
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        {
            return Err(err(
                "name",
                format!(
                    "`{}` must be non-empty ASCII letters, digits, - _ .",
                    self.name
                ),
            ));
        }
        if !MODELS.contains(&self.model.as_str()) {
            return Err(err(
                "model",
                format!("`{}` is not one of {}", self.model, MODELS.join(", ")),
            ));
        }
        if !DATASETS.contains(&self.dataset.as_str()) {
            return Err(err(
                "dataset",
                format!("`{}` is not one of {}", self.dataset, DATASETS.join(", ")),
            ));
        }
        if self.data.batch_size == 0 {
            return Err(err("data.batch_size", "must be at least 1".into()));
        }
        if self.data.eval_batch_size == 0 {
            return Err(err("data.eval_batch_size", "must be at least 1".into()));
        }
        for (field, v) in [
            ("data.train_limit", self.data.train_limit),
            ("data.test_limit", self.data.test_limit),
        ] {
            if v == Some(0) {
                return Err(err(
                    field,
                    "0 examples leaves nothing to train or evaluate on; remove it to use all"
                        .into(),
                ));
            }
        }
        if self.data.balanced_limits
            && self.data.train_limit.is_none()
            && self.data.test_limit.is_none()
        {
            return Err(err(
                "data.balanced_limits",
                "orders the examples for data.train_limit / data.test_limit; without either it \
                 would change nothing"
                    .into(),
            ));
        }
        if !self.data.augment {
            for (field, set) in [
                ("data.augment_padding", self.data.augment_padding.is_some()),
                ("data.augment_flip", self.data.augment_flip.is_some()),
            ] {
                if set {
                    return Err(err(
                        field,
                        "shapes the augmentation, which is off (data.augment = false)".into(),
                    ));
                }
            }
        }
        if let Some(p) = self.data.augment_padding {
            if !(1..=16).contains(&p) {
                return Err(err(
                    "data.augment_padding",
                    format!("{p} is outside 1..=16 (for no shifts, turn data.augment off)"),
                ));
            }
        }
        if let Some(p) = self.data.pad_to {
            if !(28..=64).contains(&p) {
                return Err(err("data.pad_to", format!("{p} is outside 28..=64")));
            }
        }
        if self.train.epochs == 0 && self.train.checkpoint.is_none() {
            return Err(err(
                "train.epochs",
                "0 epochs and no train.checkpoint: nothing to compress".into(),
            ));
        }
        validate_optim(&self.train.optim(), "train", self.train.epochs > 0, &err)?;
        let p = &self.prune;
        let finetunes = p.rounds.iter().any(|r| r.epochs > 0)
            || p.epochs.unwrap_or(0) > 0
            || p.extra_epochs.unwrap_or(0) > 0
            || self.quant.epochs > 0;
        validate_optim(&p.optim(), "prune", finetunes, &err)?;
        if let Some(km) = &self.train.key_map {
            for (i, pair) in km.iter().enumerate() {
                if let Err(e) = regex::Regex::new(&pair[0]) {
                    return Err(err(
                        &format!("train.key_map[{i}]"),
                        format!("`{}` is not a regular expression: {e}", pair[0]),
                    ));
                }
            }
        }
        for (field, v) in [("data.mean", &self.data.mean), ("data.std", &self.data.std)] {
            if let Some(v) = v {
                if v.is_empty() || v.iter().any(|x| !x.is_finite()) {
                    return Err(err(field, "needs one finite value per channel".into()));
                }
            }
        }
        if let Some(s) = &self.data.std {
            if s.iter().any(|x| *x <= 0.0) {
                return Err(err("data.std", "every value must be > 0".into()));
            }
        }
        if self.data.mean.as_ref().map(Vec::len) != self.data.std.as_ref().map(Vec::len) {
            return Err(err(
                "data.std",
                "data.mean and data.std go together, with one value per channel each".into(),
            ));
        }

        const METHODS: &[&str] = &["percentile", "std", "global", "random", "structured"];
        if !METHODS.contains(&self.prune.method.as_str()) {
            return Err(err(
                "prune.method",
                format!(
                    "`{}` is not one of {}",
                    self.prune.method,
                    METHODS.join(", ")
                ),
            ));
        }
        let p = &self.prune;
        if p.method == "structured" {
            crate::pipeline::structured::validate_recipe(self, &err)?;
        }
        match p.schedule.as_str() {
            "rounds" | "oneshot" => {
                if p.rounds.is_empty() {
                    return Err(err("prune.rounds", "at least one round is needed".into()));
                }
                if p.schedule == "oneshot" && p.rounds.len() != 1 {
                    return Err(err(
                        "prune.rounds",
                        format!(
                            "schedule `oneshot` prunes once: give exactly one round ({} given)",
                            p.rounds.len()
                        ),
                    ));
                }
                for (field, set) in [
                    ("prune.final_target", p.final_target.is_some()),
                    ("prune.epochs", p.epochs.is_some()),
                    ("prune.extra_epochs", p.extra_epochs.is_some()),
                ] {
                    if set {
                        return Err(err(
                            field,
                            format!(
                                "is used by schedules `linear` and `agp` only; schedule `{}` \
                                 takes its targets and epochs from prune.rounds",
                                p.schedule
                            ),
                        ));
                    }
                }
                let mut prev = 0.0;
                for (i, r) in p.rounds.iter().enumerate() {
                    let field = format!("prune.rounds[{i}].target");
                    let t = match (p.method.as_str(), r.target) {
                        ("std", Some(_)) => {
                            return Err(err(
                                &field,
                                "method `std` prunes |w| < s·std with s from prune.std_s; a \
                                 target would be ignored: remove it (or use method `percentile`)"
                                    .into(),
                            ))
                        }
                        ("std", None) => continue,
                        (m, None) => {
                            return Err(err(&field, format!("method `{m}` needs a target")))
                        }
                        (_, Some(t)) => t,
                    };
                    if !(0.0..1.0).contains(&t) {
                        return Err(err(&field, format!("{t} is outside [0, 1)")));
                    }
                    if t < prev {
                        return Err(err(
                            &field,
                            format!("{t} is below the previous round's {prev}: a schedule may not decrease"),
                        ));
                    }
                    prev = t;
                }
                if p.method == "std" && p.std_s.len() != p.rounds.len() {
                    return Err(err(
                        "prune.std_s",
                        format!(
                            "method `std` needs one s per round ({} rounds, {} values)",
                            p.rounds.len(),
                            p.std_s.len()
                        ),
                    ));
                }
            }
            "linear" | "agp" => {
                if p.method == "std" {
                    return Err(err(
                        "prune.method",
                        format!(
                            "`std` prunes by prune.std_s, not by a target, so it cannot follow \
                             schedule `{}`; use schedule `rounds`",
                            p.schedule
                        ),
                    ));
                }
                if !p.rounds.is_empty() {
                    return Err(err(
                        "prune.rounds",
                        format!(
                            "schedule `{}` takes prune.final_target and prune.epochs; rounds \
                             would be ignored",
                            p.schedule
                        ),
                    ));
                }
                match p.final_target {
                    Some(t) if (0.0..1.0).contains(&t) => {}
                    Some(t) => {
                        return Err(err("prune.final_target", format!("{t} is outside [0, 1)")))
                    }
                    None => {
                        return Err(err(
                            "prune.final_target",
                            format!("schedule `{}` needs it", p.schedule),
                        ))
                    }
                }
                if p.epochs.unwrap_or(0) == 0 {
                    return Err(err(
                        "prune.epochs",
                        format!("schedule `{}` needs at least 1 epoch", p.schedule),
                    ));
                }
            }
            other => {
                return Err(err(
                    "prune.schedule",
                    format!("`{other}` is not one of rounds, oneshot, linear, agp"),
                ))
            }
        }
        if let Some(b) = p.qat_bits {
            if !UNIFORM_BITS.contains(&b) {
                return Err(err(
                    "prune.qat_bits",
                    format!(
                        "{b} is outside {}..={}",
                        UNIFORM_BITS.start(),
                        UNIFORM_BITS.end()
                    ),
                ));
            }
            if !matches!(p.schedule.as_str(), "rounds" | "oneshot") {
                return Err(err(
                    "prune.qat_bits",
                    format!(
                        "quantization-aware finetuning runs in the rounds of schedules `rounds` \
                         and `oneshot`, not `{}`",
                        p.schedule
                    ),
                ));
            }
        }
        if p.method != "std" && !p.std_s.is_empty() {
            return Err(err(
                "prune.std_s",
                format!("is used by method `std` only, not `{}`", p.method),
            ));
        }
        for (i, s) in p.std_s.iter().enumerate() {
            if !(*s >= 0.0 && s.is_finite()) {
                return Err(err(
                    &format!("prune.std_s[{i}]"),
                    format!("{s} must be a finite value ≥ 0"),
                ));
            }
        }
        if !matches!(p.method.as_str(), "percentile" | "structured") && !p.layer_scale.is_empty() {
            return Err(err(
                "prune.layer_scale",
                format!(
                    "scales per-layer targets of methods `percentile` and `structured`; method `{}` would ignore it",
                    p.method
                ),
            ));
        }
        crate::sensitivity::validate(&self.prune, origin)?;
        for (layer, s) in &self.prune.layer_scale {
            if !(s.is_finite() && *s >= 0.0) {
                return Err(err(
                    &format!("prune.layer_scale.{layer}"),
                    format!("{s} must be a finite value ≥ 0"),
                ));
            }
        }
        for (field, b) in [
            ("quant.conv_bits", self.quant.conv_bits),
            ("quant.fc_bits", self.quant.fc_bits),
        ] {
            if !(1..=16).contains(&b) {
                return Err(err(field, format!("{b} is outside 1..=16")));
            }
        }
        for (layer, b) in &self.quant.bits {
            if !(1..=16).contains(b) {
                return Err(err(
                    &format!("quant.bits.{layer}"),
                    format!("{b} is outside 1..=16"),
                ));
            }
        }
        const INITS: &[&str] = &["linear", "density", "random", "kmeans++"];
        if !INITS.contains(&self.quant.init.as_str()) {
            return Err(err(
                "quant.init",
                format!("`{}` is not one of {}", self.quant.init, INITS.join(", ")),
            ));
        }
        if !(self.quant.lr.is_finite() && self.quant.lr >= 0.0) {
            return Err(err(
                "quant.lr",
                format!("{} must be a finite value ≥ 0", self.quant.lr),
            ));
        }
        if !(self.quant.other_lr.is_finite() && self.quant.other_lr >= 0.0) {
            return Err(err(
                "quant.other_lr",
                format!("{} must be a finite value ≥ 0", self.quant.other_lr),
            ));
        }
        self.validate_methods(&err)?;
        for (section, reg, trains) in [
            ("train", &self.train.regularizer, self.train.epochs > 0),
            (
                "prune",
                &self.prune.regularizer,
                p.rounds.iter().any(|r| r.epochs > 0)
                    || p.epochs.unwrap_or(0) > 0
                    || p.extra_epochs.unwrap_or(0) > 0,
            ),
        ] {
            if let Some(r) = reg {
                validate_regularizer(r, section, trains, &err)?;
            }
        }
        let prune_trains = p.rounds.iter().any(|r| r.epochs > 0)
            || p.epochs.unwrap_or(0) > 0
            || p.extra_epochs.unwrap_or(0) > 0;
        let quant_trains = self.quant.epochs > 0 && self.quant.method != "uniform";
        for (section, d, trains) in [
            ("prune", &self.prune.distill, prune_trains),
            ("quant", &self.quant.distill, quant_trains),
        ] {
            let Some(d) = d else { continue };
            if !trains {
                return Err(err(
                    &format!("{section}.distill"),
                    format!(
                        "the `{section}` section trains no epoch, so distillation would be ignored"
                    ),
                ));
            }
            if !(d.alpha.is_finite() && (0.0..=1.0).contains(&d.alpha)) {
                return Err(err(
                    &format!("{section}.distill.alpha"),
                    format!("{} must be in [0, 1]", d.alpha),
                ));
            }
            if !(d.temperature.is_finite() && d.temperature > 0.0) {
                return Err(err(
                    &format!("{section}.distill.temperature"),
                    format!("{} must be a finite value > 0", d.temperature),
                ));
            }
        }
        if let Some(b) = self.encode.index_bits {
            if !(2..=16).contains(&b) {
                return Err(err("encode.index_bits", format!("{b} is outside 2..=16")));
            }
        }
        if !EncodeSection::RAW_DTYPES.contains(&self.encode.raw_dtype()) {
            return Err(err(
                "encode.raw_dtype",
                format!(
                    "`{}` is not one of {}",
                    self.encode.raw_dtype(),
                    EncodeSection::RAW_DTYPES.join(", ")
                ),
            ));
        }
        Ok(())
    }

    /// The quantization method of a layer: `float` for `quant.float_layers`, else the override, else
    /// `quant.method`.
    pub fn method_for(&self, layer: &str) -> &str {
        if self.quant.float_layers.iter().any(|l| l == layer) {
            return "float";
        }
        self.quant
            .method_layers
            .get(layer)
            .map_or(self.quant.method.as_str(), String::as_str)
    }

    /// Whether some layer may use `method` (the default method counts unless every layer is
    /// overridden, which the recipe alone cannot tell, so it always counts).
    fn uses_method(&self, method: &str) -> bool {
        self.quant.method == method || self.quant.method_layers.values().any(|m| m == method)
    }

    /// Per-channel scales (`quant.granularity = "channel"`).
    pub fn per_channel(&self) -> bool {
        self.quant.granularity.as_deref() == Some("channel")
    }

    /// The checks of `quant.method` and its companions: unknown values, and fields the methods in use
    /// would ignore.
    fn validate_methods(
        &self,
        err: &dyn Fn(&str, String) -> RecipeError,
    ) -> Result<(), RecipeError> {
        let q = &self.quant;
        let known = |field: &str, m: &str| {
            if QUANT_METHODS.contains(&m) {
                Ok(())
            } else {
                Err(err(
                    field,
                    format!("`{m}` is not one of {}", QUANT_METHODS.join(", ")),
                ))
            }
        };
        known("quant.method", &q.method)?;
        for (layer, m) in &q.method_layers {
            known(&format!("quant.method_layers.\"{layer}\""), m)?;
            if q.float_layers.contains(layer) {
                return Err(err(
                    &format!("quant.method_layers.\"{layer}\""),
                    "the layer is in quant.float_layers, which keeps it unquantized".into(),
                ));
            }
        }
        for layer in &q.float_layers {
            if q.bits.contains_key(layer) {
                return Err(err(
                    &format!("quant.bits.\"{layer}\""),
                    "the layer is in quant.float_layers, which keeps it unquantized".into(),
                ));
            }
        }
        let kmeans = self.uses_method("kmeans");
        let uniform = self.uses_method("uniform");
        let ste = self.uses_method("ste");
        if uniform || ste {
            let mut checks = vec![];
            if q.method != "kmeans" {
                checks.push(("quant.conv_bits".to_string(), q.conv_bits));
                checks.push(("quant.fc_bits".to_string(), q.fc_bits));
            }
            for (layer, b) in &q.bits {
                if self.method_for(layer) != "kmeans" {
                    checks.push((format!("quant.bits.{layer}"), *b));
                }
            }
            for (field, b) in checks {
                if !UNIFORM_BITS.contains(&b) {
                    return Err(err(
                        &field,
                        format!(
                            "{b} is outside {}..={} (methods uniform and ste)",
                            UNIFORM_BITS.start(),
                            UNIFORM_BITS.end()
                        ),
                    ));
                }
            }
        }
        if let Some(r) = q.range {
            if !uniform {
                return Err(err(
                    "quant.range",
                    "is used by method `uniform` only (ste scales by max |w| every step)".into(),
                ));
            }
            if !(r.is_finite() && r > 0.0) {
                return Err(err(
                    "quant.range",
                    format!("{r} must be a finite value > 0"),
                ));
            }
            if self.per_channel() {
                return Err(err(
                    "quant.range",
                    "a fixed range is the same for every channel; leave it out to scale each \
                     channel by its max |w|, or use granularity `tensor`"
                        .into(),
                ));
            }
        }
        if let Some(g) = &q.granularity {
            if !(uniform || ste) {
                return Err(err(
                    "quant.granularity",
                    "is used by methods `uniform` and `ste` only".into(),
                ));
            }
            if g != "tensor" && g != "channel" {
                return Err(err(
                    "quant.granularity",
                    format!("`{g}` is not one of tensor, channel"),
                ));
            }
        }
        if !kmeans && q.init != default_init() {
            return Err(err(
                "quant.init",
                "is the k-means initialization; no layer uses method `kmeans`".into(),
            ));
        }
        if !kmeans && !ste {
            if q.epochs > 0 {
                return Err(err(
                    "quant.epochs",
                    "method `uniform` quantizes after training and trains nothing; use method \
                     `ste` to train the quantized model"
                        .into(),
                ));
            }
            if q.lr != default_centroid_lr() {
                return Err(err(
                    "quant.lr",
                    "nothing trains with method `uniform`".into(),
                ));
            }
        }
        if ste && q.other_lr > 0.0 {
            return Err(err(
                "quant.other_lr",
                "with `ste` layers one optimizer trains every parameter at quant.lr; other_lr \
                 would be ignored"
                    .into(),
            ));
        }
        if !kmeans && !ste && q.other_lr > 0.0 {
            return Err(err(
                "quant.other_lr",
                "nothing trains with method `uniform`".into(),
            ));
        }
        Ok(())
    }

    /// Bits for a layer: the override, else the conv / fc default.
    pub fn bits_for(&self, layer: &str, is_conv: bool) -> u8 {
        self.quant.bits.get(layer).copied().unwrap_or(if is_conv {
            self.quant.conv_bits
        } else {
            self.quant.fc_bits
        })
    }
}

fn validate_regularizer(
    r: &RegularizerSection,
    section: &str,
    trains: bool,
    err: &dyn Fn(&str, String) -> RecipeError,
) -> Result<(), RecipeError> {
    let f = |name: &str| format!("{section}.regularizer.{name}");
    if !trains {
        return Err(err(
            &format!("{section}.regularizer"),
            format!("the `{section}` section trains no epoch, so the regularizer would be ignored"),
        ));
    }
    if !["l1", "prox_l1", "trimmed_l1"].contains(&r.kind.as_str()) {
        return Err(err(
            &f("kind"),
            format!("`{}` is not one of l1, prox_l1, trimmed_l1", r.kind),
        ));
    }
    if !(r.lambda.is_finite() && r.lambda >= 0.0) {
        return Err(err(
            &f("lambda"),
            format!("{} must be a finite value ≥ 0", r.lambda),
        ));
    }
    if r.kind == "trimmed_l1" {
        match (r.k, r.fraction) {
            (Some(_), Some(_)) | (None, None) => {
                return Err(err(
                    &f("k"),
                    "kind `trimmed_l1` needs exactly one of k (weights per layer) and fraction"
                        .into(),
                ))
            }
            (Some(0), None) => return Err(err(&f("k"), "must be at least 1".into())),
            (None, Some(x)) if !(x > 0.0 && x <= 1.0) => {
                return Err(err(&f("fraction"), format!("{x} is outside (0, 1]")))
            }
            _ => {}
        }
    } else {
        for (name, set) in [("k", r.k.is_some()), ("fraction", r.fraction.is_some())] {
            if set {
                return Err(err(
                    &f(name),
                    format!("is used by kind `trimmed_l1` only, not `{}`", r.kind),
                ));
            }
        }
    }
    Ok(())
}

fn validate_optim(
    o: &OptimSection,
    section: &str,
    trains: bool,
    err: &dyn Fn(&str, String) -> RecipeError,
) -> Result<(), RecipeError> {
    let f = |name: &str| format!("{section}.{name}");
    if !trains && o.lr == 0.0 {
        // Nothing trains with these settings; an omitted lr is fine.
        return Ok(());
    }
    if o.optimizer != "sgd" && o.optimizer != "adamw" {
        return Err(err(
            &f("optimizer"),
            format!("`{}` is not one of sgd, adamw", o.optimizer),
        ));
    }
    if !(o.lr.is_finite() && o.lr > 0.0) {
        return Err(err(
            &f("lr"),
            format!("{} must be a finite value > 0", o.lr),
        ));
    }
    if !(0.0..1.0).contains(&o.momentum) {
        return Err(err(
            &f("momentum"),
            format!("{} is outside [0, 1)", o.momentum),
        ));
    }
    if !(o.weight_decay.is_finite() && o.weight_decay >= 0.0) {
        return Err(err(
            &f("weight_decay"),
            format!("{} must be a finite value ≥ 0", o.weight_decay),
        ));
    }
    match o.lr_schedule.as_str() {
        "constant" | "cosine" => {}
        "step" => {
            if o.step_size.unwrap_or(0) == 0 {
                return Err(err(
                    &f("step_size"),
                    "schedule `step` needs step_size ≥ 1".into(),
                ));
            }
        }
        "multistep" => {
            let m = o.milestones.as_deref().unwrap_or(&[]);
            if m.is_empty() || m.windows(2).any(|w| w[0] >= w[1]) {
                return Err(err(
                    &f("milestones"),
                    "schedule `multistep` needs increasing milestones".into(),
                ));
            }
        }
        other => {
            return Err(err(
                &f("lr_schedule"),
                format!("`{other}` is not one of constant, step, multistep, cosine"),
            ));
        }
    }
    if let Some(g) = o.gamma {
        if !(g.is_finite() && g > 0.0 && g <= 1.0) {
            return Err(err(&f("gamma"), format!("{g} is outside (0, 1]")));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_builtin_recipe_parses_and_validates() {
        for (name, _) in BUILTIN {
            let r = load(name).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(
                &r.recipe.name, name,
                "recipe file name and `name` field agree"
            );
        }
    }

    #[test]
    fn default_recipe_is_lenet300_on_fashion_mnist() {
        let r = load("lenet300-fashion").unwrap().recipe;
        assert_eq!(r.model, "lenet300");
        assert_eq!(r.dataset, "fashion-mnist");
    }

    fn with(edit: &str, from: &str) -> String {
        let base = BUILTIN.iter().find(|(n, _)| *n == "ci").unwrap().1;
        base.replacen(from, edit, 1)
    }

    #[test]
    fn bad_fields_are_named_in_errors() {
        let cases = [
            (with("model = \"alexnet\"", "model = \"lenet300\""), "model"),
            (with("lr = -0.1", "lr = 0.05"), "train.lr"),
            (with("fc_bits = 17", "fc_bits = 5"), "quant.fc_bits"),
            (
                with("method = \"magic\"", "method = \"percentile\""),
                "prune.method",
            ),
        ];
        for (text, field) in cases {
            let e = parse(&text, "test").unwrap_err().to_string();
            assert!(e.contains(field), "error `{e}` should name `{field}`");
        }
    }

    /// Fields that a method or schedule would ignore are refused, naming the field.
    #[test]
    fn fields_that_would_be_ignored_are_refused() {
        let cases = [
            // std prunes by s·std: a target would do nothing (the old vgg16-half recipe set one).
            (
                with(
                    "method = \"std\"\nstd_s = [0.5, 0.7, 1.0]\n",
                    "method = \"percentile\"\n",
                ),
                "prune.rounds[0].target",
            ),
            (
                with("method = \"global\"", "method = \"percentile\""),
                "prune.layer_scale",
            ),
            (
                with("schedule = \"oneshot\"", "schedule = \"rounds\""),
                "prune.rounds",
            ),
            (
                with("final_target = 0.9\nlr = 0.01", "lr = 0.01"),
                "prune.final_target",
            ),
            (with("std_s = [1.0]\nlr = 0.01", "lr = 0.01"), "prune.std_s"),
            (
                with("train_limit = 0\n", "train_limit = 20000\n"),
                "data.train_limit",
            ),
            (
                with(
                    "balanced_limits = true\n",
                    "train_limit = 20000\ntest_limit = 5000\n",
                ),
                "data.balanced_limits",
            ),
            (
                with(
                    "augment_flip = false
",
                    "train_limit = 20000
",
                ),
                "data.augment_flip",
            ),
            (
                with(
                    "augment = true
augment_padding = 0
",
                    "train_limit = 20000
",
                ),
                "data.augment_padding",
            ),
        ];
        for (text, field) in cases {
            let e = parse(&text, "test").unwrap_err().to_string();
            assert!(e.contains(field), "error `{e}` should name `{field}`");
        }
    }

    /// The ci recipe with its `[quant]` table replaced by `q`.
    fn quant(q: &str) -> String {
        let base = BUILTIN.iter().find(|(n, _)| *n == "ci").unwrap().1;
        let (head, _) = base.split_once("[quant]").unwrap();
        format!("{head}[quant]\n{q}\n")
    }

    #[test]
    fn quant_methods_are_validated_naming_the_field() {
        let cases = [
            (quant("method = \"lloyd\""), "quant.method"),
            (quant("method = \"uniform\"\nfc_bits = 9"), "quant.fc_bits"),
            (quant("method = \"ste\"\nconv_bits = 0"), "quant.conv_bits"),
            (
                quant("method = \"uniform\"\nbits = { \"fc1.weight\" = 12 }"),
                "quant.bits.fc1.weight",
            ),
            (quant("method = \"uniform\"\nrange = 0.0"), "quant.range"),
            (quant("method = \"uniform\"\nrange = -1.0"), "quant.range"),
            (
                quant("method = \"uniform\"\ngranularity = \"row\""),
                "quant.granularity",
            ),
            (
                quant("method = \"uniform\"\ngranularity = \"channel\"\nrange = 1.0"),
                "quant.range",
            ),
            // Fields the chosen method would ignore.
            (quant("range = 1.0"), "quant.range"),
            (quant("granularity = \"tensor\""), "quant.granularity"),
            (quant("method = \"uniform\"\nepochs = 2"), "quant.epochs"),
            (quant("method = \"uniform\"\nlr = 0.01"), "quant.lr"),
            (
                quant("method = \"uniform\"\ninit = \"density\""),
                "quant.init",
            ),
            (
                quant("method = \"ste\"\nepochs = 2\nother_lr = 0.01"),
                "quant.other_lr",
            ),
            (
                quant("method_layers = { \"fc3.weight\" = \"fp8\" }"),
                "quant.method_layers",
            ),
            (
                quant(
                    "float_layers = [\"fc3.weight\"]\nmethod_layers = { \"fc3.weight\" = \"ste\" }",
                ),
                "quant.method_layers",
            ),
            (
                quant("float_layers = [\"fc3.weight\"]\nbits = { \"fc3.weight\" = 4 }"),
                "quant.bits",
            ),
        ];
        for (text, field) in cases {
            let e = parse(&text, "test").unwrap_err().to_string();
            assert!(e.contains(field), "error `{e}` should name `{field}`");
        }
        for ok in [
            "method = \"uniform\"\ngranularity = \"channel\"\nfc_bits = 6",
            "method = \"uniform\"\nrange = 0.5\nfc_bits = 3",
            "method = \"ste\"\nepochs = 2\nlr = 0.001\nfloat_layers = [\"fc3.weight\"]",
            "method_layers = { \"fc3.weight\" = \"uniform\" }\nepochs = 1",
        ] {
            let r = parse(&quant(ok), "test").unwrap_or_else(|e| panic!("{ok}: {e}"));
            assert!(r.recipe.method_for("fc3.weight") != "kmeans");
        }
        assert_eq!(
            load("ci").unwrap().recipe.method_for("fc1.weight"),
            "kmeans"
        );
    }

    #[test]
    fn distillation_is_validated_naming_the_field() {
        let prune = |d: &str| with(&format!("lr = 0.01\ndistill = {d}"), "lr = 0.01");
        let cases = [
            (prune("{ alpha = 1.5 }"), "prune.distill.alpha"),
            (prune("{ alpha = -0.1 }"), "prune.distill.alpha"),
            (
                prune("{ alpha = 0.5, temperature = 0.0 }"),
                "prune.distill.temperature",
            ),
            (prune("{ alpha = 0.5, temp = 2.0 }"), "temp"),
            (
                quant("epochs = 1\ndistill = { alpha = 0.5, temperature = -2.0 }"),
                "quant.distill.temperature",
            ),
            // A stage that trains nothing would ignore it.
            (
                quant("epochs = 0\ndistill = { alpha = 0.5 }"),
                "quant.distill",
            ),
            (
                quant("method = \"uniform\"\nepochs = 0\ndistill = { alpha = 0.5 }"),
                "quant.distill",
            ),
        ];
        for (text, field) in cases {
            let e = parse(&text, "test").unwrap_err().to_string();
            assert!(e.contains(field), "error `{e}` should name `{field}`");
        }
        let r = parse(&prune("{ alpha = 0.7 }"), "test").unwrap().recipe;
        let d = r.prune.distill.unwrap();
        assert_eq!((d.alpha, d.temperature), (0.7, 4.0));
    }

    #[test]
    fn regularizers_are_validated_naming_the_field() {
        let reg = |r: &str| with(&format!("lr = 0.05\nregularizer = {r}"), "lr = 0.05");
        let cases = [
            (
                reg("{ kind = \"l1\", lambda = -1.0 }"),
                "train.regularizer.lambda",
            ),
            (
                reg("{ kind = \"l2\", lambda = 1.0 }"),
                "train.regularizer.kind",
            ),
            (
                reg("{ kind = \"trimmed_l1\", lambda = 1.0 }"),
                "train.regularizer.k",
            ),
            (
                reg("{ kind = \"l1\", lambda = 1.0, k = 3 }"),
                "train.regularizer.k",
            ),
            (
                reg("{ kind = \"trimmed_l1\", lambda = 1.0, fraction = 1.5 }"),
                "train.regularizer.fraction",
            ),
            (
                with(
                    "lr = 0.01\nregularizer = { kind = \"prox_l1\", lambda = -0.1 }",
                    "lr = 0.01",
                ),
                "prune.regularizer.lambda",
            ),
            (
                with("lr = 0.01\nqat_bits = 9", "lr = 0.01"),
                "prune.qat_bits",
            ),
        ];
        for (text, field) in cases {
            let e = parse(&text, "test").unwrap_err().to_string();
            assert!(e.contains(field), "error `{e}` should name `{field}`");
        }
        let ok = reg("{ kind = \"trimmed_l1\", lambda = 1e-4, fraction = 0.5 }");
        let r = parse(&ok, "test").unwrap().recipe;
        assert_eq!(r.train.regularizer.unwrap().fraction, Some(0.5));
    }

    #[test]
    fn unknown_field_is_rejected_with_its_name() {
        let text = with("model = \"lenet300\"\nmodle = 3", "model = \"lenet300\"");
        let e = parse(&text, "test").unwrap_err().to_string();
        assert!(e.contains("modle"), "{e}");
    }

    #[test]
    fn decreasing_schedule_is_rejected() {
        let text = r#"
name = "x"
model = "lenet300"
dataset = "fashion-mnist"
[train]
epochs = 1
lr = 0.1
[prune]
method = "percentile"
rounds = [{ target = 0.8, epochs = 1 }, { target = 0.5, epochs = 1 }]
lr = 0.01
[quant]
"#;
        let e = parse(text, "test").unwrap_err().to_string();
        assert!(
            e.contains("prune.rounds[1].target") && e.contains("may not decrease"),
            "{e}"
        );
    }

    #[test]
    fn missing_file_lists_builtins() {
        let e = load("no-such-recipe.toml").unwrap_err().to_string();
        assert!(e.contains("lenet300-fashion"), "{e}");
    }
}
