//! Schedules: values at chosen epochs, regrowth flags and validation.

use deepcomp_sparsity::{PruneStep, Round, Schedule, SparsityError};

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-12
}

#[test]
fn linear_ramp_is_seed_003() {
    // Seed 003 Lab 2(d): prune 8·e % before epoch e (e = 1..10), reach 80 %, then finetune 10.
    let s = Schedule::Linear {
        per_epoch: 0.08,
        max: 0.8,
        extra_epochs: 10,
    };
    s.validate().unwrap();
    assert_eq!(s.total_epochs(), 20);
    for e in 0..10 {
        let step = s.prune_at(e).expect("a step before every ramp epoch");
        assert!(
            close(step.target, 0.08 * (e as f64 + 1.0)),
            "epoch {e}: {}",
            step.target
        );
        assert!(step.from_scratch);
        assert!(close(s.target_at(e), step.target));
    }
    assert!(close(s.target_at(9), 0.8));
    for e in 10..25 {
        assert!(s.prune_at(e).is_none());
        assert!(close(s.target_at(e), 0.8));
    }
    // Regrowth allowed while the masks are provisional, i.e. before the final step's epoch.
    assert!((0..9).all(|e| s.allows_regrowth_at(e)));
    assert!((9..20).all(|e| !s.allows_regrowth_at(e)));
    assert!(close(s.final_target(), 0.8));
    // A max that is not a multiple of per_epoch is capped at the last step.
    let c = Schedule::Linear {
        per_epoch: 0.3,
        max: 0.8,
        extra_epochs: 0,
    };
    assert_eq!(c.total_epochs(), 3);
    assert!(close(c.target_at(1), 0.6) && close(c.target_at(2), 0.8));
}

// [0.9 + (0 - 0.9) * (1 - (t - 2) / (4 * 2))**3 for t in (2, 4, 6, 8, 10)]
// -> [0.0, 0.5203125, 0.7875, 0.8859375, 0.9]
#[test]
fn agp_follows_the_cubic() {
    let s = Schedule::Agp {
        initial: 0.0,
        final_: 0.9,
        start_epoch: 2,
        steps: 4,
        frequency: 2,
        extra_epochs: 3,
    };
    s.validate().unwrap();
    assert_eq!(s.total_epochs(), 14);
    let expected = [0.0, 0.5203125, 0.7875, 0.8859375, 0.9];
    for (k, want) in expected.iter().enumerate() {
        let t = 2 + 2 * k;
        let step = s.prune_at(t).unwrap();
        assert!(close(step.target, *want), "t={t}: {}", step.target);
        assert!(!step.from_scratch);
        assert!(s.prune_at(t + 1).is_none());
        assert!(close(s.target_at(t + 1), *want));
    }
    assert!(s.prune_at(0).is_none() && s.prune_at(12).is_none());
    assert!(close(s.target_at(0), 0.0));
    assert!(close(s.target_at(13), 0.9));
    assert!((0..14).all(|e| !s.allows_regrowth_at(e)));
    // The general formula with s_i > 0.
    let s2 = Schedule::Agp {
        initial: 0.5,
        final_: 0.8,
        start_epoch: 0,
        steps: 3,
        frequency: 1,
        extra_epochs: 0,
    };
    // 0.8 + (0.5 - 0.8) * (1 - 1/3)**3 = 0.7111111111111111
    assert!((s2.target_at(1) - 0.711_111_111_111_111_1).abs() < 1e-12);
}

#[test]
fn rounds_and_one_shot() {
    let s = Schedule::Rounds(vec![
        Round {
            target: 0.5,
            epochs: 3,
        },
        Round {
            target: 0.7,
            epochs: 2,
        },
        Round {
            target: 0.7,
            epochs: 1,
        },
        Round {
            target: 0.9,
            epochs: 4,
        },
    ]);
    s.validate().unwrap();
    assert_eq!(s.total_epochs(), 10);
    let steps: Vec<(usize, PruneStep)> = (0..10)
        .filter_map(|e| s.prune_at(e).map(|p| (e, p)))
        .collect();
    let epochs: Vec<usize> = steps.iter().map(|(e, _)| *e).collect();
    assert_eq!(epochs, vec![0, 3, 5, 6]);
    assert!(steps.iter().all(|(_, p)| !p.from_scratch));
    let targets: Vec<f64> = (0..11).map(|e| s.target_at(e)).collect();
    assert_eq!(
        targets,
        vec![0.5, 0.5, 0.5, 0.7, 0.7, 0.7, 0.9, 0.9, 0.9, 0.9, 0.9]
    );
    let o = Schedule::OneShot {
        target: 0.65,
        epochs: 20,
    };
    o.validate().unwrap();
    assert_eq!(o.total_epochs(), 20);
    assert_eq!(
        o.prune_at(0),
        Some(PruneStep {
            target: 0.65,
            from_scratch: false
        })
    );
    assert!(o.prune_at(1).is_none());
    assert!(close(o.target_at(19), 0.65));
}

#[test]
fn nonsense_schedules_are_rejected() {
    let dec = Schedule::Rounds(vec![
        Round {
            target: 0.8,
            epochs: 2,
        },
        Round {
            target: 0.6,
            epochs: 2,
        },
    ]);
    let e = dec.validate().unwrap_err();
    assert!(
        matches!(e, SparsityError::DecreasingSchedule { index: 1, .. }),
        "{e}"
    );
    let agp = Schedule::Agp {
        initial: 0.9,
        final_: 0.5,
        start_epoch: 0,
        steps: 2,
        frequency: 1,
        extra_epochs: 0,
    };
    assert!(matches!(
        agp.validate().unwrap_err(),
        SparsityError::DecreasingSchedule { .. }
    ));
    let bad = [
        Schedule::OneShot {
            target: 1.2,
            epochs: 1,
        },
        Schedule::OneShot {
            target: 0.5,
            epochs: 0,
        },
        Schedule::Rounds(vec![]),
        Schedule::Rounds(vec![Round {
            target: f64::NAN,
            epochs: 1,
        }]),
        Schedule::Linear {
            per_epoch: 0.0,
            max: 0.8,
            extra_epochs: 1,
        },
        Schedule::Linear {
            per_epoch: 0.1,
            max: -0.1,
            extra_epochs: 1,
        },
        Schedule::Linear {
            per_epoch: 1e-9,
            max: 0.9,
            extra_epochs: 0,
        },
        Schedule::Agp {
            initial: 0.0,
            final_: 0.5,
            start_epoch: 0,
            steps: 0,
            frequency: 1,
            extra_epochs: 0,
        },
        Schedule::Agp {
            initial: 0.0,
            final_: 0.5,
            start_epoch: 0,
            steps: 3,
            frequency: 0,
            extra_epochs: 0,
        },
    ];
    for s in bad {
        assert!(s.validate().is_err(), "{s:?} accepted");
        // Queries on an invalid schedule still answer without panicking.
        let _ = (
            s.total_epochs(),
            s.target_at(3),
            s.prune_at(3),
            s.allows_regrowth_at(3),
        );
    }
}
