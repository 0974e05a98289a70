//! Per-layer sparsity report, printed like the seeds' notebooks.

use std::fmt;

use candle_core::{DType, Tensor};

use crate::error::{Result, SparsityError};

/// Nonzero and total element counts of one layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerSparsity {
    /// Weight name.
    pub name: String,
    /// Elements that are nonzero (or kept by the mask).
    pub nonzero: usize,
    /// All elements.
    pub total: usize,
}

impl LayerSparsity {
    /// Pruned fraction `1 − nonzero / total` (0.0 for an empty layer).
    pub fn sparsity(&self) -> f64 {
        if self.total == 0 {
            0.0
        } else {
            1.0 - self.nonzero as f64 / self.total as f64
        }
    }
}

/// Nonzero / total / sparsity per layer and in total.
///
/// `Display` prints one line per layer (index, name, nonzero, total, sparsity) and then
/// the seeds' three totals:
///
/// ```text
///    0  fc1.weight        3 /          8  sparsity 0.625000
/// Total nonzero parameters: 3
/// Total parameters: 8
/// Total sparsity: 0.625000
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SparsitySummary {
    /// One entry per layer, in the order given.
    pub layers: Vec<LayerSparsity>,
}

impl SparsitySummary {
    /// Counts the nonzero elements (`!= 0.0`; `-0.0` counts as zero) of named tensors.
    /// Errors on duplicate names.
    pub fn from_weights(weights: &[(&str, &Tensor)]) -> Result<Self> {
        let mut layers: Vec<LayerSparsity> = Vec::with_capacity(weights.len());
        for (name, t) in weights {
            if layers.iter().any(|l| l.name == *name) {
                return Err(SparsityError::DuplicateLayer {
                    name: name.to_string(),
                });
            }
            let v = t.flatten_all()?.to_dtype(DType::F64)?.to_vec1::<f64>()?;
            layers.push(LayerSparsity {
                name: name.to_string(),
                nonzero: v.iter().filter(|x| **x != 0.0).count(),
                total: v.len(),
            });
        }
        Ok(Self { layers })
    }

    /// Sum of the nonzero counts.
    pub fn total_nonzero(&self) -> usize {
        self.layers.iter().map(|l| l.nonzero).sum()
    }

    /// Sum of the element counts.
    pub fn total(&self) -> usize {
        self.layers.iter().map(|l| l.total).sum()
    }

    /// Overall pruned fraction (0.0 when there are no elements).
    pub fn total_sparsity(&self) -> f64 {
        let total = self.total();
        if total == 0 {
            0.0
        } else {
            1.0 - self.total_nonzero() as f64 / total as f64
        }
    }

    /// The summary entry of `name`.
    pub fn layer(&self, name: &str) -> Option<&LayerSparsity> {
        self.layers.iter().find(|l| l.name == name)
    }
}

impl fmt::Display for SparsitySummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let width = self.layers.iter().map(|l| l.name.len()).max().unwrap_or(0);
        for (i, l) in self.layers.iter().enumerate() {
            writeln!(
                f,
                "{i:>4}  {:<width$}  {:>10} / {:>10}  sparsity {:.6}",
                l.name,
                l.nonzero,
                l.total,
                l.sparsity()
            )?;
        }
        writeln!(f, "Total nonzero parameters: {}", self.total_nonzero())?;
        writeln!(f, "Total parameters: {}", self.total())?;
        writeln!(f, "Total sparsity: {:.6}", self.total_sparsity())
    }
}
