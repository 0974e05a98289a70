//! ResNet-20 for CIFAR-10 (He et al. 2016, §4.2), as in akamaster/pytorch_resnet_cifar10.

use candle_core::{Device, IndexOp, Tensor};

use super::{check_input, ArchConfig};
use crate::error::{ModelError, Result};
use crate::init::{init_params, InitScheme};
use crate::layers::{global_avg_pool, BatchNorm, Conv2d, Linear};
use crate::model::{Model, ParamStore};
use crate::report::{LayerInfo, LayerOp};

/// A basic residual block: conv3×3(stride) → BN → ReLU → conv3×3 → BN, plus the shortcut, then ReLU.
#[derive(Debug)]
struct BasicBlock {
    conv1: Conv2d,
    bn1: BatchNorm,
    conv2: Conv2d,
    bn2: BatchNorm,
    /// Option-A shortcut: `Some(pad)` subsamples by 2 and zero-pads `pad` channels on each side.
    shortcut_pad: Option<usize>,
}

impl BasicBlock {
    fn new(
        store: &mut ParamStore,
        name: &str,
        in_planes: usize,
        planes: usize,
        stride: usize,
        device: &Device,
    ) -> Result<Self> {
        let conv1 = Conv2d::new(
            store,
            &format!("{name}.conv1"),
            in_planes,
            planes,
            3,
            stride,
            1,
            false,
            device,
        )?;
        let bn1 = BatchNorm::new(store, &format!("{name}.bn1"), planes, device)?;
        let conv2 = Conv2d::new(
            store,
            &format!("{name}.conv2"),
            planes,
            planes,
            3,
            1,
            1,
            false,
            device,
        )?;
        let bn2 = BatchNorm::new(store, &format!("{name}.bn2"), planes, device)?;
        // akamaster: `F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, planes // 4, planes // 4))`.
        let shortcut_pad = (stride != 1 || in_planes != planes).then_some(planes / 4);
        Ok(Self {
            conv1,
            bn1,
            conv2,
            bn2,
            shortcut_pad,
        })
    }

    fn forward_t(&self, xs: &Tensor, train: bool) -> Result<Tensor> {
        let out = self
            .conv1
            .forward_bn_act(xs, &self.bn1, train, None, true)?;
        let short = match self.shortcut_pad {
            None => xs.clone(),
            Some(pad) => {
                // x[:, :, ::2, ::2] for even H, W: view each axis as (H/2, 2) and keep index 0.
                let (n, c, h, w) = xs.dims4()?;
                xs.reshape((n, c, h / 2, 2, w / 2, 2))?
                    .i((.., .., .., 0, .., 0))?
                    .pad_with_zeros(1, pad, pad)?
            }
        };
        // bn2, the shortcut and the ReLU in one op (in eval mode, with conv2 as well).
        self.conv2
            .forward_bn_act(&out, &self.bn2, train, Some(&short), true)
    }
}

/// CIFAR ResNet-20: `conv1` 16@3×3 → `bn1` → ReLU → `layer1` (3 blocks, 16 ch) → `layer2` (3 blocks,
/// 32 ch, stride 2) → `layer3` (3 blocks, 64 ch, stride 2) → global average pool → `linear`. Convs have
/// no bias; downsampling shortcuts are parameter-free (option A: stride-2 subsample + zero channel pad).
/// 268,336 prunable weights; names `conv1`, `bn1`, `layer{1,2,3}.{0,1,2}.{conv1,bn1,conv2,bn2}`,
/// `linear`, exactly as akamaster's `resnet20()`.
///
/// Options: `in_channels` (3), `input_size` (32; a multiple of 4), `num_classes` (10), `init` (kaiming
/// normal on conv and linear weights, PyTorch default on the linear bias, as akamaster's
/// `_weights_init`).
#[derive(Debug)]
pub struct ResNet20 {
    conv1: Conv2d,
    bn1: BatchNorm,
    blocks: Vec<BasicBlock>,
    linear: Linear,
    store: ParamStore,
    input: [usize; 3],
    num_classes: usize,
    layers: Vec<LayerInfo>,
}

impl ResNet20 {
    /// Blocks per stage (ResNet-20: n = 3, 6n + 2 = 20 layers).
    pub const BLOCKS_PER_STAGE: usize = 3;

    /// Builds the network with weights drawn from `seed`.
    pub fn new(cfg: &ArchConfig, seed: u64, device: &Device) -> Result<Self> {
        cfg.reject("resnet20", &["kernels", "hidden", "channels", "conv_bias"])?;
        let (input, classes) = cfg.io(3, 32)?;
        let [c0, s0, _] = input;
        if s0 % 4 != 0 {
            return Err(ModelError::Config {
                field: "input_size".into(),
                reason: format!("resnet20 needs a multiple of 4 (two stride-2 stages), got {s0}"),
            });
        }
        let mut store = ParamStore::new();
        let mut layers = Vec::new();
        let conv_op = |cin, cout, stride| LayerOp::Conv {
            in_channels: cin,
            out_channels: cout,
            kernel: 3,
            stride,
            padding: 1,
            bias: false,
        };
        let mut push = |name: String, op, in_shape: Vec<usize>, out_shape: Vec<usize>| {
            layers.push(LayerInfo {
                name,
                op,
                in_shape,
                out_shape,
            })
        };

        let conv1 = Conv2d::new(&mut store, "conv1", c0, 16, 3, 1, 1, false, device)?;
        let bn1 = BatchNorm::new(&mut store, "bn1", 16, device)?;
        push(
            "conv1".into(),
            conv_op(c0, 16, 1),
            vec![c0, s0, s0],
            vec![16, s0, s0],
        );
        push(
            "bn1".into(),
            LayerOp::BatchNorm { features: 16 },
            vec![16, s0, s0],
            vec![16, s0, s0],
        );

        let mut blocks = Vec::new();
        let (mut c, mut s) = (16, s0);
        for (stage, (planes, first_stride)) in [(16, 1), (32, 2), (64, 2)].into_iter().enumerate() {
            for b in 0..Self::BLOCKS_PER_STAGE {
                let stride = if b == 0 { first_stride } else { 1 };
                let name = format!("layer{}.{b}", stage + 1);
                blocks.push(BasicBlock::new(
                    &mut store, &name, c, planes, stride, device,
                )?);
                let so = s / stride;
                push(
                    format!("{name}.conv1"),
                    conv_op(c, planes, stride),
                    vec![c, s, s],
                    vec![planes, so, so],
                );
                push(
                    format!("{name}.bn1"),
                    LayerOp::BatchNorm { features: planes },
                    vec![planes, so, so],
                    vec![planes, so, so],
                );
                push(
                    format!("{name}.conv2"),
                    conv_op(planes, planes, 1),
                    vec![planes, so, so],
                    vec![planes, so, so],
                );
                push(
                    format!("{name}.bn2"),
                    LayerOp::BatchNorm { features: planes },
                    vec![planes, so, so],
                    vec![planes, so, so],
                );
                c = planes;
                s = so;
            }
        }
        push(
            "avgpool".into(),
            LayerOp::GlobalAvgPool,
            vec![c, s, s],
            vec![c],
        );
        let linear = Linear::new(&mut store, "linear", c, classes, true, device)?;
        push(
            "linear".into(),
            LayerOp::Linear {
                in_features: c,
                out_features: classes,
                bias: true,
            },
            vec![c],
            vec![classes],
        );
        init_params(&store, cfg.init.unwrap_or(InitScheme::KaimingNormal), seed)?;
        Ok(Self {
            conv1,
            bn1,
            blocks,
            linear,
            store,
            input,
            num_classes: classes,
            layers,
        })
    }
}

impl Model for ResNet20 {
    fn arch(&self) -> &str {
        "resnet20"
    }

    fn forward_t(&self, xs: &Tensor, train: bool) -> Result<Tensor> {
        check_input(xs, self.input)?;
        let mut x = self
            .conv1
            .forward_bn_act(xs, &self.bn1, train, None, true)?;
        for block in &self.blocks {
            x = block.forward_t(&x, train)?;
        }
        self.linear.forward(&global_avg_pool(&x)?)
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
