//! Learning-rate schedules, evaluated per epoch as PyTorch's `torch.optim.lr_scheduler` classes are when
//! `scheduler.step()` is called once at the end of every epoch.
//!
//! [`Schedule::lr_at`] is a closed form of the epoch index, so a run resumed at epoch `e` gets the same rate
//! as a run that went through epochs `0..e` (PyTorch's recursive forms agree with these closed forms to
//! rounding; the tests compare them with values printed by PyTorch 2.x):
//!
//! * constant ([`LrSchedule::Constant`]): `base`;
//! * step ([`LrSchedule::Step`], `StepLR`): `base · γ^⌊e / step_size⌋`;
//! * multi-step ([`LrSchedule::MultiStep`], `MultiStepLR`): `base · γ^(number of milestones ≤ e)`;
//! * cosine ([`LrSchedule::Cosine`], `CosineAnnealingLR`): `η_min + (base − η_min)·(1 + cos(π·e / T_max))/2`
//!   (past `T_max` it rises again, as PyTorch's does).
//!
//! An optional linear [`Warmup`] of `w` epochs first scales `base` from `start_factor` up to 1
//! (`LinearLR(start_factor, total_iters = w)`), then runs the main schedule from its epoch 0, exactly like
//! PyTorch's `SequentialLR([LinearLR, main], milestones = [w])`.
//!
//! The rate is constant within an epoch; there is no per-step (per-batch) variant.

use crate::error::{ModelError, Result};

/// The main schedule shape.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum LrSchedule {
    /// The base rate throughout.
    #[default]
    Constant,
    /// Multiply by `gamma` every `step_size` epochs.
    Step {
        /// Period in epochs (> 0).
        step_size: usize,
        /// Decay factor (finite, > 0).
        gamma: f64,
    },
    /// Multiply by `gamma` at each milestone epoch.
    MultiStep {
        /// Strictly increasing epoch indices.
        milestones: Vec<usize>,
        /// Decay factor (finite, > 0).
        gamma: f64,
    },
    /// Cosine annealing from the base rate to `eta_min` over `t_max` epochs.
    Cosine {
        /// Half period in epochs (> 0).
        t_max: usize,
        /// Minimum rate (finite, ≥ 0).
        eta_min: f64,
    },
}

/// Linear warmup before the main schedule.
#[derive(Debug, Clone, PartialEq)]
pub struct Warmup {
    /// Number of warmup epochs (> 0).
    pub epochs: usize,
    /// Factor of the base rate at epoch 0, in (0, 1].
    pub start_factor: f64,
}

/// A learning-rate schedule: optional warmup, then the main shape.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Schedule {
    /// The main schedule.
    pub kind: LrSchedule,
    /// Optional linear warmup in front of it.
    pub warmup: Option<Warmup>,
}

fn err(field: &str, reason: String) -> ModelError {
    ModelError::Config {
        field: field.to_string(),
        reason,
    }
}

impl Schedule {
    /// A schedule of shape `kind` without warmup.
    pub fn new(kind: LrSchedule) -> Self {
        Self { kind, warmup: None }
    }

    /// Adds a linear warmup of `epochs` epochs starting at `start_factor · base`.
    pub fn with_warmup(mut self, epochs: usize, start_factor: f64) -> Self {
        self.warmup = Some(Warmup {
            epochs,
            start_factor,
        });
        self
    }

    /// Checks the schedule against the base rate; the error names the offending field.
    pub fn validate(&self, base_lr: f64) -> Result<()> {
        if !(base_lr.is_finite() && base_lr >= 0.0) {
            return Err(err("lr", format!("must be finite and >= 0, got {base_lr}")));
        }
        let gamma_ok = |g: f64| g.is_finite() && g > 0.0;
        match &self.kind {
            LrSchedule::Constant => {}
            LrSchedule::Step { step_size, gamma } => {
                if *step_size == 0 {
                    return Err(err("schedule.step_size", "must be > 0".into()));
                }
                if !gamma_ok(*gamma) {
                    return Err(err(
                        "schedule.gamma",
                        format!("must be finite and > 0, got {gamma}"),
                    ));
                }
            }
            LrSchedule::MultiStep { milestones, gamma } => {
                if milestones.windows(2).any(|w| w[0] >= w[1]) {
                    return Err(err(
                        "schedule.milestones",
                        format!("must be strictly increasing, got {milestones:?}"),
                    ));
                }
                if !gamma_ok(*gamma) {
                    return Err(err(
                        "schedule.gamma",
                        format!("must be finite and > 0, got {gamma}"),
                    ));
                }
            }
            LrSchedule::Cosine { t_max, eta_min } => {
                if *t_max == 0 {
                    return Err(err("schedule.t_max", "must be > 0".into()));
                }
                if !(eta_min.is_finite() && *eta_min >= 0.0) {
                    return Err(err(
                        "schedule.eta_min",
                        format!("must be finite and >= 0, got {eta_min}"),
                    ));
                }
            }
        }
        if let Some(w) = &self.warmup {
            if w.epochs == 0 {
                return Err(err("schedule.warmup.epochs", "must be > 0".into()));
            }
            if !(w.start_factor > 0.0 && w.start_factor <= 1.0) {
                return Err(err(
                    "schedule.warmup.start_factor",
                    format!("must be in (0, 1], got {}", w.start_factor),
                ));
            }
        }
        Ok(())
    }

    /// The learning rate of 0-based `epoch` for base rate `base_lr` (assumes [`Schedule::validate`] passed).
    pub fn lr_at(&self, base_lr: f64, epoch: usize) -> f64 {
        let epoch = match &self.warmup {
            Some(w) if epoch < w.epochs => {
                let f = w.start_factor + (1.0 - w.start_factor) * epoch as f64 / w.epochs as f64;
                return base_lr * f;
            }
            Some(w) => epoch - w.epochs,
            None => epoch,
        };
        match &self.kind {
            LrSchedule::Constant => base_lr,
            LrSchedule::Step { step_size, gamma } => {
                base_lr * pow_count(*gamma, epoch / (*step_size).max(1))
            }
            LrSchedule::MultiStep { milestones, gamma } => {
                let passed = milestones.iter().filter(|&&m| m <= epoch).count();
                base_lr * pow_count(*gamma, passed)
            }
            LrSchedule::Cosine { t_max, eta_min } => {
                let phase = std::f64::consts::PI * epoch as f64 / (*t_max).max(1) as f64;
                eta_min + (base_lr - eta_min) * (1.0 + phase.cos()) / 2.0
            }
        }
    }
}

/// `gamma^n`, saturating the exponent (a rate after 2³¹ decays is 0 or ∞ either way).
fn pow_count(gamma: f64, n: usize) -> f64 {
    gamma.powi(i32::try_from(n).unwrap_or(i32::MAX))
}
