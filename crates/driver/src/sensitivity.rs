//! The per-layer sensitivity scan as seed 004 asks for it: configurable levels
//! (`prune.sensitivity_levels`), per-layer targets chosen from the scan (`prune.from_sensitivity`),
//! and the per-layer memory table (weights and activations at 32, 8 and the layer's bits).
//!
//! Rule of `prune.from_sensitivity = { max_drop }`: each layer's target is the highest scanned level
//! whose validation top-1, with that layer alone pruned, is at most `max_drop` below the dense
//! validation top-1 (0 when no level qualifies). That target is the layer's sparsity in the last
//! pruning step; every earlier step scales it by the step's target over the last step's target
//! (implemented as `prune.layer_scale = chosen / final target`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::recipe::{PruneSection, Recipe, RecipeError};
use crate::report::{LayerRow, SensitivityRow};

/// `prune.from_sensitivity`: per-layer targets from the sensitivity scan.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FromSensitivity {
    /// Largest validation top-1 drop allowed for a layer pruned alone, as a fraction (0.01 = one
    /// percentage point).
    pub max_drop: f64,
}

/// The levels scanned when a recipe gives none: 10 %, 20 %, …, 90 %.
pub fn default_levels() -> Vec<f64> {
    (1..=9).map(|i| i as f64 / 10.0).collect()
}

/// The levels (fractions) of the recipe's scan.
pub fn levels(p: &PruneSection) -> Vec<f64> {
    p.sensitivity_levels.clone().unwrap_or_else(default_levels)
}

/// Whether the recipe runs the scan (`prune.sensitivity`, or implied by `prune.from_sensitivity`).
pub fn scan_enabled(p: &PruneSection) -> bool {
    p.sensitivity || p.from_sensitivity.is_some()
}

/// The target of the last pruning step (last round, or `final_target` of a ramp).
pub fn final_target(p: &PruneSection) -> f64 {
    match p.schedule.as_str() {
        "linear" | "agp" => p.final_target.unwrap_or(0.0),
        _ => p.rounds.last().and_then(|r| r.target).unwrap_or(0.0),
    }
}

/// Checks `prune.sensitivity_levels` and `prune.from_sensitivity`; the error names the field.
pub fn validate(p: &PruneSection, origin: &str) -> Result<(), RecipeError> {
    let err = |field: &str, reason: String| RecipeError::Field {
        origin: origin.to_string(),
        field: field.to_string(),
        reason,
    };
    if let Some(levels) = &p.sensitivity_levels {
        let field = "prune.sensitivity_levels";
        if levels.is_empty() {
            return Err(err(field, "needs at least one level".into()));
        }
        for (i, l) in levels.iter().enumerate() {
            if !(l.is_finite() && (0.0..=1.0).contains(l)) {
                return Err(err(
                    &format!("{field}[{i}]"),
                    format!("{l} is outside [0, 1] (levels are fractions of the layer pruned)"),
                ));
            }
            if i > 0 && *l <= levels[i - 1] {
                return Err(err(
                    field,
                    format!(
                        "levels must be sorted and unique: {l} follows {}",
                        levels[i - 1]
                    ),
                ));
            }
        }
        if !scan_enabled(p) {
            return Err(err(
                field,
                "has no effect without prune.sensitivity = true or prune.from_sensitivity".into(),
            ));
        }
    }
    if let Some(fs) = &p.from_sensitivity {
        let field = "prune.from_sensitivity";
        if !(fs.max_drop.is_finite() && (0.0..=1.0).contains(&fs.max_drop)) {
            return Err(err(
                "prune.from_sensitivity.max_drop",
                format!(
                    "{} is outside [0, 1] (a fraction of top-1: 0.01 = one point)",
                    fs.max_drop
                ),
            ));
        }
        if p.method != "percentile" {
            return Err(err(
                field,
                format!(
                    "sets per-layer targets of method `percentile`; method `{}` has no per-layer target",
                    p.method
                ),
            ));
        }
        if !p.layer_scale.is_empty() {
            return Err(err(
                field,
                "replaces prune.layer_scale (the per-layer targets come from the scan); give one or the other"
                    .into(),
            ));
        }
        if final_target(p) <= 0.0 {
            return Err(err(
                field,
                "the last pruning step needs a target > 0 to scale the earlier steps by".into(),
            ));
        }
    }
    Ok(())
}

/// Per-layer targets chosen from a scan: the highest level whose top-1 is at most `max_drop` below
/// `baseline`, or 0 when none is.
pub fn choose_targets(
    rows: &[SensitivityRow],
    baseline: f64,
    max_drop: f64,
) -> BTreeMap<String, f64> {
    rows.iter()
        .map(|row| {
            let best = row
                .levels
                .iter()
                .zip(&row.points)
                .filter(|(_, (_, acc))| baseline - acc <= max_drop + 1e-12)
                .map(|(l, _)| *l)
                .fold(0.0, f64::max);
            (row.layer.clone(), best)
        })
        .collect()
}

/// The recipe with `prune.layer_scale` set so that the last pruning step reaches `targets` per layer
/// and earlier steps the same fraction of it as their target is of the last one.
pub fn apply_targets(recipe: &Recipe, targets: &BTreeMap<String, f64>) -> Recipe {
    let mut r = recipe.clone();
    let fin = final_target(&r.prune);
    r.prune.layer_scale = targets
        .iter()
        .map(|(k, t)| (k.clone(), if fin > 0.0 { t / fin } else { 0.0 }))
        .collect();
    r
}

/// The targets `prune.from_sensitivity` chose, as reported.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct ChosenTargets {
    /// `prune.from_sensitivity.max_drop`.
    pub max_drop: f64,
    /// Dense validation top-1 the drops are measured from.
    pub baseline: f64,
    /// Layer → sparsity of the last pruning step.
    pub targets: BTreeMap<String, f64>,
}

/// One prunable layer's memory at several widths (bytes, per example for activations).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct MemoryRow {
    /// Weight name.
    pub layer: String,
    /// Weights.
    pub params: u64,
    /// Weights kept after pruning.
    pub nonzero: u64,
    /// The layer's quantization bits n.
    pub bits: u8,
    /// All weights at 32 bits.
    pub weights_f32: u64,
    /// All weights at 8 bits.
    pub weights_8bit: u64,
    /// All weights at n bits.
    pub weights_nbit: u64,
    /// Kept weights only at n bits plus their relative indices as the file codes them
    /// (`nonzero × (n + index bits per nonzero) / 8`).
    pub sparse_nbit: u64,
    /// Output activations per example.
    pub activations: u64,
    /// Activations at 32 bits.
    pub activations_f32: u64,
    /// Activations at 8 bits.
    pub activations_8bit: u64,
    /// Activations at n bits.
    pub activations_nbit: u64,
}

fn bytes(count: u64, bits: f64) -> u64 {
    (count as f64 * bits / 8.0).ceil() as u64
}

/// The memory table of `layers` (the report's layer rows); activations come from the model's layer
/// description (`<layer>.weight` ↔ `<layer>`).
pub fn memory_rows(layers: &[LayerRow], costs: &deepcomp_models::ModelReport) -> Vec<MemoryRow> {
    layers
        .iter()
        .map(|l| {
            let act = costs
                .layers
                .iter()
                .find(|c| format!("{}.weight", c.name) == l.name)
                .map_or(0, |c| c.activations as u64);
            let n = f64::from(l.bits);
            MemoryRow {
                layer: l.name.clone(),
                params: l.params,
                nonzero: l.nonzero,
                bits: l.bits,
                weights_f32: 4 * l.params,
                weights_8bit: l.params,
                weights_nbit: bytes(l.params, n),
                sparse_nbit: bytes(l.nonzero, n + l.index_avg_bits),
                activations: act,
                activations_f32: 4 * act,
                activations_8bit: act,
                activations_nbit: bytes(act, n),
            }
        })
        .collect()
}

/// The markdown of the memory table.
pub fn memory_markdown(rows: &[MemoryRow]) -> String {
    let mut s = String::from("## Memory per layer (bytes)\n\n");
    s.push_str(
        "| layer | bits n | weights fp32 | weights 8-bit | weights n-bit | kept n-bit + index | \
         activations | act. fp32 | act. 8-bit | act. n-bit |\n",
    );
    s.push_str("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
    for r in rows {
        s.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
            r.layer,
            r.bits,
            r.weights_f32,
            r.weights_8bit,
            r.weights_nbit,
            r.sparse_nbit,
            r.activations,
            r.activations_f32,
            r.activations_8bit,
            r.activations_nbit
        ));
    }
    let sum = |f: fn(&MemoryRow) -> u64| rows.iter().map(f).sum::<u64>();
    s.push_str(&format!(
        "| total | | {} | {} | {} | {} | {} | {} | {} | {} |\n\n",
        sum(|r| r.weights_f32),
        sum(|r| r.weights_8bit),
        sum(|r| r.weights_nbit),
        sum(|r| r.sparse_nbit),
        sum(|r| r.activations),
        sum(|r| r.activations_f32),
        sum(|r| r.activations_8bit),
        sum(|r| r.activations_nbit)
    ));
    s.push_str(
        "Weights: every weight of the layer at 32, 8 and n bits (n = the layer's quantization bits), \
         and the kept weights only at n bits plus the relative-index bits per kept weight the file \
         spends. Activations: the layer's output elements per example (inference, one example) at 32, \
         8 and n bits. Bytes are rounded up.\n\n",
    );
    s
}

/// The markdown of the sensitivity scan: top-1 per level, then the layer's MACs per example at each
/// level (nonzero weights × output positions), then the chosen targets if any.
pub fn sensitivity_markdown(
    rows: &[SensitivityRow],
    baseline: Option<f64>,
    chosen: Option<&ChosenTargets>,
) -> String {
    let mut s = String::new();
    if rows.is_empty() {
        return s;
    }
    s.push_str("## Sensitivity (each layer pruned alone, top-1 on the validation split)\n\n");
    if let Some(b) = baseline {
        s.push_str(&format!("Dense validation top-1: {b:.4}.\n\n"));
    }
    let header = |row: &SensitivityRow| -> Vec<String> {
        if row.levels.len() == row.points.len() {
            row.levels
                .iter()
                .map(|l| format!("{:.0} %", l * 100.0))
                .collect()
        } else {
            row.points
                .iter()
                .map(|(l, _)| format!("{:.0} %", l * 100.0))
                .collect()
        }
    };
    let levels = header(&rows[0]);
    s.push_str(&format!("| layer | {} |\n", levels.join(" | ")));
    s.push_str(&format!("|---|{}\n", "---:|".repeat(levels.len())));
    for row in rows {
        let v: Vec<String> = row.points.iter().map(|(_, a)| format!("{a:.4}")).collect();
        s.push_str(&format!("| {} | {} |\n", row.layer, v.join(" | ")));
    }
    s.push('\n');
    if rows.iter().any(|r| !r.macs.is_empty()) {
        s.push_str("MACs per example of the layer pruned alone at each level (nonzero weights × output positions):\n\n");
        s.push_str(&format!("| layer | dense | {} |\n", levels.join(" | ")));
        s.push_str(&format!("|---|---:|{}\n", "---:|".repeat(levels.len())));
        for row in rows {
            let v: Vec<String> = row.macs.iter().map(|m| m.to_string()).collect();
            s.push_str(&format!(
                "| {} | {} | {} |\n",
                row.layer,
                row.macs_dense,
                v.join(" | ")
            ));
        }
        s.push('\n');
    }
    if let Some(c) = chosen {
        s.push_str(&format!(
            "Targets chosen from the scan (`prune.from_sensitivity`, max drop {:.4} from {:.4}): the \
             highest level per layer whose validation top-1 drop is at most the max drop; the last \
             pruning step reaches them, earlier steps proportionally less.\n\n",
            c.max_drop, c.baseline
        ));
        s.push_str("| layer | target |\n|---|---:|\n");
        for (k, t) in &c.targets {
            s.push_str(&format!("| {k} | {:.0} % |\n", t * 100.0));
        }
        s.push('\n');
    }
    s
}
