//! Train-mode batch normalization (PyTorch `nn.BatchNorm1d` / `nn.BatchNorm2d` with batch
//! statistics) as one fused candle custom op on (x, γ, β).
//!
//! With M = N·H·W values per channel, the batch mean μ and the biased variance σ² are accumulated in
//! f64 (two passes over each channel, which stay in cache between them), and
//!
//! - forward:  `y = (x − μ)·γ/√(σ² + ε) + β`;
//! - backward: with `x̂ = (x − μ)/√(σ² + ε)`, `dβ = Σ dy`, `dγ = Σ dy·x̂` and
//!   `dx = γ/√(σ² + ε) · (dy − dβ/M − x̂·dγ/M)`.
//!
//! The statistics are computed before the op runs and travel inside it to the backward pass, so
//! nothing but the input is kept for backward and the caller gets μ and σ² for the running averages
//! ([`BatchStats`]). Per-channel sums split the channels between threads; the elementwise passes split
//! the batch.

use std::mem::MaybeUninit;
use std::sync::Arc;

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp2, CustomOp3, DType, Layout, Shape, Tensor};
use rayon::prelude::*;

use super::{buffer, contiguous, multiversion, tensor, threads, with_cpu, Elem};
use crate::error::{ModelError, Result};

const NAME: &str = "deepcomp-batch-norm";

/// Elements below which a pass runs on the calling thread.
const PARALLEL_WORK: usize = 1 << 15;

/// The batch statistics of one train-mode forward pass, per channel.
#[derive(Debug, Clone, PartialEq)]
pub struct BatchStats {
    /// Batch mean μ of each channel.
    pub mean: Vec<f64>,
    /// Biased batch variance σ² (divided by `count`) of each channel: what the forward normalizes
    /// with.
    pub var: Vec<f64>,
    /// Values per channel, M = N·H·W.
    pub count: usize,
}

impl BatchStats {
    /// The unbiased variance `σ²·M/(M − 1)` that PyTorch folds into `running_var` (equal to the biased
    /// one when M = 1).
    pub fn unbiased_var(&self) -> Vec<f64> {
        let f = if self.count > 1 {
            self.count as f64 / (self.count - 1) as f64
        } else {
            1.0
        };
        self.var.iter().map(|v| v * f).collect()
    }
}

/// Input geometry: `n` rows of `c` channels of `s` contiguous values each (s = H·W, or 1 for (N, C)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Geom {
    pub(crate) n: usize,
    pub(crate) c: usize,
    pub(crate) s: usize,
}

impl Geom {
    fn len(&self) -> usize {
        self.n * self.c * self.s
    }

    pub(crate) fn count(&self) -> usize {
        self.n * self.s
    }

    fn parallel(&self) -> bool {
        threads() > 1 && self.len() >= PARALLEL_WORK
    }

    /// Batch rows per rayon task in the elementwise passes.
    fn rows_per_task(&self) -> usize {
        (PARALLEL_WORK / 4 / (self.c * self.s).max(1)).max(1)
    }
}

/// Per-channel statistics and the scale/shift derived from them, as the ops use them.
#[derive(Debug)]
pub(crate) struct Stats {
    pub(crate) mean: Vec<f64>,
    pub(crate) var: Vec<f64>,
    invstd: Vec<f64>,
}

multiversion! {
/// Σ of `v` in f64, with eight independent accumulators (vectorizes, and is more accurate than one).
fn sum<T: Elem>(v: &[T]) -> f64 {
    let mut acc = [0f64; 8];
    let chunks = v.chunks_exact(8);
    let rest = chunks.remainder();
    for ch in chunks {
        for (a, &x) in acc.iter_mut().zip(ch) {
            *a += x.to_f64();
        }
    }
    rest.iter().map(|x| x.to_f64()).sum::<f64>() + acc.iter().sum::<f64>()
}
}

multiversion! {
/// Σ (v − mean)² in f64.
fn sum_sq_dev<T: Elem>(v: &[T], mean: f64) -> f64 {
    let mut acc = [0f64; 8];
    let chunks = v.chunks_exact(8);
    let rest = chunks.remainder();
    for ch in chunks {
        for (a, &x) in acc.iter_mut().zip(ch) {
            let d = x.to_f64() - mean;
            *a += d * d;
        }
    }
    rest.iter()
        .map(|x| (x.to_f64() - mean).powi(2))
        .sum::<f64>()
        + acc.iter().sum::<f64>()
}
}

multiversion! {
/// (Σ dy, Σ dy·(x − mean)) in f64.
fn sum_dy_dot<T: Elem>(dy: &[T], x: &[T], mean: f64) -> (f64, f64) {
    let (mut a, mut b) = ([0f64; 8], [0f64; 8]);
    let (dyc, xc) = (dy.chunks_exact(8), x.chunks_exact(8));
    let (dyr, xr) = (dyc.remainder(), xc.remainder());
    for (d8, x8) in dyc.zip(xc) {
        for i in 0..8 {
            let d = d8[i].to_f64();
            a[i] += d;
            b[i] += d * (x8[i].to_f64() - mean);
        }
    }
    let (mut sa, mut sb) = (a.iter().sum::<f64>(), b.iter().sum::<f64>());
    for (&d, &xv) in dyr.iter().zip(xr) {
        sa += d.to_f64();
        sb += d.to_f64() * (xv.to_f64() - mean);
    }
    (sa, sb)
}
}

/// Runs `f(channel)` for every channel, on several threads when the input is large.
fn per_channel<R: Send>(g: &Geom, f: impl Fn(usize) -> R + Sync + Send) -> Vec<R> {
    if g.parallel() {
        (0..g.c).into_par_iter().map(f).collect()
    } else {
        (0..g.c).map(f).collect()
    }
}

/// The `n` segments of channel `ch` in `v`.
fn segments<T>(v: &[T], g: Geom, ch: usize) -> impl Iterator<Item = &[T]> {
    v.chunks_exact(g.c * g.s)
        .map(move |row| &row[ch * g.s..(ch + 1) * g.s])
}

/// Mean and biased variance of every channel.
pub(crate) fn channel_stats<T: Elem>(x: &[T], g: Geom, eps: f64) -> Stats {
    let m = g.count() as f64;
    let (mean, var): (Vec<f64>, Vec<f64>) = if g.s == 1 {
        // (N, C): accumulate whole rows, which is what the memory layout favours.
        let mut mean = vec![0f64; g.c];
        for row in x.chunks_exact(g.c) {
            for (a, &v) in mean.iter_mut().zip(row) {
                *a += v.to_f64();
            }
        }
        mean.iter_mut().for_each(|a| *a /= m);
        let mut var = vec![0f64; g.c];
        for row in x.chunks_exact(g.c) {
            for ((a, &v), &mu) in var.iter_mut().zip(row).zip(&mean) {
                *a += (v.to_f64() - mu).powi(2);
            }
        }
        var.iter_mut().for_each(|a| *a /= m);
        (mean, var)
    } else {
        per_channel(&g, |ch| {
            let mu = segments(x, g, ch).map(sum).sum::<f64>() / m;
            let var = segments(x, g, ch)
                .map(|seg| sum_sq_dev(seg, mu))
                .sum::<f64>()
                / m;
            (mu, var)
        })
        .into_iter()
        .unzip()
    };
    let invstd = var.iter().map(|v| 1.0 / (v + eps).sqrt()).collect();
    Stats { mean, var, invstd }
}

/// Runs `f(row of out, row index)` over the `n` batch rows of `out`, on several threads when large.
fn per_row<U: Send>(g: &Geom, out: &mut [U], f: impl Fn(&mut [U], usize) + Sync + Send) {
    let row = g.c * g.s;
    if row == 0 {
        return;
    }
    if g.parallel() {
        out.par_chunks_mut(row)
            .enumerate()
            .with_min_len(g.rows_per_task())
            .for_each(|(i, o)| f(o, i));
    } else {
        out.chunks_mut(row).enumerate().for_each(|(i, o)| f(o, i));
    }
}

/// Casts a per-channel f64 vector to `T`.
pub(crate) fn cast<T: Elem>(v: impl IntoIterator<Item = f64>) -> Vec<T> {
    v.into_iter().map(T::from_f64).collect()
}

/// What the fused op does after the normalization: add a residual input, then apply a ReLU.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Epilogue {
    /// Add a residual tensor of the input's shape after the affine transform.
    pub residual: bool,
    /// Apply `max(0, ·)` last.
    pub relu: bool,
}

impl Epilogue {
    /// The plain normalization.
    pub const NONE: Self = Self {
        residual: false,
        relu: false,
    };
    /// Normalization, then ReLU.
    pub const RELU: Self = Self {
        residual: false,
        relu: true,
    };
    /// Normalization, plus the residual, then ReLU (the end of a residual block).
    pub const ADD_RELU: Self = Self {
        residual: true,
        relu: true,
    };
}

multiversion! {
/// One channel's segment of [`affine_rows`]: `o = act(x·sc + sh [+ r])`, in one pass.
fn affine_seg<T: Elem>(
    o: &mut [MaybeUninit<T>],
    x: &[T],
    r: Option<&[T]>,
    sc: T,
    sh: T,
    relu: bool,
) {
    let act = |v: T| if relu && v < T::ZERO { T::ZERO } else { v };
    match r {
        Some(r) => {
            for ((o, &v), &rv) in o.iter_mut().zip(x).zip(r) {
                o.write(act(v * sc + sh + rv));
            }
        }
        None => {
            for (o, &v) in o.iter_mut().zip(x) {
                o.write(act(v * sc + sh));
            }
        }
    }
}
}

/// `y = act(x·scale + shift [+ r])` over the `n` batch rows of `out`, per channel `scale`/`shift`.
fn affine_rows<T: Elem>(
    g: &Geom,
    x: &[T],
    scale: &[T],
    shift: &[T],
    r: Option<&[T]>,
    relu: bool,
) -> Vec<T> {
    // Written once per element, so not zero-filled first.
    let mut y = Vec::with_capacity(g.len());
    per_row(g, &mut y.spare_capacity_mut()[..g.len()], |out, i| {
        let span = i * g.c * g.s..(i + 1) * g.c * g.s;
        let xr = &x[span.clone()];
        let rr = r.map(|r| &r[span]);
        for ch in 0..g.c {
            let cr = ch * g.s..(ch + 1) * g.s;
            affine_seg(
                &mut out[cr.clone()],
                &xr[cr.clone()],
                rr.map(|rr| &rr[cr]),
                scale[ch],
                shift[ch],
                relu,
            );
        }
    });
    // SAFETY: `per_row` hands out every row of the `g.len()` elements and `affine_seg` wrote every
    // element of each row's C segments.
    unsafe { y.set_len(g.len()) };
    y
}

multiversion! {
/// One channel's segment of the input gradient: `o = a·dz + b·(x − μ) + d` with `dz = dy`, masked by
/// `y > 0` when `y` is given, and `dz` itself into `dr` (the residual's gradient) when asked for.
#[allow(clippy::too_many_arguments)]
fn grad_seg<T: Elem>(
    o: &mut [MaybeUninit<T>],
    dr: Option<&mut [MaybeUninit<T>]>,
    x: &[T],
    dy: &[T],
    y: Option<&[T]>,
    a: T,
    b: T,
    d: T,
    mu: T,
) {
    match y {
        Some(y) => {
            for (((o, &xv), &dv), &yv) in o.iter_mut().zip(x).zip(dy).zip(y) {
                o.write(a * masked(dv, yv) + b * (xv - mu) + d);
            }
            if let Some(dr) = dr {
                for ((o, &dv), &yv) in dr.iter_mut().zip(dy).zip(y) {
                    o.write(masked(dv, yv));
                }
            }
        }
        None => {
            for ((o, &xv), &dv) in o.iter_mut().zip(x).zip(dy) {
                o.write(a * dv + b * (xv - mu) + d);
            }
            if let Some(dr) = dr {
                for (o, &dv) in dr.iter_mut().zip(dy) {
                    o.write(dv);
                }
            }
        }
    }
}
}

/// The incoming gradient with the ReLU's mask applied: `dy` where `y > 0`, else 0.
#[inline]
fn masked<T: Elem>(dy: T, y: T) -> T {
    if y > T::ZERO {
        dy
    } else {
        T::ZERO
    }
}

multiversion! {
/// (Σ dz, Σ dz·(x − mean)), with `dz = dy` masked by `y > 0` when `y` is given. One segment (one
/// image's plane of one channel) is summed in `T` with eight independent accumulators, which
/// vectorizes; the caller adds the segments in f64.
fn sum_dz_dot<T: Elem>(dy: &[T], y: Option<&[T]>, x: &[T], mean: f64) -> (f64, f64) {
    #[cfg(target_arch = "x86_64")]
    if let (Some(y), Some(dy), Some(x), true) = (
        y.and_then(super::direct::as_f32),
        super::direct::as_f32(dy),
        super::direct::as_f32(x),
        super::wide(),
    ) {
        // SAFETY: the CPU has AVX2 and FMA (`wide`).
        return unsafe { masked_sums_avx2(dy, y, x, mean as f32) };
    }
    let mu = T::from_f64(mean);
    let (mut a, mut b) = ([T::ZERO; 8], [T::ZERO; 8]);
    let (dyc, xc) = (dy.chunks_exact(8), x.chunks_exact(8));
    let (dyr, xr) = (dyc.remainder(), xc.remainder());
    match y {
        None => {
            for (d8, x8) in dyc.zip(xc) {
                for i in 0..8 {
                    a[i] += d8[i];
                    b[i] += d8[i] * (x8[i] - mu);
                }
            }
        }
        Some(y) => {
            for ((d8, y8), x8) in dyc.zip(y.chunks_exact(8)).zip(xc) {
                for i in 0..8 {
                    let d = masked(d8[i], y8[i]);
                    a[i] += d;
                    b[i] += d * (x8[i] - mu);
                }
            }
        }
    }
    let mut sa = a.iter().map(|v| v.to_f64()).sum::<f64>();
    let mut sb = b.iter().map(|v| v.to_f64()).sum::<f64>();
    let tail = dy.len() - dyr.len();
    for (i, (&d, &xv)) in dyr.iter().zip(xr).enumerate() {
        let d = match y {
            Some(y) => masked(d, y[tail + i]),
            None => d,
        }
        .to_f64();
        sa += d;
        sb += d * (xv.to_f64() - mean);
    }
    (sa, sb)
}
}

/// [`sum_dz_dot`] with the ReLU mask in f32 on AVX2: written out, since the compiler turns the
/// generic loop's masked select into per-lane branches.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn masked_sums_avx2(dy: &[f32], y: &[f32], x: &[f32], mu: f32) -> (f64, f64) {
    use std::arch::x86_64::*;
    let n = dy.len().min(y.len()).min(x.len());
    let (mut a, mut b) = (_mm256_setzero_ps(), _mm256_setzero_ps());
    let (zero, m) = (_mm256_setzero_ps(), _mm256_set1_ps(mu));
    let mut i = 0;
    while i + 8 <= n {
        // SAFETY: i + 8 ≤ n, within all three slices.
        let (d, yv, xv) = unsafe {
            (
                _mm256_loadu_ps(dy.as_ptr().add(i)),
                _mm256_loadu_ps(y.as_ptr().add(i)),
                _mm256_loadu_ps(x.as_ptr().add(i)),
            )
        };
        let dz = _mm256_and_ps(_mm256_cmp_ps::<_CMP_GT_OQ>(yv, zero), d);
        a = _mm256_add_ps(a, dz);
        b = _mm256_fmadd_ps(dz, _mm256_sub_ps(xv, m), b);
        i += 8;
    }
    let (mut la, mut lb) = ([0f32; 8], [0f32; 8]);
    // SAFETY: both arrays hold 8 floats.
    unsafe {
        _mm256_storeu_ps(la.as_mut_ptr(), a);
        _mm256_storeu_ps(lb.as_mut_ptr(), b);
    }
    let mut sa = la.iter().map(|&v| f64::from(v)).sum::<f64>();
    let mut sb = lb.iter().map(|&v| f64::from(v)).sum::<f64>();
    for j in i..n {
        let d = if y[j] > 0.0 { f64::from(dy[j]) } else { 0.0 };
        sa += d;
        sb += d * (f64::from(x[j]) - f64::from(mu));
    }
    (sa, sb)
}

/// The forward op: (x, γ, β) → y, or (x, [γ; β], r) → y with a residual, with the statistics
/// computed beforehand.
#[derive(Debug)]
pub(crate) struct BatchNormTrain {
    pub(crate) g: Geom,
    pub(crate) stats: Arc<Stats>,
    pub(crate) epilogue: Epilogue,
}

fn check_shapes(
    g: &Geom,
    epilogue: Epilogue,
    l1: &Layout,
    l2: &Layout,
    l3: &Layout,
) -> candle_core::Result<()> {
    let ok = l1.shape().elem_count() == g.len()
        && if epilogue.residual {
            l2.shape().dims() == [2 * g.c] && l3.shape().elem_count() == g.len()
        } else {
            l2.shape().dims() == [g.c] && l3.shape().dims() == [g.c]
        };
    if !ok {
        candle_core::bail!(
            "{NAME}: shapes {:?}, {:?}, {:?} do not fit the planned geometry {g:?} ({epilogue:?})",
            l1.shape(),
            l2.shape(),
            l3.shape()
        );
    }
    Ok(())
}

impl BatchNormTrain {
    pub(crate) fn run<T: Elem>(&self, x: &[T], a2: &[T], a3: &[T]) -> Vec<T> {
        let g = self.g;
        let st = &*self.stats;
        let (gamma, beta, r) = if self.epilogue.residual {
            (&a2[..g.c], &a2[g.c..], Some(a3))
        } else {
            (a2, a3, None)
        };
        // y = (x − μ)·γ/σ̂ + β = x·scale + shift.
        let scale: Vec<f64> = gamma
            .iter()
            .zip(&st.invstd)
            .map(|(gm, is)| gm.to_f64() * is)
            .collect();
        let shift: Vec<T> = cast(
            beta.iter()
                .zip(&scale)
                .zip(&st.mean)
                .map(|((b, sc), mu)| b.to_f64() - mu * sc),
        );
        let scale: Vec<T> = cast(scale);
        affine_rows(&g, x, &scale, &shift, r, self.epilogue.relu)
    }

    /// (dx, dγ, dβ, dr) from the input, the output, the output gradient and γ.
    #[allow(clippy::type_complexity)]
    pub(crate) fn grads<T: Elem>(
        &self,
        x: &[T],
        y: &[T],
        dy: &[T],
        gamma: &[T],
    ) -> candle_core::Result<(Vec<T>, Vec<f64>, Vec<f64>, Option<Vec<T>>)> {
        let g = self.g;
        if x.len() != g.len() || y.len() != g.len() || dy.len() != g.len() || gamma.len() < g.c {
            candle_core::bail!("{NAME}: input, output or output gradient does not fit {g:?}");
        }
        let st = &*self.stats;
        let ym = self.epilogue.relu.then_some(y);
        // Per channel (Σ dz, Σ dz·(x − μ)) with dz the gradient after the ReLU's mask.
        let sums: Vec<(f64, f64)> = if g.s == 1 {
            let (mut a, mut b) = (vec![0f64; g.c], vec![0f64; g.c]);
            for (i, (xr, dr)) in x.chunks_exact(g.c).zip(dy.chunks_exact(g.c)).enumerate() {
                let yr = &y[i * g.c..(i + 1) * g.c];
                for ch in 0..g.c {
                    let d = if ym.is_some() {
                        masked(dr[ch], yr[ch])
                    } else {
                        dr[ch]
                    }
                    .to_f64();
                    a[ch] += d;
                    b[ch] += d * (xr[ch].to_f64() - st.mean[ch]);
                }
            }
            a.into_iter().zip(b).collect()
        } else {
            per_channel(&g, |ch| {
                let ys: Box<dyn Iterator<Item = Option<&[T]>>> = match ym {
                    Some(y) => Box::new(segments(y, g, ch).map(Some)),
                    None => Box::new(std::iter::repeat(None)),
                };
                segments(dy, g, ch)
                    .zip(ys)
                    .zip(segments(x, g, ch))
                    .map(|((d, yv), xs)| sum_dz_dot(d, yv, xs, st.mean[ch]))
                    .fold((0.0, 0.0), |(a, b), (c, d)| (a + c, b + d))
            })
        };
        let (sum_dz, sum_dz_xc): (Vec<f64>, Vec<f64>) = sums.into_iter().unzip();
        let m = g.count() as f64;
        // Per channel, with σ̂ = √(σ² + ε): dx = a·dz + b·(x − μ) + d, where a = γ/σ̂,
        // b = −a·Σdz·(x − μ)/(σ̂²·M) (the x̂·dγ/M term) and d = −a·Σdz/M.
        let mut a = Vec::with_capacity(g.c);
        let mut b = Vec::with_capacity(g.c);
        let mut d = Vec::with_capacity(g.c);
        for ch in 0..g.c {
            let is = st.invstd[ch];
            let sc = gamma[ch].to_f64() * is;
            a.push(T::from_f64(sc));
            b.push(T::from_f64(-sc * is * is * sum_dz_xc[ch] / m));
            d.push(T::from_f64(-sc * sum_dz[ch] / m));
        }
        let mean: Vec<T> = cast(st.mean.iter().copied());
        let row = g.c * g.s;
        // dx and dr are written once per element (`grad_seg`), so not zero-filled first.
        let dr_len = if self.epilogue.residual { g.len() } else { 0 };
        let mut dx_vec = Vec::with_capacity(g.len());
        let mut dr_vec = Vec::with_capacity(dr_len);
        let dx = &mut dx_vec.spare_capacity_mut()[..g.len()];
        let dr = &mut dr_vec.spare_capacity_mut()[..dr_len];
        let body = |out: &mut [MaybeUninit<T>], rout: Option<&mut [MaybeUninit<T>]>, i: usize| {
            let span = i * row..(i + 1) * row;
            let (xr, dyr, yr) = (&x[span.clone()], &dy[span.clone()], &y[span]);
            let mut rout = rout;
            for ch in 0..g.c {
                let cr = ch * g.s..(ch + 1) * g.s;
                grad_seg(
                    &mut out[cr.clone()],
                    rout.as_deref_mut().map(|r| &mut r[cr.clone()]),
                    &xr[cr.clone()],
                    &dyr[cr.clone()],
                    ym.map(|_| &yr[cr]),
                    a[ch],
                    b[ch],
                    d[ch],
                    mean[ch],
                );
            }
        };
        if row > 0 {
            let tasks = g.rows_per_task();
            match (self.epilogue.residual, g.parallel()) {
                (true, true) => dx
                    .par_chunks_mut(row)
                    .zip(dr.par_chunks_mut(row))
                    .enumerate()
                    .with_min_len(tasks)
                    .for_each(|(i, (o, r))| body(o, Some(r), i)),
                (true, false) => dx
                    .chunks_mut(row)
                    .zip(dr.chunks_mut(row))
                    .enumerate()
                    .for_each(|(i, (o, r))| body(o, Some(r), i)),
                (false, _) => per_row(&g, dx, |o, i| body(o, None, i)),
            }
        }
        // SAFETY: every row of dx (and of dr, when there is a residual; else its length is 0) went
        // through `body` above, whose `grad_seg` calls wrote every element of the row's C segments.
        // A geometry of no elements writes and sets nothing.
        unsafe {
            dx_vec.set_len(g.len());
            dr_vec.set_len(dr_len);
        }
        let (dx, dr) = (dx_vec, dr_vec);
        let dgamma = sum_dz_xc
            .iter()
            .zip(&st.invstd)
            .map(|(s, is)| s * is)
            .collect();
        Ok((dx, dgamma, sum_dz, self.epilogue.residual.then_some(dr)))
    }
}

impl CustomOp3 for BatchNormTrain {
    fn name(&self) -> &'static str {
        NAME
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        check_shapes(&self.g, self.epilogue, l1, l2, l3)?;
        let out = match s1 {
            CpuStorage::F32(_) => CpuStorage::F32(self.run(
                contiguous::<f32>(NAME, "input", s1, l1)?,
                contiguous::<f32>(NAME, "weight", s2, l2)?,
                contiguous::<f32>(NAME, "bias or residual", s3, l3)?,
            )),
            CpuStorage::F64(_) => CpuStorage::F64(self.run(
                contiguous::<f64>(NAME, "input", s1, l1)?,
                contiguous::<f64>(NAME, "weight", s2, l2)?,
                contiguous::<f64>(NAME, "bias or residual", s3, l3)?,
            )),
            _ => candle_core::bail!(
                "{NAME}: only f32 and f64 are supported, got {:?}",
                s1.dtype()
            ),
        };
        Ok((out, l1.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        a2: &Tensor,
        _a3: &Tensor,
        res: &Tensor,
        dy: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let g = self.g;
        let shape = x.dims().to_vec();
        fn run<T: Elem>(
            op: &BatchNormTrain,
            x: &Tensor,
            a2: &Tensor,
            y: &Tensor,
            dy: &Tensor,
            shape: &[usize],
        ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
            let c = op.g.c;
            let (dx, dgamma, dbeta, dr) = with_cpu::<T, _>(NAME, "input", x, |x| {
                with_cpu::<T, _>(NAME, "output", y, |y| {
                    with_cpu::<T, _>(NAME, "output gradient", dy, |dy| {
                        with_cpu::<T, _>(NAME, "weight", a2, |gamma| op.grads(x, y, dy, gamma))
                    })
                })
            })?;
            let dx = tensor(dx, shape)?;
            Ok(match dr {
                Some(dr) => {
                    let dgb: Vec<T> = cast(dgamma.into_iter().chain(dbeta));
                    (
                        Some(dx),
                        Some(tensor(dgb, &[2 * c])?),
                        Some(tensor(dr, shape)?),
                    )
                }
                None => (
                    Some(dx),
                    Some(tensor(cast::<T>(dgamma), &[c])?),
                    Some(tensor(cast::<T>(dbeta), &[c])?),
                ),
            })
        }
        let _ = g;
        match x.dtype() {
            DType::F32 => run::<f32>(self, x, a2, res, dy, &shape),
            DType::F64 => run::<f64>(self, x, a2, res, dy, &shape),
            other => candle_core::bail!("{NAME}: only f32 and f64 are supported, got {other:?}"),
        }
    }
}

/// Train-mode batch normalization of `xs` (N, C) or (N, C, H, W) over every dimension but the
/// channel one (PyTorch `F.batch_norm(x, None, None, gamma, beta, training=True, eps=eps)`), as one
/// op with a fused backward that yields dx, dγ and dβ. Returns the output and the batch statistics
/// (mean and biased variance per channel) for the running-average update.
///
/// CPU only, f32 or f64, `gamma` and `beta` of shape (C) and the input's dtype. Statistics are
/// accumulated in f64.
///
/// # Errors
/// [`ModelError::Shape`] for an input that is not 2-D or 4-D or parameters that are not (C);
/// [`ModelError::Config`] naming `batch` when a channel has fewer than two values (as PyTorch), `eps`
/// when negative or not finite, `dtype` for mismatched or unsupported element types, and `device`
/// off the CPU.
pub fn batch_norm_train(
    xs: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    eps: f64,
) -> Result<(Tensor, BatchStats)> {
    batch_norm_train_act(xs, gamma, beta, eps, None, false)
}

/// [`batch_norm_train`] followed, inside the same op, by `+ residual` (a tensor of the input's shape)
/// and a ReLU: `y = act(BN(x) [+ r])`. Backward masks the output gradient with `y > 0` once and
/// yields dx, dγ, dβ (and dr) in two passes, so the ReLU and the addition add no nodes, buffers or
/// passes of their own to candle's graph.
///
/// # Errors
/// As [`batch_norm_train`]; [`ModelError::Shape`] for a residual of another shape.
pub fn batch_norm_train_act(
    xs: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    eps: f64,
    residual: Option<&Tensor>,
    relu: bool,
) -> Result<(Tensor, BatchStats)> {
    let config = |field: &str, reason: String| ModelError::Config {
        field: field.into(),
        reason,
    };
    let dims = xs.dims();
    let g = match *dims {
        [n, c] => Geom { n, c, s: 1 },
        [n, c, h, w] => Geom { n, c, s: h * w },
        _ => {
            return Err(ModelError::Shape {
                name: "batch norm input (N, C) or (N, C, H, W)".into(),
                expected: vec![0, gamma.elem_count()],
                found: dims.to_vec(),
            })
        }
    };
    for (name, t) in [("batch norm weight", gamma), ("batch norm bias", beta)] {
        if t.dims() != [g.c] {
            return Err(ModelError::Shape {
                name: name.into(),
                expected: vec![g.c],
                found: t.dims().to_vec(),
            });
        }
    }
    if g.count() < 2 {
        return Err(config(
            "batch",
            format!("batch norm in train mode needs more than one value per channel, got input shape {dims:?}"),
        ));
    }
    if !(eps.is_finite() && eps >= 0.0) {
        return Err(config(
            "eps",
            format!("must be finite and non-negative, got {eps}"),
        ));
    }
    let dtype = xs.dtype();
    if !matches!(dtype, DType::F32 | DType::F64) || gamma.dtype() != dtype || beta.dtype() != dtype
    {
        return Err(config(
            "dtype",
            format!(
                "batch norm needs f32 or f64 input, weight and bias of one dtype, got {:?}, {:?}, {:?}",
                dtype,
                gamma.dtype(),
                beta.dtype()
            ),
        ));
    }
    for t in [xs, gamma, beta] {
        if !t.device().is_cpu() {
            return Err(config(
                "device",
                format!(
                    "the fused batch norm runs on the CPU only, got {:?}",
                    t.device().location()
                ),
            ));
        }
    }
    let xs = xs.contiguous()?;
    let stats = match dtype {
        DType::F32 => with_cpu::<f32, _>(NAME, "input", &xs, |x| Ok(channel_stats(x, g, eps)))?,
        _ => with_cpu::<f64, _>(NAME, "input", &xs, |x| Ok(channel_stats(x, g, eps)))?,
    };
    if let Some(r) = residual {
        if r.dims() != dims || r.dtype() != dtype || !r.device().is_cpu() {
            return Err(ModelError::Shape {
                name: format!("batch norm residual ({:?})", r.dtype()),
                expected: dims.to_vec(),
                found: r.dims().to_vec(),
            });
        }
    }
    let stats = Arc::new(stats);
    let op = BatchNormTrain {
        g,
        stats: stats.clone(),
        epilogue: Epilogue {
            residual: residual.is_some(),
            relu,
        },
    };
    let ys = match residual {
        Some(r) => xs.apply_op3(&Tensor::cat(&[gamma, beta], 0)?, &r.contiguous()?, op)?,
        None => xs.apply_op3(&gamma.contiguous()?, &beta.contiguous()?, op)?,
    };
    Ok((
        ys,
        BatchStats {
            mean: stats.mean.clone(),
            var: stats.var.clone(),
            count: g.count(),
        },
    ))
}

/// The eval-mode op: (x, [scale; shift]) → act(x·scale + shift), or (x, [scale; shift], r) →
/// act(x·scale + shift + r), per channel.
#[derive(Debug)]
struct ChannelAffine {
    g: Geom,
    epilogue: Epilogue,
}

impl ChannelAffine {
    const NAME: &'static str = "deepcomp-channel-affine";

    fn fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        r: Option<(&CpuStorage, &Layout)>,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let g = self.g;
        let op = Self::NAME;
        if l1.shape().elem_count() != g.len()
            || l2.shape().dims() != [2 * g.c]
            || r.is_some_and(|(_, l)| l.shape().elem_count() != g.len())
        {
            candle_core::bail!("{op}: shapes do not fit the planned geometry {g:?}");
        }
        fn run<T: Elem>(
            me: &ChannelAffine,
            s1: &CpuStorage,
            l1: &Layout,
            s2: &CpuStorage,
            l2: &Layout,
            r: Option<(&CpuStorage, &Layout)>,
        ) -> candle_core::Result<Vec<T>> {
            let op = ChannelAffine::NAME;
            let x = contiguous::<T>(op, "input", s1, l1)?;
            let ss = contiguous::<T>(op, "scale and shift", s2, l2)?;
            let r = r
                .map(|(s, l)| contiguous::<T>(op, "residual", s, l))
                .transpose()?;
            let c = me.g.c;
            Ok(affine_rows(
                &me.g,
                x,
                &ss[..c],
                &ss[c..],
                r,
                me.epilogue.relu,
            ))
        }
        let out = match s1 {
            CpuStorage::F32(_) => CpuStorage::F32(run(self, s1, l1, s2, l2, r)?),
            CpuStorage::F64(_) => CpuStorage::F64(run(self, s1, l1, s2, l2, r)?),
            _ => candle_core::bail!("{op}: only f32 and f64 are supported, got {:?}", s1.dtype()),
        };
        Ok((out, l1.shape().clone()))
    }

    /// (dx, d[scale; shift], dr).
    #[allow(clippy::type_complexity)]
    fn grads(
        &self,
        x: &Tensor,
        ss: &Tensor,
        y: &Tensor,
        dy: &Tensor,
    ) -> candle_core::Result<(Tensor, Tensor, Option<Tensor>)> {
        fn run<T: Elem>(
            me: &ChannelAffine,
            x: &Tensor,
            ss: &Tensor,
            y: &Tensor,
            dy: &Tensor,
        ) -> candle_core::Result<(Tensor, Tensor, Option<Tensor>)> {
            let g = me.g;
            let op = ChannelAffine::NAME;
            let shape = x.dims().to_vec();
            with_cpu::<T, _>(op, "input", x, |x| {
                with_cpu::<T, _>(op, "output", y, |y| {
                    with_cpu::<T, _>(op, "output gradient", dy, |dy| {
                        with_cpu::<T, _>(op, "scale and shift", ss, |ss| {
                            if x.len() != g.len() || y.len() != g.len() || dy.len() != g.len() {
                                candle_core::bail!("{op}: tensors do not fit {g:?}");
                            }
                            // dz = dy masked by the ReLU; dx = dz·scale, dscale = Σ dz·x,
                            // dshift = Σ dz, dr = dz.
                            let dz: Vec<T> = if me.epilogue.relu {
                                dy.iter().zip(y).map(|(&d, &yv)| masked(d, yv)).collect()
                            } else {
                                dy.to_vec()
                            };
                            let mut dx = buffer::<T>(g.len());
                            per_row(&g, &mut dx, |out, i| {
                                let row = g.c * g.s;
                                let dzr = &dz[i * row..(i + 1) * row];
                                for ch in 0..g.c {
                                    let sc = ss[ch];
                                    let cr = ch * g.s..(ch + 1) * g.s;
                                    for (o, &d) in out[cr.clone()].iter_mut().zip(&dzr[cr]) {
                                        *o = d * sc;
                                    }
                                }
                            });
                            let (mut dscale, mut dshift) = (vec![0f64; g.c], vec![0f64; g.c]);
                            for ch in 0..g.c {
                                for (d, xs) in segments(&dz, g, ch).zip(segments(x, g, ch)) {
                                    let (a, b) = sum_dy_dot(d, xs, 0.0);
                                    dshift[ch] += a;
                                    dscale[ch] += b;
                                }
                            }
                            let dss: Vec<T> = cast(dscale.into_iter().chain(dshift));
                            Ok((
                                tensor(dx, &shape)?,
                                tensor(dss, &[2 * g.c])?,
                                if me.epilogue.residual {
                                    Some(tensor(dz, &shape)?)
                                } else {
                                    None
                                },
                            ))
                        })
                    })
                })
            })
        }
        match x.dtype() {
            DType::F32 => run::<f32>(self, x, ss, y, dy),
            DType::F64 => run::<f64>(self, x, ss, y, dy),
            d => candle_core::bail!("{}: unsupported dtype {d:?}", Self::NAME),
        }
    }
}

impl CustomOp2 for ChannelAffine {
    fn name(&self) -> &'static str {
        Self::NAME
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        self.fwd(s1, l1, s2, l2, None)
    }

    fn bwd(
        &self,
        x: &Tensor,
        ss: &Tensor,
        res: &Tensor,
        dy: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let (dx, dss, _) = self.grads(x, ss, res, dy)?;
        Ok((Some(dx), Some(dss)))
    }
}

impl CustomOp3 for ChannelAffine {
    fn name(&self) -> &'static str {
        Self::NAME
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        self.fwd(s1, l1, s2, l2, Some((s3, l3)))
    }

    fn bwd(
        &self,
        x: &Tensor,
        ss: &Tensor,
        _r: &Tensor,
        res: &Tensor,
        dy: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (dx, dss, dr) = self.grads(x, ss, res, dy)?;
        Ok((Some(dx), Some(dss), dr))
    }
}

/// Geometry of a (N, C) or (N, C, H, W) input with `c` channels, or a shape error.
fn geom_of(dims: &[usize], c: usize) -> Result<Geom> {
    match *dims {
        [n, cc] if cc == c => Ok(Geom { n, c, s: 1 }),
        [n, cc, h, w] if cc == c => Ok(Geom { n, c, s: h * w }),
        _ => Err(ModelError::Shape {
            name: "batch norm input (N, C) or (N, C, H, W)".into(),
            expected: vec![0, c],
            found: dims.to_vec(),
        }),
    }
}

/// `act(xs·scale + shift [+ residual])` with per-channel `scale` and `shift` of shape (C) for `xs`
/// (N, C) or (N, C, H, W): eval-mode BatchNorm with its epilogue in one pass. Gradients flow to all
/// inputs (dscale = Σ dz·x, dshift = Σ dz, dr = dz, with dz the output gradient masked by the ReLU).
///
/// CPU only, f32 or f64; the caller checks devices and dtypes (see [`crate::layers::BatchNorm`]).
pub fn channel_affine(
    xs: &Tensor,
    scale: &Tensor,
    shift: &Tensor,
    residual: Option<&Tensor>,
    relu: bool,
) -> Result<Tensor> {
    let c = scale.elem_count();
    let g = geom_of(xs.dims(), c)?;
    if shift.dims() != [c] || residual.is_some_and(|r| r.dims() != xs.dims()) {
        return Err(ModelError::Shape {
            name: "batch norm shift or residual".into(),
            expected: xs.dims().to_vec(),
            found: residual.map_or(shift.dims(), |r| r.dims()).to_vec(),
        });
    }
    let ss = Tensor::cat(&[scale, shift], 0)?;
    let epilogue = Epilogue {
        residual: residual.is_some(),
        relu,
    };
    let op = ChannelAffine { g, epilogue };
    let xs = xs.contiguous()?;
    Ok(match residual {
        Some(r) => xs.apply_op3(&ss, &r.contiguous()?, op)?,
        None => xs.apply_op2(&ss, op)?,
    })
}
