//! The convolution with an eval-mode BatchNorm folded in (`kernels::conv::conv2d_affine`,
//! `layers::Conv2d::forward_bn_act`): `act(conv(x)·scale + shift [+ r])` in one op, against the same
//! computation composed of candle ops (candle's own conv2d) and against finite differences, on the
//! direct (flat-grid) path, the im2col path (stride 2, 1×1, odd sides, 5×5) and with and without a
//! bias, a residual and a ReLU.

use candle_core::{DType, Device, Tensor, Var};
use deepcomp_models::kernels::conv::conv2d_affine;
use deepcomp_models::layers::{BatchNorm, Conv2d};
use deepcomp_models::ParamStore;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

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

/// One convolution: input (n, c, h, w), o outputs, k×k kernel, stride, padding.
#[derive(Debug, Clone, Copy)]
struct Shape {
    n: usize,
    c: usize,
    hw: (usize, usize),
    o: usize,
    k: usize,
    stride: usize,
    pad: usize,
}

impl Shape {
    fn out(&self) -> [usize; 4] {
        let side = |s: usize| (s + 2 * self.pad - self.k) / self.stride + 1;
        [self.n, self.o, side(self.hw.0), side(self.hw.1)]
    }
}

/// Values of one case: x, W, b, scale, shift, the residual and the loss weights.
struct Case {
    s: Shape,
    vals: [Vec<f64>; 7],
}

impl Case {
    fn new(rng: &mut ChaCha8Rng, s: Shape) -> Self {
        let mut r = |n: usize, offset: f64, scale: f64| -> Vec<f64> {
            (0..n)
                .map(|_| offset + scale * rng.random_range(-1.0..1.0))
                .collect()
        };
        let x = s.n * s.c * s.hw.0 * s.hw.1;
        let y: usize = s.out().iter().product();
        let fan_in = (s.c * s.k * s.k) as f64;
        Self {
            s,
            vals: [
                r(x, 0.0, 1.0),
                r(s.o * s.c * s.k * s.k, 0.0, 1.5 / fan_in.sqrt()),
                r(s.o, 0.0, 0.3),
                r(s.o, 1.0, 0.5),
                r(s.o, 0.0, 0.5),
                r(y, 0.0, 1.0),
                r(y, 0.0, 1.0),
            ],
        }
    }

    fn dims(&self) -> [Vec<usize>; 7] {
        let s = self.s;
        let out = s.out().to_vec();
        [
            vec![s.n, s.c, s.hw.0, s.hw.1],
            vec![s.o, s.c, s.k, s.k],
            vec![s.o],
            vec![s.o],
            vec![s.o],
            out.clone(),
            out,
        ]
    }
}

/// Output and gradients (x, W, b, scale, shift, r) of `L = Σ y·loss_weights`, from our op
/// (`fused`) or from candle's conv2d and elementwise ops.
fn run(
    case: &Case,
    dtype: DType,
    bias: bool,
    residual: bool,
    relu: bool,
    fused: bool,
) -> Vec<Vec<f64>> {
    let s = case.s;
    let vars: Vec<Var> = case
        .vals
        .iter()
        .zip(case.dims())
        .map(|(v, d)| {
            Var::from_tensor(
                &Tensor::from_slice(v, d.as_slice(), &Device::Cpu)
                    .unwrap()
                    .to_dtype(dtype)
                    .unwrap(),
            )
            .unwrap()
        })
        .collect();
    let t: Vec<&Tensor> = vars.iter().map(Var::as_tensor).collect();
    let b = bias.then_some(t[2]);
    let r = residual.then_some(t[5]);
    let y = if fused {
        conv2d_affine(t[0], t[1], b, t[3], t[4], s.stride, s.pad, r, relu).unwrap()
    } else {
        let bshape = (1, s.o, 1, 1);
        let mut y = t[0].conv2d(t[1], s.pad, s.stride, 1, 1).unwrap();
        if let Some(b) = b {
            y = y.broadcast_add(&b.reshape(bshape).unwrap()).unwrap();
        }
        y = y
            .broadcast_mul(&t[3].reshape(bshape).unwrap())
            .unwrap()
            .broadcast_add(&t[4].reshape(bshape).unwrap())
            .unwrap();
        if let Some(r) = r {
            y = (y + r).unwrap();
        }
        if relu {
            y.relu().unwrap()
        } else {
            y
        }
    };
    assert_eq!(y.dims(), s.out());
    let grads = (&y * t[6]).unwrap().sum_all().unwrap().backward().unwrap();
    let mut out = vec![to_f64(&y)];
    for (i, v) in vars.iter().enumerate().take(6) {
        out.push(
            grads
                .get(v.as_tensor())
                .map(to_f64)
                .unwrap_or_else(|| vec![0.0; case.vals[i].len()]),
        );
    }
    out
}

fn shape(
    n: usize,
    c: usize,
    hw: (usize, usize),
    o: usize,
    k: usize,
    stride: usize,
    pad: usize,
) -> Shape {
    Shape {
        n,
        c,
        hw,
        o,
        k,
        stride,
        pad,
    }
}

#[test]
fn conv2d_affine_matches_the_candle_composite() {
    eprintln!(
        "direct convolution kernels: {:?}",
        deepcomp_models::kernels::direct::isa()
    );
    let shapes = [
        // The direct path: ResNet-20's 8×8 stage with a partial register block of outputs, odd
        // sides, and more images than threads at 16×16.
        shape(3, 16, (8, 8), 10, 3, 1, 1),
        shape(2, 8, (7, 9), 13, 3, 1, 1),
        shape(5, 32, (16, 16), 32, 3, 1, 1),
        // im2col + gemm: stride 2 (ResNet's downsampling), 3 input channels, 1×1, 5×5.
        shape(2, 3, (9, 7), 4, 3, 2, 1),
        shape(3, 3, (8, 8), 16, 3, 1, 1),
        shape(2, 4, (5, 5), 3, 1, 1, 0),
        shape(2, 3, (6, 6), 7, 5, 1, 2),
        // Small planes, several images per gemm, with whole and partial groups (the residual and
        // the bias must land on the right image).
        shape(7, 3, (4, 4), 5, 3, 1, 1),
        shape(9, 3, (5, 5), 4, 3, 2, 1),
        // Tiny planes: the block path.
        shape(7, 5, (2, 2), 6, 3, 1, 1),
    ];
    let mut rng = ChaCha8Rng::seed_from_u64(23);
    for s in shapes {
        let case = Case::new(&mut rng, s);
        for (bias, residual, relu) in [
            (false, false, false),
            (false, false, true),
            (false, true, true),
            (true, true, false),
            (true, false, true),
        ] {
            for (dtype, tol) in [(DType::F32, 2e-4), (DType::F64, 1e-10)] {
                let ours = run(&case, dtype, bias, residual, relu, true);
                let want = run(&case, dtype, bias, residual, relu, false);
                for (what, (a, b)) in ["y", "dx", "dW", "db", "dscale", "dshift", "dr"]
                    .iter()
                    .zip(ours.iter().zip(&want))
                {
                    let e = rel_err(a, b);
                    assert!(
                        e < tol,
                        "{s:?} bias {bias} residual {residual} relu {relu} {dtype:?} {what}: \
                         relative error {e:e}"
                    );
                }
            }
        }
    }
}

/// Central differences (step 1e-6) of `loss` at six random elements of each probed input, against the
/// analytic gradient: `probes` holds (index into `case.vals`, index into `grads`, name); the bound is
/// `tol · (1 + |fd|)`.
fn check_finite_differences(
    case: &mut Case,
    grads: &[Vec<f64>],
    probes: &[(usize, usize, &str)],
    loss: impl Fn(&Case) -> f64,
    tol: f64,
    rng: &mut ChaCha8Rng,
    s: &Shape,
) {
    let h = 1e-6;
    for &(which, gi, name) in probes {
        let grad = &grads[gi];
        for _ in 0..6 {
            let i = rng.random_range(0..case.vals[which].len());
            let v = case.vals[which][i];
            case.vals[which][i] = v + h;
            let up = loss(case);
            case.vals[which][i] = v - h;
            let down = loss(case);
            case.vals[which][i] = v;
            let fd = (up - down) / (2.0 * h);
            assert!(
                (fd - grad[i]).abs() <= tol * (1.0 + fd.abs()),
                "{s:?} d{name}[{i}]: analytic {} vs finite difference {fd}",
                grad[i]
            );
        }
    }
}

#[test]
fn conv2d_affine_gradients_match_finite_differences() {
    let mut rng = ChaCha8Rng::seed_from_u64(29);
    // A direct-path case (8 channels in) and a strided im2col case.
    for s in [
        shape(2, 8, (5, 4), 3, 3, 1, 1),
        shape(2, 2, (5, 5), 3, 3, 2, 1),
    ] {
        let mut case = Case::new(&mut rng, s);
        let grads = run(&case, DType::F64, true, true, true, true);
        let loss = |case: &Case| -> f64 {
            let y = &run(case, DType::F64, true, true, true, true)[0];
            y.iter().zip(&case.vals[6]).map(|(a, b)| a * b).sum()
        };
        let probes = [
            (0, 1, "x"),
            (1, 2, "W"),
            (2, 3, "b"),
            (3, 4, "scale"),
            (4, 5, "shift"),
            (5, 6, "r"),
        ];
        check_finite_differences(&mut case, &grads, &probes, loss, 1e-6, &mut rng, &s);
    }
}

/// The layer: in eval mode `Conv2d::forward_bn_act` (folded, one op) gives what the convolution
/// followed by `BatchNorm::forward_act` gives; in train mode it is that composition.
#[test]
fn forward_bn_act_folds_batch_norm_in_eval_mode() {
    let dev = Device::Cpu;
    let mut store = ParamStore::new();
    let conv = Conv2d::new(&mut store, "conv", 16, 16, 3, 1, 1, false, &dev).unwrap();
    let bn = BatchNorm::new(&mut store, "bn", 16, &dev).unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(31);
    for p in store.iter() {
        let n = p.var.elem_count();
        let v: Vec<f32> = (0..n)
            .map(|_| {
                let u = rng.random_range(-1.0f32..1.0);
                if p.name.ends_with("running_var") {
                    1.0 + u.abs()
                } else {
                    u * 0.3
                }
            })
            .collect();
        p.var
            .set(&Tensor::from_vec(v, p.var.dims(), &dev).unwrap())
            .unwrap();
    }
    let x = Tensor::randn(0f32, 1.0, (4, 16, 8, 8), &dev).unwrap();
    let r = Tensor::randn(0f32, 1.0, (4, 16, 8, 8), &dev).unwrap();
    for residual in [None, Some(&r)] {
        let folded = conv.forward_bn_act(&x, &bn, false, residual, true).unwrap();
        let composed = bn
            .forward_act(&conv.forward(&x).unwrap(), false, residual, true)
            .unwrap();
        let e = rel_err(&to_f64(&folded), &to_f64(&composed));
        assert!(e < 1e-5, "eval mode: relative error {e:e}");
    }
    let wrong = BatchNorm::new(&mut ParamStore::new(), "bn", 8, &dev).unwrap();
    assert!(conv.forward_bn_act(&x, &wrong, false, None, true).is_err());
}

/// Output, gradients (x, W, γ, β, r) and batch statistics of `L = Σ y·loss_weights` for a
/// convolution followed by train-mode BatchNorm: our fused op (`fused`) or `conv2d` followed by
/// `batch_norm_train_act` (two ops, two graph nodes).
fn run_train(
    case: &Case,
    dtype: DType,
    residual: bool,
    relu: bool,
    fused: bool,
) -> (Vec<Vec<f64>>, Vec<f64>) {
    use deepcomp_models::kernels::bn::batch_norm_train_act;
    use deepcomp_models::kernels::conv::conv2d;
    use deepcomp_models::kernels::conv_bn::conv2d_batch_norm_train;
    let s = case.s;
    let vars: Vec<Var> = case
        .vals
        .iter()
        .zip(case.dims())
        .map(|(v, d)| {
            Var::from_tensor(
                &Tensor::from_slice(v, d.as_slice(), &Device::Cpu)
                    .unwrap()
                    .to_dtype(dtype)
                    .unwrap(),
            )
            .unwrap()
        })
        .collect();
    let t: Vec<&Tensor> = vars.iter().map(Var::as_tensor).collect();
    let r = residual.then_some(t[5]);
    let (y, stats) = if fused {
        conv2d_batch_norm_train(t[0], t[1], t[3], t[4], 1e-5, s.stride, s.pad, r, relu).unwrap()
    } else {
        let z = conv2d(t[0], t[1], None, s.stride, s.pad).unwrap();
        batch_norm_train_act(&z, t[3], t[4], 1e-5, r, relu).unwrap()
    };
    assert_eq!(y.dims(), s.out());
    let grads = (&y * t[6]).unwrap().sum_all().unwrap().backward().unwrap();
    let mut out = vec![to_f64(&y)];
    for (i, v) in vars.iter().enumerate().take(6) {
        if i == 2 {
            continue; // no convolution bias
        }
        out.push(
            grads
                .get(v.as_tensor())
                .map(to_f64)
                .unwrap_or_else(|| vec![0.0; case.vals[i].len()]),
        );
    }
    (out, stats.mean.into_iter().chain(stats.var).collect())
}

#[test]
fn conv2d_batch_norm_train_matches_the_two_ops() {
    let shapes = [
        shape(3, 16, (8, 8), 10, 3, 1, 1),
        shape(2, 8, (7, 9), 13, 3, 1, 1),
        shape(5, 32, (16, 16), 32, 3, 1, 1),
        shape(2, 3, (9, 7), 4, 3, 2, 1),
        shape(3, 3, (8, 8), 16, 3, 1, 1),
        shape(2, 4, (5, 5), 3, 1, 1, 0),
        shape(2, 3, (6, 6), 7, 5, 1, 2),
    ];
    let mut rng = ChaCha8Rng::seed_from_u64(37);
    for s in shapes {
        let case = Case::new(&mut rng, s);
        for (residual, relu) in [(false, false), (false, true), (true, true), (true, false)] {
            for dtype in [DType::F32, DType::F64] {
                let (ours, ours_stats) = run_train(&case, dtype, residual, relu, true);
                let (want, want_stats) = run_train(&case, dtype, residual, relu, false);
                // The same kernels in the same order: equal to the bit.
                assert_eq!(ours_stats, want_stats, "{s:?} {dtype:?}: batch statistics");
                for (what, (a, b)) in ["y", "dx", "dW", "dgamma", "dbeta", "dr"]
                    .iter()
                    .zip(ours.iter().zip(&want))
                {
                    assert!(
                        a == b,
                        "{s:?} residual {residual} relu {relu} {dtype:?} {what}: relative error {:e}",
                        rel_err(a, b)
                    );
                }
            }
        }
    }
}

#[test]
fn conv2d_batch_norm_train_gradients_match_finite_differences() {
    let mut rng = ChaCha8Rng::seed_from_u64(41);
    for s in [
        shape(2, 8, (5, 4), 3, 3, 1, 1),
        shape(3, 2, (5, 5), 3, 3, 2, 1),
    ] {
        let mut case = Case::new(&mut rng, s);
        let (grads, _) = run_train(&case, DType::F64, true, true, true);
        let loss = |case: &Case| -> f64 {
            let y = &run_train(case, DType::F64, true, true, true).0[0];
            y.iter().zip(&case.vals[6]).map(|(a, b)| a * b).sum()
        };
        let probes = [
            (0, 1, "x"),
            (1, 2, "W"),
            (3, 3, "gamma"),
            (4, 4, "beta"),
            (5, 5, "r"),
        ];
        check_finite_differences(&mut case, &grads, &probes, loss, 1e-5, &mut rng, &s);
    }
}

/// In train mode `Conv2d::forward_bn_act` (one op) gives the output, the gradients and the running
/// statistics of the convolution followed by `BatchNorm::forward_act`.
#[test]
fn forward_bn_act_in_train_mode_matches_the_two_layers() {
    let dev = Device::Cpu;
    let build = || {
        let mut store = ParamStore::new();
        let conv = Conv2d::new(&mut store, "conv", 8, 12, 3, 1, 1, false, &dev).unwrap();
        let bn = BatchNorm::new(&mut store, "bn", 12, &dev).unwrap();
        let mut rng = ChaCha8Rng::seed_from_u64(43);
        for p in store.iter() {
            let v: Vec<f32> = (0..p.var.elem_count())
                .map(|_| 0.5 + rng.random_range(0.0f32..0.5))
                .collect();
            p.var
                .set(&Tensor::from_vec(v, p.var.dims(), &dev).unwrap())
                .unwrap();
        }
        (store, conv, bn)
    };
    let x = Var::from_tensor(&Tensor::randn(0f32, 1.0, (4, 8, 6, 6), &dev).unwrap()).unwrap();
    let r = Tensor::randn(0f32, 1.0, (4, 12, 6, 6), &dev).unwrap();
    let mut results = Vec::new();
    for fused in [true, false] {
        let (store, conv, bn) = build();
        let y = if fused {
            conv.forward_bn_act(x.as_tensor(), &bn, true, Some(&r), true)
        } else {
            bn.forward_act(&conv.forward(x.as_tensor()).unwrap(), true, Some(&r), true)
        }
        .unwrap();
        let grads = y.sqr().unwrap().sum_all().unwrap().backward().unwrap();
        let mut v = vec![to_f64(&y), to_f64(grads.get(x.as_tensor()).unwrap())];
        for p in store.iter() {
            v.push(to_f64(p.var.as_tensor()));
            if let Some(g) = grads.get(p.var.as_tensor()) {
                v.push(to_f64(g));
            }
        }
        results.push(v);
    }
    assert_eq!(results[0], results[1]);
}
