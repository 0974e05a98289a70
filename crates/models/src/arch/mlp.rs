//! Multi-layer perceptrons: LeNet-300-100 and seed 002's `SimpleDNN`.

use candle_core::{Device, Tensor};

use super::{check_input, positive, ArchConfig};
use crate::error::Result;
use crate::init::{init_params, InitScheme};
use crate::layers::{flatten, Activation, Linear};
use crate::model::{Model, ParamStore};
use crate::report::{LayerInfo, LayerOp};

/// Fully-connected network `in → hidden… → classes` with ReLU between layers, layers named `fc1`,
/// `fc2`, … (as in PyTorch modules with attributes `fc1..fcN`).
///
/// - `lenet300`: LeNet-300-100 (784-300-100-10) of Han et al.; Caffe xavier initialization (weights
///   `U(±√(3/fan_in))`, biases 0), as in the Caffe prototxts the paper used.
/// - `mlp`: seed 002's 4-layer `SimpleDNN` for MNIST. Its sizes are not printed in the seed; they are
///   recovered from its parameter counts after structured pruning (ten ratios, all reproduced exactly by
///   784-1568-3136-6272-10, 25,889,258 parameters ≈ the reported 98.76 MB). PyTorch default init.
///
/// Input: (N, C, H, W) batches of the configured shape, or already flattened (N, C·H·W).
#[derive(Debug)]
pub struct Mlp {
    arch: &'static str,
    fcs: Vec<Linear>,
    store: ParamStore,
    input: [usize; 3],
    num_classes: usize,
}

impl Mlp {
    /// LeNet-300-100 (`lenet300`). Options: `in_channels` (1), `input_size` (28), `num_classes` (10),
    /// `hidden` (`[300, 100]`; exactly two widths: what structured pruning leaves of the two hidden
    /// layers), `init` (Caffe xavier).
    pub fn lenet300(cfg: &ArchConfig, seed: u64, device: &Device) -> Result<Self> {
        cfg.reject("lenet300", &["kernels", "channels", "conv_bias"])?;
        let (input, classes) = cfg.io(1, 28)?;
        let hidden = cfg.hidden.clone().unwrap_or_else(|| vec![300, 100]);
        if hidden.len() != 2 {
            return Err(crate::error::ModelError::Config {
                field: "hidden".into(),
                reason: format!(
                    "lenet300 has exactly two hidden layers, got {} widths",
                    hidden.len()
                ),
            });
        }
        for (i, &h) in hidden.iter().enumerate() {
            positive(&format!("hidden[{i}]"), h)?;
        }
        let init = cfg.init.unwrap_or(InitScheme::CaffeXavier);
        Self::build("lenet300", input, &hidden, classes, init, seed, device)
    }

    /// Seed 002's SimpleDNN (`mlp`). Options: `in_channels` (1), `input_size` (28), `num_classes` (10),
    /// `hidden` (`[1568, 3136, 6272]`), `init` (PyTorch default).
    pub fn simple_dnn(cfg: &ArchConfig, seed: u64, device: &Device) -> Result<Self> {
        cfg.reject("mlp", &["kernels", "channels", "conv_bias"])?;
        let (input, classes) = cfg.io(1, 28)?;
        let hidden = cfg.hidden.clone().unwrap_or_else(|| vec![1568, 3136, 6272]);
        for (i, &h) in hidden.iter().enumerate() {
            positive(&format!("hidden[{i}]"), h)?;
        }
        let init = cfg.init.unwrap_or(InitScheme::TorchDefault);
        Self::build("mlp", input, &hidden, classes, init, seed, device)
    }

    fn build(
        arch: &'static str,
        input: [usize; 3],
        hidden: &[usize],
        classes: usize,
        init: InitScheme,
        seed: u64,
        device: &Device,
    ) -> Result<Self> {
        let mut store = ParamStore::new();
        let mut widths = vec![input.iter().product::<usize>()];
        widths.extend_from_slice(hidden);
        widths.push(classes);
        let fcs = widths
            .windows(2)
            .enumerate()
            .map(|(i, w)| {
                Linear::new(
                    &mut store,
                    &format!("fc{}", i + 1),
                    w[0],
                    w[1],
                    true,
                    device,
                )
            })
            .collect::<Result<Vec<_>>>()?;
        init_params(&store, init, seed)?;
        Ok(Self {
            arch,
            fcs,
            store,
            input,
            num_classes: classes,
        })
    }
}

impl Model for Mlp {
    fn arch(&self) -> &str {
        self.arch
    }

    fn forward_t(&self, xs: &Tensor, _train: bool) -> Result<Tensor> {
        let features: usize = self.input.iter().product();
        let dims = xs.dims();
        let mut x = if dims.len() == 2 && dims[0] > 0 && dims[1] == features {
            xs.clone()
        } else {
            check_input(xs, self.input)?;
            flatten(xs)?
        };
        let last = self.fcs.len() - 1;
        for (i, fc) in self.fcs.iter().enumerate() {
            let act = if i < last {
                Activation::Relu
            } else {
                Activation::Identity
            };
            x = fc.forward_act(&x, act)?;
        }
        Ok(x)
    }

    fn params(&self) -> &ParamStore {
        &self.store
    }

    fn input_shape(&self) -> [usize; 3] {
        self.input
    }

    fn num_classes(&self) -> usize {
        self.num_classes
    }

    fn layers(&self) -> Vec<LayerInfo> {
        self.fcs
            .iter()
            .enumerate()
            .map(|(i, fc)| LayerInfo {
                name: format!("fc{}", i + 1),
                op: LayerOp::Linear {
                    in_features: fc.in_features(),
                    out_features: fc.out_features(),
                    bias: fc.has_bias(),
                },
                in_shape: vec![fc.in_features()],
                out_shape: vec![fc.out_features()],
            })
            .collect()
    }
}
