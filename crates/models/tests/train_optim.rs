//! Optimizer updates against golden values computed with PyTorch 2.x (CPU, float32).
//!
//! The values were printed by this script (shared by the SGD and AdamW tests):
//!
//! ```python
//! import torch
//! w0 = [[0.5, -1.25, 2.0], [0.1, -0.3, 0.75]]
//! gs = [[[0.2, -0.1, 0.4], [-0.5, 0.3, 0.05]],
//!       [[-0.3, 0.25, 0.1], [0.2, -0.6, 0.45]],
//!       [[0.05, 0.15, -0.2], [0.1, 0.0, -0.35]]]
//! def run(opt_fn, steps):
//!     p = torch.nn.Parameter(torch.tensor(w0, dtype=torch.float32))
//!     opt = opt_fn([p])
//!     for g in gs[:steps]:
//!         p.grad = torch.tensor(g, dtype=torch.float32)
//!         opt.step()
//!     return p, opt.state[p]
//! for (m, n, wd) in [(0.9, False, 0.0), (0.9, True, 0.0), (0.9, False, 0.01), (0.9, True, 0.05)]:
//!     p, st = run(lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=m, nesterov=n, weight_decay=wd), 2)
//!     print("sgd", m, n, wd, p.detach().flatten().tolist(), st['momentum_buffer'].flatten().tolist())
//! p, st = run(lambda ps: torch.optim.AdamW(ps, lr=0.01, weight_decay=0.01), 3)
//! print("adamw", p.detach().flatten().tolist(), st['exp_avg'].flatten().tolist(),
//!       st['exp_avg_sq'].flatten().tolist(), float(st['step']))
//! ```

mod train_util;

use candle_core::{Device, Tensor, Var};
use deepcomp_models::{
    AdamW, AdamWConfig, LayerKind, ModelError, Optimizer, OptimizerConfig, ParamRole, ParamStore,
    Sgd, SgdConfig,
};
use train_util::{assert_close, values};

const W0: [f32; 6] = [0.5, -1.25, 2.0, 0.1, -0.3, 0.75];
const GRADS: [[f32; 6]; 3] = [
    [0.2, -0.1, 0.4, -0.5, 0.3, 0.05],
    [-0.3, 0.25, 0.1, 0.2, -0.6, 0.45],
    [0.05, 0.15, -0.2, 0.1, 0.0, -0.35],
];

/// A store with one (2, 3) weight `w` (and a bias `b` with the same values for the decay-skip test).
fn store() -> (ParamStore, Var, Var) {
    let w = Var::from_tensor(&Tensor::from_slice(&W0, (2, 3), &Device::Cpu).unwrap()).unwrap();
    let b = Var::from_tensor(&Tensor::from_slice(&W0, 6, &Device::Cpu).unwrap()).unwrap();
    let mut s = ParamStore::new();
    s.push("w", ParamRole::Weight(LayerKind::Fc), w.clone())
        .unwrap();
    s.push("b", ParamRole::Bias, b.clone()).unwrap();
    (s, w, b)
}

/// Runs `steps` optimizer steps in which the gradient of every parameter is exactly `GRADS[k]`
/// (the loss is Σ p·G, whose gradient is G).
fn run(opt: &mut dyn Optimizer, steps: usize) -> (Var, Var, ParamStore) {
    let (s, w, b) = store();
    for g in GRADS.iter().take(steps) {
        let gw = Tensor::from_slice(g, (2, 3), &Device::Cpu).unwrap();
        let gb = Tensor::from_slice(g, 6, &Device::Cpu).unwrap();
        let loss = ((w.as_tensor() * &gw).unwrap().sum_all().unwrap()
            + (b.as_tensor() * &gb).unwrap().sum_all().unwrap())
        .unwrap();
        let grads = loss.backward().unwrap();
        opt.step(&s, &grads).unwrap();
    }
    (w, b, s)
}

struct SgdCase {
    nesterov: bool,
    wd: f64,
    w: [f64; 6],
    buf: [f64; 6],
}

const SGD_CASES: [SgdCase; 4] = [
    SgdCase {
        nesterov: false,
        wd: 0.0,
        w: [
            0.4919999837875366,
            -1.25600004196167,
            1.9140000343322754,
            0.17500001192092896,
            -0.2970000207424164,
            0.6955000162124634,
        ],
        buf: [
            -0.12000001966953278,
            0.1599999964237213,
            0.4599999785423279,
            -0.2499999850988388,
            -0.33000001311302185,
            0.4949999749660492,
        ],
    },
    SgdCase {
        nesterov: true,
        wd: 0.0,
        w: [
            0.5027999877929688,
            -1.2703999280929565,
            1.8726000785827637,
            0.19750000536441803,
            -0.267300009727478,
            0.6509499549865723,
        ],
        buf: [
            -0.12000001966953278,
            0.1599999964237213,
            0.4599999785423279,
            -0.2499999850988388,
            -0.33000001311302185,
            0.4949999749660492,
        ],
    },
    SgdCase {
        nesterov: false,
        wd: 0.01,
        w: [
            0.4905704855918884,
            -1.252386212348938,
            1.9082419872283936,
            0.1746601015329361,
            -0.29610031843185425,
            0.6933307647705078,
        ],
        buf: [
            -0.11070503294467926,
            0.1363624930381775,
            0.49757999181747437,
            -0.2476009875535965,
            -0.33599698543548584,
            0.5091924667358398,
        ],
    },
    SgdCase {
        nesterov: true,
        wd: 0.05,
        w: [
            0.49168112874031067,
            -1.2418808937072754,
            1.8274024724960327,
            0.1943015158176422,
            -0.2598705589771271,
            0.6338204741477966,
        ],
        buf: [
            -0.0746375173330307,
            0.04279373586177826,
            0.6452499628067017,
            -0.2357974797487259,
            -0.3612075746059418,
            0.5654187202453613,
        ],
    },
];

#[test]
fn sgd_momentum_two_steps_match_pytorch() {
    for case in &SGD_CASES {
        for fused in [true, false] {
            let cfg = SgdConfig {
                lr: 0.1,
                momentum: 0.9,
                nesterov: case.nesterov,
                weight_decay: case.wd,
                decay_bias_and_norm: true,
                fused,
            };
            let mut opt = Sgd::new(cfg).unwrap();
            let (w, b, _) = run(&mut opt, 2);
            let what = format!("nesterov={} wd={} fused={fused}", case.nesterov, case.wd);
            assert_close(&format!("w {what}"), &values(w.as_tensor()), &case.w, 2e-7);
            // The bias sees the same gradients and decays too (decay_bias_and_norm = true).
            assert_close(&format!("b {what}"), &values(b.as_tensor()), &case.w, 2e-7);
            let buf = opt.momentum_buffer("w").expect("momentum buffer");
            assert_close(&format!("buf {what}"), &values(buf), &case.buf, 2e-7);
            assert_eq!(opt.steps(), 2);
        }
    }
}

#[test]
fn fused_and_tensor_op_sgd_paths_agree_bitwise() {
    for case in &SGD_CASES {
        let mk = |fused| {
            Sgd::new(SgdConfig {
                lr: 0.1,
                momentum: 0.9,
                nesterov: case.nesterov,
                weight_decay: case.wd,
                decay_bias_and_norm: true,
                fused,
            })
            .unwrap()
        };
        let (mut a, mut b) = (mk(true), mk(false));
        let (wa, _, _) = run(&mut a, 3);
        let (wb, _, _) = run(&mut b, 3);
        assert_eq!(values(wa.as_tensor()), values(wb.as_tensor()));
    }
}

#[test]
fn sgd_without_momentum_is_plain_gradient_descent() {
    for fused in [true, false] {
        let mut opt = Sgd::new(SgdConfig {
            lr: 0.5,
            momentum: 0.0,
            nesterov: false,
            weight_decay: 0.1,
            decay_bias_and_norm: true,
            fused,
        })
        .unwrap();
        let (w, _, _) = run(&mut opt, 1);
        let want: Vec<f64> = W0
            .iter()
            .zip(GRADS[0])
            .map(|(&w, g)| (w - 0.5f32 * (g + 0.1f32 * w)) as f64)
            .collect();
        assert_close("plain sgd", &values(w.as_tensor()), &want, 0.0);
        assert!(opt.momentum_buffer("w").is_none());
        assert!(opt.state().unwrap().is_empty());
    }
}

#[test]
fn weight_decay_can_skip_biases() {
    let mut opt = Sgd::new(SgdConfig {
        lr: 0.1,
        momentum: 0.9,
        nesterov: false,
        weight_decay: 0.01,
        decay_bias_and_norm: false,
        fused: true,
    })
    .unwrap();
    let (w, b, _) = run(&mut opt, 2);
    // The weight decays (PyTorch wd = 0.01 values), the bias follows the wd = 0 trajectory.
    assert_close("w", &values(w.as_tensor()), &SGD_CASES[2].w, 2e-7);
    assert_close("b", &values(b.as_tensor()), &SGD_CASES[0].w, 2e-7);
}

const ADAMW_W: [f64; 6] = [
    0.49334731698036194,
    -1.2501447200775146,
    1.9781113862991333,
    0.11488290131092072,
    -0.3034173250198364,
    0.7305759191513062,
];
const ADAMW_M: [f64; 6] = [
    -0.005800000857561827,
    0.029400000348687172,
    0.021400002762675285,
    -0.012500000186264515,
    -0.02969999983906746,
    0.009550000540912151,
];
const ADAMW_V: [f64; 6] = [
    0.00013233005302026868,
    9.491751552559435e-05,
    0.00020967017917428166,
    0.0002994602546095848,
    0.0004494601162150502,
    0.00032729250960983336,
];

#[test]
fn adamw_three_steps_match_pytorch() {
    for fused in [true, false] {
        let mut opt = AdamW::new(AdamWConfig {
            lr: 0.01,
            fused,
            ..AdamWConfig::default()
        })
        .unwrap();
        let (w, _, _) = run(&mut opt, 3);
        assert_close(
            &format!("w fused={fused}"),
            &values(w.as_tensor()),
            &ADAMW_W,
            2e-7,
        );
        let (m, v, t) = opt.moments("w").expect("adam state");
        assert_close("exp_avg", &values(m), &ADAMW_M, 2e-7);
        assert_close("exp_avg_sq", &values(v), &ADAMW_V, 2e-7);
        assert_eq!(t, 3);
    }
}

#[test]
fn state_round_trips_and_resumes_identically() {
    for config in [
        OptimizerConfig::Sgd(SgdConfig {
            lr: 0.1,
            nesterov: true,
            weight_decay: 0.05,
            ..SgdConfig::default()
        }),
        OptimizerConfig::AdamW(AdamWConfig {
            lr: 0.01,
            ..AdamWConfig::default()
        }),
    ] {
        // Reference: three straight steps.
        let mut straight = config.build().unwrap();
        let (w_ref, _, _) = run(straight.as_mut(), 3);

        // Two steps, export, import into a fresh optimizer over fresh parameters holding the same values,
        // then the third step.
        let mut first = config.build().unwrap();
        let (w1, b1, _) = run(first.as_mut(), 2);
        let state = first.state().unwrap();
        assert!(
            state.windows(2).all(|p| p[0].0 < p[1].0),
            "state is sorted by name"
        );
        let (s2, w2, b2) = store();
        w2.set(w1.as_tensor()).unwrap();
        b2.set(b1.as_tensor()).unwrap();
        let mut second = config.build().unwrap();
        second.load_state(&s2, &state, first.steps()).unwrap();
        assert_eq!(second.steps(), 2);
        let gw = Tensor::from_slice(&GRADS[2], (2, 3), &Device::Cpu).unwrap();
        let gb = Tensor::from_slice(&GRADS[2], 6, &Device::Cpu).unwrap();
        let loss = ((w2.as_tensor() * &gw).unwrap().sum_all().unwrap()
            + (b2.as_tensor() * &gb).unwrap().sum_all().unwrap())
        .unwrap();
        second.step(&s2, &loss.backward().unwrap()).unwrap();
        assert_eq!(
            values(w2.as_tensor()),
            values(w_ref.as_tensor()),
            "{}",
            config.kind()
        );

        // The exported copies are not views of the live state.
        let before: Vec<Vec<f32>> = state.iter().map(|(_, t)| values(t)).collect();
        run(first.as_mut(), 1);
        let after: Vec<Vec<f32>> = state.iter().map(|(_, t)| values(t)).collect();
        assert_eq!(before, after);
    }
}

#[test]
fn load_state_rejects_bad_entries() {
    let (s, _, _) = store();
    let mut sgd = Sgd::new(SgdConfig::default()).unwrap();
    let t = Tensor::zeros((2, 3), candle_core::DType::F32, &Device::Cpu).unwrap();
    let err = sgd
        .load_state(&s, &[("exp_avg.w".into(), t.clone())], 0)
        .unwrap_err();
    assert!(err.to_string().contains("exp_avg"), "{err}");
    let err = sgd
        .load_state(&s, &[("momentum_buffer.nope".into(), t.clone())], 0)
        .unwrap_err();
    assert!(
        matches!(err, ModelError::UnknownParam(ref n) if n == "nope"),
        "{err}"
    );
    let err = sgd
        .load_state(&s, &[("momentum_buffer.b".into(), t.clone())], 0)
        .unwrap_err();
    assert!(matches!(err, ModelError::Shape { .. }), "{err}");
    let err = sgd
        .load_state(&s, &[("garbage".into(), t.clone())], 0)
        .unwrap_err();
    assert!(err.to_string().contains("<slot>.<param>"), "{err}");
    let mut adam = AdamW::new(AdamWConfig::default()).unwrap();
    let err = adam
        .load_state(&s, &[("exp_avg.w".into(), t)], 0)
        .unwrap_err();
    assert!(err.to_string().contains("together"), "{err}");
}

#[test]
fn mask_state_zeroes_masked_entries() {
    let mask = Tensor::from_slice(&[1u8, 0, 1, 0, 0, 1], (2, 3), &Device::Cpu).unwrap();
    for config in [
        OptimizerConfig::Sgd(SgdConfig {
            lr: 0.1,
            ..SgdConfig::default()
        }),
        OptimizerConfig::AdamW(AdamWConfig::default()),
    ] {
        let mut opt = config.build().unwrap();
        // Before any step there is no state: nothing to mask, no error.
        opt.mask_state("w", &mask).unwrap();
        run(opt.as_mut(), 2);
        opt.mask_state("w", &mask).unwrap();
        for (name, t) in opt.state().unwrap() {
            if name.ends_with(".w") && !name.starts_with("step.") {
                let v = values(&t);
                for i in [1, 3, 4] {
                    assert_eq!(v[i], 0.0, "{name}[{i}]");
                }
                assert!(
                    v[0] != 0.0 && v[2] != 0.0 && v[5] != 0.0,
                    "{name}: kept entries survive"
                );
            }
        }
        let wrong = Tensor::ones(4, candle_core::DType::U8, &Device::Cpu).unwrap();
        assert!(matches!(
            opt.mask_state("w", &wrong),
            Err(ModelError::Shape { .. })
        ));
    }
}

#[test]
fn invalid_hyperparameters_name_the_field() {
    let cases: Vec<(OptimizerConfig, &str)> = vec![
        (
            OptimizerConfig::Sgd(SgdConfig {
                lr: -1.0,
                ..SgdConfig::default()
            }),
            "sgd.lr",
        ),
        (
            OptimizerConfig::Sgd(SgdConfig {
                lr: f64::NAN,
                ..SgdConfig::default()
            }),
            "sgd.lr",
        ),
        (
            OptimizerConfig::Sgd(SgdConfig {
                momentum: -0.1,
                ..SgdConfig::default()
            }),
            "sgd.momentum",
        ),
        (
            OptimizerConfig::Sgd(SgdConfig {
                momentum: 0.0,
                nesterov: true,
                ..SgdConfig::default()
            }),
            "sgd.nesterov",
        ),
        (
            OptimizerConfig::Sgd(SgdConfig {
                weight_decay: -1e-4,
                ..SgdConfig::default()
            }),
            "sgd.weight_decay",
        ),
        (
            OptimizerConfig::AdamW(AdamWConfig {
                beta1: 1.0,
                ..AdamWConfig::default()
            }),
            "adamw.beta1",
        ),
        (
            OptimizerConfig::AdamW(AdamWConfig {
                beta2: -0.5,
                ..AdamWConfig::default()
            }),
            "adamw.beta2",
        ),
        (
            OptimizerConfig::AdamW(AdamWConfig {
                eps: f64::INFINITY,
                ..AdamWConfig::default()
            }),
            "adamw.eps",
        ),
    ];
    for (cfg, field) in cases {
        match cfg.build() {
            Err(ModelError::Config { field: f, .. }) => assert_eq!(f, field),
            other => panic!("{field}: expected a config error, got {other:?}"),
        }
    }
}
