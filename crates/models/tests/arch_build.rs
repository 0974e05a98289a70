//! Building architectures: sizes, names, shapes, configuration errors, bad inputs.

use candle_core::{DType, Device, Tensor};
use deepcomp_models::{build, ArchConfig, LayerKind, Model, ModelError, ParamRole, ARCHS};

fn zeros(shape: &[usize]) -> Tensor {
    Tensor::zeros(shape, DType::F32, &Device::Cpu).unwrap()
}

fn prunable_count(m: &dyn Model) -> usize {
    m.prunable()
        .iter()
        .map(|w| w.shape.iter().product::<usize>())
        .sum()
}

fn total_count(m: &dyn Model) -> usize {
    m.params().iter().map(|p| p.var.elem_count()).sum()
}

#[test]
fn every_arch_builds_with_published_weight_counts() {
    let expected = [
        ("lenet300", 266_200),     // 784·300 + 300·100 + 100·10
        ("lenet5", 430_500),       // Han et al.: 431K
        ("mlp", 25_878_272),       // seed 002 SimpleDNN, 784-1568-3136-6272-10
        ("cifar_lenet", 61_770),   // PyTorch tutorial Net, 5×5 kernels
        ("vgg16_half", 3_811_680), // seed 000: "Total parameters: 3811680"
        ("resnet20", 268_336),     // akamaster resnet20
    ];
    assert_eq!(ARCHS.len(), expected.len());
    for (arch, want) in expected {
        assert!(ARCHS.contains(&arch));
        let m = build(arch, &ArchConfig::new(), 1, &Device::Cpu).unwrap();
        assert_eq!(m.arch(), arch);
        assert_eq!(prunable_count(m.as_ref()), want, "{arch}");
        assert_eq!(m.num_classes(), 10);
    }
}

#[test]
fn simple_dnn_matches_seed_002_model_size() {
    // Seed 002: "reduction in model size (98.76MB ...)": all parameters at fp32, in MiB.
    let m = build("mlp", &ArchConfig::new(), 0, &Device::Cpu).unwrap();
    let params = total_count(m.as_ref());
    assert_eq!(params, 25_889_258);
    let mib = params as f64 * 4.0 / (1024.0 * 1024.0);
    assert!((mib - 98.76).abs() < 0.005, "{mib}");
}

#[test]
fn seed_004_lenet_has_35088_weights() {
    let cfg = ArchConfig::new()
        .with_kernels(vec![8, 9])
        .with_num_classes(100);
    let m = build("cifar_lenet", &cfg, 0, &Device::Cpu).unwrap();
    assert_eq!(prunable_count(m.as_ref()), 35_088);
    let shapes: Vec<Vec<usize>> = m.prunable().iter().map(|w| w.shape.clone()).collect();
    assert_eq!(
        shapes,
        vec![
            vec![6, 3, 8, 8],
            vec![16, 6, 9, 9],
            vec![120, 64],
            vec![84, 120],
            vec![100, 84]
        ]
    );
}

#[test]
fn forward_shapes_and_input_shapes() {
    let cases: [(&str, ArchConfig, [usize; 3]); 9] = [
        ("lenet300", ArchConfig::new(), [1, 28, 28]),
        ("lenet5", ArchConfig::new(), [1, 28, 28]),
        (
            "mlp",
            ArchConfig::new().with_hidden(vec![32, 16]),
            [1, 28, 28],
        ),
        ("cifar_lenet", ArchConfig::new(), [3, 32, 32]),
        (
            "cifar_lenet",
            ArchConfig::new().with_in_channels(1),
            [1, 32, 32],
        ),
        ("vgg16_half", ArchConfig::new(), [3, 32, 32]),
        (
            "vgg16_half",
            ArchConfig::new().with_in_channels(1),
            [1, 32, 32],
        ),
        ("resnet20", ArchConfig::new(), [3, 32, 32]),
        (
            "resnet20",
            ArchConfig::new().with_in_channels(1).with_num_classes(7),
            [1, 32, 32],
        ),
    ];
    for (arch, cfg, shape) in cases {
        let m = build(arch, &cfg, 3, &Device::Cpu).unwrap();
        assert_eq!(m.input_shape(), shape, "{arch}");
        let x = Tensor::randn(0f32, 1.0, (2, shape[0], shape[1], shape[2]), &Device::Cpu).unwrap();
        for train in [false, true] {
            let y = m.forward_t(&x, train).unwrap();
            assert_eq!(y.dims(), &[2, m.num_classes()], "{arch} train={train}");
            let v = y.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            assert!(v.iter().all(|x| x.is_finite()), "{arch}");
        }
    }
}

#[test]
fn mlp_accepts_flattened_input() {
    let m = build("lenet300", &ArchConfig::new(), 0, &Device::Cpu).unwrap();
    let x = Tensor::randn(0f32, 1.0, (3, 784), &Device::Cpu).unwrap();
    let a = m.forward_t(&x, false).unwrap();
    let b = m
        .forward_t(&x.reshape((3, 1, 28, 28)).unwrap(), false)
        .unwrap();
    assert_eq!(
        a.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
        b.flatten_all().unwrap().to_vec1::<f32>().unwrap()
    );
}

#[test]
fn prunable_lists_conv_and_fc_weights_only_in_order() {
    let m = build("resnet20", &ArchConfig::new(), 0, &Device::Cpu).unwrap();
    let p = m.prunable();
    assert_eq!(p.len(), 20);
    assert_eq!(p[0].name, "conv1.weight");
    assert_eq!(p[0].kind, LayerKind::Conv);
    assert_eq!(p[7].name, "layer2.0.conv1.weight");
    assert_eq!(p[8].name, "layer2.0.conv2.weight");
    assert_eq!(p[19].name, "linear.weight");
    assert_eq!(p[19].kind, LayerKind::Fc);
    // Buffers are BatchNorm running statistics and are not trainable.
    for param in m.params().iter() {
        let is_stat = param.name.ends_with("running_mean") || param.name.ends_with("running_var");
        assert_eq!(param.role == ParamRole::Buffer, is_stat, "{}", param.name);
        assert_eq!(param.role.trainable(), !is_stat);
    }

    let vgg = build("vgg16_half", &ArchConfig::new(), 0, &Device::Cpu).unwrap();
    let convs: Vec<String> = vgg
        .prunable()
        .iter()
        .filter(|w| w.kind == LayerKind::Conv)
        .map(|w| w.name.clone())
        .collect();
    let idx = [0, 3, 7, 10, 14, 17, 20, 24, 27, 30, 34, 37, 40];
    let want: Vec<String> = idx.iter().map(|i| format!("features.{i}.weight")).collect();
    assert_eq!(convs, want);
    assert!(vgg.params().get("features.0.bias").is_none());
    assert!(vgg.params().get("classifier.0.bias").is_some());
}

#[test]
fn vgg_conv_bias_option_adds_biases_only() {
    let cfg = ArchConfig::new().with_conv_bias(true);
    let m = build("vgg16_half", &cfg, 0, &Device::Cpu).unwrap();
    assert_eq!(prunable_count(m.as_ref()), 3_811_680);
    let b = m.params().get("features.40.bias").unwrap();
    assert_eq!(b.role, ParamRole::Bias);
    assert_eq!(b.var.dims(), &[256]);
}

fn config_error(arch: &str, cfg: ArchConfig) -> (String, String) {
    match build(arch, &cfg, 0, &Device::Cpu) {
        Err(ModelError::Config { field, reason }) => (field, reason),
        other => panic!("{arch}: expected a configuration error, got {other:?}"),
    }
}

#[test]
fn configuration_errors_name_the_field() {
    let (field, reason) = config_error("alexnet", ArchConfig::new());
    assert_eq!(field, "arch");
    assert!(reason.contains("resnet20"), "{reason}");

    assert_eq!(
        config_error("vgg16_half", ArchConfig::new().with_kernels(vec![3, 3])).0,
        "kernels"
    );
    assert_eq!(
        config_error("lenet300", ArchConfig::new().with_hidden(vec![10])).0,
        "hidden"
    );
    assert_eq!(
        config_error("resnet20", ArchConfig::new().with_conv_bias(true)).0,
        "conv_bias"
    );
    assert_eq!(
        config_error("mlp", ArchConfig::new().with_num_classes(0)).0,
        "num_classes"
    );
    assert_eq!(
        config_error("mlp", ArchConfig::new().with_hidden(vec![8, 0])).0,
        "hidden[1]"
    );
    assert_eq!(
        config_error("cifar_lenet", ArchConfig::new().with_kernels(vec![5])).0,
        "kernels"
    );
    assert_eq!(
        config_error("cifar_lenet", ArchConfig::new().with_kernels(vec![5, 0])).0,
        "kernels[1]"
    );
    let (field, reason) = config_error("lenet5", ArchConfig::new().with_input_size(10));
    assert_eq!(field, "input_size");
    assert!(reason.contains("conv2"), "{reason}");
    assert_eq!(
        config_error("resnet20", ArchConfig::new().with_input_size(30)).0,
        "input_size"
    );
    assert_eq!(
        config_error("vgg16_half", ArchConfig::new().with_input_size(16)).0,
        "input_size"
    );
    assert_eq!(
        config_error("cifar_lenet", ArchConfig::new().with_in_channels(0)).0,
        "in_channels"
    );
}

#[test]
fn bad_inputs_are_errors_not_panics() {
    for arch in ARCHS {
        let cfg = if arch == "mlp" {
            ArchConfig::new().with_hidden(vec![8])
        } else {
            ArchConfig::new()
        };
        let m = build(arch, &cfg, 0, &Device::Cpu).unwrap();
        let [c, h, w] = m.input_shape();
        for bad in [
            vec![2, c + 1, h, w],
            vec![2, c, h + 1, w],
            vec![c, h, w],
            vec![0, c, h, w],
            vec![2, c, h, w, 1],
        ] {
            match m.forward_t(&zeros(&bad), false) {
                Err(ModelError::Shape { name, found, .. }) => {
                    assert_eq!(name, "input");
                    assert_eq!(found, bad);
                }
                other => panic!("{arch} {bad:?}: expected a shape error, got {other:?}"),
            }
        }
    }
}

#[test]
fn batchnorm_train_mode_rejects_a_single_value_per_channel() {
    // VGG16-half ends at 1×1 and its classifier BatchNorm1d sees one value per channel for N = 1, which
    // PyTorch also rejects in train mode; eval mode works.
    let m = build("vgg16_half", &ArchConfig::new(), 0, &Device::Cpu).unwrap();
    let x = zeros(&[1, 3, 32, 32]);
    assert!(matches!(
        m.forward_t(&x, true),
        Err(ModelError::Config { .. })
    ));
    assert_eq!(m.forward_t(&x, false).unwrap().dims(), &[1, 10]);
}
