//! Checkpoints: exact resume after a "kill", file round trip, and clear errors on mismatches.

mod train_util;

use std::collections::BTreeMap;
use std::path::Path;

use candle_core::{Device, Tensor};
use deepcomp_models::{
    fit, AdamWConfig, Batches, Checkpoint, EpochRecord, LrSchedule, Model, ModelError, Optimizer,
    OptimizerConfig, Schedule, SgdConfig, TrainConfig, TrainHook,
};
use train_util::{snapshot, values, Blobs, Mlp};

const SEED: u64 = 42;

/// A hook that only reports a fixed mask, to check that masks land in checkpoints.
struct FixedMasks(Vec<(String, Tensor)>);

impl TrainHook for FixedMasks {
    fn masks(&self) -> Vec<(String, Tensor)> {
        self.0.clone()
    }
}

fn mask() -> Vec<(String, Tensor)> {
    let m: Vec<u8> = (0..16 * 10).map(|i| (i % 3 != 0) as u8).collect();
    vec![(
        "fc1.weight".to_string(),
        Tensor::from_vec(m, (16, 10), &Device::Cpu).unwrap(),
    )]
}

fn config(optimizer: OptimizerConfig, epochs: usize, checkpoint: Option<&Path>) -> TrainConfig {
    TrainConfig {
        epochs,
        optimizer,
        schedule: Schedule::new(LrSchedule::Cosine {
            t_max: 4,
            eta_min: 0.0,
        })
        .with_warmup(1, 0.5),
        log_every: 0,
        progress: false,
        checkpoint: checkpoint.map(Path::to_path_buf),
        seed: Some(SEED),
        meta: BTreeMap::from([("dataset".to_string(), "blobs".to_string())]),
    }
}

fn run(
    model: &dyn Model,
    opt: &mut dyn Optimizer,
    cfg: &TrainConfig,
    data: &Blobs,
    test: &Blobs,
    start: usize,
) -> Vec<EpochRecord> {
    let mut train = |e: usize| -> deepcomp_models::Result<Batches<'_>> {
        Ok(Box::new(data.batches(32, SEED, e).into_iter()))
    };
    let mut eval = || -> deepcomp_models::Result<Batches<'_>> {
        Ok(Box::new(test.eval_batches(50).into_iter()))
    };
    let mut hook = FixedMasks(mask());
    fit(
        model,
        opt,
        cfg,
        &mut hook,
        &mut train,
        Some(&mut eval),
        start,
    )
    .unwrap()
}

#[test]
fn resume_after_one_epoch_is_bitwise_identical_to_a_straight_run() {
    let data = Blobs::new(640, 10, 5, 0.8, 3, 0);
    let test = Blobs::new(200, 10, 5, 0.8, 3, 1);
    let dir = tempfile::tempdir().unwrap();
    for optimizer in [
        OptimizerConfig::Sgd(SgdConfig {
            lr: 0.05,
            momentum: 0.9,
            nesterov: true,
            weight_decay: 5e-4,
            ..SgdConfig::default()
        }),
        OptimizerConfig::AdamW(AdamWConfig {
            lr: 1e-2,
            ..AdamWConfig::default()
        }),
    ] {
        // Straight: epochs 0 and 1.
        let straight = Mlp::new([1, 1, 10], &[16], 5, SEED);
        let mut opt_a = optimizer.build().unwrap();
        let hist_a = run(
            &straight,
            opt_a.as_mut(),
            &config(optimizer.clone(), 2, None),
            &data,
            &test,
            0,
        );

        // Epoch 0 only, checkpointed ("killed" afterwards).
        let path = dir.path().join(format!("{}.safetensors", optimizer.kind()));
        let first = Mlp::new([1, 1, 10], &[16], 5, SEED);
        let mut opt_b = optimizer.build().unwrap();
        let hist_b = run(
            &first,
            opt_b.as_mut(),
            &config(optimizer.clone(), 1, Some(&path)),
            &data,
            &test,
            0,
        );
        assert_eq!(
            hist_b[0],
            EpochRecord {
                train: hist_b[0].train.clone(),
                eval: hist_b[0].eval.clone()
            }
        );
        assert_eq!(hist_a[0].train.loss, hist_b[0].train.loss);

        // Fresh model (other seed, so every tensor must come from the file) and fresh optimizer.
        let resumed = Mlp::new([1, 1, 10], &[16], 5, SEED + 1);
        let mut opt_c = optimizer.build().unwrap();
        let ckpt = Checkpoint::resume(&path, &resumed, opt_c.as_mut()).unwrap();
        assert_eq!(ckpt.epoch, 1);
        assert_eq!(ckpt.step, 20);
        assert_eq!(opt_c.steps(), 20);
        let hist_c = run(
            &resumed,
            opt_c.as_mut(),
            &config(optimizer.clone(), 2, None),
            &data,
            &test,
            ckpt.epoch,
        );
        assert_eq!(hist_c.len(), 1);
        assert_eq!(hist_c[0].train.epoch, 1);

        // Bitwise equality of weights, optimizer state and the epoch-1 figures.
        let bits = |m: &dyn Model| -> Vec<(String, Vec<u32>)> {
            snapshot(m)
                .into_iter()
                .map(|(n, v)| (n, v.iter().map(|x| x.to_bits()).collect()))
                .collect()
        };
        assert_eq!(
            bits(&straight),
            bits(&resumed),
            "{}: weights",
            optimizer.kind()
        );
        let state = |o: &dyn Optimizer| -> Vec<(String, Vec<f32>)> {
            o.state()
                .unwrap()
                .iter()
                .map(|(n, t)| (n.clone(), values(t)))
                .collect()
        };
        assert_eq!(
            state(opt_a.as_ref()),
            state(opt_c.as_ref()),
            "{}: optimizer state",
            optimizer.kind()
        );
        assert_eq!(
            hist_a[1].train.loss.to_bits(),
            hist_c[0].train.loss.to_bits()
        );
        assert_eq!(hist_a[1].train.lr, hist_c[0].train.lr);
        assert_eq!(
            hist_a[1].eval.as_ref().unwrap().loss,
            hist_c[0].eval.as_ref().unwrap().loss
        );
        let top1 = hist_a[1].eval.as_ref().unwrap().top1;
        assert!(
            top1 > 0.9,
            "{}: the run actually learns ({top1})",
            optimizer.kind()
        );
    }
}

#[test]
fn checkpoint_file_round_trip() {
    let data = Blobs::new(320, 10, 5, 0.8, 3, 0);
    let test = Blobs::new(100, 10, 5, 0.8, 3, 1);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("run.safetensors");
    let model = Mlp::new([1, 1, 10], &[16], 5, SEED);
    let optimizer = OptimizerConfig::Sgd(SgdConfig {
        lr: 0.05,
        ..SgdConfig::default()
    });
    let mut opt = optimizer.build().unwrap();
    run(
        &model,
        opt.as_mut(),
        &config(optimizer, 1, Some(&path)),
        &data,
        &test,
        0,
    );

    // Atomic write leaves no temporary behind.
    let names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(names, vec!["run.safetensors".to_string()]);

    let ckpt = Checkpoint::load(&path).unwrap();
    assert_eq!((ckpt.epoch, ckpt.step), (1, 10));
    let model_names: Vec<&str> = ckpt.model.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        model_names,
        ["fc1.bias", "fc1.weight", "fc2.bias", "fc2.weight"]
    );
    for (n, t) in &ckpt.model {
        let live = model.params().get(n).unwrap().var.as_tensor().clone();
        assert_eq!(values(t), values(&live), "{n}");
    }
    let optim_names: Vec<&str> = ckpt.optim.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        optim_names,
        [
            "momentum_buffer.fc1.bias",
            "momentum_buffer.fc1.weight",
            "momentum_buffer.fc2.bias",
            "momentum_buffer.fc2.weight"
        ]
    );
    assert_eq!(ckpt.masks.len(), 1);
    assert_eq!(ckpt.masks[0].0, "fc1.weight");
    assert_eq!(ckpt.masks[0].1.dtype(), candle_core::DType::U8);
    assert_eq!(
        ckpt.masks[0].1.to_vec2::<u8>().unwrap(),
        mask()[0].1.to_vec2::<u8>().unwrap()
    );
    for (k, v) in [
        ("arch", "test_mlp"),
        ("optim.kind", "sgd"),
        ("optim.momentum", "0.9"),
        ("seed", "42"),
        ("dataset", "blobs"),
    ] {
        assert_eq!(ckpt.meta.get(k).map(String::as_str), Some(v), "meta {k}");
    }
    // Cosine with a 1-epoch warmup from 0.5: epoch 0 ran at 0.025, which is the rate stored.
    assert_eq!(ckpt.meta.get("optim.lr").map(String::as_str), Some("0.025"));
    assert!(ckpt.meta.contains_key("eval.top1") && ckpt.meta.contains_key("train.loss"));

    // Deterministic bytes: saving the loaded checkpoint again reproduces the file.
    let again = dir.path().join("again.safetensors");
    ckpt.save(&again).unwrap();
    assert_eq!(
        std::fs::read(&path).unwrap(),
        std::fs::read(&again).unwrap()
    );
}

#[test]
fn mismatches_and_bad_files_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let model = Mlp::new([1, 1, 10], &[16], 5, SEED);
    let sgd = OptimizerConfig::Sgd(SgdConfig::default()).build().unwrap();
    let base = Checkpoint::capture(&model, sgd.as_ref(), 3, Vec::new()).unwrap();
    let mut opt = OptimizerConfig::Sgd(SgdConfig::default()).build().unwrap();

    let mut missing = base.clone();
    missing.model.retain(|(n, _)| n != "fc2.bias");
    let err = missing.apply_to(&model, opt.as_mut()).unwrap_err();
    assert!(
        err.to_string().contains("missing tensor `fc2.bias`"),
        "{err}"
    );

    let other = Mlp::new([1, 1, 10], &[8], 5, SEED);
    let err = base.apply_to(&other, opt.as_mut()).unwrap_err();
    assert!(
        matches!(&err, ModelError::Shape { name, .. } if name == "fc1.weight"),
        "{err}"
    );

    let mut extra = base.clone();
    extra.model.push((
        "fc9.weight".into(),
        Tensor::zeros(1, candle_core::DType::F32, &Device::Cpu).unwrap(),
    ));
    let err = extra.apply_to(&model, opt.as_mut()).unwrap_err();
    assert!(err.to_string().contains("fc9.weight"), "{err}");

    let mut adam = OptimizerConfig::AdamW(AdamWConfig::default())
        .build()
        .unwrap();
    let err = base.apply_to(&model, adam.as_mut()).unwrap_err();
    assert!(
        err.to_string().contains("`sgd`") && err.to_string().contains("`adamw`"),
        "{err}"
    );

    let garbage = dir.path().join("garbage.safetensors");
    std::fs::write(&garbage, b"definitely not a checkpoint").unwrap();
    let err = Checkpoint::load(&garbage).unwrap_err();
    assert!(
        matches!(&err, ModelError::Checkpoint { path, .. } if path == &garbage),
        "{err}"
    );

    // A valid safetensors file that is not a deepcomp checkpoint.
    let mut plain = base.clone();
    plain.meta.clear();
    let foreign = dir.path().join("foreign.safetensors");
    plain.save(&foreign).unwrap();
    let mut bytes = std::fs::read(&foreign).unwrap();
    let needle = b"deepcomp-checkpoint";
    let at = bytes
        .windows(needle.len())
        .position(|w| w == needle)
        .unwrap();
    bytes[at..at + needle.len()].copy_from_slice(b"someone-elses-thing");
    std::fs::write(&foreign, &bytes).unwrap();
    let err = Checkpoint::load(&foreign).unwrap_err();
    assert!(err.to_string().contains("someone-elses-thing"), "{err}");

    let err = Checkpoint::load(&dir.path().join("absent.safetensors")).unwrap_err();
    assert!(matches!(err, ModelError::Io { .. }), "{err}");

    // Nothing was written by the failed applies: the fresh model still has its own weights.
    let fresh = Mlp::new([1, 1, 10], &[16], 5, SEED);
    assert_eq!(snapshot(&model), snapshot(&fresh));
}

#[test]
fn fit_rejects_inconsistent_arguments() {
    let data = Blobs::new(64, 10, 5, 0.8, 3, 0);
    let model = Mlp::new([1, 1, 10], &[16], 5, SEED);
    let mut train = |e: usize| -> deepcomp_models::Result<Batches<'_>> {
        Ok(Box::new(data.batches(32, SEED, e).into_iter()))
    };
    let mut hook = deepcomp_models::NoHook;
    let sgd_cfg = config(OptimizerConfig::Sgd(SgdConfig::default()), 2, None);
    let mut adam = OptimizerConfig::AdamW(AdamWConfig::default())
        .build()
        .unwrap();
    let err = fit(
        &model,
        adam.as_mut(),
        &sgd_cfg,
        &mut hook,
        &mut train,
        None,
        0,
    )
    .unwrap_err();
    assert!(
        matches!(&err, ModelError::Config { field, .. } if field == "optimizer"),
        "{err}"
    );
    let mut sgd = OptimizerConfig::Sgd(SgdConfig::default()).build().unwrap();
    let err = fit(
        &model,
        sgd.as_mut(),
        &sgd_cfg,
        &mut hook,
        &mut train,
        None,
        3,
    )
    .unwrap_err();
    assert!(
        matches!(&err, ModelError::Config { field, .. } if field == "start_epoch"),
        "{err}"
    );
    let mut bad = sgd_cfg.clone();
    bad.schedule = Schedule::new(LrSchedule::Step {
        step_size: 0,
        gamma: 0.1,
    });
    let err = fit(&model, sgd.as_mut(), &bad, &mut hook, &mut train, None, 0).unwrap_err();
    assert!(
        matches!(&err, ModelError::Config { field, .. } if field == "schedule.step_size"),
        "{err}"
    );
    // Without evaluation data the history has no eval figures.
    let hist = fit(
        &model,
        sgd.as_mut(),
        &sgd_cfg,
        &mut hook,
        &mut train,
        None,
        1,
    )
    .unwrap();
    assert_eq!(hist.len(), 1);
    assert!(hist[0].eval.is_none());
}
