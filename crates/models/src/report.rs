//! Per-layer cost report: parameters, multiply-accumulate operations (MACs) per inference and memory
//! footprint, dense and at a given weight bit width.
//!
//! Every architecture describes its layers through [`Model::layers`] as a list of [`LayerInfo`]
//! (operation, per-sample input and output shapes). [`layer_report`] turns that into [`LayerCost`]s,
//! reading the current weights so that pruned models also get their sparse MAC count.
//!
//! MAC conventions (per input sample, as in the hand calculations of seed report 004):
//! - convolution: `out_h · out_w · k · k · in_c · out_c`;
//! - fully connected: `in · out`;
//! - max pooling: `out_h · out_w · k · k · channels` (one compare per window element);
//! - global average pooling: `h · w · channels`;
//! - BatchNorm: 0 (at inference it folds into the preceding conv / fc as a scale and shift).
//!
//! Bias additions are not counted as MACs. Memory: [`LayerCost::weight_bytes_at_bits`] counts only the
//! prunable weights, `weights · bits / 8` rounded up (seed 004's "memory footprint"); the other tensors
//! (biases, BatchNorm) are counted at 32 bits in [`LayerCost::bytes_at_bits`].

use std::fmt;

use crate::error::{ModelError, Result};
use crate::model::Model;

/// The operation of one layer, with the hyperparameters the cost depends on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LayerOp {
    /// 2-D convolution, square kernel.
    Conv {
        /// Input channels.
        in_channels: usize,
        /// Output channels.
        out_channels: usize,
        /// Kernel side.
        kernel: usize,
        /// Stride.
        stride: usize,
        /// Zero padding per side.
        padding: usize,
        /// Whether a bias vector is present.
        bias: bool,
    },
    /// Fully-connected layer.
    Linear {
        /// Input features.
        in_features: usize,
        /// Output features.
        out_features: usize,
        /// Whether a bias vector is present.
        bias: bool,
    },
    /// BatchNorm over `features` channels (affine, with running statistics).
    BatchNorm {
        /// Channels.
        features: usize,
    },
    /// Max pooling, square window.
    MaxPool {
        /// Window side.
        kernel: usize,
        /// Stride.
        stride: usize,
    },
    /// Global average pooling over H and W.
    GlobalAvgPool,
}

impl LayerOp {
    /// Short lower-case name: `conv`, `fc`, `bn`, `maxpool`, `avgpool`.
    pub fn kind_str(&self) -> &'static str {
        match self {
            LayerOp::Conv { .. } => "conv",
            LayerOp::Linear { .. } => "fc",
            LayerOp::BatchNorm { .. } => "bn",
            LayerOp::MaxPool { .. } => "maxpool",
            LayerOp::GlobalAvgPool => "avgpool",
        }
    }

    /// Number of prunable weight scalars (conv / fc weight tensor size).
    pub fn weight_count(&self) -> usize {
        match *self {
            LayerOp::Conv {
                in_channels,
                out_channels,
                kernel,
                ..
            } => in_channels * out_channels * kernel * kernel,
            LayerOp::Linear {
                in_features,
                out_features,
                ..
            } => in_features * out_features,
            _ => 0,
        }
    }

    /// Number of other stored scalars: biases, BatchNorm gamma/beta/running mean/running variance.
    pub fn other_param_count(&self) -> usize {
        match *self {
            LayerOp::Conv {
                out_channels, bias, ..
            } => usize::from(bias) * out_channels,
            LayerOp::Linear {
                out_features, bias, ..
            } => usize::from(bias) * out_features,
            LayerOp::BatchNorm { features } => 4 * features,
            _ => 0,
        }
    }
}

/// One layer as an architecture describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerInfo {
    /// Module path as in PyTorch (`conv1`, `features.7`, `layer2.0.bn1`); functional layers that have
    /// no module in the original code get a descriptive name (`pool1`, `avgpool`).
    pub name: String,
    /// What the layer computes.
    pub op: LayerOp,
    /// Per-sample input shape, (C, H, W) or (F).
    pub in_shape: Vec<usize>,
    /// Per-sample output shape, (C, H, W) or (F).
    pub out_shape: Vec<usize>,
}

impl LayerInfo {
    /// Name of the prunable weight parameter of this layer (`<name>.weight`), for conv and fc only.
    pub fn weight_name(&self) -> Option<String> {
        match self.op {
            LayerOp::Conv { .. } | LayerOp::Linear { .. } => Some(format!("{}.weight", self.name)),
            _ => None,
        }
    }

    /// Dense MACs per sample, by the conventions of the module documentation.
    pub fn macs(&self) -> u64 {
        let out: u64 = self.out_shape.iter().map(|&d| d as u64).product();
        let inp: u64 = self.in_shape.iter().map(|&d| d as u64).product();
        match self.op {
            LayerOp::Conv {
                in_channels,
                kernel,
                ..
            } => out * (kernel * kernel * in_channels) as u64,
            LayerOp::Linear { in_features, .. } => out * in_features as u64,
            LayerOp::MaxPool { kernel, .. } => out * (kernel * kernel) as u64,
            LayerOp::GlobalAvgPool => inp,
            LayerOp::BatchNorm { .. } => 0,
        }
    }
}

/// Cost of one layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerCost {
    /// Module path (see [`LayerInfo::name`]).
    pub name: String,
    /// Operation.
    pub op: LayerOp,
    /// Per-sample output shape.
    pub out_shape: Vec<usize>,
    /// Prunable weight scalars.
    pub weights: usize,
    /// Non-zero prunable weight scalars (current values).
    pub nonzero_weights: usize,
    /// Biases and BatchNorm tensors (scalars).
    pub other_params: usize,
    /// Dense MACs per sample.
    pub macs: u64,
    /// MACs per sample that involve a non-zero weight (equals `macs` for dense layers; pooling keeps its
    /// dense count). Each conv weight is used `out_h·out_w` times and each fc weight once, so this is
    /// exact, not a proportional estimate.
    pub sparse_macs: u64,
    /// Output activations per sample.
    pub activations: usize,
}

/// `count · bits / 8` bytes, rounded up.
fn bits_to_bytes(count: usize, bits: u32) -> u64 {
    (count as u64 * u64::from(bits)).div_ceil(8)
}

impl LayerCost {
    /// Bytes of the prunable weights at `bits` bits per weight (rounded up to a whole byte).
    pub fn weight_bytes_at_bits(&self, bits: u32) -> u64 {
        bits_to_bytes(self.weights, bits)
    }

    /// Bytes of the whole layer when every tensor is fp32.
    pub fn bytes_fp32(&self) -> u64 {
        4 * (self.weights + self.other_params) as u64
    }

    /// Bytes of the layer with the prunable weights at `bits` bits and the other tensors at fp32.
    pub fn bytes_at_bits(&self, bits: u32) -> u64 {
        self.weight_bytes_at_bits(bits) + 4 * self.other_params as u64
    }
}

/// The cost of every layer of a model, in forward order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelReport {
    /// Architecture id.
    pub arch: String,
    /// Layers in forward order.
    pub layers: Vec<LayerCost>,
}

impl ModelReport {
    /// Total prunable weights.
    pub fn weights(&self) -> usize {
        self.layers.iter().map(|l| l.weights).sum()
    }

    /// Total non-zero prunable weights.
    pub fn nonzero_weights(&self) -> usize {
        self.layers.iter().map(|l| l.nonzero_weights).sum()
    }

    /// Total biases and BatchNorm scalars.
    pub fn other_params(&self) -> usize {
        self.layers.iter().map(|l| l.other_params).sum()
    }

    /// Total dense MACs per sample (all layers, pooling included).
    pub fn macs(&self) -> u64 {
        self.layers.iter().map(|l| l.macs).sum()
    }

    /// Dense MACs per sample of conv and fc layers only (the figure papers usually quote).
    pub fn conv_fc_macs(&self) -> u64 {
        self.layers
            .iter()
            .filter(|l| matches!(l.op, LayerOp::Conv { .. } | LayerOp::Linear { .. }))
            .map(|l| l.macs)
            .sum()
    }

    /// Total MACs per sample skipping zero weights.
    pub fn sparse_macs(&self) -> u64 {
        self.layers.iter().map(|l| l.sparse_macs).sum()
    }

    /// Total output activations per sample.
    pub fn activations(&self) -> usize {
        self.layers.iter().map(|l| l.activations).sum()
    }

    /// Bytes of all prunable weights at `bits` bits (sum of the per-layer rounded figures).
    pub fn weight_bytes_at_bits(&self, bits: u32) -> u64 {
        self.layers
            .iter()
            .map(|l| l.weight_bytes_at_bits(bits))
            .sum()
    }

    /// Bytes of the whole model at fp32.
    pub fn bytes_fp32(&self) -> u64 {
        self.layers.iter().map(LayerCost::bytes_fp32).sum()
    }

    /// Bytes of the model with prunable weights at `bits` bits, everything else at fp32.
    pub fn bytes_at_bits(&self, bits: u32) -> u64 {
        self.layers.iter().map(|l| l.bytes_at_bits(bits)).sum()
    }

    /// Looks a layer up by name.
    pub fn layer(&self, name: &str) -> Option<&LayerCost> {
        self.layers.iter().find(|l| l.name == name)
    }
}

impl fmt::Display for ModelReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{:<18} {:<8} {:<14} {:>10} {:>10} {:>8} {:>14} {:>14} {:>12}",
            "layer",
            "kind",
            "output",
            "weights",
            "nonzero",
            "other",
            "MACs",
            "sparse MACs",
            "fp32 bytes"
        )?;
        for l in &self.layers {
            let shape = l
                .out_shape
                .iter()
                .map(|d| d.to_string())
                .collect::<Vec<_>>()
                .join("x");
            writeln!(
                f,
                "{:<18} {:<8} {:<14} {:>10} {:>10} {:>8} {:>14} {:>14} {:>12}",
                l.name,
                l.op.kind_str(),
                shape,
                l.weights,
                l.nonzero_weights,
                l.other_params,
                l.macs,
                l.sparse_macs,
                l.bytes_fp32()
            )?;
        }
        write!(
            f,
            "{:<18} {:<8} {:<14} {:>10} {:>10} {:>8} {:>14} {:>14} {:>12}",
            "total",
            "",
            "",
            self.weights(),
            self.nonzero_weights(),
            self.other_params(),
            self.macs(),
            self.sparse_macs(),
            self.bytes_fp32()
        )
    }
}

/// Counts the non-zero scalars of a tensor.
fn count_nonzero(t: &candle_core::Tensor) -> Result<usize> {
    let nz = t.ne(0f32)?.to_dtype(candle_core::DType::U32)?.sum_all()?;
    Ok(nz.to_scalar::<u32>()? as usize)
}

/// Builds the per-layer cost report of `model` from its [`Model::layers`] description and its current
/// weights. Errors when the model describes no layers, or when a described weight is missing from the
/// parameter store or has another size than the description.
pub fn layer_report(model: &dyn Model) -> Result<ModelReport> {
    let infos = model.layers();
    if infos.is_empty() {
        return Err(ModelError::Config {
            field: "layers".into(),
            reason: format!(
                "model `{}` does not describe its layers, so no cost report can be made",
                model.arch()
            ),
        });
    }
    let mut layers = Vec::with_capacity(infos.len());
    for info in infos {
        let weights = info.op.weight_count();
        let macs = info.macs();
        let (nonzero_weights, sparse_macs) = match info.weight_name() {
            Some(wname) => {
                let p = model
                    .params()
                    .get(&wname)
                    .ok_or_else(|| ModelError::UnknownParam(wname.clone()))?;
                if p.var.elem_count() != weights {
                    return Err(ModelError::Shape {
                        name: wname,
                        expected: vec![weights],
                        found: p.var.dims().to_vec(),
                    });
                }
                let nz = count_nonzero(p.var.as_tensor())?;
                // Each weight takes part in macs / weights multiply-accumulates.
                let uses = if weights == 0 {
                    0
                } else {
                    macs / weights as u64
                };
                (nz, nz as u64 * uses)
            }
            None => (0, macs),
        };
        layers.push(LayerCost {
            weights,
            nonzero_weights,
            other_params: info.op.other_param_count(),
            macs,
            sparse_macs,
            activations: info.out_shape.iter().product(),
            name: info.name,
            op: info.op,
            out_shape: info.out_shape,
        });
    }
    Ok(ModelReport {
        arch: model.arch().to_string(),
        layers,
    })
}
