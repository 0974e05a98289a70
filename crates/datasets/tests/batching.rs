//! Batching: shapes, normalization, per-epoch seeded shuffling, drop-last, limit, padding and
//! augmentation.

use candle_core::{Device, Tensor};
use deepcomp_datasets::{BatchConfig, DatasetError, Split};
use proptest::prelude::*;

/// `n` single-channel `h × w` images where image `i` has all pixels `i % 256`, except
/// pixel (0, 0) which is 255 (a marker to see flips and shifts); label `i % 10`.
fn marked_split(n: usize, h: usize, w: usize) -> Split {
    let mut images = Vec::with_capacity(n * h * w);
    for i in 0..n {
        let mut img = vec![(i % 256) as u8; h * w];
        img[0] = 255;
        images.extend(img);
    }
    Split {
        images,
        labels: (0..n as u32).map(|i| i % 10).collect(),
        n,
        c: 1,
        h,
        w,
    }
}

fn collect(
    split: &Split,
    cfg: &BatchConfig,
    mean: &[f32],
    std: &[f32],
    epoch: u64,
) -> Vec<(Vec<f32>, Vec<u32>, Vec<usize>)> {
    split
        .batches(cfg, mean, std, epoch, &Device::Cpu)
        .unwrap()
        .map(|b| {
            let (x, y) = b.unwrap();
            let dims = x.dims().to_vec();
            (
                x.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
                y.to_vec1::<u32>().unwrap(),
                dims,
            )
        })
        .collect()
}

#[test]
fn shapes_dtypes_and_normalization() {
    let s = marked_split(10, 4, 5);
    let cfg = BatchConfig {
        batch_size: 4,
        shuffle: false,
        ..BatchConfig::default()
    };
    let batches: Vec<(Tensor, Tensor)> = s
        .batches(&cfg, &[0.5], &[0.25], 0, &Device::Cpu)
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(batches.len(), 3);
    assert_eq!(batches[0].0.dims(), &[4, 1, 4, 5]);
    assert_eq!(batches[2].0.dims(), &[2, 1, 4, 5]);
    assert_eq!(batches[0].0.dtype(), candle_core::DType::F32);
    assert_eq!(batches[0].1.dtype(), candle_core::DType::U32);
    let x = batches[0]
        .0
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    // Image 1, pixel (0, 1): value 1 → (1/255 − 0.5)/0.25.
    let v = x[20 + 1];
    assert!((v - (1.0 / 255.0 - 0.5) / 0.25).abs() < 1e-6, "{v}");
    assert_eq!(x[20], 2.0); // marker 255 → (1 − 0.5)/0.25
    assert_eq!(batches[2].1.to_vec1::<u32>().unwrap(), vec![8, 9]);
    // Whole-split normalization agrees with the batches.
    let all = s.normalized(&[0.5], &[0.25]).unwrap();
    assert_eq!(&all[..80], &x[..]);
}

#[test]
fn per_channel_statistics_are_applied_per_channel() {
    let s = Split {
        images: vec![51; 2 * 3 * 2 * 2],
        labels: vec![0, 1],
        n: 2,
        c: 3,
        h: 2,
        w: 2,
    };
    let mean = [0.1, 0.2, 0.3];
    let std = [0.5, 0.25, 0.125];
    let cfg = BatchConfig {
        batch_size: 2,
        shuffle: false,
        ..BatchConfig::default()
    };
    let b = collect(&s, &cfg, &mean, &std, 0);
    for ch in 0..3 {
        let want = (0.2 - mean[ch]) / std[ch];
        for px in 0..4 {
            assert!((b[0].0[12 + ch * 4 + px] - want).abs() < 1e-6);
        }
    }
    let (m, sd) = s.channel_stats().unwrap();
    assert!((m[1] - 0.2).abs() < 1e-6 && sd[1].abs() < 1e-6);
}

#[test]
fn shuffling_is_seeded_per_epoch() {
    let s = marked_split(100, 2, 2);
    let cfg = BatchConfig {
        batch_size: 16,
        seed: 42,
        ..BatchConfig::default()
    };
    let dev = Device::Cpu;
    let order = |epoch, seed| {
        let c = BatchConfig {
            seed,
            ..cfg.clone()
        };
        s.batches(&c, &[0.0], &[1.0], epoch, &dev)
            .unwrap()
            .order()
            .to_vec()
    };
    let e0 = order(0, 42);
    assert_eq!(e0, order(0, 42), "same seed and epoch → same order");
    assert_ne!(e0, order(1, 42), "epochs differ");
    assert_ne!(e0, order(0, 43), "seeds differ");
    assert_ne!(e0, (0..100).collect::<Vec<u32>>());
    let mut sorted = e0.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, (0..100).collect::<Vec<u32>>());
    // Epoch 3 computed alone equals epoch 3 after running epochs 0..3.
    for e in 0..3 {
        collect(&s, &cfg, &[0.0], &[1.0], e);
    }
    assert_eq!(
        collect(&s, &cfg, &[0.0], &[1.0], 3),
        collect(&s, &cfg, &[0.0], &[1.0], 3)
    );
    // Labels follow their images.
    for (x, y, _) in collect(&s, &cfg, &[0.0], &[1.0], 5) {
        for (k, &label) in y.iter().enumerate() {
            let i = (x[k * 4 + 1] * 255.0).round() as u32;
            assert_eq!(label, i % 10);
        }
    }
}

#[test]
fn drop_last_and_limit() {
    let s = marked_split(10, 2, 2);
    let mut cfg = BatchConfig {
        batch_size: 4,
        drop_last: true,
        ..BatchConfig::default()
    };
    let it = s.batches(&cfg, &[0.0], &[1.0], 0, &Device::Cpu).unwrap();
    assert_eq!(it.len(), 2);
    let b = collect(&s, &cfg, &[0.0], &[1.0], 0);
    assert_eq!(b.iter().map(|x| x.1.len()).collect::<Vec<_>>(), vec![4, 4]);
    cfg.limit = Some(6);
    cfg.drop_last = false;
    cfg.shuffle = false;
    let b = collect(&s, &cfg, &[0.0], &[1.0], 0);
    assert_eq!(b.iter().map(|x| x.1.len()).collect::<Vec<_>>(), vec![4, 2]);
    cfg.limit = Some(1000);
    assert_eq!(collect(&s, &cfg, &[0.0], &[1.0], 0).len(), 3);
}

#[test]
fn pad_to_32_centres_the_image() {
    let s = marked_split(3, 28, 28);
    let cfg = BatchConfig {
        batch_size: 3,
        shuffle: false,
        pad_to: Some(32),
        ..BatchConfig::default()
    };
    let b = collect(&s, &cfg, &[0.0], &[1.0], 0);
    assert_eq!(b[0].2, vec![3, 1, 32, 32]);
    let img = &b[0].0[32 * 32..2 * 32 * 32]; // image 1: pixels 1/255, marker at (2, 2)
    assert_eq!(img[2 * 32 + 2], 1.0);
    assert_eq!(img[0], 0.0);
    assert_eq!(img[32 + 31], 0.0);
    assert!((img[2 * 32 + 3] - 1.0 / 255.0).abs() < 1e-7);
    assert!((img[29 * 32 + 29] - 1.0 / 255.0).abs() < 1e-7);
    assert_eq!(img[30 * 32 + 29], 0.0);
    let bad = BatchConfig {
        pad_to: Some(20),
        ..cfg
    };
    let e = s
        .batches(&bad, &[0.0], &[1.0], 0, &Device::Cpu)
        .unwrap_err();
    assert!(
        matches!(
            e,
            DatasetError::Config {
                field: "pad_to",
                ..
            }
        ),
        "{e}"
    );
}

/// Reference transform: crop of the 4-pixel zero-padded image at shift (dy, dx), then an
/// optional horizontal flip.
fn reference(src: &[u8], h: usize, w: usize, dy: isize, dx: isize, flip: bool) -> Vec<f32> {
    let mut out = vec![0f32; h * w];
    for y in 0..h {
        for x in 0..w {
            let xx = if flip { w - 1 - x } else { x };
            let (sy, sx) = (y as isize + dy, xx as isize + dx);
            if sy >= 0 && sy < h as isize && sx >= 0 && sx < w as isize {
                out[y * w + x] = f32::from(src[sy as usize * w + sx as usize]) / 255.0;
            }
        }
    }
    out
}

#[test]
fn augmentation_is_a_padded_crop_and_flip_and_seeded() {
    let (n, h, w) = (300, 8, 8);
    // Distinct non-zero pixels so that each transform is recognisable.
    let mut images = Vec::with_capacity(n * h * w);
    for i in 0..n {
        images.extend((0..h * w).map(|p| (1 + (p * 3 + i) % 250) as u8));
    }
    let s = Split {
        images,
        labels: vec![0; n],
        n,
        c: 1,
        h,
        w,
    };
    let cfg = BatchConfig {
        batch_size: 64,
        augment: Some(deepcomp_datasets::Augment::CIFAR),
        shuffle: false,
        seed: 9,
        ..BatchConfig::default()
    };
    let batches = collect(&s, &cfg, &[0.0], &[1.0], 0);
    let mut counts = std::collections::BTreeMap::new();
    let mut i = 0;
    for (x, _, _) in &batches {
        for img in x.chunks_exact(h * w) {
            let src = s.image(i).unwrap();
            let found: Vec<(isize, isize, bool)> = (-4..=4)
                .flat_map(|dy| (-4..=4).flat_map(move |dx| [(dy, dx, false), (dy, dx, true)]))
                .filter(|&(dy, dx, f)| reference(src, h, w, dy, dx, f) == img)
                .collect();
            assert_eq!(found.len(), 1, "image {i}: {found:?}");
            *counts.entry(found[0]).or_insert(0usize) += 1;
            i += 1;
        }
    }
    assert_eq!(i, n);
    // All 162 (shift, flip) combinations are possible; 300 draws should hit many of them,
    // both flipped and not, and include the identity-free extremes.
    assert!(counts.len() > 100, "{} distinct transforms", counts.len());
    let flips: usize = counts.iter().filter(|(k, _)| k.2).map(|(_, v)| v).sum();
    assert!((100..200).contains(&flips), "{flips} flips of {n}");
    // Seeded: same (seed, epoch) → same output; another epoch → different.
    assert_eq!(batches, collect(&s, &cfg, &[0.0], &[1.0], 0));
    assert_ne!(batches, collect(&s, &cfg, &[0.0], &[1.0], 1));
    // Augmentation after padding 8×8 to 12×12 crops the padded image.
    let padded = BatchConfig {
        pad_to: Some(12),
        batch_size: 1,
        ..cfg.clone()
    };
    let b = collect(&s, &padded, &[0.0], &[1.0], 0);
    assert_eq!(b[0].2, vec![1, 1, 12, 12]);
    let nonzero = b[0].0.iter().filter(|v| **v != 0.0).count();
    assert!((16..=64).contains(&nonzero), "{nonzero}");
    // Shifts alone (digits): a 2-pixel padding never flips and never shifts further than 2.
    let shifts = BatchConfig {
        augment: Some(deepcomp_datasets::Augment {
            padding: 2,
            flip: false,
        }),
        ..cfg.clone()
    };
    let mut seen = std::collections::BTreeSet::new();
    for (j, img) in collect(&s, &shifts, &[0.0], &[1.0], 0)
        .iter()
        .flat_map(|(x, _, _)| {
            x.chunks_exact(h * w)
                .map(<[f32]>::to_vec)
                .collect::<Vec<_>>()
        })
        .enumerate()
    {
        let src = s.image(j).unwrap();
        let found: Vec<(isize, isize, bool)> = (-4..=4)
            .flat_map(|dy| (-4..=4).flat_map(move |dx| [(dy, dx, false), (dy, dx, true)]))
            .filter(|&(dy, dx, f)| reference(src, h, w, dy, dx, f) == img)
            .collect();
        assert_eq!(found.len(), 1, "image {j}: {found:?}");
        let (dy, dx, flip) = found[0];
        assert!(
            !flip && dy.abs() <= 2 && dx.abs() <= 2,
            "image {j}: {:?}",
            found[0]
        );
        seen.insert((dy, dx));
    }
    assert_eq!(seen.len(), 25, "all 5×5 shifts drawn in 300 examples");
    // Without augmentation the images come out untouched.
    let plain = BatchConfig {
        augment: None,
        ..cfg
    };
    let p = collect(&s, &plain, &[0.0], &[1.0], 0);
    assert_eq!(
        p[0].0[..64],
        reference(s.image(0).unwrap(), h, w, 0, 0, false)[..]
    );
}

#[test]
fn invalid_configurations_are_errors() {
    let s = marked_split(4, 2, 2);
    let dev = Device::Cpu;
    let zero = BatchConfig {
        batch_size: 0,
        ..BatchConfig::default()
    };
    assert!(matches!(
        s.batches(&zero, &[0.0], &[1.0], 0, &dev).unwrap_err(),
        DatasetError::Config {
            field: "batch_size",
            ..
        }
    ));
    let ok = BatchConfig::default();
    assert!(s.batches(&ok, &[0.0, 0.0], &[1.0, 1.0], 0, &dev).is_err());
    assert!(s.batches(&ok, &[0.0], &[0.0], 0, &dev).is_err());
    let mut broken = s.clone();
    broken.labels.pop();
    assert!(matches!(
        broken.batches(&ok, &[0.0], &[1.0], 0, &dev).unwrap_err(),
        DatasetError::Config { field: "split", .. }
    ));
    let empty = marked_split(0, 2, 2);
    assert_eq!(
        empty.batches(&ok, &[0.0], &[1.0], 0, &dev).unwrap().count(),
        0
    );
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// Every example appears exactly once per epoch (without drop-last), batch sizes are
    /// right, and `len()` predicts the number of batches.
    #[test]
    fn each_example_once_per_epoch(n in 0usize..70, bs in 1usize..20, seed in any::<u64>(), epoch in 0u64..5, drop_last in any::<bool>(), shuffle in any::<bool>()) {
        let s = marked_split(n, 1, 2);
        let cfg = BatchConfig { batch_size: bs, seed, drop_last, shuffle, ..BatchConfig::default() };
        let it = s.batches(&cfg, &[0.0], &[1.0], epoch, &Device::Cpu).unwrap();
        let predicted = it.len();
        let batches = collect(&s, &cfg, &[0.0], &[1.0], epoch);
        prop_assert_eq!(batches.len(), predicted);
        let mut seen: Vec<u32> = batches.iter().flat_map(|b| b.0.chunks_exact(2).map(|p| (p[1] * 255.0).round() as u32)).collect();
        for b in &batches {
            prop_assert!(b.1.len() == bs || (!drop_last && b.1.len() < bs));
        }
        seen.sort_unstable();
        if drop_last {
            prop_assert_eq!(seen.len(), n / bs * bs);
        } else {
            prop_assert_eq!(seen, (0..n as u32).map(|i| i % 256).collect::<Vec<_>>());
        }
    }
}

#[test]
fn whole_split_normalization_matches_the_formula_on_large_splits() {
    // 1.5 M pixels: large enough for the multi-threaded path.
    let (n, c, h, w) = (123, 3, 64, 64);
    let images: Vec<u8> = (0..n * c * h * w).map(|i| (i * 7 % 251) as u8).collect();
    let s = Split {
        images,
        labels: vec![0; n],
        n,
        c,
        h,
        w,
    };
    let mean = [0.4914, 0.4822, 0.4465];
    let std = [0.2470, 0.2435, 0.2616];
    let out = s.normalized(&mean, &std).unwrap();
    assert_eq!(out.len(), s.images.len());
    for (i, (&v, &p)) in out.iter().zip(&s.images).enumerate() {
        let ch = (i / (h * w)) % c;
        let want = (f32::from(p) / 255.0 - mean[ch]) / std[ch];
        assert!((v - want).abs() < 1e-6, "pixel {i}: {v} vs {want}");
    }
}
