//! The compressed run-time weight form and its kernels.
//!
//! A weight matrix of `rows × row_len` (a fully connected layer `[out, in]`, or a convolution
//! `[cout, cin·k·k]`) is kept as, per row, a run of entries `(gap: u8, code)`: the column of an
//! entry is the previous column plus `gap` (the first entry's gap is its column), and its value is
//! `codebook[code]`. A gap larger than 255 is bridged by filler entries of gap 255 whose code points at
//! a `0.0` appended to the codebook (EIE's relative indexing, Han et al. 2016 §2 and Fig. 2). With
//! codebooks of up to 255 centroids the code is one byte, so a kept weight costs 2 bytes.

use rayon::prelude::*;

use crate::error::{Result, RuntimeError};

/// Cluster codes, one per entry, in the narrowest width that holds the codebook.
#[derive(Debug, Clone)]
pub(crate) enum Codes {
    U8(Vec<u8>),
    U16(Vec<u16>),
    U32(Vec<u32>),
}

impl Codes {
    fn bytes(&self) -> usize {
        match self {
            Codes::U8(v) => v.len(),
            Codes::U16(v) => v.len() * 2,
            Codes::U32(v) => v.len() * 4,
        }
    }
}

/// One code width.
pub(crate) trait Code: Copy + Send + Sync {
    fn idx(self) -> usize;
}
impl Code for u8 {
    #[inline(always)]
    fn idx(self) -> usize {
        self as usize
    }
}
impl Code for u16 {
    #[inline(always)]
    fn idx(self) -> usize {
        self as usize
    }
}
impl Code for u32 {
    #[inline(always)]
    fn idx(self) -> usize {
        self as usize
    }
}

/// A sparse, weight-shared matrix in relative-index + code form (see the module documentation).
#[derive(Debug, Clone)]
pub(crate) struct SparseRows {
    pub rows: usize,
    pub row_len: usize,
    /// Entry range of row `r`: `row_ptr[r]..row_ptr[r + 1]`.
    row_ptr: Vec<u32>,
    gaps: Vec<u8>,
    codes: Codes,
    codebook: Vec<f32>,
    /// Kept weights (without fillers).
    pub nonzero: usize,
    /// Dense-decoded mode ([`Self::densify`]): the full row-major `f32` matrix; the compressed
    /// fields are then empty.
    dense: Vec<f32>,
}

const MAX_GAP: usize = u8::MAX as usize;

impl SparseRows {
    /// Builds the form from row-major `positions` (strictly ascending, `< rows·row_len`) with their
    /// `codes` into `codebook`. `name` is for errors.
    pub fn new(
        name: &str,
        rows: usize,
        row_len: usize,
        codebook: &[f32],
        positions: &[u64],
        codes: &[u32],
    ) -> Result<Self> {
        let bad = |reason: String| RuntimeError::Tensor {
            name: name.to_string(),
            reason,
        };
        if positions.len() != codes.len() {
            return Err(bad(format!(
                "{} positions but {} codes",
                positions.len(),
                codes.len()
            )));
        }
        if let Some(v) = codebook.iter().find(|v| !v.is_finite()) {
            return Err(bad(format!("codebook holds the non-finite value {v}")));
        }
        let numel = (rows as u64).saturating_mul(row_len as u64);
        let orig_len = codebook.len();
        let mut codebook = codebook.to_vec();
        let zero = match codebook.iter().position(|&v| v == 0.0) {
            Some(z) => z as u32,
            None => {
                codebook.push(0.0);
                (codebook.len() - 1) as u32
            }
        };
        let mut row_ptr = Vec::with_capacity(rows + 1);
        let mut gaps = Vec::with_capacity(positions.len());
        let mut wide: Vec<u32> = Vec::with_capacity(positions.len());
        row_ptr.push(0u32);
        let mut k = 0usize;
        let mut prev_pos: Option<u64> = None;
        for r in 0..rows {
            let end = (r as u64 + 1) * row_len as u64;
            let mut col = 0usize;
            let mut first = true;
            while k < positions.len() && positions[k] < end {
                let p = positions[k];
                if prev_pos.is_some_and(|q| p <= q) {
                    return Err(bad(format!(
                        "positions not strictly ascending at entry {k}"
                    )));
                }
                prev_pos = Some(p);
                let c = codes[k];
                if c as usize >= orig_len {
                    return Err(bad(format!(
                        "code {c} at entry {k} is outside the codebook of {}",
                        orig_len
                    )));
                }
                let target = (p - r as u64 * row_len as u64) as usize;
                let mut gap = if first { target } else { target - col };
                while gap > MAX_GAP {
                    gaps.push(MAX_GAP as u8);
                    wide.push(zero);
                    gap -= MAX_GAP;
                }
                gaps.push(gap as u8);
                wide.push(c);
                col = target;
                first = false;
                k += 1;
            }
            let n =
                u32::try_from(gaps.len()).map_err(|_| bad("more than 2^32 entries".to_string()))?;
            row_ptr.push(n);
        }
        if k < positions.len() {
            return Err(bad(format!(
                "position {} is outside the {numel} weights",
                positions[k]
            )));
        }
        let codes = if codebook.len() <= 256 {
            Codes::U8(wide.iter().map(|&c| c as u8).collect())
        } else if codebook.len() <= 65536 {
            Codes::U16(wide.iter().map(|&c| c as u16).collect())
        } else {
            Codes::U32(wide)
        };
        Ok(Self {
            rows,
            row_len,
            row_ptr,
            gaps,
            codes,
            codebook,
            nonzero: positions.len(),
            dense: Vec::new(),
        })
    }

    /// Builds the form from a dense row-major matrix (for weights stored raw in the file): the codebook
    /// is the distinct nonzero values.
    pub fn from_dense(name: &str, rows: usize, row_len: usize, data: &[f32]) -> Result<Self> {
        let mut values: Vec<f32> = data.iter().copied().filter(|&v| v != 0.0).collect();
        values.sort_by(f32::total_cmp);
        values.dedup();
        let mut positions = Vec::new();
        let mut codes = Vec::new();
        for (i, &v) in data.iter().enumerate() {
            if v != 0.0 {
                positions.push(i as u64);
                let c = values
                    .binary_search_by(|x| x.total_cmp(&v))
                    .unwrap_or_default();
                codes.push(c as u32);
            }
        }
        Self::new(name, rows, row_len, &values, &positions, &codes)
    }

    /// Whether the matrix was decoded to dense `f32` ([`Self::densify`]).
    pub fn is_dense(&self) -> bool {
        !self.dense.is_empty()
    }

    /// Decodes to a dense row-major `f32` matrix and drops the compressed form: the dense-decoded
    /// baseline the compressed kernels are measured against.
    pub fn densify(&mut self) {
        if self.is_dense() || self.rows * self.row_len == 0 {
            return;
        }
        let mut d = vec![0f32; self.rows * self.row_len];
        for r in 0..self.rows {
            let row = &mut d[r * self.row_len..(r + 1) * self.row_len];
            self.for_row(r, |c, w| {
                if w != 0.0 {
                    row[c] = w;
                }
            });
        }
        self.dense = d;
        self.row_ptr = Vec::new();
        self.gaps = Vec::new();
        self.codes = Codes::U8(Vec::new());
        self.codebook = Vec::new();
    }

    /// Resident bytes of the form.
    pub fn bytes(&self) -> usize {
        if self.is_dense() {
            return self.dense.len() * 4;
        }
        self.row_ptr.len() * 4 + self.gaps.len() + self.codes.bytes() + self.codebook.len() * 4
    }

    /// Calls `f(col, value)` for each entry of row `r` (fillers included, with value 0).
    #[inline]
    pub fn for_row(&self, r: usize, mut f: impl FnMut(usize, f32)) {
        if self.is_dense() {
            let row = &self.dense[r * self.row_len..(r + 1) * self.row_len];
            for (c, &w) in row.iter().enumerate() {
                f(c, w);
            }
            return;
        }
        let (a, b) = (self.row_ptr[r] as usize, self.row_ptr[r + 1] as usize);
        match &self.codes {
            Codes::U8(c) => walk(&self.gaps[a..b], &c[a..b], &self.codebook, &mut f),
            Codes::U16(c) => walk(&self.gaps[a..b], &c[a..b], &self.codebook, &mut f),
            Codes::U32(c) => walk(&self.gaps[a..b], &c[a..b], &self.codebook, &mut f),
        }
    }

    /// `y[r][b] = Σ_c W[r][c] · x[c][b]` for all rows, with `x` feature-major `[row_len][batch]` and
    /// `y` feature-major `[rows][batch]` (overwritten).
    pub fn matmul_fm(&self, x: &[f32], batch: usize, y: &mut [f32]) {
        debug_assert_eq!(x.len(), self.row_len * batch);
        debug_assert_eq!(y.len(), self.rows * batch);
        let work = if self.is_dense() {
            self.dense.len()
        } else {
            self.gaps.len()
        } * batch;
        let rows_per_task = if work < 1 << 16 {
            self.rows
        } else {
            (self.rows / (4 * rayon::current_num_threads())).max(1)
        };
        let task = |(t, out): (usize, &mut [f32])| {
            let r0 = t * rows_per_task;
            for (i, yr) in out.chunks_mut(batch).enumerate() {
                self.row_into(r0 + i, x, batch, yr);
            }
        };
        if rows_per_task >= self.rows {
            y.chunks_mut(rows_per_task.max(1) * batch)
                .enumerate()
                .for_each(task);
        } else {
            y.par_chunks_mut(rows_per_task * batch)
                .enumerate()
                .for_each(task);
        }
    }

    #[inline]
    fn row_into(&self, r: usize, x: &[f32], batch: usize, yr: &mut [f32]) {
        if self.is_dense() {
            dense_row(
                &self.dense[r * self.row_len..(r + 1) * self.row_len],
                x,
                batch,
                yr,
            );
            return;
        }
        let (a, b) = (self.row_ptr[r] as usize, self.row_ptr[r + 1] as usize);
        let g = &self.gaps[a..b];
        match &self.codes {
            Codes::U8(c) => row_kernel(g, &c[a..b], &self.codebook, x, batch, yr),
            Codes::U16(c) => row_kernel(g, &c[a..b], &self.codebook, x, batch, yr),
            Codes::U32(c) => row_kernel(g, &c[a..b], &self.codebook, x, batch, yr),
        }
    }
}

#[inline(always)]
fn walk<C: Code>(gaps: &[u8], codes: &[C], cb: &[f32], f: &mut impl FnMut(usize, f32)) {
    let mut col = 0usize;
    for (&g, &c) in gaps.iter().zip(codes) {
        col += g as usize;
        f(col, cb[c.idx()]);
    }
}

/// One output row: EIE-style decode of each entry (`col += gap`, `w = codebook[code]`), then
/// `y += w · x[col]` over the batch (contiguous in the feature-major layout).
#[inline(always)]
fn row_kernel<C: Code>(
    gaps: &[u8],
    codes: &[C],
    cb: &[f32],
    x: &[f32],
    batch: usize,
    yr: &mut [f32],
) {
    let mut col = 0usize;
    if batch == 1 {
        // Four independent accumulators hide the add latency.
        let mut acc = [0f32; 4];
        let n = gaps.len();
        let mut i = 0;
        while i + 4 <= n {
            for j in 0..4 {
                col += gaps[i + j] as usize;
                acc[j] += cb[codes[i + j].idx()] * x[col];
            }
            i += 4;
        }
        while i < n {
            col += gaps[i] as usize;
            acc[0] += cb[codes[i].idx()] * x[col];
            i += 1;
        }
        yr[0] = (acc[0] + acc[1]) + (acc[2] + acc[3]);
        return;
    }
    yr.fill(0.0);
    for (&g, &c) in gaps.iter().zip(codes) {
        col += g as usize;
        let w = cb[c.idx()];
        let xs = &x[col * batch..(col + 1) * batch];
        for (y, &v) in yr.iter_mut().zip(xs) {
            *y += w * v;
        }
    }
}

/// Dense baseline: `y = Σ_c w[c] · x[c][..]`; at batch 1 a dot product with eight accumulators.
#[inline(always)]
fn dense_row(w: &[f32], x: &[f32], batch: usize, yr: &mut [f32]) {
    if batch == 1 {
        let mut acc = [0f32; 8];
        let (wc, wr) = w.split_at(w.len() / 8 * 8);
        let (xc, xr) = x.split_at(wc.len());
        for (a, b) in wc.chunks_exact(8).zip(xc.chunks_exact(8)) {
            for j in 0..8 {
                acc[j] += a[j] * b[j];
            }
        }
        let mut s: f32 = acc.iter().sum();
        for (a, b) in wr.iter().zip(xr) {
            s += a * b;
        }
        yr[0] = s;
        return;
    }
    yr.fill(0.0);
    for (c, &wv) in w.iter().enumerate() {
        let xs = &x[c * batch..(c + 1) * batch];
        for (y, &v) in yr.iter_mut().zip(xs) {
            *y += wv * v;
        }
    }
}
