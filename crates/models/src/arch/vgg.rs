//! VGG16 with half the channels and BatchNorm, for CIFAR-10 (seed 000's `VGG16_half`).

use candle_core::{Device, Tensor};

use super::{check_input, out_side, widths, ArchConfig};
use crate::error::Result;
use crate::init::{init_params, InitScheme};
use crate::layers::{global_avg_pool, max_pool2d, BatchNorm, Conv2d, Linear};
use crate::model::{Model, ParamStore};
use crate::report::{LayerInfo, LayerOp};

/// Channel plan: a number is a 3×3 conv (padding 1) + BatchNorm + ReLU, `0` a 2×2 max pool.
const PLAN: [usize; 18] = [
    32, 32, 0, 64, 64, 0, 128, 128, 128, 0, 256, 256, 256, 0, 256, 256, 256, 0,
];

#[derive(Debug)]
enum Stage {
    Conv(Conv2d, BatchNorm),
    Pool,
}

/// VGG16-half: 13 convs 3×3 (32,32,M,64,64,M,128×3,M,256×3,M,256×3,M), each followed by BatchNorm2d and
/// ReLU, then the spatial mean (`feat.mean(3).mean(2)`, a no-op reshape at 1×1 for 32×32 input) and the
/// classifier `Linear 256→256, BatchNorm1d, ReLU, Linear 256→256, BatchNorm1d, ReLU, Linear 256→classes`.
/// 3,811,680 prunable weights, as seed 000 reports.
///
/// Parameter names follow the plain PyTorch `nn.Sequential` layout: `features.N.weight` (conv at
/// N = 0, 3, 7, 10, 14, 17, 20, 24, 27, 30, 34, 37, 40; BatchNorm at N+1), `classifier.{0,3,6}` (linear) and
/// `classifier.{1,4}` (BatchNorm1d). The seed's course code wraps layers in `PrunedConv` / `PruneLinear`
/// (names `features.0.conv.weight`, `classifer.0.linear.weight`, sic); rename those keys to load its
/// checkpoints.
///
/// Options: `in_channels` (3), `input_size` (32; at least 32, as five 2×2 pools follow each other),
/// `num_classes` (10), `channels` (the 13 convs' filters, default the plan above) and `hidden` (the two
/// hidden classifier widths, default `[256, 256]`): what structured pruning leaves of them,
/// `conv_bias` (false; the seed's published weight count does not include biases, and the course code
/// exists in both variants), `init` (Glorot normal, as the course's pruned layers).
#[derive(Debug)]
pub struct Vgg16Half {
    features: Vec<Stage>,
    fc1: Linear,
    bn1: BatchNorm,
    fc2: Linear,
    bn2: BatchNorm,
    fc3: Linear,
    store: ParamStore,
    input: [usize; 3],
    num_classes: usize,
    layers: Vec<LayerInfo>,
}

impl Vgg16Half {
    /// Builds the network with weights drawn from `seed`.
    pub fn new(cfg: &ArchConfig, seed: u64, device: &Device) -> Result<Self> {
        cfg.reject("vgg16_half", &["kernels"])?;
        let (input, classes) = cfg.io(3, 32)?;
        let default_channels: Vec<usize> = PLAN.iter().copied().filter(|&c| c != 0).collect();
        let channels = widths(
            "vgg16_half",
            "channels",
            cfg.channels.as_ref(),
            &default_channels,
        )?;
        let hidden = widths("vgg16_half", "hidden", cfg.hidden.as_ref(), &[256, 256])?;
        let (h1, h2) = (hidden[0], hidden[1]);
        let mut channel = channels.iter().copied();
        let conv_bias = cfg.conv_bias.unwrap_or(false);
        let [c0, s0, _] = input;

        let mut store = ParamStore::new();
        let mut features = Vec::new();
        let mut layers = Vec::new();
        let (mut c, mut s) = (c0, s0);
        let mut idx = 0;
        for &plan in &PLAN {
            if plan == 0 {
                let name = format!("features.{idx}");
                let so = out_side(&name, s, 2, 2, 0)?;
                layers.push(LayerInfo {
                    name,
                    op: LayerOp::MaxPool {
                        kernel: 2,
                        stride: 2,
                    },
                    in_shape: vec![c, s, s],
                    out_shape: vec![c, so, so],
                });
                features.push(Stage::Pool);
                s = so;
                idx += 1;
            } else {
                let out = channel.next().unwrap_or(plan);
                let conv_name = format!("features.{idx}");
                let bn_name = format!("features.{}", idx + 1);
                let conv = Conv2d::new(&mut store, &conv_name, c, out, 3, 1, 1, conv_bias, device)?;
                let bn = BatchNorm::new(&mut store, &bn_name, out, device)?;
                layers.push(LayerInfo {
                    name: conv_name,
                    op: LayerOp::Conv {
                        in_channels: c,
                        out_channels: out,
                        kernel: 3,
                        stride: 1,
                        padding: 1,
                        bias: conv_bias,
                    },
                    in_shape: vec![c, s, s],
                    out_shape: vec![out, s, s],
                });
                layers.push(LayerInfo {
                    name: bn_name,
                    op: LayerOp::BatchNorm { features: out },
                    in_shape: vec![out, s, s],
                    out_shape: vec![out, s, s],
                });
                features.push(Stage::Conv(conv, bn));
                c = out;
                idx += 3; // conv, BatchNorm, ReLU
            }
        }
        layers.push(LayerInfo {
            name: "avgpool".into(),
            op: LayerOp::GlobalAvgPool,
            in_shape: vec![c, s, s],
            out_shape: vec![c],
        });
        let fc1 = Linear::new(&mut store, "classifier.0", c, h1, true, device)?;
        let bn1 = BatchNorm::new(&mut store, "classifier.1", h1, device)?;
        let fc2 = Linear::new(&mut store, "classifier.3", h1, h2, true, device)?;
        let bn2 = BatchNorm::new(&mut store, "classifier.4", h2, device)?;
        let fc3 = Linear::new(&mut store, "classifier.6", h2, classes, true, device)?;
        for (name, i, o) in [
            ("classifier.0", c, h1),
            ("classifier.1", h1, h1),
            ("classifier.3", h1, h2),
            ("classifier.4", h2, h2),
            ("classifier.6", h2, classes),
        ] {
            let op = if name.ends_with('1') || name.ends_with('4') {
                LayerOp::BatchNorm { features: o }
            } else {
                LayerOp::Linear {
                    in_features: i,
                    out_features: o,
                    bias: true,
                }
            };
            layers.push(LayerInfo {
                name: name.into(),
                op,
                in_shape: vec![i],
                out_shape: vec![o],
            });
        }
        init_params(&store, cfg.init.unwrap_or(InitScheme::GlorotNormal), seed)?;
        Ok(Self {
            features,
            fc1,
            bn1,
            fc2,
            bn2,
            fc3,
            store,
            input,
            num_classes: classes,
            layers,
        })
    }
}

impl Model for Vgg16Half {
    fn arch(&self) -> &str {
        "vgg16_half"
    }

    fn forward_t(&self, xs: &Tensor, train: bool) -> Result<Tensor> {
        check_input(xs, self.input)?;
        let mut x = xs.clone();
        for stage in &self.features {
            x = match stage {
                Stage::Conv(conv, bn) => conv.forward_bn_act(&x, bn, train, None, true)?,
                Stage::Pool => max_pool2d(&x, 2)?,
            };
        }
        let x = global_avg_pool(&x)?;
        let x = self
            .bn1
            .forward_act(&self.fc1.forward(&x)?, train, None, true)?;
        let x = self
            .bn2
            .forward_act(&self.fc2.forward(&x)?, train, None, true)?;
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
