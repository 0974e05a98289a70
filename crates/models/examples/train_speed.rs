//! Training throughput of one architecture on generated data: `cargo run --release -p deepcomp-models
//! --example train_speed -- lenet5 [steps] [batch] [eval]`. Prints examples per second (best of three
//! runs); with `eval`, of evaluation (eval-mode forward, loss and accuracy tally) instead of training.

use std::time::Instant;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use candle_core::{Device, Tensor};
use deepcomp_models::{
    build, evaluate, train_epoch, ArchConfig, NoHook, OptimizerConfig, ProgressConfig, SgdConfig,
};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let arch = args.next().unwrap_or_else(|| "lenet300".into());
    let steps: usize = args.next().map(|s| s.parse()).transpose()?.unwrap_or(50);
    let batch: usize = args.next().map(|s| s.parse()).transpose()?.unwrap_or(128);
    let eval = args.next().is_some_and(|s| s == "eval");
    let device = Device::Cpu;
    let model = build(&arch, &ArchConfig::default(), 1, &device)?;
    let [c, h, w] = model.input_shape();
    let mut rng = ChaCha8Rng::seed_from_u64(7);
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
    let mut opt = OptimizerConfig::Sgd(SgdConfig {
        lr: 0.01,
        momentum: 0.9,
        ..Default::default()
    })
    .build()?;
    let progress = ProgressConfig::default();
    let one = |n: usize| {
        batches
            .iter()
            .cycle()
            .take(n)
            .map(|(x, y)| Ok((x.clone(), y.clone())))
    };
    if eval {
        evaluate(model.as_ref(), one(2))?;
        let mut best = 0f64;
        for _ in 0..3 {
            let t = Instant::now();
            evaluate(model.as_ref(), one(steps))?;
            best = best.max((steps * batch) as f64 / t.elapsed().as_secs_f64());
        }
        println!("{arch} eval: {best:.0} ex/s (batch {batch}, {steps} batches)");
        return Ok(());
    }
    train_epoch(
        model.as_ref(),
        opt.as_mut(),
        one(2),
        &mut NoHook,
        0,
        &progress,
    )?;
    let mut best = 0f64;
    for rep in 0..3 {
        let t = Instant::now();
        train_epoch(
            model.as_ref(),
            opt.as_mut(),
            one(steps),
            &mut NoHook,
            rep + 1,
            &progress,
        )?;
        best = best.max((steps * batch) as f64 / t.elapsed().as_secs_f64());
    }
    println!("{arch}: {best:.0} ex/s (batch {batch}, {steps} steps)");
    Ok(())
}
