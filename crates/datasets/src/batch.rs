//! Mini-batches as candle tensors: seeded per-epoch shuffling, normalization, optional
//! padding of 28×28 sets to 32×32, and augmentation by random crops of a zero-padded image with
//! optional horizontal flips (CIFAR's 4-pixel padding and flips, or small shifts alone for digits).

use candle_core::{Device, Tensor};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::error::DatasetError;
use crate::Split;

/// Padding of the random crop (pixels on each side), as in the ResNet/VGG CIFAR recipes.
pub const CROP_PADDING: usize = 4;

/// Training-time augmentation, drawn per example: zero-pad by `padding` pixels on each side and
/// crop back at a random offset (a shift of up to ±`padding` in each direction), then flip
/// horizontally with probability 1/2 if `flip`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Augment {
    /// Pixels of zero padding on each side; the shift is uniform in `-padding..=padding`.
    pub padding: usize,
    /// Horizontal flip with probability 1/2 (right for natural images, wrong for digits).
    pub flip: bool,
}

impl Augment {
    /// The ResNet/VGG CIFAR recipe: 4-pixel padded random crop and horizontal flip.
    pub const CIFAR: Augment = Augment {
        padding: CROP_PADDING,
        flip: true,
    };
}

/// How to cut a split into batches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchConfig {
    /// Examples per batch (> 0).
    pub batch_size: usize,
    /// Shuffle the example order each epoch (seeded by `seed` and the epoch number).
    pub shuffle: bool,
    /// Drop a last batch smaller than `batch_size`.
    pub drop_last: bool,
    /// Seed for shuffling and augmentation.
    pub seed: u64,
    /// Random crop and flip, drawn per example (`None`: the images as they are).
    pub augment: Option<Augment>,
    /// Zero-pad images (centred) to `pad_to × pad_to`, e.g. 32 for 28×28 sets.
    pub pad_to: Option<usize>,
    /// Use only the first `limit` examples of the split. `Some(0)` is an error (field
    /// `limit`) rather than an epoch without batches; an empty split still yields no batch.
    pub limit: Option<usize>,
}

impl Default for BatchConfig {
    /// Batches of 64, shuffled with seed 0, last partial batch kept, no augmentation.
    fn default() -> Self {
        BatchConfig {
            batch_size: 64,
            shuffle: true,
            drop_last: false,
            seed: 0,
            augment: None,
            pad_to: None,
            limit: None,
        }
    }
}

/// Derives an independent 64-bit seed for `(seed, epoch, stream)` (SplitMix64 finalizer).
fn derive_seed(seed: u64, epoch: u64, stream: u64) -> u64 {
    let mut z = seed
        ^ epoch.wrapping_mul(0x9E37_79B9_7F4A_7C15)
        ^ stream.wrapping_mul(0xD1B5_4A32_D192_ED03);
    for _ in 0..2 {
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
    }
    z
}

/// Per-channel lookup table `byte → (byte/255 − mean)/std`.
pub(crate) fn normalization_lut(
    channels: usize,
    mean: &[f32],
    std: &[f32],
) -> Result<Vec<f32>, DatasetError> {
    crate::split::check_normalization(channels, mean, std)?;
    let mut lut = Vec::with_capacity(channels * 256);
    for ch in 0..channels {
        for v in 0..256u32 {
            lut.push((v as f32 / 255.0 - mean[ch]) / std[ch]);
        }
    }
    Ok(lut)
}

/// Iterator over the batches of one epoch; see [`Split::batches`].
#[derive(Debug)]
pub struct Batches<'a> {
    split: &'a Split,
    order: Vec<u32>,
    pos: usize,
    batch_size: usize,
    drop_last: bool,
    lut: Vec<f32>,
    out_h: usize,
    out_w: usize,
    top: usize,
    left: usize,
    augment: Option<Augment>,
    rng: ChaCha8Rng,
    device: Device,
}

impl Split {
    /// Batches of epoch `epoch`: images as `f32` tensors `(B, C, H, W)` normalized with
    /// `(x/255 − mean[c]) / std[c]`, labels as `u32` tensors `(B)`.
    ///
    /// The order and the augmentation depend only on `(cfg.seed, epoch)`, so any epoch can be
    /// reproduced on its own (e.g. when resuming training). The configuration is validated
    /// up front; the iterator's items can only fail on tensor creation.
    pub fn batches(
        &self,
        cfg: &BatchConfig,
        mean: &[f32],
        std: &[f32],
        epoch: u64,
        device: &Device,
    ) -> Result<Batches<'_>, DatasetError> {
        self.check_consistent()?;
        if cfg.batch_size == 0 {
            return Err(DatasetError::Config {
                field: "batch_size",
                message: "must be at least 1".into(),
            });
        }
        if cfg.limit == Some(0) {
            return Err(DatasetError::Config {
                field: "limit",
                message: "0 examples would yield no batch; use None for the whole split".into(),
            });
        }
        let lut = normalization_lut(self.c, mean, std)?;
        let (out_h, out_w) = match cfg.pad_to {
            None => (self.h, self.w),
            Some(p) if p >= self.h && p >= self.w => (p, p),
            Some(p) => {
                return Err(DatasetError::Config {
                    field: "pad_to",
                    message: format!("{p} is smaller than the {}×{} images", self.h, self.w),
                })
            }
        };
        let n = cfg.limit.map_or(self.n, |l| l.min(self.n));
        let mut order: Vec<u32> = (0..n as u32).collect();
        if cfg.shuffle {
            let mut rng = ChaCha8Rng::seed_from_u64(derive_seed(cfg.seed, epoch, 1));
            for i in (1..order.len()).rev() {
                let j = rng.random_range(0..=i);
                order.swap(i, j);
            }
        }
        Ok(Batches {
            split: self,
            order,
            pos: 0,
            batch_size: cfg.batch_size,
            drop_last: cfg.drop_last,
            lut,
            out_h,
            out_w,
            top: (out_h - self.h) / 2,
            left: (out_w - self.w) / 2,
            augment: cfg.augment,
            rng: ChaCha8Rng::seed_from_u64(derive_seed(cfg.seed, epoch, 2)),
            device: device.clone(),
        })
    }
}

impl Batches<'_> {
    /// Shape `(C, H, W)` of each output image (after padding).
    pub fn image_shape(&self) -> (usize, usize, usize) {
        (self.split.c, self.out_h, self.out_w)
    }

    /// The example indices of this epoch in visiting order (before `drop_last`).
    pub fn order(&self) -> &[u32] {
        &self.order
    }

    fn remaining(&self) -> usize {
        let left = self.order.len().saturating_sub(self.pos);
        if self.drop_last {
            left / self.batch_size
        } else {
            left.div_ceil(self.batch_size)
        }
    }

    /// Writes one normalized, padded, possibly cropped/flipped example into `out`.
    fn write_example(
        &self,
        img: &[u8],
        out: &mut [f32],
        shift_y: isize,
        shift_x: isize,
        flip: bool,
    ) {
        let (c, h, w) = (self.split.c, self.split.h, self.split.w);
        let (oh, ow) = (self.out_h, self.out_w);
        let plain = shift_y == 0 && shift_x == 0 && !flip && oh == h && ow == w;
        for ch in 0..c {
            let lut: &[f32; 256] = match self.lut[ch * 256..(ch + 1) * 256].try_into() {
                Ok(l) => l,
                Err(_) => return,
            };
            let src = &img[ch * h * w..(ch + 1) * h * w];
            let dst = &mut out[ch * oh * ow..(ch + 1) * oh * ow];
            if plain {
                for (d, &s) in dst.iter_mut().zip(src) {
                    *d = lut[usize::from(s)];
                }
                continue;
            }
            let zero = lut[0];
            for (y, row) in dst.chunks_exact_mut(ow).enumerate() {
                let sy = y as isize + shift_y - self.top as isize;
                if sy < 0 || sy >= h as isize {
                    row.fill(zero);
                    continue;
                }
                let srow = &src[sy as usize * w..(sy as usize + 1) * w];
                for (x, d) in row.iter_mut().enumerate() {
                    let xx = if flip { ow - 1 - x } else { x };
                    let sx = xx as isize + shift_x - self.left as isize;
                    *d = if sx >= 0 && (sx as usize) < w {
                        lut[usize::from(srow[sx as usize])]
                    } else {
                        zero
                    };
                }
            }
        }
    }
}

impl Iterator for Batches<'_> {
    type Item = candle_core::Result<(Tensor, Tensor)>;

    fn next(&mut self) -> Option<Self::Item> {
        let n = self.order.len();
        if self.pos >= n {
            return None;
        }
        let end = (self.pos + self.batch_size).min(n);
        if self.drop_last && end - self.pos < self.batch_size {
            self.pos = n;
            return None;
        }
        let b = end - self.pos;
        let (c, h, w) = (self.split.c, self.split.h, self.split.w);
        let in_size = c * h * w;
        let out_size = c * self.out_h * self.out_w;
        let mut images = vec![0f32; b * out_size];
        let mut labels = Vec::with_capacity(b);
        for k in 0..b {
            let idx = self.order[self.pos + k] as usize;
            let (shift_y, shift_x, flip) = match self.augment {
                Some(a) => {
                    let pad = a.padding as isize;
                    let dy = self.rng.random_range(0..=2 * a.padding) as isize - pad;
                    let dx = self.rng.random_range(0..=2 * a.padding) as isize - pad;
                    (dy, dx, a.flip && self.rng.random_bool(0.5))
                }
                None => (0, 0, false),
            };
            let img = &self.split.images[idx * in_size..(idx + 1) * in_size];
            let out = &mut images[k * out_size..(k + 1) * out_size];
            self.write_example(img, out, shift_y, shift_x, flip);
            labels.push(self.split.labels[idx]);
        }
        self.pos = end;
        let images = match Tensor::from_vec(images, (b, c, self.out_h, self.out_w), &self.device) {
            Ok(t) => t,
            Err(e) => return Some(Err(e)),
        };
        Some(Tensor::from_vec(labels, b, &self.device).map(|l| (images, l)))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let r = self.remaining();
        (r, Some(r))
    }
}

impl ExactSizeIterator for Batches<'_> {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_seeds_differ_by_epoch_and_stream() {
        let a = derive_seed(7, 0, 1);
        assert_ne!(a, derive_seed(7, 1, 1));
        assert_ne!(a, derive_seed(7, 0, 2));
        assert_ne!(a, derive_seed(8, 0, 1));
        assert_eq!(a, derive_seed(7, 0, 1));
    }

    #[test]
    fn lut_rejects_bad_stats() {
        assert!(normalization_lut(1, &[0.5], &[0.0]).is_err());
        assert!(normalization_lut(3, &[0.5], &[0.5]).is_err());
        assert!(normalization_lut(1, &[f32::NAN], &[0.5]).is_err());
        let lut = normalization_lut(1, &[0.5], &[0.5]).unwrap();
        assert_eq!(lut[0], -1.0);
        assert_eq!(lut[255], 1.0);
    }
}
