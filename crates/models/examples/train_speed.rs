//! Training-step throughput of LeNet-300-100 (784-300-100-10), batch 128, on the CPU.
//!
//! Run with `cargo run -p deepcomp-models --release --example train_speed`. Prints examples per second for
//! full training epochs (forward, cross-entropy, backward, SGD-momentum step, accuracy bookkeeping) with the
//! fused in-place optimizer update and with candle tensor ops + `Var::set`, plus a breakdown of one step.
//!
//! candle 0.11 runs large element-wise ops on a spinning thread pool sized from `CANDLE_NUM_THREADS`
//! (default: all cores); on a small or busy machine `CANDLE_NUM_THREADS=1` is much faster (see README).

use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use deepcomp_models::{
    build, train_epoch, ArchConfig, NoHook, Optimizer, ProgressConfig, Sgd, SgdConfig,
};

const BATCH: usize = 128;
const BATCHES: usize = 100;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dev = Device::Cpu;
    // Fixed synthetic data: inputs uniform in [0, 1), labels cycling 0..9.
    let batches: Vec<(Tensor, Tensor)> = (0..BATCHES)
        .map(|i| -> candle_core::Result<_> {
            let x = Tensor::rand(0f32, 1f32, (BATCH, 1, 28, 28), &dev)?;
            let y: Vec<u32> = (0..BATCH).map(|j| ((i * BATCH + j) % 10) as u32).collect();
            Ok((x, Tensor::from_vec(y, BATCH, &dev)?))
        })
        .collect::<candle_core::Result<_>>()?;
    println!(
        "LeNet-300-100, batch {BATCH}, {BATCHES} batches/epoch, rayon threads: {}",
        rayon::current_num_threads()
    );

    for fused in [true, false] {
        let model = build("lenet300", &ArchConfig::default(), 0, &dev)?;
        let mut opt = Sgd::new(SgdConfig {
            lr: 0.01,
            momentum: 0.9,
            weight_decay: 1e-4,
            fused,
            ..SgdConfig::default()
        })?;
        let progress = ProgressConfig::default();
        // Warm-up epoch, then the best of three.
        let mut best = 0f64;
        for epoch in 0..4 {
            let it = batches.iter().cloned().map(Ok);
            let s = train_epoch(model.as_ref(), &mut opt, it, &mut NoHook, epoch, &progress)?;
            if epoch > 0 {
                best = best.max(s.ex_per_s);
            }
        }
        println!("train_epoch, fused update = {fused:5}: {best:8.0} ex/s");
    }

    // Breakdown of one step (mean over the batches, after a warm-up).
    let model = build("lenet300", &ArchConfig::default(), 0, &dev)?;
    let mut opt = Sgd::new(SgdConfig {
        lr: 0.01,
        momentum: 0.9,
        weight_decay: 1e-4,
        ..SgdConfig::default()
    })?;
    let (mut t_fwd, mut t_bwd, mut t_step, mut t_host) = (0f64, 0f64, 0f64, 0f64);
    for (round, (x, y)) in batches.iter().chain(batches.iter().take(10)).enumerate() {
        let t0 = Instant::now();
        let logits = model.forward_t(x, true)?;
        let loss = candle_nn::loss::cross_entropy(&logits, y)?;
        let t1 = Instant::now();
        let grads = loss.backward()?;
        let t2 = Instant::now();
        opt.step(model.params(), &grads)?;
        let t3 = Instant::now();
        let _host = logits
            .to_dtype(DType::F32)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        let _loss = loss.to_scalar::<f32>()?;
        let t4 = Instant::now();
        if round >= 10 {
            t_fwd += (t1 - t0).as_secs_f64();
            t_bwd += (t2 - t1).as_secs_f64();
            t_step += (t3 - t2).as_secs_f64();
            t_host += (t4 - t3).as_secs_f64();
        }
    }
    let ms = |t: f64| 1e3 * t / BATCHES as f64;
    println!(
        "per step: forward+loss {:.3} ms, backward {:.3} ms, optimizer {:.3} ms, host copies {:.3} ms",
        ms(t_fwd),
        ms(t_bwd),
        ms(t_step),
        ms(t_host)
    );
    Ok(())
}
