//! Seeded, reproducible weight initialization.
//!
//! candle's CPU random generator cannot be seeded, so every architecture is built with zero-filled
//! variables and then filled here from a [`ChaCha8Rng`] seeded with the user's seed. Parameters are
//! visited in [`ParamStore`] (PyTorch `state_dict`) order and each one draws its values in row-major
//! order, so the same seed always yields bit-identical weights on every platform.
//!
//! The schemes follow the code each architecture comes from (see [`InitScheme`]); BatchNorm layers always
//! start at gamma 1, beta 0, running mean 0, running variance 1.

use candle_core::Tensor;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::error::{ModelError, Result};
use crate::model::{Param, ParamRole, ParamStore};

/// How conv / fc weights and biases are drawn. `fan_in = in_channels·k·k` (conv) or `in_features` (fc),
/// `fan_out = out_channels·k·k` or `out_features`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InitScheme {
    /// PyTorch's defaults for `nn.Linear` / `nn.Conv2d`: `kaiming_uniform_(a=√5)`, i.e. weights
    /// `U(−1/√fan_in, 1/√fan_in)`, biases `U(−1/√fan_in, 1/√fan_in)`.
    TorchDefault,
    /// Caffe's `xavier` filler (the LeNet prototxts of Han et al.): weights `U(−√(3/fan_in), √(3/fan_in))`,
    /// biases 0.
    CaffeXavier,
    /// `kaiming_normal_` (fan_in, ReLU gain) on weights, `N(0, 2/fan_in)`, as in akamaster's CIFAR ResNet;
    /// biases keep PyTorch's default `U(−1/√fan_in, 1/√fan_in)`.
    KaimingNormal,
    /// Glorot-normal `N(0, 2/(fan_in + fan_out))` on weights, as the `PrunedConv` / `PruneLinear` layers
    /// of the VGG16-half course code; biases keep PyTorch's default.
    GlorotNormal,
}

impl InitScheme {
    /// Lower-case name, as used in configuration files.
    pub fn as_str(self) -> &'static str {
        match self {
            InitScheme::TorchDefault => "torch_default",
            InitScheme::CaffeXavier => "caffe_xavier",
            InitScheme::KaimingNormal => "kaiming_normal",
            InitScheme::GlorotNormal => "glorot_normal",
        }
    }
}

/// Fan-in and fan-out of a conv (O, I, kh, kw) or fc (O, I) weight shape.
pub fn fans(shape: &[usize]) -> Option<(usize, usize)> {
    if shape.len() < 2 {
        return None;
    }
    let receptive: usize = shape[2..].iter().product();
    Some((shape[1] * receptive, shape[0] * receptive))
}

/// Fills `n` values uniformly from `[-bound, bound)`.
fn uniform(rng: &mut ChaCha8Rng, n: usize, bound: f64) -> Vec<f32> {
    (0..n)
        .map(|_| ((2.0 * rng.random::<f64>() - 1.0) * bound) as f32)
        .collect()
}

/// Fills `n` values from `N(0, std²)` (Box–Muller, both outputs of each pair used).
fn normal(rng: &mut ChaCha8Rng, n: usize, std: f64) -> Vec<f32> {
    let mut out = Vec::with_capacity(n + 1);
    while out.len() < n {
        // 1 − u lies in (0, 1], so the logarithm is finite.
        let u1 = 1.0 - rng.random::<f64>();
        let u2 = rng.random::<f64>();
        let r = (-2.0 * u1.ln()).sqrt() * std;
        let theta = std::f64::consts::TAU * u2;
        out.push((r * theta.cos()) as f32);
        out.push((r * theta.sin()) as f32);
    }
    out.truncate(n);
    out
}

/// Fan-in of the layer that owns bias `p` (looked up through the sibling `.weight`).
fn bias_fan_in(store: &ParamStore, p: &Param) -> Result<usize> {
    let weight_name = p
        .name
        .strip_suffix(".bias")
        .map(|prefix| format!("{prefix}.weight"));
    weight_name
        .as_deref()
        .and_then(|w| store.get(w))
        .and_then(|w| fans(w.var.dims()))
        .map(|(fan_in, _)| fan_in)
        .ok_or_else(|| ModelError::Config {
            field: p.name.clone(),
            reason: "bias without a matching conv/fc `.weight` parameter".into(),
        })
}

/// Overwrites every tensor of `store` with freshly drawn values: conv/fc weights and biases by `scheme`,
/// BatchNorm gamma 1 and beta 0, running means 0 and running variances 1. Deterministic in `seed`.
pub fn init_params(store: &ParamStore, scheme: InitScheme, seed: u64) -> Result<()> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    for p in store.iter() {
        let dims = p.var.dims().to_vec();
        let n: usize = dims.iter().product();
        let values: Vec<f32> = match p.role {
            ParamRole::Weight(_) => {
                let (fan_in, fan_out) = fans(&dims).ok_or_else(|| ModelError::Shape {
                    name: p.name.clone(),
                    expected: vec![0, 0],
                    found: dims.clone(),
                })?;
                let fan_in = fan_in as f64;
                let fan_out = fan_out as f64;
                match scheme {
                    InitScheme::TorchDefault => uniform(&mut rng, n, 1.0 / fan_in.sqrt()),
                    InitScheme::CaffeXavier => uniform(&mut rng, n, (3.0 / fan_in).sqrt()),
                    InitScheme::KaimingNormal => normal(&mut rng, n, (2.0 / fan_in).sqrt()),
                    InitScheme::GlorotNormal => {
                        normal(&mut rng, n, (2.0 / (fan_in + fan_out)).sqrt())
                    }
                }
            }
            ParamRole::Bias => match scheme {
                InitScheme::CaffeXavier => vec![0.0; n],
                _ => {
                    let fan_in = bias_fan_in(store, p)? as f64;
                    uniform(&mut rng, n, 1.0 / fan_in.sqrt())
                }
            },
            ParamRole::BnWeight => vec![1.0; n],
            ParamRole::BnBias => vec![0.0; n],
            ParamRole::Buffer => {
                if p.name.ends_with("running_var") {
                    vec![1.0; n]
                } else {
                    vec![0.0; n]
                }
            }
        };
        let t = Tensor::from_vec(values, dims.as_slice(), p.var.device())?;
        p.var.set(&t)?;
    }
    Ok(())
}
