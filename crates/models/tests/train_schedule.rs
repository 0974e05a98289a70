//! Learning-rate schedules against `torch.optim.lr_scheduler` (PyTorch 2.x), base rate 0.1.
//!
//! The values were printed by this script (the rate of epoch e is read before the e-th `scheduler.step()`):
//!
//! ```python
//! import torch
//! def sched(mk, n):
//!     p = torch.nn.Parameter(torch.zeros(1))
//!     opt = torch.optim.SGD([p], lr=0.1)
//!     s = mk(opt)
//!     out = []
//!     for e in range(n):
//!         out.append(opt.param_groups[0]['lr'])
//!         opt.step(); s.step()
//!     return out
//! L = torch.optim.lr_scheduler
//! print("step", sched(lambda o: L.StepLR(o, step_size=3, gamma=0.1), 10))
//! print("multistep", sched(lambda o: L.MultiStepLR(o, milestones=[2, 5, 8], gamma=0.5), 10))
//! print("cosine", sched(lambda o: L.CosineAnnealingLR(o, T_max=5, eta_min=0.001), 12))
//! print("warmup_cosine", sched(lambda o: L.SequentialLR(o, [L.LinearLR(o, start_factor=0.25, total_iters=3),
//!       L.CosineAnnealingLR(o, T_max=6, eta_min=0.0)], milestones=[3]), 10))
//! ```

use deepcomp_models::{LrSchedule, ModelError, Schedule};

fn check(schedule: &Schedule, want: &[f64]) {
    schedule.validate(0.1).unwrap();
    for (e, &w) in want.iter().enumerate() {
        let got = schedule.lr_at(0.1, e);
        assert!(
            (got - w).abs() <= 1e-12 * (1.0 + w.abs()),
            "{schedule:?} epoch {e}: got {got}, want {w}"
        );
    }
}

#[test]
fn step_matches_pytorch() {
    check(
        &Schedule::new(LrSchedule::Step {
            step_size: 3,
            gamma: 0.1,
        }),
        &[
            0.1,
            0.1,
            0.1,
            0.010000000000000002,
            0.010000000000000002,
            0.010000000000000002,
            0.0010000000000000002,
            0.0010000000000000002,
            0.0010000000000000002,
            0.00010000000000000003,
        ],
    );
}

#[test]
fn multistep_matches_pytorch() {
    check(
        &Schedule::new(LrSchedule::MultiStep {
            milestones: vec![2, 5, 8],
            gamma: 0.5,
        }),
        &[
            0.1, 0.1, 0.05, 0.05, 0.05, 0.025, 0.025, 0.025, 0.0125, 0.0125,
        ],
    );
}

#[test]
fn cosine_matches_pytorch_including_past_t_max() {
    check(
        &Schedule::new(LrSchedule::Cosine {
            t_max: 5,
            eta_min: 0.001,
        }),
        &[
            0.1,
            0.0905463412215599,
            0.06579634122155989,
            0.035203658778440096,
            0.010453658778440105,
            0.001,
            0.010453658778440102,
            0.03520365877844012,
            0.06579634122155993,
            0.09054634122155995,
            0.10000000000000005,
            0.09054634122155998,
        ],
    );
}

#[test]
fn warmup_then_cosine_matches_sequential_lr() {
    check(
        &Schedule::new(LrSchedule::Cosine {
            t_max: 6,
            eta_min: 0.0,
        })
        .with_warmup(3, 0.25),
        &[
            0.025,
            0.05,
            0.07500000000000001,
            0.1,
            0.09330127018922195,
            0.07500000000000001,
            0.05,
            0.025000000000000012,
            0.006698729810778065,
            0.0,
        ],
    );
}

#[test]
fn constant_is_constant() {
    let s = Schedule::default();
    s.validate(0.03).unwrap();
    assert!((0..50).all(|e| s.lr_at(0.03, e) == 0.03));
}

#[test]
fn invalid_schedules_name_the_field() {
    let cases = [
        (
            Schedule::new(LrSchedule::Step {
                step_size: 0,
                gamma: 0.1,
            }),
            0.1,
            "schedule.step_size",
        ),
        (
            Schedule::new(LrSchedule::Step {
                step_size: 2,
                gamma: 0.0,
            }),
            0.1,
            "schedule.gamma",
        ),
        (
            Schedule::new(LrSchedule::MultiStep {
                milestones: vec![5, 3],
                gamma: 0.1,
            }),
            0.1,
            "schedule.milestones",
        ),
        (
            Schedule::new(LrSchedule::MultiStep {
                milestones: vec![3, 3],
                gamma: 0.1,
            }),
            0.1,
            "schedule.milestones",
        ),
        (
            Schedule::new(LrSchedule::MultiStep {
                milestones: vec![3],
                gamma: f64::NAN,
            }),
            0.1,
            "schedule.gamma",
        ),
        (
            Schedule::new(LrSchedule::Cosine {
                t_max: 0,
                eta_min: 0.0,
            }),
            0.1,
            "schedule.t_max",
        ),
        (
            Schedule::new(LrSchedule::Cosine {
                t_max: 5,
                eta_min: -1.0,
            }),
            0.1,
            "schedule.eta_min",
        ),
        (
            Schedule::default().with_warmup(0, 0.5),
            0.1,
            "schedule.warmup.epochs",
        ),
        (
            Schedule::default().with_warmup(2, 0.0),
            0.1,
            "schedule.warmup.start_factor",
        ),
        (
            Schedule::default().with_warmup(2, 1.5),
            0.1,
            "schedule.warmup.start_factor",
        ),
        (Schedule::default(), -0.1, "lr"),
        (Schedule::default(), f64::INFINITY, "lr"),
    ];
    for (s, lr, field) in cases {
        match s.validate(lr) {
            Err(ModelError::Config { field: f, reason }) => {
                assert_eq!(f, field, "{s:?}");
                assert!(!reason.is_empty());
            }
            other => panic!("{s:?}: expected an error on {field}, got {other:?}"),
        }
    }
}
