//! Layer semantics on hand-checkable inputs.

use candle_core::{Device, Tensor, Var};
use deepcomp_models::layers::{conv_out_size, max_pool2d, BatchNorm, Conv2d, Linear};
use deepcomp_models::{ModelError, ParamStore};

fn vec4(t: &Tensor) -> Vec<f32> {
    t.flatten_all().unwrap().to_vec1::<f32>().unwrap()
}

#[test]
fn max_pool_gradient_goes_to_the_window_maximum_only() {
    // 1×1×5×5 input, floor mode: 2×2 output; the last row and column are dropped.
    let x: Vec<f32> = (0..25).map(|i| ((i * 7) % 11) as f32).collect();
    let x = Var::from_tensor(&Tensor::from_vec(x, (1, 1, 5, 5), &Device::Cpu).unwrap()).unwrap();
    let y = max_pool2d(x.as_tensor(), 2).unwrap();
    assert_eq!(y.dims(), &[1, 1, 2, 2]);
    // Rows [0,7,3,10,6], [2,9,5,1,8], [4,0,7,3,10], [6,2,9,5,1], ...: window maxima 9, 10, 6, 9.
    assert_eq!(vec4(&y), [9.0, 10.0, 6.0, 9.0]);
    let g = y.sum_all().unwrap().backward().unwrap();
    let g = vec4(g.get(x.as_tensor()).unwrap());
    let mut want = vec![0f32; 25];
    for idx in [6, 3, 15, 17] {
        want[idx] = 1.0;
    }
    assert_eq!(
        g, want,
        "gradient 1 at each window maximum (candle 0.11's own pool gives 0.25)"
    );
    assert!(matches!(
        max_pool2d(
            &Tensor::zeros((1, 1, 1, 3), candle_core::DType::F32, &Device::Cpu).unwrap(),
            2
        ),
        Err(ModelError::Shape { .. })
    ));
}

#[test]
fn batchnorm_train_mode_uses_biased_variance_and_tracks_the_unbiased_one() {
    let mut store = ParamStore::new();
    let bn = BatchNorm::new(&mut store, "bn", 1, &Device::Cpu).unwrap();
    let names: Vec<&str> = store.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(
        names,
        ["bn.weight", "bn.bias", "bn.running_mean", "bn.running_var"]
    );
    // Four values 1, 2, 3, 6: mean 3, biased variance 3.5, unbiased 14/3.
    let x = Tensor::new(&[[1f32], [2.0], [3.0], [6.0]], &Device::Cpu).unwrap();
    let y = bn.forward_t(&x, true).unwrap();
    let s = (3.5f32 + 1e-5).sqrt();
    let want = [-2.0 / s, -1.0 / s, 0.0, 3.0 / s];
    for (g, w) in vec4(&y).iter().zip(want) {
        assert!((g - w).abs() < 1e-6, "{g} vs {w}");
    }
    let rm = vec4(store.get("bn.running_mean").unwrap().var.as_tensor());
    let rv = vec4(store.get("bn.running_var").unwrap().var.as_tensor());
    assert!((rm[0] - 0.3).abs() < 1e-6, "{rm:?}");
    assert!((rv[0] - (0.9 + 0.1 * 14.0 / 3.0)).abs() < 1e-6, "{rv:?}");

    // Eval mode normalizes with the running statistics and leaves them alone.
    let y = bn.forward_t(&x, false).unwrap();
    let s = (rv[0] + 1e-5).sqrt();
    for (g, xv) in vec4(&y).iter().zip([1f32, 2.0, 3.0, 6.0]) {
        assert!((g - (xv - rm[0]) / s).abs() < 1e-5);
    }
    assert_eq!(
        vec4(store.get("bn.running_mean").unwrap().var.as_tensor()),
        rm
    );

    // Wrong channel count and rank are shape errors.
    assert!(matches!(
        bn.forward_t(
            &Tensor::zeros((2, 3), candle_core::DType::F32, &Device::Cpu).unwrap(),
            false
        ),
        Err(ModelError::Shape { .. })
    ));
    assert!(matches!(
        bn.forward_t(
            &Tensor::zeros((2, 1, 3), candle_core::DType::F32, &Device::Cpu).unwrap(),
            false
        ),
        Err(ModelError::Shape { .. })
    ));
}

#[test]
fn linear_and_conv_register_pytorch_names_and_shapes() {
    let mut store = ParamStore::new();
    let fc = Linear::new(&mut store, "fc", 3, 2, true, &Device::Cpu).unwrap();
    let conv = Conv2d::new(&mut store, "conv", 2, 4, 3, 2, 1, false, &Device::Cpu).unwrap();
    let shapes: Vec<(&str, Vec<usize>)> = store
        .iter()
        .map(|p| (p.name.as_str(), p.var.dims().to_vec()))
        .collect();
    assert_eq!(
        shapes,
        [
            ("fc.weight", vec![2, 3]),
            ("fc.bias", vec![2]),
            ("conv.weight", vec![4, 2, 3, 3])
        ]
    );
    assert_eq!(
        (fc.in_features(), fc.out_features(), fc.has_bias()),
        (3, 2, true)
    );
    assert_eq!(conv.out_size(32), Some(16));
    assert_eq!(conv_out_size(2, 3, 1, 0), None);
    // y = x Wᵀ + b.
    let w = store.get("fc.weight").unwrap();
    w.var
        .set(&Tensor::new(&[[1f32, 0.0, -1.0], [2.0, 1.0, 0.0]], &Device::Cpu).unwrap())
        .unwrap();
    store
        .get("fc.bias")
        .unwrap()
        .var
        .set(&Tensor::new(&[0.5f32, -0.5], &Device::Cpu).unwrap())
        .unwrap();
    let y = fc
        .forward(&Tensor::new(&[[1f32, 2.0, 3.0]], &Device::Cpu).unwrap())
        .unwrap();
    assert_eq!(vec4(&y), [-1.5, 3.5]);
    // Duplicate names and zero sizes are configuration errors.
    assert!(Linear::new(&mut store, "fc", 3, 2, true, &Device::Cpu).is_err());
    assert!(matches!(
        Conv2d::new(&mut store, "c0", 0, 4, 3, 1, 1, false, &Device::Cpu),
        Err(ModelError::Config { .. })
    ));
}

// PyTorch routes a window's gradient to one element even when several tie for the maximum:
//   x = torch.zeros(1, 1, 4, 4, requires_grad=True)   # a flat background: every window ties
//   F.max_pool2d(x, 2).sum().backward(); x.grad
//   tensor([[[[1., 0., 1., 0.], [0., 0., 0., 0.], [1., 0., 1., 0.], [0., 0., 0., 0.]]]])
#[test]
fn max_pool_ties_send_the_gradient_to_the_first_maximum_only() {
    use candle_core::{Device, Tensor, Var};
    let x = Var::from_tensor(
        &Tensor::zeros((1, 1, 4, 4), candle_core::DType::F32, &Device::Cpu).unwrap(),
    )
    .unwrap();
    let y = deepcomp_models::layers::max_pool2d(x.as_tensor(), 2).unwrap();
    let g = y.sum_all().unwrap().backward().unwrap();
    let gx: Vec<f32> = g
        .get(x.as_tensor())
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    assert_eq!(
        gx,
        vec![1., 0., 1., 0., 0., 0., 0., 0., 1., 0., 1., 0., 0., 0., 0., 0.]
    );
    // A window with one larger element and a NaN-free rest: the gradient goes to the maximum.
    let v = Tensor::new(&[[[[1f32, 3., 2., 2.], [3., 0., 2., 5.]]]], &Device::Cpu).unwrap();
    let x = Var::from_tensor(&v).unwrap();
    let y = deepcomp_models::layers::max_pool2d(x.as_tensor(), 2).unwrap();
    assert_eq!(
        y.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
        vec![3., 5.]
    );
    let g = (y * 2.0).unwrap().sum_all().unwrap().backward().unwrap();
    let gx: Vec<f32> = g
        .get(x.as_tensor())
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    assert_eq!(gx, vec![0., 2., 0., 0., 0., 0., 0., 2.]);
}
