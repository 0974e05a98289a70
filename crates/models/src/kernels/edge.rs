//! Stride-1 "same" convolutions of tiny planes (VGG16-half's 2 × 2), computed block by block so that
//! no multiply-add falls on the zero padding.
//!
//! im2col writes a zero into the column matrix for every tap that lands on the padding, and the gemm
//! multiplies it like any other value. On a large plane that is a thin border; on VGG16-half's 4 × 4
//! planes 31 % of a 3 × 3 convolution's multiply-adds read padding, on its 2 × 2 planes 56 %, on 8 × 8
//! 16 %. Here the output plane is cut into rectangles whose positions all see the same rectangle of
//! valid taps (for a 3 × 3 kernel with padding 1: the four corners, the four edges without their
//! corners, the interior), and each rectangle is one gemm over just those taps:
//!
//! ```text
//! Y_b = W_b · X_b      W_b: O × C·|taps_b|   (the weight's columns for those taps)
//!                      X_b: C·|taps_b| × (images · |positions_b|)   (no padding in it)
//! ```
//!
//! The blocks partition the output, so every output value is written exactly once. A block holds few
//! positions per image (a corner: one), so each gemm takes many images side by side. The weight
//! gradient is the same per block (`dW_b = dY_b · X_bᵀ`, added into the taps it covers), and the
//! input gradient is this forward pass on the output gradient with the rotated, channel-swapped
//! kernel (the transposed geometry of [`super::conv`]).

use super::conv::Geom;
use super::{gemm, Elem, MatRef};

/// Output planes at most this large (positions per channel) take the block path. Measured per layer
/// (`examples/conv_speed.rs`, 256 channels, batch 128, one thread, against im2col with images
/// grouped): 2 × 2 forward 9.1 → 6.2 ms, forward + backward 19.5 → 12.7 ms; 4 × 4 and 8 × 8 no
/// faster (28–29 ms forward either way, although the blocks skip 31 % and 16 % of the multiply-adds):
/// a block's rows are 1 to 6 values per image, and gathering them (a fifth of the time in a profile
/// of the 4 × 4 layer) and scattering the results cost what the skipped products would have.
pub(crate) const MAX_PLANE: usize = 4;

/// Output columns one block's gemm covers at least (images side by side).
const GEMM_COLUMNS: usize = 256;

/// A rectangle of output positions, `oy × ox`, that all see the taps `ky × kx` inside the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Block {
    oy: (usize, usize),
    ox: (usize, usize),
    ky: (usize, usize),
    kx: (usize, usize),
}

impl Block {
    fn width(&self) -> usize {
        self.ox.1 - self.ox.0
    }

    fn positions(&self) -> usize {
        (self.oy.1 - self.oy.0) * self.width()
    }

    fn tap_cols(&self) -> usize {
        self.kx.1 - self.kx.0
    }

    fn taps(&self) -> usize {
        (self.ky.1 - self.ky.0) * self.tap_cols()
    }
}

/// Consecutive outputs along one axis (of `out`, input side `size`) that see the same range of
/// kernel offsets inside the input: `(outputs, offsets)` pairs, in order.
type Run = ((usize, usize), (usize, usize));

fn runs(out: usize, size: usize, k: usize, pad: usize) -> Vec<Run> {
    let mut v: Vec<Run> = Vec::new();
    for o in 0..out {
        // Input index o + t − pad lies in 0..size  ⇔  pad − o ≤ t < size + pad − o.
        let lo = pad.saturating_sub(o).min(k);
        let hi = k.min((size + pad).saturating_sub(o)).max(lo);
        match v.last_mut() {
            Some((r, t)) if *t == (lo, hi) && r.1 == o => r.1 = o + 1,
            _ => v.push(((o, o + 1), (lo, hi))),
        }
    }
    v
}

/// The blocks of `g` when it takes this path: stride 1, "same" padding (so its input gradient has
/// the same shape of problem), more than a 1×1 kernel, and an output plane of at most
/// [`MAX_PLANE`] positions.
pub(crate) fn blocks(g: &Geom) -> Option<Vec<Block>> {
    if g.stride != 1 || g.k < 2 || 2 * g.pad + 1 != g.k || g.ho * g.wo > MAX_PLANE {
        return None;
    }
    let rows = runs(g.ho, g.h, g.k, g.pad);
    let cols = runs(g.wo, g.w, g.k, g.pad);
    Some(
        rows.iter()
            .flat_map(|&(oy, ky)| cols.iter().map(move |&(ox, kx)| Block { oy, ox, ky, kx }))
            .collect(),
    )
}

/// `dst ← src`. A block's rows are runs of 1 to 4 values on these planes; `copy_from_slice` would
/// call `memcpy` for each, which cost more than the multiply-adds the blocks save. Up to 8 inline.
#[inline(always)]
fn copy_run<T: Elem>(dst: &mut [T], src: &[T]) {
    macro_rules! fixed {
        ($($n:literal)*) => {
            match dst.len() {
                $($n => {
                    if let (Ok(d), Ok(s)) = (<&mut [T; $n]>::try_from(&mut *dst), <&[T; $n]>::try_from(src)) {
                        *d = *s;
                    }
                })*
                _ => dst.copy_from_slice(src),
            }
        };
    }
    fixed!(1 2 3 4 5 6 7 8)
}

/// Images per gemm for a block of `positions` per image, at most `count`.
fn images_per_gemm(positions: usize, count: usize) -> usize {
    GEMM_COLUMNS
        .div_ceil(positions.max(1))
        .clamp(1, count.max(1))
}

/// `wb` ← the weight's columns for the block's taps: O × C·|taps|.
fn gather_weight<T: Elem>(g: &Geom, b: &Block, wt: &[T], wb: &mut Vec<T>) {
    let kk = g.k * g.k;
    wb.clear();
    for o in 0..g.o {
        for c in 0..g.c {
            let w = &wt[(o * g.c + c) * kk..][..kk];
            for ky in b.ky.0..b.ky.1 {
                wb.extend_from_slice(&w[ky * g.k + b.kx.0..ky * g.k + b.kx.1]);
            }
        }
    }
}

/// `n` images' values for the block: C·|taps| rows (pitch `ld`), each the images' positions side by
/// side. The images are the inner loop: a block's run per image is 1 to 4 values here.
fn unfold<T: Elem>(g: &Geom, b: &Block, xs: &[T], n: usize, col: &mut [T], ld: usize) {
    let (np, nw) = (b.positions(), b.width());
    let (in_len, plane) = (g.c * g.h * g.w, g.h * g.w);
    let mut r = 0;
    for c in 0..g.c {
        for ky in b.ky.0..b.ky.1 {
            for kx in b.kx.0..b.kx.1 {
                let row = &mut col[r * ld..][..n * np];
                r += 1;
                for (i, oy) in (b.oy.0..b.oy.1).enumerate() {
                    let off = c * plane + (oy + ky - g.pad) * g.w + b.ox.0 + kx - g.pad;
                    for (j, dst) in row.chunks_exact_mut(np).enumerate() {
                        copy_run(&mut dst[i * nw..][..nw], &xs[j * in_len + off..][..nw]);
                    }
                }
            }
        }
    }
}

/// The rows of one image's block in an O-row matrix (pitch `ld`, the image's columns first) and the
/// matching runs of the image's planes (O × Ho × Wo): `(channel, matrix offset, plane offset,
/// length)`.
fn block_runs(
    g: &Geom,
    b: &Block,
    ld: usize,
) -> impl Iterator<Item = (usize, usize, usize, usize)> {
    let (nw, p) = (b.width(), g.ho * g.wo);
    let (oy, ox0, wo) = (b.oy, b.ox.0, g.wo);
    (0..g.o).flat_map(move |o| {
        (oy.0..oy.1)
            .enumerate()
            .map(move |(i, y)| (o, o * ld + i * nw, o * p + y * wo + ox0, nw))
    })
}

/// `ys ← conv(xs, wt) + bias` for a run of whole images (`xs`: count × C × H × W, `ys`: count × O ×
/// Ho × Wo), every output value written once.
pub(crate) fn forward<T: Elem>(
    g: &Geom,
    blocks: &[Block],
    xs: &[T],
    wt: &[T],
    bias: Option<&[T]>,
    ys: &mut [T],
) -> candle_core::Result<()> {
    let (in_len, out_len) = (g.c * g.h * g.w, g.o * g.ho * g.wo);
    let count = xs.len() / in_len;
    let (mut wb, mut col, mut yb) = (Vec::new(), Vec::new(), Vec::new());
    for b in blocks {
        let (np, kd) = (b.positions(), g.c * b.taps());
        gather_weight(g, b, wt, &mut wb);
        let per = images_per_gemm(np, count);
        for first in (0..count).step_by(per) {
            let n = per.min(count - first);
            let ld = n * np;
            col.resize(kd * ld, T::ZERO);
            yb.resize(g.o * ld, T::ZERO);
            unfold(g, b, &xs[first * in_len..][..n * in_len], n, &mut col, ld);
            let xm = MatRef::rows(&col[..kd * ld], kd, ld);
            gemm(&mut yb, ld, MatRef::rows(&wb, g.o, kd), xm, false, false)?;
            for j in 0..n {
                let y = &mut ys[(first + j) * out_len..][..out_len];
                for (o, mo, po, len) in block_runs(g, b, ld) {
                    let bo = bias.map_or(T::ZERO, |bs| bs[o]);
                    let src = &yb[j * np + mo..][..len];
                    for (y, &v) in y[po..po + len].iter_mut().zip(src) {
                        *y = v + bo;
                    }
                }
            }
        }
    }
    Ok(())
}

/// `dw += Σ_images dy · unfold(x)ᵀ` (O × C·k·k) for a run of whole images.
pub(crate) fn weight_grad<T: Elem>(
    g: &Geom,
    blocks: &[Block],
    xs: &[T],
    dys: &[T],
    dw: &mut [T],
) -> candle_core::Result<()> {
    let (in_len, out_len, kk) = (g.c * g.h * g.w, g.o * g.ho * g.wo, g.k * g.k);
    let count = xs.len() / in_len;
    let (mut col, mut dyb, mut dwb) = (Vec::new(), Vec::new(), Vec::new());
    for b in blocks {
        let (np, nt) = (b.positions(), b.taps());
        let kd = g.c * nt;
        if kd == 0 {
            continue;
        }
        dwb.clear();
        dwb.resize(g.o * kd, T::ZERO);
        let per = images_per_gemm(np, count);
        for first in (0..count).step_by(per) {
            let n = per.min(count - first);
            let ld = n * np;
            col.resize(kd * ld, T::ZERO);
            dyb.resize(g.o * ld, T::ZERO);
            unfold(g, b, &xs[first * in_len..][..n * in_len], n, &mut col, ld);
            for j in 0..n {
                let dy = &dys[(first + j) * out_len..][..out_len];
                for (_, mo, po, len) in block_runs(g, b, ld) {
                    copy_run(&mut dyb[j * np + mo..][..len], &dy[po..po + len]);
                }
            }
            let dym = MatRef::rows(&dyb[..g.o * ld], g.o, ld);
            let xm = MatRef::rows(&col[..kd * ld], kd, ld).t();
            gemm(&mut dwb, kd, dym, xm, true, false)?;
        }
        for o in 0..g.o {
            for c in 0..g.c {
                let src = &dwb[o * kd + c * nt..][..nt];
                let dst = &mut dw[(o * g.c + c) * kk..][..kk];
                for (t, &v) in src.iter().enumerate() {
                    let (ky, kx) = (b.ky.0 + t / b.tap_cols(), b.kx.0 + t % b.tap_cols());
                    dst[ky * g.k + kx] += v;
                }
            }
        }
    }
    Ok(())
}
