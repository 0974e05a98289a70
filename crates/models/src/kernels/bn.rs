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

use std::sync::Arc;

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp3, DType, Layout, Shape, Tensor};
use rayon::prelude::*;

use super::{buffer, contiguous, tensor, threads, with_cpu, Elem};
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
struct Geom {
    n: usize,
    c: usize,
    s: usize,
}

impl Geom {
    fn len(&self) -> usize {
        self.n * self.c * self.s
    }

    fn count(&self) -> usize {
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
struct Stats {
    mean: Vec<f64>,
    var: Vec<f64>,
    invstd: Vec<f64>,
}

/// Σ of `v` in f64, with eight independent accumulators (vectorizes, and is more accurate than one).
#[inline]
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

/// Σ (v − mean)² in f64.
#[inline]
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

/// (Σ dy, Σ dy·(x − mean)) in f64.
#[inline]
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
fn channel_stats<T: Elem>(x: &[T], g: Geom, eps: f64) -> Stats {
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
fn per_row<T: Elem>(g: &Geom, out: &mut [T], f: impl Fn(&mut [T], usize) + Sync + Send) {
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
fn cast<T: Elem>(v: impl IntoIterator<Item = f64>) -> Vec<T> {
    v.into_iter().map(T::from_f64).collect()
}

/// The forward op: (x, γ, β) → y with the statistics computed beforehand.
#[derive(Debug)]
struct BatchNormTrain {
    g: Geom,
    stats: Arc<Stats>,
}

/// The input-gradient op of the backward pass: (x, dy, γ) → dx, with Σ dy and Σ dy·(x − μ) computed
/// beforehand.
#[derive(Debug)]
struct BatchNormBackward {
    g: Geom,
    stats: Arc<Stats>,
    sum_dy: Vec<f64>,
    sum_dy_xc: Vec<f64>,
}

fn check_shapes(
    g: &Geom,
    l1: &Layout,
    l2: &Layout,
    l3: &Layout,
    second: &[usize],
) -> candle_core::Result<()> {
    if l1.shape().elem_count() != g.len()
        || l2.shape().dims() != second
        || l3.shape().dims() != [g.c]
    {
        candle_core::bail!(
            "{NAME}: shapes {:?}, {:?}, {:?} do not fit the planned geometry {g:?}",
            l1.shape(),
            l2.shape(),
            l3.shape()
        );
    }
    Ok(())
}

impl BatchNormTrain {
    fn run<T: Elem>(&self, x: &[T], gamma: &[T], beta: &[T]) -> Vec<T> {
        let g = self.g;
        let st = &*self.stats;
        let mean: Vec<T> = cast(st.mean.iter().copied());
        let scale: Vec<T> = cast(
            gamma
                .iter()
                .zip(&st.invstd)
                .map(|(gm, is)| gm.to_f64() * is),
        );
        let mut y = buffer::<T>(g.len());
        per_row(&g, &mut y, |out, i| {
            let xr = &x[i * g.c * g.s..(i + 1) * g.c * g.s];
            for ch in 0..g.c {
                let (mu, sc, b) = (mean[ch], scale[ch], beta[ch]);
                let r = ch * g.s..(ch + 1) * g.s;
                for (o, &v) in out[r.clone()].iter_mut().zip(&xr[r]) {
                    *o = (v - mu) * sc + b;
                }
            }
        });
        y
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
        check_shapes(&self.g, l1, l2, l3, &[self.g.c])?;
        let out = match s1 {
            CpuStorage::F32(_) => CpuStorage::F32(self.run(
                contiguous::<f32>(NAME, "input", s1, l1)?,
                contiguous::<f32>(NAME, "weight", s2, l2)?,
                contiguous::<f32>(NAME, "bias", s3, l3)?,
            )),
            CpuStorage::F64(_) => CpuStorage::F64(self.run(
                contiguous::<f64>(NAME, "input", s1, l1)?,
                contiguous::<f64>(NAME, "weight", s2, l2)?,
                contiguous::<f64>(NAME, "bias", s3, l3)?,
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
        gamma: &Tensor,
        _beta: &Tensor,
        _res: &Tensor,
        dy: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let g = self.g;
        let dy = dy.contiguous()?;
        let sums = |what: DType| -> candle_core::Result<Vec<(f64, f64)>> {
            match what {
                DType::F32 => reduce_backward::<f32>(g, &self.stats, x, &dy),
                DType::F64 => reduce_backward::<f64>(g, &self.stats, x, &dy),
                other => {
                    candle_core::bail!("{NAME}: only f32 and f64 are supported, got {other:?}")
                }
            }
        };
        let (sum_dy, sum_dy_xc): (Vec<f64>, Vec<f64>) = sums(x.dtype())?.into_iter().unzip();
        let dgamma: Vec<f64> = sum_dy_xc
            .iter()
            .zip(&self.stats.invstd)
            .map(|(s, is)| s * is)
            .collect();
        let (dgamma, dbeta) = match x.dtype() {
            DType::F32 => (
                tensor(cast::<f32>(dgamma), &[g.c])?,
                tensor(cast::<f32>(sum_dy.iter().copied()), &[g.c])?,
            ),
            _ => (tensor(dgamma, &[g.c])?, tensor(sum_dy.clone(), &[g.c])?),
        };
        let op = BatchNormBackward {
            g,
            stats: self.stats.clone(),
            sum_dy,
            sum_dy_xc,
        };
        let dx = x.contiguous()?.apply_op3_no_bwd(&dy, gamma, &op)?;
        Ok((Some(dx), Some(dgamma), Some(dbeta)))
    }
}

/// Per channel (Σ dy, Σ dy·(x − μ)).
fn reduce_backward<T: Elem>(
    g: Geom,
    stats: &Stats,
    x: &Tensor,
    dy: &Tensor,
) -> candle_core::Result<Vec<(f64, f64)>> {
    with_cpu::<T, _>(NAME, "input", x, |x| {
        with_cpu::<T, _>(NAME, "output gradient", dy, |dy| {
            if x.len() != g.len() || dy.len() != g.len() {
                candle_core::bail!("{NAME}: input or output gradient does not fit {g:?}");
            }
            Ok(if g.s == 1 {
                let (mut a, mut b) = (vec![0f64; g.c], vec![0f64; g.c]);
                for (xr, dr) in x.chunks_exact(g.c).zip(dy.chunks_exact(g.c)) {
                    for ch in 0..g.c {
                        let d = dr[ch].to_f64();
                        a[ch] += d;
                        b[ch] += d * (xr[ch].to_f64() - stats.mean[ch]);
                    }
                }
                a.into_iter().zip(b).collect()
            } else {
                per_channel(&g, |ch| {
                    segments(dy, g, ch)
                        .zip(segments(x, g, ch))
                        .map(|(d, xs)| sum_dy_dot(d, xs, stats.mean[ch]))
                        .fold((0.0, 0.0), |(a, b), (c, d)| (a + c, b + d))
                })
            })
        })
    })
}

impl BatchNormBackward {
    fn run<T: Elem>(&self, x: &[T], dy: &[T], gamma: &[T]) -> Vec<T> {
        let g = self.g;
        let st = &*self.stats;
        let m = g.count() as f64;
        // Per channel, with σ̂ = √(σ² + ε): dx = a·dy + b·(x − μ) + d, where a = γ/σ̂,
        // b = −a·Σdy·(x − μ)/(σ̂²·M) (the x̂·dγ/M term) and d = −a·Σdy/M.
        let mut a = Vec::with_capacity(g.c);
        let mut b = Vec::with_capacity(g.c);
        let mut d = Vec::with_capacity(g.c);
        for ch in 0..g.c {
            let is = st.invstd[ch];
            let sc = gamma[ch].to_f64() * is;
            a.push(T::from_f64(sc));
            b.push(T::from_f64(-sc * is * is * self.sum_dy_xc[ch] / m));
            d.push(T::from_f64(-sc * self.sum_dy[ch] / m));
        }
        let mean: Vec<T> = cast(st.mean.iter().copied());
        let mut dx = buffer::<T>(g.len());
        per_row(&g, &mut dx, |out, i| {
            let span = i * g.c * g.s..(i + 1) * g.c * g.s;
            let (xr, dr) = (&x[span.clone()], &dy[span]);
            for ch in 0..g.c {
                let (ac, bc, dc, mu) = (a[ch], b[ch], d[ch], mean[ch]);
                let r = ch * g.s..(ch + 1) * g.s;
                for ((o, &xv), &dv) in out[r.clone()].iter_mut().zip(&xr[r.clone()]).zip(&dr[r]) {
                    *o = ac * dv + bc * (xv - mu) + dc;
                }
            }
        });
        dx
    }
}

impl CustomOp3 for BatchNormBackward {
    fn name(&self) -> &'static str {
        "deepcomp-batch-norm-backward"
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
        check_shapes(&self.g, l1, l2, l3, l1.shape().dims())?;
        let op = self.name();
        let out = match s1 {
            CpuStorage::F32(_) => CpuStorage::F32(self.run(
                contiguous::<f32>(op, "input", s1, l1)?,
                contiguous::<f32>(op, "output gradient", s2, l2)?,
                contiguous::<f32>(op, "weight", s3, l3)?,
            )),
            CpuStorage::F64(_) => CpuStorage::F64(self.run(
                contiguous::<f64>(op, "input", s1, l1)?,
                contiguous::<f64>(op, "output gradient", s2, l2)?,
                contiguous::<f64>(op, "weight", s3, l3)?,
            )),
            _ => candle_core::bail!("{op}: only f32 and f64 are supported, got {:?}", s1.dtype()),
        };
        Ok((out, l1.shape().clone()))
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
    let stats = Arc::new(stats);
    let ys = xs.apply_op3(
        &gamma.contiguous()?,
        &beta.contiguous()?,
        BatchNormTrain {
            g,
            stats: stats.clone(),
        },
    )?;
    Ok((
        ys,
        BatchStats {
            mean: stats.mean.clone(),
            var: stats.var.clone(),
            count: g.count(),
        },
    ))
}
