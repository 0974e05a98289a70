//! The masked-finetune contract, end to end with the models crate's optimizers: after every optimizer
//! step, every pruned weight is exactly 0.0 and its optimizer state (momentum; Adam's moments) is 0.

use candle_core::{Device, Tensor};
use deepcomp_driver::hooks::MaskHook;
use deepcomp_models::{AdamW, AdamWConfig, Model, ProgressConfig, Sgd, SgdConfig};
use deepcomp_sparsity::{compute_masks, Criterion, MaskSet};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn batches(n: usize, seed: u64, device: &Device) -> Vec<(Tensor, Tensor)> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..n)
        .map(|_| {
            let x: Vec<f32> = (0..32 * 784)
                .map(|_| rng.random_range(-1.0f32..1.0))
                .collect();
            let y: Vec<u32> = (0..32).map(|_| rng.random_range(0..10u32)).collect();
            (
                Tensor::from_vec(x, (32, 1, 28, 28), device).unwrap(),
                Tensor::from_vec(y, 32, device).unwrap(),
            )
        })
        .collect()
}

fn pruned_model(device: &Device) -> (Box<dyn Model>, MaskSet) {
    let model = deepcomp_models::build("lenet300", &Default::default(), 3, device).unwrap();
    let ws: Vec<(String, Tensor)> = model
        .prunable()
        .into_iter()
        .map(|p| (p.name, p.var.as_tensor().clone()))
        .collect();
    let named: Vec<(&str, &Tensor)> = ws.iter().map(|(n, t)| (n.as_str(), t)).collect();
    let masks = compute_masks(&named, &Criterion::Percentile { q: 80.0 }, None, None).unwrap();
    (model, masks)
}

/// Number of pruned elements of a weight that are not exactly +0.0 (bitwise: the decoder writes +0.0).
fn violations(t: &Tensor, keep: &[bool]) -> usize {
    let v: Vec<f32> = t.flatten_all().unwrap().to_vec1().unwrap();
    v.iter()
        .zip(keep)
        .filter(|(x, k)| !**k && x.to_bits() != 0)
        .count()
}

/// Number of pruned elements of an optimizer state tensor that are not zero (numerically: ±0.0).
fn state_violations(t: &Tensor, keep: &[bool]) -> usize {
    let v: Vec<f32> = t.flatten_all().unwrap().to_vec1().unwrap();
    v.iter()
        .zip(keep)
        .filter(|(x, k)| !**k && **x != 0.0)
        .count()
}

fn fc1(model: &dyn Model) -> Vec<f32> {
    let p = model.params().get("fc1.weight").unwrap();
    p.var.as_tensor().flatten_all().unwrap().to_vec1().unwrap()
}

/// Trains `steps` single-batch steps with the mask hook; after each, checks that every pruned weight is
/// +0.0 and that every optimizer state tensor `states(opt, name)` returns is zero where pruned. Returns
/// how many kept fc1 weights moved.
fn train_masked<O: deepcomp_models::Optimizer>(
    mut opt: O,
    steps: usize,
    seed: u64,
    states: impl Fn(&O, &str) -> Vec<(&'static str, Tensor)>,
) -> (usize, usize) {
    let device = Device::Cpu;
    let (model, masks) = pruned_model(&device);
    let mut hook = MaskHook::new(&masks, &device).unwrap();
    hook.apply_to_weights(model.as_ref()).unwrap();
    let before = fc1(model.as_ref());
    for (step, (x, y)) in batches(steps, seed, &device).into_iter().enumerate() {
        let one = std::iter::once(Ok((x, y)));
        deepcomp_models::train_epoch(
            model.as_ref(),
            &mut opt,
            one,
            &mut hook,
            0,
            &ProgressConfig::default(),
        )
        .unwrap();
        for (name, mask) in masks.iter() {
            let w = model.params().get(name).unwrap().var.as_tensor().clone();
            assert_eq!(
                violations(&w, mask.keep()),
                0,
                "step {step}: pruned weights of {name} moved"
            );
            let st = states(&opt, name);
            assert!(!st.is_empty(), "optimizer state exists after a step");
            for (slot, t) in st {
                assert_eq!(
                    state_violations(&t, mask.keep()),
                    0,
                    "step {step}: {slot} of pruned {name} is not 0"
                );
            }
        }
    }
    let after = fc1(model.as_ref());
    let kept = masks.get("fc1.weight").unwrap().keep();
    let moved = before
        .iter()
        .zip(&after)
        .zip(kept)
        .filter(|((b, a), k)| **k && b != a)
        .count();
    (moved, kept.iter().filter(|k| **k).count())
}

#[test]
fn sgd_momentum_nesterov_weight_decay_keeps_pruned_weights_and_momentum_at_zero() {
    let opt = Sgd::new(SgdConfig {
        lr: 0.05,
        momentum: 0.9,
        nesterov: true,
        weight_decay: 5e-4,
        ..Default::default()
    })
    .unwrap();
    let (moved, kept) = train_masked(opt, 6, 1, |o, name| {
        o.momentum_buffer(name)
            .map(|m| vec![("momentum", m.clone())])
            .unwrap_or_default()
    });
    assert!(
        moved > kept / 2,
        "kept weights train ({moved} of {kept} moved)"
    );
}

#[test]
fn adamw_keeps_pruned_weights_and_moments_at_zero() {
    let opt = AdamW::new(AdamWConfig {
        lr: 1e-3,
        weight_decay: 0.01,
        ..Default::default()
    })
    .unwrap();
    let (moved, kept) = train_masked(opt, 5, 2, |o, name| {
        o.moments(name)
            .map(|(m, v, _)| vec![("first moment", m.clone()), ("second moment", v.clone())])
            .unwrap_or_default()
    });
    assert!(
        moved > kept / 2,
        "kept weights train ({moved} of {kept} moved)"
    );
}
