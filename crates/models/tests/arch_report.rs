//! Per-layer cost report: MACs and memory, checked against seed 004's hand calculation and against
//! independent formulas.

use candle_core::{Device, Tensor};
use deepcomp_models::{
    build, layer_report, ArchConfig, LayerOp, Model, ModelError, ParamStore, ARCHS,
};

fn seed004() -> Box<dyn Model> {
    let cfg = ArchConfig::new()
        .with_kernels(vec![8, 9])
        .with_num_classes(100);
    build("cifar_lenet", &cfg, 0, &Device::Cpu).unwrap()
}

#[test]
fn seed_004_weights_and_memory_footprint() {
    let r = layer_report(seed004().as_ref()).unwrap();
    // "Sum of weights = 35088"; "Memory footprint = (35088 * 32bits)/8bits = 140,352 Byte", and at
    // 2 / 4 / 8 bits 8,772 / 17,544 / 35,088 bytes.
    assert_eq!(r.weights(), 35_088);
    assert_eq!(r.weight_bytes_at_bits(32), 140_352);
    assert_eq!(r.weight_bytes_at_bits(2), 8_772);
    assert_eq!(r.weight_bytes_at_bits(4), 17_544);
    assert_eq!(r.weight_bytes_at_bits(8), 35_088);
    // Biases (6 + 16 + 120 + 84 + 100) stay at fp32.
    assert_eq!(r.other_params(), 326);
    assert_eq!(r.bytes_fp32(), 4 * (35_088 + 326));
    assert_eq!(r.bytes_at_bits(4), 17_544 + 4 * 326);
}

#[test]
fn seed_004_macs() {
    let r = layer_report(seed004().as_ref()).unwrap();
    let macs = |name: &str| r.layer(name).unwrap().macs;
    // Seed 004 agrees on these: "Conv1: 6*8*8*3*25*25 = 720,000", "Fc1: 64*120 = 7680",
    // "Fc2: 120*84 = 10,080", "Fc3: 84*100 = 8,400".
    assert_eq!(macs("conv1"), 720_000);
    assert_eq!(macs("fc1"), 7_680);
    assert_eq!(macs("fc2"), 10_080);
    assert_eq!(macs("fc3"), 8_400);
    // Shapes: conv1 25×25 → pool 12×12 (floor) → conv2 4×4 → pool 2×2 → 16·2·2 = 64 features.
    assert_eq!(r.layer("pool1").unwrap().out_shape, [6, 12, 12]);
    assert_eq!(r.layer("conv2").unwrap().out_shape, [16, 4, 4]);
    assert_eq!(r.layer("pool2").unwrap().out_shape, [16, 2, 2]);
    // The seed's other three figures are arithmetic slips, corrected here with its own formulas:
    // "Pool: 13*13*2*2*6 = 4,056" uses 13×13 where the pool output is 12×12;
    // "Conv2: 6*9*9*16*2*2 = 31,104" uses the 2×2 of pool2's output instead of conv2's 4×4;
    // the second pool is not counted.
    assert_eq!(macs("pool1"), 12 * 12 * 2 * 2 * 6);
    assert_eq!(macs("conv2"), 6 * 9 * 9 * 16 * 4 * 4);
    assert_eq!(macs("pool2"), 2 * 2 * 2 * 2 * 16);
    assert_eq!(r.macs(), 874_288);
    // Undoing exactly those three slips gives the seed's "Overall, MAC operations= 781,320".
    let seed_total = r.macs() - macs("pool1") + 13 * 13 * 2 * 2 * 6 - macs("conv2")
        + 6 * 9 * 9 * 16 * 2 * 2
        - macs("pool2");
    assert_eq!(seed_total, 781_320);
}

#[test]
fn well_known_mac_counts() {
    let conv_fc = |arch: &str| {
        let m = build(arch, &ArchConfig::new(), 0, &Device::Cpu).unwrap();
        layer_report(m.as_ref()).unwrap().conv_fc_macs()
    };
    assert_eq!(conv_fc("resnet20"), 40_551_040); // the usual "41M FLOPs" of ResNet-20
    assert_eq!(conv_fc("lenet5"), 2_293_000);
    assert_eq!(conv_fc("lenet300"), 266_200);
    assert_eq!(conv_fc("vgg16_half"), 78_875_136);

    let vgg = build("vgg16_half", &ArchConfig::new(), 0, &Device::Cpu).unwrap();
    let r = layer_report(vgg.as_ref()).unwrap();
    // Five 2×2 pools (62,464 compares), the global average over 256×1×1, BatchNorm folded (0).
    assert_eq!(r.macs(), 78_875_136 + 62_464 + 256);
    assert_eq!(r.layer("features.1").unwrap().macs, 0);
    assert_eq!(r.layer("features.43").unwrap().out_shape, [256, 1, 1]);
    assert_eq!(r.layer("classifier.6").unwrap().out_shape, [10]);
    // 13 BatchNorm2d + 2 BatchNorm1d (4 tensors each) + fc biases.
    assert_eq!(
        r.other_params(),
        4 * (2 * 32 + 2 * 64 + 3 * 128 + 6 * 256 + 2 * 256) + 256 + 256 + 10
    );
}

#[test]
fn report_is_consistent_with_the_parameter_store_for_every_arch() {
    for arch in ARCHS {
        let cfg = if arch == "mlp" {
            ArchConfig::new().with_hidden(vec![64, 32])
        } else {
            ArchConfig::new()
        };
        let m = build(arch, &cfg, 0, &Device::Cpu).unwrap();
        let r = layer_report(m.as_ref()).unwrap();
        assert_eq!(r.arch, arch);
        let prunable: usize = m
            .prunable()
            .iter()
            .map(|w| w.shape.iter().product::<usize>())
            .sum();
        let all: usize = m.params().iter().map(|p| p.var.elem_count()).sum();
        assert_eq!(r.weights(), prunable, "{arch}");
        assert_eq!(r.other_params(), all - prunable, "{arch}");
        assert_eq!(
            r.nonzero_weights(),
            prunable,
            "{arch}: freshly initialized weights are non-zero"
        );
        assert_eq!(r.sparse_macs(), r.macs(), "{arch}");
        assert_eq!(
            r.layers.last().unwrap().out_shape,
            [m.num_classes()],
            "{arch}"
        );
        let weight_layers: Vec<String> = r
            .layers
            .iter()
            .filter(|l| l.weights > 0)
            .map(|l| format!("{}.weight", l.name))
            .collect();
        let names: Vec<String> = m.prunable().iter().map(|w| w.name.clone()).collect();
        assert_eq!(weight_layers, names, "{arch}");
        let table = r.to_string();
        assert!(
            table.lines().last().unwrap().starts_with("total"),
            "{table}"
        );
        assert_eq!(table.lines().count(), r.layers.len() + 2);
    }
}

#[test]
fn sparse_macs_count_only_nonzero_weights() {
    let m = seed004();
    let w = m.params().get("conv1.weight").unwrap().var.clone();
    // Zero the first 3 of the 6 filters: half of conv1's 1,152 weights.
    let mask = Tensor::from_iter(
        (0..1152).map(|i| if i < 576 { 0f32 } else { 1.0 }),
        &Device::Cpu,
    )
    .unwrap()
    .reshape(w.dims())
    .unwrap();
    w.set(&(w.as_tensor() * mask).unwrap()).unwrap();
    let r = layer_report(m.as_ref()).unwrap();
    let conv1 = r.layer("conv1").unwrap();
    assert_eq!(conv1.nonzero_weights, 576);
    assert_eq!(conv1.sparse_macs, 576 * 25 * 25);
    assert_eq!(r.sparse_macs(), r.macs() - 576 * 25 * 25);
    assert_eq!(r.nonzero_weights(), 35_088 - 576);
    assert!(matches!(conv1.op, LayerOp::Conv { kernel: 8, .. }));
}

/// A model that describes no layers (the trait's default).
#[derive(Debug)]
struct Opaque(ParamStore);

impl Model for Opaque {
    fn arch(&self) -> &str {
        "opaque"
    }
    fn forward_t(&self, xs: &Tensor, _train: bool) -> deepcomp_models::Result<Tensor> {
        Ok(xs.clone())
    }
    fn params(&self) -> &ParamStore {
        &self.0
    }
    fn input_shape(&self) -> [usize; 3] {
        [1, 1, 1]
    }
    fn num_classes(&self) -> usize {
        1
    }
}

#[test]
fn models_without_layer_descriptions_get_an_error() {
    match layer_report(&Opaque(ParamStore::new())) {
        Err(ModelError::Config { field, reason }) => {
            assert_eq!(field, "layers");
            assert!(reason.contains("opaque"), "{reason}");
        }
        other => panic!("expected a configuration error, got {other:?}"),
    }
}
