//! Sparsity-inducing regularizers and their proximal / projection operators (seed 003,
//! Lab 1): L1 penalty and subgradient, soft thresholding (the proximal operator of
//! `thr · ‖w‖₁`), trimmed L1 (penalty on the `k` smallest magnitudes only) and the
//! projection onto `‖w‖₀ <= k`.
//!
//! Every function keeps the dtype, shape and device of its input. Elements that an
//! operator sets to zero are exactly `+0.0`. Ties in magnitude are broken by flat index
//! (the lower index counts as smaller), so results are deterministic.

use candle_core::{DType, Tensor};

use crate::error::{Result, SparsityError};

fn check_nonneg(field: &'static str, v: f64) -> Result<()> {
    if v.is_finite() && v >= 0.0 {
        Ok(())
    } else {
        Err(SparsityError::InvalidParameter {
            field,
            value: v.to_string(),
            reason: "must be finite and >= 0",
        })
    }
}

/// `lambda · Σ|w|` as a scalar tensor; differentiable through candle's autograd.
pub fn l1_penalty(w: &Tensor, lambda: f64) -> Result<Tensor> {
    check_nonneg("l1_penalty lambda", lambda)?;
    Ok(w.abs()?.sum_all()?.affine(lambda, 0.0)?)
}

/// `lambda · sign(w)` (with `sign(0) = 0`): the subgradient of [`l1_penalty`] that plain
/// gradient descent on `L + λ‖w‖₁` adds to the loss gradient.
pub fn l1_subgradient(w: &Tensor, lambda: f64) -> Result<Tensor> {
    check_nonneg("l1_subgradient lambda", lambda)?;
    Ok(w.sign()?.affine(lambda, 0.0)?)
}

/// Soft thresholding `sign(w) · max(|w| − thr, 0)`, the proximal operator of
/// `thr · ‖w‖₁` (a gradient step with rate `μ` on `L + λ‖w‖₁` corresponds to
/// `thr = μλ`).
pub fn soft_threshold(w: &Tensor, thr: f64) -> Result<Tensor> {
    check_nonneg("soft_threshold threshold", thr)?;
    let shrunk = w.abs()?.affine(1.0, -thr)?.relu()?;
    // Select instead of multiplying so that zeros are +0.0, never -0.0.
    let keep = shrunk.gt(0.0)?;
    Ok(keep.where_cond(&w.sign()?.mul(&shrunk)?, &w.zeros_like()?)?)
}

/// Flat indices flagged `true` for the `k` smallest magnitudes of `w` (ties: lower index
/// first). `k` larger than the element count flags everything.
pub fn smallest_k(w: &Tensor, k: usize) -> Result<Vec<bool>> {
    let v = w.flatten_all()?.to_dtype(DType::F64)?.to_vec1::<f64>()?;
    if let Some(i) = v.iter().position(|x| x.is_nan()) {
        return Err(SparsityError::NonFinite {
            name: "regularizer input".into(),
            index: i,
        });
    }
    let mut order: Vec<usize> = (0..v.len()).collect();
    order.sort_by(|a, b| v[*a].abs().total_cmp(&v[*b].abs()).then(a.cmp(b)));
    let mut flags = vec![false; v.len()];
    for i in order.into_iter().take(k) {
        flags[i] = true;
    }
    Ok(flags)
}

fn flags_tensor(w: &Tensor, flags: &[bool]) -> Result<Tensor> {
    let v: Vec<u8> = flags.iter().map(|f| u8::from(*f)).collect();
    Ok(Tensor::from_vec(v, w.dims(), &candle_core::Device::Cpu)?.to_device(w.device())?)
}

/// Trimmed L1: `lambda · Σ_{i ∈ k smallest} |w_i|`, a scalar tensor, differentiable with
/// respect to `w` (the set of the `k` smallest is taken at the current value).
pub fn trimmed_l1_penalty(w: &Tensor, lambda: f64, k: usize) -> Result<Tensor> {
    check_nonneg("trimmed_l1_penalty lambda", lambda)?;
    let sel = flags_tensor(w, &smallest_k(w, k)?)?;
    let picked = sel.where_cond(&w.abs()?, &w.zeros_like()?)?;
    Ok(picked.sum_all()?.affine(lambda, 0.0)?)
}

/// The proximal step of trimmed L1: soft thresholding by `thr` applied to the `k`
/// smallest magnitudes only; the other elements are returned unchanged (seed 003 Lab 1
/// (f): "ℓ1 with strength λ on the 3 elements of W with the smallest absolute value").
pub fn trimmed_soft_threshold(w: &Tensor, thr: f64, k: usize) -> Result<Tensor> {
    let sel = flags_tensor(w, &smallest_k(w, k)?)?;
    Ok(sel.where_cond(&soft_threshold(w, thr)?, w)?)
}

/// Euclidean projection onto `{‖w‖₀ <= k}`: keep the `k` largest magnitudes (ties: the
/// lower index wins), set the rest to exactly `+0.0`.
pub fn project_l0(w: &Tensor, k: usize) -> Result<Tensor> {
    let n = w.elem_count();
    let drop = smallest_k(w, n.saturating_sub(k))?;
    let keep: Vec<bool> = drop.iter().map(|d| !d).collect();
    let cond = flags_tensor(w, &keep)?;
    Ok(cond.where_cond(w, &w.zeros_like()?)?)
}
