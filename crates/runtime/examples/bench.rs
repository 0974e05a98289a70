//! Latency and resident weight bytes of the compressed engine against the dense-decoded baseline, on
//! generated pruned + weight-shared LeNet-300-100, LeNet-5 and ResNet-20 files (or on `.dcz` files
//! given as arguments). Prints JSON lines.
//!
//! ```text
//! cargo run --release -p deepcomp-runtime --example bench [-- model.dcz ...]
//! ```
//!
//! Generated files: weights kept uniformly at random at the given density, codes uniform over a
//! `2^bits` codebook, batch norm and biases random. Timing does not depend on the values, only on the
//! shapes, the density and the code widths.

use std::time::Instant;

use deepcomp_format::{DczFile, DenseTensor, LayerKind, SparseLayer};
use deepcomp_runtime::CompressedModel;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// `(name, shape)` of every tensor; weights are the 2-D and 4-D ones.
fn tensors(arch: &str) -> Vec<(String, Vec<usize>)> {
    let mut v: Vec<(String, Vec<usize>)> = Vec::new();
    let fc = |v: &mut Vec<(String, Vec<usize>)>, n: &str, o: usize, i: usize| {
        v.push((format!("{n}.weight"), vec![o, i]));
        v.push((format!("{n}.bias"), vec![o]));
    };
    match arch {
        "lenet300" => {
            fc(&mut v, "fc1", 300, 784);
            fc(&mut v, "fc2", 100, 300);
            fc(&mut v, "fc3", 10, 100);
        }
        "lenet5" => {
            v.push(("conv1.weight".into(), vec![20, 1, 5, 5]));
            v.push(("conv1.bias".into(), vec![20]));
            v.push(("conv2.weight".into(), vec![50, 20, 5, 5]));
            v.push(("conv2.bias".into(), vec![50]));
            fc(&mut v, "fc1", 500, 800);
            fc(&mut v, "fc2", 10, 500);
        }
        "resnet20" => {
            let bn = |v: &mut Vec<(String, Vec<usize>)>, n: &str, c: usize| {
                for s in ["weight", "bias", "running_mean", "running_var"] {
                    v.push((format!("{n}.{s}"), vec![c]));
                }
            };
            v.push(("conv1.weight".into(), vec![16, 3, 3, 3]));
            bn(&mut v, "bn1", 16);
            let mut c = 16;
            for stage in 1..=3 {
                let planes = 16 << (stage - 1);
                for b in 0..3 {
                    let p = format!("layer{stage}.{b}");
                    v.push((format!("{p}.conv1.weight"), vec![planes, c, 3, 3]));
                    bn(&mut v, &format!("{p}.bn1"), planes);
                    v.push((format!("{p}.conv2.weight"), vec![planes, planes, 3, 3]));
                    bn(&mut v, &format!("{p}.bn2"), planes);
                    c = planes;
                }
            }
            fc(&mut v, "linear", 10, 64);
        }
        _ => unreachable!(),
    }
    v
}

/// A generated file: weights at `density`, `conv_bits` / `fc_bits` codebooks.
fn generate(arch: &str, density: f64, conv_bits: u8, fc_bits: u8) -> DczFile {
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let mut layers = Vec::new();
    let mut dense = Vec::new();
    for (name, shape) in tensors(arch) {
        let n: usize = shape.iter().product();
        if shape.len() >= 2 {
            let conv = shape.len() == 4;
            let bits = if conv { conv_bits } else { fc_bits };
            let k = 1usize << bits;
            let codebook: Vec<f32> = (0..k)
                .map(|i| -0.1 + 0.2 * (i as f32 + 0.5) / k as f32)
                .collect();
            let positions: Vec<u64> = (0..n as u64).filter(|_| rng.random_bool(density)).collect();
            let codes = positions
                .iter()
                .map(|_| rng.random_range(0..k as u32))
                .collect();
            layers.push(SparseLayer {
                name,
                kind: if conv { LayerKind::Conv } else { LayerKind::Fc },
                shape,
                bits,
                index_bits: 4,
                codebook,
                positions,
                codes,
            });
        } else {
            let var = name.ends_with("running_var");
            let data = (0..n)
                .map(|_| {
                    if var {
                        rng.random_range(0.5f32..2.0)
                    } else {
                        rng.random_range(-0.1f32..0.1)
                    }
                })
                .collect();
            dense.push(DenseTensor { name, shape, data });
        }
    }
    DczFile {
        model: arch.into(),
        recipe_hash: [0; 32],
        layers,
        dense,
        ..Default::default()
    }
}

/// Median seconds of one forward of `batch` samples.
fn time(model: &CompressedModel, batch: usize) -> f64 {
    let x: Vec<f32> = (0..batch * model.input_len())
        .map(|i| ((i * 7919) % 1000) as f32 / 500.0 - 1.0)
        .collect();
    let once = || {
        let t = Instant::now();
        std::hint::black_box(model.forward(&x, batch).unwrap());
        t.elapsed().as_secs_f64()
    };
    once();
    // Repeat until ~0.3 s or 200 runs, at least 5.
    let first = once();
    let reps = ((0.3 / first.max(1e-7)) as usize).clamp(5, 200);
    let mut v: Vec<f64> = (0..reps).map(|_| once()).collect();
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn report(label: &str, file: &DczFile, file_bytes: usize) {
    let compressed = CompressedModel::from_file(file).unwrap();
    let mut dense = compressed.clone();
    dense.decode_dense();
    let kept: usize = compressed.layers().iter().map(|l| l.nonzero).sum();
    let params: usize = compressed.layers().iter().map(|l| l.params).sum();
    for threads in [1, 2] {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        pool.install(|| {
            let c1 = time(&compressed, 1);
            let c128 = time(&compressed, 128);
            let d1 = time(&dense, 1);
            let d128 = time(&dense, 128);
            println!(
                "{{\"model\":\"{label}\",\"threads\":{threads},\"density\":{:.4},\
                 \"compressed_b1_us\":{:.1},\"dense_b1_us\":{:.1},\
                 \"compressed_b128_ms\":{:.3},\"dense_b128_ms\":{:.3},\
                 \"compressed_weight_bytes\":{},\"dense_weight_bytes\":{},\"dcz_file_bytes\":{file_bytes}}}",
                kept as f64 / params as f64,
                c1 * 1e6,
                d1 * 1e6,
                c128 * 1e3,
                d128 * 1e3,
                compressed.weight_bytes(),
                compressed.dense_bytes(),
            );
        });
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.is_empty() {
        for (arch, density, cb, fb) in [
            ("lenet300", 0.08, 8, 5),
            ("lenet5", 0.08, 8, 5),
            ("resnet20", 0.30, 8, 5),
        ] {
            let f = generate(arch, density, cb, fb);
            let bytes = f.to_bytes().unwrap().len();
            report(arch, &f, bytes);
        }
    } else {
        for a in args {
            let bytes = std::fs::read(&a).unwrap();
            let f = DczFile::from_bytes(&bytes).unwrap();
            report(&a, &f, bytes.len());
        }
    }
}
