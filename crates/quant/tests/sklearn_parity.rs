//! SSE parity with scikit-learn on exactly the benchmark data.
//!
//! The data are `gaussian_weights(n, 0.05, seed)`; `examples/export_gaussian.rs`
//! wrote them as raw f32 and `scripts/sklearn_compare.py` clustered them with
//! scikit-learn 1.9.1 / numpy 2.4.6 / Python 3.11 (k = 32, `n_init=1`, SSE
//! recomputed in float64 from sklearn's labels and centres):
//!
//! ```text
//! $ cargo run --release -p deepcomp-quant --example export_gaussian -- target/quant-sklearn
//! $ python3 crates/quant/scripts/sklearn_compare.py target/quant-sklearn
//! g235200 n=235200 init=linear: sse=1.569856289e+00 inertia=1.569856289e+00 iters=176 time(best of 3)=0.821s
//! g235200 n=235200 init=k-means++: sse=1.511723583e+00 inertia=1.511723583e+00 iters=13 time(best of 3)=0.279s
//! g2359296 n=2359296 init=linear: sse=1.586221372e+01 inertia=1.586221372e+01 iters=180 time(best of 3)=18.582s
//! g2359296 n=2359296 init=k-means++: sse=1.505660322e+01 inertia=1.505660322e+01 iters=11 time(best of 3)=8.246s
//! ```
//!
//! and the data checksums, to tie the figures to these exact values:
//!
//! ```text
//! $ python3 -c "import numpy as np; x=np.fromfile('target/quant-sklearn/g235200.f32','<f4').astype(np.float64); print(np.abs(x).sum(), x[0], x[-1])"
//! g235200  235200  abs-sum 9387.626082004821  first 0.044407647  last -0.018571345
//! g2359296 2359296 abs-sum 94090.70982917261  first -0.09849218  last 0.04690818
//! ```
//!
//! (sklearn's linear init is `np.linspace(x.min(), x.max(), 32)`, the same
//! centroids as `Init::Linear`. It stops at `tol = 1e-4`; deepcomp runs Lloyd
//! to exact convergence, which is why its SSE is lower from the same start.)

use deepcomp_quant::synth::gaussian_weights;
use deepcomp_quant::{kmeans_1d, Init, KMeansConfig};

struct Case {
    n: usize,
    seed: u64,
    abs_sum: f64,
    first: f32,
    last: f32,
    sklearn_linear: f64,
    sklearn_kmeanspp: f64,
}

const CASES: [Case; 2] = [
    Case {
        n: 235_200,
        seed: 1,
        abs_sum: 9387.626082004821,
        first: 0.044407647,
        last: -0.018571345,
        sklearn_linear: 1.569856289,
        sklearn_kmeanspp: 1.511723583,
    },
    Case {
        n: 2_359_296,
        seed: 2,
        abs_sum: 94090.70982917261,
        first: -0.09849218,
        last: 0.04690818,
        sklearn_linear: 15.86221372,
        sklearn_kmeanspp: 15.05660322,
    },
];

#[test]
fn sse_not_worse_than_sklearn_on_benchmark_data() {
    for case in &CASES {
        let x = gaussian_weights(case.n, 0.05, case.seed);
        let abs_sum: f64 = x.iter().map(|&v| f64::from(v).abs()).sum();
        assert!(
            (abs_sum - case.abs_sum).abs() <= 1e-9 * case.abs_sum,
            "data changed"
        );
        assert_eq!(
            (x[0], x[case.n - 1]),
            (case.first, case.last),
            "data changed"
        );

        let ours = kmeans_1d(&x, &KMeansConfig::new(32, Init::Linear)).unwrap();
        assert!(ours.converged);
        assert_eq!(ours.centroids.len(), 32);
        assert!(
            ours.sse <= case.sklearn_linear && ours.sse <= case.sklearn_kmeanspp,
            "n {}: deepcomp {} vs sklearn linear {} / k-means++ {}",
            case.n,
            ours.sse,
            case.sklearn_linear,
            case.sklearn_kmeanspp
        );
    }
}

/// On the smaller set, the exact solver certifies how close Lloyd gets to the
/// global optimum (measured: 1.458108e0 vs 1.458096e0, within 1e-5 relative).
#[test]
fn lloyd_is_near_the_exact_optimum_on_benchmark_data() {
    let case = &CASES[0];
    let x = gaussian_weights(case.n, 0.05, case.seed);
    let lloyd = kmeans_1d(&x, &KMeansConfig::new(32, Init::Linear)).unwrap();
    let exact = kmeans_1d(&x, &KMeansConfig::new(32, Init::Linear).with_exact(true)).unwrap();
    assert!(exact.sse <= lloyd.sse);
    assert!(
        lloyd.sse <= exact.sse * (1.0 + 1e-4),
        "{} vs {}",
        lloyd.sse,
        exact.sse
    );
}
