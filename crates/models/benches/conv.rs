//! Speed of the conv-net kernels on ResNet-20's layer shapes at batch 128 (CIFAR-10, 32×32): the
//! im2col + gemm convolution forward and forward + backward, and BatchNorm + residual + ReLU as our
//! fused op against the same computation composed of candle ops.
//!
//! ```text
//! cargo bench -p deepcomp-models --bench conv
//! ```
//!
//! Run it with `RAYON_NUM_THREADS` and `CANDLE_NUM_THREADS=1` as `deepcomp` runs (see the driver's
//! `main.rs`).

use candle_core::{DType, Device, Tensor, Var};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use deepcomp_models::kernels::bn::batch_norm_train_act;
use deepcomp_models::kernels::conv2d;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::hint::black_box;
use std::time::Duration;

const BATCH: usize = 128;

/// (name, in channels, out channels, side, stride): ResNet-20's three stages and a stride-2 entry.
const LAYERS: [(&str, usize, usize, usize, usize); 4] = [
    ("16x32x32", 16, 16, 32, 1),
    ("16to32_s2", 16, 32, 32, 2),
    ("32x16x16", 32, 32, 16, 1),
    ("64x8x8", 64, 64, 8, 1),
];

fn randn(rng: &mut ChaCha8Rng, dims: &[usize]) -> Var {
    let n: usize = dims.iter().product();
    let v: Vec<f32> = (0..n).map(|_| rng.random_range(-1.0f32..1.0)).collect();
    Var::from_vec(v, dims, &Device::Cpu).unwrap()
}

fn bench_conv(c: &mut Criterion) {
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let mut g = c.benchmark_group("conv3x3_b128");
    g.sample_size(10).measurement_time(Duration::from_secs(5));
    for (name, cin, cout, side, stride) in LAYERS {
        let x = randn(&mut rng, &[BATCH, cin, side, side]);
        let w = randn(&mut rng, &[cout, cin, 3, 3]);
        let so = side / stride;
        let dy = randn(&mut rng, &[BATCH, cout, so, so]);
        g.throughput(Throughput::Elements(BATCH as u64));
        g.bench_with_input(BenchmarkId::new("forward", name), &(), |b, _| {
            b.iter(|| conv2d(black_box(x.as_tensor()), w.as_tensor(), None, stride, 1).unwrap())
        });
        g.bench_with_input(BenchmarkId::new("forward_backward", name), &(), |b, _| {
            b.iter(|| {
                let y = conv2d(x.as_tensor(), w.as_tensor(), None, stride, 1).unwrap();
                (y * dy.as_tensor())
                    .unwrap()
                    .sum_all()
                    .unwrap()
                    .backward()
                    .unwrap()
            })
        });
    }
    g.finish();
}

fn bench_bn(c: &mut Criterion) {
    let mut rng = ChaCha8Rng::seed_from_u64(2);
    let mut g = c.benchmark_group("bn_add_relu_b128");
    g.sample_size(10).measurement_time(Duration::from_secs(5));
    for (name, _, ch, side, stride) in LAYERS.into_iter().filter(|l| l.4 == 1) {
        let dims = [BATCH, ch, side / stride, side / stride];
        let x = randn(&mut rng, &dims);
        let r = randn(&mut rng, &dims);
        let dy = randn(&mut rng, &dims);
        let gamma = Var::ones(ch, DType::F32, &Device::Cpu).unwrap();
        let beta = Var::zeros(ch, DType::F32, &Device::Cpu).unwrap();
        let backward = |y: Tensor| {
            (y * dy.as_tensor())
                .unwrap()
                .sum_all()
                .unwrap()
                .backward()
                .unwrap()
        };
        g.throughput(Throughput::Elements(BATCH as u64));
        g.bench_with_input(BenchmarkId::new("fused", name), &(), |b, _| {
            b.iter(|| {
                let (y, _) = batch_norm_train_act(
                    x.as_tensor(),
                    gamma.as_tensor(),
                    beta.as_tensor(),
                    1e-5,
                    Some(r.as_tensor()),
                    true,
                )
                .unwrap();
                backward(y)
            })
        });
        g.bench_with_input(
            BenchmarkId::new("bn_then_candle_add_relu", name),
            &(),
            |b, _| {
                b.iter(|| {
                    let (y, _) = batch_norm_train_act(
                        x.as_tensor(),
                        gamma.as_tensor(),
                        beta.as_tensor(),
                        1e-5,
                        None,
                        false,
                    )
                    .unwrap();
                    backward((y + r.as_tensor()).unwrap().relu().unwrap())
                })
            },
        );
    }
    g.finish();
}

criterion_group!(benches, bench_conv, bench_bn);
criterion_main!(benches);
