//! Pruning schedules: when to prune, to which sparsity, and whether pruned weights may
//! come back.
//!
//! Epochs are counted from 0. A pruning step "at epoch `e`" happens *before* epoch `e`
//! trains; targets are sparsity fractions in `[0, 1]` (turn one into a criterion with
//! [`crate::Criterion::with_target`]). A training loop does:
//!
//! ```text
//! for e in 0..schedule.total_epochs() {
//!     if let Some(step) = schedule.prune_at(e) {
//!         let prev = if step.from_scratch { None } else { masks.as_ref() };
//!         masks = compute_masks(weights, &criterion.with_target(step.target)?, prev, None)?;
//!         apply masks to the weights
//!     }
//!     train epoch e; after every optimizer step, unless schedule.allows_regrowth_at(e),
//!     apply the masks to weights, gradients and optimizer state
//! }
//! ```

use crate::error::{check_fraction, Result, SparsityError};

/// One round of a hand-made iterative schedule: prune to `target`, then train `epochs`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Round {
    /// Sparsity reached at the start of the round, in `[0, 1]`.
    pub target: f64,
    /// Finetuning epochs of the round, `>= 1`.
    pub epochs: usize,
}

/// What to do before one epoch.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PruneStep {
    /// Sparsity to reach, in `[0, 1]`.
    pub target: f64,
    /// `true`: recompute masks from the current weights alone (`prev = None`), so
    /// weights pruned earlier may come back; `false`: prune further inside the previous
    /// masks.
    pub from_scratch: bool,
}

/// A pruning schedule.
#[derive(Debug, Clone, PartialEq)]
pub enum Schedule {
    /// Prune once to `target` before epoch 0, then finetune `epochs` epochs.
    OneShot {
        /// Sparsity in `[0, 1]`.
        target: f64,
        /// Finetuning epochs, `>= 1`.
        epochs: usize,
    },
    /// A list of rounds as the seeds did by hand (e.g. 50 % for 3 epochs, then 70 %,
    /// then 80 %); targets must not decrease.
    Rounds(Vec<Round>),
    /// Seed 003's ramp: prune `per_epoch · (e + 1)` (capped at `max`) before epoch `e`
    /// (0-based; i.e. "8·e % before epoch e" counted from 1) until `max` is reached,
    /// then finetune `extra_epochs` more. Masks are recomputed from scratch at every
    /// step and not enforced before the final step, so weights may regrow until then.
    Linear {
        /// Sparsity added per epoch, in `(0, 1]`.
        per_epoch: f64,
        /// Final sparsity, in `(0, 1]`.
        max: f64,
        /// Finetuning epochs after the epoch of the final step.
        extra_epochs: usize,
    },
    /// Zhu & Gupta's automated gradual pruning: at `t = t0 + kΔt`, `k = 0..=n`,
    /// `s_t = s_f + (s_i − s_f)(1 − (t − t0)/(nΔt))³`. Masks only shrink.
    Agp {
        /// `s_i`, in `[0, 1]`.
        initial: f64,
        /// `s_f`, in `[initial, 1]`.
        final_: f64,
        /// `t0`: epoch of the first step.
        start_epoch: usize,
        /// `n`: number of steps after the first, `>= 1`.
        steps: usize,
        /// `Δt`: epochs between steps, `>= 1`.
        frequency: usize,
        /// Finetuning epochs after the epoch of the final step.
        extra_epochs: usize,
    },
}

/// Number of ramp epochs of a linear schedule: the smallest `k` with
/// `per_epoch · k >= max` (up to rounding, so 0.8 / 0.08 gives 10).
fn linear_ramp(per_epoch: f64, max: f64) -> usize {
    if !(per_epoch > 0.0 && max > 0.0) {
        return 0;
    }
    let ratio = max / per_epoch;
    let r = ratio.round();
    let k = if (ratio - r).abs() <= 1e-9 * r.max(1.0) {
        r
    } else {
        ratio.ceil()
    };
    // `as` saturates for huge values; validate() rejects those schedules anyway.
    k as usize
}

fn positive(field: &'static str, v: usize) -> Result<()> {
    if v == 0 {
        Err(SparsityError::InvalidParameter {
            field,
            value: "0".into(),
            reason: "must be at least 1",
        })
    } else {
        Ok(())
    }
}

/// Longest schedule accepted, to keep loops over epochs finite in practice.
pub const MAX_EPOCHS: usize = 1_000_000;

impl Schedule {
    /// Checks the schedule: targets in `[0, 1]`, non-decreasing targets, epoch counts
    /// and frequencies `>= 1`, `per_epoch` and `max` in `(0, 1]`, and at most
    /// [`MAX_EPOCHS`] epochs in all.
    pub fn validate(&self) -> Result<()> {
        match self {
            Schedule::OneShot { target, epochs } => {
                check_fraction("Schedule::OneShot.target", *target)?;
                positive("Schedule::OneShot.epochs", *epochs)?;
            }
            Schedule::Rounds(rounds) => {
                if rounds.is_empty() {
                    return Err(SparsityError::InvalidParameter {
                        field: "Schedule::Rounds",
                        value: "[]".into(),
                        reason: "needs at least one round",
                    });
                }
                let mut previous = 0.0;
                for (index, r) in rounds.iter().enumerate() {
                    check_fraction("Schedule::Rounds[].target", r.target)?;
                    positive("Schedule::Rounds[].epochs", r.epochs)?;
                    if r.target < previous {
                        return Err(SparsityError::DecreasingSchedule {
                            index,
                            previous,
                            target: r.target,
                        });
                    }
                    previous = r.target;
                }
            }
            Schedule::Linear { per_epoch, max, .. } => {
                for (field, v) in [
                    ("Schedule::Linear.per_epoch", *per_epoch),
                    ("Schedule::Linear.max", *max),
                ] {
                    check_fraction(field, v)?;
                    if v <= 0.0 {
                        return Err(SparsityError::InvalidParameter {
                            field,
                            value: v.to_string(),
                            reason: "must be > 0 (a ramp that never prunes)",
                        });
                    }
                }
            }
            Schedule::Agp {
                initial,
                final_,
                steps,
                frequency,
                ..
            } => {
                check_fraction("Schedule::Agp.initial", *initial)?;
                check_fraction("Schedule::Agp.final_", *final_)?;
                if final_ < initial {
                    return Err(SparsityError::DecreasingSchedule {
                        index: 1,
                        previous: *initial,
                        target: *final_,
                    });
                }
                positive("Schedule::Agp.steps", *steps)?;
                positive("Schedule::Agp.frequency", *frequency)?;
            }
        }
        let total = self.total_epochs();
        if total > MAX_EPOCHS {
            return Err(SparsityError::InvalidParameter {
                field: "schedule total epochs",
                value: total.to_string(),
                reason: "exceeds MAX_EPOCHS (1000000)",
            });
        }
        Ok(())
    }

    /// Number of epochs the schedule spans (pruning plus finetuning).
    pub fn total_epochs(&self) -> usize {
        match self {
            Schedule::OneShot { epochs, .. } => *epochs,
            Schedule::Rounds(rounds) => rounds
                .iter()
                .fold(0usize, |acc, r| acc.saturating_add(r.epochs)),
            Schedule::Linear {
                per_epoch,
                max,
                extra_epochs,
            } => linear_ramp(*per_epoch, *max).saturating_add(*extra_epochs),
            Schedule::Agp {
                start_epoch,
                steps,
                frequency,
                extra_epochs,
                ..
            } => start_epoch
                .saturating_add(steps.saturating_mul(*frequency))
                .saturating_add(1)
                .saturating_add(*extra_epochs),
        }
    }

    /// The pruning step before epoch `epoch`, if there is one.
    pub fn prune_at(&self, epoch: usize) -> Option<PruneStep> {
        match self {
            Schedule::OneShot { target, .. } => (epoch == 0).then_some(PruneStep {
                target: *target,
                from_scratch: false,
            }),
            Schedule::Rounds(rounds) => {
                let mut start = 0usize;
                for r in rounds {
                    if start == epoch {
                        return Some(PruneStep {
                            target: r.target,
                            from_scratch: false,
                        });
                    }
                    if start > epoch {
                        break;
                    }
                    start = start.saturating_add(r.epochs);
                }
                None
            }
            Schedule::Linear { per_epoch, max, .. } => (epoch < linear_ramp(*per_epoch, *max))
                .then(|| PruneStep {
                    target: (per_epoch * (epoch as f64 + 1.0)).min(*max),
                    from_scratch: true,
                }),
            Schedule::Agp {
                initial,
                final_,
                start_epoch,
                steps,
                frequency,
                ..
            } => {
                let since = epoch.checked_sub(*start_epoch)?;
                if *frequency == 0 || *steps == 0 || since % frequency != 0 {
                    return None;
                }
                let k = since / frequency;
                (k <= *steps).then(|| PruneStep {
                    target: agp_value(*initial, *final_, k, *steps),
                    from_scratch: false,
                })
            }
        }
    }

    /// The sparsity in force during epoch `epoch`: the target of the latest pruning
    /// step at or before it (0.0 before the first step; the final target after the
    /// end).
    pub fn target_at(&self, epoch: usize) -> f64 {
        match self {
            Schedule::OneShot { target, .. } => *target,
            Schedule::Rounds(rounds) => {
                let mut start = 0usize;
                let mut current = 0.0;
                for r in rounds {
                    if start > epoch {
                        break;
                    }
                    current = r.target;
                    start = start.saturating_add(r.epochs);
                }
                current
            }
            Schedule::Linear { per_epoch, max, .. } => {
                let ramp = linear_ramp(*per_epoch, *max);
                if ramp == 0 {
                    0.0
                } else {
                    (per_epoch * (epoch.min(ramp - 1) as f64 + 1.0)).min(*max)
                }
            }
            Schedule::Agp {
                initial,
                final_,
                start_epoch,
                steps,
                frequency,
                ..
            } => match epoch.checked_sub(*start_epoch) {
                None => 0.0,
                Some(_) if *frequency == 0 || *steps == 0 => *final_,
                Some(since) => {
                    agp_value(*initial, *final_, (since / frequency).min(*steps), *steps)
                }
            },
        }
    }

    /// The sparsity reached at the end of the schedule.
    pub fn final_target(&self) -> f64 {
        self.target_at(self.total_epochs().saturating_sub(1))
    }

    /// `true` when the masks are provisional during `epoch`: pruned weights stay
    /// trainable and may regrow before the next (from-scratch) step. Only the linear
    /// ramp allows this, before the epoch of its final step; from then on, and for every
    /// other schedule at every epoch, the masked-finetune contract holds (pruned
    /// weights, gradients and optimizer state are exactly 0 after every step).
    pub fn allows_regrowth_at(&self, epoch: usize) -> bool {
        match self {
            Schedule::Linear { per_epoch, max, .. } => {
                epoch.saturating_add(1) < linear_ramp(*per_epoch, *max)
            }
            _ => false,
        }
    }
}

/// AGP's cubic: `s_f + (s_i − s_f)(1 − k/n)³` for step `k` of `n`.
fn agp_value(initial: f64, final_: f64, k: usize, n: usize) -> f64 {
    if n == 0 {
        return final_;
    }
    let frac = 1.0 - k as f64 / n as f64;
    final_ + (initial - final_) * frac * frac * frac
}
