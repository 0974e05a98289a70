//! The fused BatchNorm epilogues (`kernels::bn::batch_norm_train_act`, `kernels::bn::channel_affine`,
//! `layers::BatchNorm::forward_act`): BatchNorm (train or eval mode) + residual + ReLU in one op,
//! against the same computation composed of candle ops and against finite differences.

use candle_core::{DType, Device, Tensor, Var};
use deepcomp_models::kernels::bn::{batch_norm_train, batch_norm_train_act, channel_affine};
use deepcomp_models::layers::BatchNorm;
use deepcomp_models::ParamStore;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn randn(rng: &mut ChaCha8Rng, n: usize, offset: f64, scale: f64) -> Vec<f64> {
    (0..n)
        .map(|_| offset + scale * (rng.random_range(-1.0..1.0) + rng.random_range(-1.0..1.0)))
        .collect()
}

fn to_f64(t: &Tensor) -> Vec<f64> {
    t.to_dtype(DType::F64)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f64>()
        .unwrap()
}

fn rel_err(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len());
    let scale = b.iter().fold(1.0f64, |m, v| m.max(v.abs()));
    a.iter()
        .zip(b)
        .fold(0.0f64, |m, (x, y)| m.max((x - y).abs()))
        / scale
}

fn var(v: &[f64], dims: &[usize], dtype: DType) -> Var {
    Var::from_tensor(
        &Tensor::from_slice(v, dims, &Device::Cpu)
            .unwrap()
            .to_dtype(dtype)
            .unwrap(),
    )
    .unwrap()
}

/// Inputs of one case: x, γ (or scale), β (or shift), the residual and the loss weights.
struct Case {
    dims: Vec<usize>,
    x: Vec<f64>,
    a: Vec<f64>,
    b: Vec<f64>,
    r: Vec<f64>,
    w: Vec<f64>,
}

impl Case {
    fn new(rng: &mut ChaCha8Rng, dims: &[usize]) -> Self {
        let len: usize = dims.iter().product();
        let c = dims[1];
        Self {
            dims: dims.to_vec(),
            x: randn(rng, len, 1.0, 2.0),
            a: randn(rng, c, 1.0, 0.5),
            b: randn(rng, c, 0.0, 0.5),
            r: randn(rng, len, 0.0, 1.0),
            w: randn(rng, len, 0.0, 1.0),
        }
    }
}

/// Output and gradients (x, a, b, r) of `L = Σ y·w`; `train` picks train-mode BN (a = γ, b = β) or
/// the eval-mode affine (a = scale, b = shift); `fused` our op or the candle composite.
fn run(
    case: &Case,
    dtype: DType,
    train: bool,
    residual: bool,
    relu: bool,
    fused: bool,
) -> [Vec<f64>; 5] {
    let c = case.dims[1];
    let (xv, av, bv, rv) = (
        var(&case.x, &case.dims, dtype),
        var(&case.a, &[c], dtype),
        var(&case.b, &[c], dtype),
        var(&case.r, &case.dims, dtype),
    );
    let (x, a, b) = (xv.as_tensor(), av.as_tensor(), bv.as_tensor());
    let r = residual.then_some(rv.as_tensor());
    let y = if fused {
        if train {
            batch_norm_train_act(x, a, b, 1e-5, r, relu).unwrap().0
        } else {
            channel_affine(x, a, b, r, relu).unwrap()
        }
    } else {
        let bshape: Vec<usize> = case
            .dims
            .iter()
            .enumerate()
            .map(|(i, &d)| if i == 1 { d } else { 1 })
            .collect();
        let y = if train {
            // The fused plain BN is checked against candle's composite in kernels_pool_bn.rs.
            batch_norm_train(x, a, b, 1e-5).unwrap().0
        } else {
            x.broadcast_mul(&a.reshape(bshape.as_slice()).unwrap())
                .unwrap()
                .broadcast_add(&b.reshape(bshape.as_slice()).unwrap())
                .unwrap()
        };
        let y = match r {
            Some(r) => (y + r).unwrap(),
            None => y,
        };
        if relu {
            y.relu().unwrap()
        } else {
            y
        }
    };
    let wt = var(&case.w, &case.dims, dtype);
    let grads = (&y * wt.as_tensor())
        .unwrap()
        .sum_all()
        .unwrap()
        .backward()
        .unwrap();
    let g = |v: &Var| {
        grads
            .get(v.as_tensor())
            .map(to_f64)
            .unwrap_or_else(|| vec![0.0; v.elem_count()])
    };
    [to_f64(&y), g(&xv), g(&av), g(&bv), g(&rv)]
}

const SHAPES: [&[usize]; 3] = [&[8, 5, 6, 7], &[16, 12], &[32, 8, 16, 16]];

#[test]
fn fused_epilogues_match_the_candle_composite() {
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    for dims in SHAPES {
        let case = Case::new(&mut rng, dims);
        for train in [true, false] {
            for (residual, relu) in [(false, false), (false, true), (true, true), (true, false)] {
                for (dtype, tol) in [(DType::F32, 1e-4), (DType::F64, 1e-10)] {
                    let ours = run(&case, dtype, train, residual, relu, true);
                    let want = run(&case, dtype, train, residual, relu, false);
                    for (what, (a, b)) in ["y", "dx", "da", "db", "dr"]
                        .iter()
                        .zip(ours.iter().zip(&want))
                    {
                        let e = rel_err(a, b);
                        assert!(
                            e < tol,
                            "{dims:?} train {train} residual {residual} relu {relu} {dtype:?} \
                             {what}: relative error {e:e}"
                        );
                    }
                }
            }
        }
    }
}

#[test]
fn fused_epilogue_gradients_match_finite_differences() {
    let mut rng = ChaCha8Rng::seed_from_u64(17);
    for dims in [&[3usize, 2, 2, 3][..], &[5, 3]] {
        let case = Case::new(&mut rng, dims);
        for train in [true, false] {
            let grads = run(&case, DType::F64, train, true, true, true);
            let loss = |case: &Case| -> f64 {
                let [y, ..] = run(case, DType::F64, train, true, true, true);
                y.iter().zip(&case.w).map(|(a, b)| a * b).sum()
            };
            let h = 1e-6;
            for (which, name) in ["x", "a", "b", "r"].into_iter().enumerate() {
                let grad = &grads[which + 1];
                for (i, &g) in grad.iter().enumerate() {
                    let mut up = clone(&case);
                    let mut down = clone(&case);
                    field(&mut up, which)[i] += h;
                    field(&mut down, which)[i] -= h;
                    let f = (loss(&up) - loss(&down)) / (2.0 * h);
                    assert!(
                        (f - g).abs() < 1e-5 * (1.0 + g.abs()),
                        "{dims:?} train {train} d{name}[{i}]: {f} vs {g}"
                    );
                }
            }
        }
    }
}

fn clone(c: &Case) -> Case {
    Case {
        dims: c.dims.clone(),
        x: c.x.clone(),
        a: c.a.clone(),
        b: c.b.clone(),
        r: c.r.clone(),
        w: c.w.clone(),
    }
}

fn field(c: &mut Case, which: usize) -> &mut Vec<f64> {
    match which {
        0 => &mut c.x,
        1 => &mut c.a,
        2 => &mut c.b,
        _ => &mut c.r,
    }
}

#[test]
fn layer_forward_act_matches_forward_t_then_add_and_relu() {
    let mut rng = ChaCha8Rng::seed_from_u64(23);
    let dims = [6usize, 4, 5, 5];
    let len: usize = dims.iter().product();
    for train in [true, false] {
        let mut store = ParamStore::new();
        let bn = BatchNorm::new(&mut store, "bn", 4, &Device::Cpu).unwrap();
        // Non-trivial parameters and running statistics.
        for (name, off) in [
            ("bn.weight", 1.0),
            ("bn.bias", 0.0),
            ("bn.running_mean", 0.5),
            ("bn.running_var", 2.0),
        ] {
            let v: Vec<f32> = randn(&mut rng, 4, off, 0.25)
                .iter()
                .map(|&v| v as f32)
                .collect();
            store
                .get(name)
                .unwrap()
                .var
                .set(&Tensor::from_vec(v, 4, &Device::Cpu).unwrap())
                .unwrap();
        }
        let t = |v: Vec<f64>| {
            Tensor::from_vec(v, &dims[..], &Device::Cpu)
                .unwrap()
                .to_dtype(DType::F32)
                .unwrap()
        };
        let x = t(randn(&mut rng, len, 0.5, 1.0));
        let r = t(randn(&mut rng, len, 0.0, 1.0));
        // Train mode updates the running statistics: run the reference on a copy of the layer state.
        let before: Vec<Tensor> = store
            .iter()
            .map(|p| p.var.as_tensor().copy().unwrap())
            .collect();
        let ours = bn.forward_act(&x, train, Some(&r), true).unwrap();
        let after: Vec<Vec<f64>> = store.iter().map(|p| to_f64(p.var.as_tensor())).collect();
        for (p, v) in store.iter().zip(&before) {
            p.var.set(v).unwrap();
        }
        let want = (bn.forward_t(&x, train).unwrap() + &r)
            .unwrap()
            .relu()
            .unwrap();
        assert!(
            rel_err(&to_f64(&ours), &to_f64(&want)) < 1e-5,
            "train {train}"
        );
        for (p, a) in store.iter().zip(&after) {
            assert!(rel_err(a, &to_f64(p.var.as_tensor())) < 1e-6, "{}", p.name);
        }
    }
}

/// ResNet-20 (fused BN epilogues, the conv kernels) trained twice from the same seed on the same
/// two-thread pool gives bit-identical parameters and running statistics: every reduction has a fixed
/// split of work, independent of thread timing.
#[test]
fn resnet20_training_is_bitwise_reproducible() {
    use deepcomp_models::{
        build, train_epoch, ArchConfig, NoHook, OptimizerConfig, ProgressConfig, SgdConfig,
    };
    let run = || -> Vec<Vec<f32>> {
        let cfg = ArchConfig {
            input_size: Some(8),
            ..ArchConfig::default()
        };
        let model = build("resnet20", &cfg, 3, &Device::Cpu).unwrap();
        let mut rng = ChaCha8Rng::seed_from_u64(4);
        let batches: Vec<(Tensor, Tensor)> = (0..2)
            .map(|_| {
                let x: Vec<f32> = (0..16 * 3 * 8 * 8)
                    .map(|_| rng.random_range(-1.0f32..1.0))
                    .collect();
                let y: Vec<u32> = (0..16).map(|_| rng.random_range(0..10u32)).collect();
                (
                    Tensor::from_vec(x, (16, 3, 8, 8), &Device::Cpu).unwrap(),
                    Tensor::from_vec(y, 16, &Device::Cpu).unwrap(),
                )
            })
            .collect();
        let mut opt = OptimizerConfig::Sgd(SgdConfig {
            lr: 0.05,
            momentum: 0.9,
            ..Default::default()
        })
        .build()
        .unwrap();
        train_epoch(
            model.as_ref(),
            opt.as_mut(),
            batches.iter().map(|(x, y)| Ok((x.clone(), y.clone()))),
            &mut NoHook,
            0,
            &ProgressConfig::default(),
        )
        .unwrap();
        model
            .params()
            .iter()
            .map(|p| {
                p.var
                    .as_tensor()
                    .flatten_all()
                    .unwrap()
                    .to_vec1::<f32>()
                    .unwrap()
            })
            .collect()
    };
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(2)
        .build()
        .unwrap();
    let a = pool.install(run);
    let b = pool.install(run);
    assert_eq!(a, b);
}
