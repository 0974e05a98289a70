//! Seed 003's Lab 1: which sparse-optimization variants recover the support of a sparse
//! least-squares solution (3 points, 5 unknowns, ‖w*‖₀ = 2, 200 full-batch steps,
//! μ = 0.02; λ and thresholds as listed in the seed).

use deepcomp_sparsity::lsq::{descend, lab_problem, LeastSquares, Method, LAB_LR, LAB_STEPS};

const LR: f64 = LAB_LR;
const STEPS: usize = LAB_STEPS;

/// The lab's instance (`lsq::lab_problem`); the aggregate test below checks what holds on *every*
/// generated instance.
fn lab_instance() -> LeastSquares {
    lab_problem().unwrap()
}

#[test]
fn lab1_shape_on_the_fixed_instance() {
    let p = lab_instance();
    let truth = p.true_support().unwrap();
    assert_eq!(truth, vec![1, 4]);

    // (b) plain GD: converges to an optimum (L -> 0) that is not sparse.
    let plain = descend(&p, Method::Plain, LR, STEPS).unwrap();
    assert_eq!(plain.losses.len(), STEPS + 1);
    assert!(plain.final_loss() < 1e-6, "{}", plain.final_loss());
    assert_eq!(plain.support(1e-3).len(), 5);

    // (c) projected GD onto ‖w‖₀ <= 2: optimal and sparse, the true support.
    let proj = descend(&p, Method::Projected { k: 2 }, LR, STEPS).unwrap();
    assert_eq!(proj.support(0.0), truth);
    assert!(proj.final_loss() < 1e-10, "{}", proj.final_loss());
    assert!(proj
        .weights
        .iter()
        .all(|w| w.iter().filter(|v| **v != 0.0).count() <= 2));

    // (d) L1 by subgradient: never exactly sparse; bigger λ, bigger final loss.
    let mut l1_losses = Vec::new();
    for lambda in [0.2, 0.5, 1.0, 2.0] {
        let tr = descend(&p, Method::L1 { lambda }, LR, STEPS).unwrap();
        assert_eq!(tr.support(0.0).len(), 5, "λ={lambda}");
        l1_losses.push(tr.final_loss());
    }
    assert!(l1_losses.windows(2).all(|w| w[1] > w[0]), "{l1_losses:?}");

    // (e) proximal (soft thresholding, thr = μλ): exact zeros, but L1's bias keeps the
    // loss away from 0; it matches (d)'s loss level for the corresponding λ.
    let mut prox_losses = Vec::new();
    for thr in [0.004, 0.01, 0.02, 0.04] {
        let tr = descend(&p, Method::Proximal { threshold: thr }, LR, STEPS).unwrap();
        assert!(tr.final_loss() > 1e-6, "thr={thr}");
        prox_losses.push(tr.final_loss());
    }
    for (a, b) in l1_losses.iter().zip(&prox_losses) {
        assert!((a / b).ln().abs() < 1.0, "L1 {a} vs prox {b}");
    }
    let prox = descend(&p, Method::Proximal { threshold: 0.04 }, LR, STEPS).unwrap();
    assert_eq!(prox.support(0.0), truth);

    // (f) trimmed L1 (3 smallest of 5), thr 0.02..0.2: the true support, and no bias.
    for thr in [0.02, 0.04, 0.1, 0.2] {
        let tr = descend(
            &p,
            Method::TrimmedProximal {
                threshold: thr,
                trimmed: 3,
            },
            LR,
            STEPS,
        )
        .unwrap();
        assert_eq!(tr.support(0.0), truth, "thr={thr}");
        assert!(tr.final_loss() < 1e-12, "thr={thr}: {}", tr.final_loss());
        let w = tr.final_weights();
        assert!(
            (w[1] - 1.5).abs() < 1e-6 && (w[4] + 2.0).abs() < 1e-6,
            "{w:?}"
        );
    }
}

/// What holds on every generated instance, and how often each variant recovers the
/// support on 20 random 3×5 problems.
#[test]
fn lab1_on_generated_instances() {
    let methods = [
        Method::Plain,
        Method::L1 { lambda: 0.2 },
        Method::Projected { k: 2 },
        Method::Proximal { threshold: 0.04 },
        Method::TrimmedProximal {
            threshold: 0.02,
            trimmed: 3,
        },
    ];
    let mut recovered = [0usize; 5];
    for seed in 0..20u64 {
        let p = LeastSquares::generated(3, 5, 2, seed).unwrap();
        let truth = p.true_support().unwrap();
        assert_eq!(truth.len(), 2);
        for (j, m) in methods.iter().enumerate() {
            let tr = descend(&p, *m, LR, STEPS).unwrap();
            assert!(tr.final_loss().is_finite());
            let support = tr.support(0.0);
            match m {
                Method::Plain | Method::L1 { .. } => {
                    assert_eq!(support.len(), 5, "seed {seed} {m:?}")
                }
                Method::Projected { .. } => assert!(support.len() <= 2),
                _ => {}
            }
            if support == truth {
                recovered[j] += 1;
            }
        }
        // Plain GD decreases the loss by orders of magnitude.
        let plain = descend(&p, Method::Plain, LR, STEPS).unwrap();
        assert!(plain.final_loss() < 1e-2 * plain.losses[0], "seed {seed}");
    }
    println!("support recovered out of 20 (plain, l1, projected, prox, trimmed): {recovered:?}");
    assert_eq!(recovered[0], 0);
    assert_eq!(recovered[1], 0);
    assert!(
        recovered[2] > 0 && recovered[4] >= recovered[2],
        "{recovered:?}"
    );
}

#[test]
fn lab1_errors() {
    assert!(LeastSquares::generated(3, 5, 6, 0).is_err());
    assert!(LeastSquares::new(vec![vec![1.0, 2.0]], vec![1.0], vec![0.0]).is_err());
    let p = lab_instance();
    assert!(descend(&p, Method::Plain, 0.0, 10).is_err());
    assert!(descend(&p, Method::Proximal { threshold: -1.0 }, LR, 10).is_err());
}
