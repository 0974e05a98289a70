//! Our own CPU kernels for the layers where candle 0.11 is slow or wrong, as candle custom ops.
//!
//! candle's CPU backend allocates a fresh buffer for every elementwise op, broadcasts the bias of a
//! linear layer in a separate pass, and computes conv2d's backward with direct loops that cost ~5× the
//! forward. Training LeNet-5 that way ran at a sixth of PyTorch's speed on the same cores. The ops here
//! keep the autograd graph (they are candle `CustomOp` nodes, so masks, hooks and the optimizer see
//! ordinary gradients) but do their work in a few large passes:
//!
//! - [`linear()`]: `y = act(x·Wᵀ + b)` in one gemm with the bias preloaded into the output and the
//!   ReLU applied in place; backward masks the incoming gradient once and runs two gemms (`dx = g·W`,
//!   `dW = gᵀ·x`) plus a column sum, skipping `dx` when the input needs no gradient.
//! - [`conv2d()`]: stride-1 convolutions run [`direct`]ly on a flat padded grid (SIMD stencils for
//!   the forward pass, `dW` and `dx`, no column matrix); strided ones im2col + gemm per image for the
//!   forward pass, `dW` and `dx` (col2im), several images per gemm where planes are small, and
//!   planes of at most 4 positions by blocks (`edge.rs`) that skip the padding. The batch is split
//!   between threads; `dx` is skipped for
//!   the network's input. [`conv::conv2d_affine`] folds an eval-mode BatchNorm, a residual and a
//!   ReLU into the same op; [`conv_bn::conv2d_batch_norm_train`] runs a convolution and the
//!   train-mode BatchNorm after it as one op.
//! - [`pool::max_pool2d`]: any kernel, stride and padding, the gradient routed to each window's first
//!   maximum as PyTorch does.
//! - [`bn::batch_norm_train`]: BatchNorm's training-mode forward and backward in two passes per
//!   channel.
//!
//! Every op runs on the CPU only; on other devices the layers use candle's own ops. Every op is tested
//! against the equivalent composition of candle ops and against finite differences
//! (`tests/kernels.rs`, `tests/kernels_pool_bn.rs`).

pub mod bn;
pub mod conv;
pub mod conv_bn;
pub mod direct;
mod edge;
pub mod linear;
pub mod pool;

pub use conv::conv2d;
pub use linear::{linear, Activation};

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, Layout, Storage, Tensor};

/// Element types the kernels run on: `f32` for training, `f64` for finite-difference tests.
pub trait Elem:
    candle_core::WithDType + Default + std::ops::AddAssign + std::ops::Mul<Output = Self>
{
    /// Zero.
    const ZERO: Self;
    /// One.
    const ONE: Self;
}

impl Elem for f32 {
    const ZERO: Self = 0.0;
    const ONE: Self = 1.0;
}

impl Elem for f64 {
    const ZERO: Self = 0.0;
    const ONE: Self = 1.0;
}

/// The contiguous elements of a CPU storage under `layout`, or an error naming `what`.
pub(crate) fn contiguous<'a, T: Elem>(
    op: &str,
    what: &str,
    storage: &'a CpuStorage,
    layout: &Layout,
) -> candle_core::Result<&'a [T]> {
    let v = T::cpu_storage_as_slice(storage).map_err(|_| {
        candle_core::Error::Msg(format!(
            "{op}: {what} has dtype {:?}, expected {:?} like the other inputs",
            storage.dtype(),
            T::DTYPE
        ))
    })?;
    let (a, b) = layout
        .contiguous_offsets()
        .ok_or_else(|| candle_core::Error::Msg(format!("{op}: {what} must be contiguous")))?;
    v.get(a..b)
        .ok_or_else(|| candle_core::Error::Msg(format!("{op}: {what} layout out of bounds")))
}

/// Runs `f` on the contiguous CPU elements of `t` (made contiguous first when needed).
pub(crate) fn with_cpu<T: Elem, R>(
    op: &str,
    what: &str,
    t: &Tensor,
    f: impl FnOnce(&[T]) -> candle_core::Result<R>,
) -> candle_core::Result<R> {
    let t = t.contiguous()?;
    let (storage, layout) = t.storage_and_layout();
    match &*storage {
        Storage::Cpu(s) => f(contiguous(op, what, s, layout)?),
        _ => candle_core::bail!("{op}: {what} is not on the CPU"),
    }
}

/// Wraps a result vector as a tensor of `shape` on the CPU (no copy).
pub(crate) fn tensor<T: Elem>(v: Vec<T>, shape: &[usize]) -> candle_core::Result<Tensor> {
    Tensor::from_vec(v, shape, &candle_core::Device::Cpu)
}

/// A vector of `n` elements whose contents the caller overwrites completely before reading.
///
/// Zero-filled: `vec![0; n]` is a calloc, which costs nothing extra on fresh pages but is a
/// `memset` on memory the allocator reuses (the `deepcomp` binary keeps freed memory). The direct
/// convolution's outputs, written once per element from the grid, skip it (`Vec::with_capacity`
/// and `MaybeUninit` writes, see [`direct::Flat::grid_to`]).
pub(crate) fn buffer<T: Elem>(n: usize) -> Vec<T> {
    vec![T::ZERO; n]
}

/// Whether this CPU runs the AVX2 + FMA variants of [`multiversion!`] functions.
#[inline]
pub(crate) fn wide() -> bool {
    direct::isa() != direct::Isa::Plain
}

/// Defines `fn name<T: Elem>(args) -> R { body }` twice: as written, and compiled for AVX2 + FMA (the
/// same body inlined into a `#[target_feature]` function, so its loops vectorize 8 floats wide
/// instead of the x86-64 baseline's 4); calls pick the second where the CPU has the features. The
/// elementwise passes of BatchNorm use it; the convolution has its own SIMD kernels.
macro_rules! multiversion {
    ($(#[$m:meta])* $vis:vis fn $name:ident<T: Elem>($($a:ident : $t:ty),* $(,)?) $(-> $r:ty)? $body:block) => {
        $(#[$m])*
        #[inline]
        $vis fn $name<T: Elem>($($a: $t),*) $(-> $r)? {
            #[inline(always)]
            fn imp<T: Elem>($($a: $t),*) $(-> $r)? $body
            #[cfg(target_arch = "x86_64")]
            #[target_feature(enable = "avx2,fma")]
            fn avx2<T: Elem>($($a: $t),*) $(-> $r)? {
                imp($($a),*)
            }
            #[cfg(target_arch = "x86_64")]
            if $crate::kernels::wide() {
                // SAFETY: the CPU has AVX2 and FMA (`wide` detected them).
                return unsafe { avx2($($a),*) };
            }
            imp($($a),*)
        }
    };
}
pub(crate) use multiversion;

/// Threads the kernels split work across: those of the rayon pool the caller runs in (the global pool
/// has `RAYON_NUM_THREADS` threads, else one per logical core; a caller may `install` a smaller pool).
pub fn threads() -> usize {
    rayon::current_num_threads().max(1)
}

/// A read-only matrix view: element (i, j) at `data[i·rs + j·cs]`.
#[derive(Clone, Copy)]
pub(crate) struct MatRef<'a, T> {
    pub data: &'a [T],
    pub rows: usize,
    pub cols: usize,
    pub rs: usize,
    pub cs: usize,
}

impl<'a, T> MatRef<'a, T> {
    /// Row-major `rows × cols` matrix.
    pub fn rows(data: &'a [T], rows: usize, cols: usize) -> Self {
        Self {
            data,
            rows,
            cols,
            rs: cols,
            cs: 1,
        }
    }

    /// The transpose (a view, no copy).
    pub fn t(self) -> Self {
        Self {
            data: self.data,
            rows: self.cols,
            cols: self.rows,
            rs: self.cs,
            cs: self.rs,
        }
    }

    /// Whether every element the view can address lies inside `data`.
    fn in_bounds(&self) -> bool {
        self.rows == 0
            || self.cols == 0
            || (self.rows - 1) * self.rs + (self.cols - 1) * self.cs < self.data.len()
    }
}

/// `c ← a·b` (or `c ← c + a·b` with `accumulate`), `c` row-major `m × n` with row stride `c_rs`.
///
/// `parallel` lets gemm split the product across [`threads`]; kernels that already split work between
/// threads pass `false`. Shapes and bounds are checked, so the unsafe call below never reads or writes
/// outside the slices.
pub(crate) fn gemm<T: Elem>(
    c: &mut [T],
    c_rs: usize,
    a: MatRef<'_, T>,
    b: MatRef<'_, T>,
    accumulate: bool,
    parallel: bool,
) -> candle_core::Result<()> {
    let (m, k, n) = (a.rows, a.cols, b.cols);
    if b.rows != k {
        candle_core::bail!("gemm: inner dimensions differ ({m}×{k} · {}×{n})", b.rows);
    }
    if !a.in_bounds() || !b.in_bounds() {
        candle_core::bail!("gemm: operand view out of bounds");
    }
    if m == 0 || n == 0 {
        return Ok(());
    }
    if c_rs < n || (m - 1) * c_rs + n > c.len() {
        candle_core::bail!("gemm: output of {} elements cannot hold {m}×{n}", c.len());
    }
    if k == 0 {
        if !accumulate {
            for row in c.chunks_mut(c_rs).take(m) {
                row[..n].fill(T::ZERO);
            }
        }
        return Ok(());
    }
    let threads = threads();
    let parallelism = if parallel && threads > 1 && m * n * k >= 1 << 16 {
        gemm::Parallelism::Rayon(threads)
    } else {
        gemm::Parallelism::None
    };
    // SAFETY: all three views were checked to lie inside their slices above; `c` is borrowed mutably,
    // so it cannot alias `a` or `b`.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            c.as_mut_ptr(),
            1,
            c_rs as isize,
            accumulate,
            a.data.as_ptr(),
            a.cs as isize,
            a.rs as isize,
            b.data.as_ptr(),
            b.cs as isize,
            b.rs as isize,
            T::ONE,
            T::ONE,
            false,
            false,
            false,
            parallelism,
        );
    }
    Ok(())
}
