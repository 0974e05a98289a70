//! Thin layer structs with PyTorch semantics and PyTorch parameter names.
//!
//! Each layer owns [`Var`]s that it registers in the model's [`ParamStore`] when it is built, under
//! `<prefix>.weight`, `<prefix>.bias`, ... exactly as the corresponding `torch.nn` module would appear in
//! a `state_dict`. Layers are created with zero-filled variables; [`crate::init`] fills them afterwards
//! from a seeded generator. Forward passes use candle ops directly and avoid needless copies.

use candle_core::{DType, Device, Tensor, Var};

use crate::error::{ModelError, Result};
pub use crate::kernels::Activation;
use crate::model::{LayerKind, ParamRole, ParamStore};

/// Creates a zero-filled f32 variable and registers it in `store` under `name`.
fn register(
    store: &mut ParamStore,
    name: String,
    role: ParamRole,
    shape: &[usize],
    device: &Device,
) -> Result<Var> {
    let var = Var::zeros(shape, DType::F32, device)?;
    store.push(name, role, var.clone())?;
    Ok(var)
}

/// Rejects a zero-sized layer dimension with an error naming the layer.
fn check_positive(layer: &str, what: &str, value: usize) -> Result<()> {
    if value == 0 {
        return Err(ModelError::Config {
            field: format!("{layer}.{what}"),
            reason: "must be at least 1".into(),
        });
    }
    Ok(())
}

/// A fully-connected layer `y = x Wᵀ + b` (PyTorch `nn.Linear`); weight shape (out, in).
#[derive(Debug, Clone)]
pub struct Linear {
    weight: Var,
    bias: Option<Var>,
    in_features: usize,
    out_features: usize,
}

impl Linear {
    /// Builds the layer and registers `<name>.weight` (and `<name>.bias` when `bias`) in `store`.
    pub fn new(
        store: &mut ParamStore,
        name: &str,
        in_features: usize,
        out_features: usize,
        bias: bool,
        device: &Device,
    ) -> Result<Self> {
        check_positive(name, "in_features", in_features)?;
        check_positive(name, "out_features", out_features)?;
        let weight = register(
            store,
            format!("{name}.weight"),
            ParamRole::Weight(LayerKind::Fc),
            &[out_features, in_features],
            device,
        )?;
        let bias = if bias {
            Some(register(
                store,
                format!("{name}.bias"),
                ParamRole::Bias,
                &[out_features],
                device,
            )?)
        } else {
            None
        };
        Ok(Self {
            weight,
            bias,
            in_features,
            out_features,
        })
    }

    /// Number of input features.
    pub fn in_features(&self) -> usize {
        self.in_features
    }

    /// Number of output features.
    pub fn out_features(&self) -> usize {
        self.out_features
    }

    /// Whether the layer has a bias.
    pub fn has_bias(&self) -> bool {
        self.bias.is_some()
    }

    /// Applies the layer to `xs` of shape (N, in_features).
    pub fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        self.forward_act(xs, Activation::Identity)
    }

    /// Applies the layer and then `act` (one fused op on the CPU, see [`crate::kernels::linear()`]).
    pub fn forward_act(&self, xs: &Tensor, act: Activation) -> Result<Tensor> {
        crate::kernels::linear(
            xs,
            self.weight.as_tensor(),
            self.bias.as_ref().map(Var::as_tensor),
            act,
        )
    }
}

/// A 2-D convolution (PyTorch `nn.Conv2d`, square kernel, dilation 1, groups 1); weight shape
/// (out, in, k, k).
#[derive(Debug, Clone)]
pub struct Conv2d {
    weight: Var,
    bias: Option<Var>,
    in_channels: usize,
    out_channels: usize,
    kernel: usize,
    stride: usize,
    padding: usize,
}

impl Conv2d {
    /// Builds the layer and registers `<name>.weight` (and `<name>.bias` when `bias`) in `store`.
    pub fn new(
        store: &mut ParamStore,
        name: &str,
        in_channels: usize,
        out_channels: usize,
        kernel: usize,
        stride: usize,
        padding: usize,
        bias: bool,
        device: &Device,
    ) -> Result<Self> {
        check_positive(name, "in_channels", in_channels)?;
        check_positive(name, "out_channels", out_channels)?;
        check_positive(name, "kernel_size", kernel)?;
        check_positive(name, "stride", stride)?;
        let weight = register(
            store,
            format!("{name}.weight"),
            ParamRole::Weight(LayerKind::Conv),
            &[out_channels, in_channels, kernel, kernel],
            device,
        )?;
        let bias = if bias {
            Some(register(
                store,
                format!("{name}.bias"),
                ParamRole::Bias,
                &[out_channels],
                device,
            )?)
        } else {
            None
        };
        Ok(Self {
            weight,
            bias,
            in_channels,
            out_channels,
            kernel,
            stride,
            padding,
        })
    }

    /// Input channels.
    pub fn in_channels(&self) -> usize {
        self.in_channels
    }

    /// Output channels.
    pub fn out_channels(&self) -> usize {
        self.out_channels
    }

    /// Kernel side length.
    pub fn kernel(&self) -> usize {
        self.kernel
    }

    /// Stride.
    pub fn stride(&self) -> usize {
        self.stride
    }

    /// Zero padding on each side.
    pub fn padding(&self) -> usize {
        self.padding
    }

    /// Whether the layer has a bias.
    pub fn has_bias(&self) -> bool {
        self.bias.is_some()
    }

    /// Output side length for an input side length `size`, or `None` when the kernel does not fit.
    pub fn out_size(&self, size: usize) -> Option<usize> {
        conv_out_size(size, self.kernel, self.stride, self.padding)
    }

    /// Applies the convolution to `xs` of shape (N, C, H, W).
    pub fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        crate::kernels::conv2d(
            xs,
            self.weight.as_tensor(),
            self.bias.as_ref().map(Var::as_tensor),
            self.stride,
            self.padding,
        )
    }

    /// `act(bn(conv(xs)) [+ residual])`: this convolution, `bn` in train or eval mode, the
    /// `residual` (of the output's shape) and a ReLU when `relu`, as [`BatchNorm::forward_act`] on
    /// [`Conv2d::forward`]. In eval mode on the CPU the BatchNorm is folded into the convolution's
    /// weight and bias and the whole is one op ([`crate::kernels::conv::conv2d_affine`]): the
    /// output is written once, with no separate BatchNorm pass. In train mode on the CPU (for a
    /// convolution without bias) the convolution and the BatchNorm are one op as well
    /// ([`crate::kernels::conv_bn::conv2d_batch_norm_train`]), with the same results.
    pub fn forward_bn_act(
        &self,
        xs: &Tensor,
        bn: &BatchNorm,
        train: bool,
        residual: Option<&Tensor>,
        relu: bool,
    ) -> Result<Tensor> {
        if bn.num_features() != self.out_channels {
            return Err(ModelError::Shape {
                name: "batch norm after conv2d".into(),
                expected: vec![self.out_channels],
                found: vec![bn.num_features()],
            });
        }
        let cpu = xs.device().is_cpu()
            && matches!(xs.dtype(), DType::F32 | DType::F64)
            && self.weight.dtype() == xs.dtype()
            && bn.weight.dtype() == xs.dtype()
            && residual.is_none_or(|r| r.dtype() == xs.dtype());
        if train && cpu && self.bias.is_none() {
            // One op: the convolution's output is no node of candle's graph, so its gradient is
            // neither zero-filled nor accumulated (see `kernels::conv_bn`).
            let (ys, stats) = crate::kernels::conv_bn::conv2d_batch_norm_train(
                xs,
                self.weight.as_tensor(),
                bn.weight.as_tensor(),
                bn.bias.as_tensor(),
                bn.eps,
                self.stride,
                self.padding,
                residual,
                relu,
            )?;
            let (mean, var) = bn.stat_tensors(&stats, xs.device())?;
            bn.track(mean, var, stats.count)?;
            return Ok(ys);
        }
        if train || !cpu {
            return bn.forward_act(&self.forward(xs)?, train, residual, relu);
        }
        let (scale, shift) = bn.eval_affine()?;
        crate::kernels::conv::conv2d_affine(
            xs,
            self.weight.as_tensor(),
            self.bias.as_ref().map(Var::as_tensor),
            &scale,
            &shift,
            self.stride,
            self.padding,
            residual,
            relu,
        )
    }
}

/// Output side length of a convolution or pooling window: `⌊(size + 2·padding − kernel) / stride⌋ + 1`,
/// `None` when the window does not fit (or `stride` is 0).
pub fn conv_out_size(size: usize, kernel: usize, stride: usize, padding: usize) -> Option<usize> {
    let padded = size + 2 * padding;
    if stride == 0 || kernel == 0 || padded < kernel {
        return None;
    }
    Some((padded - kernel) / stride + 1)
}

/// Batch normalization over the channel dimension with PyTorch semantics (`nn.BatchNorm1d` on (N, C)
/// inputs, `nn.BatchNorm2d` on (N, C, H, W) inputs): eps 1e-5, momentum 0.1, affine, tracked running
/// statistics.
///
/// Train mode normalizes with the batch mean and the biased batch variance, and updates
/// `running_mean ← 0.9·running_mean + 0.1·mean` and `running_var ← 0.9·running_var + 0.1·var_unbiased`.
/// On the CPU the train mode runs the fused op [`crate::kernels::bn::batch_norm_train`] (statistics in
/// f64, one backward node for dx, dγ and dβ); on other devices it composes candle ops.
/// Eval mode normalizes with the running statistics. PyTorch's integer `num_batches_tracked` buffer is
/// not kept (it only matters for `momentum=None`); checkpoint loading skips it.
#[derive(Debug, Clone)]
pub struct BatchNorm {
    weight: Var,
    bias: Var,
    running_mean: Var,
    running_var: Var,
    num_features: usize,
    eps: f64,
    momentum: f64,
}

impl BatchNorm {
    /// PyTorch's default epsilon.
    pub const EPS: f64 = 1e-5;
    /// PyTorch's default momentum for the running statistics.
    pub const MOMENTUM: f64 = 0.1;

    /// Builds the layer and registers `<name>.weight`, `<name>.bias`, `<name>.running_mean`,
    /// `<name>.running_var` in `store` (PyTorch order). Gamma starts at 1, running variance at 1.
    pub fn new(
        store: &mut ParamStore,
        name: &str,
        num_features: usize,
        device: &Device,
    ) -> Result<Self> {
        check_positive(name, "num_features", num_features)?;
        let shape = [num_features];
        let weight = register(
            store,
            format!("{name}.weight"),
            ParamRole::BnWeight,
            &shape,
            device,
        )?;
        weight.set(&Tensor::ones(num_features, DType::F32, device)?)?;
        let bias = register(
            store,
            format!("{name}.bias"),
            ParamRole::BnBias,
            &shape,
            device,
        )?;
        let running_mean = register(
            store,
            format!("{name}.running_mean"),
            ParamRole::Buffer,
            &shape,
            device,
        )?;
        let running_var = register(
            store,
            format!("{name}.running_var"),
            ParamRole::Buffer,
            &shape,
            device,
        )?;
        running_var.set(&Tensor::ones(num_features, DType::F32, device)?)?;
        Ok(Self {
            weight,
            bias,
            running_mean,
            running_var,
            num_features,
            eps: Self::EPS,
            momentum: Self::MOMENTUM,
        })
    }

    /// Number of channels.
    pub fn num_features(&self) -> usize {
        self.num_features
    }

    /// The batch statistics of a fused op as tensors of the running statistics' dtype.
    fn stat_tensors(
        &self,
        stats: &crate::kernels::bn::BatchStats,
        device: &Device,
    ) -> Result<(Tensor, Tensor)> {
        let stat = |v: &[f64]| -> Result<Tensor> {
            Ok(Tensor::new(v, device)?.to_dtype(self.running_mean.dtype())?)
        };
        Ok((stat(&stats.mean)?, stat(&stats.var)?))
    }

    /// Folds a batch's mean and biased variance (over `count` values per channel) into the running
    /// statistics: detached, the variance made unbiased, as PyTorch does.
    fn track(&self, mean: Tensor, var: Tensor, count: usize) -> Result<()> {
        let m = self.momentum;
        let var_unbiased = (var * (count as f64 / (count - 1) as f64))?;
        let new_mean = ((self.running_mean.as_tensor() * (1.0 - m))? + (mean * m)?)?;
        let new_var = ((self.running_var.as_tensor() * (1.0 - m))? + (var_unbiased * m)?)?;
        self.running_mean.set(&new_mean)?;
        self.running_var.set(&new_var)?;
        Ok(())
    }

    /// Eval mode as one scale and one shift per channel (C each): `γ / √(running_var + ε)` and
    /// `β − running_mean · scale`, made of candle ops (gradients flow to γ, β and the statistics).
    pub fn eval_affine(&self) -> Result<(Tensor, Tensor)> {
        let scale =
            (self.weight.as_tensor() / (self.running_var.as_tensor() + self.eps)?.sqrt()?)?;
        let shift = (self.bias.as_tensor() - (self.running_mean.as_tensor() * &scale)?)?;
        Ok((scale, shift))
    }

    /// Normalizes `xs` of shape (N, C) or (N, C, H, W). With `train`, uses batch statistics and updates
    /// the running statistics in place (through `Var::set`, so `&self` suffices).
    pub fn forward_t(&self, xs: &Tensor, train: bool) -> Result<Tensor> {
        self.forward_act(xs, train, None, false)
    }

    /// `act(BN(xs) [+ residual])`: [`BatchNorm::forward_t`], then the `residual` (a tensor of the
    /// input's shape) added and a ReLU when `relu`. On the CPU the three are one op in both modes
    /// ([`crate::kernels::bn::batch_norm_train_act`], [`crate::kernels::bn::channel_affine`]); on other
    /// devices they are composed from candle ops.
    pub fn forward_act(
        &self,
        xs: &Tensor,
        train: bool,
        residual: Option<&Tensor>,
        relu: bool,
    ) -> Result<Tensor> {
        let dims = xs.dims();
        let fused = xs.device().is_cpu() && matches!(xs.dtype(), DType::F32 | DType::F64);
        let c = self.num_features;
        let (bshape, reduce): (Vec<usize>, Vec<usize>) = match dims.len() {
            2 => (vec![1, c], vec![0]),
            4 => (vec![1, c, 1, 1], vec![0, 2, 3]),
            _ => {
                return Err(ModelError::Shape {
                    name: "batch norm input".into(),
                    expected: vec![0, c],
                    found: dims.to_vec(),
                })
            }
        };
        if dims[1] != c {
            let mut expected = dims.to_vec();
            expected[1] = c;
            return Err(ModelError::Shape {
                name: "batch norm input".into(),
                expected,
                found: dims.to_vec(),
            });
        }
        if train {
            let count: usize = reduce.iter().map(|&d| dims[d]).product();
            if count < 2 {
                return Err(ModelError::Config {
                    field: "batch".into(),
                    reason: format!(
                        "batch norm in train mode needs more than one value per channel, got input shape {dims:?}"
                    ),
                });
            }
            let (ys, mean, var) = if fused {
                // Our fused op: one node, statistics in f64, dx/dγ/dβ(/dr) in one backward pass.
                let (ys, stats) = crate::kernels::bn::batch_norm_train_act(
                    xs,
                    self.weight.as_tensor(),
                    self.bias.as_tensor(),
                    self.eps,
                    residual,
                    relu,
                )?;
                let (mean, var) = self.stat_tensors(&stats, xs.device())?;
                (ys, mean, var)
            } else {
                let inv_n = 1.0 / count as f64;
                let mean = (xs.sum_keepdim(reduce.as_slice())? * inv_n)?;
                let centered = xs.broadcast_sub(&mean)?;
                let var = (centered.sqr()?.sum_keepdim(reduce.as_slice())? * inv_n)?;
                // scale = gamma / sqrt(var + eps), applied to the centered input, then shift by beta.
                let scale = self
                    .weight
                    .reshape(bshape.as_slice())?
                    .broadcast_div(&(var.clone() + self.eps)?.sqrt()?)?;
                let ys = centered
                    .broadcast_mul(&scale)?
                    .broadcast_add(&self.bias.reshape(bshape.as_slice())?)?;
                let ys = match residual {
                    Some(r) => (ys + r)?,
                    None => ys,
                };
                let ys = if relu { ys.relu()? } else { ys };
                (
                    ys,
                    mean.detach().flatten_all()?,
                    var.detach().flatten_all()?,
                )
            };
            self.track(mean, var, count)?;
            Ok(ys)
        } else {
            let (scale, shift) = self.eval_affine()?;
            if fused && scale.dtype() == xs.dtype() {
                return crate::kernels::bn::channel_affine(xs, &scale, &shift, residual, relu);
            }
            let ys = xs
                .broadcast_mul(&scale.reshape(bshape.as_slice())?)?
                .broadcast_add(&shift.reshape(bshape.as_slice())?)?;
            let ys = match residual {
                Some(r) => (ys + r)?,
                None => ys,
            };
            Ok(if relu { ys.relu()? } else { ys })
        }
    }
}

/// Max pooling with a square window of side `kernel` and stride `kernel` (PyTorch `nn.MaxPool2d(k)`,
/// floor mode: trailing rows / columns that do not fill a window are dropped).
///
/// A thin wrapper over [`crate::kernels::pool::max_pool2d`]`(xs, kernel, kernel, 0)`: like PyTorch,
/// the gradient goes to exactly one element per window, the first maximum in row-major order (candle
/// 0.11's own `max_pool2d` scales it by 1/k² instead).
///
/// # Errors
/// See [`crate::kernels::pool::max_pool2d`]: [`ModelError::Config`] for `kernel == 0`,
/// [`ModelError::Shape`] for an input that is not 4-D or smaller than one window.
pub fn max_pool2d(xs: &Tensor, kernel: usize) -> Result<Tensor> {
    crate::kernels::pool::max_pool2d(xs, kernel, kernel, 0)
}

/// Global average pooling: (N, C, H, W) → (N, C).
pub fn global_avg_pool(xs: &Tensor) -> Result<Tensor> {
    Ok(xs.mean((2, 3))?)
}

/// Flattens (N, ...) to (N, prod(...)) in C order, like `x.view(x.size(0), -1)`.
pub fn flatten(xs: &Tensor) -> Result<Tensor> {
    Ok(xs.flatten_from(1)?)
}
