//! The architectures deepcomp compresses, each with PyTorch parameter names so that safetensors
//! checkpoints interchange with the PyTorch originals.
//!
//! | id            | network                                             | prunable weights (default config) |
//! |---------------|-----------------------------------------------------|-----------------------------------|
//! | `lenet300`    | LeNet-300-100 (784-300-100-10), [`Mlp`]             | 266,200                           |
//! | `lenet5`      | LeNet-5, Caffe variant, [`LeNet5`]                  | 430,500                           |
//! | `mlp`         | seed 002's 4-layer `SimpleDNN` (784-1568-3136-6272-10), [`Mlp`] | 25,878,272            |
//! | `cifar_lenet` | PyTorch tutorial `Net` of seed 004, [`CifarLeNet`]  | 61,770                            |
//! | `vgg16_half`  | VGG16 with half the channels + BatchNorm, [`Vgg16Half`] | 3,811,680                     |
//! | `resnet20`    | CIFAR ResNet-20, option-A shortcuts, [`ResNet20`]   | 268,336                           |
//!
//! [`build`] constructs any of them by id from an [`ArchConfig`] (every field optional: `None` takes the
//! architecture's default; a field an architecture has no use for is rejected rather than ignored) and
//! fills the weights from a seed with the architecture's original initialization ([`InitScheme`]).

mod cifar_lenet;
mod lenet5;
mod mlp;
mod resnet;
mod vgg;

pub use cifar_lenet::CifarLeNet;
pub use lenet5::LeNet5;
pub use mlp::Mlp;
pub use resnet::ResNet20;
pub use vgg::Vgg16Half;

use candle_core::{Device, Tensor};

use crate::error::{ModelError, Result};
use crate::init::InitScheme;
use crate::model::Model;

/// Every architecture id [`build`] accepts.
pub const ARCHS: [&str; 6] = [
    "lenet300",
    "lenet5",
    "mlp",
    "cifar_lenet",
    "vgg16_half",
    "resnet20",
];

/// Architecture options; `None` selects the architecture's default (listed per field).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ArchConfig {
    /// Input channels: 1 for the MNIST models (`lenet300`, `lenet5`, `mlp`), 3 for the CIFAR models
    /// (set 1 for 32×32-padded Fashion-MNIST).
    pub in_channels: Option<usize>,
    /// Input side length (square inputs): 28 for the MNIST models, 32 for the CIFAR models.
    pub input_size: Option<usize>,
    /// Output classes (default 10).
    pub num_classes: Option<usize>,
    /// `cifar_lenet` only: the two conv kernel sides `[k1, k2]` (default `[5, 5]`; seed 004 uses `[8, 9]`).
    pub kernels: Option<Vec<usize>>,
    /// Hidden widths: `mlp` any number of layers (default `[1568, 3136, 6272]`, seed 002's SimpleDNN);
    /// `lenet300` exactly two (default `[300, 100]`); `cifar_lenet` exactly two (default `[120, 84]`);
    /// `lenet5` exactly one (default `[500]`); `vgg16_half` the two hidden classifier layers (default
    /// `[256, 256]`).
    pub hidden: Option<Vec<usize>>,
    /// Output channels of each convolution, in order: `lenet5` two (default `[20, 50]`), `cifar_lenet`
    /// two (default `[6, 16]`), `vgg16_half` thirteen (default
    /// `[32, 32, 64, 64, 128, 128, 128, 256, 256, 256, 256, 256, 256]`). What structured pruning leaves
    /// of the filters; left out of the serialized form when unset.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub channels: Option<Vec<usize>>,
    /// `vgg16_half` only: whether the convolutions carry a bias (default `false`: each conv is followed by
    /// BatchNorm, which makes a bias redundant).
    pub conv_bias: Option<bool>,
    /// Weight initialization (default: the scheme of the architecture's original code).
    pub init: Option<InitScheme>,
}

impl ArchConfig {
    /// All defaults.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets `in_channels`.
    pub fn with_in_channels(mut self, c: usize) -> Self {
        self.in_channels = Some(c);
        self
    }

    /// Sets `input_size`.
    pub fn with_input_size(mut self, s: usize) -> Self {
        self.input_size = Some(s);
        self
    }

    /// Sets `num_classes`.
    pub fn with_num_classes(mut self, n: usize) -> Self {
        self.num_classes = Some(n);
        self
    }

    /// Sets `kernels`.
    pub fn with_kernels(mut self, k: Vec<usize>) -> Self {
        self.kernels = Some(k);
        self
    }

    /// Sets `hidden`.
    pub fn with_hidden(mut self, h: Vec<usize>) -> Self {
        self.hidden = Some(h);
        self
    }

    /// Sets `channels`.
    pub fn with_channels(mut self, c: Vec<usize>) -> Self {
        self.channels = Some(c);
        self
    }

    /// Sets `conv_bias`.
    pub fn with_conv_bias(mut self, b: bool) -> Self {
        self.conv_bias = Some(b);
        self
    }

    /// Sets `init`.
    pub fn with_init(mut self, init: InitScheme) -> Self {
        self.init = Some(init);
        self
    }

    /// Errors when a field in `unused` is set: `arch` has no use for it.
    pub(crate) fn reject(&self, arch: &str, unused: &[&str]) -> Result<()> {
        for &field in unused {
            let set = match field {
                "in_channels" => self.in_channels.is_some(),
                "input_size" => self.input_size.is_some(),
                "num_classes" => self.num_classes.is_some(),
                "kernels" => self.kernels.is_some(),
                "hidden" => self.hidden.is_some(),
                "channels" => self.channels.is_some(),
                "conv_bias" => self.conv_bias.is_some(),
                "init" => self.init.is_some(),
                _ => false,
            };
            if set {
                return Err(ModelError::Config {
                    field: field.to_string(),
                    reason: format!("architecture `{arch}` has no such option"),
                });
            }
        }
        Ok(())
    }

    /// The (C, H, W) input shape and class count, with defaults, validated to be non-zero.
    pub(crate) fn io(
        &self,
        default_channels: usize,
        default_size: usize,
    ) -> Result<([usize; 3], usize)> {
        let c = positive("in_channels", self.in_channels.unwrap_or(default_channels))?;
        let s = positive("input_size", self.input_size.unwrap_or(default_size))?;
        let n = positive("num_classes", self.num_classes.unwrap_or(10))?;
        Ok(([c, s, s], n))
    }
}

/// A list of layer widths (`hidden`, `channels`): `given` or `default`, of exactly `default.len()`
/// entries, each at least 1.
pub(crate) fn widths(
    arch: &str,
    field: &str,
    given: Option<&Vec<usize>>,
    default: &[usize],
) -> Result<Vec<usize>> {
    let v = given.cloned().unwrap_or_else(|| default.to_vec());
    if v.len() != default.len() {
        return Err(ModelError::Config {
            field: field.to_string(),
            reason: format!(
                "{arch} needs exactly {} {field} widths, got {}",
                default.len(),
                v.len()
            ),
        });
    }
    for (i, &w) in v.iter().enumerate() {
        positive(&format!("{field}[{i}]"), w)?;
    }
    Ok(v)
}

/// Checks that a configuration value is at least 1.
pub(crate) fn positive(field: &str, v: usize) -> Result<usize> {
    if v == 0 {
        return Err(ModelError::Config {
            field: field.to_string(),
            reason: "must be at least 1".into(),
        });
    }
    Ok(v)
}

/// Checks that `xs` is a batch (N, C, H, W) of the expected per-sample shape and returns N.
pub(crate) fn check_input(xs: &Tensor, shape: [usize; 3]) -> Result<usize> {
    let dims = xs.dims();
    if dims.len() != 4 || dims[1..] != shape || dims[0] == 0 {
        let n = dims.first().copied().unwrap_or(0).max(1);
        return Err(ModelError::Shape {
            name: "input".into(),
            expected: vec![n, shape[0], shape[1], shape[2]],
            found: dims.to_vec(),
        });
    }
    Ok(dims[0])
}

/// Builds architecture `arch` (one of [`ARCHS`]) with options `cfg`, weights drawn from `seed`.
pub fn build(arch: &str, cfg: &ArchConfig, seed: u64, device: &Device) -> Result<Box<dyn Model>> {
    Ok(match arch {
        "lenet300" => Box::new(Mlp::lenet300(cfg, seed, device)?),
        "lenet5" => Box::new(LeNet5::new(cfg, seed, device)?),
        "mlp" => Box::new(Mlp::simple_dnn(cfg, seed, device)?),
        "cifar_lenet" => Box::new(CifarLeNet::new(cfg, seed, device)?),
        "vgg16_half" => Box::new(Vgg16Half::new(cfg, seed, device)?),
        "resnet20" => Box::new(ResNet20::new(cfg, seed, device)?),
        other => {
            return Err(ModelError::Config {
                field: "arch".into(),
                reason: format!(
                    "unknown architecture `{other}`; expected one of {}",
                    ARCHS.join(", ")
                ),
            })
        }
    })
}

/// Output side of a conv / pooling window on an input of side `size`, or a configuration error naming
/// `layer` when the window does not fit.
pub(crate) fn out_side(
    layer: &str,
    size: usize,
    kernel: usize,
    stride: usize,
    padding: usize,
) -> Result<usize> {
    crate::layers::conv_out_size(size, kernel, stride, padding).ok_or_else(|| ModelError::Config {
        field: "input_size".into(),
        reason: format!(
            "layer `{layer}` (window {kernel}, stride {stride}, padding {padding}) does not fit its \
             {size}x{size} input"
        ),
    })
}
