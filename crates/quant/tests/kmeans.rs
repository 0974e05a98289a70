//! 1-D k-means: optimality against brute force and the exact solver,
//! degenerate inputs, ties, determinism.

use deepcomp_quant::synth::gaussian_weights;
use deepcomp_quant::{assign, kmeans_1d, Init, KMeansConfig, QuantError};
use proptest::prelude::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

const INITS: [Init; 4] = [
    Init::Linear,
    Init::Density,
    Init::Random { seed: 3 },
    Init::KMeansPlusPlus { seed: 4 },
];

/// SSE recomputed directly from centroids and assignments.
fn direct_sse(values: &[f32], centroids: &[f32], codes: &[u32]) -> f64 {
    values
        .iter()
        .zip(codes)
        .map(|(&x, &c)| (f64::from(x) - f64::from(centroids[c as usize])).powi(2))
        .sum()
}

/// Minimum SSE over all k^n labelings (each cluster at its mean).
fn brute_force_sse(values: &[f32], k: usize) -> f64 {
    let n = values.len();
    let total = k.pow(n as u32);
    let mut best = f64::INFINITY;
    for mut code in 0..total {
        let mut sum = vec![0.0f64; k];
        let mut cnt = vec![0usize; k];
        let mut labels = vec![0usize; n];
        for l in labels.iter_mut() {
            *l = code % k;
            code /= k;
        }
        for (&x, &l) in values.iter().zip(&labels) {
            sum[l] += f64::from(x);
            cnt[l] += 1;
        }
        let sse: f64 = values
            .iter()
            .zip(&labels)
            .map(|(&x, &l)| (f64::from(x) - sum[l] / cnt[l] as f64).powi(2))
            .sum();
        best = best.min(sse);
    }
    best
}

#[test]
fn exact_solver_equals_brute_force_on_tiny_inputs() {
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    for trial in 0..60 {
        let n = rng.random_range(1..=7);
        // Coarse values so that duplicates occur.
        let values: Vec<f32> = (0..n)
            .map(|_| rng.random_range(-8i32..=8) as f32 * 0.25)
            .collect();
        for k in 1..=3 {
            let want = brute_force_sse(&values, k);
            let exact = kmeans_1d(
                &values,
                &KMeansConfig::new(k, Init::Linear).with_exact(true),
            )
            .unwrap();
            assert!(
                (exact.sse - want).abs() <= 1e-6 * want.max(1e-3),
                "trial {trial} k {k} {values:?}: exact {} brute {want}",
                exact.sse
            );
            for init in INITS {
                let lloyd = kmeans_1d(&values, &KMeansConfig::new(k, init)).unwrap();
                assert!(lloyd.sse >= want - 1e-9, "Lloyd beat the optimum?");
            }
        }
    }
}

#[test]
fn exact_solver_never_worse_than_lloyd() {
    for seed in 0..8u64 {
        let mut values = gaussian_weights(3000, 0.1, seed);
        // A heavy tail and some duplicates make Lloyd's local optima visible.
        values.extend(gaussian_weights(60, 1.0, seed + 100));
        values.extend(std::iter::repeat_n(0.05f32, 200));
        for k in [2usize, 5, 16] {
            let exact = kmeans_1d(
                &values,
                &KMeansConfig::new(k, Init::Linear).with_exact(true),
            )
            .unwrap();
            assert_eq!(exact.centroids.len(), k);
            for init in INITS {
                let lloyd = kmeans_1d(&values, &KMeansConfig::new(k, init)).unwrap();
                assert!(
                    exact.sse <= lloyd.sse * (1.0 + 1e-9) + 1e-12,
                    "seed {seed} k {k} {init:?}: exact {} > lloyd {}",
                    exact.sse,
                    lloyd.sse
                );
            }
        }
    }
}

#[test]
fn reported_sse_matches_assignments() {
    let values = gaussian_weights(50_000, 0.03, 9);
    for init in INITS {
        for exact in [false, true] {
            let r = kmeans_1d(&values, &KMeansConfig::new(32, init).with_exact(exact)).unwrap();
            let d = direct_sse(&values, &r.centroids, &r.assignments);
            assert!((r.sse - d).abs() <= 1e-9 * d, "{init:?}: {} vs {d}", r.sse);
            assert!(
                r.centroids.windows(2).all(|w| w[0] < w[1]),
                "not strictly ascending"
            );
            assert!(r.centroids.len() <= 32);
            assert_eq!(r.assignments.len(), values.len());
        }
    }
}

#[test]
fn empty_input() {
    let r = kmeans_1d(&[], &KMeansConfig::new(4, Init::Linear)).unwrap();
    assert!(r.centroids.is_empty() && r.assignments.is_empty());
    assert_eq!(r.sse, 0.0);
}

#[test]
fn all_equal_values() {
    let values = vec![0.37f32; 1000];
    for exact in [false, true] {
        let r = kmeans_1d(
            &values,
            &KMeansConfig::new(32, Init::Linear).with_exact(exact),
        )
        .unwrap();
        assert_eq!(r.centroids, vec![0.37f32]);
        assert!(r.assignments.iter().all(|&c| c == 0));
        assert_eq!(r.sse, 0.0);
    }
}

#[test]
fn fewer_distinct_values_than_k_is_exact() {
    let values = [3.0f32, -1.0, 3.0, 0.5, -1.0, 0.5, 0.5, -0.0, 0.0];
    for init in INITS {
        let r = kmeans_1d(&values, &KMeansConfig::new(8, init)).unwrap();
        assert_eq!(r.centroids, vec![-1.0, 0.0, 0.5, 3.0]);
        assert_eq!(r.assignments, vec![3, 0, 3, 2, 0, 2, 2, 1, 1]);
        assert_eq!(r.sse, 0.0);
        assert_eq!(r.iterations, 0);
        // -0.0 is normalised to +0.0 in the codebook.
        assert!(r.centroids[1].is_sign_positive());
    }
}

#[test]
fn non_finite_values_are_errors() {
    for (bad, idx) in [
        (f32::NAN, 2usize),
        (f32::INFINITY, 0),
        (f32::NEG_INFINITY, 4),
    ] {
        let mut v = vec![0.1f32, 0.2, 0.3, 0.4, 0.5];
        v[idx] = bad;
        match kmeans_1d(&v, &KMeansConfig::new(2, Init::Linear)) {
            Err(QuantError::NonFinite { what, index, .. }) => {
                assert_eq!(what, "values");
                assert_eq!(index, idx);
            }
            other => panic!("expected NonFinite, got {other:?}"),
        }
    }
}

#[test]
fn invalid_configs_are_errors() {
    let v = [1.0f32, 2.0];
    assert!(matches!(
        kmeans_1d(&v, &KMeansConfig::new(0, Init::Linear)),
        Err(QuantError::InvalidK { k: 0 })
    ));
    assert!(matches!(
        kmeans_1d(&v, &KMeansConfig::new(2, Init::Linear).with_tol(-1.0)),
        Err(QuantError::InvalidParam { name: "tol", .. })
    ));
    assert!(matches!(
        KMeansConfig::for_bits(0, Init::Linear),
        Err(QuantError::InvalidBits { bits: 0, .. })
    ));
    assert!(matches!(
        KMeansConfig::for_bits(17, Init::Linear),
        Err(QuantError::InvalidBits { bits: 17, .. })
    ));
    assert_eq!(KMeansConfig::for_bits(16, Init::Linear).unwrap().k, 65536);
}

#[test]
fn exact_solver_refuses_huge_tables() {
    let values: Vec<f32> = (0..8200).map(|i| i as f32).collect();
    let err = kmeans_1d(
        &values,
        &KMeansConfig::new(8192, Init::Linear).with_exact(true),
    )
    .unwrap_err();
    match &err {
        QuantError::ExactTooLarge { distinct, k, .. } => {
            assert_eq!((*distinct, *k), (8200, 8192));
        }
        other => panic!("expected ExactTooLarge, got {other:?}"),
    }
    assert!(err.to_string().contains("Lloyd"));
}

#[test]
fn midpoint_ties_go_to_the_lower_centroid() {
    assert_eq!(
        assign(&[0.5, 0.25, 0.75, -1.0, 9.0], &[0.0, 1.0]),
        vec![0, 0, 1, 0, 1]
    );
    // Linear init gives centroids 0 and 2, so 1.0 lies exactly on their
    // midpoint; it joins the lower cluster, which settles at 1/3.
    let r = kmeans_1d(
        &[0.0, 0.0, 1.0, 2.0, 2.0],
        &KMeansConfig::new(2, Init::Linear),
    )
    .unwrap();
    assert_eq!(r.assignments, vec![0, 0, 0, 1, 1]);
    assert_eq!(r.centroids, vec![1.0f32 / 3.0, 2.0]);
}

#[test]
fn deterministic_and_seeded() {
    let values = gaussian_weights(20_000, 0.05, 5);
    for init in INITS {
        let a = kmeans_1d(&values, &KMeansConfig::new(16, init)).unwrap();
        let b = kmeans_1d(&values, &KMeansConfig::new(16, init)).unwrap();
        assert_eq!(a, b);
    }
    let a = kmeans_1d(&values, &KMeansConfig::new(16, Init::Random { seed: 1 })).unwrap();
    let b = kmeans_1d(&values, &KMeansConfig::new(16, Init::Random { seed: 2 })).unwrap();
    assert_ne!(
        a.centroids, b.centroids,
        "different seeds should give different starts"
    );
}

#[test]
fn iteration_budget_and_tolerance() {
    let values = gaussian_weights(20_000, 0.05, 6);
    let zero = kmeans_1d(
        &values,
        &KMeansConfig::new(8, Init::Linear).with_max_iter(0),
    )
    .unwrap();
    assert_eq!(zero.iterations, 0);
    assert!(!zero.converged);
    // Linear initial centroids on [min, max], each owning at least one value.
    let one = kmeans_1d(
        &values,
        &KMeansConfig::new(8, Init::Linear).with_max_iter(1),
    )
    .unwrap();
    let full = kmeans_1d(&values, &KMeansConfig::new(8, Init::Linear)).unwrap();
    assert!(full.converged);
    assert!(full.sse <= one.sse && one.sse <= zero.sse);
    let loose = kmeans_1d(&values, &KMeansConfig::new(8, Init::Linear).with_tol(1e-2)).unwrap();
    assert!(loose.converged && loose.iterations < full.iterations);
}

#[test]
fn exact_convergence_is_a_lloyd_fixed_point() {
    let values = gaussian_weights(10_000, 0.05, 8);
    let r = kmeans_1d(&values, &KMeansConfig::new(16, Init::Density)).unwrap();
    assert!(r.converged);
    // Every centroid is (to f32 rounding) the mean of its members.
    for (j, &c) in r.centroids.iter().enumerate() {
        let members: Vec<f64> = values
            .iter()
            .zip(&r.assignments)
            .filter(|&(_, &a)| a as usize == j)
            .map(|(&x, _)| f64::from(x))
            .collect();
        let mean = members.iter().sum::<f64>() / members.len() as f64;
        assert!((mean - f64::from(c)).abs() <= 1e-6 * mean.abs().max(1e-3));
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    #[test]
    fn assignments_are_nearest_centroids(
        values in prop::collection::vec(-100.0f32..100.0, 1..300),
        k in 1usize..12,
        exact in any::<bool>(),
    ) {
        let r = kmeans_1d(&values, &KMeansConfig::new(k, Init::Linear).with_exact(exact)).unwrap();
        prop_assert!(r.centroids.len() <= k && !r.centroids.is_empty());
        for (&x, &a) in values.iter().zip(&r.assignments) {
            let d = (f64::from(x) - f64::from(r.centroids[a as usize])).abs();
            for &c in &r.centroids {
                prop_assert!(d <= (f64::from(x) - f64::from(c)).abs());
            }
        }
        // No empty clusters are reported.
        let mut used = vec![false; r.centroids.len()];
        for &a in &r.assignments { used[a as usize] = true; }
        prop_assert!(used.iter().all(|&u| u));
        let d = direct_sse(&values, &r.centroids, &r.assignments);
        prop_assert!((r.sse - d).abs() <= 1e-9 * d.max(1.0));
    }
}

/// Linear init spreads the centroids evenly between min and max, so one outlier leaves most of them
/// in an empty gap; those clusters are reseeded by splitting the widest clusters, and every code is
/// used (before reseeding, this input used 3 of 8 codes).
#[test]
fn linear_init_empty_clusters_are_reseeded() {
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    let mut values: Vec<f32> = (0..5000).map(|_| rng.random_range(-1.0f32..1.0)).collect();
    values.push(10.0);
    let cfg = KMeansConfig::for_bits(3, Init::Linear).unwrap();
    let r = kmeans_1d(&values, &cfg).unwrap();
    assert_eq!(r.centroids.len(), 8, "{:?}", r.centroids);
    let mut used = [0usize; 8];
    for &a in &r.assignments {
        used[a as usize] += 1;
    }
    assert!(used.iter().all(|&n| n > 0), "{used:?}");
    // Reseeding only lowers the error: compare with the optimum and with a 3-cluster solution.
    let exact = kmeans_1d(&values, &cfg.clone().with_exact(true)).unwrap();
    assert!(
        r.sse <= exact.sse * 1.5,
        "{} vs optimum {}",
        r.sse,
        exact.sse
    );
    let three = kmeans_1d(&values, &KMeansConfig::new(3, Init::Linear)).unwrap();
    assert!(r.sse < three.sse, "{} vs {}", r.sse, three.sse);
}
