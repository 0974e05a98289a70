//! Layer kernels on one sample (NCHW without the N) or on a feature-major batch.

use rayon::prelude::*;

use crate::sparse::SparseRows;

/// A convolution whose weights stay in the compressed form, with optional bias and an optional
/// per-channel affine (eval-mode BatchNorm folded to `y·scale + shift`) and ReLU.
#[derive(Debug, Clone)]
pub(crate) struct Conv {
    pub name: String,
    pub w: SparseRows,
    pub cin: usize,
    pub k: usize,
    pub stride: usize,
    pub pad: usize,
    pub bias: Option<Vec<f32>>,
    pub affine: Option<(Vec<f32>, Vec<f32>)>,
    pub relu: bool,
}

impl Conv {
    pub fn out_side(&self, s: usize) -> usize {
        (s + 2 * self.pad - self.k) / self.stride + 1
    }

    pub fn bytes(&self) -> usize {
        self.w.bytes()
            + self.bias.as_ref().map_or(0, |b| b.len() * 4)
            + self
                .affine
                .as_ref()
                .map_or(0, |(a, b)| (a.len() + b.len()) * 4)
    }

    /// One sample: `x` is `[cin][h][h]`, the result `[cout][ho][ho]`. `par` spreads the output
    /// channels over the rayon pool (for batch 1).
    pub fn forward(&self, x: &[f32], h: usize, par: bool) -> (Vec<f32>, usize) {
        let ho = self.out_side(h);
        let plane = ho * ho;
        let mut out = vec![0f32; self.w.rows * plane];
        let channel = |(co, y): (usize, &mut [f32])| self.channel(co, x, h, ho, y);
        if par {
            out.par_chunks_mut(plane).enumerate().for_each(channel);
        } else {
            out.chunks_mut(plane).enumerate().for_each(channel);
        }
        (out, ho)
    }

    /// Output channel `co`: for each kept weight `(ci, ky, kx)`, `y[oy][ox] += w · x[ci][iy][ix]` over
    /// the output positions whose input pixel lies inside the image (zero padding is skipped, not
    /// materialized).
    fn channel(&self, co: usize, x: &[f32], h: usize, ho: usize, y: &mut [f32]) {
        let (k, s, p) = (self.k, self.stride, self.pad as isize);
        let kk = k * k;
        // Valid output range along one axis for kernel offset `kd`: 0 <= o·s + kd − p < h.
        let range = |kd: usize| -> (usize, usize) {
            let off = kd as isize - p;
            let lo = if off >= 0 {
                0
            } else {
                ((-off) as usize).div_ceil(s)
            };
            let hi_excl = if (h as isize - off) <= 0 {
                0
            } else {
                ((h as isize - off - 1) as usize / s + 1).min(ho)
            };
            (lo, hi_excl.max(lo))
        };
        let dense = self.w.is_dense();
        self.w.for_row(co, |col, w| {
            // Skip fillers (and, in the compressed form, nothing else: pruned weights are absent);
            // the dense-decoded baseline does every multiply.
            if w == 0.0 && !dense {
                return;
            }
            let ci = col / kk;
            let (ky, kx) = ((col % kk) / k, col % k);
            let src = &x[ci * h * h..(ci + 1) * h * h];
            let (oy0, oy1) = range(ky);
            let (ox0, ox1) = range(kx);
            for oy in oy0..oy1 {
                let iy = (oy * s + ky) as isize - p;
                let row = &src[iy as usize * h..(iy as usize + 1) * h];
                let dst = &mut y[oy * ho..(oy + 1) * ho];
                if s == 1 {
                    let ix0 = (ox0 + kx) as isize - p;
                    let n = ox1 - ox0;
                    let srow = &row[ix0 as usize..ix0 as usize + n];
                    for (d, &v) in dst[ox0..ox1].iter_mut().zip(srow) {
                        *d += w * v;
                    }
                } else {
                    for ox in ox0..ox1 {
                        let ix = (ox * s + kx) as isize - p;
                        dst[ox] += w * row[ix as usize];
                    }
                }
            }
        });
        if let Some(b) = &self.bias {
            let bv = b[co];
            y.iter_mut().for_each(|v| *v += bv);
        }
        if let Some((scale, shift)) = &self.affine {
            let (a, c) = (scale[co], shift[co]);
            y.iter_mut().for_each(|v| *v = *v * a + c);
        }
        if self.relu {
            y.iter_mut().for_each(|v| *v = v.max(0.0));
        }
    }
}

/// A fully connected layer in the compressed form, with bias and optional ReLU.
#[derive(Debug, Clone)]
pub(crate) struct Fc {
    pub name: String,
    pub w: SparseRows,
    pub bias: Option<Vec<f32>>,
    pub relu: bool,
}

impl Fc {
    pub fn bytes(&self) -> usize {
        self.w.bytes() + self.bias.as_ref().map_or(0, |b| b.len() * 4)
    }

    /// Feature-major batch `[in][batch]` → `[out][batch]`.
    pub fn forward_fm(&self, x: &[f32], batch: usize) -> Vec<f32> {
        let mut y = vec![0f32; self.w.rows * batch];
        self.w.matmul_fm(x, batch, &mut y);
        for (r, yr) in y.chunks_mut(batch).enumerate() {
            let b = self.bias.as_ref().map_or(0.0, |b| b[r]);
            for v in yr {
                *v += b;
                if self.relu {
                    *v = v.max(0.0);
                }
            }
        }
        y
    }
}

/// Max pooling, window and stride `k`, floor mode, on `[c][h][h]`.
pub(crate) fn max_pool(x: &[f32], c: usize, h: usize, k: usize) -> (Vec<f32>, usize) {
    let ho = h / k;
    let mut out = vec![f32::NEG_INFINITY; c * ho * ho];
    for ch in 0..c {
        let src = &x[ch * h * h..(ch + 1) * h * h];
        let dst = &mut out[ch * ho * ho..(ch + 1) * ho * ho];
        for oy in 0..ho {
            for ox in 0..ho {
                let mut m = f32::NEG_INFINITY;
                for dy in 0..k {
                    for dx in 0..k {
                        m = m.max(src[(oy * k + dy) * h + ox * k + dx]);
                    }
                }
                dst[oy * ho + ox] = m;
            }
        }
    }
    (out, ho)
}

/// `[batch][f]` → `[f][batch]`.
pub(crate) fn to_feature_major(x: &[f32], batch: usize, f: usize) -> Vec<f32> {
    let mut out = vec![0f32; x.len()];
    for b in 0..batch {
        for i in 0..f {
            out[i * batch + b] = x[b * f + i];
        }
    }
    out
}

/// `[f][batch]` → `[batch][f]`.
pub(crate) fn to_sample_major(x: &[f32], batch: usize, f: usize) -> Vec<f32> {
    let mut out = vec![0f32; x.len()];
    for i in 0..f {
        for b in 0..batch {
            out[b * f + i] = x[i * batch + b];
        }
    }
    out
}
