//! LeNet-5, Caffe variant (the network of Han et al.'s LeNet-5 experiments).

use candle_core::{Device, Tensor};

use super::{check_input, out_side, widths, ArchConfig};
use crate::error::Result;
use crate::init::{init_params, InitScheme};
use crate::layers::{flatten, max_pool2d, Activation, Conv2d, Linear};
use crate::model::{Model, ParamStore};
use crate::report::{LayerInfo, LayerOp};

/// Caffe LeNet-5: `conv1` 20@5×5 → max pool 2 → `conv2` 50@5×5 → max pool 2 → `fc1` 500 → ReLU →
/// `fc2` classes. As in Caffe's `lenet_train_test.prototxt` there is no non-linearity after the convs.
/// On 1×28×28 input the flattened features number 50·4·4 = 800; 430,500 prunable weights.
///
/// Options: `in_channels` (1), `input_size` (28), `num_classes` (10), `channels` (`[20, 50]`, the two
/// convs' filters) and `hidden` (`[500]`, `fc1`'s outputs): what structured pruning leaves of them,
/// `init` (Caffe xavier, as the prototxt: weights `U(±√(3/fan_in))`, biases 0).
#[derive(Debug)]
pub struct LeNet5 {
    conv1: Conv2d,
    conv2: Conv2d,
    fc1: Linear,
    fc2: Linear,
    store: ParamStore,
    input: [usize; 3],
    num_classes: usize,
    layers: Vec<LayerInfo>,
}

impl LeNet5 {
    /// Builds the network with weights drawn from `seed`.
    pub fn new(cfg: &ArchConfig, seed: u64, device: &Device) -> Result<Self> {
        cfg.reject("lenet5", &["kernels", "conv_bias"])?;
        let (input, classes) = cfg.io(1, 28)?;
        let [c, s, _] = input;
        let ch = widths("lenet5", "channels", cfg.channels.as_ref(), &[20, 50])?;
        let (c1, c2) = (ch[0], ch[1]);
        let h = widths("lenet5", "hidden", cfg.hidden.as_ref(), &[500])?[0];
        let s1 = out_side("conv1", s, 5, 1, 0)?;
        let p1 = out_side("pool1", s1, 2, 2, 0)?;
        let s2 = out_side("conv2", p1, 5, 1, 0)?;
        let p2 = out_side("pool2", s2, 2, 2, 0)?;
        let features = c2 * p2 * p2;

        let mut store = ParamStore::new();
        let conv1 = Conv2d::new(&mut store, "conv1", c, c1, 5, 1, 0, true, device)?;
        let conv2 = Conv2d::new(&mut store, "conv2", c1, c2, 5, 1, 0, true, device)?;
        let fc1 = Linear::new(&mut store, "fc1", features, h, true, device)?;
        let fc2 = Linear::new(&mut store, "fc2", h, classes, true, device)?;
        init_params(&store, cfg.init.unwrap_or(InitScheme::CaffeXavier), seed)?;

        let conv = |cin, cout| LayerOp::Conv {
            in_channels: cin,
            out_channels: cout,
            kernel: 5,
            stride: 1,
            padding: 0,
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
        let layers = vec![
            info("conv1", conv(c, c1), vec![c, s, s], vec![c1, s1, s1]),
            info("pool1", pool.clone(), vec![c1, s1, s1], vec![c1, p1, p1]),
            info("conv2", conv(c1, c2), vec![c1, p1, p1], vec![c2, s2, s2]),
            info("pool2", pool, vec![c2, s2, s2], vec![c2, p2, p2]),
            info(
                "fc1",
                LayerOp::Linear {
                    in_features: features,
                    out_features: h,
                    bias: true,
                },
                vec![features],
                vec![h],
            ),
            info(
                "fc2",
                LayerOp::Linear {
                    in_features: h,
                    out_features: classes,
                    bias: true,
                },
                vec![h],
                vec![classes],
            ),
        ];
        Ok(Self {
            conv1,
            conv2,
            fc1,
            fc2,
            store,
            input,
            num_classes: classes,
            layers,
        })
    }
}

impl Model for LeNet5 {
    fn arch(&self) -> &str {
        "lenet5"
    }

    fn forward_t(&self, xs: &Tensor, _train: bool) -> Result<Tensor> {
        check_input(xs, self.input)?;
        let x = max_pool2d(&self.conv1.forward(xs)?, 2)?;
        let x = max_pool2d(&self.conv2.forward(&x)?, 2)?;
        let x = self.fc1.forward_act(&flatten(&x)?, Activation::Relu)?;
        self.fc2.forward(&x)
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
