//! Optimizers with PyTorch's update rules: SGD (momentum, Nesterov, weight decay, dampening 0) and AdamW.
//!
//! Both keep their per-parameter state in a `BTreeMap` keyed by parameter name, so the state can be exported
//! to a checkpoint ([`Optimizer::state`]), imported back ([`Optimizer::load_state`]) and masked by the pruning
//! stage ([`Optimizer::mask_state`]). State tensors are named `<slot>.<param>`, with PyTorch's slot names:
//! `momentum_buffer` for SGD, `exp_avg`, `exp_avg_sq` and `step` for AdamW.
//!
//! ## Update rules (exactly PyTorch's, `torch.optim.SGD` / `torch.optim.AdamW`, single-tensor path)
//!
//! SGD, with gradient `g`, weight `w`, learning rate `lr`, momentum `μ`, weight decay `wd`:
//! `d = g + wd·w`; `buf = d` on the first step, else `buf = μ·buf + d`; `d = d + μ·buf` (Nesterov) or
//! `d = buf`; `w = w − lr·d`. With `μ = 0` no buffer is kept.
//!
//! AdamW, at the parameter's step `t` (counted per parameter, as PyTorch does):
//! `w = w·(1 − lr·wd)`; `m = lerp(m, g, 1 − β1)`; `v = β2·v + (1 − β2)·g²`;
//! `w = w − (lr / (1 − β1ᵗ)) · m / (√v / √(1 − β2ᵗ) + ε)`.
//!
//! ## Speed
//!
//! On the CPU, for `f32`/`f64` parameters, each update is one fused element-wise pass per state tensor
//! written in place into the storage of the parameter's [`candle_core::Var`] (through candle's safe
//! [`InplaceOp2`]/[`InplaceOp3`] interface, which refuses aliased operands), instead of a chain of
//! allocating tensor ops followed by `Var::set`. Other devices and dtypes, or `fused: false`, use candle
//! tensor ops and `Var::set`; both paths compute the same arithmetic in the same order.
//!
//! Scalars (`lr`, `μ`, `wd`, bias corrections) are computed in `f64` and rounded to the parameter dtype
//! once, as PyTorch does; results agree with PyTorch to rounding (PyTorch may use fused multiply-adds).

use std::collections::BTreeMap;

use candle_core::backprop::GradStore;
use candle_core::{CpuStorage, DType, Device, InplaceOp2, InplaceOp3, Layout, Tensor, Var};

use crate::error::{ModelError, Result};
use crate::model::{Param, ParamRole, ParamStore};

/// An optimizer over a [`ParamStore`]; see [`Sgd`] and [`AdamW`].
pub trait Optimizer: Send + std::fmt::Debug {
    /// One update of every trainable parameter that has a gradient in `grads` (parameters without a
    /// gradient are skipped and their state is left untouched, as in PyTorch).
    fn step(&mut self, params: &ParamStore, grads: &GradStore) -> Result<()>;
    /// Current learning rate.
    fn lr(&self) -> f64;
    /// Sets the learning rate (LR schedules call this).
    fn set_lr(&mut self, lr: f64);
    /// Multiplies every per-parameter state tensor of `name` (momentum, Adam moments) by `mask`
    /// (any numeric dtype, 0/1 values, the parameter's shape). Does nothing if `name` has no state yet.
    fn mask_state(&mut self, name: &str, mask: &Tensor) -> Result<()>;
    /// Short name of the algorithm: `sgd` or `adamw`.
    fn kind(&self) -> &'static str;
    /// Hyperparameters as strings (for checkpoint metadata and reports), e.g. `momentum` → `0.9`.
    fn hyperparameters(&self) -> BTreeMap<String, String>;
    /// Number of [`Optimizer::step`] calls so far (restored by [`Optimizer::load_state`]).
    fn steps(&self) -> u64;
    /// Deep copies of the per-parameter state, named `<slot>.<param>`, sorted by name.
    fn state(&self) -> Result<Vec<(String, Tensor)>>;
    /// Replaces the whole state by `state` (as produced by [`Optimizer::state`]) and the step counter by
    /// `steps`. Every name must be a known slot of this optimizer followed by a trainable parameter of
    /// `params`, with that parameter's shape; tensors are copied to the parameter's device and dtype.
    fn load_state(
        &mut self,
        params: &ParamStore,
        state: &[(String, Tensor)],
        steps: u64,
    ) -> Result<()>;
}

/// Hyperparameters of [`Sgd`].
#[derive(Debug, Clone, PartialEq)]
pub struct SgdConfig {
    /// Learning rate (≥ 0).
    pub lr: f64,
    /// Momentum factor μ (≥ 0); 0 disables the momentum buffer.
    pub momentum: f64,
    /// Nesterov momentum (requires `momentum > 0`).
    pub nesterov: bool,
    /// L2 weight decay added to the gradient (≥ 0).
    pub weight_decay: f64,
    /// Whether weight decay also applies to biases and BatchNorm parameters (PyTorch's default: true).
    pub decay_bias_and_norm: bool,
    /// Use the fused in-place CPU update when possible (false forces candle tensor ops + `Var::set`).
    pub fused: bool,
}

impl Default for SgdConfig {
    fn default() -> Self {
        Self {
            lr: 0.01,
            momentum: 0.9,
            nesterov: false,
            weight_decay: 0.0,
            decay_bias_and_norm: true,
            fused: true,
        }
    }
}

/// Hyperparameters of [`AdamW`] (defaults are PyTorch's).
#[derive(Debug, Clone, PartialEq)]
pub struct AdamWConfig {
    /// Learning rate (≥ 0), default 1e-3.
    pub lr: f64,
    /// First-moment decay β1 in [0, 1), default 0.9.
    pub beta1: f64,
    /// Second-moment decay β2 in [0, 1), default 0.999.
    pub beta2: f64,
    /// Denominator term ε (≥ 0), default 1e-8.
    pub eps: f64,
    /// Decoupled weight decay (≥ 0), default 0.01.
    pub weight_decay: f64,
    /// Whether weight decay also applies to biases and BatchNorm parameters (PyTorch's default: true).
    pub decay_bias_and_norm: bool,
    /// Use the fused in-place CPU update when possible (false forces candle tensor ops + `Var::set`).
    pub fused: bool,
}

impl Default for AdamWConfig {
    fn default() -> Self {
        Self {
            lr: 1e-3,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 1e-2,
            decay_bias_and_norm: true,
            fused: true,
        }
    }
}

/// Which optimizer to build, with its hyperparameters.
#[derive(Debug, Clone, PartialEq)]
pub enum OptimizerConfig {
    /// Stochastic gradient descent.
    Sgd(SgdConfig),
    /// Adam with decoupled weight decay.
    AdamW(AdamWConfig),
}

impl Default for OptimizerConfig {
    fn default() -> Self {
        OptimizerConfig::Sgd(SgdConfig::default())
    }
}

impl OptimizerConfig {
    /// The base learning rate.
    pub fn lr(&self) -> f64 {
        match self {
            OptimizerConfig::Sgd(c) => c.lr,
            OptimizerConfig::AdamW(c) => c.lr,
        }
    }

    /// Short name of the algorithm: `sgd` or `adamw`.
    pub fn kind(&self) -> &'static str {
        match self {
            OptimizerConfig::Sgd(_) => "sgd",
            OptimizerConfig::AdamW(_) => "adamw",
        }
    }

    /// Checks every hyperparameter; the error names the offending field (e.g. `sgd.momentum`).
    pub fn validate(&self) -> Result<()> {
        match self {
            OptimizerConfig::Sgd(c) => {
                non_negative("sgd.lr", c.lr)?;
                non_negative("sgd.momentum", c.momentum)?;
                non_negative("sgd.weight_decay", c.weight_decay)?;
                if c.nesterov && c.momentum == 0.0 {
                    return Err(config_err(
                        "sgd.nesterov",
                        "Nesterov momentum requires momentum > 0",
                    ));
                }
            }
            OptimizerConfig::AdamW(c) => {
                non_negative("adamw.lr", c.lr)?;
                unit_interval("adamw.beta1", c.beta1)?;
                unit_interval("adamw.beta2", c.beta2)?;
                non_negative("adamw.eps", c.eps)?;
                non_negative("adamw.weight_decay", c.weight_decay)?;
            }
        }
        Ok(())
    }

    /// Validates and builds the optimizer (with empty state).
    pub fn build(&self) -> Result<Box<dyn Optimizer>> {
        Ok(match self {
            OptimizerConfig::Sgd(c) => Box::new(Sgd::new(c.clone())?),
            OptimizerConfig::AdamW(c) => Box::new(AdamW::new(c.clone())?),
        })
    }
}

fn config_err(field: &str, reason: impl Into<String>) -> ModelError {
    ModelError::Config {
        field: field.to_string(),
        reason: reason.into(),
    }
}

fn non_negative(field: &str, v: f64) -> Result<()> {
    if v.is_finite() && v >= 0.0 {
        Ok(())
    } else {
        Err(config_err(
            field,
            format!("must be finite and >= 0, got {v}"),
        ))
    }
}

fn unit_interval(field: &str, v: f64) -> Result<()> {
    if v.is_finite() && (0.0..1.0).contains(&v) {
        Ok(())
    } else {
        Err(config_err(field, format!("must be in [0, 1), got {v}")))
    }
}

/// Whether weight decay applies to a parameter of this role.
fn decays(role: ParamRole, decay_bias_and_norm: bool) -> bool {
    match role {
        ParamRole::Weight(_) => true,
        ParamRole::Bias | ParamRole::BnWeight | ParamRole::BnBias => decay_bias_and_norm,
        ParamRole::Buffer => false,
    }
}

/// The gradient of `p`, made contiguous for the fused kernels; `None` when `p` received no gradient.
fn grad_of(p: &Param, grads: &GradStore) -> Result<Option<Tensor>> {
    match grads.get(p.var.as_tensor()) {
        None => Ok(None),
        Some(g) => {
            if g.dims() != p.var.dims() {
                return Err(ModelError::Shape {
                    name: format!("gradient of {}", p.name),
                    expected: p.var.dims().to_vec(),
                    found: g.dims().to_vec(),
                });
            }
            let g = if g.dtype() == p.var.dtype() {
                g.clone()
            } else {
                g.to_dtype(p.var.dtype())?
            };
            Ok(Some(g.contiguous()?))
        }
    }
}

/// Whether the fused CPU kernels can update `var` in place.
fn fusable(var: &Var) -> bool {
    matches!(var.device(), Device::Cpu)
        && matches!(var.dtype(), DType::F32 | DType::F64)
        && var.is_contiguous()
}

/// A fresh, contiguous, unshared copy of `t` on `var`'s device and dtype.
fn owned_like(t: &Tensor, var: &Var) -> Result<Tensor> {
    Ok(t.to_device(var.device())?.to_dtype(var.dtype())?.copy()?)
}

fn mask_like(name: &str, state: &Tensor, mask: &Tensor) -> Result<Tensor> {
    if mask.dims() != state.dims() {
        return Err(ModelError::Shape {
            name: format!("mask of {name}"),
            expected: state.dims().to_vec(),
            found: mask.dims().to_vec(),
        });
    }
    Ok(mask.to_device(state.device())?.to_dtype(state.dtype())?)
}

/// Splits `<slot>.<param>` and checks the slot and the parameter.
fn parse_state_name<'a>(
    kind: &str,
    slots: &[&str],
    params: &'a ParamStore,
    name: &str,
) -> Result<(String, &'a Param)> {
    let Some((slot, pname)) = name.split_once('.') else {
        return Err(config_err(
            "optimizer state",
            format!("`{name}` is not of the form <slot>.<param>"),
        ));
    };
    if !slots.contains(&slot) {
        return Err(config_err(
            "optimizer state",
            format!(
                "`{name}`: {kind} has no state slot `{slot}` (known: {})",
                slots.join(", ")
            ),
        ));
    }
    let p = params
        .get(pname)
        .ok_or_else(|| ModelError::UnknownParam(pname.to_string()))?;
    if !p.role.trainable() {
        return Err(config_err(
            "optimizer state",
            format!("`{name}`: `{pname}` is a buffer, not a trainable parameter"),
        ));
    }
    Ok((slot.to_string(), p))
}

fn check_shape(name: &str, expected: &[usize], t: &Tensor) -> Result<()> {
    if t.dims() != expected {
        return Err(ModelError::Shape {
            name: name.to_string(),
            expected: expected.to_vec(),
            found: t.dims().to_vec(),
        });
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------------------
// Fused element-wise kernels.

/// The float types the fused kernels handle.
trait Real:
    Copy
    + std::ops::Add<Output = Self>
    + std::ops::Sub<Output = Self>
    + std::ops::Mul<Output = Self>
    + std::ops::Div<Output = Self>
{
    fn of(v: f64) -> Self;
    fn sqrt(self) -> Self;
    fn slice_mut<'a>(s: &'a mut CpuStorage, l: &Layout) -> candle_core::Result<&'a mut [Self]>;
    fn slice<'a>(s: &'a CpuStorage, l: &Layout) -> candle_core::Result<&'a [Self]>;
}

fn contiguous_range(l: &Layout) -> candle_core::Result<(usize, usize)> {
    l.contiguous_offsets().ok_or_else(|| {
        candle_core::Error::Msg("fused optimizer update needs contiguous tensors".into())
    })
}

macro_rules! impl_real {
    ($t:ty, $variant:ident) => {
        impl Real for $t {
            fn of(v: f64) -> Self {
                v as $t
            }
            fn sqrt(self) -> Self {
                <$t>::sqrt(self)
            }
            fn slice_mut<'a>(
                s: &'a mut CpuStorage,
                l: &Layout,
            ) -> candle_core::Result<&'a mut [Self]> {
                let (a, b) = contiguous_range(l)?;
                match s {
                    CpuStorage::$variant(v) => v.get_mut(a..b).ok_or_else(|| {
                        candle_core::Error::Msg("layout out of storage bounds".into())
                    }),
                    _ => Err(candle_core::Error::Msg(
                        "fused optimizer update: dtype mismatch".into(),
                    )),
                }
            }
            fn slice<'a>(s: &'a CpuStorage, l: &Layout) -> candle_core::Result<&'a [Self]> {
                let (a, b) = contiguous_range(l)?;
                match s {
                    CpuStorage::$variant(v) => v.get(a..b).ok_or_else(|| {
                        candle_core::Error::Msg("layout out of storage bounds".into())
                    }),
                    _ => Err(candle_core::Error::Msg(
                        "fused optimizer update: dtype mismatch".into(),
                    )),
                }
            }
        }
    };
}
impl_real!(f32, F32);
impl_real!(f64, F64);

/// Runs `f(dst, src)` element-wise over two same-length contiguous operands.
fn zip2<T: Real>(
    dst: &mut CpuStorage,
    dl: &Layout,
    s: &CpuStorage,
    sl: &Layout,
    f: impl Fn(T, T) -> T,
) -> candle_core::Result<()> {
    let d = T::slice_mut(dst, dl)?;
    let s = T::slice(s, sl)?;
    if d.len() != s.len() {
        candle_core::bail!("fused optimizer update: operand lengths differ");
    }
    for (x, &y) in d.iter_mut().zip(s) {
        *x = f(*x, y);
    }
    Ok(())
}

/// Runs `f(dst, a, b)` element-wise over three same-length contiguous operands.
fn zip3<T: Real>(
    dst: &mut CpuStorage,
    dl: &Layout,
    a: &CpuStorage,
    al: &Layout,
    b: &CpuStorage,
    bl: &Layout,
    f: impl Fn(T, T, T) -> T,
) -> candle_core::Result<()> {
    let d = T::slice_mut(dst, dl)?;
    let a = T::slice(a, al)?;
    let b = T::slice(b, bl)?;
    if d.len() != a.len() || d.len() != b.len() {
        candle_core::bail!("fused optimizer update: operand lengths differ");
    }
    for ((x, &y), &z) in d.iter_mut().zip(a).zip(b) {
        *x = f(*x, y, z);
    }
    Ok(())
}

macro_rules! dispatch {
    ($s:expr, $call:ident, $($args:tt)*) => {
        match $s {
            CpuStorage::F32(_) => $call::<f32>($($args)*),
            CpuStorage::F64(_) => $call::<f64>($($args)*),
            _ => Err(candle_core::Error::Msg("fused optimizer update supports f32 and f64 only".into())),
        }
    };
}

/// `state = state · mask` in place. dst = state, src = mask (same dtype).
struct MaskMul;

impl InplaceOp2 for MaskMul {
    fn name(&self) -> &'static str {
        "mask-state"
    }
    fn cpu_fwd(
        &self,
        t: &mut CpuStorage,
        tl: &Layout,
        m: &CpuStorage,
        ml: &Layout,
    ) -> candle_core::Result<()> {
        fn run<T: Real>(
            t: &mut CpuStorage,
            tl: &Layout,
            m: &CpuStorage,
            ml: &Layout,
        ) -> candle_core::Result<()> {
            zip2::<T>(t, tl, m, ml, |x, m| x * m)
        }
        dispatch!(t, run, t, tl, m, ml)
    }
}

/// `state · mask`, in place when the state is a contiguous f32/f64 CPU tensor (the optimizer owns its
/// state, so nothing else sees the write), else as a new tensor.
fn mask_state_tensor(name: &str, state: &mut Tensor, mask: &Tensor) -> Result<()> {
    let m = mask_like(name, state, mask)?;
    if state.device().is_cpu()
        && matches!(state.dtype(), DType::F32 | DType::F64)
        && state.is_contiguous()
        && m.is_contiguous()
    {
        state.inplace_op2(&m, &MaskMul)?;
    } else {
        *state = (&*state * m)?;
    }
    Ok(())
}

/// `w = w − lr·(g + wd·w)` (plain SGD, no momentum). dst = w, src = g.
struct SgdPlain {
    lr: f64,
    wd: f64,
}

impl InplaceOp2 for SgdPlain {
    fn name(&self) -> &'static str {
        "sgd-plain"
    }
    fn cpu_fwd(
        &self,
        w: &mut CpuStorage,
        wl: &Layout,
        g: &CpuStorage,
        gl: &Layout,
    ) -> candle_core::Result<()> {
        fn run<T: Real>(
            op: &SgdPlain,
            w: &mut CpuStorage,
            wl: &Layout,
            g: &CpuStorage,
            gl: &Layout,
        ) -> candle_core::Result<()> {
            let (lr, wd) = (T::of(op.lr), T::of(op.wd));
            if op.wd == 0.0 {
                zip2::<T>(w, wl, g, gl, |w, g| w - lr * g)
            } else {
                zip2::<T>(w, wl, g, gl, |w, g| w - lr * (g + wd * w))
            }
        }
        dispatch!(w, run, self, w, wl, g, gl)
    }
}

/// `buf = μ·buf + (g + wd·w)`. dst = buf, srcs = g, w.
struct SgdBuffer {
    momentum: f64,
    wd: f64,
}

impl InplaceOp3 for SgdBuffer {
    fn name(&self) -> &'static str {
        "sgd-buffer"
    }
    fn cpu_fwd(
        &self,
        buf: &mut CpuStorage,
        bl: &Layout,
        g: &CpuStorage,
        gl: &Layout,
        w: &CpuStorage,
        wl: &Layout,
    ) -> candle_core::Result<()> {
        fn run<T: Real>(
            op: &SgdBuffer,
            buf: &mut CpuStorage,
            bl: &Layout,
            g: &CpuStorage,
            gl: &Layout,
            w: &CpuStorage,
            wl: &Layout,
        ) -> candle_core::Result<()> {
            let (mu, wd) = (T::of(op.momentum), T::of(op.wd));
            if op.wd == 0.0 {
                zip3::<T>(buf, bl, g, gl, w, wl, |b, g, _| b * mu + g)
            } else {
                zip3::<T>(buf, bl, g, gl, w, wl, |b, g, w| b * mu + (g + wd * w))
            }
        }
        dispatch!(buf, run, self, buf, bl, g, gl, w, wl)
    }
}

/// The weight update after the buffer update: `w = w − lr·buf`, or with Nesterov
/// `w = w − lr·((g + wd·w) + μ·buf)`. dst = w, srcs = g, buf.
struct SgdApply {
    lr: f64,
    momentum: f64,
    wd: f64,
    nesterov: bool,
}

impl InplaceOp3 for SgdApply {
    fn name(&self) -> &'static str {
        "sgd-apply"
    }
    fn cpu_fwd(
        &self,
        w: &mut CpuStorage,
        wl: &Layout,
        g: &CpuStorage,
        gl: &Layout,
        buf: &CpuStorage,
        bl: &Layout,
    ) -> candle_core::Result<()> {
        fn run<T: Real>(
            op: &SgdApply,
            w: &mut CpuStorage,
            wl: &Layout,
            g: &CpuStorage,
            gl: &Layout,
            buf: &CpuStorage,
            bl: &Layout,
        ) -> candle_core::Result<()> {
            let (lr, mu, wd) = (T::of(op.lr), T::of(op.momentum), T::of(op.wd));
            match (op.nesterov, op.wd == 0.0) {
                (false, _) => zip3::<T>(w, wl, g, gl, buf, bl, |w, _, b| w - lr * b),
                (true, true) => zip3::<T>(w, wl, g, gl, buf, bl, |w, g, b| w - lr * (g + mu * b)),
                (true, false) => zip3::<T>(w, wl, g, gl, buf, bl, |w, g, b| {
                    w - lr * ((g + wd * w) + mu * b)
                }),
            }
        }
        dispatch!(w, run, self, w, wl, g, gl, buf, bl)
    }
}

/// PyTorch's `lerp(a, b, t)` as its CPU kernel computes it.
#[inline]
fn lerp<T: Real>(a: T, b: T, t: T, t_small: bool, one_minus_t: T) -> T {
    if t_small {
        a + t * (b - a)
    } else {
        b - (b - a) * one_minus_t
    }
}

/// `m = lerp(m, g, 1 − β1)`. dst = m, src = g.
struct AdamFirstMoment {
    beta1: f64,
}

impl InplaceOp2 for AdamFirstMoment {
    fn name(&self) -> &'static str {
        "adamw-exp-avg"
    }
    fn cpu_fwd(
        &self,
        m: &mut CpuStorage,
        ml: &Layout,
        g: &CpuStorage,
        gl: &Layout,
    ) -> candle_core::Result<()> {
        fn run<T: Real>(
            op: &AdamFirstMoment,
            m: &mut CpuStorage,
            ml: &Layout,
            g: &CpuStorage,
            gl: &Layout,
        ) -> candle_core::Result<()> {
            let weight = 1.0 - op.beta1;
            let (t, small, omt) = (T::of(weight), weight.abs() < 0.5, T::of(1.0 - weight));
            zip2::<T>(m, ml, g, gl, |m, g| lerp(m, g, t, small, omt))
        }
        dispatch!(m, run, self, m, ml, g, gl)
    }
}

/// `v = v·β2 + (1 − β2)·g·g`. dst = v, src = g.
struct AdamSecondMoment {
    beta2: f64,
}

impl InplaceOp2 for AdamSecondMoment {
    fn name(&self) -> &'static str {
        "adamw-exp-avg-sq"
    }
    fn cpu_fwd(
        &self,
        v: &mut CpuStorage,
        vl: &Layout,
        g: &CpuStorage,
        gl: &Layout,
    ) -> candle_core::Result<()> {
        fn run<T: Real>(
            op: &AdamSecondMoment,
            v: &mut CpuStorage,
            vl: &Layout,
            g: &CpuStorage,
            gl: &Layout,
        ) -> candle_core::Result<()> {
            let (b2, c) = (T::of(op.beta2), T::of(1.0 - op.beta2));
            zip2::<T>(v, vl, g, gl, |v, g| v * b2 + c * g * g)
        }
        dispatch!(v, run, self, v, vl, g, gl)
    }
}

/// `w = w·decay; w = w + (−step_size)·m / (√v / bc2_sqrt + ε)`. dst = w, srcs = m, v.
struct AdamApply {
    decay: f64,
    neg_step_size: f64,
    bc2_sqrt: f64,
    eps: f64,
}

impl InplaceOp3 for AdamApply {
    fn name(&self) -> &'static str {
        "adamw-apply"
    }
    fn cpu_fwd(
        &self,
        w: &mut CpuStorage,
        wl: &Layout,
        m: &CpuStorage,
        ml: &Layout,
        v: &CpuStorage,
        vl: &Layout,
    ) -> candle_core::Result<()> {
        fn run<T: Real>(
            op: &AdamApply,
            w: &mut CpuStorage,
            wl: &Layout,
            m: &CpuStorage,
            ml: &Layout,
            v: &CpuStorage,
            vl: &Layout,
        ) -> candle_core::Result<()> {
            let (decay, nss, bc2, eps) = (
                T::of(op.decay),
                T::of(op.neg_step_size),
                T::of(op.bc2_sqrt),
                T::of(op.eps),
            );
            zip3::<T>(w, wl, m, ml, v, vl, |w, m, v| {
                let w = w * decay;
                w + nss * m / (v.sqrt() / bc2 + eps)
            })
        }
        dispatch!(w, run, self, w, wl, m, ml, v, vl)
    }
}

// ---------------------------------------------------------------------------------------------------------
// SGD.

/// Stochastic gradient descent with PyTorch's momentum, Nesterov and weight-decay semantics (dampening 0).
#[derive(Debug)]
pub struct Sgd {
    config: SgdConfig,
    momentum_buffer: BTreeMap<String, Tensor>,
    steps: u64,
}

impl Sgd {
    /// State slot names of SGD.
    pub const SLOTS: [&'static str; 1] = ["momentum_buffer"];

    /// A new optimizer with empty state; the configuration is validated.
    pub fn new(config: SgdConfig) -> Result<Self> {
        OptimizerConfig::Sgd(config.clone()).validate()?;
        Ok(Self {
            config,
            momentum_buffer: BTreeMap::new(),
            steps: 0,
        })
    }

    /// The configuration (with the current learning rate).
    pub fn config(&self) -> &SgdConfig {
        &self.config
    }

    /// The momentum buffer of parameter `name`, if one exists yet.
    pub fn momentum_buffer(&self, name: &str) -> Option<&Tensor> {
        self.momentum_buffer.get(name)
    }

    fn step_param(&mut self, p: &Param, g: &Tensor) -> Result<()> {
        let c = &self.config;
        let wd = if decays(p.role, c.decay_bias_and_norm) {
            c.weight_decay
        } else {
            0.0
        };
        let w = p.var.as_tensor();
        let fused = c.fused && fusable(&p.var);
        if c.momentum == 0.0 {
            if fused {
                w.inplace_op2(g, &SgdPlain { lr: c.lr, wd })?;
            } else {
                let d = if wd == 0.0 {
                    g.clone()
                } else {
                    (g + (w * wd)?)?
                };
                p.var.set(&(w - (d * c.lr)?)?)?;
            }
            return Ok(());
        }
        match self.momentum_buffer.get(&p.name) {
            Some(buf) if fused && buf.is_contiguous() => {
                buf.inplace_op3(
                    g,
                    w,
                    &SgdBuffer {
                        momentum: c.momentum,
                        wd,
                    },
                )?;
                let apply = SgdApply {
                    lr: c.lr,
                    momentum: c.momentum,
                    wd,
                    nesterov: c.nesterov,
                };
                w.inplace_op3(g, buf, &apply)?;
            }
            existing => {
                let d = if wd == 0.0 {
                    g.clone()
                } else {
                    (g + (w * wd)?)?
                };
                let buf = match existing {
                    Some(buf) => ((buf * c.momentum)? + &d)?,
                    // The first buffer is `d` itself (own storage: it is updated in place later).
                    None => d.copy()?,
                };
                let d = if c.nesterov {
                    (d + (&buf * c.momentum)?)?
                } else {
                    buf.clone()
                };
                p.var.set(&(w - (d * c.lr)?)?)?;
                self.momentum_buffer.insert(p.name.clone(), buf);
            }
        }
        Ok(())
    }
}

impl Optimizer for Sgd {
    fn step(&mut self, params: &ParamStore, grads: &GradStore) -> Result<()> {
        for p in params.trainable() {
            if let Some(g) = grad_of(p, grads)? {
                self.step_param(p, &g)?;
            }
        }
        self.steps += 1;
        Ok(())
    }

    fn lr(&self) -> f64 {
        self.config.lr
    }

    fn set_lr(&mut self, lr: f64) {
        self.config.lr = lr;
    }

    fn mask_state(&mut self, name: &str, mask: &Tensor) -> Result<()> {
        if let Some(buf) = self.momentum_buffer.get_mut(name) {
            mask_state_tensor(name, buf, mask)?;
        }
        Ok(())
    }

    fn kind(&self) -> &'static str {
        "sgd"
    }

    fn hyperparameters(&self) -> BTreeMap<String, String> {
        let c = &self.config;
        BTreeMap::from([
            ("lr".to_string(), c.lr.to_string()),
            ("momentum".to_string(), c.momentum.to_string()),
            ("nesterov".to_string(), c.nesterov.to_string()),
            ("weight_decay".to_string(), c.weight_decay.to_string()),
            (
                "decay_bias_and_norm".to_string(),
                c.decay_bias_and_norm.to_string(),
            ),
        ])
    }

    fn steps(&self) -> u64 {
        self.steps
    }

    fn state(&self) -> Result<Vec<(String, Tensor)>> {
        self.momentum_buffer
            .iter()
            .map(|(n, t)| Ok((format!("momentum_buffer.{n}"), t.copy()?)))
            .collect()
    }

    fn load_state(
        &mut self,
        params: &ParamStore,
        state: &[(String, Tensor)],
        steps: u64,
    ) -> Result<()> {
        let mut buffers = BTreeMap::new();
        for (name, t) in state {
            let (_, p) = parse_state_name("sgd", &Self::SLOTS, params, name)?;
            check_shape(name, p.var.dims(), t)?;
            buffers.insert(p.name.clone(), owned_like(t, &p.var)?);
        }
        self.momentum_buffer = buffers;
        self.steps = steps;
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------------------
// AdamW.

/// Adam with decoupled weight decay, PyTorch's `torch.optim.AdamW` (no AMSGrad).
#[derive(Debug)]
pub struct AdamW {
    config: AdamWConfig,
    exp_avg: BTreeMap<String, Tensor>,
    exp_avg_sq: BTreeMap<String, Tensor>,
    param_steps: BTreeMap<String, u64>,
    steps: u64,
}

impl AdamW {
    /// State slot names of AdamW.
    pub const SLOTS: [&'static str; 3] = ["exp_avg", "exp_avg_sq", "step"];

    /// A new optimizer with empty state; the configuration is validated.
    pub fn new(config: AdamWConfig) -> Result<Self> {
        OptimizerConfig::AdamW(config.clone()).validate()?;
        Ok(Self {
            config,
            exp_avg: BTreeMap::new(),
            exp_avg_sq: BTreeMap::new(),
            param_steps: BTreeMap::new(),
            steps: 0,
        })
    }

    /// The configuration (with the current learning rate).
    pub fn config(&self) -> &AdamWConfig {
        &self.config
    }

    /// First moment, second moment and step count of parameter `name`, if it has state yet.
    pub fn moments(&self, name: &str) -> Option<(&Tensor, &Tensor, u64)> {
        Some((
            self.exp_avg.get(name)?,
            self.exp_avg_sq.get(name)?,
            *self.param_steps.get(name)?,
        ))
    }

    fn step_param(&mut self, p: &Param, g: &Tensor) -> Result<()> {
        let c = &self.config;
        let w = p.var.as_tensor();
        let wd = if decays(p.role, c.decay_bias_and_norm) {
            c.weight_decay
        } else {
            0.0
        };
        let (m, v) = match (self.exp_avg.get(&p.name), self.exp_avg_sq.get(&p.name)) {
            (Some(m), Some(v)) => (m.clone(), v.clone()),
            _ => (w.zeros_like()?, w.zeros_like()?),
        };
        let t = self.param_steps.get(&p.name).copied().unwrap_or(0) + 1;
        let bc1 = 1.0 - c.beta1.powf(t as f64);
        let bc2 = 1.0 - c.beta2.powf(t as f64);
        let apply = AdamApply {
            decay: 1.0 - c.lr * wd,
            neg_step_size: -(c.lr / bc1),
            bc2_sqrt: bc2.powf(0.5),
            eps: c.eps,
        };
        let fused = c.fused && fusable(&p.var) && m.is_contiguous() && v.is_contiguous();
        if fused {
            m.inplace_op2(g, &AdamFirstMoment { beta1: c.beta1 })?;
            v.inplace_op2(g, &AdamSecondMoment { beta2: c.beta2 })?;
            w.inplace_op3(&m, &v, &apply)?;
            self.exp_avg.insert(p.name.clone(), m);
            self.exp_avg_sq.insert(p.name.clone(), v);
        } else {
            let weight = 1.0 - c.beta1;
            let m = if weight.abs() < 0.5 {
                (&m + ((g - &m)? * weight)?)?
            } else {
                (g - ((g - &m)? * (1.0 - weight))?)?
            };
            let v = ((&v * c.beta2)? + ((g * (1.0 - c.beta2))? * g)?)?;
            let decayed = (w * apply.decay)?;
            let denom = ((v.sqrt()? / apply.bc2_sqrt)? + apply.eps)?;
            let upd = ((&m * apply.neg_step_size)? / denom)?;
            p.var.set(&(decayed + upd)?)?;
            self.exp_avg.insert(p.name.clone(), m);
            self.exp_avg_sq.insert(p.name.clone(), v);
        }
        self.param_steps.insert(p.name.clone(), t);
        Ok(())
    }
}

impl Optimizer for AdamW {
    fn step(&mut self, params: &ParamStore, grads: &GradStore) -> Result<()> {
        for p in params.trainable() {
            if let Some(g) = grad_of(p, grads)? {
                self.step_param(p, &g)?;
            }
        }
        self.steps += 1;
        Ok(())
    }

    fn lr(&self) -> f64 {
        self.config.lr
    }

    fn set_lr(&mut self, lr: f64) {
        self.config.lr = lr;
    }

    fn mask_state(&mut self, name: &str, mask: &Tensor) -> Result<()> {
        for map in [&mut self.exp_avg, &mut self.exp_avg_sq] {
            if let Some(t) = map.get_mut(name) {
                mask_state_tensor(name, t, mask)?;
            }
        }
        Ok(())
    }

    fn kind(&self) -> &'static str {
        "adamw"
    }

    fn hyperparameters(&self) -> BTreeMap<String, String> {
        let c = &self.config;
        BTreeMap::from([
            ("lr".to_string(), c.lr.to_string()),
            ("beta1".to_string(), c.beta1.to_string()),
            ("beta2".to_string(), c.beta2.to_string()),
            ("eps".to_string(), c.eps.to_string()),
            ("weight_decay".to_string(), c.weight_decay.to_string()),
            (
                "decay_bias_and_norm".to_string(),
                c.decay_bias_and_norm.to_string(),
            ),
        ])
    }

    fn steps(&self) -> u64 {
        self.steps
    }

    fn state(&self) -> Result<Vec<(String, Tensor)>> {
        let mut out = Vec::with_capacity(3 * self.exp_avg.len());
        for (n, t) in &self.exp_avg {
            out.push((format!("exp_avg.{n}"), t.copy()?));
        }
        for (n, t) in &self.exp_avg_sq {
            out.push((format!("exp_avg_sq.{n}"), t.copy()?));
        }
        for (n, &s) in &self.param_steps {
            let s =
                i64::try_from(s).map_err(|_| config_err("adamw.step", "step count exceeds i64"))?;
            out.push((format!("step.{n}"), Tensor::new(s, &Device::Cpu)?));
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }

    fn load_state(
        &mut self,
        params: &ParamStore,
        state: &[(String, Tensor)],
        steps: u64,
    ) -> Result<()> {
        let mut exp_avg = BTreeMap::new();
        let mut exp_avg_sq = BTreeMap::new();
        let mut param_steps = BTreeMap::new();
        for (name, t) in state {
            let (slot, p) = parse_state_name("adamw", &Self::SLOTS, params, name)?;
            if slot == "step" {
                let s = t.to_dtype(DType::F64)?.flatten_all()?.to_vec1::<f64>()?;
                let [s] = s.as_slice() else {
                    return Err(config_err(
                        "optimizer state",
                        format!("`{name}` must hold one number"),
                    ));
                };
                if !(s.is_finite() && *s >= 0.0 && s.fract() == 0.0) {
                    return Err(config_err(
                        "optimizer state",
                        format!("`{name}` = {s} is not a step count"),
                    ));
                }
                param_steps.insert(p.name.clone(), *s as u64);
                continue;
            }
            check_shape(name, p.var.dims(), t)?;
            let t = owned_like(t, &p.var)?;
            if slot == "exp_avg" {
                exp_avg.insert(p.name.clone(), t);
            } else {
                exp_avg_sq.insert(p.name.clone(), t);
            }
        }
        for name in exp_avg
            .keys()
            .chain(exp_avg_sq.keys())
            .chain(param_steps.keys())
        {
            if !(exp_avg.contains_key(name)
                && exp_avg_sq.contains_key(name)
                && param_steps.contains_key(name))
            {
                return Err(config_err(
                    "optimizer state",
                    format!("`{name}` needs exp_avg, exp_avg_sq and step together"),
                ));
            }
        }
        self.exp_avg = exp_avg;
        self.exp_avg_sq = exp_avg_sq;
        self.param_steps = param_steps;
        self.steps = steps;
        Ok(())
    }
}
