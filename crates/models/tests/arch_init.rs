//! Seeded initialization: reproducibility and the per-architecture distributions.

use candle_core::Device;
use deepcomp_models::{build, ArchConfig, InitScheme, Model, ParamRole, ARCHS};

fn values(m: &dyn Model, name: &str) -> Vec<f32> {
    m.params()
        .get(name)
        .unwrap_or_else(|| panic!("no parameter {name}"))
        .var
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap()
}

fn all_values(m: &dyn Model) -> Vec<Vec<f32>> {
    m.params()
        .iter()
        .map(|p| p.var.flatten_all().unwrap().to_vec1::<f32>().unwrap())
        .collect()
}

fn small(arch: &str) -> ArchConfig {
    if arch == "mlp" {
        ArchConfig::new().with_hidden(vec![64, 32])
    } else {
        ArchConfig::new()
    }
}

/// (mean, standard deviation, max |x|).
fn stats(v: &[f32]) -> (f64, f64, f64) {
    let n = v.len() as f64;
    let mean = v.iter().map(|&x| x as f64).sum::<f64>() / n;
    let var = v.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / n;
    let max = v.iter().fold(0f64, |m, &x| m.max((x as f64).abs()));
    (mean, var.sqrt(), max)
}

#[test]
fn same_seed_same_weights_other_seed_other_weights() {
    for arch in ARCHS {
        let a = build(arch, &small(arch), 42, &Device::Cpu).unwrap();
        let b = build(arch, &small(arch), 42, &Device::Cpu).unwrap();
        let c = build(arch, &small(arch), 43, &Device::Cpu).unwrap();
        let (va, vb, vc) = (
            all_values(a.as_ref()),
            all_values(b.as_ref()),
            all_values(c.as_ref()),
        );
        assert_eq!(va, vb, "{arch}: same seed must give bit-identical tensors");
        for (i, p) in a.params().iter().enumerate() {
            if matches!(p.role, ParamRole::Weight(_)) {
                assert_ne!(va[i], vc[i], "{arch} {}: seeds 42 and 43 agree", p.name);
            }
        }
    }
}

#[test]
fn caffe_xavier_for_lenets() {
    let m = build("lenet300", &ArchConfig::new(), 7, &Device::Cpu).unwrap();
    let bound = (3.0f64 / 784.0).sqrt();
    let (mean, std, max) = stats(&values(m.as_ref(), "fc1.weight"));
    assert!(max <= bound, "{max} > {bound}");
    assert!(mean.abs() < 0.02 * bound, "{mean}");
    // U(-b, b) has standard deviation b/√3 = 1/√784.
    assert!((std / (1.0 / 28.0) - 1.0).abs() < 0.01, "{std}");
    assert!(values(m.as_ref(), "fc1.bias").iter().all(|&b| b == 0.0));

    let m = build("lenet5", &ArchConfig::new(), 7, &Device::Cpu).unwrap();
    let bound = (3.0f64 / 500.0).sqrt(); // conv2 fan_in 20·5·5
    let (_, std, max) = stats(&values(m.as_ref(), "conv2.weight"));
    assert!(max <= bound);
    assert!((std / (bound / 3f64.sqrt()) - 1.0).abs() < 0.02, "{std}");
    assert!(values(m.as_ref(), "conv2.bias").iter().all(|&b| b == 0.0));
}

#[test]
fn torch_default_for_mlp_and_cifar_lenet() {
    let m = build("mlp", &small("mlp"), 7, &Device::Cpu).unwrap();
    let bound = 1.0 / 28.0;
    let (_, std, max) = stats(&values(m.as_ref(), "fc1.weight"));
    assert!(max <= bound);
    assert!((std / (bound / 3f64.sqrt()) - 1.0).abs() < 0.02, "{std}");
    let bias = values(m.as_ref(), "fc1.bias");
    assert!(bias.iter().all(|&b| (b as f64).abs() <= bound));
    assert!(bias.iter().any(|&b| b != 0.0));

    let m = build("cifar_lenet", &ArchConfig::new(), 7, &Device::Cpu).unwrap();
    let bound = 1.0 / 75f64.sqrt(); // conv1 fan_in 3·5·5
    let w = values(m.as_ref(), "conv1.weight");
    assert!(stats(&w).2 <= bound);
    assert!(values(m.as_ref(), "conv1.bias")
        .iter()
        .all(|&b| (b as f64).abs() <= bound));
}

#[test]
fn kaiming_normal_for_resnet20() {
    let m = build("resnet20", &ArchConfig::new(), 7, &Device::Cpu).unwrap();
    let w = values(m.as_ref(), "layer3.1.conv1.weight"); // 36,864 values, fan_in 576
    let (mean, std, _) = stats(&w);
    let want = (2.0f64 / 576.0).sqrt();
    assert!(mean.abs() < 0.02 * want, "{mean}");
    assert!((std / want - 1.0).abs() < 0.02, "{std} vs {want}");
    // Normal, not uniform: about 4.6% of the values lie beyond 2σ (uniform: none beyond 1.73σ).
    let tail = w.iter().filter(|&&x| (x as f64).abs() > 2.0 * want).count() as f64 / w.len() as f64;
    assert!((tail - 0.0455).abs() < 0.006, "{tail}");
    // Linear bias keeps PyTorch's default U(±1/√64).
    assert!(values(m.as_ref(), "linear.bias")
        .iter()
        .all(|&b| b.abs() <= 0.125));
    // BatchNorm starts as the identity.
    assert!(values(m.as_ref(), "layer2.0.bn1.weight")
        .iter()
        .all(|&g| g == 1.0));
    assert!(values(m.as_ref(), "layer2.0.bn1.bias")
        .iter()
        .all(|&b| b == 0.0));
    assert!(values(m.as_ref(), "layer2.0.bn1.running_mean")
        .iter()
        .all(|&b| b == 0.0));
    assert!(values(m.as_ref(), "layer2.0.bn1.running_var")
        .iter()
        .all(|&v| v == 1.0));
}

#[test]
fn glorot_normal_for_vgg16_half() {
    let m = build("vgg16_half", &ArchConfig::new(), 7, &Device::Cpu).unwrap();
    let (mean, std, _) = stats(&values(m.as_ref(), "features.40.weight"));
    let want = (2.0f64 / (9.0 * 256.0 + 9.0 * 256.0)).sqrt();
    assert!(mean.abs() < 0.01 * want);
    assert!((std / want - 1.0).abs() < 0.01, "{std} vs {want}");
    let (_, std, _) = stats(&values(m.as_ref(), "classifier.0.weight"));
    let want = (2.0f64 / 512.0).sqrt();
    assert!((std / want - 1.0).abs() < 0.02, "{std} vs {want}");
}

#[test]
fn init_override_changes_the_scheme() {
    let cfg = ArchConfig::new().with_init(InitScheme::CaffeXavier);
    let m = build("resnet20", &cfg, 7, &Device::Cpu).unwrap();
    let bound = (3.0f64 / 576.0).sqrt();
    assert!(stats(&values(m.as_ref(), "layer3.1.conv1.weight")).2 <= bound);
    assert!(values(m.as_ref(), "linear.bias").iter().all(|&b| b == 0.0));
    assert_eq!(InitScheme::CaffeXavier.as_str(), "caffe_xavier");
}
