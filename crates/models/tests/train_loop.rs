//! The training and evaluation loops on generated data with a tiny MLP.

mod train_util;

use std::collections::BTreeMap;

use candle_core::backprop::GradStore;
use candle_core::{DType, Device, Tensor};
use deepcomp_models::{
    evaluate, train_epoch, Model, ModelError, Optimizer, ParamStore, ProgressConfig, Result, Sgd,
    SgdConfig, TrainHook,
};
use train_util::{values, Blobs, Mlp};

#[test]
fn mlp_learns_separable_blobs() {
    let data = Blobs::new(2000, 20, 10, 0.6, 7, 0);
    let test = Blobs::new(500, 20, 10, 0.6, 7, 1);
    let model = Mlp::new([1, 1, 20], &[32], 10, 1);
    let before = evaluate(&model, test.eval_batches(100).into_iter()).unwrap();
    let mut opt = Sgd::new(SgdConfig {
        lr: 0.05,
        momentum: 0.9,
        ..SgdConfig::default()
    })
    .unwrap();
    let mut hook = deepcomp_models::NoHook;
    let progress = ProgressConfig::default();
    let mut losses = Vec::new();
    for epoch in 0..3 {
        let s = train_epoch(
            &model,
            &mut opt,
            data.batches(64, 3, epoch).into_iter(),
            &mut hook,
            epoch,
            &progress,
        )
        .unwrap();
        assert_eq!(s.examples, 2000);
        assert_eq!(s.batches, 32);
        assert_eq!(s.epoch, epoch);
        assert!(s.ex_per_s > 0.0 && s.seconds > 0.0);
        let t5 = s.top5.expect("10 classes have top-5");
        assert!(t5 >= s.top1);
        losses.push(s.loss);
    }
    assert!(losses[2] < losses[0], "training loss falls: {losses:?}");
    let after = evaluate(&model, test.eval_batches(100).into_iter()).unwrap();
    assert_eq!(after.examples, 500);
    assert!(before.top1 < 0.5, "untrained accuracy {}", before.top1);
    assert!(after.top1 > 0.97, "trained accuracy {}", after.top1);
    assert!(after.top5.unwrap() >= after.top1);
    assert!(after.loss < before.loss);
}

/// A model without parameters whose logits are its input, to check the accuracy counts exactly.
#[derive(Debug)]
struct Identity {
    classes: usize,
    store: ParamStore,
}

impl Model for Identity {
    fn arch(&self) -> &str {
        "identity"
    }
    fn forward_t(&self, xs: &Tensor, _train: bool) -> Result<Tensor> {
        Ok(xs.flatten_from(1)?)
    }
    fn params(&self) -> &ParamStore {
        &self.store
    }
    fn input_shape(&self) -> [usize; 3] {
        [1, 1, self.classes]
    }
    fn num_classes(&self) -> usize {
        self.classes
    }
}

fn batch(logits: &[f32], labels: &[u32], classes: usize) -> candle_core::Result<(Tensor, Tensor)> {
    let n = labels.len();
    Ok((
        Tensor::from_slice(logits, (n, 1, 1, classes), &Device::Cpu)?,
        Tensor::from_slice(labels, n, &Device::Cpu)?,
    ))
}

#[test]
fn top1_top5_and_loss_are_exact() {
    let model = Identity {
        classes: 6,
        store: ParamStore::new(),
    };
    #[rustfmt::skip]
    let logits = [
        5.0, 1.0, 0.0, 0.0, 0.0, 0.0, // label 0: rank 0
        5.0, 4.0, 3.0, 2.0, 1.0, 0.0, // label 4: rank 4 (top-5 only)
        5.0, 4.0, 3.0, 2.0, 1.0, 0.0, // label 5: rank 5 (miss)
        1.0, 1.0, 0.0, 0.0, 0.0, 0.0, // label 1: tie with a lower index, rank 1
        f32::NAN, 0.0, 0.0, 0.0, 0.0, 0.0, // label 0 with a NaN logit: a miss
    ];
    let labels = [0, 4, 5, 1, 0];
    let s = evaluate(
        &model,
        std::iter::once(batch(&logits[..24], &labels[..4], 6)),
    )
    .unwrap();
    assert_eq!(s.examples, 4);
    assert_eq!(s.top1, 0.25);
    assert_eq!(s.top5, Some(0.75));
    // Cross-entropy by hand.
    let ce = |row: &[f32], l: usize| {
        let m = row.iter().cloned().fold(f32::MIN, f32::max) as f64;
        let lse = m + row.iter().map(|&v| (v as f64 - m).exp()).sum::<f64>().ln();
        lse - row[l] as f64
    };
    let want: f64 = (0..4)
        .map(|i| ce(&logits[i * 6..(i + 1) * 6], labels[i] as usize))
        .sum::<f64>()
        / 4.0;
    assert!((s.loss - want).abs() < 1e-5, "loss {} vs {want}", s.loss);
    let s = evaluate(&model, std::iter::once(batch(&logits, &labels, 6))).unwrap();
    assert_eq!(s.top1, 0.2);

    // Fewer than 5 classes: no top-5.
    let small = Identity {
        classes: 3,
        store: ParamStore::new(),
    };
    let s = evaluate(&small, std::iter::once(batch(&[0.0, 2.0, 1.0], &[1], 3))).unwrap();
    assert_eq!((s.top1, s.top5), (1.0, None));
}

#[test]
fn bad_batches_are_errors_not_panics() {
    let model = Identity {
        classes: 3,
        store: ParamStore::new(),
    };
    let run = |b: candle_core::Result<(Tensor, Tensor)>| {
        evaluate(&model, std::iter::once(b)).unwrap_err()
    };
    let err = run(batch(&[0.0, 2.0, 1.0], &[3], 3));
    assert!(
        matches!(&err, ModelError::Config { field, .. } if field == "labels"),
        "{err}"
    );
    let x = Tensor::zeros((1, 1, 1, 3), DType::F32, &Device::Cpu).unwrap();
    let err = run(Ok((
        x.clone(),
        Tensor::zeros(1, DType::F32, &Device::Cpu).unwrap(),
    )));
    assert!(err.to_string().contains("u32"), "{err}");
    let err = run(Ok((
        x.clone(),
        Tensor::zeros(2, DType::U32, &Device::Cpu).unwrap(),
    )));
    assert!(matches!(err, ModelError::Shape { .. }), "{err}");
    let wide = Tensor::zeros((1, 1, 1, 4), DType::F32, &Device::Cpu).unwrap();
    let err = run(Ok((
        wide,
        Tensor::zeros(1, DType::U32, &Device::Cpu).unwrap(),
    )));
    assert!(
        matches!(&err, ModelError::Shape { name, .. } if name == "logits"),
        "{err}"
    );
    let err = run(Err(candle_core::Error::Msg("disk on fire".into())));
    assert!(err.to_string().contains("disk on fire"), "{err}");
    let err = evaluate(&model, std::iter::empty()).unwrap_err();
    assert!(
        matches!(&err, ModelError::Config { field, .. } if field == "batches"),
        "{err}"
    );

    let mlp = Mlp::new([1, 1, 3], &[4], 3, 0);
    let mut opt = Sgd::new(SgdConfig::default()).unwrap();
    let err = train_epoch(
        &mlp,
        &mut opt,
        std::iter::empty(),
        &mut deepcomp_models::NoHook,
        0,
        &ProgressConfig::default(),
    )
    .unwrap_err();
    assert!(
        matches!(&err, ModelError::Config { field, .. } if field == "batches"),
        "{err}"
    );
}

/// Magnitude-style masks the way the sparsity stage applies them: gradients masked after backward,
/// weights and optimizer state masked after the step.
struct MaskHook {
    masks: BTreeMap<String, Tensor>,
    epochs_started: Vec<usize>,
    backward_calls: usize,
    step_calls: usize,
}

impl TrainHook for MaskHook {
    fn on_epoch_start(&mut self, epoch: usize, _model: &dyn Model) -> Result<()> {
        self.epochs_started.push(epoch);
        Ok(())
    }

    fn after_backward(&mut self, model: &dyn Model, grads: &mut GradStore) -> Result<()> {
        self.backward_calls += 1;
        for (name, mask) in &self.masks {
            let p = model
                .params()
                .get(name)
                .ok_or_else(|| ModelError::UnknownParam(name.clone()))?;
            if let Some(g) = grads.remove(p.var.as_tensor()) {
                grads.insert(p.var.as_tensor(), (g * mask)?);
            }
        }
        Ok(())
    }

    fn after_step(&mut self, model: &dyn Model, opt: &mut dyn Optimizer) -> Result<()> {
        self.step_calls += 1;
        for (name, mask) in &self.masks {
            let p = model
                .params()
                .get(name)
                .ok_or_else(|| ModelError::UnknownParam(name.clone()))?;
            p.var.set(&(p.var.as_tensor() * mask)?)?;
            opt.mask_state(name, mask)?;
        }
        Ok(())
    }

    fn masks(&self) -> Vec<(String, Tensor)> {
        self.masks
            .iter()
            .map(|(n, m)| (n.clone(), m.clone()))
            .collect()
    }
}

#[test]
fn masks_in_the_hook_keep_pruned_weights_and_momentum_at_zero() {
    let data = Blobs::new(512, 12, 4, 0.5, 11, 0);
    let model = Mlp::new([1, 1, 12], &[16], 4, 5);
    // Prune the smaller half of fc1.weight by magnitude, as the pruning stage would.
    let w = model.params().get("fc1.weight").unwrap().var.clone();
    let mags: Vec<f32> = values(w.as_tensor()).iter().map(|v| v.abs()).collect();
    let mut sorted = mags.clone();
    sorted.sort_by(f32::total_cmp);
    let threshold = sorted[sorted.len() / 2];
    let mask_vals: Vec<f32> = mags
        .iter()
        .map(|&m| if m >= threshold { 1.0 } else { 0.0 })
        .collect();
    let mask = Tensor::from_vec(mask_vals.clone(), w.dims(), &Device::Cpu).unwrap();
    w.set(&(w.as_tensor() * &mask).unwrap()).unwrap();
    let kept_before = values(w.as_tensor());

    let mut hook = MaskHook {
        masks: BTreeMap::from([("fc1.weight".to_string(), mask)]),
        epochs_started: Vec::new(),
        backward_calls: 0,
        step_calls: 0,
    };
    let mut opt = Sgd::new(SgdConfig {
        lr: 0.05,
        momentum: 0.9,
        weight_decay: 1e-3,
        ..SgdConfig::default()
    })
    .unwrap();
    let progress = ProgressConfig::default();
    for epoch in 0..2 {
        train_epoch(
            &model,
            &mut opt,
            data.batches(32, 1, epoch).into_iter(),
            &mut hook,
            epoch,
            &progress,
        )
        .unwrap();
    }
    assert_eq!(hook.epochs_started, vec![0, 1]);
    assert_eq!((hook.backward_calls, hook.step_calls), (32, 32));

    let after = values(w.as_tensor());
    let buf = values(opt.momentum_buffer("fc1.weight").unwrap());
    let mut moved = 0;
    for i in 0..after.len() {
        if mask_vals[i] == 0.0 {
            assert_eq!(after[i], 0.0, "pruned weight {i} is exactly 0");
            assert_eq!(buf[i], 0.0, "pruned momentum {i} is 0");
        } else if after[i] != kept_before[i] {
            moved += 1;
        }
    }
    assert!(
        moved > after.len() / 3,
        "surviving weights train ({moved} moved)"
    );
    // Unmasked parameters keep non-zero momentum.
    assert!(values(opt.momentum_buffer("fc2.weight").unwrap())
        .iter()
        .all(|v| *v != 0.0));
}

/// Distillation through the training loop's `TrainHook::loss`: a fresh student shown only meaningless
/// labels (all 0) learns the problem from a trained teacher when the soft term has all the weight, and
/// learns nothing from the same batches without it.
#[test]
fn distillation_teaches_a_student_through_the_loss_hook() {
    let data = Blobs::new(2000, 20, 10, 0.6, 7, 0);
    let test = Blobs::new(500, 20, 10, 0.6, 7, 1);
    let teacher = Mlp::new([1, 1, 20], &[32], 10, 1);
    let sgd = || {
        Sgd::new(SgdConfig {
            lr: 0.05,
            momentum: 0.9,
            ..SgdConfig::default()
        })
        .unwrap()
    };
    let progress = ProgressConfig::default();
    let mut opt = sgd();
    for epoch in 0..3 {
        let batches = data.batches(64, 3, epoch).into_iter();
        train_epoch(
            &teacher,
            &mut opt,
            batches,
            &mut deepcomp_models::NoHook,
            epoch,
            &progress,
        )
        .unwrap();
    }
    let teacher_top1 = evaluate(&teacher, test.eval_batches(100).into_iter())
        .unwrap()
        .top1;
    assert!(teacher_top1 > 0.97, "teacher {teacher_top1}");
    let mut student_top1 = Vec::new();
    for alpha in [1.0, 0.0] {
        let student = Mlp::new([1, 1, 20], &[32], 10, 2);
        let mut hook = deepcomp_models::distill::Distill::new(&teacher, alpha, 2.0).unwrap();
        let mut opt = sgd();
        for epoch in 0..3 {
            let batches = data.batches(64, 3, epoch).into_iter().map(|b| {
                let (x, y) = b?;
                Ok((x, y.zeros_like()?))
            });
            train_epoch(&student, &mut opt, batches, &mut hook, epoch, &progress).unwrap();
        }
        let e = evaluate(&student, test.eval_batches(100).into_iter()).unwrap();
        student_top1.push(e.top1);
    }
    assert!(student_top1[0] > 0.9, "distilled student {student_top1:?}");
    assert!(student_top1[1] < 0.2, "label-only student {student_top1:?}");
}
