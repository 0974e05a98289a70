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
fn conv_widths_are_configurable_and_default_to_the_published_ones() {
    let shapes = |arch: &str, cfg: ArchConfig| -> Vec<(String, Vec<usize>)> {
        let m = build(arch, &cfg, 2, &Device::Cpu).unwrap();
        let [c, h, w] = m.input_shape();
        let y = m.forward_t(&zeros(&[2, c, h, w]), false).unwrap();
        assert_eq!(y.dims(), &[2, 10], "{arch}");
        m.params()
            .iter()
            .map(|p| (p.name.clone(), p.var.dims().to_vec()))
            .collect()
    };
    // Explicit defaults build the same model as no option at all, with the same weights.
    for (arch, cfg) in [
        (
            "lenet5",
            ArchConfig::new()
                .with_channels(vec![20, 50])
                .with_hidden(vec![500]),
        ),
        ("cifar_lenet", ArchConfig::new().with_channels(vec![6, 16])),
        (
            "vgg16_half",
            ArchConfig::new()
                .with_channels(vec![
                    32, 32, 64, 64, 128, 128, 128, 256, 256, 256, 256, 256, 256,
                ])
                .with_hidden(vec![256, 256]),
        ),
    ] {
        let a = build(arch, &ArchConfig::new(), 4, &Device::Cpu).unwrap();
        let b = build(arch, &cfg, 4, &Device::Cpu).unwrap();
        for (p, q) in a.params().iter().zip(b.params().iter()) {
            assert_eq!(p.name, q.name);
            let d = (p.var.as_tensor() - q.var.as_tensor())
                .unwrap()
                .abs()
                .unwrap()
                .sum_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap();
            assert_eq!(d, 0.0, "{arch} {}", p.name);
        }
    }
    let l = shapes(
        "lenet5",
        ArchConfig::new()
            .with_channels(vec![7, 9])
            .with_hidden(vec![33]),
    );
    assert_eq!(
        l,
        vec![
            ("conv1.weight".to_string(), vec![7, 1, 5, 5]),
            ("conv1.bias".to_string(), vec![7]),
            ("conv2.weight".to_string(), vec![9, 7, 5, 5]),
            ("conv2.bias".to_string(), vec![9]),
            ("fc1.weight".to_string(), vec![33, 9 * 4 * 4]),
            ("fc1.bias".to_string(), vec![33]),
            ("fc2.weight".to_string(), vec![10, 33]),
            ("fc2.bias".to_string(), vec![10]),
        ]
    );
    let c = shapes("cifar_lenet", ArchConfig::new().with_channels(vec![4, 5]));
    assert_eq!(c[2].1, vec![5, 4, 5, 5]);
    assert_eq!(c[4].1, vec![120, 5 * 5 * 5]);
    let mut ch = vec![8; 13];
    ch[12] = 5;
    let v = shapes(
        "vgg16_half",
        ArchConfig::new().with_channels(ch).with_hidden(vec![6, 7]),
    );
    let get = |n: &str| v.iter().find(|(m, _)| m == n).unwrap().1.clone();
    assert_eq!(get("features.0.weight"), vec![8, 3, 3, 3]);
    assert_eq!(get("features.40.weight"), vec![5, 8, 3, 3]);
    assert_eq!(get("features.41.running_var"), vec![5]);
    assert_eq!(get("classifier.0.weight"), vec![6, 5]);
    assert_eq!(get("classifier.1.weight"), vec![6]);
    assert_eq!(get("classifier.3.weight"), vec![7, 6]);
    assert_eq!(get("classifier.4.running_mean"), vec![7]);
    assert_eq!(get("classifier.6.weight"), vec![10, 7]);
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
    let (field, reason) = config_error("lenet5", ArchConfig::new().with_channels(vec![20]));
    assert_eq!(field, "channels");
    assert!(reason.contains("exactly 2"), "{reason}");
    assert_eq!(
        config_error("lenet5", ArchConfig::new().with_hidden(vec![500, 10])).0,
        "hidden"
    );
    assert_eq!(
        config_error("cifar_lenet", ArchConfig::new().with_channels(vec![6, 0])).0,
        "channels[1]"
    );
    assert_eq!(
        config_error("vgg16_half", ArchConfig::new().with_hidden(vec![256])).0,
        "hidden"
    );
    for arch in ["mlp", "lenet300", "resnet20"] {
        assert_eq!(
            config_error(arch, ArchConfig::new().with_channels(vec![4])).0,
            "channels"
        );
    }
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
