//! The runtime's logits equal those of (a) a plain dense forward on the decoded tensors and (b) the
//! candle models of `deepcomp-models` in eval mode, on generated pruned and weight-shared files.

mod common;

use common::*;
use deepcomp_models::ArchConfig;
use deepcomp_runtime::{argmax_rows, CompressedModel};

/// Checks runtime vs dense reference vs candle on `batch` random inputs; returns the runtime model.
fn check(arch: &str, cfg: &ArchConfig, sparsity: f64, bits: u8, batch: usize) -> CompressedModel {
    let file = make_dcz(arch, cfg, 11, sparsity, bits);
    let model = CompressedModel::from_file(&file).unwrap();
    let [c, h, w] = model.input_shape();
    let per = c * h * w;
    let input = random_input(batch * per, 5);
    let classes = model.num_classes();

    let ours = model.forward(&input, batch).unwrap();
    assert_eq!(ours.len(), batch * classes);

    // (a) plain dense reference, one sample at a time (also exercises batch 1).
    let tensors = decoded(&file);
    let dense: Vec<f32> = input
        .chunks(per)
        .flat_map(|x| reference(arch, &tensors, x, h))
        .collect();
    let d = rel_diff(&ours, &dense);
    assert!(
        d < 1e-4,
        "{arch}: runtime vs dense reference: relative diff {d}"
    );

    // (b) candle, eval mode.
    let cm = candle_model(arch, cfg, &file);
    let theirs = candle_logits(cm.as_ref(), &input, [batch, c, h, w]);
    let d = rel_diff(&ours, &theirs);
    assert!(d < 1e-4, "{arch}: runtime vs candle: relative diff {d}");
    assert_eq!(
        argmax_rows(&ours, classes),
        argmax_rows(&theirs, classes),
        "{arch}: top-1 differs from candle"
    );

    // The dense-decoded baseline computes the same logits and holds dense f32 bytes.
    let mut dd = model.clone();
    dd.decode_dense();
    assert_eq!(dd.weight_bytes(), dd.dense_bytes());
    let d = rel_diff(&dd.forward(&input, batch).unwrap(), &dense);
    assert!(d < 1e-4, "{arch}: dense-decoded vs dense reference: {d}");
    let d = rel_diff(&dd.forward(&input[..per], 1).unwrap(), &dense[..classes]);
    assert!(d < 1e-4, "{arch}: dense-decoded batch 1: {d}");

    // Batch 1 (the parallel-over-rows / channels path) gives the same logits as the batch.
    let one = model.forward(&input[..per], 1).unwrap();
    let d = rel_diff(&one, &ours[..classes]);
    assert!(d < 1e-5, "{arch}: batch 1 vs batched: {d}");
    model
}

#[test]
fn lenet300_matches_dense_and_candle() {
    let m = check("lenet300", &ArchConfig::default(), 0.92, 5, 16);
    assert_eq!(m.input_shape(), [1, 28, 28]);
    assert_eq!(m.num_classes(), 10);
    // ~8 % kept at 2 bytes each (plus row pointers, codebooks, biases): at least 20× under dense f32.
    assert!(
        m.weight_bytes() * 20 <= m.dense_bytes(),
        "{} vs {}",
        m.weight_bytes(),
        m.dense_bytes()
    );
}

#[test]
fn mlp_hidden_sizes_from_shapes() {
    let cfg = ArchConfig::default().with_hidden(vec![64, 48, 32]);
    let m = check("mlp", &cfg, 0.5, 4, 7);
    assert_eq!(m.layers().len(), 4);
}

#[test]
fn lenet5_matches_dense_and_candle() {
    let m = check("lenet5", &ArchConfig::default(), 0.9, 5, 6);
    assert_eq!(m.input_shape(), [1, 28, 28]);
    let names: Vec<String> = m.layers().into_iter().map(|l| l.name).collect();
    assert_eq!(
        names,
        ["conv1.weight", "conv2.weight", "fc1.weight", "fc2.weight"]
    );
}

#[test]
fn cifar_lenet_matches_candle() {
    check("cifar_lenet", &ArchConfig::default(), 0.8, 4, 3);
}

#[test]
fn resnet20_matches_dense_and_candle() {
    let m = check("resnet20", &ArchConfig::default(), 0.7, 5, 4);
    assert_eq!(m.input_shape(), [3, 32, 32]);
    assert_eq!(m.layers().len(), 20);
}

#[test]
fn resnet20_other_input_side_and_8_bits() {
    let cfg = ArchConfig::default().with_in_channels(1);
    let file = make_dcz("resnet20", &cfg, 3, 0.5, 8);
    let mut model = CompressedModel::from_file(&file).unwrap();
    model.set_input_side(16).unwrap();
    assert_eq!(model.input_shape(), [1, 16, 16]);
    let input = random_input(2 * 256, 9);
    let ours = model.forward(&input, 2).unwrap();
    let t = decoded(&file);
    let dense: Vec<f32> = input
        .chunks(256)
        .flat_map(|x| reference("resnet20", &t, x, 16))
        .collect();
    assert!(rel_diff(&ours, &dense) < 1e-4);
    assert!(model.set_input_side(18).is_err());
}

#[test]
fn dense_stored_weight_is_accepted() {
    // A weight kept raw (not shared) runs through the same kernels.
    let mut file = make_dcz("lenet300", &ArchConfig::default(), 4, 0.9, 3);
    let l = file.layers.remove(1);
    file.dense.push(deepcomp_format::DenseTensor {
        name: l.name.clone(),
        shape: l.shape.clone(),
        data: l.to_dense(),
    });
    let model = CompressedModel::from_file(&file).unwrap();
    let input = random_input(3 * 784, 1);
    let ours = model.forward(&input, 3).unwrap();
    let t = decoded(&file);
    let dense: Vec<f32> = input
        .chunks(784)
        .flat_map(|x| reference("lenet300", &t, x, 28))
        .collect();
    assert!(rel_diff(&ours, &dense) < 1e-4);
}
