//! Weight sharing and trained quantization (paper §3, §3.3).

use candle_core::{Device, Tensor};
use deepcomp_quant::synth::gaussian_weights;
use deepcomp_quant::{
    default_bits, share_tensor, share_weights, share_weights_with, BitPlan, Init, KMeansConfig,
    QuantError, SharedWeights,
};

/// Gaussian weights with every third one pruned to exactly zero.
fn pruned_layer(n: usize, seed: u64) -> Vec<f32> {
    let mut w = gaussian_weights(n, 0.05, seed);
    w.iter_mut().step_by(3).for_each(|x| *x = 0.0);
    w
}

#[test]
fn paper_default_bits() {
    assert_eq!(default_bits(true), 8);
    assert_eq!(default_bits(false), 5);
    let plan = BitPlan::paper()
        .with_override_specs(["fc3=2", " conv1 = 6"])
        .unwrap();
    assert_eq!(plan.bits_for("conv2", true), 8);
    assert_eq!(plan.bits_for("fc1", false), 5);
    assert_eq!(plan.bits_for("fc3", false), 2);
    assert_eq!(plan.bits_for("conv1", true), 6);
    assert_eq!(BitPlan::default(), BitPlan::paper());
    assert_eq!(BitPlan::uniform(4).unwrap().bits_for("x", true), 4);
    for bad in ["fc3", "=4", "fc3=0", "fc3=17", "fc3=x"] {
        assert!(
            BitPlan::paper().with_override_specs([bad]).is_err(),
            "{bad} should be rejected"
        );
    }
}

#[test]
fn pruned_zeros_are_not_a_cluster_and_stay_zero() {
    let w = pruned_layer(30_000, 1);
    for bits in [1u8, 2, 5, 8] {
        let s = share_weights(&w, None, bits, Init::Linear).unwrap();
        assert!(s.codebook().len() <= 1 << bits);
        assert_eq!(s.kept(), w.iter().filter(|&&x| x != 0.0).count());
        assert!(s.positions().windows(2).all(|p| p[0] < p[1]));
        assert!(s.codebook().windows(2).all(|c| c[0] <= c[1]));
        let back = s.reconstruct();
        for (i, (&orig, &r)) in w.iter().zip(&back).enumerate() {
            if orig == 0.0 {
                assert_eq!(r.to_bits(), 0, "pruned position {i} must be +0.0");
            } else {
                // Nearest centroid.
                let best = s
                    .codebook()
                    .iter()
                    .map(|&c| (c - orig).abs())
                    .fold(f32::INFINITY, f32::min);
                assert_eq!((r - orig).abs(), best);
            }
        }
        // With 1 bit no centroid sits at zero just because zeros dominate.
        if bits == 1 {
            assert!(
                s.codebook()[0] < -0.02 && s.codebook()[1] > 0.02,
                "{:?}",
                s.codebook()
            );
        }
        let sse: f64 = w
            .iter()
            .zip(&back)
            .map(|(&a, &b)| (f64::from(a) - f64::from(b)).powi(2))
            .sum();
        assert!((sse - s.sse().unwrap()).abs() <= 1e-9 * sse);
    }
}

#[test]
fn explicit_mask_selects_weights() {
    let w = [0.5f32, f32::NAN, 0.0, -0.25, 0.75, 3.0];
    let mask = [true, false, true, true, true, false];
    let s = share_weights(&w, Some(&mask), 2, Init::Linear).unwrap();
    assert_eq!(s.positions(), vec![0, 2, 3, 4]);
    // Four distinct kept values, four clusters: exact; the kept zero is a value.
    assert_eq!(s.codebook(), vec![-0.25, 0.0, 0.5, 0.75]);
    assert_eq!(s.reconstruct(), vec![0.5, 0.0, 0.0, -0.25, 0.75, 0.0]);
    assert_eq!(s.mask(), mask.to_vec());
    assert_eq!(s.code_counts(), vec![1, 1, 1, 1]);
    assert!(matches!(
        share_weights(&w, Some(&mask[..3]), 2, Init::Linear),
        Err(QuantError::LengthMismatch {
            what: "mask",
            expected: 6,
            got: 3
        })
    ));
    // Without a mask the NaN is a kept weight: error naming its position.
    match share_weights(&w, None, 2, Init::Linear) {
        Err(QuantError::NonFinite {
            what: "weights",
            index: 1,
            ..
        }) => {}
        other => panic!("expected NonFinite at 1, got {other:?}"),
    }
}

#[test]
fn degenerate_layers() {
    let empty = share_weights(&[], None, 5, Init::Linear).unwrap();
    assert_eq!(
        (empty.len(), empty.kept(), empty.codebook().len()),
        (0, 0, 0)
    );
    let all_pruned = share_weights(&[0.0; 10], None, 5, Init::Density).unwrap();
    assert!(all_pruned.codebook().is_empty());
    assert_eq!(all_pruned.reconstruct(), vec![0.0; 10]);
    let constant = share_weights(&[0.0, 0.2, 0.2, 0.0], None, 3, Init::Linear).unwrap();
    assert_eq!(constant.codebook(), vec![0.2]);
    assert_eq!(constant.reconstruct(), vec![0.0, 0.2, 0.2, 0.0]);
    for bits in [0u8, 17] {
        assert!(matches!(
            share_weights(&[1.0], None, bits, Init::Linear),
            Err(QuantError::InvalidBits { .. })
        ));
    }
    // k above 2^bits would not fit the codes.
    assert!(matches!(
        share_weights_with(&[1.0, 2.0], None, 2, &KMeansConfig::new(5, Init::Linear)),
        Err(QuantError::InvalidParam { name: "k", .. })
    ));
}

#[test]
fn exact_sharing_is_at_least_as_good() {
    let w = pruned_layer(20_000, 2);
    let lloyd = share_weights(&w, None, 4, Init::Linear).unwrap();
    let exact = share_weights_with(
        &w,
        None,
        4,
        &KMeansConfig::for_bits(4, Init::Linear)
            .unwrap()
            .with_exact(true),
    )
    .unwrap();
    assert!(exact.sse().unwrap() <= lloyd.sse().unwrap() * (1.0 + 1e-9));
}

/// Hand-computed step of trained quantization.
///
/// Kept weights (positions 1,2,3,5,6,7) = 2.0, 2.1, -1.0, -1.1, 2.0, -0.9;
/// with 1 bit and linear init Lloyd converges to the cluster means
/// c0 = mean(-1.0, -1.1, -0.9) = -1.0 and c1 = mean(2.0, 2.1, 2.0) = 2.0333…,
/// codes = [1, 1, 0, 0, 1, 0].
/// grad = [5, .1, .2, -.3, 7, .4, -.5, .6] (5 and 7 sit on pruned positions
/// and are ignored): g0 = -.3 + .4 + .6 = 0.7, g1 = .1 + .2 - .5 = -0.2.
/// lr = 0.5: c0 = -1.0 - 0.35 = -1.35, c1 = 2.0333… + 0.1 = 2.1333….
#[test]
fn hand_computed_centroid_step() {
    let w = [0.0f32, 2.0, 2.1, -1.0, 0.0, -1.1, 2.0, -0.9];
    let mut s = share_weights(&w, None, 1, Init::Linear).unwrap();
    assert_eq!(s.positions(), vec![1, 2, 3, 5, 6, 7]);
    assert_eq!(s.codes(), vec![1, 1, 0, 0, 1, 0]);
    assert!((s.codebook()[0] + 1.0).abs() < 1e-6);
    assert!((s.codebook()[1] - 6.1 / 3.0).abs() < 1e-6);
    let grad = [5.0f32, 0.1, 0.2, -0.3, 7.0, 0.4, -0.5, 0.6];
    let g = s.centroid_grads(&grad).unwrap();
    assert!(
        (g[0] - 0.7).abs() < 1e-6 && (g[1] + 0.2).abs() < 1e-6,
        "{g:?}"
    );
    s.centroid_step(&grad, 0.5).unwrap();
    assert!((s.codebook()[0] + 1.35).abs() < 1e-6, "{:?}", s.codebook());
    assert!((s.codebook()[1] - (6.1 / 3.0 + 0.1)).abs() < 1e-6);
    let r = s.reconstruct();
    let (a, b) = (s.codebook()[0], s.codebook()[1]);
    assert_eq!(r, vec![0.0, b, b, a, 0.0, a, b, a]);
}

#[test]
fn centroid_steps_keep_pruned_zeros_and_sorted_codebook() {
    let w = pruned_layer(3_000, 3);
    let mut s = share_weights(&w, None, 3, Init::Linear).unwrap();
    let before = s.reconstruct();
    // A gradient that pushes every weight towards +0.2 hard, with large
    // gradients on the pruned positions that must be ignored.
    let grad: Vec<f32> = w
        .iter()
        .zip(&before)
        .map(|(&orig, &q)| if orig == 0.0 { 1e6 } else { (q - 0.2) * 0.01 })
        .collect();
    let mut expected = before.clone();
    for _ in 0..5 {
        // Track what each weight should become, independently of sorting.
        let g = s.centroid_grads(&grad).unwrap();
        let old = s.codebook().to_vec();
        for (&p, &c) in s.positions().iter().zip(s.codes()) {
            expected[p as usize] = old[c as usize] - 0.3 * g[c as usize];
        }
        s.centroid_step(&grad, 0.3).unwrap();
        assert!(
            s.codebook().windows(2).all(|c| c[0] <= c[1]),
            "{:?}",
            s.codebook()
        );
        let now = s.reconstruct();
        assert_eq!(now, expected);
        for (i, &orig) in w.iter().enumerate() {
            if orig == 0.0 {
                assert_eq!(now[i].to_bits(), 0);
            }
        }
    }
}

#[test]
fn crossing_centroids_are_resorted_with_codes_remapped() {
    let w = [-1.0f32, 1.0, -1.0, 1.0];
    let mut s = share_weights(&w, None, 1, Init::Linear).unwrap();
    assert_eq!(s.codebook(), vec![-1.0, 1.0]);
    // Gradient +1 on the upper weights and -1 on the lower ones: with lr 2
    // each centroid moves by 4 in the other direction, so they swap places.
    let grad = [-1.0f32, 1.0, -1.0, 1.0];
    s.centroid_step(&grad, 2.0).unwrap();
    assert_eq!(s.codebook(), vec![-3.0, 3.0]);
    assert_eq!(s.reconstruct(), vec![3.0, -3.0, 3.0, -3.0]);
    assert_eq!(s.codes(), vec![1, 0, 1, 0]);
}

#[test]
fn centroid_step_errors_leave_state_untouched() {
    let w = [0.0f32, 1.0, 2.0];
    let mut s = share_weights(&w, None, 1, Init::Linear).unwrap();
    let snapshot = s.clone();
    assert!(matches!(
        s.centroid_step(&[0.0, 1.0], 0.1),
        Err(QuantError::LengthMismatch { what: "grad", .. })
    ));
    assert!(matches!(
        s.centroid_step(&[0.0, f32::NAN, 0.0], 0.1),
        Err(QuantError::NonFinite {
            what: "grad",
            index: 1,
            ..
        })
    ));
    assert!(matches!(
        s.centroid_step(&[0.0, 1.0, 0.0], f32::INFINITY),
        Err(QuantError::InvalidParam { name: "lr", .. })
    ));
    // A NaN on a pruned position is ignored.
    s.centroid_step(&[f32::NAN, 0.0, 0.0], 0.1).unwrap();
    assert_eq!(s, snapshot);
}

#[test]
fn tensors_in_and_out() {
    let dev = Device::Cpu;
    let w = pruned_layer(6 * 4 * 3 * 3, 4);
    let t = Tensor::from_vec(w.clone(), (6, 4, 3, 3), &dev).unwrap();
    let s = share_tensor(&t, None, 8, Init::Linear).unwrap();
    assert_eq!(s, share_weights(&w, None, 8, Init::Linear).unwrap());
    let back = s.to_tensor((6, 4, 3, 3), &dev).unwrap();
    assert_eq!(back.dims(), &[6, 4, 3, 3]);
    assert_eq!(
        back.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
        s.reconstruct()
    );
    assert!(matches!(
        s.to_tensor((6, 4, 3), &dev),
        Err(QuantError::LengthMismatch { .. })
    ));
    // Gradient as a tensor (f64 to exercise the dtype conversion).
    let mut a = s.clone();
    let mut b = s.clone();
    let g: Vec<f32> = (0..w.len()).map(|i| (i % 7) as f32 * 0.01).collect();
    let gt = Tensor::from_vec(g.clone(), (6, 4, 3, 3), &dev)
        .unwrap()
        .to_dtype(candle_core::DType::F64)
        .unwrap();
    a.centroid_step_tensor(&gt, 0.1).unwrap();
    b.centroid_step(&g, 0.1).unwrap();
    assert_eq!(a, b);
}

#[test]
fn from_parts_round_trip_and_validation() {
    let w = pruned_layer(500, 5);
    let s = share_weights(&w, None, 3, Init::Density).unwrap();
    let (len, cb, pos, codes, bits) = s.clone().into_parts();
    let back =
        SharedWeights::from_parts(len, cb.clone(), pos.clone(), codes.clone(), bits).unwrap();
    assert_eq!(back.sse(), None);
    assert_eq!(back.reconstruct(), s.reconstruct());

    let bad = |len, cb: Vec<f32>, pos: Vec<u64>, codes: Vec<u32>, bits| {
        SharedWeights::from_parts(len, cb, pos, codes, bits).unwrap_err()
    };
    // Each broken invariant is reported, naming the part.
    let e = bad(4, vec![0.1, 0.2], vec![0, 2], vec![0, 1], 0);
    assert!(matches!(e, QuantError::InvalidBits { bits: 0, .. }));
    let e = bad(4, vec![0.1, 0.2, 0.3], vec![0, 2], vec![0, 1], 1);
    assert!(e.to_string().contains("codebook length"), "{e}");
    let e = bad(4, vec![0.2, 0.1], vec![0, 2], vec![0, 1], 1);
    assert!(e.to_string().contains("ascending"), "{e}");
    let e = bad(4, vec![0.1, f32::NAN], vec![0, 2], vec![0, 1], 1);
    assert!(matches!(
        e,
        QuantError::NonFinite {
            what: "codebook",
            ..
        }
    ));
    let e = bad(4, vec![0.1, 0.2], vec![0, 2], vec![0], 1);
    assert!(matches!(
        e,
        QuantError::LengthMismatch { what: "codes", .. }
    ));
    let e = bad(4, vec![0.1, 0.2], vec![2, 2], vec![0, 1], 1);
    assert!(e.to_string().contains("strictly ascending"), "{e}");
    let e = bad(4, vec![0.1, 0.2], vec![0, 4], vec![0, 1], 1);
    assert!(e.to_string().contains(">= len"), "{e}");
    let e = bad(4, vec![0.1, 0.2], vec![0, 2], vec![0, 2], 1);
    assert!(e.to_string().contains("not an index"), "{e}");
    let e = bad(4, vec![], vec![0], vec![0], 1);
    assert!(e.to_string().contains("not an index"), "{e}");
}
