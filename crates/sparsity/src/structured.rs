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
//! [`shrink_chain`] applies this to a whole chain of layers (linear → linear, conv → conv,
//! conv → flatten → linear), each layer scored after its inputs were removed, carrying the
//! per-channel tensors that follow a layer (a BatchNorm's weight, bias and running statistics)
//! along with its filters.
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
    let cols = channel_columns(&kept, spatial);
    Ok(StructuredPruned {
        w_a: select(w_a, &kept, 0)?,
        b_a: b_a.map(|b| select(b, &kept, 0)).transpose()?,
        w_b: select(w_b, &cols, 1)?,
        kept,
    })
}

/// Columns of the next layer's input that the kept neurons / channels own, ascending: channel `c`
/// owns `c·spatial .. (c+1)·spatial` (PyTorch's channel-major flatten of a `c × h × w` activation,
/// `spatial = h·w`; 1 for a linear or conv next layer).
pub fn channel_columns(kept: &[usize], spatial: usize) -> Vec<usize> {
    kept.iter()
        .flat_map(|c| (c * spatial)..(c * spatial + spatial))
        .collect()
}

/// Columns of `w_b` per output of `w_a`: `in_b / out_a` for a conv `w_a` feeding a linear `w_b`
/// through a flatten (`h·w` of the conv's, possibly pooled, output), else 1. Errors when a conv's
/// channels do not divide the linear layer's inputs.
pub fn flatten_spatial(w_a: &Tensor, w_b: &Tensor) -> Result<usize> {
    let n = w_a.dims().first().copied().unwrap_or(0);
    if w_a.rank() > 2 && w_b.rank() == 2 && n > 0 {
        let in_b = w_b.dims()[1];
        if in_b == 0 || !in_b.is_multiple_of(n) {
            return Err(SparsityError::ShapeMismatch {
                name: format!(
                    "structured w_b (a linear layer after a conv of {n} channels needs a multiple of {n} inputs)"
                ),
                expected: vec![w_b.dims()[0], n * (in_b / n).max(1)],
                got: w_b.dims().to_vec(),
            });
        }
        Ok(in_b / n)
    } else {
        Ok(1)
    }
}

/// One layer of a chain shrunk by [`shrink_chain`].
#[derive(Debug, Clone)]
pub struct ChainLayer {
    /// Weight: a linear `out × in` or a conv `out × in × kh × kw`.
    pub weight: Tensor,
    /// Bias (`out` entries), if the layer has one.
    pub bias: Option<Tensor>,
    /// Other tensors indexed by this layer's outputs along dim 0 (`out` entries: the weight, bias,
    /// running mean and running variance of a BatchNorm that follows the layer); they lose the
    /// entries of the removed outputs.
    pub per_output: Vec<Tensor>,
}

impl ChainLayer {
    /// A layer with no per-output companions.
    pub fn new(weight: Tensor, bias: Option<Tensor>) -> Self {
        Self {
            weight,
            bias,
            per_output: Vec::new(),
        }
    }
}

/// Shrinks a chain of layers, each feeding the next (linear → linear, conv → conv, or
/// conv → flatten → linear, whose column blocks [`flatten_spatial`] infers from the shapes):
/// layer `j < layers.len() − 1` keeps its `keep[j]` outputs of largest L2 norm (clamped to
/// `1..=out`, see [`kept_top`]), with their bias and per-output entries, and layer `j + 1` loses
/// the matching inputs. Layers are shrunk in order, so layer `j + 1` is scored after its inputs
/// were removed (as seed 002 does). The last layer's outputs are never removed.
///
/// Returns, per shrunk layer, the original indices (ascending) of the outputs it kept. Errors on
/// `keep.len() != layers.len() − 1`, shapes that do not chain, or a per-output tensor whose dim 0
/// is not the layer's output count; `layers` is left unchanged on error.
pub fn shrink_chain(layers: &mut [ChainLayer], keep: &[usize]) -> Result<Vec<Vec<usize>>> {
    if layers.is_empty() || keep.len() + 1 != layers.len() {
        return Err(SparsityError::InvalidParameter {
            field: "structured keep",
            value: format!("{} widths for {} layers", keep.len(), layers.len()),
            reason: "one width per layer but the last",
        });
    }
    for l in layers.iter() {
        let n = l.weight.dims().first().copied().unwrap_or(0);
        for t in &l.per_output {
            if t.dims().first() != Some(&n) {
                return Err(SparsityError::ShapeMismatch {
                    name: "structured per-output tensor (dim 0 must be the layer's outputs)".into(),
                    expected: vec![n],
                    got: t.dims().to_vec(),
                });
            }
        }
    }
    let mut work = layers.to_vec();
    let mut kept_all = Vec::with_capacity(keep.len());
    for (j, &k) in keep.iter().enumerate() {
        let (head, tail) = work.split_at_mut(j + 1);
        let a = &mut head[j];
        let b = &mut tail[0];
        let spatial = flatten_spatial(&a.weight, &b.weight)?;
        let p = prune_neurons_to(&a.weight, a.bias.as_ref(), &b.weight, k, spatial)?;
        a.per_output = a
            .per_output
            .iter()
            .map(|t| select(t, &p.kept, 0))
            .collect::<Result<_>>()?;
        a.weight = p.w_a;
        a.bias = p.b_a;
        b.weight = p.w_b;
        kept_all.push(p.kept);
    }
    layers.clone_from_slice(&work);
    Ok(kept_all)
}
