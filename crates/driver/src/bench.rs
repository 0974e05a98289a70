//! Throughput figures for `cargo xtask bench` (written to `target/deepcomp/bench.json`).
//!
//! Each figure is the best of a few repetitions on generated data with fixed seeds, on a rayon pool of
//! the given number of threads (deepcomp's kernels split work across the pool they run in; the
//! `deepcomp` binary gives candle's own pool one thread). The criterion benches under
//! `crates/entropy/benches`, `crates/quant/benches` and `crates/models/benches` (conv kernels, fused
//! BatchNorm epilogue) measure the same kernels with statistics; this module gives one JSON a
//! regression script can read.

use std::time::Instant;

use candle_core::{Device, Tensor};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use crate::error::Result;

/// The figures `cargo xtask bench` writes.
#[derive(Debug, Clone, Serialize)]
pub struct BenchFigures {
    /// LeNet-300-100 training, SGD + momentum, batch 128: examples per second.
    pub train_lenet300_ex_s: f64,
    /// LeNet-5 training, SGD + momentum, batch 128: examples per second.
    pub train_lenet5_ex_s: f64,
    /// ResNet-20 (CIFAR-10 shape) training, SGD + momentum, batch 128: examples per second.
    pub train_resnet20_ex_s: f64,
    /// VGG16-half (CIFAR-10 shape) training, SGD + momentum, batch 128: examples per second.
    pub train_vgg16_half_ex_s: f64,
    /// ResNet-20 masked fine-tuning at 80 % sparsity (percentile pruning of every conv / fc weight,
    /// the driver's `MaskHook` on every step), batch 128: examples per second.
    pub finetune_resnet20_ex_s: f64,
    /// ResNet-20 evaluation (eval-mode forward, loss and top-1/top-5 tally), batch 128: examples per
    /// second.
    pub eval_resnet20_ex_s: f64,
    /// Canonical Huffman encoding, 10M symbols of a skewed 32-symbol distribution: million symbols/s.
    pub huffman_encode_msym_s: f64,
    /// Table-driven Huffman decoding of the same stream: million symbols/s.
    pub huffman_decode_msym_s: f64,
    /// 1-D k-means, k = 32, linear init, 235,200 Gaussian weights: seconds.
    pub kmeans_235k_s: f64,
    /// 1-D k-means, k = 32, linear init, 2,359,296 Gaussian weights: seconds.
    pub kmeans_2359k_s: f64,
    /// Dense (candle) eval-mode forward latency of LeNet-300-100, LeNet-5 and ResNet-20 at batch 1
    /// and 128: the dense side of the compressed-engine comparison (`deepcomp-runtime`'s bench).
    pub dense_forward: Vec<ForwardLatency>,
    /// Threads the training kernels split work across (rayon's pool).
    pub threads: usize,
}

/// Median latency of one eval-mode forward pass.
#[derive(Debug, Clone, Serialize)]
pub struct ForwardLatency {
    /// Architecture id (`lenet300`, `lenet5`, `resnet20`).
    pub model: String,
    /// Examples per forward pass.
    pub batch: usize,
    /// Median seconds of one forward pass.
    pub seconds: f64,
}

fn best_of<F: FnMut() -> Result<f64>>(reps: usize, mut f: F) -> Result<f64> {
    let mut best = f64::INFINITY;
    for _ in 0..reps.max(1) {
        best = best.min(f()?);
    }
    Ok(best)
}

/// Four seeded batches of 128 generated inputs of `model`'s shape, with labels.
fn generated_batches(model: &dyn deepcomp_models::Model) -> Result<Vec<(Tensor, Tensor)>> {
    let device = Device::Cpu;
    let [c, h, w] = model.input_shape();
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let batch = 128;
    let mut batches = Vec::new();
    for _ in 0..4 {
        let x: Vec<f32> = (0..batch * c * h * w)
            .map(|_| rng.random_range(-1.0f32..1.0))
            .collect();
        let y: Vec<u32> = (0..batch).map(|_| rng.random_range(0..10u32)).collect();
        batches.push((
            Tensor::from_vec(x, (batch, c, h, w), &device)?,
            Tensor::from_vec(y, batch, &device)?,
        ));
    }
    Ok(batches)
}

/// Training throughput of `arch` with batch 128: the best of three runs of `steps` steps (after one
/// warm-up step).
pub fn train_throughput(arch: &str, steps: usize) -> Result<f64> {
    train_throughput_masked(arch, steps, None)
}

/// [`train_throughput`], as masked fine-tuning when `sparsity` is given: every conv / fc weight is
/// pruned to that fraction by magnitude (the percentile criterion) and the driver's [`MaskHook`]
/// zeroes pruned gradients, weights and momentum on every step, as the pipeline's finetune stage does.
///
/// [`MaskHook`]: crate::hooks::MaskHook
pub fn train_throughput_masked(arch: &str, steps: usize, sparsity: Option<f64>) -> Result<f64> {
    let device = Device::Cpu;
    let model = deepcomp_models::build(arch, &deepcomp_models::ArchConfig::default(), 1, &device)?;
    let batches = generated_batches(model.as_ref())?;
    let mut mask_hook = match sparsity {
        Some(f) => {
            let prunable = model.prunable();
            let weights: Vec<(&str, &Tensor)> = prunable
                .iter()
                .map(|p| (p.name.as_str(), p.var.as_tensor()))
                .collect();
            let masks = deepcomp_sparsity::compute_masks(
                &weights,
                &deepcomp_sparsity::Criterion::Percentile { q: f * 100.0 },
                None,
                None,
            )?;
            let hook = crate::hooks::MaskHook::new(&masks, &device)?;
            hook.apply_to_weights(model.as_ref())?;
            Some(hook)
        }
        None => None,
    };
    let mut no_hook = deepcomp_models::NoHook;
    let hook: &mut dyn deepcomp_models::TrainHook = match mask_hook.as_mut() {
        Some(h) => h,
        None => &mut no_hook,
    };
    let mut opt = deepcomp_models::OptimizerConfig::Sgd(deepcomp_models::SgdConfig {
        lr: 0.01,
        momentum: 0.9,
        ..Default::default()
    })
    .build()?;
    let progress = deepcomp_models::ProgressConfig::default();
    let one = |n: usize| {
        batches
            .iter()
            .cycle()
            .take(n)
            .map(|(x, y)| Ok((x.clone(), y.clone())))
    };
    deepcomp_models::train_epoch(model.as_ref(), opt.as_mut(), one(1), hook, 0, &progress)?;
    let mut epoch = 0;
    let seconds = best_of(3, || {
        epoch += 1;
        let t = Instant::now();
        deepcomp_models::train_epoch(
            model.as_ref(),
            opt.as_mut(),
            one(steps),
            hook,
            epoch,
            &progress,
        )?;
        Ok(t.elapsed().as_secs_f64())
    })?;
    Ok((steps * 128) as f64 / seconds)
}

/// Median seconds of one eval-mode forward of `batch` generated inputs through `arch` (candle, the
/// dense path `deepcomp eval` takes): repeated until ~0.3 s or 200 runs, at least 5, after a warm-up.
pub fn forward_latency(arch: &str, batch: usize) -> Result<f64> {
    let device = Device::Cpu;
    let model = deepcomp_models::build(arch, &deepcomp_models::ArchConfig::default(), 1, &device)?;
    let [c, h, w] = model.input_shape();
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    let x: Vec<f32> = (0..batch * c * h * w)
        .map(|_| rng.random_range(-1.0f32..1.0))
        .collect();
    let x = Tensor::from_vec(x, (batch, c, h, w), &device)?;
    let once = || -> Result<f64> {
        let t = Instant::now();
        std::hint::black_box(model.forward_t(&x, false)?);
        Ok(t.elapsed().as_secs_f64())
    };
    once()?;
    let first = once()?;
    let reps = ((0.3 / first.max(1e-7)) as usize).clamp(5, 200);
    let mut v = (0..reps).map(|_| once()).collect::<Result<Vec<f64>>>()?;
    v.sort_by(f64::total_cmp);
    Ok(v[v.len() / 2])
}

/// Evaluation throughput of `arch` (eval-mode forward, loss and accuracy tally, batch 128): the best
/// of three runs over `batches` batches (after one warm-up batch).
pub fn eval_throughput(arch: &str, batches: usize) -> Result<f64> {
    let device = Device::Cpu;
    let model = deepcomp_models::build(arch, &deepcomp_models::ArchConfig::default(), 1, &device)?;
    let data = generated_batches(model.as_ref())?;
    let run = |n: usize| {
        deepcomp_models::evaluate(
            model.as_ref(),
            data.iter()
                .cycle()
                .take(n)
                .map(|(x, y)| Ok((x.clone(), y.clone()))),
        )
    };
    run(1)?;
    let seconds = best_of(3, || {
        let t = Instant::now();
        run(batches)?;
        Ok(t.elapsed().as_secs_f64())
    })?;
    Ok((batches * 128) as f64 / seconds)
}

/// A skewed 32-symbol stream (geometric-like, as cluster codes of a pruned layer).
pub fn skewed_symbols(n: usize, seed: u64) -> Vec<u32> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..n)
        .map(|_| {
            let u: f64 = rng.random_range(f64::MIN_POSITIVE..1.0);
            ((-u.ln() * 4.0) as u32).min(31)
        })
        .collect()
}

/// Gaussian weights (Box–Muller), seeded.
pub fn gaussian(n: usize, seed: u64) -> Vec<f32> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..n)
        .map(|_| {
            let u1: f64 = rng.random_range(f64::MIN_POSITIVE..1.0);
            let u2: f64 = rng.random();
            ((-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos() * 0.05) as f32
        })
        .collect()
}

/// Huffman encode / decode throughput in million symbols per second (encoding into a reused bit writer,
/// decoding into a reused buffer, as a streaming decoder would).
pub fn huffman_throughput(n: usize, reps: usize) -> Result<(f64, f64)> {
    use deepcomp_entropy::{BitReader, BitWriter, HuffmanCode};
    let symbols = skewed_symbols(n, 3);
    let freqs = deepcomp_entropy::frequencies(&symbols, 32)?;
    let code = HuffmanCode::from_frequencies(&freqs, Some(16))?;
    let mut writer = BitWriter::with_capacity_bits(code.encoded_bits(&freqs)? as usize);
    let enc = best_of(reps, || {
        writer.clear();
        let t = Instant::now();
        code.encode_into(&symbols, &mut writer)?;
        Ok(t.elapsed().as_secs_f64())
    })?;
    let (bytes, bit_len) = std::mem::take(&mut writer).finish();
    let mut out = Vec::with_capacity(n);
    let dec = best_of(reps, || {
        out.clear();
        let mut reader = BitReader::with_bit_len(&bytes, bit_len)?;
        let t = Instant::now();
        code.decode_from(&mut reader, n, &mut out)?;
        let s = t.elapsed().as_secs_f64();
        if out != symbols {
            return Err(crate::error::DriverError::Verify(
                "Huffman round trip differs".into(),
            ));
        }
        Ok(s)
    })?;
    Ok((n as f64 / enc / 1e6, n as f64 / dec / 1e6))
}

/// Seconds of one 1-D k-means (k = 32, linear init) on `n` Gaussian weights.
pub fn kmeans_seconds(n: usize, reps: usize) -> Result<f64> {
    let w = gaussian(n, 11);
    let cfg = deepcomp_quant::KMeansConfig::new(32, deepcomp_quant::Init::Linear);
    best_of(reps, || {
        let t = Instant::now();
        let r = deepcomp_quant::kmeans_1d(&w, &cfg)?;
        let s = t.elapsed().as_secs_f64();
        if r.centroids.is_empty() {
            return Err(crate::error::DriverError::Verify(
                "k-means returned no centroids".into(),
            ));
        }
        Ok(s)
    })
}

/// Runs every measurement on a rayon pool of `threads` threads (the figures are for 2).
pub fn run(quick: bool, threads: usize) -> Result<BenchFigures> {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads.max(1))
        .build()
        .map_err(|e| {
            crate::error::DriverError::Other(format!("bench: cannot start {threads} threads: {e}"))
        })?;
    pool.install(|| measure(quick))
}

fn measure(quick: bool) -> Result<BenchFigures> {
    let reps = if quick { 1 } else { 3 };
    let threads = deepcomp_models::kernels::threads();
    let train_lenet300_ex_s = train_throughput("lenet300", if quick { 20 } else { 100 })?;
    crate::note!("bench: train lenet300 {train_lenet300_ex_s:.0} ex/s");
    let train_lenet5_ex_s = train_throughput("lenet5", if quick { 4 } else { 20 })?;
    crate::note!("bench: train lenet5 {train_lenet5_ex_s:.0} ex/s");
    let conv_steps = if quick { 2 } else { 5 };
    let train_resnet20_ex_s = train_throughput("resnet20", conv_steps)?;
    crate::note!("bench: train resnet20 {train_resnet20_ex_s:.0} ex/s");
    let train_vgg16_half_ex_s = train_throughput("vgg16_half", conv_steps)?;
    crate::note!("bench: train vgg16_half {train_vgg16_half_ex_s:.0} ex/s");
    let finetune_resnet20_ex_s = train_throughput_masked("resnet20", conv_steps, Some(0.8))?;
    crate::note!("bench: masked finetune resnet20 (80 % sparse) {finetune_resnet20_ex_s:.0} ex/s");
    let eval_resnet20_ex_s = eval_throughput("resnet20", if quick { 4 } else { 10 })?;
    crate::note!("bench: eval resnet20 {eval_resnet20_ex_s:.0} ex/s");
    let (huffman_encode_msym_s, huffman_decode_msym_s) = huffman_throughput(10_000_000, reps)?;
    crate::note!("bench: huffman encode {huffman_encode_msym_s:.0} Msym/s, decode {huffman_decode_msym_s:.0} Msym/s");
    let kmeans_235k_s = kmeans_seconds(235_200, reps)?;
    let kmeans_2359k_s = kmeans_seconds(2_359_296, reps)?;
    crate::note!("bench: k-means 235k {kmeans_235k_s:.4} s, 2359k {kmeans_2359k_s:.4} s");
    let mut dense_forward = Vec::new();
    for model in ["lenet300", "lenet5", "resnet20"] {
        for batch in [1, 128] {
            let seconds = forward_latency(model, batch)?;
            crate::note!(
                "bench: dense forward {model} batch {batch}: {:.1} us",
                seconds * 1e6
            );
            dense_forward.push(ForwardLatency {
                model: model.into(),
                batch,
                seconds,
            });
        }
    }
    Ok(BenchFigures {
        train_lenet300_ex_s,
        train_lenet5_ex_s,
        train_resnet20_ex_s,
        train_vgg16_half_ex_s,
        finetune_resnet20_ex_s,
        eval_resnet20_ex_s,
        huffman_encode_msym_s,
        huffman_decode_msym_s,
        kmeans_235k_s,
        kmeans_2359k_s,
        dense_forward,
        threads,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generators_are_seeded_and_shaped() {
        let s = skewed_symbols(10_000, 1);
        assert_eq!(s, skewed_symbols(10_000, 1));
        assert!(s.iter().all(|v| *v < 32));
        let zeros = s.iter().filter(|v| **v == 0).count();
        assert!(
            zeros > 1500 && zeros < 3000,
            "P(0) = 1 - e^(-1/4) ≈ 0.22, got {zeros}"
        );
        let g = gaussian(100_000, 2);
        let mean = g.iter().map(|v| *v as f64).sum::<f64>() / g.len() as f64;
        let var = g.iter().map(|v| (*v as f64 - mean).powi(2)).sum::<f64>() / g.len() as f64;
        assert!(
            mean.abs() < 1e-3 && (var.sqrt() - 0.05).abs() < 1e-3,
            "mean {mean} std {}",
            var.sqrt()
        );
    }

    #[test]
    fn huffman_and_kmeans_figures_are_positive() {
        let (e, d) = huffman_throughput(100_000, 1).unwrap();
        assert!(e > 0.0 && d > 0.0);
        assert!(kmeans_seconds(10_000, 1).unwrap() > 0.0);
    }
}
