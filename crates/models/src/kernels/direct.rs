//! Direct stride-1 convolution on a flat padded grid: no column matrix, no packing of the image.
//!
//! With stride 1, output position (oy, ox) reads input (oy + ky − p, ox + kx − p). Pad each input
//! plane with p zeros on every side into a plane of `hp × wp` (`wp = w + 2p`) and index the output on
//! the same row pitch, `q = oy·wp + ox`: the tap (ky, kx) then reads padded element `q + ky·wp + kx`
//! for every q. Each output row gains `wp − wo` positions that are computed and thrown away, and in
//! exchange the whole convolution is a one-dimensional stencil over contiguous memory,
//!
//! ```text
//! y[o][q] = Σ_c Σ_t w[o][c][t] · xp[c][q + off_t]        off_t = ky·wp + kx,  t = (ky, kx)
//! ```
//!
//! which vectorizes along q with plain unaligned loads. The f32 kernels keep a block of output
//! channels × a run of q in registers and stream the C·k·k taps through it (one load per vector of q,
//! one broadcast per weight). The weight gradient is the same sum with the roles turned,
//! `dW[o][c][t] = Σ_q dy[o][q] · xp[c][q + off_t]` over the grid (garbage positions of `dy` are zero),
//! and the input gradient is this forward pass run on `dy` padded by k − 1 − p with the rotated,
//! channel-swapped kernel.
//!
//! Compared with im2col + gemm per image (the path in [`super::conv`] for strided convolutions) this
//! writes and re-reads no C·k·k × Ho·Wo column matrix and packs nothing, which is what made ResNet-20's
//! 16-channel layers memory-bound. x86-64 machines with AVX2 + FMA (or AVX-512F) run the SIMD kernels,
//! chosen at run time; elsewhere, and for f64 (the finite-difference tests), the same loops run in
//! plain Rust.

use std::mem::MaybeUninit;

use super::{multiversion, Elem};

/// Geometry of one stride-1 convolution on the flat grid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Flat {
    /// Input channels.
    pub c: usize,
    /// Input height and width.
    pub h: usize,
    pub w: usize,
    /// Output channels.
    pub o: usize,
    /// Kernel side.
    pub k: usize,
    /// Zero padding on every side.
    pub pad: usize,
    /// Output height and width.
    pub ho: usize,
    pub wo: usize,
    /// Padded width: the row pitch of both the padded input and the output grid.
    pub wp: usize,
    /// Grid positions computed per output channel (`ho·wp` rounded up to a multiple of 16).
    pub qs: usize,
    /// Floats per padded input plane, including the zero tail every tap may read past `hp·wp`.
    pub ps: usize,
}

/// Lanes the grid is rounded to (the widest vector, AVX-512's 16 f32).
const ROUND: usize = 16;

impl Flat {
    /// The geometry for input C × H × W, O output channels, a k × k kernel, padding `pad`, stride 1;
    /// `None` when the kernel does not fit or the padding is k or more (no tap would see the input).
    pub fn new(c: usize, h: usize, w: usize, o: usize, k: usize, pad: usize) -> Option<Self> {
        if k == 0 || pad >= k || h + 2 * pad < k || w + 2 * pad < k {
            return None;
        }
        let (hp, wp) = (h + 2 * pad, w + 2 * pad);
        let (ho, wo) = (hp - k + 1, wp - k + 1);
        let qs = (ho * wp).div_ceil(ROUND) * ROUND;
        // The last grid position reads `qs − 1 + (k − 1)·wp + k − 1`.
        let ps = (hp * wp).max(qs + (k - 1) * (wp + 1)).div_ceil(ROUND) * ROUND;
        Some(Self {
            c,
            h,
            w,
            o,
            k,
            pad,
            ho,
            wo,
            wp,
            qs,
            ps,
        })
    }

    /// The convolution that computes this one's input gradient: `dy` (O × Ho × Wo) padded by k − 1 − p
    /// and convolved with the rotated kernel gives C × H × W.
    pub fn transposed(&self) -> Option<Self> {
        let t = Self::new(
            self.o,
            self.ho,
            self.wo,
            self.c,
            self.k,
            self.k - 1 - self.pad,
        )?;
        (t.ho == self.h && t.wo == self.w).then_some(t)
    }

    /// Taps per channel: k·k.
    pub fn kk(&self) -> usize {
        self.k * self.k
    }

    /// Offsets of the k·k taps inside a padded plane.
    fn taps(&self) -> Vec<usize> {
        (0..self.k)
            .flat_map(|ky| (0..self.k).map(move |kx| ky * self.wp + kx))
            .collect()
    }

    /// Offsets into the padded image of all C·k·k (channel, tap) pairs, in weight order.
    pub fn offsets(&self) -> Vec<usize> {
        let taps = self.taps();
        (0..self.c)
            .flat_map(|c| taps.iter().map(move |&t| c * self.ps + t))
            .collect()
    }

    /// Floats of one padded image (C planes of `ps`).
    pub fn padded_len(&self) -> usize {
        self.c * self.ps
    }

    /// Floats of one output grid (O rows of `qs`).
    pub fn grid_len(&self) -> usize {
        self.o * self.qs
    }

    /// The weight (O × C·k·k, PyTorch's layout) transposed to C·k·k × O, as [`Flat::forward`] reads
    /// it: the weights of neighbouring output channels for one tap sit side by side.
    pub fn transpose<T: Elem>(&self, w: &[T]) -> Vec<T> {
        let kd = self.c * self.kk();
        let mut t = vec![T::ZERO; w.len()];
        for (o, row) in w.chunks_exact(kd).enumerate() {
            for (j, &v) in row.iter().enumerate() {
                t[j * self.o + o] = v;
            }
        }
        t
    }

    /// Writes image `img` (C × H × W) into `xp` (C planes of `ps`): zero borders, zero tail.
    pub fn pad_image<T: Elem>(&self, img: &[T], xp: &mut [T]) {
        let (h, w, p, wp) = (self.h, self.w, self.pad, self.wp);
        for (src, dst) in img.chunks_exact(h * w).zip(xp.chunks_exact_mut(self.ps)) {
            dst[..p * wp].fill(T::ZERO);
            for (y, row) in src.chunks_exact(w).enumerate() {
                let d = &mut dst[(y + p) * wp..(y + p + 1) * wp];
                d[..p].fill(T::ZERO);
                d[p..p + w].copy_from_slice(row);
                d[p + w..].fill(T::ZERO);
            }
            dst[(h + p) * wp..].fill(T::ZERO);
        }
    }

    /// Writes output gradient `dy` (O × Ho × Wo) onto the grid (O rows of `qs`), zero at the
    /// positions past each row's Wo and past Ho·wp, so they add nothing to the weight gradient.
    pub fn grid_from<T: Elem>(&self, dy: &[T], grid: &mut [T]) {
        let (ho, wo, wp) = (self.ho, self.wo, self.wp);
        for (src, dst) in dy.chunks_exact(ho * wo).zip(grid.chunks_exact_mut(self.qs)) {
            for (y, row) in src.chunks_exact(wo).enumerate() {
                let d = &mut dst[y * wp..(y + 1) * wp];
                d[..wo].copy_from_slice(row);
                d[wo..].fill(T::ZERO);
            }
            dst[ho * wp..].fill(T::ZERO);
        }
    }

    /// Writes the valid positions of the grid (O rows of `qs`) into `y` (O × Ho × Wo), every element
    /// once: `act(grid + bias[o] [+ r])`, with `r` (O × Ho × Wo) added when given and a ReLU when
    /// `relu`. `y` may be uninitialized (a fresh output buffer need not be zero-filled first).
    pub fn grid_to<T: Elem>(
        &self,
        grid: &[T],
        y: &mut [MaybeUninit<T>],
        bias: Option<&[T]>,
        r: Option<&[T]>,
        relu: bool,
    ) {
        let plane = self.ho * self.wo;
        assert!(grid.len() >= self.grid_len() && y.len() == self.o * plane);
        assert!(r.is_none_or(|r| r.len() == y.len()));
        assert!(bias.is_none_or(|b| b.len() >= self.o));
        store_image(self, grid, y, bias, r, relu);
    }

    /// The forward stencil on one padded image: `grid[o][q] = Σ_j w[o][j] · xp[off_j + q]` with
    /// `wt` the weight transposed to C·k·k × O ([`Flat::transpose`]) and `offs` from
    /// [`Flat::offsets`]. Every real output position `y·wp + x` (x < Wo) is written; the SIMD
    /// kernels skip the columns between rows when the width allows, so the others are unspecified.
    pub fn forward<T: Elem>(&self, xp: &[T], wt: &[T], offs: &[usize], grid: &mut [T]) {
        let w = wt;
        assert!(xp.len() >= self.padded_len() && grid.len() >= self.grid_len());
        assert!(w.len() == self.o * offs.len() && offs.len() == self.c * self.kk());
        assert!(offs.iter().all(|&off| off + self.qs <= xp.len()));
        if let (Some(xp), Some(w), Some(grid)) = (as_f32(xp), as_f32(w), as_f32_mut(grid)) {
            if simd::forward(self, xp, w, offs, grid) {
                return;
            }
        }
        let qs = self.qs;
        for (o, row) in grid.chunks_exact_mut(qs).take(self.o).enumerate() {
            row.fill(T::ZERO);
            for (j, &off) in offs.iter().enumerate() {
                let wv = w[j * self.o + o];
                for (r, &x) in row.iter_mut().zip(&xp[off..off + qs]) {
                    *r += wv * x;
                }
            }
        }
    }

    /// Adds the weight gradient of a group of images, `dw[o][j] += Σ_i Σ_q grid_i[o][q] ·
    /// xp_i[off_j + q]`, to `dw` (O × C·k·k). Small planes are passed several at a time so that each
    /// register block sums over enough positions to pay for folding its lanes.
    pub fn weight_grad<T: Elem>(&self, grids: &[&[T]], xps: &[&[T]], offs: &[usize], dw: &mut [T]) {
        assert!(grids.len() == xps.len());
        assert!(grids.iter().all(|g| g.len() >= self.grid_len()));
        assert!(xps.iter().all(|x| x.len() >= self.padded_len()));
        assert!(dw.len() == self.o * offs.len() && offs.len() == self.c * self.kk());
        let shortest = xps.iter().map(|x| x.len()).min().unwrap_or(0);
        assert!(offs.iter().all(|&off| off + self.qs <= shortest));
        if let Some(dw32) = as_f32_mut(dw) {
            let gp: Vec<*const f32> = grids.iter().map(|g| g.as_ptr().cast::<f32>()).collect();
            let xq: Vec<*const f32> = xps.iter().map(|x| x.as_ptr().cast::<f32>()).collect();
            if simd::weight_grad(self, &gp, &xq, offs, dw32) {
                return;
            }
        }
        let qs = self.qs;
        for (grid, xp) in grids.iter().zip(xps) {
            for (o, row) in grid.chunks_exact(qs).take(self.o).enumerate() {
                for (j, &off) in offs.iter().enumerate() {
                    let mut s = T::ZERO;
                    for (&g, &x) in row.iter().zip(&xp[off..off + qs]) {
                        s += g * x;
                    }
                    dw[o * offs.len() + j] += s;
                }
            }
        }
    }

    /// Images per [`Flat::weight_grad`] call: enough that one call sums over ≥ 512 grid positions.
    pub fn group(&self) -> usize {
        512usize.div_ceil(self.qs).max(1)
    }
}

multiversion! {
/// [`Flat::grid_to`]'s loop (the shapes checked by the caller), compiled for AVX2 as a whole so
/// that the short rows (8 to 32 values) pay no dispatch each.
fn store_image<T: Elem>(
    f: &Flat,
    grid: &[T],
    y: &mut [MaybeUninit<T>],
    bias: Option<&[T]>,
    r: Option<&[T]>,
    relu: bool,
) {
    let (wo, wp, plane) = (f.wo, f.wp, f.ho * f.wo);
    let act = |v: T| if relu && v < T::ZERO { T::ZERO } else { v };
    for (o, (src, dst)) in grid.chunks_exact(f.qs).zip(y.chunks_exact_mut(plane)).enumerate() {
        let b = bias.map_or(T::ZERO, |b| b[o]);
        for (row, d) in dst.chunks_exact_mut(wo).enumerate() {
            let s = &src[row * wp..row * wp + wo];
            match r {
                Some(r) => {
                    let rr = &r[o * plane + row * wo..o * plane + (row + 1) * wo];
                    for ((d, &v), &rv) in d.iter_mut().zip(s).zip(rr) {
                        d.write(act(v + b + rv));
                    }
                }
                None => {
                    for (d, &v) in d.iter_mut().zip(s) {
                        d.write(act(v + b));
                    }
                }
            }
        }
    }
}
}

/// `v` as f32 when `T` is f32.
pub(crate) fn as_f32<T: Elem>(v: &[T]) -> Option<&[f32]> {
    (T::DTYPE == candle_core::DType::F32).then(|| {
        // SAFETY: T is f32 (checked through its dtype), so the slice is reinterpreted as itself.
        unsafe { std::slice::from_raw_parts(v.as_ptr().cast::<f32>(), v.len()) }
    })
}

/// `v` as mutable f32 when `T` is f32.
fn as_f32_mut<T: Elem>(v: &mut [T]) -> Option<&mut [f32]> {
    (T::DTYPE == candle_core::DType::F32).then(|| {
        // SAFETY: as in `as_f32`.
        unsafe { std::slice::from_raw_parts_mut(v.as_mut_ptr().cast::<f32>(), v.len()) }
    })
}

/// The instruction set the SIMD kernels use on this machine, chosen once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Isa {
    /// AVX-512F (16 f32 lanes).
    Avx512,
    /// AVX2 + FMA (8 lanes).
    Avx2,
    /// No SIMD kernel: the plain loops run.
    Plain,
}

/// The instruction set the direct-convolution kernels use here (`DEEPCOMP_ISA=avx2|plain` lowers it).
pub fn isa() -> Isa {
    simd::isa()
}

#[cfg(target_arch = "x86_64")]
mod simd {
    use super::{Flat, Isa};
    use std::arch::x86_64::*;
    use std::sync::OnceLock;

    pub fn isa() -> Isa {
        static ISA: OnceLock<Isa> = OnceLock::new();
        *ISA.get_or_init(|| {
            let cap = std::env::var("DEEPCOMP_ISA").unwrap_or_default();
            if cap != "avx2" && cap != "plain" && is_x86_feature_detected!("avx512f") {
                Isa::Avx512
            } else if cap != "plain"
                && is_x86_feature_detected!("avx2")
                && is_x86_feature_detected!("fma")
            {
                Isa::Avx2
            } else {
                Isa::Plain
            }
        })
    }

    /// Whether AVX2 + FMA are there (every AVX-512 machine has them; checked all the same).
    fn has_avx2() -> bool {
        static AVX2: OnceLock<bool> = OnceLock::new();
        *AVX2.get_or_init(|| is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma"))
    }

    /// The starts of the vectors of `lanes` that cover the grid: by output row when the output's
    /// width is a multiple of `lanes` (only real outputs computed: no vector spans the `wp − wo`
    /// padding columns between rows), else the whole grid in steps of `lanes`.
    fn starts(g: &Flat, lanes: usize, rows: bool) -> Vec<usize> {
        if rows {
            (0..g.ho)
                .flat_map(|y| (0..g.wo).step_by(lanes).map(move |x| y * g.wp + x))
                .collect()
        } else {
            (0..g.qs).step_by(lanes).collect()
        }
    }

    pub fn forward(g: &Flat, xp: &[f32], w: &[f32], offs: &[usize], grid: &mut [f32]) -> bool {
        // SAFETY: the ISA was detected on this machine; every vector start `q` is below `qs` and
        // `q + lanes ≤ qs` (rows: `q + lanes ≤ (ho − 1)·wp + wo`), so the kernels read `xp` at
        // `off + q + lane`, inside the plane (`ps` ≥ qs + largest tap offset, checked by `Flat::new`
        // and the asserts of the caller), and write `grid` rows of `qs` for o < O.
        unsafe {
            match isa() {
                Isa::Avx512 if g.wo.is_multiple_of(16) => {
                    avx512::forward(g, xp, w, offs, grid, &starts(g, 16, true))
                }
                // Rows of 8 (ResNet-20's 8 × 8 stage): 8-lane vectors along the rows compute 64
                // positions where 16-lane ones over the grid compute 80.
                Isa::Avx512 if g.wo.is_multiple_of(8) && has_avx2() => {
                    avx2::forward(g, xp, w, offs, grid, &starts(g, 8, true))
                }
                Isa::Avx512 => avx512::forward(g, xp, w, offs, grid, &starts(g, 16, false)),
                Isa::Avx2 => {
                    let rows = g.wo.is_multiple_of(8);
                    avx2::forward(g, xp, w, offs, grid, &starts(g, 8, rows))
                }
                Isa::Plain => return false,
            }
        }
        true
    }

    /// Pointers of the images' grids and padded planes, each checked by the caller to hold
    /// `grid_len` / `padded_len` floats.
    pub fn weight_grad(
        g: &Flat,
        grids: &[*const f32],
        xps: &[*const f32],
        offs: &[usize],
        dw: &mut [f32],
    ) -> bool {
        // SAFETY: as in `forward`, for every image of the group; `dw` holds O·C·k·k values
        // (asserted by the caller).
        unsafe {
            match isa() {
                // Rows of 16 and 32 skip the columns between rows; for rows of 8 the 8-lane
                // kernel measured slower than 16 lanes over the grid (the AVX-512 block is larger).
                Isa::Avx512 if g.wo.is_multiple_of(16) => {
                    avx512::weight_grad(g, grids, xps, offs, dw, &starts(g, 16, true))
                }
                Isa::Avx512 => avx512::weight_grad(g, grids, xps, offs, dw, &starts(g, 16, false)),
                Isa::Avx2 => {
                    let rows = g.wo.is_multiple_of(8);
                    avx2::weight_grad(g, grids, xps, offs, dw, &starts(g, 8, rows))
                }
                Isa::Plain => return false,
            }
        }
        true
    }

    /// The two kernels for one instruction set. `$mr × $nv` accumulators in the forward pass
    /// (output channels × vectors of q), `$mw × $nb` in the weight gradient (output channels ×
    /// (channel, tap) pairs).
    macro_rules! kernels {
        ($name:ident, $feat:literal, $zero:ident, $load:ident, $splat:ident,
         $fma:ident, $hsum:ident, $store:ident, $mr:expr, $nv:expr, $mw:expr, $nb:expr) => {
            pub mod $name {
                use super::*;

                /// One block: output channels `o0..o0 + M`, the N vectors of grid positions
                /// starting at `qv`.
                #[target_feature(enable = $feat)]
                #[inline]
                unsafe fn fwd_block<const M: usize, const N: usize>(
                    xp: *const f32,
                    w: *const f32,
                    o: usize,
                    offs: &[usize],
                    grid: *mut f32,
                    qs: usize,
                    o0: usize,
                    qv: [usize; N],
                ) {
                    unsafe {
                        let mut acc = [[$zero(); N]; M];
                        let mut wj = w.add(o0);
                        for &off in offs {
                            let x = xp.add(off);
                            let mut xv = [$zero(); N];
                            for (v, xv) in xv.iter_mut().enumerate() {
                                *xv = $load(x.add(qv[v]));
                            }
                            let wm = wj;
                            wj = wj.add(o);
                            for m in 0..M {
                                let wv = $splat(&*wm.add(m));
                                for v in 0..N {
                                    acc[m][v] = $fma(wv, xv[v], acc[m][v]);
                                }
                            }
                        }
                        for m in 0..M {
                            for v in 0..N {
                                $store(grid.add((o0 + m) * qs + qv[v]), acc[m][v]);
                            }
                        }
                    }
                }

                #[target_feature(enable = $feat)]
                unsafe fn fwd_rows<const M: usize, const NV: usize>(
                    g: &Flat,
                    xp: *const f32,
                    w: *const f32,
                    offs: &[usize],
                    grid: *mut f32,
                    o0: usize,
                    starts: &[usize],
                ) {
                    unsafe {
                        let (qs, o) = (g.qs, g.o);
                        let mut blocks = starts.chunks_exact(NV);
                        for b in &mut blocks {
                            let qv: [usize; NV] = std::array::from_fn(|v| b[v]);
                            fwd_block::<M, NV>(xp, w, o, offs, grid, qs, o0, qv);
                        }
                        for &q in blocks.remainder() {
                            fwd_block::<M, 1>(xp, w, o, offs, grid, qs, o0, [q]);
                        }
                    }
                }

                /// The forward stencil at the grid vectors starting at `starts` (each `L`
                /// positions, inside the grid's `qs`).
                #[target_feature(enable = $feat)]
                pub unsafe fn forward(
                    g: &Flat,
                    xp: &[f32],
                    w: &[f32],
                    offs: &[usize],
                    grid: &mut [f32],
                    starts: &[usize],
                ) {
                    unsafe {
                        let (xp, w, gp) = (xp.as_ptr(), w.as_ptr(), grid.as_mut_ptr());
                        fwd_all::<{ $mr }, { $nv }>(g, xp, w, offs, gp, starts);
                    }
                }

                #[target_feature(enable = $feat)]
                unsafe fn fwd_all<const MR: usize, const NV: usize>(
                    g: &Flat,
                    xp: *const f32,
                    w: *const f32,
                    offs: &[usize],
                    gp: *mut f32,
                    starts: &[usize],
                ) {
                    unsafe {
                        let mut o0 = 0;
                        while o0 + MR <= g.o {
                            fwd_rows::<MR, NV>(g, xp, w, offs, gp, o0, starts);
                            o0 += MR;
                        }
                        // The rest (fewer than MR rows: up to 11 with AVX-512's 12) in blocks of
                        // 4, then 2, then 1.
                        while o0 + 4 <= g.o {
                            fwd_rows::<4, NV>(g, xp, w, offs, gp, o0, starts);
                            o0 += 4;
                        }
                        if o0 + 2 <= g.o {
                            fwd_rows::<2, NV>(g, xp, w, offs, gp, o0, starts);
                            o0 += 2;
                        }
                        if o0 < g.o {
                            fwd_rows::<1, NV>(g, xp, w, offs, gp, o0, starts);
                        }
                    }
                }

                /// One block: output channels `o0..o0 + M` × pairs `j0..j0 + B`, summed over the
                /// grids of every image of the group.
                #[target_feature(enable = $feat)]
                #[inline]
                unsafe fn wg_block<const M: usize, const B: usize>(
                    grids: &[*const f32],
                    xps: &[*const f32],
                    offs: &[usize],
                    dw: *mut f32,
                    qs: usize,
                    o0: usize,
                    j0: usize,
                    starts: &[usize],
                ) {
                    unsafe {
                        let kd = offs.len();
                        let mut acc = [[$zero(); B]; M];
                        for (&grid, &xp) in grids.iter().zip(xps) {
                            let mut xs = [xp; B];
                            for (b, x) in xs.iter_mut().enumerate() {
                                *x = xp.add(offs[j0 + b]);
                            }
                            for &q in starts {
                                let mut d = [$zero(); M];
                                for (m, d) in d.iter_mut().enumerate() {
                                    *d = $load(grid.add((o0 + m) * qs + q));
                                }
                                for b in 0..B {
                                    let x = $load(xs[b].add(q));
                                    for m in 0..M {
                                        acc[m][b] = $fma(d[m], x, acc[m][b]);
                                    }
                                }
                            }
                        }
                        for m in 0..M {
                            for b in 0..B {
                                *dw.add((o0 + m) * kd + j0 + b) += $hsum(acc[m][b]);
                            }
                        }
                    }
                }

                #[target_feature(enable = $feat)]
                unsafe fn wg_rows<const M: usize>(
                    g: &Flat,
                    grids: &[*const f32],
                    xps: &[*const f32],
                    offs: &[usize],
                    dw: *mut f32,
                    o0: usize,
                    starts: &[usize],
                ) {
                    unsafe {
                        let kd = offs.len();
                        let mut j0 = 0;
                        while j0 + $nb <= kd {
                            wg_block::<M, { $nb }>(grids, xps, offs, dw, g.qs, o0, j0, starts);
                            j0 += $nb;
                        }
                        while j0 < kd {
                            wg_block::<M, 1>(grids, xps, offs, dw, g.qs, o0, j0, starts);
                            j0 += 1;
                        }
                    }
                }

                /// The weight gradient summed over the grid vectors starting at `starts`
                /// (positions they leave out hold zeros in the gradient grids).
                #[target_feature(enable = $feat)]
                pub unsafe fn weight_grad(
                    g: &Flat,
                    grids: &[*const f32],
                    xps: &[*const f32],
                    offs: &[usize],
                    dw: &mut [f32],
                    starts: &[usize],
                ) {
                    unsafe {
                        let dp = dw.as_mut_ptr();
                        let mut o0 = 0;
                        while o0 + $mw <= g.o {
                            wg_rows::<{ $mw }>(g, grids, xps, offs, dp, o0, starts);
                            o0 += $mw;
                        }
                        while o0 < g.o {
                            wg_rows::<1>(g, grids, xps, offs, dp, o0, starts);
                            o0 += 1;
                        }
                    }
                }
            }
        };
    }

    kernels!(
        avx2,
        "avx2,fma",
        _mm256_setzero_ps,
        _mm256_loadu_ps,
        _mm256_broadcast_ss,
        _mm256_fmadd_ps,
        hsum256,
        _mm256_storeu_ps,
        6,
        2,
        2,
        6
    );
    // AVX-512's weight-gradient block is 4 × 4, not 4 × 6: with 24 accumulators, 4 gradient rows
    // and a row of x, LLVM spilled nine accumulators to the stack inside the inner loop; the
    // weight gradient ran at about half the forward pass's rate and its speed varied ±25 % from run
    // to run. 4 × 4 keeps everything in registers (ResNet-20 training +30 % end to end).
    kernels!(
        avx512,
        "avx512f",
        _mm512_setzero_ps,
        _mm512_loadu_ps,
        splat512,
        _mm512_fmadd_ps,
        _mm512_reduce_add_ps,
        _mm512_storeu_ps,
        12,
        2,
        4,
        4
    );

    /// The sum of the 8 lanes.
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    fn hsum256(v: __m256) -> f32 {
        let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        let s = _mm_add_ss(s, _mm_shuffle_ps::<1>(s, s));
        _mm_cvtss_f32(s)
    }

    /// `_mm512_set1_ps` from a reference, to match `_mm256_broadcast_ss`'s signature.
    #[target_feature(enable = "avx512f")]
    #[inline]
    fn splat512(v: &f32) -> __m512 {
        _mm512_set1_ps(*v)
    }
}

#[cfg(not(target_arch = "x86_64"))]
mod simd {
    use super::{Flat, Isa};

    pub fn isa() -> Isa {
        Isa::Plain
    }

    pub fn forward(_: &Flat, _: &[f32], _: &[f32], _: &[usize], _: &mut [f32]) -> bool {
        false
    }

    pub fn weight_grad(
        _: &Flat,
        _: &[*const f32],
        _: &[*const f32],
        _: &[usize],
        _: &mut [f32],
    ) -> bool {
        false
    }
}
