//! Pruning criteria: which weights to drop, computed per named weight.
//!
//! # Semantics (matching the seeds' PyTorch/numpy code)
//!
//! * **Percentile** (`prune_by_percentage`): `threshold = np.percentile(|w|, q)` with
//!   numpy's default `linear` method, computed exactly as numpy does for a `float32`
//!   array and a Python-float `q` (see [`numpy_percentile`]); keep `|w| >= threshold`.
//!   Because of the `>=`, `q = 100` keeps the largest magnitude(s) and ties at the
//!   threshold survive, so the achieved sparsity can be slightly below `q`.
//! * **Std** (`prune_by_std`, Han's rule): `threshold = s * torch.std(w)` (unbiased,
//!   `n - 1`, over the *signed* weights, product formed in `f32`); keep `|w| >= threshold`.
//! * **Global**: one `np.percentile` over the magnitudes of all selected layers together;
//!   every layer keeps `|w| >= threshold`.
//! * **Random**: a baseline that prunes `round(q/100 · n)` uniformly chosen elements per
//!   layer, from a ChaCha8 stream seeded by `seed` and the layer name.
//! * **PerLayerPercentile**: the percentile rule with a separate `q` per layer (e.g.
//!   chosen from a [`crate::SensitivityTable`]).
//!
//! # Iterative pruning (a previous mask is given)
//!
//! Criteria only ever look at the *surviving* weights of the previous mask, and the new
//! mask is always a subset of the previous one (nothing is revived; a schedule that
//! allows regrowth passes `prev = None` instead). The targets stay *overall* targets:
//!
//! * Percentile / Global / Random with target `q` on a layer (or, for Global, on all
//!   selected layers) of `n` elements of which `p` are already pruned and `m = n - p`
//!   survive: `q' = 100 · (q/100 · n - p) / m`, clamped to at most 100, is applied to the
//!   survivors. If `q/100 · n <= p` the previous mask is kept as is. Random prunes
//!   `round(q/100 · n) - p` more survivors. So re-applying the same `q` after finetuning
//!   prunes nothing more, and raising `q` from 50 to 80 removes 30 % of the layer.
//! * Std: the standard deviation is computed over the surviving (signed) weights, and
//!   survivors below `s · std` are pruned (Han et al.'s iterative rule). With fewer than
//!   two survivors the std is undefined and the previous mask is kept.
//!
//! Without a previous mask all rules see the full layer, which is exactly the seeds' code.

use std::collections::{BTreeMap, BTreeSet};

use candle_core::{DType, Tensor};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::error::{check_fraction, check_percentile, Result, SparsityError};
use crate::mask::{Mask, MaskSet};

/// A rule that decides which weights to prune. See the module docs for exact semantics.
#[derive(Debug, Clone, PartialEq)]
pub enum Criterion {
    /// Per layer, prune magnitudes below the `q`-th percentile (`q` in `[0, 100]`).
    Percentile {
        /// Pruning percentile in `[0, 100]`.
        q: f64,
    },
    /// Per layer, prune magnitudes below `s` times the layer's standard deviation.
    Std {
        /// Factor of the standard deviation, `>= 0`.
        s: f64,
    },
    /// One percentile threshold over all selected layers' magnitudes.
    Global {
        /// Pruning percentile in `[0, 100]`.
        q: f64,
    },
    /// Prune `q` percent of each layer uniformly at random (a baseline).
    Random {
        /// Pruning percentage in `[0, 100]`.
        q: f64,
        /// Seed of the ChaCha8 stream (mixed with the layer name).
        seed: u64,
    },
    /// The percentile rule with one `q` per layer; layers not listed are left as they are.
    PerLayerPercentile {
        /// Percentile per layer name, each in `[0, 100]`.
        q: BTreeMap<String, f64>,
    },
}

impl Criterion {
    /// A short name (`percentile`, `std`, `global`, `random`, `per-layer`).
    pub fn name(&self) -> &'static str {
        match self {
            Criterion::Percentile { .. } => "percentile",
            Criterion::Std { .. } => "std",
            Criterion::Global { .. } => "global",
            Criterion::Random { .. } => "random",
            Criterion::PerLayerPercentile { .. } => "per-layer",
        }
    }

    /// Checks the parameters: percentiles in `[0, 100]`, `s >= 0`, all finite.
    pub fn validate(&self) -> Result<()> {
        match self {
            Criterion::Percentile { q } => check_percentile("Criterion::Percentile.q", *q),
            Criterion::Global { q } => check_percentile("Criterion::Global.q", *q),
            Criterion::Random { q, .. } => check_percentile("Criterion::Random.q", *q),
            Criterion::Std { s } => {
                if s.is_finite() && *s >= 0.0 {
                    Ok(())
                } else {
                    Err(SparsityError::InvalidStdFactor {
                        field: "Criterion::Std.s",
                        value: *s,
                    })
                }
            }
            Criterion::PerLayerPercentile { q } => q
                .values()
                .try_for_each(|v| check_percentile("Criterion::PerLayerPercentile.q", *v)),
        }
    }

    /// The same kind of criterion aimed at a sparsity `fraction` in `[0, 1]` (as a
    /// [`crate::Schedule`] produces): `q = 100 · fraction`. Errors for `Std` and
    /// `PerLayerPercentile`, whose sparsity is not a single target.
    pub fn with_target(&self, fraction: f64) -> Result<Criterion> {
        check_fraction("target sparsity", fraction)?;
        let q = 100.0 * fraction;
        match self {
            Criterion::Percentile { .. } => Ok(Criterion::Percentile { q }),
            Criterion::Global { .. } => Ok(Criterion::Global { q }),
            Criterion::Random { seed, .. } => Ok(Criterion::Random { q, seed: *seed }),
            Criterion::Std { .. } => Err(SparsityError::NoTarget {
                criterion: "std",
                reason: "its sparsity follows from s and the weight distribution",
            }),
            Criterion::PerLayerPercentile { .. } => Err(SparsityError::NoTarget {
                criterion: "per-layer",
                reason: "it has one percentile per layer",
            }),
        }
    }
}

/// `np.percentile(values, q)` (default `method="linear"`) for a `float32` array and a
/// Python-float `q`, bit for bit as numpy ≥ 2.0 computes it: virtual index
/// `n·(q/100) + (1 − q/100) − 1` in `f64`, then numpy's `_lerp` in `f32` (the weight
/// rounded to `f32`, and `b − (b − a)·(1 − t)` when `t >= 0.5`).
///
/// Errors on an empty slice, NaN values or `q` outside `[0, 100]`.
pub fn numpy_percentile(values: &[f32], q: f64) -> Result<f32> {
    check_percentile("percentile q", q)?;
    if values.is_empty() {
        return Err(SparsityError::InvalidParameter {
            field: "percentile values",
            value: "[]".into(),
            reason: "the percentile of an empty set is undefined",
        });
    }
    if let Some(i) = values.iter().position(|v| v.is_nan()) {
        return Err(SparsityError::NonFinite {
            name: "percentile values".into(),
            index: i,
        });
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(f32::total_cmp);
    Ok(percentile_sorted(&sorted, q))
}

/// [`numpy_percentile`] on already sorted, NaN-free, non-empty data.
fn percentile_sorted(sorted: &[f32], q: f64) -> f32 {
    let n = sorted.len();
    let qf = q / 100.0;
    // numpy: _compute_virtual_index(n, q, alpha=1, beta=1)
    //   = n*q + (alpha + q*(1 - alpha - beta)) - 1, evaluated in this order.
    let (alpha, beta) = (1.0_f64, 1.0_f64);
    let virtual_index = n as f64 * qf + (alpha + qf * (1.0 - alpha - beta)) - 1.0;
    let last = n - 1;
    let (lo, hi, gamma) = if virtual_index >= last as f64 {
        (last, last, 0.0)
    } else if virtual_index < 0.0 {
        (0, 0, 0.0)
    } else {
        let lo = virtual_index.floor();
        // `lo < last` here, so both indices are in range.
        let lo_i = lo as usize;
        (lo_i, lo_i + 1, virtual_index - lo)
    };
    let a = sorted[lo];
    let b = sorted[hi];
    let diff = b - a;
    if gamma >= 0.5 {
        b - diff * ((1.0 - gamma) as f32)
    } else {
        a + diff * (gamma as f32)
    }
}

/// `torch.std(values)` (unbiased, divisor `n − 1`) of `f32` data, accumulated in `f64`
/// and rounded to `f32`; `None` for fewer than two values.
pub fn torch_std(values: &[f32]) -> Option<f32> {
    if values.len() < 2 {
        return None;
    }
    let n = values.len() as f64;
    let mean = values.iter().map(|v| f64::from(*v)).sum::<f64>() / n;
    let ss: f64 = values
        .iter()
        .map(|v| {
            let d = f64::from(*v) - mean;
            d * d
        })
        .sum();
    Some((ss / (n - 1.0)).sqrt() as f32)
}

/// One selected layer during mask computation.
struct Layer<'a> {
    name: &'a str,
    shape: Vec<usize>,
    values: Vec<f32>,
    prev: Option<&'a Mask>,
}

impl Layer<'_> {
    fn prev_keep(&self, i: usize) -> bool {
        self.prev
            .is_none_or(|m| m.keep().get(i).copied().unwrap_or(false))
    }
    fn pruned_before(&self) -> usize {
        self.prev.map_or(0, Mask::pruned)
    }
    fn survivors_abs(&self) -> Vec<f32> {
        self.values
            .iter()
            .enumerate()
            .filter(|(i, _)| self.prev_keep(*i))
            .map(|(_, v)| v.abs())
            .collect()
    }
    /// The previous mask, or a dense one.
    fn unchanged(&self) -> Mask {
        self.prev
            .cloned()
            .unwrap_or_else(|| Mask::dense(&self.shape))
    }
    /// Keep previous survivors with `|w| >= thr`.
    fn keep_at_least(&self, thr: f32) -> Result<Mask> {
        let keep = self
            .values
            .iter()
            .enumerate()
            .map(|(i, v)| self.prev_keep(i) && v.abs() >= thr)
            .collect();
        Mask::new(self.shape.clone(), keep)
    }
}

/// The percentile to apply to the survivors so that `q` percent of `total` elements end
/// up pruned, given `pruned` already are; `None` when nothing more must be pruned.
fn adjusted_q(q: f64, total: usize, pruned: usize) -> Option<f64> {
    if pruned == 0 {
        return (total > 0).then_some(q);
    }
    let survivors = total.saturating_sub(pruned);
    let extra = q / 100.0 * total as f64 - pruned as f64;
    if survivors == 0 || extra <= 0.0 {
        return None;
    }
    Some((100.0 * extra / survivors as f64).min(100.0))
}

/// FNV-1a, to mix the layer name into the random criterion's seed portably.
fn fnv1a(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

fn percentile_layer(layer: &Layer<'_>, q: f64) -> Result<Mask> {
    match adjusted_q(q, layer.values.len(), layer.pruned_before()) {
        None => Ok(layer.unchanged()),
        Some(q2) => {
            let mut surv = layer.survivors_abs();
            surv.sort_by(f32::total_cmp);
            layer.keep_at_least(percentile_sorted(&surv, q2))
        }
    }
}

fn std_layer(layer: &Layer<'_>, s: f64) -> Result<Mask> {
    let surv: Vec<f32> = layer
        .values
        .iter()
        .enumerate()
        .filter(|(i, _)| layer.prev_keep(*i))
        .map(|(_, v)| *v)
        .collect();
    match torch_std(&surv) {
        None => Ok(layer.unchanged()),
        Some(std) => layer.keep_at_least(std * s as f32),
    }
}

fn random_layer(layer: &Layer<'_>, q: f64, seed: u64) -> Result<Mask> {
    let n = layer.values.len();
    let target = (q / 100.0 * n as f64).round() as usize;
    let survivors: Vec<usize> = (0..n).filter(|i| layer.prev_keep(*i)).collect();
    let extra = target
        .saturating_sub(layer.pruned_before())
        .min(survivors.len());
    let mut keep: Vec<bool> = (0..n).map(|i| layer.prev_keep(i)).collect();
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ fnv1a(layer.name));
    for j in rand::seq::index::sample(&mut rng, survivors.len(), extra) {
        if let Some(&i) = survivors.get(j) {
            if let Some(k) = keep.get_mut(i) {
                *k = false;
            }
        }
    }
    Mask::new(layer.shape.clone(), keep)
}

fn global_masks(layers: &[Layer<'_>], q: f64) -> Result<Vec<Mask>> {
    let total: usize = layers.iter().map(|l| l.values.len()).sum();
    let pruned: usize = layers.iter().map(Layer::pruned_before).sum();
    match adjusted_q(q, total, pruned) {
        None => Ok(layers.iter().map(Layer::unchanged).collect()),
        Some(q2) => {
            let mut surv: Vec<f32> = layers.iter().flat_map(Layer::survivors_abs).collect();
            surv.sort_by(f32::total_cmp);
            let thr = percentile_sorted(&surv, q2);
            layers.iter().map(|l| l.keep_at_least(thr)).collect()
        }
    }
}

/// Computes the masks of `criterion` for the named `weights`.
///
/// * `prev`: masks of an earlier pruning step; criteria then work on the surviving
///   weights and never revive pruned ones (module docs). Every name in `prev` must be
///   among `weights`, with the same shape.
/// * `layers`: restricts pruning to these names (each must be among `weights`); the
///   global threshold is then computed over these layers only.
///
/// The result has one mask per pruned layer, plus the unchanged `prev` masks of layers
/// that were not selected. Weights may have any float dtype and device (values are read
/// as `f32`). Errors: invalid criterion parameters, unknown / duplicate names, shape
/// mismatches, empty layers, NaN or infinite weights.
pub fn compute_masks(
    weights: &[(&str, &Tensor)],
    criterion: &Criterion,
    prev: Option<&MaskSet>,
    layers: Option<&[String]>,
) -> Result<MaskSet> {
    criterion.validate()?;
    let mut by_name: BTreeMap<&str, &Tensor> = BTreeMap::new();
    for (name, t) in weights {
        if by_name.insert(name, t).is_some() {
            return Err(SparsityError::DuplicateLayer {
                name: name.to_string(),
            });
        }
    }
    if let Some(prev) = prev {
        for (name, m) in prev.iter() {
            let t = by_name
                .get(name)
                .ok_or_else(|| SparsityError::UnknownLayer {
                    name: name.to_string(),
                    context: "previous mask set names a layer that is not among the weights",
                })?;
            if t.dims() != m.shape() {
                return Err(SparsityError::ShapeMismatch {
                    name: name.to_string(),
                    expected: m.shape().to_vec(),
                    got: t.dims().to_vec(),
                });
            }
        }
    }
    let mut selected: BTreeSet<&str> = match layers {
        Some(list) => {
            let mut s = BTreeSet::new();
            for name in list {
                let (key, _) = by_name.get_key_value(name.as_str()).ok_or_else(|| {
                    SparsityError::UnknownLayer {
                        name: name.clone(),
                        context: "layer restriction list",
                    }
                })?;
                s.insert(*key);
            }
            s
        }
        None => by_name.keys().copied().collect(),
    };
    if let Criterion::PerLayerPercentile { q } = criterion {
        for name in q.keys() {
            if !by_name.contains_key(name.as_str()) {
                return Err(SparsityError::UnknownLayer {
                    name: name.clone(),
                    context: "Criterion::PerLayerPercentile",
                });
            }
        }
        selected.retain(|n| q.contains_key(*n));
    }

    let mut chosen = Vec::with_capacity(selected.len());
    for name in &selected {
        let t = by_name[name];
        let values = t.flatten_all()?.to_dtype(DType::F32)?.to_vec1::<f32>()?;
        if values.is_empty() {
            return Err(SparsityError::EmptyLayer {
                name: name.to_string(),
            });
        }
        if let Some(index) = values.iter().position(|v| !v.is_finite()) {
            return Err(SparsityError::NonFinite {
                name: name.to_string(),
                index,
            });
        }
        chosen.push(Layer {
            name,
            shape: t.dims().to_vec(),
            values,
            prev: prev.and_then(|p| p.get(name)),
        });
    }

    let new_masks: Vec<Mask> = match criterion {
        Criterion::Global { q } => global_masks(&chosen, *q)?,
        _ => chosen
            .iter()
            .map(|layer| match criterion {
                Criterion::Percentile { q } => percentile_layer(layer, *q),
                Criterion::Std { s } => std_layer(layer, *s),
                Criterion::Random { q, seed } => random_layer(layer, *q, *seed),
                Criterion::PerLayerPercentile { q } => {
                    percentile_layer(layer, q.get(layer.name).copied().unwrap_or(0.0))
                }
                Criterion::Global { .. } => Ok(layer.unchanged()),
            })
            .collect::<Result<_>>()?,
    };

    let mut out = MaskSet::new();
    if let Some(prev) = prev {
        for (name, m) in prev.iter() {
            out.insert(name, m.clone());
        }
    }
    for (layer, mask) in chosen.iter().zip(new_masks) {
        out.insert(layer.name, mask);
    }
    Ok(out)
}
