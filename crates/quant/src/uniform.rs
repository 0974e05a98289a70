//! Uniform (fixed-point) quantizers and the straight-through estimator.
//!
//! Two families, both *simulated* quantization (values stay `f32`):
//!
//! * **Range quantization** (seed 002, post-training): with half-range `q`
//!   and `l` bits, `Δ = 2q / 2^l` and
//!   `w_q = clip(Δ · round(w / Δ), -q, q - Δ)`, i.e. `2^l` levels
//!   `-q, -q + Δ, …, q - Δ`. Per tensor ([`range_quantize`]) or with one `q`
//!   per output channel ([`range_quantize_per_channel`], e.g. from
//!   [`channel_max_abs`]).
//! * **Dynamic-scaling (min/max) quantization** (seed 003, for
//!   quantization-aware training): `α = max - min`, `β = min`,
//!   `w_s = (w - β)/α`, `R = round((2^b - 1) w_s) / (2^b - 1)`, `w_q = αR + β`.
//!   `keep_zeros` restores the zeros of a pruned tensor afterwards
//!   (the seed's bonus variant). `b = 0` gives all zeros (as in the seed);
//!   a constant tensor (`α = 0`, where the formula divides by zero) is returned
//!   unchanged, since it is already representable.
//!
//! Rounding is half-to-even, like `torch.round` / `np.round`, and every step is
//! computed in `f32` in the same order as the seeds' PyTorch code, so results
//! match them bit for bit (see the tests).
//!
//! [`ste`] and [`ste_range`] wrap the quantizers for training: the forward
//! value is exactly the quantized tensor, the backward pass is the identity
//! (`q + (w - w.detach())`, equivalent to the usual `w + (q - w).detach()` but
//! without its last-ulp rounding error in the forward value).
//!
//! Mixed precision is a matter of choosing `bits` per layer, see
//! [`crate::plan::BitPlan`].

use crate::error::{QuantError, Result};
use crate::kmeans::check_finite;
use crate::share::tensor_to_f32_vec;
use candle_core::{DType, Tensor};

/// Bit widths accepted by the range quantizer.
pub const RANGE_BITS: std::ops::RangeInclusive<u8> = 1..=16;
/// Bit widths accepted by the min/max quantizer (0 = all zeros).
pub const MINMAX_BITS: std::ops::RangeInclusive<u8> = 0..=16;

fn check_bits(what: &'static str, bits: u8, range: &std::ops::RangeInclusive<u8>) -> Result<()> {
    if range.contains(&bits) {
        Ok(())
    } else {
        Err(QuantError::InvalidBits {
            what,
            bits,
            min: *range.start(),
            max: *range.end(),
        })
    }
}

fn check_q(q: f32) -> Result<()> {
    if q.is_finite() && q > 0.0 {
        Ok(())
    } else {
        Err(QuantError::InvalidParam {
            name: "q",
            value: q.to_string(),
            reason: "the quantization half-range must be finite and positive",
        })
    }
}

/// Range quantization of a slice (see the module docs). Errors: `q` not
/// finite and positive, `bits` outside `1..=16`, a non-finite weight.
pub fn range_quantize_slice(w: &[f32], q: f32, bits: u8) -> Result<Vec<f32>> {
    check_bits("range-quantization bits", bits, &RANGE_BITS)?;
    check_q(q)?;
    check_finite("weights", w)?;
    Ok(range_kernel(w, q, bits))
}

fn range_kernel(w: &[f32], q: f32, bits: u8) -> Vec<f32> {
    let n_levels = (1u32 << bits) as f64;
    let delta = (2.0 * f64::from(q) / n_levels) as f32;
    let lo = -q;
    let hi = (f64::from(q) - f64::from(delta)) as f32;
    w.iter()
        .map(|&x| (delta * (x / delta).round_ties_even()).max(lo).min(hi))
        .collect()
}

/// Range quantization of a tensor with one half-range `q` for all elements.
/// The result has the input's shape, dtype and device.
pub fn range_quantize(w: &Tensor, q: f32, bits: u8) -> Result<Tensor> {
    let v = tensor_to_f32_vec(w)?;
    let out = range_quantize_slice(&v, q, bits)?;
    like(w, out)
}

/// Range quantization with one half-range per output channel (dimension 0):
/// `qs.len()` must equal `w.dims()[0]`.
pub fn range_quantize_per_channel(w: &Tensor, qs: &[f32], bits: u8) -> Result<Tensor> {
    check_bits("range-quantization bits", bits, &RANGE_BITS)?;
    let channels = out_channels(w)?;
    if qs.len() != channels {
        return Err(QuantError::LengthMismatch {
            what: "per-channel q",
            expected: channels,
            got: qs.len(),
        });
    }
    for &q in qs {
        check_q(q)?;
    }
    let v = tensor_to_f32_vec(w)?;
    check_finite("weights", &v)?;
    let per = v.len().checked_div(channels).unwrap_or(0);
    let mut out = Vec::with_capacity(v.len());
    for (row, &q) in v.chunks(per.max(1)).zip(qs) {
        out.extend(range_kernel(row, q, bits));
    }
    like(w, out)
}

/// Largest absolute value of each output channel (dimension 0), a natural
/// per-channel `q`. A channel of all zeros gets the smallest positive normal
/// `f32` so that it remains a valid `q`.
pub fn channel_max_abs(w: &Tensor) -> Result<Vec<f32>> {
    let channels = out_channels(w)?;
    let v = tensor_to_f32_vec(w)?;
    check_finite("weights", &v)?;
    let per = v.len().checked_div(channels).unwrap_or(0);
    if per == 0 {
        return Ok(vec![f32::MIN_POSITIVE; channels]);
    }
    Ok(v.chunks(per)
        .map(|row| row.iter().fold(f32::MIN_POSITIVE, |m, &x| m.max(x.abs())))
        .collect())
}

/// Dynamic-scaling (min/max) quantization of a slice (see the module docs).
/// Zeros restored by `keep_zeros` are `+0.0`. Errors: `bits > 16`, a
/// non-finite weight.
pub fn minmax_quantize_slice(w: &[f32], bits: u8, keep_zeros: bool) -> Result<Vec<f32>> {
    check_bits("min/max-quantization bits", bits, &MINMAX_BITS)?;
    check_finite("weights", w)?;
    Ok(minmax_kernel(w, bits, keep_zeros))
}

fn minmax_kernel(w: &[f32], bits: u8, keep_zeros: bool) -> Vec<f32> {
    if bits == 0 {
        return vec![0.0; w.len()];
    }
    let (mn, mx) = w
        .iter()
        .fold((f32::INFINITY, f32::NEG_INFINITY), |(a, b), &x| {
            (a.min(x), b.max(x))
        });
    let alpha = mx - mn;
    let beta = mn;
    // An empty or constant tensor (or a range overflowing f32) is returned
    // unchanged: the formula would divide by zero / infinity.
    if w.is_empty() || alpha == 0.0 || !alpha.is_finite() {
        return w.to_vec();
    }
    let step = ((1u32 << bits) - 1) as f32;
    w.iter()
        .map(|&x| {
            if keep_zeros && x == 0.0 {
                return 0.0;
            }
            let ws = (x - beta) / alpha;
            let r = (ws * step).round_ties_even() / step;
            r * alpha + beta
        })
        .collect()
}

/// Dynamic-scaling quantization of a whole tensor (one `α`, `β`).
pub fn minmax_quantize(w: &Tensor, bits: u8, keep_zeros: bool) -> Result<Tensor> {
    let v = tensor_to_f32_vec(w)?;
    let out = minmax_quantize_slice(&v, bits, keep_zeros)?;
    like(w, out)
}

/// Dynamic-scaling quantization with one `α`, `β` per output channel
/// (dimension 0).
pub fn minmax_quantize_per_channel(w: &Tensor, bits: u8, keep_zeros: bool) -> Result<Tensor> {
    check_bits("min/max-quantization bits", bits, &MINMAX_BITS)?;
    let channels = out_channels(w)?;
    let v = tensor_to_f32_vec(w)?;
    check_finite("weights", &v)?;
    let per = v.len().checked_div(channels).unwrap_or(0);
    let mut out = Vec::with_capacity(v.len());
    for row in v.chunks(per.max(1)) {
        out.extend(minmax_kernel(row, bits, keep_zeros));
    }
    like(w, out)
}

/// Straight-through estimator around the min/max quantizer (seed 003's
/// `STE`): the forward value is `minmax_quantize(w, bits, keep_zeros)`, the
/// gradient w.r.t. `w` is the identity.
pub fn ste(w: &Tensor, bits: u8, keep_zeros: bool) -> Result<Tensor> {
    let q = minmax_quantize(&w.detach(), bits, keep_zeros)?;
    straight_through(w, &q)
}

/// Straight-through estimator around the range quantizer.
pub fn ste_range(w: &Tensor, q: f32, bits: u8) -> Result<Tensor> {
    let wq = range_quantize(&w.detach(), q, bits)?;
    straight_through(w, &wq)
}

/// `quantized + (w - w.detach())`: forward value `quantized` (exactly, since
/// `w - w = 0` for finite `w`), gradient w.r.t. `w` the identity. Shapes must
/// match.
pub fn straight_through(w: &Tensor, quantized: &Tensor) -> Result<Tensor> {
    if w.dims() != quantized.dims() {
        return Err(QuantError::InvalidShape {
            what: "quantized tensor",
            dims: quantized.dims().to_vec(),
            reason: "must have the same shape as the float weights",
        });
    }
    let zero_with_grad = (w - w.detach())?;
    Ok(quantized
        .detach()
        .to_dtype(w.dtype())?
        .add(&zero_with_grad)?)
}

fn out_channels(w: &Tensor) -> Result<usize> {
    match w.dims().first() {
        Some(&c) => Ok(c),
        None => Err(QuantError::InvalidShape {
            what: "weights",
            dims: Vec::new(),
            reason: "per-channel quantization needs at least one dimension",
        }),
    }
}

/// A tensor with `w`'s shape, dtype and device holding `data`.
fn like(w: &Tensor, data: Vec<f32>) -> Result<Tensor> {
    let t = Tensor::from_vec(data, w.shape(), w.device())?;
    Ok(if w.dtype() == DType::F32 {
        t
    } else {
        t.to_dtype(w.dtype())?
    })
}

/// How the half-range `q` of the range quantizer is chosen for [`range_codes`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum RangeScale {
    /// One fixed `q` for every group (seed 002's post-training quantization).
    Fixed(f32),
    /// `q = max |w|` over the kept weights of each group: min/max scaling (seed 004) and the dynamic
    /// scaling of quantization-aware training (seed 003). A group without a kept nonzero weight gets
    /// `q = 1` (all its values are zero anyway).
    MaxAbs,
}

/// The range quantizer as integer codes: what a compressed file stores.
///
/// Element `i` of group `g` (groups are equal consecutive slices: one for per-tensor quantization, one
/// per output channel) is `levels[i] · steps[g]`, with `steps[g] = Δ = 2q / 2^bits` and
/// `levels[i] ∈ [-2^(bits-1), 2^(bits-1) - 1]`. `values[i]` holds that product in `f32`; it equals
/// seed 002's `clip(Δ · round(w / Δ), -q, q - Δ)` (the product of an integer and `Δ` is rounded once,
/// and `q - Δ` is exactly `(2^(bits-1) - 1) · Δ`), except that a zero is always `+0.0`. Weights that are
/// not kept are `+0.0` with level 0.
#[derive(Debug, Clone, PartialEq)]
pub struct RangeCodes {
    /// Bits per code.
    pub bits: u8,
    /// `Δ` of each group.
    pub steps: Vec<f32>,
    /// Signed level of every element.
    pub levels: Vec<i32>,
    /// Quantized value of every element.
    pub values: Vec<f32>,
}

impl RangeCodes {
    /// Offset between a signed level and its unsigned code: `2^(bits-1)`.
    pub fn offset(&self) -> i32 {
        1i32 << (self.bits - 1)
    }

    /// The unsigned code `level + 2^(bits-1)` in `0..2^bits` of element `i`.
    pub fn code(&self, i: usize) -> u32 {
        (self.levels[i] + self.offset()) as u32
    }

    /// The `2^bits` grid values `k · step` for `k = -2^(bits-1) .. 2^(bits-1) - 1`, ascending: the
    /// codebook of a per-tensor quantized layer, indexed by [`Self::code`].
    pub fn grid(&self, step: f32) -> Vec<f32> {
        let h = self.offset();
        (-h..h).map(|k| k as f32 * step).collect()
    }
}

/// Range quantization of `w` in `groups` equal consecutive groups (1: per tensor; the number of output
/// channels: per channel), only at positions where `keep` is true (all when `None`), as integer codes
/// (see [`RangeCodes`]). Errors: `bits` outside `1..=16`, a fixed `q` that is not finite and positive,
/// `groups` not dividing the length, `keep` of another length, a non-finite weight.
pub fn range_codes(
    w: &[f32],
    keep: Option<&[bool]>,
    groups: usize,
    bits: u8,
    scale: RangeScale,
) -> Result<RangeCodes> {
    check_bits("range-quantization bits", bits, &RANGE_BITS)?;
    if let RangeScale::Fixed(q) = scale {
        check_q(q)?;
    }
    check_finite("weights", w)?;
    if let Some(k) = keep {
        if k.len() != w.len() {
            return Err(QuantError::LengthMismatch {
                what: "keep mask",
                expected: w.len(),
                got: k.len(),
            });
        }
    }
    if groups == 0 || !w.len().is_multiple_of(groups) {
        return Err(QuantError::InvalidParam {
            name: "groups",
            value: groups.to_string(),
            reason: "must be at least 1 and divide the number of weights",
        });
    }
    let kept = |i: usize| keep.is_none_or(|k| k[i]);
    let per = w.len() / groups;
    let n_levels = f64::from(1u32 << bits);
    let h = 1i32 << (bits - 1);
    let mut steps = Vec::with_capacity(groups);
    let mut levels = vec![0i32; w.len()];
    let mut values = vec![0.0f32; w.len()];
    for g in 0..groups {
        let range = g * per..(g + 1) * per;
        let q = match scale {
            RangeScale::Fixed(q) => q,
            RangeScale::MaxAbs => range
                .clone()
                .filter(|&i| kept(i))
                .fold(0.0f32, |m, i| m.max(w[i].abs())),
        };
        let mut delta = (2.0 * f64::from(q) / n_levels) as f32;
        if !(delta.is_normal() && delta > 0.0) {
            delta = (2.0 / n_levels) as f32;
        }
        steps.push(delta);
        for i in range {
            if !kept(i) {
                continue;
            }
            let k = (w[i] / delta)
                .round_ties_even()
                .clamp(-(h as f32), (h - 1) as f32) as i32;
            levels[i] = k;
            values[i] = k as f32 * delta;
        }
    }
    Ok(RangeCodes {
        bits,
        steps,
        levels,
        values,
    })
}
