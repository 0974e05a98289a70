//! The LeNet of the PyTorch CIFAR-10 tutorial (`Net`), as used by seed 004.

use candle_core::{Device, Tensor};

use super::{check_input, out_side, positive, widths, ArchConfig};
use crate::error::{ModelError, Result};
use crate::init::{init_params, InitScheme};
use crate::layers::{flatten, max_pool2d, Activation, Conv2d, Linear};
use crate::model::{Model, ParamStore};
use crate::report::{LayerInfo, LayerOp};

/// PyTorch tutorial `Net`: `conv1` 6@k1 → ReLU → max pool 2 → `conv2` 16@k2 → ReLU → max pool 2 →
/// `fc1` 120 → ReLU → `fc2` 84 → ReLU → `fc3` classes. With the tutorial's `[5, 5]` kernels on 3×32×32
/// the flattened features number 16·5·5 = 400; seed 004's `[8, 9]` kernels give 16·2·2 = 64 and, with
/// 100 classes, 35,088 weights.
///
/// Options: `in_channels` (3), `input_size` (32), `num_classes` (10), `kernels` (`[5, 5]`), `channels`
/// (`[6, 16]`, the two convs' filters), `hidden` (`[120, 84]`), `init` (PyTorch default).
#[derive(Debug)]
pub struct CifarLeNet {
    conv1: Conv2d,
    conv2: Conv2d,
    fc1: Linear,
    fc2: Linear,
    fc3: Linear,
    store: ParamStore,
    input: [usize; 3],
    num_classes: usize,
    layers: Vec<LayerInfo>,
}

impl CifarLeNet {
    /// Builds the network with weights drawn from `seed`.
    pub fn new(cfg: &ArchConfig, seed: u64, device: &Device) -> Result<Self> {
        cfg.reject("cifar_lenet", &["conv_bias"])?;
        let (input, classes) = cfg.io(3, 32)?;
        let [c, s, _] = input;
        let kernels = cfg.kernels.clone().unwrap_or_else(|| vec![5, 5]);
        let [k1, k2] = kernels[..] else {
            return Err(ModelError::Config {
                field: "kernels".into(),
                reason: format!(
                    "cifar_lenet needs exactly two kernel sizes, got {}",
                    kernels.len()
                ),
            });
        };
        positive("kernels[0]", k1)?;
        positive("kernels[1]", k2)?;
        let hidden = cfg.hidden.clone().unwrap_or_else(|| vec![120, 84]);
        let [h1, h2] = hidden[..] else {
            return Err(ModelError::Config {
                field: "hidden".into(),
                reason: format!(
                    "cifar_lenet needs exactly two hidden widths, got {}",
                    hidden.len()
                ),
            });
        };
        positive("hidden[0]", h1)?;
        positive("hidden[1]", h2)?;
        let ch = widths("cifar_lenet", "channels", cfg.channels.as_ref(), &[6, 16])?;
        let (c1, c2) = (ch[0], ch[1]);
        let s1 = out_side("conv1", s, k1, 1, 0)?;
        let p1 = out_side("pool1", s1, 2, 2, 0)?;
        let s2 = out_side("conv2", p1, k2, 1, 0)?;
        let p2 = out_side("pool2", s2, 2, 2, 0)?;
        let features = c2 * p2 * p2;

        let mut store = ParamStore::new();
        let conv1 = Conv2d::new(&mut store, "conv1", c, c1, k1, 1, 0, true, device)?;
        let conv2 = Conv2d::new(&mut store, "conv2", c1, c2, k2, 1, 0, true, device)?;
        let fc1 = Linear::new(&mut store, "fc1", features, h1, true, device)?;
        let fc2 = Linear::new(&mut store, "fc2", h1, h2, true, device)?;
        let fc3 = Linear::new(&mut store, "fc3", h2, classes, true, device)?;
        init_params(&store, cfg.init.unwrap_or(InitScheme::TorchDefault), seed)?;

        let conv = |cin, cout, k| LayerOp::Conv {
            in_channels: cin,
            out_channels: cout,
            kernel: k,
            stride: 1,
            padding: 0,
            bias: true,
        };
        let fc = |i, o| LayerOp::Linear {
            in_features: i,
            out_features: o,
            bias: true,
        };
        let pool = LayerOp::MaxPool {
            kernel: 2,
            stride: 2,
        };
        let info = |name: &str, op, in_shape: Vec<usize>, out_shape: Vec<usize>| LayerInfo {
            name: name.to_string(),
            op,
            in_shape,
            out_shape,
        };
        // PyTorch's `Net` reuses one `pool` module twice; the report names the two applications.
        let layers = vec![
            info("conv1", conv(c, c1, k1), vec![c, s, s], vec![c1, s1, s1]),
            info("pool1", pool.clone(), vec![c1, s1, s1], vec![c1, p1, p1]),
            info(
                "conv2",
                conv(c1, c2, k2),
                vec![c1, p1, p1],
                vec![c2, s2, s2],
            ),
            info("pool2", pool, vec![c2, s2, s2], vec![c2, p2, p2]),
            info("fc1", fc(features, h1), vec![features], vec![h1]),
            info("fc2", fc(h1, h2), vec![h1], vec![h2]),
            info("fc3", fc(h2, classes), vec![h2], vec![classes]),
        ];
        Ok(Self {
            conv1,
            conv2,
            fc1,
            fc2,
            fc3,
            store,
            input,
            num_classes: classes,
            layers,
        })
    }
}

impl Model for CifarLeNet {
    fn arch(&self) -> &str {
        "cifar_lenet"
    }

    fn forward_t(&self, xs: &Tensor, _train: bool) -> Result<Tensor> {
        check_input(xs, self.input)?;
        let x = max_pool2d(&self.conv1.forward(xs)?.relu()?, 2)?;
        let x = max_pool2d(&self.conv2.forward(&x)?.relu()?, 2)?;
        let x = self.fc1.forward_act(&flatten(&x)?, Activation::Relu)?;
        let x = self.fc2.forward_act(&x, Activation::Relu)?;
        self.fc3.forward(&x)
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
        self.layers.clone()
    }
}
