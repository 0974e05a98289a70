//! Speed of the conv2d kernel on LeNet-5's two layers and a VGG-style 3×3 layer, forward and
//! forward + backward, in GFLOP/s: `cargo run --release -p deepcomp-models --example conv_speed
//! [name filter]`.

use std::time::Instant;

use candle_core::{DType, Device, Tensor, Var};
use deepcomp_models::kernels::conv2d;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> anyhow::Result<()> {
    let dev = Device::Cpu;
    // (name, n, c, h, o, k, pad, input needs a gradient)
    let cases = [
        ("lenet5.conv1", 128, 1, 28, 20, 5, 0, false),
        ("lenet5.conv2", 128, 20, 12, 50, 5, 0, true),
        ("resnet 16ch 32x32", 128, 16, 32, 16, 3, 1, true),
        ("resnet 32ch 16x16", 128, 32, 16, 32, 3, 1, true),
        ("resnet 64ch 8x8", 128, 64, 8, 64, 3, 1, true),
        ("vgg 64ch 16x16", 128, 64, 16, 64, 3, 1, true),
        ("vgg 128ch 8x8", 128, 128, 8, 128, 3, 1, true),
        ("vgg 256ch 4x4", 128, 256, 4, 256, 3, 1, true),
        ("vgg 256ch 2x2", 128, 256, 2, 256, 3, 1, true),
    ];
    let only = std::env::args().nth(1);
    for (name, n, c, h, o, k, pad, input_grad) in cases {
        if only.as_deref().is_some_and(|f| !name.contains(f)) {
            continue;
        }
        let x = Tensor::randn(0f32, 1.0, (n, c, h, h), &dev)?;
        let x = if input_grad {
            Var::from_tensor(&x)?.as_tensor().clone()
        } else {
            x
        };
        let w = Var::from_tensor(&Tensor::randn(0f32, 0.1, (o, c, k, k), &dev)?)?;
        let b = Var::zeros(o, DType::F32, &dev)?;
        let ho = h + 2 * pad - k + 1;
        let macs = (n * o * ho * ho * c * k * k) as f64;
        let reps = 20;
        let mut fwd = f64::INFINITY;
        let mut both = f64::INFINITY;
        for _ in 0..reps {
            let t = Instant::now();
            let y = conv2d(&x, w.as_tensor(), Some(b.as_tensor()), 1, pad)?;
            fwd = fwd.min(t.elapsed().as_secs_f64());
            let loss = y.sum_all()?;
            let t = Instant::now();
            let _ = loss.backward()?;
            both = both.min(t.elapsed().as_secs_f64());
        }
        let bwd_macs = if input_grad { 2.0 * macs } else { macs };
        println!(
            "{name}: fwd {:.2} ms ({:.1} GFLOP/s), bwd {:.2} ms ({:.1} GFLOP/s)",
            fwd * 1e3,
            2.0 * macs / fwd / 1e9,
            both * 1e3,
            2.0 * bwd_macs / both / 1e9
        );
    }
    Ok(())
}
