//! Per-layer weight sharing (Han et al. 2016, §3) and trained quantization
//! (§3.3).

use crate::error::{QuantError, Result};
use crate::kmeans::{check_bits, check_finite, kmeans_1d, Init, KMeansConfig};
use candle_core::{DType, Device, Shape, Tensor};

/// The paper's default bit widths: 8 for convolution layers, 5 for fully
/// connected ones (Han et al. 2016, Table 1-3 and §3).
pub fn default_bits(kind_is_conv: bool) -> u8 {
    if kind_is_conv {
        8
    } else {
        5
    }
}

/// One layer after weight sharing: a codebook plus one code per kept weight.
///
/// Only the *kept* weights (nonzero ones, or those selected by an explicit
/// mask) are clustered and stored; the pruned positions are not a cluster and
/// always reconstruct to exactly `0.0`.
///
/// The fields are private so that these invariants always hold (every
/// constructor checks or establishes them, [`Self::centroid_step`] keeps them):
/// `bits` in `1..=16`; `codebook` finite and ascending with
/// `codebook.len() <= 2^bits`, non-empty whenever a weight is kept;
/// `positions` strictly ascending and `< len`; `codes.len() == positions.len()`
/// and every code `< codebook.len()`. Hence no method can panic.
#[derive(Debug, Clone, PartialEq)]
pub struct SharedWeights {
    len: usize,
    codebook: Vec<f32>,
    positions: Vec<u64>,
    codes: Vec<u32>,
    sse: Option<f64>,
    bits: u8,
}

/// Weight sharing with `k = 2^bits` clusters, the given initialisation and
/// Lloyd run to convergence ([`KMeansConfig::for_bits`]).
///
/// `mask`: `None` keeps exactly the nonzero weights (`-0.0` counts as zero);
/// `Some(m)` keeps the weights with `m[i] == true` (a kept weight may then be
/// zero). Errors: `bits` outside `1..=16`, a mask of the wrong length, a
/// non-finite kept weight.
pub fn share_weights(
    weights: &[f32],
    mask: Option<&[bool]>,
    bits: u8,
    init: Init,
) -> Result<SharedWeights> {
    share_weights_with(weights, mask, bits, &KMeansConfig::for_bits(bits, init)?)
}

/// Like [`share_weights`] with full control over the clustering (e.g. the
/// exact solver). `cfg.k` must be at most `2^bits`.
pub fn share_weights_with(
    weights: &[f32],
    mask: Option<&[bool]>,
    bits: u8,
    cfg: &KMeansConfig,
) -> Result<SharedWeights> {
    check_bits(bits)?;
    if cfg.k > 1usize << bits {
        return Err(QuantError::InvalidParam {
            name: "k",
            value: cfg.k.to_string(),
            reason: "must be at most 2^bits for the codes to fit",
        });
    }
    let positions: Vec<u64> = match mask {
        None => (0..weights.len())
            .filter(|&i| weights[i] != 0.0)
            .map(|i| i as u64)
            .collect(),
        Some(m) => {
            if m.len() != weights.len() {
                return Err(QuantError::LengthMismatch {
                    what: "mask",
                    expected: weights.len(),
                    got: m.len(),
                });
            }
            (0..weights.len())
                .filter(|&i| m[i])
                .map(|i| i as u64)
                .collect()
        }
    };
    let kept: Vec<f32> = positions.iter().map(|&p| weights[p as usize]).collect();
    if let Err(QuantError::NonFinite { value, index, .. }) = check_finite("weights", &kept) {
        return Err(QuantError::NonFinite {
            what: "weights",
            index: positions[index] as usize,
            value,
        });
    }
    let km = kmeans_1d(&kept, cfg)?;
    Ok(SharedWeights {
        len: weights.len(),
        codebook: km.centroids,
        positions,
        codes: km.assignments,
        sse: Some(km.sse),
        bits,
    })
}

/// Weight sharing of a candle tensor (any shape and float dtype; flattened
/// row-major). See [`share_weights`].
pub fn share_tensor(
    weights: &Tensor,
    mask: Option<&[bool]>,
    bits: u8,
    init: Init,
) -> Result<SharedWeights> {
    let w = tensor_to_f32_vec(weights)?;
    share_weights(&w, mask, bits, init)
}

/// Flattens a tensor to a host `Vec<f32>` (converting the dtype if needed).
pub fn tensor_to_f32_vec(t: &Tensor) -> Result<Vec<f32>> {
    Ok(t.flatten_all()?.to_dtype(DType::F32)?.to_vec1::<f32>()?)
}

impl SharedWeights {
    /// Rebuilds a layer from its stored parts (e.g. decoded from a container),
    /// checking every invariant listed on the type; the error names the
    /// offending part. [`Self::sse`] is `None` for such a layer.
    pub fn from_parts(
        len: usize,
        codebook: Vec<f32>,
        positions: Vec<u64>,
        codes: Vec<u32>,
        bits: u8,
    ) -> Result<Self> {
        check_bits(bits)?;
        let invalid = |name, value: String, reason| QuantError::InvalidParam {
            name,
            value,
            reason,
        };
        if codebook.len() > 1usize << bits {
            return Err(invalid(
                "codebook length",
                codebook.len().to_string(),
                "must be at most 2^bits",
            ));
        }
        check_finite("codebook", &codebook)?;
        if let Some(i) = codebook.windows(2).position(|w| w[0] > w[1]) {
            return Err(invalid(
                "codebook",
                format!(
                    "[{}] = {} > [{}] = {}",
                    i,
                    codebook[i],
                    i + 1,
                    codebook[i + 1]
                ),
                "must be ascending",
            ));
        }
        if codes.len() != positions.len() {
            return Err(QuantError::LengthMismatch {
                what: "codes",
                expected: positions.len(),
                got: codes.len(),
            });
        }
        if let Some(i) = positions.windows(2).position(|w| w[0] >= w[1]) {
            return Err(invalid(
                "positions",
                format!(
                    "[{}] = {} >= [{}] = {}",
                    i,
                    positions[i],
                    i + 1,
                    positions[i + 1]
                ),
                "must be strictly ascending",
            ));
        }
        if let Some(&p) = positions.last() {
            if p >= len as u64 {
                return Err(invalid(
                    "positions",
                    p.to_string(),
                    "a position is outside the layer (>= len)",
                ));
            }
        }
        if let Some(&c) = codes.iter().find(|&&c| c as usize >= codebook.len()) {
            return Err(invalid(
                "codes",
                c.to_string(),
                "a code is not an index into the codebook",
            ));
        }
        Ok(Self {
            len,
            codebook,
            positions,
            codes,
            sse: None,
            bits,
        })
    }

    /// Takes the layer apart: `(len, codebook, positions, codes, bits)`, the
    /// arguments of [`Self::from_parts`].
    pub fn into_parts(self) -> (usize, Vec<f32>, Vec<u64>, Vec<u32>, u8) {
        (
            self.len,
            self.codebook,
            self.positions,
            self.codes,
            self.bits,
        )
    }

    /// Number of elements of the dense layer (kept and pruned).
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the dense layer has no elements at all.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Shared values, ascending (at most `2^bits`).
    pub fn codebook(&self) -> &[f32] {
        &self.codebook
    }

    /// Flat (row-major) indices of the kept weights, ascending.
    pub fn positions(&self) -> &[u64] {
        &self.positions
    }

    /// Codebook index of each kept weight (aligned with [`Self::positions`]).
    pub fn codes(&self) -> &[u32] {
        &self.codes
    }

    /// Bit width of a code.
    pub fn bits(&self) -> u8 {
        self.bits
    }

    /// Squared error of the sharing, `Σ (w - codebook[code])²` over the kept
    /// weights, at clustering time (not updated by centroid steps); `None`
    /// for a layer built with [`Self::from_parts`].
    pub fn sse(&self) -> Option<f64> {
        self.sse
    }

    /// Number of kept (clustered) weights.
    pub fn kept(&self) -> usize {
        self.positions.len()
    }

    /// The keep-mask implied by `positions` (length `len`).
    pub fn mask(&self) -> Vec<bool> {
        let mut m = vec![false; self.len];
        for &p in &self.positions {
            m[p as usize] = true;
        }
        m
    }

    /// The dense layer: `codebook[code]` at kept positions, exactly `0.0`
    /// elsewhere.
    pub fn reconstruct(&self) -> Vec<f32> {
        let mut out = vec![0.0f32; self.len];
        for (&p, &c) in self.positions.iter().zip(&self.codes) {
            out[p as usize] = self.codebook[c as usize];
        }
        out
    }

    /// The dense layer as an `f32` tensor of the given shape.
    pub fn to_tensor<S: Into<Shape>>(&self, shape: S, device: &Device) -> Result<Tensor> {
        let shape: Shape = shape.into();
        if shape.elem_count() != self.len {
            return Err(QuantError::LengthMismatch {
                what: "shape element count",
                expected: self.len,
                got: shape.elem_count(),
            });
        }
        Ok(Tensor::from_vec(self.reconstruct(), shape, device)?)
    }

    /// Number of uses of each codebook entry (`Vec` aligned with `codebook`),
    /// the histogram Huffman coding needs.
    pub fn code_counts(&self) -> Vec<u64> {
        let mut counts = vec![0u64; self.codebook.len()];
        for &c in &self.codes {
            counts[c as usize] += 1;
        }
        counts
    }

    /// Gradient of the loss w.r.t. each centroid (paper eq. 3): the sum of the
    /// dense gradients `grad` (flat, length `len`) over the kept weights that
    /// share the centroid. Gradients at pruned positions are ignored.
    pub fn centroid_grads(&self, grad: &[f32]) -> Result<Vec<f32>> {
        if grad.len() != self.len {
            return Err(QuantError::LengthMismatch {
                what: "grad",
                expected: self.len,
                got: grad.len(),
            });
        }
        let mut acc = vec![0.0f64; self.codebook.len()];
        for (&p, &c) in self.positions.iter().zip(&self.codes) {
            let g = grad[p as usize];
            if !g.is_finite() {
                return Err(QuantError::NonFinite {
                    what: "grad",
                    index: p as usize,
                    value: g,
                });
            }
            acc[c as usize] += f64::from(g);
        }
        Ok(acc.into_iter().map(|g| g as f32).collect())
    }

    /// One step of trained quantization (paper §3.3): the codes stay fixed and
    /// each centroid moves by `-lr ×` the sum of the gradients of its weights.
    /// Pruned positions stay exactly zero.
    ///
    /// Afterwards the codebook is re-sorted ascending (stable, so entries that
    /// became equal keep their relative order) and the codes are remapped, so
    /// the container invariant holds and [`Self::reconstruct`] is unchanged
    /// by the reordering. On error nothing is modified.
    pub fn centroid_step(&mut self, grad: &[f32], lr: f32) -> Result<()> {
        if !lr.is_finite() {
            return Err(QuantError::InvalidParam {
                name: "lr",
                value: lr.to_string(),
                reason: "learning rate must be finite",
            });
        }
        let g = self.centroid_grads(grad)?;
        let updated: Vec<f32> = self
            .codebook
            .iter()
            .zip(&g)
            .map(|(&c, &g)| c - lr * g)
            .collect();
        if let Some(i) = updated.iter().position(|c| !c.is_finite()) {
            return Err(QuantError::NonFinite {
                what: "updated codebook",
                index: i,
                value: updated[i],
            });
        }
        self.codebook = updated;
        self.sort_codebook();
        Ok(())
    }

    /// [`Self::centroid_step`] with the gradient given as a tensor (any shape
    /// with `len` elements, any float dtype).
    pub fn centroid_step_tensor(&mut self, grad: &Tensor, lr: f32) -> Result<()> {
        let g = tensor_to_f32_vec(grad)?;
        self.centroid_step(&g, lr)
    }

    /// Stable re-sort of the codebook with code remapping.
    fn sort_codebook(&mut self) {
        let mut order: Vec<usize> = (0..self.codebook.len()).collect();
        order.sort_by(|&a, &b| self.codebook[a].total_cmp(&self.codebook[b]));
        if order.iter().enumerate().all(|(i, &o)| i == o) {
            return;
        }
        let mut remap = vec![0u32; order.len()];
        for (new, &old) in order.iter().enumerate() {
            remap[old] = new as u32;
        }
        self.codebook = order.iter().map(|&o| self.codebook[o]).collect();
        for c in &mut self.codes {
            *c = remap[*c as usize];
        }
    }
}
