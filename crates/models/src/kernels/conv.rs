//! 2-D convolution (square kernel, stride, zero padding, dilation 1, groups 1) as one custom op.
//!
//! The batch is split into one contiguous run of images per thread. Stride-1 convolutions (all of
//! VGG's and LeNet's, 17 of ResNet-20's 19) take the direct path of [`super::direct`]. For the others,
//! and when `DEEPCOMP_CONV=im2col` asks for it, each image's input is
//! unfolded into a column matrix `col` (C·k·k rows × Ho·Wo columns, im2col) and
//!
//! - forward:  `y_n = W · col_n + b` (W viewed as O × C·k·k; the bias is preloaded into `y_n`);
//! - backward: `dW += dy_n · col_nᵀ` into a per-thread partial sum (the partials are added at the end),
//!   `db += Σ dy_n`, and, when the input needs a gradient, `dx_n = col2im(Wᵀ · dy_n)`, or for a
//!   stride-1 "same" convolution (3×3 with padding 1, as in ResNet and VGG) `dx_n = W̃ · im2col(dy_n)`,
//!   the input gradient as the convolution of `dy` with the rotated, channel-swapped kernel W̃.
//!
//! Images whose output plane is small (fewer than `GEMM_COLUMNS` positions: VGG16-half's 4 × 4 and
//! 2 × 2 layers, LeNet-5's second) are unfolded side by side, several per column matrix, so that one
//! gemm covers a group of images; the output (and in backward the output gradient and the input
//! gradient) is copied between the grouped and the per-image layouts.
//!
//! The column matrix is rebuilt in backward instead of being kept from forward: unfolding costs a
//! fraction of the gemm that follows it and keeping it would hold C·k·k·Ho·Wo values per image between
//! the passes. A 1×1 convolution with stride 1 and no padding uses the image itself as `col`.
//!
//! [`conv2d_affine`] is the same op with an eval-mode BatchNorm folded in (its scale multiplied into
//! the weight, its shift into the bias) and a residual and a ReLU applied to each image's output as it
//! is written, so that evaluation makes one pass over each layer's output instead of two.

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp2, CustomOp3, Layout, Shape, Tensor};
use rayon::prelude::*;

use super::direct::Flat;
use super::edge;
use super::{buffer, contiguous, gemm, multiversion, tensor, threads, with_cpu, Elem, MatRef};
use crate::error::{ModelError, Result};

const NAME: &str = "deepcomp-conv2d";

/// Geometry of one convolution.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Geom {
    pub(crate) n: usize,
    pub(crate) c: usize,
    pub(crate) h: usize,
    pub(crate) w: usize,
    pub(crate) o: usize,
    pub(crate) k: usize,
    pub(crate) stride: usize,
    pub(crate) pad: usize,
    pub(crate) ho: usize,
    pub(crate) wo: usize,
}

impl Geom {
    pub(crate) fn new(
        x: &[usize],
        wt: &[usize],
        stride: usize,
        pad: usize,
    ) -> candle_core::Result<Self> {
        let (&[n, c, h, w], &[o, wc, k, k2]) = (x, wt) else {
            candle_core::bail!(
                "{NAME}: expected a 4-D input and a 4-D weight, got {x:?} and {wt:?}"
            );
        };
        if wc != c || k != k2 || k == 0 || stride == 0 {
            candle_core::bail!(
                "{NAME}: weight {wt:?} does not fit input {x:?} (stride {stride}, padding {pad})"
            );
        }
        let out = |size: usize| {
            crate::layers::conv_out_size(size, k, stride, pad).ok_or_else(|| {
                candle_core::Error::Msg(format!(
                    "{NAME}: kernel {k} does not fit input side {size} with padding {pad}"
                ))
            })
        };
        Ok(Self {
            n,
            c,
            h,
            w,
            o,
            k,
            stride,
            pad,
            ho: out(h)?,
            wo: out(w)?,
        })
    }

    /// Rows of the column matrix: C·k·k.
    pub(crate) fn kdim(&self) -> usize {
        self.c * self.k * self.k
    }

    /// Output positions per channel: Ho·Wo.
    fn p(&self) -> usize {
        self.ho * self.wo
    }

    /// Input values per image.
    fn in_len(&self) -> usize {
        self.c * self.h * self.w
    }

    /// Output values per image.
    fn out_len(&self) -> usize {
        self.o * self.p()
    }

    /// Whether the image itself is its column matrix (1×1, stride 1, no padding).
    fn identity_cols(&self) -> bool {
        self.k == 1 && self.stride == 1 && self.pad == 0
    }

    /// For kernel offset `kx` and output column `ox`, the input column is `ox·s + kx − p`; returns the
    /// range of `ox` for which it lies inside `0..w` (so the rest are padding).
    fn valid_range(&self, kx: usize, out: usize, size: usize) -> (usize, usize) {
        let s = self.stride;
        // ox·s + kx >= p  ⇔  ox >= ceil((p − kx) / s)
        let lo = if kx >= self.pad {
            0
        } else {
            (self.pad - kx).div_ceil(s)
        };
        // ox·s + kx − p <= size − 1  ⇔  ox <= (size − 1 + p − kx) / s
        let hi = if size + self.pad > kx {
            ((size - 1 + self.pad - kx) / s + 1).min(out)
        } else {
            0
        };
        (lo.min(hi), hi)
    }

    /// Unfolds one image (C × H × W) into `col` (C·k·k × Ho·Wo).
    fn im2col<T: Elem>(&self, img: &[T], col: &mut [T]) {
        self.im2col_at(img, col, self.p());
    }

    /// Unfolds one image into the first Ho·Wo columns of a column matrix whose rows are `ld` apart
    /// (`ld ≥ Ho·Wo`): a group of images unfolded side by side is one gemm operand.
    fn im2col_at<T: Elem>(&self, img: &[T], col: &mut [T], ld: usize) {
        let (k, s, p) = (self.k, self.stride, self.pad);
        let (ho, wo) = (self.ho, self.wo);
        let mut rows = col.chunks_mut(ld).map(|r| &mut r[..ho * wo]);
        for plane in img.chunks_exact(self.h * self.w) {
            for ky in 0..k {
                let (ylo, yhi) = self.valid_range(ky, ho, self.h);
                for kx in 0..k {
                    let Some(row) = rows.next() else { return };
                    let (xlo, xhi) = self.valid_range(kx, wo, self.w);
                    row[..ylo * wo].fill(T::ZERO);
                    row[yhi * wo..].fill(T::ZERO);
                    for oy in ylo..yhi {
                        let iy = oy * s + ky - p;
                        let dst = &mut row[oy * wo..(oy + 1) * wo];
                        dst[..xlo].fill(T::ZERO);
                        dst[xhi..].fill(T::ZERO);
                        let src = &plane[iy * self.w..(iy + 1) * self.w];
                        if s == 1 {
                            let ix0 = xlo + kx - p;
                            dst[xlo..xhi].copy_from_slice(&src[ix0..ix0 + (xhi - xlo)]);
                        } else {
                            for (ox, d) in dst.iter_mut().enumerate().take(xhi).skip(xlo) {
                                *d = src[ox * s + kx - p];
                            }
                        }
                    }
                }
            }
        }
    }

    /// Folds the first Ho·Wo columns of `col` (C·k·k rows, `ld` apart) back onto one image, adding
    /// overlapping contributions.
    fn col2im_at<T: Elem>(&self, col: &[T], ld: usize, img: &mut [T]) {
        let (k, s, p) = (self.k, self.stride, self.pad);
        let (ho, wo) = (self.ho, self.wo);
        img.fill(T::ZERO);
        let mut rows = col.chunks(ld).map(|r| &r[..ho * wo]);
        for plane in img.chunks_exact_mut(self.h * self.w) {
            for ky in 0..k {
                let (ylo, yhi) = self.valid_range(ky, ho, self.h);
                for kx in 0..k {
                    let Some(row) = rows.next() else { return };
                    let (xlo, xhi) = self.valid_range(kx, wo, self.w);
                    for oy in ylo..yhi {
                        let iy = oy * s + ky - p;
                        let src = &row[oy * wo..(oy + 1) * wo];
                        let dst = &mut plane[iy * self.w..(iy + 1) * self.w];
                        if s == 1 {
                            let ix0 = xlo + kx - p;
                            for (d, &v) in
                                dst[ix0..ix0 + (xhi - xlo)].iter_mut().zip(&src[xlo..xhi])
                            {
                                *d += v;
                            }
                        } else {
                            for (ox, &v) in src.iter().enumerate().take(xhi).skip(xlo) {
                                dst[ox * s + kx - p] += v;
                            }
                        }
                    }
                }
            }
        }
    }

    /// For a stride-1 "same" convolution (2·padding = k − 1, so H × W in, H × W out), the geometry of
    /// the convolution that computes the input gradient: `dx = conv(dy, W̃)` with W̃ the weight with
    /// its two channel axes swapped and its kernel rotated by 180° (`flipped_weight`), O input
    /// channels and C outputs. Unfolding `dy` and one gemm of depth O·k·k replace the gemm of depth O
    /// (Wᵀ·dy, C·k·k × H·W values written) and the scatter-add of col2im; both cost the same
    /// multiply-adds.
    fn transposed(&self) -> Option<Self> {
        (self.stride == 1 && 2 * self.pad + 1 == self.k && !self.identity_cols()).then(|| Self {
            n: self.n,
            c: self.o,
            h: self.ho,
            w: self.wo,
            o: self.c,
            k: self.k,
            stride: 1,
            pad: self.k - 1 - self.pad,
            ho: self.h,
            wo: self.w,
        })
    }

    /// W̃ for [`Geom::transposed`]: (C, O, k, k) with `W̃[c][o][k−1−ky][k−1−kx] = W[o][c][ky][kx]`.
    fn flipped_weight<T: Elem>(&self, wt: &[T]) -> Vec<T> {
        let (c, o, k) = (self.c, self.o, self.k);
        let kk = k * k;
        let mut out = buffer::<T>(wt.len());
        for oi in 0..o {
            for ci in 0..c {
                let src = &wt[(oi * c + ci) * kk..(oi * c + ci + 1) * kk];
                let dst = &mut out[(ci * o + oi) * kk..(ci * o + oi + 1) * kk];
                for (d, &v) in dst.iter_mut().zip(src.iter().rev()) {
                    *d = v;
                }
            }
        }
        out
    }

    /// The flat-grid geometry when this convolution takes the direct path: stride 1, padding below
    /// k, not 1×1 (a 1×1 convolution is already one gemm on the image itself), and the im2col path
    /// not asked for (`DEEPCOMP_CONV=im2col`, read once, for measuring what the direct path buys).
    fn flat(&self) -> Option<Flat> {
        static IM2COL: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        let im2col =
            *IM2COL.get_or_init(|| std::env::var("DEEPCOMP_CONV").is_ok_and(|v| v == "im2col"));
        if im2col || self.stride != 1 || self.identity_cols() {
            return None;
        }
        // Measured end to end on 2 cores: the grid pays off for 8 to 128 channels in and out while
        // at least 60 % of the positions it computes are real outputs (all of ResNet-20's stride-1
        // convolutions but the first, VGG16-half's up to its 8×8 stage: 128 channels at 8×8 forward
        // 28.9 → 24.9 ms, forward + backward 62 → 57.5 ms per batch of 128 on one thread once the
        // kernels ran along output rows). LeNet-5's first convolution (1 channel in), VGG16-half's
        // 256-channel ones and its 4×4 and 2×2 planes (50 % and 25 %) run faster through im2col +
        // gemm (or the padding-free blocks of `edge.rs`).
        Flat::new(self.c, self.h, self.w, self.o, self.k, self.pad).filter(|f| {
            f.ho == self.ho
                && f.wo == self.wo
                && (8..=128).contains(&self.c)
                && self.o <= 128
                && 10 * self.ho * self.wo >= 6 * f.qs
        })
    }

    /// Images per thread-chunk.
    fn chunk(&self) -> usize {
        self.n.div_ceil(threads()).max(1)
    }

    /// Images per gemm on the im2col path: enough for [`GEMM_COLUMNS`] output columns (one image
    /// where its plane alone has that many), at most a thread's chunk.
    fn group(&self) -> usize {
        GEMM_COLUMNS
            .div_ceil(self.p().max(1))
            .clamp(1, self.chunk())
    }
}

/// Output positions one gemm of the im2col path covers at least, images side by side. A small plane
/// alone makes a thin gemm (VGG16-half's 2 × 2 layers: 4 columns against 2,304-deep rows), which
/// spends its time packing operands and loading and storing the output; several images' columns side
/// by side make one well-shaped product, at the price of one copy of the output (and, in backward, of
/// the output gradient) between the grouped and the per-image layouts. Measured per layer (batch 128,
/// one thread): 64 is best; 256-channel 2 × 2 forward 26.4 → 9.1 ms and forward + backward 40.3 →
/// 19.5 ms, 4 × 4 unchanged to slightly faster; 512 made the 8 × 8 and 4 × 4 backward passes 25–30 %
/// slower (the copies and the deeper dW product cost more than the wider gemm saves).
const GEMM_COLUMNS: usize = 64;

/// `conv2d(xs, weight) + bias` for `xs` (N, C, H, W), `weight` (O, C, k, k), `bias` (O), with `stride` and
/// zero `padding` on every side (PyTorch `nn.Conv2d`, dilation 1, groups 1).
///
/// On the CPU with f32/f64 tensors this is one custom op (see the module docs); elsewhere candle's
/// `conv2d` plus a broadcast bias.
pub fn conv2d(
    xs: &Tensor,
    weight: &Tensor,
    bias: Option<&Tensor>,
    stride: usize,
    padding: usize,
) -> Result<Tensor> {
    let (_, c, h, w) = xs.dims4()?;
    let (o, wc, k, k2) = weight.dims4()?;
    if wc != c || k != k2 {
        return Err(ModelError::Shape {
            name: "conv2d weight".into(),
            expected: vec![o, c, k, k],
            found: weight.dims().to_vec(),
        });
    }
    if stride == 0 || h + 2 * padding < k || w + 2 * padding < k {
        return Err(ModelError::Shape {
            name: format!("conv2d input (kernel {k}, stride {stride}, padding {padding})"),
            expected: vec![k, k],
            found: vec![h + 2 * padding, w + 2 * padding],
        });
    }
    if let Some(b) = bias {
        if b.dims() != [o] {
            return Err(ModelError::Shape {
                name: "conv2d bias".into(),
                expected: vec![o],
                found: b.dims().to_vec(),
            });
        }
    }
    let fused = xs.device().is_cpu()
        && matches!(
            xs.dtype(),
            candle_core::DType::F32 | candle_core::DType::F64
        )
        && weight.dtype() == xs.dtype()
        && bias.is_none_or(|b| b.dtype() == xs.dtype());
    if !fused {
        let ys = xs.conv2d(weight, padding, stride, 1, 1)?;
        return Ok(match bias {
            Some(b) => ys.broadcast_add(&b.reshape((1, o, 1, 1))?)?,
            None => ys,
        });
    }
    let op = ConvOp {
        stride,
        pad: padding,
        input_grad: xs.track_op(),
    };
    let xs = xs.contiguous()?;
    let weight = weight.contiguous()?;
    Ok(match bias {
        Some(b) => xs.apply_op3(&weight, &b.contiguous()?, op)?,
        None => xs.apply_op2(&weight, op)?,
    })
}

/// What [`ConvOp::forward`] does to each image's output after the bias: add a residual of the
/// output's shape (the whole batch), apply a ReLU.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Epi<'a, T> {
    pub(crate) residual: Option<&'a [T]>,
    pub(crate) relu: bool,
}

multiversion! {
/// `y ← act(y [+ r])`: the epilogue of one image's output on the im2col path.
fn add_act<T: Elem>(y: &mut [T], r: Option<&[T]>, relu: bool) {
    let act = |v: T| if relu && v < T::ZERO { T::ZERO } else { v };
    match r {
        Some(r) => {
            for (y, &rv) in y.iter_mut().zip(r) {
                *y = act(*y + rv);
            }
        }
        None => {
            for y in y.iter_mut() {
                *y = act(*y);
            }
        }
    }
}
}

#[derive(Debug, Clone, Copy)]
pub(crate) struct ConvOp {
    pub(crate) stride: usize,
    pub(crate) pad: usize,
    pub(crate) input_grad: bool,
}

impl ConvOp {
    /// `act(conv(x, W) + b [+ r])` for the whole batch: the epilogue is applied to each image's
    /// output while it is in cache (on the direct path, as the grid is copied out, so the output is
    /// written once and needs no zero-filling first).
    pub(crate) fn forward<T: Elem>(
        &self,
        g: Geom,
        x: &[T],
        wt: &[T],
        b: Option<&[T]>,
        epi: Epi<'_, T>,
    ) -> candle_core::Result<Vec<T>> {
        let (kd, p) = (g.kdim(), g.p());
        let (in_len, out_len) = (g.in_len(), g.out_len());
        let len = g.n * out_len;
        if epi.residual.is_some_and(|r| r.len() != len) {
            candle_core::bail!("{NAME}: the residual does not have the output's shape");
        }
        let chunk = g.chunk();
        let residual = |n: usize| epi.residual.map(|r| &r[n * out_len..(n + 1) * out_len]);
        if let Some(f) = g.flat() {
            let offs = f.offsets();
            let wt = &f.transpose(wt);
            let mut y = Vec::<T>::with_capacity(len);
            y.spare_capacity_mut()[..len]
                .par_chunks_mut(chunk * out_len)
                .zip(x.par_chunks(chunk * in_len))
                .enumerate()
                .for_each(|(t, (ys, xs))| {
                    let mut xp = buffer::<T>(f.padded_len());
                    let mut grid = buffer::<T>(f.grid_len());
                    for (i, (yn, xn)) in ys
                        .chunks_exact_mut(out_len)
                        .zip(xs.chunks_exact(in_len))
                        .enumerate()
                    {
                        f.pad_image(xn, &mut xp);
                        f.forward(&xp, wt, &offs, &mut grid);
                        f.grid_to(&grid, yn, b, residual(t * chunk + i), epi.relu);
                    }
                });
            // SAFETY: the chunks cover `..len` (N images of `out_len`), and `grid_to` wrote every
            // element of each image's output.
            unsafe { y.set_len(len) };
            return Ok(y);
        }
        if let Some(blocks) = edge::blocks(&g) {
            let mut y = buffer::<T>(len);
            y.par_chunks_mut(chunk * out_len)
                .zip(x.par_chunks(chunk * in_len))
                .enumerate()
                .try_for_each(|(t, (ys, xs))| {
                    edge::forward(&g, &blocks, xs, wt, b, ys)?;
                    if epi.residual.is_some() || epi.relu {
                        for (j, yn) in ys.chunks_exact_mut(out_len).enumerate() {
                            add_act(yn, residual(t * chunk + j), epi.relu);
                        }
                    }
                    Ok::<(), candle_core::Error>(())
                })?;
            return Ok(y);
        }
        let mut y = buffer::<T>(len);
        let wmat = MatRef::rows(wt, g.o, kd);
        let group = g.group();
        y.par_chunks_mut(chunk * out_len)
            .zip(x.par_chunks(chunk * in_len))
            .enumerate()
            .try_for_each(|(t, (ys, xs))| {
                let mut col = if g.identity_cols() && group == 1 {
                    Vec::new()
                } else {
                    buffer::<T>(kd * p * group)
                };
                let mut yg = if group > 1 {
                    buffer::<T>(g.o * p * group)
                } else {
                    Vec::new()
                };
                for (gi, (ysg, xsg)) in ys
                    .chunks_mut(group * out_len)
                    .zip(xs.chunks(group * in_len))
                    .enumerate()
                {
                    let count = xsg.len() / in_len;
                    let ld = count * p;
                    if count == 1 {
                        // One image: the gemm writes its output in place, the bias preloaded.
                        let cols: &[T] = if g.identity_cols() {
                            xsg
                        } else {
                            g.im2col(xsg, &mut col);
                            &col
                        };
                        if let Some(b) = b {
                            for (row, &bo) in ysg.chunks_exact_mut(p).zip(b) {
                                row.fill(bo);
                            }
                        }
                        gemm(ysg, p, wmat, MatRef::rows(cols, kd, p), b.is_some(), false)?;
                    } else {
                        for (j, xn) in xsg.chunks_exact(in_len).enumerate() {
                            g.im2col_at(xn, &mut col[j * p..], ld);
                        }
                        gemm(&mut yg, ld, wmat, MatRef::rows(&col, kd, ld), false, false)?;
                        for (j, yn) in ysg.chunks_exact_mut(out_len).enumerate() {
                            ungroup(&yg, ld, j * p, yn, p, b);
                        }
                    }
                    for (j, yn) in ysg.chunks_exact_mut(out_len).enumerate() {
                        let r = residual(t * chunk + gi * group + j);
                        if r.is_some() || epi.relu {
                            add_act(yn, r, epi.relu);
                        }
                    }
                }
                Ok::<(), candle_core::Error>(())
            })?;
        Ok(y)
    }

    /// (dx, dW, db) from the input, the weight and the output gradient.
    #[allow(clippy::type_complexity)]
    pub(crate) fn backward<T: Elem>(
        &self,
        g: Geom,
        x: &[T],
        wt: &[T],
        dy: &[T],
        want_bias: bool,
    ) -> candle_core::Result<(Option<Vec<T>>, Vec<T>, Option<Vec<T>>)> {
        if let Some(f) = g.flat() {
            return self.backward_direct(g, f, x, wt, dy, want_bias);
        }
        if let Some(blocks) = edge::blocks(&g) {
            return self.backward_blocks(g, &blocks, x, wt, dy, want_bias);
        }
        let (kd, p) = (g.kdim(), g.p());
        let wmat = MatRef::rows(wt, g.o, kd);
        let chunk = g.chunk();
        let (in_len, out_len) = (g.in_len(), g.out_len());
        // The input gradient as a convolution of dy where that is possible (see `Geom::transposed`).
        let tg = g.transposed().filter(|_| self.input_grad);
        let wflip = tg.map(|_| g.flipped_weight(wt));
        let wfmat = wflip
            .as_deref()
            .zip(tg)
            .map(|(w, t)| MatRef::rows(w, t.o, t.kdim()));
        let mut dx = if self.input_grad {
            buffer::<T>(g.n * in_len)
        } else {
            Vec::new()
        };
        let dx_chunks = thread_chunks(&mut dx, g.n.div_ceil(chunk), chunk * in_len);
        let group = g.group();
        // Per group of images: the columns of every image side by side (`col`, C·k·k × count·p),
        // the output gradients likewise (`dyg`, O × count·p), one gemm for dW; the input gradient
        // as one gemm into the grouped layout, then copied (or folded, col2im) per image.
        let tp = tg.map_or(0, |t| t.p());
        let partials: Vec<(Vec<T>, Vec<T>)> = dx_chunks
            .into_par_iter()
            .zip(x.par_chunks(chunk * in_len))
            .zip(dy.par_chunks(chunk * out_len))
            .map(|((mut dxs, xs), dys)| {
                let mut dw = buffer::<T>(g.o * kd);
                let mut db = vec![T::ZERO; g.o];
                let mut col = buffer::<T>(kd * p * group);
                let mut dyg = if group > 1 {
                    buffer::<T>(g.o * p * group)
                } else {
                    Vec::new()
                };
                let mut col_t = tg.map_or_else(Vec::new, |t| buffer::<T>(t.kdim() * tp * group));
                let mut dxg = if group > 1 && (tg.is_some() || g.identity_cols()) {
                    buffer::<T>(g.c * g.h * g.w * group)
                } else {
                    Vec::new()
                };
                for (gi, (xsg, dysg)) in xs
                    .chunks(group * in_len)
                    .zip(dys.chunks(group * out_len))
                    .enumerate()
                {
                    let count = xsg.len() / in_len;
                    let ld = count * p;
                    let cols: &[T] = if g.identity_cols() && count == 1 {
                        xsg
                    } else {
                        for (j, xn) in xsg.chunks_exact(in_len).enumerate() {
                            g.im2col_at(xn, &mut col[j * p..], ld);
                        }
                        &col
                    };
                    if count > 1 {
                        for (j, dyn_) in dysg.chunks_exact(out_len).enumerate() {
                            group_rows(dyn_, p, &mut dyg, ld, j * p);
                        }
                    }
                    let dymat = MatRef::rows(if count == 1 { dysg } else { &dyg }, g.o, ld);
                    gemm(
                        &mut dw,
                        kd,
                        dymat,
                        MatRef::rows(cols, kd, ld).t(),
                        gi > 0,
                        false,
                    )?;
                    if want_bias {
                        for dyn_ in dysg.chunks_exact(out_len) {
                            add_row_sums(&mut db, dyn_, p);
                        }
                    }
                    let Some(dxs) = dxs.as_deref_mut() else {
                        continue;
                    };
                    let dxsg = &mut dxs[gi * group * in_len..][..count * in_len];
                    if let (Some(t), Some(wf)) = (tg, wfmat) {
                        let tld = count * tp;
                        for (j, dyn_) in dysg.chunks_exact(out_len).enumerate() {
                            t.im2col_at(dyn_, &mut col_t[j * tp..], tld);
                        }
                        let cmat = MatRef::rows(&col_t, t.kdim(), tld);
                        if count == 1 {
                            gemm(dxsg, tld, wf, cmat, false, false)?;
                        } else {
                            gemm(&mut dxg, tld, wf, cmat, false, false)?;
                            for (j, dxn) in dxsg.chunks_exact_mut(in_len).enumerate() {
                                ungroup(&dxg, tld, j * tp, dxn, tp, None);
                            }
                        }
                    } else if g.identity_cols() {
                        if count == 1 {
                            gemm(dxsg, ld, wmat.t(), dymat, false, false)?;
                        } else {
                            gemm(&mut dxg, ld, wmat.t(), dymat, false, false)?;
                            for (j, dxn) in dxsg.chunks_exact_mut(in_len).enumerate() {
                                ungroup(&dxg, ld, j * p, dxn, p, None);
                            }
                        }
                    } else {
                        // `col` has been used for dW: it takes Wᵀ · dy, folded back per image.
                        gemm(&mut col, ld, wmat.t(), dymat, false, false)?;
                        for (j, dxn) in dxsg.chunks_exact_mut(in_len).enumerate() {
                            g.col2im_at(&col[j * p..], ld, dxn);
                        }
                    }
                }
                Ok((dw, db))
            })
            .collect::<candle_core::Result<_>>()?;
        let (dw, db) = sum_partials(partials, g.o * kd, g.o);
        Ok((self.input_grad.then_some(dx), dw, want_bias.then_some(db)))
    }

    /// [`ConvOp::backward`] block by block (see [`super::edge`]): per thread, dW over its images;
    /// the input gradient as the block forward pass of `dy` with the rotated kernel.
    #[allow(clippy::type_complexity)]
    fn backward_blocks<T: Elem>(
        &self,
        g: Geom,
        blocks: &[edge::Block],
        x: &[T],
        wt: &[T],
        dy: &[T],
        want_bias: bool,
    ) -> candle_core::Result<(Option<Vec<T>>, Vec<T>, Option<Vec<T>>)> {
        let kd = g.kdim();
        let chunk = g.chunk();
        let (in_len, out_len, p) = (g.in_len(), g.out_len(), g.p());
        let tg = if self.input_grad {
            let t = g.transposed().ok_or_else(|| {
                candle_core::Error::Msg(format!("{NAME}: no transposed geometry for {g:?}"))
            })?;
            let tb = edge::blocks(&t).ok_or_else(|| {
                candle_core::Error::Msg(format!("{NAME}: no blocks for the transposed {t:?}"))
            })?;
            Some((t, tb, g.flipped_weight(wt)))
        } else {
            None
        };
        let mut dx = if self.input_grad {
            buffer::<T>(g.n * in_len)
        } else {
            Vec::new()
        };
        let dx_chunks = thread_chunks(&mut dx, g.n.div_ceil(chunk), chunk * in_len);
        let partials: Vec<(Vec<T>, Vec<T>)> = dx_chunks
            .into_par_iter()
            .zip(x.par_chunks(chunk * in_len))
            .zip(dy.par_chunks(chunk * out_len))
            .map(|((dxs, xs), dys)| {
                let mut dw = buffer::<T>(g.o * kd);
                let mut db = vec![T::ZERO; g.o];
                edge::weight_grad(&g, blocks, xs, dys, &mut dw)?;
                if want_bias {
                    for dyn_ in dys.chunks_exact(out_len) {
                        add_row_sums(&mut db, dyn_, p);
                    }
                }
                if let (Some(dxs), Some((t, tb, wflip))) = (dxs, tg.as_ref()) {
                    edge::forward(t, tb, dys, wflip, None, dxs)?;
                }
                Ok((dw, db))
            })
            .collect::<candle_core::Result<_>>()?;
        let (dw, db) = sum_partials(partials, g.o * kd, g.o);
        Ok((self.input_grad.then_some(dx), dw, want_bias.then_some(db)))
    }

    /// [`ConvOp::backward`] on the flat grid (see [`super::direct`]): per thread, groups of images
    /// are padded and their output gradients laid on the grid for one weight-gradient call; the
    /// input gradient is the direct forward pass of the padded `dy` with the rotated kernel.
    #[allow(clippy::type_complexity)]
    fn backward_direct<T: Elem>(
        &self,
        g: Geom,
        f: Flat,
        x: &[T],
        wt: &[T],
        dy: &[T],
        want_bias: bool,
    ) -> candle_core::Result<(Option<Vec<T>>, Vec<T>, Option<Vec<T>>)> {
        let kd = g.kdim();
        let chunk = g.chunk();
        let (in_len, out_len, p) = (g.in_len(), g.out_len(), g.p());
        let offs = f.offsets();
        let tg = if self.input_grad {
            let t = f.transposed().ok_or_else(|| {
                candle_core::Error::Msg(format!("{NAME}: no transposed geometry for {f:?}"))
            })?;
            Some((t, t.offsets(), t.transpose(&g.flipped_weight(wt))))
        } else {
            None
        };
        // Every image's input gradient is written once by `grid_to`: no zero-filling.
        let dx_len = if self.input_grad { g.n * in_len } else { 0 };
        let mut dx = Vec::<T>::with_capacity(dx_len);
        let dx_chunks = thread_chunks(
            &mut dx.spare_capacity_mut()[..dx_len],
            g.n.div_ceil(chunk),
            chunk * in_len,
        );
        let group = f.group();
        let partials: Vec<(Vec<T>, Vec<T>)> = dx_chunks
            .into_par_iter()
            .zip(x.par_chunks(chunk * in_len))
            .zip(dy.par_chunks(chunk * out_len))
            .map(|((mut dxs, xs), dys)| {
                let mut dw = buffer::<T>(g.o * kd);
                let mut db = vec![T::ZERO; g.o];
                let mut xps: Vec<Vec<T>> =
                    (0..group).map(|_| buffer::<T>(f.padded_len())).collect();
                let mut grids: Vec<Vec<T>> =
                    (0..group).map(|_| buffer::<T>(f.grid_len())).collect();
                let mut tbufs = tg
                    .as_ref()
                    .map(|(t, _, _)| (buffer::<T>(t.padded_len()), buffer::<T>(t.grid_len())));
                let images = xs.len() / in_len;
                for first in (0..images).step_by(group) {
                    let count = group.min(images - first);
                    for slot in 0..count {
                        let i = first + slot;
                        let xn = &xs[i * in_len..(i + 1) * in_len];
                        let dyn_ = &dys[i * out_len..(i + 1) * out_len];
                        f.pad_image(xn, &mut xps[slot]);
                        f.grid_from(dyn_, &mut grids[slot]);
                        if want_bias {
                            add_row_sums(&mut db, dyn_, p);
                        }
                        if let (Some(dxs), Some((t, toffs, wflip)), Some((dyp, tgrid))) =
                            (dxs.as_deref_mut(), tg.as_ref(), tbufs.as_mut())
                        {
                            t.pad_image(dyn_, dyp);
                            t.forward(dyp, wflip, toffs, tgrid);
                            let dxn = &mut dxs[i * in_len..(i + 1) * in_len];
                            t.grid_to(tgrid, dxn, None, None, false);
                        }
                    }
                    let gs: Vec<&[T]> = grids[..count].iter().map(Vec::as_slice).collect();
                    let xq: Vec<&[T]> = xps[..count].iter().map(Vec::as_slice).collect();
                    f.weight_grad(&gs, &xq, &offs, &mut dw);
                }
                (dw, db)
            })
            .collect();
        // SAFETY: with an input gradient, the thread chunks cover `..dx_len` (N images of
        // `in_len`) and `grid_to` wrote every element of each image's gradient; without, the
        // length is 0.
        unsafe { dx.set_len(dx_len) };
        let (dw, db) = sum_partials(partials, g.o * kd, g.o);
        Ok((self.input_grad.then_some(dx), dw, want_bias.then_some(db)))
    }

    fn fwd_storage(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        bias: Option<(&CpuStorage, &Layout)>,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let g = Geom::new(l1.dims(), l2.dims(), self.stride, self.pad)?;
        fn run<T: Elem>(
            op: &ConvOp,
            g: Geom,
            s1: &CpuStorage,
            l1: &Layout,
            s2: &CpuStorage,
            l2: &Layout,
            bias: Option<(&CpuStorage, &Layout)>,
        ) -> candle_core::Result<Vec<T>> {
            let x = contiguous::<T>(NAME, "input", s1, l1)?;
            let w = contiguous::<T>(NAME, "weight", s2, l2)?;
            let b = bias
                .map(|(s, l)| contiguous::<T>(NAME, "bias", s, l))
                .transpose()?;
            op.forward(g, x, w, b, Epi::default())
        }
        let out = match s1 {
            CpuStorage::F32(_) => CpuStorage::F32(run(self, g, s1, l1, s2, l2, bias)?),
            CpuStorage::F64(_) => CpuStorage::F64(run(self, g, s1, l1, s2, l2, bias)?),
            s => candle_core::bail!("{NAME}: unsupported dtype {:?}", s.dtype()),
        };
        Ok((out, Shape::from((g.n, g.o, g.ho, g.wo))))
    }

    #[allow(clippy::type_complexity)]
    fn bwd_tensors(
        &self,
        x: &Tensor,
        w: &Tensor,
        dy: &Tensor,
        want_bias: bool,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let g = Geom::new(x.dims(), w.dims(), self.stride, self.pad)?;
        if dy.dims() != [g.n, g.o, g.ho, g.wo] {
            candle_core::bail!(
                "{NAME}: output gradient {:?} does not match the output shape",
                dy.dims()
            );
        }
        fn run<T: Elem>(
            op: &ConvOp,
            g: Geom,
            x: &Tensor,
            w: &Tensor,
            dy: &Tensor,
            want_bias: bool,
        ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
            let (dx, dw, db) = with_cpu::<T, _>(NAME, "input", x, |x| {
                with_cpu::<T, _>(NAME, "weight", w, |w| {
                    with_cpu::<T, _>(NAME, "output gradient", dy, |dy| {
                        op.backward(g, x, w, dy, want_bias)
                    })
                })
            })?;
            Ok((
                dx.map(|v| tensor(v, &[g.n, g.c, g.h, g.w])).transpose()?,
                Some(tensor(dw, &[g.o, g.c, g.k, g.k])?),
                db.map(|v| tensor(v, &[g.o])).transpose()?,
            ))
        }
        match x.dtype() {
            candle_core::DType::F32 => run::<f32>(self, g, x, w, dy, want_bias),
            candle_core::DType::F64 => run::<f64>(self, g, x, w, dy, want_bias),
            d => candle_core::bail!("{NAME}: unsupported dtype {d:?}"),
        }
    }
}

/// The chunks of `dx` the threads write (`count` of `len` values), or `count` times `None` when
/// `dx` is empty because no input gradient is wanted.
fn thread_chunks<T>(dx: &mut [T], count: usize, len: usize) -> Vec<Option<&mut [T]>> {
    if dx.is_empty() {
        (0..count).map(|_| None).collect()
    } else {
        dx.chunks_mut(len).map(Some).collect()
    }
}

multiversion! {
/// Copies one image's rows (`p` values each) out of a grouped matrix whose rows are `ld` apart,
/// starting at column `at`, adding `b[row]` when a bias is given.
fn ungroup<T: Elem>(src: &[T], ld: usize, at: usize, dst: &mut [T], p: usize, b: Option<&[T]>) {
    for (r, row) in dst.chunks_exact_mut(p).enumerate() {
        let s = &src[r * ld + at..][..p];
        match b {
            Some(b) => {
                let bo = b[r];
                for (d, &v) in row.iter_mut().zip(s) {
                    *d = v + bo;
                }
            }
            None => row.copy_from_slice(s),
        }
    }
}
}

/// Copies one image's rows (`p` values each) into a grouped matrix whose rows are `ld` apart,
/// starting at column `at`.
fn group_rows<T: Elem>(src: &[T], p: usize, dst: &mut [T], ld: usize, at: usize) {
    for (r, row) in src.chunks_exact(p).enumerate() {
        dst[r * ld + at..][..p].copy_from_slice(row);
    }
}

/// `db[o] += Σ dy[o][·]` over one image's output gradient (O rows of `p`).
fn add_row_sums<T: Elem>(db: &mut [T], dy: &[T], p: usize) {
    for (s, row) in db.iter_mut().zip(dy.chunks_exact(p)) {
        for &v in row {
            *s += v;
        }
    }
}

/// The per-thread partial sums of (dW, db) added together (zeros of `w_len` / `b_len` when there are
/// none), in thread order so the result does not depend on scheduling.
fn sum_partials<T: Elem>(
    partials: Vec<(Vec<T>, Vec<T>)>,
    w_len: usize,
    b_len: usize,
) -> (Vec<T>, Vec<T>) {
    let mut parts = partials.into_iter();
    let (mut dw, mut db) = parts
        .next()
        .unwrap_or_else(|| (vec![T::ZERO; w_len], vec![T::ZERO; b_len]));
    for (pw, pb) in parts {
        for (a, b) in dw.iter_mut().zip(pw) {
            *a += b;
        }
        for (a, b) in db.iter_mut().zip(pb) {
            *a += b;
        }
    }
    (dw, db)
}

impl CustomOp3 for ConvOp {
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
        self.fwd_storage(s1, l1, s2, l2, Some((s3, l3)))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _b: &Tensor,
        _y: &Tensor,
        dy: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        self.bwd_tensors(x, w, dy, true)
    }
}

impl CustomOp2 for ConvOp {
    fn name(&self) -> &'static str {
        NAME
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        self.fwd_storage(s1, l1, s2, l2, None)
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _y: &Tensor,
        dy: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let (dx, dw, _) = self.bwd_tensors(x, w, dy, false)?;
        Ok((dx, dw))
    }
}

/// `act(conv2d(xs, weight) · scale + shift [+ residual])` with per-output-channel `scale` and `shift`
/// of shape (O): a convolution followed by an eval-mode BatchNorm (its running statistics folded into
/// `scale` and `shift`, see [`crate::layers::BatchNorm`]), a residual of the output's shape and a
/// ReLU when `relu`. `bias` (O), when given, is added before the scale.
///
/// On the CPU with f32/f64 tensors this is one op: the scale is folded into the weight
/// (`W'[o] = W[o]·scale[o]`) and the shift into the bias, so the pass over the output that BatchNorm
/// would make is gone; the residual and the ReLU are applied to each image's output as it is written.
/// Gradients flow to every input, through the folding (which is made of candle ops) to `weight`,
/// `scale` and `shift`. Elsewhere the same computation is composed of candle ops.
pub fn conv2d_affine(
    xs: &Tensor,
    weight: &Tensor,
    bias: Option<&Tensor>,
    scale: &Tensor,
    shift: &Tensor,
    stride: usize,
    padding: usize,
    residual: Option<&Tensor>,
    relu: bool,
) -> Result<Tensor> {
    let o = weight.dim(0)?;
    for (name, t) in [("conv2d scale", scale), ("conv2d shift", shift)] {
        if t.dims() != [o] {
            return Err(ModelError::Shape {
                name: name.into(),
                expected: vec![o],
                found: t.dims().to_vec(),
            });
        }
    }
    let dtype = xs.dtype();
    let fused = xs.device().is_cpu()
        && matches!(dtype, candle_core::DType::F32 | candle_core::DType::F64)
        && [weight, scale, shift]
            .into_iter()
            .chain(bias)
            .chain(residual)
            .all(|t| t.dtype() == dtype);
    if !fused {
        let ys = conv2d(xs, weight, bias, stride, padding)?
            .broadcast_mul(&scale.reshape((1, o, 1, 1))?)?
            .broadcast_add(&shift.reshape((1, o, 1, 1))?)?;
        let ys = match residual {
            Some(r) => (ys + r)?,
            None => ys,
        };
        return Ok(if relu { ys.relu()? } else { ys });
    }
    // Shapes are checked by `conv2d`'s rules; the folded weight and bias are one (O, C·k·k + 1)
    // tensor so that the op has at most three inputs.
    let (_, c, h, w) = xs.dims4()?;
    let (_, wc, k, k2) = weight.dims4()?;
    if wc != c || k != k2 || stride == 0 || h + 2 * padding < k || w + 2 * padding < k {
        return Err(ModelError::Shape {
            name: format!("conv2d weight (stride {stride}, padding {padding})"),
            expected: vec![o, c, k, k],
            found: weight.dims().to_vec(),
        });
    }
    if let Some(b) = bias {
        if b.dims() != [o] {
            return Err(ModelError::Shape {
                name: "conv2d bias".into(),
                expected: vec![o],
                found: b.dims().to_vec(),
            });
        }
    }
    let folded_w = weight
        .reshape((o, c * k * k))?
        .broadcast_mul(&scale.reshape((o, 1))?)?;
    let folded_b = match bias {
        Some(b) => ((b * scale)? + shift)?,
        None => shift.clone(),
    };
    let wb = Tensor::cat(&[&folded_w, &folded_b.reshape((o, 1))?], 1)?;
    let op = ConvAffineOp {
        conv: ConvOp {
            stride,
            pad: padding,
            input_grad: xs.track_op(),
        },
        k,
        relu,
    };
    let xs = xs.contiguous()?;
    if let Some(r) = residual {
        let out = |size| crate::layers::conv_out_size(size, k, stride, padding).unwrap_or(0);
        let expected = vec![xs.dim(0)?, o, out(h), out(w)];
        if r.dims() != expected {
            return Err(ModelError::Shape {
                name: "conv2d residual".into(),
                expected,
                found: r.dims().to_vec(),
            });
        }
    }
    let xs = xs.contiguous()?;
    Ok(match residual {
        Some(r) => xs.apply_op3(&wb, &r.contiguous()?, op)?,
        None => xs.apply_op2(&wb, op)?,
    })
}

/// The op of [`conv2d_affine`]: inputs `x`, the folded weight and bias as one (O, C·k·k + 1) matrix
/// `[W' | b']`, and the residual when there is one.
#[derive(Debug, Clone, Copy)]
struct ConvAffineOp {
    conv: ConvOp,
    k: usize,
    relu: bool,
}

impl ConvAffineOp {
    /// The geometry from the input's and `[W' | b']`'s dimensions.
    fn geom(&self, x: &[usize], wb: &[usize]) -> candle_core::Result<Geom> {
        let kk = self.k * self.k;
        let &[o, cols] = wb else {
            candle_core::bail!("{NAME}: folded weight must be 2-D, got {wb:?}");
        };
        if cols == 0 || !(cols - 1).is_multiple_of(kk) {
            candle_core::bail!(
                "{NAME}: folded weight {wb:?} does not fit a {k}×{k} kernel",
                k = self.k
            );
        }
        Geom::new(
            x,
            &[o, (cols - 1) / kk, self.k, self.k],
            self.conv.stride,
            self.conv.pad,
        )
    }

    fn fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        r: Option<(&CpuStorage, &Layout)>,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let g = self.geom(l1.dims(), l2.dims())?;
        fn run<T: Elem>(
            op: &ConvAffineOp,
            g: Geom,
            s1: &CpuStorage,
            l1: &Layout,
            s2: &CpuStorage,
            l2: &Layout,
            r: Option<(&CpuStorage, &Layout)>,
        ) -> candle_core::Result<Vec<T>> {
            let x = contiguous::<T>(NAME, "input", s1, l1)?;
            let wb = contiguous::<T>(NAME, "folded weight", s2, l2)?;
            let residual = r
                .map(|(s, l)| contiguous::<T>(NAME, "residual", s, l))
                .transpose()?;
            let (w, b) = split_folded(wb, g.o);
            let epi = Epi {
                residual,
                relu: op.relu,
            };
            op.conv.forward(g, x, &w, Some(&b), epi)
        }
        let out = match s1 {
            CpuStorage::F32(_) => CpuStorage::F32(run(self, g, s1, l1, s2, l2, r)?),
            CpuStorage::F64(_) => CpuStorage::F64(run(self, g, s1, l1, s2, l2, r)?),
            s => candle_core::bail!("{NAME}: unsupported dtype {:?}", s.dtype()),
        };
        Ok((out, Shape::from((g.n, g.o, g.ho, g.wo))))
    }

    /// (dx, d[W' | b'], dr): the output gradient masked by the ReLU (`y > 0`) is the residual's
    /// gradient and the convolution's output gradient.
    #[allow(clippy::type_complexity)]
    fn grads(
        &self,
        x: &Tensor,
        wb: &Tensor,
        y: &Tensor,
        dy: &Tensor,
        residual: bool,
    ) -> candle_core::Result<(Option<Tensor>, Tensor, Option<Tensor>)> {
        let g = self.geom(x.dims(), wb.dims())?;
        if dy.dims() != [g.n, g.o, g.ho, g.wo] || y.dims() != dy.dims() {
            candle_core::bail!(
                "{NAME}: output gradient {:?} does not match the output",
                dy.dims()
            );
        }
        fn run<T: Elem>(
            op: &ConvAffineOp,
            g: Geom,
            x: &Tensor,
            wb: &Tensor,
            y: &Tensor,
            dy: &Tensor,
            residual: bool,
        ) -> candle_core::Result<(Option<Tensor>, Tensor, Option<Tensor>)> {
            let dz: Vec<T> = with_cpu::<T, _>(NAME, "output gradient", dy, |dy| {
                if !op.relu {
                    return Ok(dy.to_vec());
                }
                with_cpu::<T, _>(NAME, "output", y, |y| {
                    Ok(dy
                        .iter()
                        .zip(y)
                        .map(|(&d, &v)| if v > T::ZERO { d } else { T::ZERO })
                        .collect())
                })
            })?;
            let (dx, dw, db) = with_cpu::<T, _>(NAME, "input", x, |x| {
                with_cpu::<T, _>(NAME, "folded weight", wb, |wb| {
                    let (w, _) = split_folded(wb, g.o);
                    op.conv.backward(g, x, &w, &dz, true)
                })
            })?;
            let kd = g.kdim();
            let db = db.unwrap_or_else(|| vec![T::ZERO; g.o]);
            let mut dwb = Vec::with_capacity(g.o * (kd + 1));
            for (row, &b) in dw.chunks_exact(kd).zip(&db) {
                dwb.extend_from_slice(row);
                dwb.push(b);
            }
            Ok((
                dx.map(|v| tensor(v, &[g.n, g.c, g.h, g.w])).transpose()?,
                tensor(dwb, &[g.o, kd + 1])?,
                residual
                    .then(|| tensor(dz, &[g.n, g.o, g.ho, g.wo]))
                    .transpose()?,
            ))
        }
        match x.dtype() {
            candle_core::DType::F32 => run::<f32>(self, g, x, wb, y, dy, residual),
            candle_core::DType::F64 => run::<f64>(self, g, x, wb, y, dy, residual),
            d => candle_core::bail!("{NAME}: unsupported dtype {d:?}"),
        }
    }
}

/// `[W' | b']` (O rows of C·k·k + 1) split into W' (O × C·k·k, contiguous) and b' (O).
fn split_folded<T: Elem>(wb: &[T], o: usize) -> (Vec<T>, Vec<T>) {
    let cols = wb.len() / o.max(1);
    let mut w = Vec::with_capacity(o * cols.saturating_sub(1));
    let mut b = Vec::with_capacity(o);
    for row in wb.chunks_exact(cols) {
        w.extend_from_slice(&row[..cols - 1]);
        b.push(row[cols - 1]);
    }
    (w, b)
}

impl CustomOp2 for ConvAffineOp {
    fn name(&self) -> &'static str {
        "deepcomp-conv2d-affine"
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
        wb: &Tensor,
        y: &Tensor,
        dy: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let (dx, dwb, _) = self.grads(x, wb, y, dy, false)?;
        Ok((dx, Some(dwb)))
    }
}

impl CustomOp3 for ConvAffineOp {
    fn name(&self) -> &'static str {
        "deepcomp-conv2d-affine"
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
        wb: &Tensor,
        _r: &Tensor,
        y: &Tensor,
        dy: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (dx, dwb, dr) = self.grads(x, wb, y, dy, true)?;
        Ok((dx, Some(dwb), dr))
    }
}
