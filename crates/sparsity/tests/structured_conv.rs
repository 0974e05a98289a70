//! Structured filter pruning of convolutions: which filters are kept, the next conv's input
//! channels, the conv → flatten → linear column blocks, per-channel companions (BatchNorm) and
//! whole chains, all against hand-computed small examples.

use candle_core::{Device, Tensor};
use deepcomp_sparsity::structured::{
    channel_columns, flatten_spatial, prune_neurons_to, shrink_chain, ChainLayer,
};
use deepcomp_sparsity::SparsityError;

fn t(v: Vec<f32>, shape: &[usize]) -> Tensor {
    Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
}

fn v1(x: &Tensor) -> Vec<f32> {
    x.flatten_all().unwrap().to_vec1::<f32>().unwrap()
}

#[test]
fn column_blocks_follow_the_channel_major_flatten() {
    // Channels 0 and 2 of a 3-channel 1×3 map: columns 0..3 and 6..9.
    assert_eq!(channel_columns(&[0, 2], 3), vec![0, 1, 2, 6, 7, 8]);
    assert_eq!(channel_columns(&[1], 4), vec![4, 5, 6, 7]);
    assert_eq!(channel_columns(&[0, 1, 3], 1), vec![0, 1, 3]);
    assert!(channel_columns(&[], 5).is_empty());
}

#[test]
fn conv_filters_to_linear_columns_by_hand() {
    // Conv A: 3 filters 1×1×2 with norms 1, 5, 2; keep 2 → filters 1 and 2.
    let w_a = t(vec![1., 0., 3., 4., 0., 2.], &[3, 1, 1, 2]);
    let b_a = t(vec![0.1, 0.2, 0.3], &[3]);
    // Linear B after flattening A's 3 × (1×2) output: 6 columns, channel c owns 2c, 2c+1.
    let w_b = t(
        vec![0., 1., 2., 3., 4., 5., 10., 11., 12., 13., 14., 15.],
        &[2, 6],
    );
    assert_eq!(flatten_spatial(&w_a, &w_b).unwrap(), 2);
    let p = prune_neurons_to(&w_a, Some(&b_a), &w_b, 2, 2).unwrap();
    assert_eq!(p.kept, vec![1, 2]);
    assert_eq!(p.w_a.dims(), &[2, 1, 1, 2]);
    assert_eq!(v1(&p.w_a), vec![3., 4., 0., 2.]);
    assert_eq!(v1(p.b_a.as_ref().unwrap()), vec![0.2, 0.3]);
    assert_eq!(
        p.w_b.to_vec2::<f32>().unwrap(),
        vec![vec![2., 3., 4., 5.], vec![12., 13., 14., 15.]]
    );
}

#[test]
fn conv_filters_to_next_conv_input_channels_by_hand() {
    // Conv A: 3 filters 1×2×2 (norms 2, 1, 4); keep 2 → filters 0 and 2.
    let w_a = t(
        vec![1., 1., 1., 1., 0.5, 0.5, 0.5, 0.5, 2., 2., 2., 2.],
        &[3, 1, 2, 2],
    );
    // Conv B: 2 filters over 3 input channels, 1×1 kernels: w_b[o, c] = 10·o + c.
    let w_b = t(vec![0., 1., 2., 10., 11., 12.], &[2, 3, 1, 1]);
    assert_eq!(flatten_spatial(&w_a, &w_b).unwrap(), 1);
    let p = prune_neurons_to(&w_a, None, &w_b, 2, 1).unwrap();
    assert_eq!(p.kept, vec![0, 2]);
    assert!(p.b_a.is_none());
    assert_eq!(p.w_a.dims(), &[2, 1, 2, 2]);
    assert_eq!(v1(&p.w_a), vec![1., 1., 1., 1., 2., 2., 2., 2.]);
    assert_eq!(p.w_b.dims(), &[2, 2, 1, 1]);
    assert_eq!(v1(&p.w_b), vec![0., 2., 10., 12.]);
    // A conv B cannot take column blocks.
    assert!(matches!(
        prune_neurons_to(&w_a, None, &w_b, 2, 4),
        Err(SparsityError::ShapeMismatch { .. })
    ));
}

fn chain() -> Vec<ChainLayer> {
    // conv A: 3 filters 1×1×1 (norms 1, 3, 2), bias, and a BatchNorm's four per-channel tensors.
    let mut a = ChainLayer::new(
        t(vec![1., -3., 2.], &[3, 1, 1, 1]),
        Some(t(vec![0.1, 0.2, 0.3], &[3])),
    );
    a.per_output = vec![
        t(vec![10., 20., 30.], &[3]),
        t(vec![-1., -2., -3.], &[3]),
        t(vec![0.5, 0.6, 0.7], &[3]),
        t(vec![1.5, 1.6, 1.7], &[3]),
    ];
    // conv B: 2 filters over 3 channels, 1×1. Scored on all three inputs, filter 0 (norm 5) would
    // win; after A's channel 0 is removed its remaining weights are 0 and filter 1 (norm √2) wins.
    let b = ChainLayer::new(t(vec![5., 0., 0., 0., 1., 1.], &[2, 3, 1, 1]), None);
    // linear C after flattening B's 2 × (2×2) output: 8 columns.
    let c = ChainLayer::new(
        t((0..8).map(|i| i as f32).collect(), &[1, 8]),
        Some(t(vec![0.0], &[1])),
    );
    vec![a, b, c]
}

#[test]
fn a_chain_with_batchnorm_and_a_flatten_by_hand() {
    let mut layers = chain();
    let kept = shrink_chain(&mut layers, &[2, 1]).unwrap();
    assert_eq!(kept, vec![vec![1, 2], vec![1]]);
    let [a, b, c] = &layers[..] else {
        panic!("three layers")
    };
    assert_eq!(a.weight.dims(), &[2, 1, 1, 1]);
    assert_eq!(v1(&a.weight), vec![-3., 2.]);
    assert_eq!(v1(a.bias.as_ref().unwrap()), vec![0.2, 0.3]);
    let bn: Vec<Vec<f32>> = a.per_output.iter().map(v1).collect();
    assert_eq!(
        bn,
        vec![
            vec![20., 30.],
            vec![-2., -3.],
            vec![0.6, 0.7],
            vec![1.6, 1.7]
        ]
    );
    assert_eq!(b.weight.dims(), &[1, 2, 1, 1]);
    assert_eq!(v1(&b.weight), vec![1., 1.]);
    assert!(b.bias.is_none());
    // B's channel 1 owns columns 4..8 of C; C's outputs stay.
    assert_eq!(
        c.weight.to_vec2::<f32>().unwrap(),
        vec![vec![4., 5., 6., 7.]]
    );
    assert_eq!(v1(c.bias.as_ref().unwrap()), vec![0.0]);
}

#[test]
fn chain_errors_leave_the_layers_unchanged() {
    let before: Vec<Vec<usize>> = chain().iter().map(|l| l.weight.dims().to_vec()).collect();
    let dims = |ls: &[ChainLayer]| -> Vec<Vec<usize>> {
        ls.iter().map(|l| l.weight.dims().to_vec()).collect()
    };
    // One width per layer but the last.
    let mut layers = chain();
    assert!(matches!(
        shrink_chain(&mut layers, &[2]),
        Err(SparsityError::InvalidParameter { .. })
    ));
    assert_eq!(dims(&layers), before);
    // A per-output tensor of the wrong length.
    let mut layers = chain();
    layers[0].per_output.push(t(vec![1., 2.], &[2]));
    assert!(matches!(
        shrink_chain(&mut layers, &[2, 1]),
        Err(SparsityError::ShapeMismatch { .. })
    ));
    // The linear layer's 7 inputs are not a multiple of B's 2 channels: found after A was shrunk.
    let mut layers = chain();
    layers[2].weight = t((0..7).map(|i| i as f32).collect(), &[1, 7]);
    let e = shrink_chain(&mut layers, &[2, 1]).unwrap_err();
    assert!(matches!(e, SparsityError::ShapeMismatch { .. }), "{e}");
    assert_eq!(layers[0].weight.dims(), &[3, 1, 1, 1]);
    assert_eq!(layers[0].per_output[0].dims(), &[3]);
    // Widths are clamped to 1..=out.
    let mut layers = chain();
    let kept = shrink_chain(&mut layers, &[0, 9]).unwrap();
    assert_eq!(kept, vec![vec![1], vec![0, 1]]);
}
