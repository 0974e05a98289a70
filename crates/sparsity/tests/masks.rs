//! Mask operations (the masked-finetune contract), summaries and sensitivity tables.

use candle_core::{DType, Device, Tensor};
use deepcomp_sparsity::{
    compute_masks, sensitivity, Criterion, LayerSparsity, Mask, MaskSet, SparsityError,
    SparsitySummary,
};

fn t(v: &[f32], shape: &[usize]) -> Tensor {
    Tensor::from_vec(v.to_vec(), shape, &Device::Cpu).unwrap()
}

#[test]
fn apply_gives_exact_positive_zero_for_any_content_and_dtype() {
    let m = Mask::new(vec![2, 3], vec![true, false, true, false, false, true]).unwrap();
    let x = t(
        &[-1.0, -2.0, 3.0, f32::NAN, f32::NEG_INFINITY, 6.0],
        &[2, 3],
    );
    let y = m
        .apply(&x)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    assert_eq!(y[0], -1.0);
    assert_eq!(y[2], 3.0);
    assert_eq!(y[5], 6.0);
    for i in [1, 3, 4] {
        assert_eq!(y[i].to_bits(), 0, "position {i} is not +0.0: {}", y[i]);
    }
    // f64 and bf16 state tensors keep their dtype.
    for dt in [DType::F64, DType::BF16] {
        let xd = x.to_dtype(dt).unwrap();
        let yd = m.apply(&xd).unwrap();
        assert_eq!(yd.dtype(), dt);
        assert_eq!(m.violations(&yd).unwrap(), 0);
    }
    let mut s = vec![-1.0f32, -2.0, 3.0, 4.0, -5.0, 6.0];
    m.apply_slice(&mut s).unwrap();
    assert_eq!(s.iter().map(|v| v.to_bits()).filter(|b| *b == 0).count(), 3);
    assert!(m.apply_slice(&mut [0.0; 5]).is_err());
    assert_eq!(
        m.to_tensor(&Device::Cpu).unwrap().to_vec2::<f32>().unwrap(),
        vec![vec![1.0, 0.0, 1.0], vec![0.0, 0.0, 1.0]]
    );
    assert_eq!((m.nonzero(), m.pruned(), m.density()), (3, 3, 0.5));
    assert!(matches!(
        m.apply(&t(&[1.0; 6], &[3, 2])).unwrap_err(),
        SparsityError::ShapeMismatch { .. }
    ));
    assert!(Mask::new(vec![2, 2], vec![true; 3]).is_err());
    // -0.0 is a violation for `violations` (bitwise), but pruned for `from_nonzero`.
    let neg = t(&[1.0, -0.0, 2.0, 0.0, 0.0, 1.0], &[2, 3]);
    assert_eq!(m.violations(&neg).unwrap(), 1);
    assert_eq!(
        Mask::from_nonzero(&neg).unwrap().keep(),
        &[true, false, true, false, false, true]
    );
}

/// SGD with momentum on a masked layer: after every step, weights, gradients and the
/// momentum buffer are masked; pruned positions stay exactly +0.0 throughout.
#[test]
fn masked_sgd_momentum_keeps_pruned_weights_and_state_at_zero() {
    let dev = Device::Cpu;
    let w0: Vec<f32> = (0..48)
        .map(|i| ((i * 37 % 48) as f32 - 24.0) / 10.0)
        .collect();
    let mut w = t(&w0, &[6, 8]);
    let masks = compute_masks(
        &[("fc", &w)],
        &Criterion::Percentile { q: 70.0 },
        None,
        None,
    )
    .unwrap();
    let on_dev = masks.to_device(&dev).unwrap();
    w = on_dev.apply("fc", &w).unwrap();
    let mut mom = w.zeros_like().unwrap();
    let x = Tensor::from_vec(
        (0..40).map(|i| (i as f32 * 0.37).sin()).collect::<Vec<_>>(),
        (5, 8),
        &dev,
    )
    .unwrap();
    let target = Tensor::from_vec(
        (0..30).map(|i| (i as f32 * 0.11).cos()).collect::<Vec<_>>(),
        (5, 6),
        &dev,
    )
    .unwrap();
    for _ in 0..20 {
        let var = candle_core::Var::from_tensor(&w).unwrap();
        let out = x.matmul(&var.as_tensor().t().unwrap()).unwrap();
        let loss = out.sub(&target).unwrap().sqr().unwrap().mean_all().unwrap();
        let grads = loss.backward().unwrap();
        let g = grads.get(var.as_tensor()).unwrap();
        let g = on_dev.apply("fc", g).unwrap();
        mom = on_dev
            .apply("fc", &(mom.affine(0.9, 0.0).unwrap() + &g).unwrap())
            .unwrap();
        w = on_dev
            .apply("fc", &(&w - mom.affine(0.1, 0.0).unwrap()).unwrap())
            .unwrap();
        assert_eq!(masks.violations(&[("fc", &w)]).unwrap(), 0);
        assert_eq!(masks.violations(&[("fc", &mom)]).unwrap(), 0);
    }
    // Kept weights did train.
    let before = t(&w0, &[6, 8]);
    let moved = (&w - &before)
        .unwrap()
        .abs()
        .unwrap()
        .sum_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    assert!(moved > 0.0);
    assert!(matches!(
        on_dev.apply("other", &w).unwrap_err(),
        SparsityError::UnknownLayer { .. }
    ));
    assert_eq!(
        on_dev
            .apply_if_masked("bias", &x)
            .unwrap()
            .to_vec2::<f32>()
            .unwrap(),
        x.to_vec2::<f32>().unwrap()
    );
    assert!(masks.apply("nope", &w).is_err());
}

#[test]
fn summary_prints_like_the_seeds() {
    // Seed 000 prints: Total nonzero parameters: 1315679 / Total parameters: 3811680 /
    // Total sparsity: 0.654830 (1 - 1315679/3811680 = 0.65483...).
    let s = SparsitySummary {
        layers: vec![
            LayerSparsity {
                name: "features.0.weight".into(),
                nonzero: 1_313_119,
                total: 3_806_560,
            },
            LayerSparsity {
                name: "classifier.weight".into(),
                nonzero: 2560,
                total: 5120,
            },
        ],
    };
    let text = s.to_string();
    assert!(text.ends_with(
        "Total nonzero parameters: 1315679\nTotal parameters: 3811680\nTotal sparsity: 0.654830\n"
    ), "{text}");
    assert!(
        text.contains("   1  classifier.weight        2560 /       5120  sparsity 0.500000"),
        "{text}"
    );

    let a = t(&[0.0, 1.0, -0.0, 2.0], &[2, 2]);
    let b = t(&[3.0, 0.0, 0.0, 0.0, 0.0, 1.0], &[6]);
    let from_w = SparsitySummary::from_weights(&[("a", &a), ("b", &b)]).unwrap();
    assert_eq!(from_w.total_nonzero(), 4);
    assert_eq!(from_w.total(), 10);
    assert!((from_w.total_sparsity() - 0.6).abs() < 1e-12);
    assert_eq!(from_w.layer("b").unwrap().nonzero, 2);
    assert!(SparsitySummary::from_weights(&[("a", &a), ("a", &b)]).is_err());
    // Mask summary agrees with the masked weights.
    let m = compute_masks(
        &[("a", &a), ("b", &b)],
        &Criterion::Percentile { q: 50.0 },
        None,
        None,
    )
    .unwrap();
    let ms = m.summary();
    let wa = m.apply("a", &a).unwrap();
    let wb = m.apply("b", &b).unwrap();
    let ws = SparsitySummary::from_weights(&[("a", &wa), ("b", &wb)]).unwrap();
    assert!(ms.total_nonzero() >= ws.total_nonzero());
    assert_eq!(ms.total(), 10);
}

/// Toy model: "accuracy" = 0.9 − Σ_layer weight_l · (fraction of the layer's L1 mass
/// pruned). The first layer is robust (small weight), the second sensitive.
#[test]
fn sensitivity_table_with_a_deterministic_eval() {
    let a = t(&(1..=10).map(|i| i as f32).collect::<Vec<_>>(), &[2, 5]);
    let b = t(&(1..=20).map(|i| -(i as f32)).collect::<Vec<_>>(), &[20]);
    let weights = [("conv1", &a), ("fc", &b)];
    let mass = |name: &str, w: &Tensor, m: &MaskSet| -> f64 {
        let total = w
            .abs()
            .unwrap()
            .sum_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap() as f64;
        let kept = m
            .apply_if_masked(name, w)
            .unwrap()
            .abs()
            .unwrap()
            .sum_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap() as f64;
        1.0 - kept / total
    };
    let mut calls = 0;
    let table = sensitivity(&weights, &[10.0, 50.0, 90.0], |m: &MaskSet| {
        calls += 1;
        assert!(m.len() <= 1, "only one layer is pruned at a time");
        Ok::<f64, String>(0.9 - 0.1 * mass("conv1", &a, m) - 1.0 * mass("fc", &b, m))
    })
    .unwrap();
    assert_eq!(calls, 1 + 2 * 3);
    assert_eq!(table.baseline, 0.9);
    assert_eq!(table.rows[0].layer, "conv1");
    assert_eq!(table.rows[1].params, 20);
    // np.percentile(np.arange(1,11), 50) = 5.5 -> prunes 1..5 (mass 15/55).
    assert!((table.rows[0].accuracy[1] - (0.9 - 0.1 * 15.0 / 55.0)).abs() < 1e-6);
    assert!((table.rows[0].sparsity[1] - 0.5).abs() < 1e-12);
    // np.percentile(np.arange(1,21), 90) = 18.1 -> prunes 1..18 (mass 171/210).
    assert!((table.rows[1].accuracy[2] - (0.9 - 171.0 / 210.0)).abs() < 1e-6);
    // Accuracy falls with the level; fc falls faster.
    for row in &table.rows {
        assert!(row.accuracy.windows(2).all(|w| w[1] <= w[0]));
    }
    assert!(table.rows[1].accuracy[2] < table.rows[0].accuracy[2]);
    let md = table.to_string();
    assert!(md.contains("| layer | params | 10% | 50% | 90% |"), "{md}");
    assert!(md.contains("| conv1 | 10 |"), "{md}");
    let suggest = table.suggest_levels(0.05);
    // conv1 at 90 %: prunes 1..9, drop 0.1·45/55 = 0.082 > 0.05; at 50 %: 0.027.
    assert_eq!(suggest["conv1"], 50.0);
    assert_eq!(suggest["fc"], 10.0);
    let csv = table.to_csv();
    assert_eq!(csv.lines().count(), 1 + 1 + 6);
    assert!(csv.starts_with("layer,params,level,sparsity,accuracy\n<dense>,"));
    // Errors from the closure and bad levels are reported.
    let e = sensitivity(&weights, &[50.0], |m: &MaskSet| {
        if m.is_empty() {
            Ok(1.0)
        } else {
            Err("eval exploded")
        }
    })
    .unwrap_err();
    assert!(
        matches!(&e, SparsityError::Eval { layer, .. } if layer == "conv1"),
        "{e}"
    );
    assert!(sensitivity(&weights, &[150.0], |_m: &MaskSet| Ok::<f64, String>(1.0)).is_err());
    assert!(sensitivity(&weights, &[], |_m: &MaskSet| Ok::<f64, String>(1.0)).is_err());
}

/// `zero_in_place` writes +0.0 (never −0.0) at pruned positions, leaves kept values bit for bit, agrees
/// with `apply`, and declines (returns false, touches nothing) where it cannot work in place.
#[test]
fn zero_in_place_matches_apply_and_declines_what_it_cannot_do() {
    let m = Mask::new(vec![2, 3], vec![true, false, true, false, false, true]).unwrap();
    let mut set = MaskSet::new();
    set.insert("w", m);
    let on_dev = set.to_device(&Device::Cpu).unwrap();
    let vals = [-1.5f32, -2.0, 3.0, -0.0, 4.0, -5.0];
    for dtype in [DType::F32, DType::F64] {
        let x = t(&vals, &[2, 3]).to_dtype(dtype).unwrap();
        let expected = on_dev.apply("w", &x).unwrap();
        let y = x.copy().unwrap();
        assert!(on_dev.zero_in_place("w", &y).unwrap());
        let bits = |t: &Tensor| -> Vec<u64> {
            t.to_dtype(DType::F64)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1::<f64>()
                .unwrap()
                .iter()
                .map(|v| v.to_bits())
                .collect()
        };
        assert_eq!(bits(&y), bits(&expected));
        assert_eq!(
            bits(&y),
            [-1.5f64, 0.0, 3.0, 0.0, 0.0, -5.0]
                .map(f64::to_bits)
                .to_vec()
        );
    }
    // A transposed (non-contiguous) view: declined and untouched.
    let base = t(&vals, &[3, 2]);
    let view = base.t().unwrap();
    assert!(!on_dev.zero_in_place("w", &view).unwrap());
    assert_eq!(base.flatten_all().unwrap().to_vec1::<f32>().unwrap(), vals);
    // Integer tensors are declined too; wrong shapes and unknown names are errors.
    let ints = Tensor::zeros((2, 3), DType::U32, &Device::Cpu).unwrap();
    assert!(!on_dev.zero_in_place("w", &ints).unwrap());
    let wrong = t(&[1.0; 6], &[3, 2]);
    assert!(matches!(
        on_dev.zero_in_place("w", &wrong),
        Err(SparsityError::ShapeMismatch { .. })
    ));
    assert!(matches!(
        on_dev.zero_in_place("nope", &wrong),
        Err(SparsityError::UnknownLayer { .. })
    ));
}

/// A level of 100 % zeroes the whole layer (the percentile rule alone would keep its largest weight).
#[test]
fn sensitivity_level_100_zeroes_the_layer() {
    let a = t(&[1.0, -2.0, 3.0, -4.0, 5.0, 6.0], &[2, 3]);
    let b = t(&[0.5, 0.25], &[2]);
    let weights = [("fc1", &a), ("fc2", &b)];
    let mut seen = Vec::new();
    let table = sensitivity(&weights, &[50.0, 100.0], |m: &MaskSet| {
        let kept: usize = m.iter().map(|(_, mask)| mask.nonzero()).sum();
        seen.push((m.names().map(str::to_string).collect::<Vec<_>>(), kept));
        Ok::<f64, String>(kept as f64)
    })
    .unwrap();
    assert_eq!(table.rows[0].sparsity, vec![0.5, 1.0]);
    assert_eq!(table.rows[1].sparsity, vec![0.5, 1.0]);
    // The 100 % masks hold only their layer, with nothing kept.
    assert_eq!(seen[2], (vec!["fc1".to_string()], 0));
    assert_eq!(seen[4], (vec!["fc2".to_string()], 0));
}
