//! Structured pruning: remove whole neurons / conv filters (seed 002's `prune_layer`),
//! giving a smaller dense model.
//!
//! A neuron of layer A is a row of its weight (`out × in`, or a filter `out × in × kh × kw`).
//! Its score is the L2 norm of that row; the neurons with the smallest norms are removed
//! together with their bias entries and with the matching *inputs* of the next layer B
//! (columns of a linear `out_b × in_b`, input channels of a conv `out_b × c × kh × kw`).
//! For a conv → linear transition, B's input is the flattened `c × h × w` activation, so
//! each channel owns `spatial = h·w` consecutive columns of B (PyTorch's channel-major
//! flatten).
//!
//! Difference from the seed: `prune_layer(wA, bA, wB, p)` keeps the rows with
//! `score >= kthvalue(score, int(n·p))`, which removes `int(n·p) − 1` neurons (and fails
//! for `int(n·p) = 0`). Here exactly `floor(n · remove_ratio)` neurons are removed (at
//! most `n − 1`: a layer is never emptied), ties broken towards removing the lower index,
//! and the kept neurons keep their original order.

use candle_core::{Device, Tensor};

use crate::error::{check_fraction, Result, SparsityError};

/// Result of [`prune_neurons`].
#[derive(Debug, Clone)]
pub struct StructuredPruned {
    /// Layer A's weight with the removed rows dropped (`kept.len() × ...`).
    pub w_a: Tensor,
    /// Layer A's bias with the removed entries dropped.
    pub b_a: Option<Tensor>,
    /// Layer B's weight with the matching inputs dropped.
    pub w_b: Tensor,
    /// Original indices of the kept neurons, ascending.
    pub kept: Vec<usize>,
}

/// L2 norm of each row (dim 0) of `w`, computed in `f64`.
pub fn row_norms(w: &Tensor) -> Result<Vec<f64>> {
    let n = *w
        .dims()
        .first()
        .ok_or_else(|| SparsityError::ShapeMismatch {
            name: "structured weight (needs at least one dimension)".into(),
            expected: vec![1],
            got: vec![],
        })?;
    if n == 0 {
        return Ok(Vec::new());
    }
    let flat = w
        .to_dtype(candle_core::DType::F64)?
        .reshape((n, ()))?
        .to_vec2::<f64>()?;
    Ok(flat
        .iter()
        .map(|row| row.iter().map(|x| x * x).sum::<f64>().sqrt())
        .collect())
}

/// Indices (ascending) of the neurons kept when `floor(n · remove_ratio)` of the
/// lowest-scoring ones are removed (at most `n − 1`).
pub fn kept_by_score(scores: &[f64], remove_ratio: f64) -> Result<Vec<usize>> {
    check_fraction("structured remove_ratio", remove_ratio)?;
    let n = scores.len();
    let remove = ((n as f64 * remove_ratio).floor() as usize).min(n.saturating_sub(1));
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|a, b| scores[*a].total_cmp(&scores[*b]).then(a.cmp(b)));
    let mut kept: Vec<usize> = order.into_iter().skip(remove).collect();
    kept.sort_unstable();
    Ok(kept)
}

/// Selects the entries `kept` along `dim` of `t` (e.g. BatchNorm parameters of the
/// pruned channels).
pub fn select(t: &Tensor, kept: &[usize], dim: usize) -> Result<Tensor> {
    let idx: Vec<u32> = kept
        .iter()
        .map(|i| u32::try_from(*i))
        .collect::<std::result::Result<_, _>>()
        .map_err(|_| SparsityError::InvalidParameter {
            field: "structured index",
            value: "> u32::MAX".into(),
            reason: "index does not fit in u32",
        })?;
    let ids = Tensor::from_vec(idx, kept.len(), &Device::Cpu)?.to_device(t.device())?;
    Ok(t.index_select(&ids, dim)?.contiguous()?)
}

/// Removes the fraction `remove_ratio` (in `[0, 1]`) of layer A's neurons with the
/// smallest L2 norm, their bias entries, and the matching inputs of layer B.
///
/// * `w_a`: `out × in` or `out × in × kh × kw` (any rank >= 2).
/// * `b_a`: `out`, if the layer has a bias.
/// * `w_b`: a linear `out_b × (out · spatial)` or a conv `out_b × out × kh × kw`
///   (then `spatial` must be 1).
/// * `spatial`: columns of B per neuron of A (`h·w` for conv → flatten → linear, else 1).
///
/// Errors on shapes that do not chain, `spatial = 0`, or a ratio outside `[0, 1]`.
pub fn prune_neurons(
    w_a: &Tensor,
    b_a: Option<&Tensor>,
    w_b: &Tensor,
    remove_ratio: f64,
    spatial: usize,
) -> Result<StructuredPruned> {
    check_fraction("structured remove_ratio", remove_ratio)?;
    prune_with(w_a, b_a, w_b, spatial, |scores| {
        kept_by_score(scores, remove_ratio)
    })
}

/// Indices (ascending) of the `keep` neurons with the largest scores (`keep` clamped to
/// `1..=n`; ties broken towards removing the lower index, as [`kept_by_score`]).
pub fn kept_top(scores: &[f64], keep: usize) -> Vec<usize> {
    let n = scores.len();
    let keep = keep.clamp(n.min(1), n);
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|a, b| scores[*a].total_cmp(&scores[*b]).then(a.cmp(b)));
    let mut kept: Vec<usize> = order.into_iter().skip(n - keep).collect();
    kept.sort_unstable();
    kept
}

/// [`prune_neurons`] by count: keeps the `keep` neurons of layer A with the largest L2 norms
/// (at least one, at most all), so that repeated rounds can aim at an exact width.
pub fn prune_neurons_to(
    w_a: &Tensor,
    b_a: Option<&Tensor>,
    w_b: &Tensor,
    keep: usize,
    spatial: usize,
) -> Result<StructuredPruned> {
    prune_with(w_a, b_a, w_b, spatial, |scores| Ok(kept_top(scores, keep)))
}

fn prune_with(
    w_a: &Tensor,
    b_a: Option<&Tensor>,
    w_b: &Tensor,
    spatial: usize,
    pick: impl FnOnce(&[f64]) -> Result<Vec<usize>>,
) -> Result<StructuredPruned> {
    if w_a.rank() < 2 {
        return Err(SparsityError::ShapeMismatch {
            name: "structured w_a (needs rank >= 2: out × in ...)".into(),
            expected: vec![0, 0],
            got: w_a.dims().to_vec(),
        });
    }
    let n = w_a.dims()[0];
    if spatial == 0 {
        return Err(SparsityError::InvalidParameter {
            field: "structured spatial",
            value: "0".into(),
            reason: "each neuron owns at least one input of the next layer",
        });
    }
    if let Some(b) = b_a {
        if b.dims() != [n] {
            return Err(SparsityError::ShapeMismatch {
                name: "structured b_a".into(),
                expected: vec![n],
                got: b.dims().to_vec(),
            });
        }
    }
    let b_in = w_b.dims().get(1).copied();
    let chains = match w_b.rank() {
        2 => b_in == Some(n.saturating_mul(spatial)),
        r if r > 2 => spatial == 1 && b_in == Some(n),
        _ => false,
    };
    if !chains {
        let mut expected = w_b.dims().to_vec();
        if let Some(d) = expected.get_mut(1) {
            *d = n.saturating_mul(spatial);
        }
        return Err(SparsityError::ShapeMismatch {
            name: format!(
                "structured w_b (its dim 1 must be w_a's {n} outputs × spatial {spatial}; spatial > 1 only for a linear w_b)"
            ),
            expected,
            got: w_b.dims().to_vec(),
        });
    }
    let kept = pick(&row_norms(w_a)?)?;
    let cols: Vec<usize> = kept
        .iter()
        .flat_map(|c| (c * spatial)..(c * spatial + spatial))
        .collect();
    Ok(StructuredPruned {
        w_a: select(w_a, &kept, 0)?,
        b_a: b_a.map(|b| select(b, &kept, 0)).transpose()?,
        w_b: select(w_b, &cols, 1)?,
        kept,
    })
}
