//! Structured neuron pruning (a tiny MLP forward) and the regularizer operators.

use candle_core::{Device, Tensor, Var};
use deepcomp_sparsity::regularize::{
    l1_penalty, l1_subgradient, project_l0, smallest_k, soft_threshold, trimmed_l1_penalty,
    trimmed_soft_threshold,
};
use deepcomp_sparsity::structured::{kept_by_score, prune_neurons, row_norms};
use deepcomp_sparsity::SparsityError;

fn t(v: Vec<f32>, shape: &[usize]) -> Tensor {
    Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
}

fn v1(x: &Tensor) -> Vec<f32> {
    x.flatten_all().unwrap().to_vec1::<f32>().unwrap()
}

/// fc1 (8 hidden × 6 in) → relu → fc2 (3 × 8). Hidden neurons 1, 4 and 6 have tiny
/// weights; neuron 4 is exactly zero with zero bias.
fn mlp() -> (Tensor, Tensor, Tensor, Tensor) {
    let mut w1: Vec<f32> = (0..48)
        .map(|i| ((i * 13 % 17) as f32 - 8.0) / 5.0)
        .collect();
    for j in 0..6 {
        w1[6 + j] *= 0.01;
        w1[4 * 6 + j] = 0.0;
        w1[6 * 6 + j] *= 0.02;
    }
    let b1: Vec<f32> = (0..8)
        .map(|i| if i == 4 { 0.0 } else { 0.1 * i as f32 - 0.3 })
        .collect();
    let w2: Vec<f32> = (0..24).map(|i| ((i * 7 % 11) as f32 - 5.0) / 4.0).collect();
    let x: Vec<f32> = (0..24).map(|i| ((i * 5 % 9) as f32 - 4.0) / 3.0).collect();
    (t(w1, &[8, 6]), t(b1, &[8]), t(w2, &[3, 8]), t(x, &[4, 6]))
}

fn hidden(x: &Tensor, w1: &Tensor, b1: &Tensor) -> Tensor {
    x.matmul(&w1.t().unwrap())
        .unwrap()
        .broadcast_add(b1)
        .unwrap()
        .relu()
        .unwrap()
}

#[test]
fn structured_pruning_keeps_the_outputs_of_kept_neurons() {
    let (w1, b1, w2, x) = mlp();
    let norms = row_norms(&w1).unwrap();
    assert_eq!(norms[4], 0.0);
    // Remove floor(8 · 0.3) = 2 neurons: the two smallest norms, 4 and 1.
    let p = prune_neurons(&w1, Some(&b1), &w2, 0.3, 1).unwrap();
    assert_eq!(p.kept, vec![0, 2, 3, 5, 6, 7]);
    assert_eq!(p.w_a.dims(), &[6, 6]);
    assert_eq!(p.b_a.as_ref().unwrap().dims(), &[6]);
    assert_eq!(p.w_b.dims(), &[3, 6]);

    let h_full = hidden(&x, &w1, &b1).to_vec2::<f32>().unwrap();
    let h_small = hidden(&x, &p.w_a, p.b_a.as_ref().unwrap())
        .to_vec2::<f32>()
        .unwrap();
    for (row_full, row_small) in h_full.iter().zip(&h_small) {
        for (c, &k) in p.kept.iter().enumerate() {
            assert_eq!(row_small[c], row_full[k]);
        }
    }
    // Output = full model's output minus the removed neurons' contributions.
    let y_small = hidden(&x, &p.w_a, p.b_a.as_ref().unwrap())
        .matmul(&p.w_b.t().unwrap())
        .unwrap();
    let h = hidden(&x, &w1, &b1);
    let mut keep_cols = vec![0f32; 8];
    for k in &p.kept {
        keep_cols[*k] = 1.0;
    }
    let masked_h = h.broadcast_mul(&t(keep_cols, &[8])).unwrap();
    let y_ref = masked_h.matmul(&w2.t().unwrap()).unwrap();
    let diff = (&y_small - &y_ref)
        .unwrap()
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    assert!(diff < 1e-5, "{diff}");
    // Removing only the all-zero neuron leaves the network output unchanged.
    let z = prune_neurons(&w1, Some(&b1), &w2, 0.125, 1).unwrap();
    assert_eq!(z.kept, vec![0, 1, 2, 3, 5, 6, 7]);
    let y_z = hidden(&x, &z.w_a, z.b_a.as_ref().unwrap())
        .matmul(&z.w_b.t().unwrap())
        .unwrap();
    let y_full = h.matmul(&w2.t().unwrap()).unwrap();
    let diff = (&y_z - &y_full)
        .unwrap()
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    assert!(diff < 1e-5, "{diff}");
    // Ratio 0 keeps everything; ratio 1 keeps the single largest-norm neuron.
    assert_eq!(prune_neurons(&w1, None, &w2, 0.0, 1).unwrap().kept.len(), 8);
    let one = prune_neurons(&w1, None, &w2, 1.0, 1).unwrap();
    assert_eq!(one.kept.len(), 1);
    let best = norms
        .iter()
        .enumerate()
        .max_by(|a, b| a.1.total_cmp(b.1))
        .unwrap()
        .0;
    assert_eq!(one.kept, vec![best]);
}

#[test]
fn conv_filters_and_conv_to_linear_transition() {
    // conv A: 4 filters × 2 channels × 3 × 3; filter 2 is smallest, then filter 0.
    let mut wa: Vec<f32> = (0..72).map(|i| 1.0 + (i % 5) as f32).collect();
    for i in 0..18 {
        wa[2 * 18 + i] = 0.01;
        wa[i] *= 0.5;
    }
    let wa = t(wa, &[4, 2, 3, 3]);
    // next conv: 5 × 4 × 1 × 1, value = 10·out + in
    let wconv = t(
        (0..20).map(|i| (10 * (i / 4) + i % 4) as f32).collect(),
        &[5, 4, 1, 1],
    );
    let p = prune_neurons(&wa, None, &wconv, 0.5, 1).unwrap();
    assert_eq!(p.kept, vec![1, 3]);
    assert_eq!(p.w_a.dims(), &[2, 2, 3, 3]);
    assert_eq!(
        v1(&p.w_b),
        vec![1.0, 3.0, 11.0, 13.0, 21.0, 23.0, 31.0, 33.0, 41.0, 43.0]
    );
    // Flatten of 4 channels × 2 × 3 (spatial 6) into a linear 2 × 24; column = index.
    let wl = t((0..48).map(|i| (i % 24) as f32).collect(), &[2, 24]);
    let q = prune_neurons(&wa, None, &wl, 0.5, 6).unwrap();
    let cols: Vec<f32> = (6..12).chain(18..24).map(|c| c as f32).collect();
    assert_eq!(v1(&q.w_b)[..12], cols[..]);
    assert_eq!(q.w_b.dims(), &[2, 12]);
    // Shapes that do not chain, or a bad ratio / spatial factor, are errors.
    assert!(matches!(
        prune_neurons(&wa, None, &wl, 0.5, 5).unwrap_err(),
        SparsityError::ShapeMismatch { .. }
    ));
    assert!(prune_neurons(&wa, None, &wconv, 0.5, 2).is_err());
    assert!(prune_neurons(&wa, None, &wconv, 1.5, 1).is_err());
    assert!(prune_neurons(&wa, None, &wconv, 0.5, 0).is_err());
    assert!(prune_neurons(&wa, Some(&t(vec![0.0; 3], &[3])), &wconv, 0.5, 1).is_err());
    assert!(prune_neurons(&t(vec![1.0; 4], &[4]), None, &wconv, 0.5, 1).is_err());
    // Ties are broken towards removing the lower index.
    assert_eq!(
        kept_by_score(&[1.0, 1.0, 1.0, 2.0], 0.5).unwrap(),
        vec![2, 3]
    );
}

#[test]
fn regularizer_operators() {
    let w = t(vec![0.5, -0.03, 0.0, -2.0, 0.1, 1.0], &[2, 3]);
    // np.sign(w) * np.maximum(np.abs(w) - 0.1, 0) -> [0.4, -0, 0, -1.9, 0, 0.9]
    let s = v1(&soft_threshold(&w, 0.1).unwrap());
    let want = [0.4f32, 0.0, 0.0, -1.9, 0.0, 0.9];
    for (a, b) in s.iter().zip(want) {
        assert!((a - b).abs() < 1e-6);
    }
    assert!(
        s.iter().filter(|v| **v == 0.0).all(|v| v.to_bits() == 0),
        "zeros must be +0.0"
    );
    // Projection onto ‖w‖₀ <= 2 keeps -2.0 and 1.0.
    assert_eq!(
        v1(&project_l0(&w, 2).unwrap()),
        vec![0.0, 0.0, 0.0, -2.0, 0.0, 1.0]
    );
    assert_eq!(v1(&project_l0(&w, 10).unwrap()), v1(&w));
    // Trimmed: only the 3 smallest magnitudes (0.0, -0.03, 0.1) are shrunk.
    assert_eq!(
        smallest_k(&w, 3).unwrap(),
        vec![false, true, true, false, true, false]
    );
    let tr = v1(&trimmed_soft_threshold(&w, 0.05, 3).unwrap());
    let want = [0.5f32, 0.0, 0.0, -2.0, 0.05, 1.0];
    for (a, b) in tr.iter().zip(want) {
        assert!((a - b).abs() < 1e-6, "{tr:?}");
    }
    // Penalties and their gradients through candle autograd.
    let var = Var::from_tensor(&w).unwrap();
    let p = l1_penalty(var.as_tensor(), 0.5).unwrap();
    assert!((p.to_scalar::<f32>().unwrap() - 0.5 * 3.63).abs() < 1e-5);
    let g = p.backward().unwrap();
    let g = v1(g.get(var.as_tensor()).unwrap());
    assert_eq!(g, vec![0.5, -0.5, g[2], -0.5, 0.5, 0.5]);
    assert_eq!(
        v1(&l1_subgradient(&w, 0.5).unwrap()),
        vec![0.5, -0.5, 0.0, -0.5, 0.5, 0.5]
    );
    let tp = trimmed_l1_penalty(var.as_tensor(), 2.0, 3).unwrap();
    assert!((tp.to_scalar::<f32>().unwrap() - 2.0 * 0.13).abs() < 1e-6);
    let tg = tp.backward().unwrap();
    let tg = v1(tg.get(var.as_tensor()).unwrap());
    assert_eq!(
        (tg[0], tg[1], tg[3], tg[4], tg[5]),
        (0.0, -2.0, 0.0, 2.0, 0.0)
    );
    assert!(soft_threshold(&w, -0.1).is_err());
    assert!(l1_penalty(&w, f64::NAN).is_err());
    assert!(smallest_k(&t(vec![f32::NAN], &[1]), 1).is_err());
}
