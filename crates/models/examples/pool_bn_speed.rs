//! Forward + backward time of our max-pool and train-mode batch-norm kernels against the equivalent
//! candle composites: `cargo run --release -p deepcomp-models --example pool_bn_speed`.
//!
//! Prints the best of 20 runs (after 3 warm-up runs) for BN on (128, 64, 16, 16) and a 2×2 max pool
//! on (128, 32, 32, 32), f32. The loss is `Σ y·w` with a fixed random `w`, the same for both sides.

use std::time::Instant;

use candle_core::{DType, Device, Tensor, Var};
use deepcomp_models::kernels::bn::batch_norm_train;
use deepcomp_models::kernels::pool::{max_pool2d, max_pool2d_reduce};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Shortest wall time of `f` in milliseconds (the machine is shared: the minimum is the least noisy).
fn time(mut f: impl FnMut() -> anyhow::Result<()>) -> anyhow::Result<f64> {
    for _ in 0..3 {
        f()?;
    }
    let mut t = Vec::new();
    for _ in 0..20 {
        let s = Instant::now();
        f()?;
        t.push(s.elapsed().as_secs_f64() * 1e3);
    }
    t.sort_by(f64::total_cmp);
    Ok(t[0])
}

/// Train-mode batch norm of an (N, C, H, W) input composed of candle ops (the layer's non-CPU path).
fn composite_bn(xs: &Tensor, gamma: &Tensor, beta: &Tensor) -> anyhow::Result<Tensor> {
    let c = xs.dim(1)?;
    let count = xs.elem_count() / c;
    let inv_n = 1.0 / count as f64;
    let mean = (xs.sum_keepdim((0, 2, 3))? * inv_n)?;
    let centered = xs.broadcast_sub(&mean)?;
    let var = (centered.sqr()?.sum_keepdim((0, 2, 3))? * inv_n)?;
    let scale = gamma
        .reshape((1, c, 1, 1))?
        .broadcast_div(&(var + 1e-5)?.sqrt()?)?;
    Ok(centered
        .broadcast_mul(&scale)?
        .broadcast_add(&beta.reshape((1, c, 1, 1))?)?)
}

fn main() -> anyhow::Result<()> {
    let dev = Device::Cpu;
    println!("threads: {}", deepcomp_models::kernels::threads());

    let x = Var::from_tensor(&Tensor::randn(0f32, 1.0, (128, 64, 16, 16), &dev)?)?;
    let gamma = Var::from_tensor(&Tensor::ones(64, DType::F32, &dev)?)?;
    let beta = Var::from_tensor(&Tensor::zeros(64, DType::F32, &dev)?)?;
    let w = Tensor::randn(0f32, 1.0, (128, 64, 16, 16), &dev)?;
    let ours_f = time(|| {
        batch_norm_train(x.as_tensor(), gamma.as_tensor(), beta.as_tensor(), 1e-5)?;
        Ok(())
    })?;
    let ours = time(|| {
        let (y, _) = batch_norm_train(x.as_tensor(), gamma.as_tensor(), beta.as_tensor(), 1e-5)?;
        (y * &w)?.sum_all()?.backward()?;
        Ok(())
    })?;
    let comp_f = time(|| {
        composite_bn(x.as_tensor(), gamma.as_tensor(), beta.as_tensor())?;
        Ok(())
    })?;
    let comp = time(|| {
        let y = composite_bn(x.as_tensor(), gamma.as_tensor(), beta.as_tensor())?;
        (y * &w)?.sum_all()?.backward()?;
        Ok(())
    })?;
    let loss_only = time(|| {
        (x.as_tensor() * &w)?.sum_all()?.backward()?;
        Ok(())
    })?;
    println!("batch norm (128, 64, 16, 16) f32, best of 20, ms:");
    println!("  ours      forward {ours_f:7.2}   forward+backward {ours:7.2}");
    println!("  composite forward {comp_f:7.2}   forward+backward {comp:7.2}");
    println!("  (the Σ y·w loss and its backward alone: {loss_only:.2})");

    let x = Var::from_tensor(&Tensor::randn(0f32, 1.0, (128, 32, 32, 32), &dev)?)?;
    let w = Tensor::randn(0f32, 1.0, (128, 32, 16, 16), &dev)?;
    let mut rows = Vec::new();
    type Pool = fn(&Tensor) -> anyhow::Result<Tensor>;
    let pools: [(&str, Pool); 3] = [
        ("ours", |x| Ok(max_pool2d(x, 2, 2, 0)?)),
        ("reduce", |x| Ok(max_pool2d_reduce(x, 2)?)),
        ("candle", |x| Ok(x.max_pool2d(2)?)),
    ];
    for (name, pool) in pools {
        let f = time(|| {
            pool(x.as_tensor())?;
            Ok(())
        })?;
        let fb = time(|| {
            (pool(x.as_tensor())? * &w)?.sum_all()?.backward()?;
            Ok(())
        })?;
        rows.push((name, f, fb));
    }
    println!("max pool 2x2 on (128, 32, 32, 32) f32, best of 20, ms:");
    for (name, f, fb) in rows {
        println!("  {name:9} forward {f:7.2}   forward+backward {fb:7.2}");
    }
    Ok(())
}
