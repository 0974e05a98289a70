//! Measures how long loading and normalizing a data set takes, and how fast batches are
//! assembled. Run with
//! `cargo run --release -p deepcomp-datasets --example load_speed [-- <dataset> [<dir>]]`
//! (default: Fashion-MNIST, found by the usual search).

use std::time::Instant;

use candle_core::Device;
use deepcomp_datasets::{load, BatchConfig, DatasetId, LoadOptions};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let id: DatasetId = args.next().as_deref().unwrap_or("fashion-mnist").parse()?;
    let opts = LoadOptions {
        explicit: args.next().map(Into::into),
        ..LoadOptions::default()
    };
    let runs = 5;
    let mut best_load = f64::INFINITY;
    let mut best_total = f64::INFINITY;
    let mut ds = None;
    for _ in 0..runs {
        let t0 = Instant::now();
        let d = load(id, &opts)?;
        let t1 = Instant::now();
        let train = d.train.normalized(&d.mean, &d.std)?;
        let test = d.test.normalized(&d.mean, &d.std)?;
        let t2 = Instant::now();
        assert_eq!(
            train.len() + test.len(),
            d.train.images.len() + d.test.images.len()
        );
        best_load = best_load.min((t1 - t0).as_secs_f64());
        best_total = best_total.min((t2 - t0).as_secs_f64());
        ds = Some(d);
    }
    let Some(ds) = ds else { return Ok(()) };
    println!(
        "{id} from {}: {} train + {} test images",
        ds.source.display(),
        ds.train.n,
        ds.test.n
    );
    println!(
        "load (read + decompress + validate), best of {runs}: {:.3} s",
        best_load
    );
    println!(
        "load + normalize both splits to f32,  best of {runs}: {:.3} s",
        best_total
    );

    let device = Device::Cpu;
    for (label, cfg) in [
        (
            "batch 128, shuffled",
            BatchConfig {
                batch_size: 128,
                ..BatchConfig::default()
            },
        ),
        (
            "batch 128, shuffled, crop+flip",
            BatchConfig {
                batch_size: 128,
                augment: Some(deepcomp_datasets::Augment::CIFAR),
                ..BatchConfig::default()
            },
        ),
        (
            "batch 128, shuffled, pad to 32, crop+flip",
            BatchConfig {
                batch_size: 128,
                augment: Some(deepcomp_datasets::Augment::CIFAR),
                pad_to: Some(32),
                ..BatchConfig::default()
            },
        ),
    ] {
        if cfg.pad_to.is_some_and(|p| p < ds.train.h) {
            continue;
        }
        let mut best = f64::INFINITY;
        for epoch in 0..3 {
            let t = Instant::now();
            let mut seen = 0usize;
            for b in ds.train.batches(&cfg, &ds.mean, &ds.std, epoch, &device)? {
                let (x, _) = b?;
                seen += x.dims()[0];
            }
            assert_eq!(seen, ds.train.n);
            best = best.min(t.elapsed().as_secs_f64());
        }
        println!(
            "one training epoch of batches ({label}): {:.3} s = {:.0} examples/s",
            best,
            ds.train.n as f64 / best
        );
    }
    Ok(())
}
