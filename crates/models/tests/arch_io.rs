//! Safetensors save / load with PyTorch names: round trips and clear errors.

use std::collections::BTreeMap;

use candle_core::{DType, Device, Tensor};
use deepcomp_models::io::{model_tensors, ARCH_KEY};
use deepcomp_models::{
    build, load_safetensors, read_safetensors, save_safetensors, write_safetensors, ArchConfig,
    Model, ModelError,
};

fn snapshot(m: &dyn Model) -> Vec<(String, Vec<f32>)> {
    m.params()
        .iter()
        .map(|p| {
            let v = p.var.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            (p.name.clone(), v)
        })
        .collect()
}

fn reason(e: ModelError) -> String {
    match e {
        ModelError::Checkpoint { reason, .. } => reason,
        other => panic!("expected a checkpoint error, got {other:?}"),
    }
}

#[test]
fn resnet20_round_trip_including_running_stats() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("resnet20.safetensors");
    let a = build("resnet20", &ArchConfig::new(), 1, &Device::Cpu).unwrap();
    // One train-mode pass so that the running statistics differ from their initial values.
    let x = Tensor::randn(0f32, 1.0, (4, 3, 32, 32), &Device::Cpu).unwrap();
    a.forward_t(&x, true).unwrap();
    save_safetensors(a.as_ref(), &path).unwrap();

    let b = build("resnet20", &ArchConfig::new(), 2, &Device::Cpu).unwrap();
    assert_ne!(snapshot(a.as_ref()), snapshot(b.as_ref()));
    load_safetensors(b.as_ref(), &path).unwrap();
    assert_eq!(snapshot(a.as_ref()), snapshot(b.as_ref()));
    let ya = a
        .forward_t(&x, false)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    let yb = b
        .forward_t(&x, false)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    assert_eq!(ya, yb);

    let (tensors, meta) = read_safetensors(&path).unwrap();
    assert_eq!(tensors.len(), a.params().len());
    assert!(tensors.iter().all(|(_, t)| t.dtype() == DType::F32));
    assert_eq!(meta.get(ARCH_KEY).map(String::as_str), Some("resnet20"));
    assert_eq!(meta.get("format").map(String::as_str), Some("pt"));
    // Atomic write: nothing but the target is left in the directory.
    let entries: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert_eq!(entries.len(), 1);
}

#[test]
fn model_tensors_can_be_assigned_back_to_the_same_model() {
    let m = build("lenet300", &ArchConfig::new(), 1, &Device::Cpu).unwrap();
    let before = snapshot(m.as_ref());
    let own = model_tensors(m.as_ref());
    deepcomp_models::io::assign_tensors(m.as_ref(), &own, std::path::Path::new("<memory>"))
        .unwrap();
    assert_eq!(snapshot(m.as_ref()), before);
}

#[test]
fn pytorch_extras_and_other_float_dtypes_are_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("torch.safetensors");
    let src = build("resnet20", &ArchConfig::new(), 5, &Device::Cpu).unwrap();
    // What `safetensors.torch.save_file(model.double().state_dict())` would write: f64 tensors plus the
    // integer `num_batches_tracked` buffers.
    let mut tensors = Vec::new();
    for (name, t) in model_tensors(src.as_ref()) {
        let is_running_var = name.ends_with("running_var");
        tensors.push((name.clone(), t.to_dtype(DType::F64).unwrap()));
        if is_running_var {
            let prefix = name.trim_end_matches("running_var");
            let count = Tensor::new(&[3i64], &Device::Cpu)
                .unwrap()
                .squeeze(0)
                .unwrap();
            tensors.push((format!("{prefix}num_batches_tracked"), count));
        }
    }
    write_safetensors(&path, &tensors, &BTreeMap::new()).unwrap();
    let dst = build("resnet20", &ArchConfig::new(), 6, &Device::Cpu).unwrap();
    load_safetensors(dst.as_ref(), &path).unwrap();
    assert_eq!(snapshot(src.as_ref()), snapshot(dst.as_ref()));
}

#[test]
fn load_errors_are_clear_and_leave_the_model_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let lenet300 = dir.path().join("lenet300.safetensors");
    let small = build("lenet300", &ArchConfig::new(), 1, &Device::Cpu).unwrap();
    save_safetensors(small.as_ref(), &lenet300).unwrap();

    // Unknown names: a LeNet-300-100 file into LeNet-5.
    let lenet5 = build("lenet5", &ArchConfig::new(), 1, &Device::Cpu).unwrap();
    let before = snapshot(lenet5.as_ref());
    let r = reason(load_safetensors(lenet5.as_ref(), &lenet300).unwrap_err());
    assert!(
        r.contains("not a state_dict of architecture `lenet5`")
            && r.contains("unexpected keys [\"fc3.bias\", \"fc3.weight\"]")
            && r.contains("missing keys [\"conv1.weight\""),
        "{r}"
    );
    assert_eq!(snapshot(lenet5.as_ref()), before);

    // Shape mismatch: same names, other widths.
    let mlp = build(
        "mlp",
        &ArchConfig::new().with_hidden(vec![300, 50]),
        1,
        &Device::Cpu,
    )
    .unwrap();
    let r = reason(load_safetensors(mlp.as_ref(), &lenet300).unwrap_err());
    assert!(r.contains("shape mismatch for `fc2.weight`"), "{r}");
    assert!(r.contains("[50, 300]") && r.contains("[100, 300]"), "{r}");

    // Missing names.
    let partial = dir.path().join("partial.safetensors");
    let mut tensors = model_tensors(small.as_ref());
    tensors.retain(|(n, _)| n.starts_with("fc1"));
    write_safetensors(&partial, &tensors, &BTreeMap::new()).unwrap();
    let r = reason(load_safetensors(small.as_ref(), &partial).unwrap_err());
    assert!(
        r.contains(
            "missing keys [\"fc2.weight\", \"fc2.bias\", \"fc3.weight\", \"fc3.bias\"] (4 of 6)"
        ) && r.contains("unexpected keys []"),
        "{r}"
    );

    // Integer tensor under a parameter name.
    let ints = dir.path().join("ints.safetensors");
    let mut tensors = model_tensors(small.as_ref());
    tensors[1].1 = Tensor::zeros(300, DType::I64, &Device::Cpu).unwrap();
    write_safetensors(&ints, &tensors, &BTreeMap::new()).unwrap();
    let r = reason(load_safetensors(small.as_ref(), &ints).unwrap_err());
    assert!(r.contains("`fc1.bias` has dtype I64"), "{r}");

    // Not a safetensors file at all.
    let junk = dir.path().join("junk.safetensors");
    std::fs::write(&junk, b"definitely not safetensors").unwrap();
    let r = reason(load_safetensors(small.as_ref(), &junk).unwrap_err());
    assert!(r.contains("not a valid safetensors file"), "{r}");

    // Missing file.
    let missing = dir.path().join("nope.safetensors");
    match load_safetensors(small.as_ref(), &missing) {
        Err(ModelError::Io { path, .. }) => assert_eq!(path, missing),
        other => panic!("expected an I/O error, got {other:?}"),
    }
}

#[test]
fn write_errors() {
    let dir = tempfile::tempdir().unwrap();
    let t = Tensor::zeros(3, DType::F32, &Device::Cpu).unwrap();
    let dup = vec![("a".to_string(), t.clone()), ("a".to_string(), t.clone())];
    let path = dir.path().join("dup.safetensors");
    let r = reason(write_safetensors(&path, &dup, &BTreeMap::new()).unwrap_err());
    assert!(r.contains("duplicate tensor name `a`"), "{r}");
    assert!(!path.exists());

    let no_dir = dir.path().join("missing-dir").join("x.safetensors");
    let one = vec![("a".to_string(), t)];
    assert!(matches!(
        write_safetensors(&no_dir, &one, &BTreeMap::new()),
        Err(ModelError::Io { .. })
    ));
}

#[test]
fn metadata_and_order_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("meta.safetensors");
    let dev = Device::Cpu;
    let tensors = vec![
        (
            "z.weight".to_string(),
            Tensor::new(&[[1f32, 2.0], [3.0, 4.0]], &dev).unwrap(),
        ),
        ("a.step".to_string(), Tensor::new(&[7i64], &dev).unwrap()),
        (
            "m.mask".to_string(),
            Tensor::new(&[1u8, 0, 1], &dev).unwrap(),
        ),
    ];
    let mut meta = BTreeMap::new();
    meta.insert("epoch".to_string(), "12".to_string());
    write_safetensors(&path, &tensors, &meta).unwrap();
    let (back, meta_back) = read_safetensors(&path).unwrap();
    assert_eq!(meta_back, meta);
    let mut names: Vec<&str> = back.iter().map(|(n, _)| n.as_str()).collect();
    names.sort_unstable();
    assert_eq!(names, ["a.step", "m.mask", "z.weight"]);
    let get = |n: &str| back.iter().find(|(m, _)| m == n).unwrap().1.clone();
    assert_eq!(
        get("z.weight").to_vec2::<f32>().unwrap(),
        [[1.0, 2.0], [3.0, 4.0]]
    );
    assert_eq!(get("a.step").to_vec1::<i64>().unwrap(), [7]);
    assert_eq!(get("m.mask").to_vec1::<u8>().unwrap(), [1, 0, 1]);
}
