//! The one view of a network that the rest of deepcomp uses: an ordered list of named parameters.
//!
//! Every architecture in this crate implements [`Model`]. Its [`ParamStore`] lists every tensor the model
//! owns (trainable weights and biases, BatchNorm affine parameters, BatchNorm running statistics) under the
//! name PyTorch gives it (`fc1.weight`, `features.0.weight`, `layer1.0.bn1.running_mean`, ...), in a stable
//! order: the order of the PyTorch `state_dict`. [`Model::prunable`] is the subset the compression stages
//! act on: conv and fully-connected weight matrices, never biases or BatchNorm.

use candle_core::{Tensor, Var};

use crate::error::Result;

/// Kind of a prunable weight.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum LayerKind {
    /// Convolution weight, shape (out_channels, in_channels, kh, kw).
    Conv,
    /// Fully-connected weight, shape (out_features, in_features).
    Fc,
}

impl LayerKind {
    /// Lower-case name used in reports and files: `conv` or `fc`.
    pub fn as_str(self) -> &'static str {
        match self {
            LayerKind::Conv => "conv",
            LayerKind::Fc => "fc",
        }
    }
}

/// What a parameter is, so that optimizers and compression stages can treat each kind right.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParamRole {
    /// A prunable conv or fc weight.
    Weight(LayerKind),
    /// A bias vector of a conv or fc layer.
    Bias,
    /// BatchNorm scale (gamma, PyTorch `weight`).
    BnWeight,
    /// BatchNorm shift (beta, PyTorch `bias`).
    BnBias,
    /// A non-trainable buffer (BatchNorm running mean / variance).
    Buffer,
}

impl ParamRole {
    /// Whether gradients flow to this parameter and optimizers update it.
    pub fn trainable(self) -> bool {
        !matches!(self, ParamRole::Buffer)
    }
}

/// One named tensor owned by a model.
#[derive(Debug, Clone)]
pub struct Param {
    /// PyTorch-style name, e.g. `conv1.weight`.
    pub name: String,
    /// What the tensor is.
    pub role: ParamRole,
    /// The variable itself (buffers are `Var`s too, so they can be set in place).
    pub var: Var,
}

/// All tensors of a model, in PyTorch `state_dict` order. Never reordered, never hashed.
#[derive(Debug, Clone, Default)]
pub struct ParamStore {
    params: Vec<Param>,
}

impl ParamStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends a parameter; names must be unique (checked).
    pub fn push(&mut self, name: impl Into<String>, role: ParamRole, var: Var) -> Result<()> {
        let name = name.into();
        if self.get(&name).is_some() {
            return Err(crate::error::ModelError::Config {
                field: name,
                reason: "duplicate parameter name".into(),
            });
        }
        self.params.push(Param { name, role, var });
        Ok(())
    }

    /// All parameters in order.
    pub fn iter(&self) -> impl Iterator<Item = &Param> {
        self.params.iter()
    }

    /// Parameters that receive gradients, in order.
    pub fn trainable(&self) -> impl Iterator<Item = &Param> {
        self.params.iter().filter(|p| p.role.trainable())
    }

    /// Looks a parameter up by name.
    pub fn get(&self, name: &str) -> Option<&Param> {
        self.params.iter().find(|p| p.name == name)
    }

    /// Number of parameters (tensors, not scalars).
    pub fn len(&self) -> usize {
        self.params.len()
    }

    /// Whether the store is empty.
    pub fn is_empty(&self) -> bool {
        self.params.is_empty()
    }
}

/// A prunable weight as the compression stages see it.
#[derive(Debug, Clone)]
pub struct PrunableWeight {
    /// PyTorch-style name, e.g. `fc1.weight`.
    pub name: String,
    /// Conv or fc.
    pub kind: LayerKind,
    /// Tensor shape.
    pub shape: Vec<usize>,
    /// The variable.
    pub var: Var,
}

/// A network deepcomp can train, prune, quantize and encode.
pub trait Model: Send + Sync + std::fmt::Debug {
    /// Architecture id, e.g. `lenet300`, `lenet5`, `vgg16_half`, `resnet20`.
    fn arch(&self) -> &str;

    /// Logits for a batch `xs` of shape (N, C, H, W) (MLPs flatten it). `train` selects BatchNorm batch
    /// statistics (and updates running statistics) versus running statistics.
    fn forward_t(&self, xs: &Tensor, train: bool) -> Result<Tensor>;

    /// Every tensor of the model in PyTorch `state_dict` order.
    fn params(&self) -> &ParamStore;

    /// Expected input shape (C, H, W).
    fn input_shape(&self) -> [usize; 3];

    /// Number of output classes.
    fn num_classes(&self) -> usize;

    /// The layers in forward order with their per-sample shapes, for cost reports
    /// ([`crate::report::layer_report`]). The default describes nothing; every architecture of this crate
    /// overrides it.
    fn layers(&self) -> Vec<crate::report::LayerInfo> {
        Vec::new()
    }

    /// The prunable weights (conv and fc weights), in `state_dict` order.
    fn prunable(&self) -> Vec<PrunableWeight> {
        self.params()
            .iter()
            .filter_map(|p| match p.role {
                ParamRole::Weight(kind) => Some(PrunableWeight {
                    name: p.name.clone(),
                    kind,
                    shape: p.var.dims().to_vec(),
                    var: p.var.clone(),
                }),
                _ => None,
            })
            .collect()
    }
}
