//! 2-D max pooling with any square kernel, stride and padding (PyTorch `nn.MaxPool2d(k, s, p)`,
//! floor mode, dilation 1) as a candle custom op.
//!
//! Forward writes the maximum of every window; backward recomputes each window's winner from the
//! input (nothing is kept between the passes) and adds the output gradient to it. As in PyTorch's CPU
//! kernel the winner is the *first* maximum in row-major window order, except that a NaN always wins
//! (the last NaN of the window, since PyTorch keeps replacing its running maximum by every NaN it
//! meets). Padding counts as −∞ and never wins: with PyTorch's rule `padding ≤ kernel / 2` every window
//! holds at least one real element. Overlapping windows (`stride < kernel`) accumulate their gradients
//! into shared elements, so exactly one element per window receives that window's gradient.
//!
//! Both passes split the (image, channel) planes between threads.
//!
//! candle 0.11's own `max_pool2d` cannot serve here: its backward scales the gradient of each window's
//! maximum by 1/k² and misaligns windows when the side is not a multiple of k. On other devices
//! [`max_pool2d`] falls back to [`max_pool2d_reduce`], a max *reduction* that is only available for
//! non-overlapping, unpadded windows that tile the input.

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp1, CustomOp2, DType, Layout, Shape, Tensor};
use rayon::prelude::*;

use super::{buffer, contiguous, threads, Elem};
use crate::error::{ModelError, Result};

const NAME: &str = "deepcomp-max-pool2d";

/// Window elements visited below which a pass runs on the calling thread.
const PARALLEL_WORK: usize = 1 << 15;

/// Element types with a NaN test (the winner rule needs one).
trait PoolElem: Elem + PartialOrd {
    fn nan(self) -> bool;
    /// Bitwise equality (an integer compare, which vectorizes where a float compare needs NaN care).
    fn same_bits(self, other: Self) -> bool;
}

impl PoolElem for f32 {
    #[inline]
    fn nan(self) -> bool {
        self.is_nan()
    }
    #[inline]
    fn same_bits(self, other: Self) -> bool {
        self.to_bits() == other.to_bits()
    }
}

impl PoolElem for f64 {
    #[inline]
    fn nan(self) -> bool {
        self.is_nan()
    }
    #[inline]
    fn same_bits(self, other: Self) -> bool {
        self.to_bits() == other.to_bits()
    }
}

/// Geometry of one pooling: input (n, c, h, w), output (n, c, ho, wo).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Geom {
    n: usize,
    c: usize,
    h: usize,
    w: usize,
    k: usize,
    stride: usize,
    pad: usize,
    ho: usize,
    wo: usize,
}

impl Geom {
    /// Checks the hyper-parameters against the input dimensions; `None` when they do not fit.
    fn new(dims: &[usize], k: usize, stride: usize, pad: usize) -> Option<Self> {
        let &[n, c, h, w] = dims else {
            return None;
        };
        // Empty planes have no window to take a maximum of, even when padding would make one fit.
        if k == 0 || stride == 0 || pad > k / 2 || h == 0 || w == 0 {
            return None;
        }
        let out = |size: usize| crate::layers::conv_out_size(size, k, stride, pad);
        Some(Self {
            n,
            c,
            h,
            w,
            k,
            stride,
            pad,
            ho: out(h)?,
            wo: out(w)?,
        })
    }

    fn in_plane(&self) -> usize {
        self.h * self.w
    }

    fn out_plane(&self) -> usize {
        self.ho * self.wo
    }

    fn out_dims(&self) -> [usize; 4] {
        [self.n, self.c, self.ho, self.wo]
    }

    /// The input rows (or columns) `[start, end)` that output row (or column) `o` covers, clipped to
    /// `0..size`. Never empty: `pad ≤ k/2 < k` and the window lies inside the padded input.
    #[inline]
    fn span(&self, o: usize, size: usize) -> (usize, usize) {
        let start = o * self.stride;
        (
            start.saturating_sub(self.pad),
            (start + self.k - self.pad).min(size),
        )
    }

    /// The 2×2 window with stride 2 and no padding that most networks use (it has a fast path).
    fn is_2x2(&self) -> bool {
        self.k == 2 && self.stride == 2 && self.pad == 0
    }

    /// Whether a pass is worth splitting between threads.
    fn parallel(&self) -> bool {
        threads() > 1 && self.n * self.c * self.out_plane() * self.k * self.k >= PARALLEL_WORK
    }

    /// Planes per rayon task: enough that each task visits about [`PARALLEL_WORK`] / 8 elements.
    fn planes_per_task(&self) -> usize {
        let per_plane = (self.out_plane() * self.k * self.k).max(1);
        (PARALLEL_WORK / 8 / per_plane).max(1)
    }
}

/// Index within `plane` of the winner of the window covering rows `ys` and columns `xs`: the first
/// maximum in row-major order, or the last NaN (PyTorch's rule).
#[inline]
fn winner<T: PoolElem>(plane: &[T], w: usize, ys: (usize, usize), xs: (usize, usize)) -> usize {
    let mut best = ys.0 * w + xs.0;
    let mut max = plane[best];
    for y in ys.0..ys.1 {
        let row = y * w;
        for (x, &v) in plane[row + xs.0..row + xs.1].iter().enumerate() {
            if v > max || v.nan() {
                max = v;
                best = row + xs.0 + x;
            }
        }
    }
    best
}

/// Position (0..4, row-major) and value of the winner of a 2×2 window, by the rule of [`winner`].
#[inline(always)]
fn winner4<T: PoolElem>(v: [T; 4]) -> (usize, T) {
    let (mut best, mut max) = (0, v[0]);
    for (i, &x) in v.iter().enumerate().skip(1) {
        if x > max || x.nan() {
            max = x;
            best = i;
        }
    }
    (best, max)
}

/// Forward of one plane for the common 2×2 window, stride 2, no padding.
fn forward_plane_2x2<T: PoolElem>(g: &Geom, x: &[T], out: &mut [T]) {
    for (orow, rows) in out.chunks_exact_mut(g.wo).zip(x.chunks_exact(2 * g.w)) {
        let (r0, r1) = rows.split_at(g.w);
        for ((o, a), b) in orow
            .iter_mut()
            .zip(r0.chunks_exact(2))
            .zip(r1.chunks_exact(2))
        {
            *o = winner4([a[0], a[1], b[0], b[1]]).1;
        }
    }
}

/// Backward of one plane for the common 2×2 window, stride 2, no padding (`dx` zero on entry).
///
/// A plane without NaN takes a loop without data-dependent branches: the winner's position is
/// random, and branching on it mispredicted on about every other window (this loop was 15 % of a
/// LeNet-5 training step with a `match` on the winner, and disappears from the profile without). The
/// first element equal to the window's maximum wins, which is [`winner4`]'s rule when there is no
/// NaN. A plane holding a NaN goes window by window through [`winner4`].
fn backward_plane_2x2<T: PoolElem>(g: &Geom, x: &[T], dy: &[T], dx: &mut [T]) {
    let has_nan = x.iter().fold(false, |acc, v| acc | v.nan());
    for ((drow, rows), dxrows) in dy
        .chunks_exact(g.wo)
        .zip(x.chunks_exact(2 * g.w))
        .zip(dx.chunks_exact_mut(2 * g.w))
    {
        let (r0, r1) = rows.split_at(g.w);
        if has_nan {
            let (d0, d1) = dxrows.split_at_mut(g.w);
            for (j, &d) in drow.iter().enumerate() {
                let v = [r0[2 * j], r0[2 * j + 1], r1[2 * j], r1[2 * j + 1]];
                match winner4(v).0 {
                    0 => d0[2 * j] = d,
                    1 => d0[2 * j + 1] = d,
                    2 => d1[2 * j] = d,
                    _ => d1[2 * j + 1] = d,
                }
            }
            continue;
        }
        for (j, &d) in drow.iter().enumerate() {
            let (a0, a1, b0, b1) = (r0[2 * j], r0[2 * j + 1], r1[2 * j], r1[2 * j + 1]);
            // `max2` keeps the left operand on ties, so `m` is bit for bit the first maximal element
            // (even among +0.0 / −0.0), and the first element with `m`'s bits is the winner. Its
            // index is computed arithmetically and the gradient stored at a computed address: no
            // data-dependent branch.
            let max2 = |a: T, b: T| if b > a { b } else { a };
            let m = max2(max2(a0, a1), max2(b0, b1));
            let c0 = usize::from(!a0.same_bits(m));
            let c1 = usize::from(!a1.same_bits(m));
            let c2 = usize::from(!b0.same_bits(m));
            let idx = c0 * (1 + c1 * (1 + c2));
            dxrows[(idx >> 1) * g.w + 2 * j + (idx & 1)] = d;
        }
    }
}

/// Forward of one plane: `out[o] = max over window o of x`.
fn forward_plane<T: PoolElem>(g: &Geom, x: &[T], out: &mut [T]) {
    if g.is_2x2() {
        return forward_plane_2x2(g, x, out);
    }
    for (oy, row) in out.chunks_exact_mut(g.wo).enumerate() {
        let ys = g.span(oy, g.h);
        for (ox, o) in row.iter_mut().enumerate() {
            *o = x[winner(x, g.w, ys, g.span(ox, g.w))];
        }
    }
}

/// Backward of one plane: adds `dy[o]` to the winner of window o in `dx` (zero on entry).
fn backward_plane<T: PoolElem>(g: &Geom, x: &[T], dy: &[T], dx: &mut [T]) {
    if g.is_2x2() {
        return backward_plane_2x2(g, x, dy, dx);
    }
    for (oy, row) in dy.chunks_exact(g.wo).enumerate() {
        let ys = g.span(oy, g.h);
        for (ox, &d) in row.iter().enumerate() {
            dx[winner(x, g.w, ys, g.span(ox, g.w))] += d;
        }
    }
}

fn forward<T: PoolElem>(g: &Geom, x: &[T]) -> Vec<T> {
    let mut y = buffer::<T>(g.n * g.c * g.out_plane());
    let (ip, op) = (g.in_plane(), g.out_plane());
    if op == 0 {
        return y;
    }
    if g.parallel() {
        y.par_chunks_mut(op)
            .zip(x.par_chunks(ip))
            .with_min_len(g.planes_per_task())
            .for_each(|(out, xp)| forward_plane(g, xp, out));
    } else {
        for (out, xp) in y.chunks_mut(op).zip(x.chunks(ip)) {
            forward_plane(g, xp, out);
        }
    }
    y
}

fn backward<T: PoolElem>(g: &Geom, x: &[T], dy: &[T]) -> Vec<T> {
    let mut dx = buffer::<T>(x.len());
    let (ip, op) = (g.in_plane(), g.out_plane());
    if op == 0 || ip == 0 {
        return dx;
    }
    if g.parallel() {
        dx.par_chunks_mut(ip)
            .zip(x.par_chunks(ip))
            .zip(dy.par_chunks(op))
            .with_min_len(g.planes_per_task())
            .for_each(|((out, xp), dyp)| backward_plane(g, xp, dyp, out));
    } else {
        for ((out, xp), dyp) in dx.chunks_mut(ip).zip(x.chunks(ip)).zip(dy.chunks(op)) {
            backward_plane(g, xp, dyp, out);
        }
    }
    dx
}

/// Forward op on the input.
#[derive(Debug, Clone, Copy)]
struct MaxPool(Geom);

/// Backward op on (input, output gradient) → input gradient.
#[derive(Debug, Clone, Copy)]
struct MaxPoolBackward(Geom);

impl MaxPool {
    fn check(&self, layout: &Layout) -> candle_core::Result<()> {
        let g = &self.0;
        if layout.shape().dims() != [g.n, g.c, g.h, g.w] {
            candle_core::bail!(
                "{NAME}: input shape {:?} differs from the planned {:?}",
                layout.shape(),
                [g.n, g.c, g.h, g.w]
            );
        }
        Ok(())
    }
}

impl CustomOp1 for MaxPool {
    fn name(&self) -> &'static str {
        NAME
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        self.check(l)?;
        let g = &self.0;
        let out = match s {
            CpuStorage::F32(_) => {
                CpuStorage::F32(forward(g, contiguous::<f32>(NAME, "input", s, l)?))
            }
            CpuStorage::F64(_) => {
                CpuStorage::F64(forward(g, contiguous::<f64>(NAME, "input", s, l)?))
            }
            _ => candle_core::bail!(
                "{NAME}: only f32 and f64 are supported, got {:?}",
                s.dtype()
            ),
        };
        Ok((out, Shape::from(g.out_dims().to_vec())))
    }

    fn bwd(
        &self,
        arg: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<Option<Tensor>> {
        let dx = arg
            .contiguous()?
            .apply_op2_no_bwd(&grad.contiguous()?, &MaxPoolBackward(self.0))?;
        Ok(Some(dx))
    }
}

impl CustomOp2 for MaxPoolBackward {
    fn name(&self) -> &'static str {
        "deepcomp-max-pool2d-backward"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let g = &self.0;
        MaxPool(*g).check(l1)?;
        if l2.shape().dims() != g.out_dims() {
            candle_core::bail!(
                "{NAME}: output gradient shape {:?} does not match the output {:?}",
                l2.shape(),
                g.out_dims()
            );
        }
        let op = "deepcomp-max-pool2d-backward";
        let out = match s1 {
            CpuStorage::F32(_) => CpuStorage::F32(backward(
                g,
                contiguous::<f32>(op, "input", s1, l1)?,
                contiguous::<f32>(op, "output gradient", s2, l2)?,
            )),
            CpuStorage::F64(_) => CpuStorage::F64(backward(
                g,
                contiguous::<f64>(op, "input", s1, l1)?,
                contiguous::<f64>(op, "output gradient", s2, l2)?,
            )),
            _ => candle_core::bail!("{op}: only f32 and f64 are supported, got {:?}", s1.dtype()),
        };
        Ok((out, l1.shape().clone()))
    }
}

/// Max pooling of `xs` (N, C, H, W) with a `kernel × kernel` window moved by `stride`, the input
/// padded by `padding` on every side: PyTorch's `nn.MaxPool2d(kernel, stride, padding)` (floor mode;
/// the output side is `⌊(size + 2·padding − kernel) / stride⌋ + 1`).
///
/// The gradient of each window goes to exactly one input element, the first maximum in row-major
/// window order (a NaN wins), and overlapping windows accumulate, as in PyTorch. On the CPU (f32 or
/// f64) this runs our own op; on other devices it falls back to [`max_pool2d_reduce`] when
/// `kernel == stride`, `padding == 0` and the sides are multiples of `kernel`, and fails otherwise.
///
/// # Errors
/// [`ModelError::Config`] naming `kernel` or `stride` when 0, `padding` when above `kernel / 2`
/// (PyTorch's limit), `dtype` for an element type other than f32 / f64 on the CPU, or `device` for a
/// pooling the non-CPU fallback cannot do; [`ModelError::Shape`] for an input that is not 4-D or
/// smaller than one window.
pub fn max_pool2d(xs: &Tensor, kernel: usize, stride: usize, padding: usize) -> Result<Tensor> {
    let config = |field: &str, reason: String| ModelError::Config {
        field: field.into(),
        reason,
    };
    if kernel == 0 {
        return Err(config(
            "kernel",
            "max pool kernel must be at least 1".into(),
        ));
    }
    if stride == 0 {
        return Err(config(
            "stride",
            "max pool stride must be at least 1".into(),
        ));
    }
    if padding > kernel / 2 {
        return Err(config(
            "padding",
            format!(
                "max pool padding {padding} exceeds half the kernel {kernel} (PyTorch's limit)"
            ),
        ));
    }
    let dims = xs.dims();
    let Some(g) = Geom::new(dims, kernel, stride, padding) else {
        let min = (kernel - 2 * padding).max(1);
        let expected = match dims {
            [n, c, h, w] => vec![*n, *c, (*h).max(min), (*w).max(min)],
            _ => vec![0, 0, min, min],
        };
        return Err(ModelError::Shape {
            name: format!(
                "max pool {kernel}x{kernel} (stride {stride}, padding {padding}) input (N, C, H, W) with sides of at least {min}"
            ),
            expected,
            found: dims.to_vec(),
        });
    };
    if !xs.device().is_cpu() {
        if kernel == stride && padding == 0 && g.h % kernel == 0 && g.w % kernel == 0 {
            return max_pool2d_reduce(xs, kernel);
        }
        return Err(config(
            "device",
            format!(
                "max pool {kernel}x{kernel} with stride {stride} and padding {padding} on a {}x{} input \
                 runs on the CPU only; on {:?} only kernel == stride, no padding and sides divisible by \
                 the kernel are supported",
                g.h,
                g.w,
                xs.device().location()
            ),
        ));
    }
    if !matches!(xs.dtype(), DType::F32 | DType::F64) {
        return Err(config(
            "dtype",
            format!("max pool supports f32 and f64 inputs, got {:?}", xs.dtype()),
        ));
    }
    Ok(xs.contiguous()?.apply_op1(MaxPool(g))?)
}

/// Max pooling with `kernel == stride`, no padding, on an input whose sides are multiples of
/// `kernel`, composed of candle ops (a reshape and two max reductions); works on every device.
///
/// Unlike [`max_pool2d`], a window with several elements tied for the maximum passes the full
/// gradient to *each* of them (candle's backward of a max reduction). After a ReLU this is harmless
/// for the common tie, a window of zeros: the ReLU's own backward drops the gradient at 0.
///
/// # Errors
/// [`ModelError::Config`] naming `kernel` when 0; [`ModelError::Shape`] for an input that is not 4-D
/// or whose sides are not multiples of `kernel`.
pub fn max_pool2d_reduce(xs: &Tensor, kernel: usize) -> Result<Tensor> {
    if kernel == 0 {
        return Err(ModelError::Config {
            field: "kernel".into(),
            reason: "max pool kernel must be at least 1".into(),
        });
    }
    let dims = xs.dims();
    let &[n, c, h, w] = dims else {
        return Err(ModelError::Shape {
            name: "max pool input (N, C, H, W)".into(),
            expected: vec![0, 0, kernel, kernel],
            found: dims.to_vec(),
        });
    };
    if h % kernel != 0 || w % kernel != 0 || h == 0 || w == 0 {
        return Err(ModelError::Shape {
            name: format!("max pool {kernel}x{kernel} input with sides divisible by {kernel}"),
            expected: vec![
                n,
                c,
                h.div_ceil(kernel).max(1) * kernel,
                w.div_ceil(kernel).max(1) * kernel,
            ],
            found: dims.to_vec(),
        });
    }
    Ok(xs
        .reshape((n, c, h / kernel, kernel, w / kernel, kernel))?
        .max(5)?
        .max(3)?)
}
