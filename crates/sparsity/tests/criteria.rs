//! Criteria against numpy / torch semantics. Expected values come from the python
//! one-liners in the comments (numpy 2.4.6, torch 2.15 on this machine).

use candle_core::{DType, Device, Tensor};
use deepcomp_sparsity::{
    compute_masks, numpy_percentile, torch_std, Criterion, MaskSet, SparsityError,
};

/// `((np.arange(n)*7919 % 1000) - 500).astype(np.float32) / np.float32(337)` (has ties).
fn data(n: usize) -> Vec<f32> {
    (0..n)
        .map(|i| ((i * 7919 % 1000) as f32 - 500.0) / 337.0)
        .collect()
}

/// `((np.arange(n)*7919 % 10007) - 5003).astype(np.float32) / np.float32(1234.5)` (distinct).
fn data2(n: usize) -> Vec<f32> {
    (0..n)
        .map(|i| ((i * 7919 % 10007) as f32 - 5003.0) / 1234.5)
        .collect()
}

fn tensor(v: &[f32], shape: &[usize]) -> Tensor {
    Tensor::from_vec(v.to_vec(), shape, &Device::Cpu).unwrap()
}

const SMALL: [f32; 12] = [
    0.5, -1.25, 0.03, 2.0, -0.7, 0.11, -0.02, 1.5, 0.9, -0.33, 0.6, -0.08,
];

// t = np.percentile(np.abs(data(1200)), q); hex(t.view(np.uint32)), int((np.abs(w) >= t).sum())
#[test]
fn percentile_threshold_is_bit_exact_with_numpy_on_ties() {
    let w = data(1200);
    let abs: Vec<f32> = w.iter().map(|v| v.abs()).collect();
    let cases: [(f64, u32, usize); 8] = [
        (0.0, 0x0, 1200),
        (5.0, 0x3d9d_b3bb, 1140),
        (33.3, 0x3efd_b898, 801),
        (45.0, 0x3f2b_5672, 660),
        (65.485, 0x3f79_29c8, 415),
        (80.0, 0x3f98_0137, 240),
        (99.9, 0x3fbd_d5dc, 2),
        (100.0, 0x3fbd_e936, 2),
    ];
    let t = tensor(&w, &[30, 40]);
    for (q, bits, kept) in cases {
        let thr = numpy_percentile(&abs, q).unwrap();
        assert_eq!(thr.to_bits(), bits, "threshold at q={q}");
        let masks = compute_masks(&[("w", &t)], &Criterion::Percentile { q }, None, None).unwrap();
        assert_eq!(masks.get("w").unwrap().nonzero(), kept, "kept at q={q}");
    }
}

// w = np.abs(data2(997)); t = np.percentile(w, q); hex(t.view(np.uint32)), int((w >= t).sum())
#[test]
fn percentile_threshold_is_bit_exact_with_numpy_on_distinct_values() {
    let abs: Vec<f32> = data2(997).iter().map(|v| v.abs()).collect();
    for (q, bits, kept) in [
        (12.5, 0x3f02_a4dc_u32, 872usize),
        (33.3, 0x3fac_a2fe, 666),
        (45.0, 0x3fe9_afd4, 548),
        (65.485, 0x4029_bcc6, 344),
        (87.654321, 0x4063_7c87, 124),
    ] {
        let thr = numpy_percentile(&abs, q).unwrap();
        assert_eq!(thr.to_bits(), bits, "q={q}");
        assert_eq!(abs.iter().filter(|a| **a >= thr).count(), kept, "q={q}");
    }
}

// s = np.abs(SMALL); [(s >= np.percentile(s, q)).astype(int).tolist() for q in (37.5, 45, 50)]
// -> 37.5: thr 0.35125 [1,1,0,1,1,0,0,1,1,0,1,0]; 45: thr 0.4915 same; 50: thr 0.55 [0,1,0,1,1,0,0,1,1,0,1,0]
#[test]
fn percentile_small_layer_by_hand() {
    let t = tensor(&SMALL, &[3, 4]);
    let expect = |bits: [u8; 12]| bits.iter().map(|b| *b == 1).collect::<Vec<_>>();
    for (q, keep) in [
        (37.5, expect([1, 1, 0, 1, 1, 0, 0, 1, 1, 0, 1, 0])),
        (45.0, expect([1, 1, 0, 1, 1, 0, 0, 1, 1, 0, 1, 0])),
        (50.0, expect([0, 1, 0, 1, 1, 0, 0, 1, 1, 0, 1, 0])),
    ] {
        let m = compute_masks(&[("fc", &t)], &Criterion::Percentile { q }, None, None).unwrap();
        let m = m.get("fc").unwrap();
        assert_eq!(m.keep(), keep.as_slice(), "q={q}");
        assert_eq!(m.shape(), &[3, 4]);
    }
    // numpy: np.percentile(np.abs(SMALL), 37.5) == 0.351250022649765
    assert_eq!(
        numpy_percentile(&SMALL.map(f32::abs), 37.5).unwrap(),
        0.351_250_02_f32
    );
}

// tw = torch.from_numpy(data(1200)); torch.std(tw) -> 0.8581013679504395
// thr = torch.std(tw)*s; int((tw.abs() >= thr).sum()) -> s=0.25: 1027, 0.75: 681, 1.0: 507
#[test]
fn std_rule_matches_torch() {
    let w = data(1200);
    // hex(np.float32(0.8581013679504395).view(np.uint32)) -> 0x3f5bac88
    assert_eq!(torch_std(&w).unwrap().to_bits(), 0x3f5b_ac88);
    let t = tensor(&w, &[1200]);
    for (s, kept) in [(0.25, 1027), (0.75, 681), (1.0, 507)] {
        let m = compute_masks(&[("w", &t)], &Criterion::Std { s }, None, None).unwrap();
        assert_eq!(m.get("w").unwrap().nonzero(), kept, "s={s}");
    }
    // ts = torch.tensor(SMALL); (ts.abs() >= torch.std(ts)*0.75).int() -> [0,1,0,1,1,0,0,1,1,0,0,0]
    let small = tensor(&SMALL, &[12]);
    let m = compute_masks(&[("s", &small)], &Criterion::Std { s: 0.75 }, None, None).unwrap();
    let got: Vec<u8> = m
        .get("s")
        .unwrap()
        .keep()
        .iter()
        .map(|k| u8::from(*k))
        .collect();
    assert_eq!(got, vec![0, 1, 0, 1, 1, 0, 0, 1, 1, 0, 0, 0]);
    assert_eq!(torch_std(&[1.0]), None);
}

// a, b = data(1200), data(300)*np.float32(3); t = np.percentile(np.concatenate([abs(a), abs(b)]), 60)
// -> t = 1.0296735763549805; kept: a 371, b 231
#[test]
fn global_uses_one_threshold_over_all_layers() {
    let a = tensor(&data(1200), &[30, 40]);
    let b_vals: Vec<f32> = data(300).iter().map(|v| v * 3.0).collect();
    let b = tensor(&b_vals, &[300]);
    let m = compute_masks(
        &[("a", &a), ("b", &b)],
        &Criterion::Global { q: 60.0 },
        None,
        None,
    )
    .unwrap();
    assert_eq!(m.get("a").unwrap().nonzero(), 371);
    assert_eq!(m.get("b").unwrap().nonzero(), 231);
    // Per-layer percentile would give 40 % to each; global prunes the small-scale layer harder.
    assert!(m.get("a").unwrap().sparsity() > m.get("b").unwrap().sparsity());
    // Restricting to one layer makes the global threshold that layer's percentile.
    let only_a = ["a".to_string()];
    let g = compute_masks(
        &[("a", &a), ("b", &b)],
        &Criterion::Global { q: 45.0 },
        None,
        Some(&only_a),
    )
    .unwrap();
    assert_eq!(g.get("a").unwrap().nonzero(), 660);
    assert!(g.get("b").is_none());
}

#[test]
fn iterative_pruning_reaches_overall_target_without_revival() {
    let w = data2(997);
    let t = tensor(&w, &[997]);
    let first =
        compute_masks(&[("w", &t)], &Criterion::Percentile { q: 50.0 }, None, None).unwrap();
    let m1 = first.get("w").unwrap();
    // int((a < np.percentile(a, 50)).sum()) with a = np.abs(data2(997)) -> 497 (|w| has ties)
    assert_eq!(m1.pruned(), 497);
    // Simulate finetuning: survivors drift (some shrink below the old threshold),
    // pruned positions are held at 0.
    let drifted: Vec<f32> = w
        .iter()
        .zip(m1.keep())
        .enumerate()
        .map(|(i, (v, k))| {
            if !k {
                0.0
            } else if i % 3 == 0 {
                v * 0.1
            } else {
                *v
            }
        })
        .collect();
    let t2 = tensor(&drifted, &[997]);
    let second = compute_masks(
        &[("w", &t2)],
        &Criterion::Percentile { q: 80.0 },
        Some(&first),
        None,
    )
    .unwrap();
    let m2 = second.get("w").unwrap();
    assert!(m2.is_subset_of(m1).unwrap());
    // 80 % of 997 = 797.6 pruned overall: the survivors' percentile is 100·(797.6-497)/500;
    // magnitude ties at the threshold survive (`>=`), so it may land one or two short.
    assert!((795..=798).contains(&m2.pruned()), "pruned {}", m2.pruned());
    // Same target again: at most the tie shortfall is pruned, never more than the target.
    let third = compute_masks(
        &[("w", &t2)],
        &Criterion::Percentile { q: 80.0 },
        Some(&second),
        None,
    )
    .unwrap();
    assert!(third.is_subset_of(&second).unwrap());
    let p3 = third.get("w").unwrap().pruned();
    assert!(p3 >= m2.pruned() && p3 <= 798, "pruned {p3}");
    // A lower target never revives.
    let lower = compute_masks(
        &[("w", &t2)],
        &Criterion::Percentile { q: 10.0 },
        Some(&second),
        None,
    )
    .unwrap();
    assert_eq!(lower, second);
    // Global behaves the same way over the total.
    let g = compute_masks(
        &[("w", &t2)],
        &Criterion::Global { q: 80.0 },
        Some(&first),
        None,
    )
    .unwrap();
    assert_eq!(g, second);
    // Std: computed over survivors, keeps a subset.
    let s = compute_masks(
        &[("w", &t2)],
        &Criterion::Std { s: 0.5 },
        Some(&first),
        None,
    )
    .unwrap();
    assert!(s.is_subset_of(&first).unwrap());
    assert!(s.get("w").unwrap().pruned() > 497);
}

#[test]
fn random_prunes_exact_counts_deterministically() {
    let t = tensor(&data2(997), &[997]);
    let w = [("layer", &t)];
    let a = compute_masks(&w, &Criterion::Random { q: 30.0, seed: 7 }, None, None).unwrap();
    let b = compute_masks(&w, &Criterion::Random { q: 30.0, seed: 7 }, None, None).unwrap();
    let c = compute_masks(&w, &Criterion::Random { q: 30.0, seed: 8 }, None, None).unwrap();
    assert_eq!(a, b);
    assert_ne!(a, c);
    // round(0.3 * 997) = 299
    assert_eq!(a.get("layer").unwrap().pruned(), 299);
    let more = compute_masks(&w, &Criterion::Random { q: 60.0, seed: 9 }, Some(&a), None).unwrap();
    assert!(more.is_subset_of(&a).unwrap());
    assert_eq!(more.get("layer").unwrap().pruned(), 598);
    // Random ignores magnitudes: it prunes some of the largest weights too.
    let big = compute_masks(&w, &Criterion::Percentile { q: 90.0 }, None, None).unwrap();
    let big = big.get("layer").unwrap();
    let pruned_big = (0..997)
        .filter(|i| big.keep()[*i] && !more.get("layer").unwrap().keep()[*i])
        .count();
    assert!(pruned_big > 0);
}

#[test]
fn per_layer_percentile_and_restriction_carry_other_layers() {
    let a = tensor(&data(1200), &[1200]);
    let b = tensor(&data2(997), &[997]);
    let w = [("a", &a), ("b", &b)];
    let crit = Criterion::PerLayerPercentile {
        q: [("b".to_string(), 45.0)].into_iter().collect(),
    };
    let m = compute_masks(&w, &crit, None, None).unwrap();
    assert!(m.get("a").is_none());
    assert_eq!(m.get("b").unwrap().nonzero(), 548);
    // prev mask of `b` is carried when only `a` is pruned.
    let only_a = ["a".to_string()];
    let m2 = compute_masks(
        &w,
        &Criterion::Percentile { q: 45.0 },
        Some(&m),
        Some(&only_a),
    )
    .unwrap();
    assert_eq!(m2.get("b"), m.get("b"));
    assert_eq!(m2.get("a").unwrap().nonzero(), 660);
}

#[test]
fn works_on_f64_and_higher_rank_weights() {
    let t = tensor(&data(1200), &[10, 12, 2, 5])
        .to_dtype(DType::F64)
        .unwrap();
    let m = compute_masks(
        &[("conv", &t)],
        &Criterion::Percentile { q: 45.0 },
        None,
        None,
    )
    .unwrap();
    assert_eq!(m.get("conv").unwrap().nonzero(), 660);
    assert_eq!(m.get("conv").unwrap().shape(), &[10, 12, 2, 5]);
}

#[test]
fn nonsense_is_rejected_with_named_errors() {
    let t = tensor(&SMALL, &[12]);
    let w = [("fc", &t)];
    for q in [-0.1, 100.5, f64::NAN, f64::INFINITY] {
        for c in [
            Criterion::Percentile { q },
            Criterion::Global { q },
            Criterion::Random { q, seed: 0 },
        ] {
            let e = compute_masks(&w, &c, None, None).unwrap_err();
            assert!(matches!(e, SparsityError::InvalidPercentile { .. }), "{e}");
        }
    }
    let e = compute_masks(&w, &Criterion::Std { s: -1.0 }, None, None).unwrap_err();
    assert!(matches!(e, SparsityError::InvalidStdFactor { .. }));
    assert!(e.to_string().contains("Criterion::Std.s"));

    let unknown = ["conv9".to_string()];
    let e =
        compute_masks(&w, &Criterion::Percentile { q: 10.0 }, None, Some(&unknown)).unwrap_err();
    assert!(matches!(&e, SparsityError::UnknownLayer { name, .. } if name == "conv9"));

    let mut prev = MaskSet::new();
    prev.insert("ghost", deepcomp_sparsity::Mask::dense(&[12]));
    let e = compute_masks(&w, &Criterion::Percentile { q: 10.0 }, Some(&prev), None).unwrap_err();
    assert!(matches!(e, SparsityError::UnknownLayer { .. }));

    let mut prev = MaskSet::new();
    prev.insert("fc", deepcomp_sparsity::Mask::dense(&[3, 4]));
    let e = compute_masks(&w, &Criterion::Percentile { q: 10.0 }, Some(&prev), None).unwrap_err();
    assert!(matches!(e, SparsityError::ShapeMismatch { .. }));

    let e = compute_masks(
        &[("fc", &t), ("fc", &t)],
        &Criterion::Percentile { q: 1.0 },
        None,
        None,
    )
    .unwrap_err();
    assert!(matches!(e, SparsityError::DuplicateLayer { .. }));

    let nan = tensor(&[1.0, f32::NAN, 2.0], &[3]);
    let e = compute_masks(
        &[("n", &nan)],
        &Criterion::Percentile { q: 1.0 },
        None,
        None,
    )
    .unwrap_err();
    assert!(matches!(e, SparsityError::NonFinite { index: 1, .. }));

    let empty = tensor(&[], &[0, 4]);
    let e = compute_masks(&[("e", &empty)], &Criterion::Std { s: 1.0 }, None, None).unwrap_err();
    assert!(matches!(e, SparsityError::EmptyLayer { .. }));

    let bad_map = Criterion::PerLayerPercentile {
        q: [("nope".to_string(), 10.0)].into_iter().collect(),
    };
    assert!(matches!(
        compute_masks(&w, &bad_map, None, None).unwrap_err(),
        SparsityError::UnknownLayer { .. }
    ));
    assert!(numpy_percentile(&[], 5.0).is_err());
    assert!(Criterion::Std { s: 1.0 }.with_target(0.5).is_err());
    assert!(Criterion::Percentile { q: 0.0 }.with_target(1.5).is_err());
    assert_eq!(
        Criterion::Global { q: 0.0 }.with_target(0.8).unwrap(),
        Criterion::Global { q: 80.0 }
    );
}
