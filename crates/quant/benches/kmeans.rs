//! 1-D k-means speed: k = 32, linear init, Lloyd to convergence, on the same
//! Gaussian data that `scripts/sklearn_compare.py` gives to scikit-learn
//! (`examples/export_gaussian.rs` writes it). Results are in the README.
//!
//! ```text
//! cargo bench -p deepcomp-quant --bench kmeans
//! ```

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use deepcomp_quant::synth::gaussian_weights;
use deepcomp_quant::{kmeans_1d, share_weights, Init, KMeansConfig};
use std::hint::black_box;
use std::time::Duration;

/// `(n, seed)`: a 300×784 fc layer and a 3×3×512×512 conv layer.
const SETS: [(usize, u64); 2] = [(235_200, 1), (2_359_296, 2)];

fn bench_kmeans(c: &mut Criterion) {
    let mut g = c.benchmark_group("kmeans_1d_k32_linear");
    g.sample_size(20).measurement_time(Duration::from_secs(10));
    for (n, seed) in SETS {
        let w = gaussian_weights(n, 0.05, seed);
        let cfg = KMeansConfig::new(32, Init::Linear);
        g.throughput(Throughput::Elements(n as u64));
        g.bench_with_input(BenchmarkId::from_parameter(n), &w, |b, w| {
            b.iter(|| kmeans_1d(black_box(w), &cfg).map(|r| r.sse))
        });
    }
    g.finish();

    // Whole weight-sharing call at the paper's fc width (5 bits) on a layer
    // with half of its weights pruned.
    let mut g = c.benchmark_group("share_weights_5bit_half_pruned");
    g.sample_size(20).measurement_time(Duration::from_secs(10));
    for (n, seed) in SETS {
        let mut w = gaussian_weights(n, 0.05, seed);
        w.iter_mut().step_by(2).for_each(|x| *x = 0.0);
        g.throughput(Throughput::Elements(n as u64));
        g.bench_with_input(BenchmarkId::from_parameter(n), &w, |b, w| {
            b.iter(|| share_weights(black_box(w), None, 5, Init::Linear).map(|s| s.sse()))
        });
    }
    g.finish();
}

criterion_group!(benches, bench_kmeans);
criterion_main!(benches);
