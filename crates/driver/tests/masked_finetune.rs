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

#[test]
fn sgd_momentum_nesterov_weight_decay_keeps_pruned_weights_and_momentum_at_zero() {
    let device = Device::Cpu;
    let (model, masks) = pruned_model(&device);
    let mut hook = MaskHook::new(&masks, &device).unwrap();
    hook.apply_to_weights(model.as_ref()).unwrap();
    let mut opt = Sgd::new(SgdConfig {
        lr: 0.05,
        momentum: 0.9,
        nesterov: true,
        weight_decay: 5e-4,
        ..Default::default()
    })
    .unwrap();
    let before: Vec<f32> = model
        .params()
        .get("fc1.weight")
        .unwrap()
        .var
        .as_tensor()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    for (step, (x, y)) in batches(6, 1, &device).into_iter().enumerate() {
        deepcomp_models::train_epoch(
            model.as_ref(),
            &mut opt,
            std::iter::once(Ok((x, y))),
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
            let m = opt
                .momentum_buffer(name)
                .expect("momentum buffer exists after a step");
            assert_eq!(
                state_violations(m, mask.keep()),
                0,
                "step {step}: momentum of pruned {name} is not 0"
            );
        }
    }
    let after: Vec<f32> = model
        .params()
        .get("fc1.weight")
        .unwrap()
        .var
        .as_tensor()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    let kept = masks.get("fc1.weight").unwrap().keep();
    let moved = before
        .iter()
        .zip(&after)
        .zip(kept)
        .filter(|((b, a), k)| **k && b != a)
        .count();
    assert!(
        moved > kept.iter().filter(|k| **k).count() / 2,
        "kept weights train ({moved} moved)"
    );
}

#[test]
fn adamw_keeps_pruned_weights_and_moments_at_zero() {
    let device = Device::Cpu;
    let (model, masks) = pruned_model(&device);
    let mut hook = MaskHook::new(&masks, &device).unwrap();
    hook.apply_to_weights(model.as_ref()).unwrap();
    let mut opt = AdamW::new(AdamWConfig {
        lr: 1e-3,
        weight_decay: 0.01,
        ..Default::default()
    })
    .unwrap();
    for (step, (x, y)) in batches(5, 2, &device).into_iter().enumerate() {
        deepcomp_models::train_epoch(
            model.as_ref(),
            &mut opt,
            std::iter::once(Ok((x, y))),
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
            let (m, v, _) = opt.moments(name).expect("moments exist after a step");
            assert_eq!(
                state_violations(m, mask.keep()),
                0,
                "step {step}: first moment of pruned {name} is not 0"
            );
            assert_eq!(
                state_violations(v, mask.keep()),
                0,
                "step {step}: second moment of pruned {name} is not 0"
            );
        }
    }
}
