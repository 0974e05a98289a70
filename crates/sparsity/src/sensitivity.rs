//! Per-layer sensitivity analysis (seed 004, Han et al. Fig. 6): prune one layer alone
//! at several levels, measure accuracy, and tabulate.

use std::collections::BTreeMap;
use std::fmt;

use candle_core::Tensor;

use crate::criterion::{compute_masks, Criterion};
use crate::error::{check_percentile, Result, SparsityError};

/// Accuracies of one layer pruned alone at each level.
#[derive(Debug, Clone, PartialEq)]
pub struct SensitivityRow {
    /// Weight name.
    pub layer: String,
    /// Number of elements of the layer.
    pub params: usize,
    /// Achieved sparsity of the layer at each level (ties can make it lower than the level).
    pub sparsity: Vec<f64>,
    /// Accuracy returned by the evaluation at each level.
    pub accuracy: Vec<f64>,
}

/// Rows per layer, columns per pruning level.
#[derive(Debug, Clone, PartialEq)]
pub struct SensitivityTable {
    /// Pruning percentages (the percentile `q` of the per-layer rule), in order.
    pub levels: Vec<f64>,
    /// Accuracy of the unpruned model (evaluated with an empty mask set).
    pub baseline: f64,
    /// One row per layer, in the order of the weights given.
    pub rows: Vec<SensitivityRow>,
}

/// Prunes each layer alone with [`Criterion::Percentile`] at each level of `levels`
/// (percentages in `[0, 100]`, e.g. `10, 20, ..., 90`) and records `eval`'s accuracy.
/// A level of 100 zeroes the whole layer.
///
/// `eval` receives a [`crate::MaskSet`] holding the mask of exactly one layer (an empty
/// set for the baseline) and must return the accuracy of the model with that mask
/// applied and all other layers dense. It is called `1 + layers × levels` times, in
/// layer-then-level order. Its errors are wrapped in [`SparsityError::Eval`].
pub fn sensitivity<F, E>(
    weights: &[(&str, &Tensor)],
    levels: &[f64],
    mut eval: F,
) -> Result<SensitivityTable>
where
    F: FnMut(&crate::MaskSet) -> Result<f64, E>,
    E: fmt::Display,
{
    if levels.is_empty() {
        return Err(SparsityError::InvalidParameter {
            field: "sensitivity levels",
            value: "[]".into(),
            reason: "needs at least one pruning level",
        });
    }
    for l in levels {
        check_percentile("sensitivity level", *l)?;
    }
    let baseline = eval(&crate::MaskSet::new()).map_err(|e| SparsityError::Eval {
        layer: "<dense>".into(),
        level: 0.0,
        message: e.to_string(),
    })?;
    let mut rows = Vec::with_capacity(weights.len());
    for (name, t) in weights {
        let only = [name.to_string()];
        let mut sparsity = Vec::with_capacity(levels.len());
        let mut accuracy = Vec::with_capacity(levels.len());
        for &q in levels {
            // The percentile rule keeps the largest magnitude even at q = 100; a level of 100 %
            // means the whole layer is zero.
            let masks = if q >= 100.0 {
                let mut set = crate::MaskSet::new();
                set.insert(
                    name.to_string(),
                    crate::Mask::new(t.dims().to_vec(), vec![false; t.elem_count()])?,
                );
                set
            } else {
                compute_masks(weights, &Criterion::Percentile { q }, None, Some(&only))?
            };
            sparsity.push(masks.get(name).map_or(0.0, |m| m.sparsity()));
            accuracy.push(eval(&masks).map_err(|e| SparsityError::Eval {
                layer: name.to_string(),
                level: q,
                message: e.to_string(),
            })?);
        }
        rows.push(SensitivityRow {
            layer: name.to_string(),
            params: t.elem_count(),
            sparsity,
            accuracy,
        });
    }
    Ok(SensitivityTable {
        levels: levels.to_vec(),
        baseline,
        rows,
    })
}

impl SensitivityTable {
    /// For each layer, the largest level whose accuracy stays within `max_drop` of the
    /// baseline (`baseline − accuracy <= max_drop`), or 0.0 when none does: per-layer
    /// percentiles for [`Criterion::PerLayerPercentile`], as Han et al. chose them.
    pub fn suggest_levels(&self, max_drop: f64) -> BTreeMap<String, f64> {
        self.rows
            .iter()
            .map(|row| {
                let best = self
                    .levels
                    .iter()
                    .zip(&row.accuracy)
                    .filter(|(_, acc)| self.baseline - **acc <= max_drop)
                    .map(|(l, _)| *l)
                    .fold(0.0, f64::max);
                (row.layer.clone(), best)
            })
            .collect()
    }

    /// CSV with a header `layer,params,level,sparsity,accuracy` and one line per cell
    /// (long format, for plotting); the baseline is a row with layer `<dense>`.
    pub fn to_csv(&self) -> String {
        let mut s = String::from("layer,params,level,sparsity,accuracy\n");
        s.push_str(&format!("<dense>,0,0,0,{}\n", self.baseline));
        for row in &self.rows {
            for ((l, sp), acc) in self.levels.iter().zip(&row.sparsity).zip(&row.accuracy) {
                s.push_str(&format!("{},{},{l},{sp},{acc}\n", row.layer, row.params));
            }
        }
        s
    }
}

impl fmt::Display for SensitivityTable {
    /// A markdown table: one row per layer, one column per pruning percentage, accuracy
    /// to 4 decimals; the dense baseline is stated above it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "Dense accuracy: {:.4}", self.baseline)?;
        writeln!(f)?;
        write!(f, "| layer | params |")?;
        for l in &self.levels {
            write!(f, " {l}% |")?;
        }
        writeln!(f)?;
        write!(f, "|---|---:|")?;
        for _ in &self.levels {
            write!(f, "---:|")?;
        }
        writeln!(f)?;
        for row in &self.rows {
            write!(f, "| {} | {} |", row.layer, row.params)?;
            for acc in &row.accuracy {
                write!(f, " {acc:.4} |")?;
            }
            writeln!(f)?;
        }
        Ok(())
    }
}
