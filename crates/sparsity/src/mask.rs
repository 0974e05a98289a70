//! Binary masks per named weight, and the operations of the masked-finetune contract.

use std::collections::BTreeMap;

use candle_core::{DType, Device, Tensor};

use crate::error::{Result, SparsityError};
use crate::summary::{LayerSparsity, SparsitySummary};

/// Which elements of one weight tensor survive pruning.
///
/// `keep[i]` refers to the `i`-th element of the tensor in row-major (candle / PyTorch)
/// order. A pruned element is set to exactly `+0.0` by every `apply` operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mask {
    shape: Vec<usize>,
    keep: Vec<bool>,
}

impl Mask {
    /// A mask from a shape and one flag per element (row-major); errors when the
    /// number of flags is not the product of the shape.
    pub fn new(shape: Vec<usize>, keep: Vec<bool>) -> Result<Self> {
        let n: usize = shape.iter().product();
        if n != keep.len() {
            return Err(SparsityError::ShapeMismatch {
                name: "Mask::new keep flags".into(),
                expected: vec![n],
                got: vec![keep.len()],
            });
        }
        Ok(Self { shape, keep })
    }

    /// A mask that keeps everything.
    pub fn dense(shape: &[usize]) -> Self {
        let n = shape.iter().product();
        Self {
            shape: shape.to_vec(),
            keep: vec![true; n],
        }
    }

    /// The mask of a tensor's nonzero elements (`keep = value != 0`), e.g. to recover
    /// the masks of a pruned checkpoint. `-0.0` counts as zero.
    pub fn from_nonzero(t: &Tensor) -> Result<Self> {
        let v = t.flatten_all()?.to_dtype(DType::F64)?.to_vec1::<f64>()?;
        Ok(Self {
            shape: t.dims().to_vec(),
            keep: v.iter().map(|x| *x != 0.0).collect(),
        })
    }

    /// The shape of the weight this mask belongs to.
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// One flag per element, row-major; `true` = kept.
    pub fn keep(&self) -> &[bool] {
        &self.keep
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        self.keep.len()
    }

    /// Whether the weight has no elements.
    pub fn is_empty(&self) -> bool {
        self.keep.is_empty()
    }

    /// Number of kept (nonzero) elements.
    pub fn nonzero(&self) -> usize {
        self.keep.iter().filter(|k| **k).count()
    }

    /// Number of pruned elements.
    pub fn pruned(&self) -> usize {
        self.len() - self.nonzero()
    }

    /// Kept fraction in `[0, 1]` (1.0 for an empty mask).
    pub fn density(&self) -> f64 {
        if self.keep.is_empty() {
            1.0
        } else {
            self.nonzero() as f64 / self.len() as f64
        }
    }

    /// Pruned fraction, `1 - density()`.
    pub fn sparsity(&self) -> f64 {
        1.0 - self.density()
    }

    /// Elements kept by both masks (shapes must match).
    pub fn intersect(&self, other: &Mask) -> Result<Mask> {
        self.check_same_shape(other)?;
        Ok(Mask {
            shape: self.shape.clone(),
            keep: self
                .keep
                .iter()
                .zip(&other.keep)
                .map(|(a, b)| *a && *b)
                .collect(),
        })
    }

    /// Whether every element pruned by `earlier` is pruned here too (no revival).
    pub fn is_subset_of(&self, earlier: &Mask) -> Result<bool> {
        self.check_same_shape(earlier)?;
        Ok(self.keep.iter().zip(&earlier.keep).all(|(a, b)| !*a || *b))
    }

    fn check_same_shape(&self, other: &Mask) -> Result<()> {
        if self.shape != other.shape {
            return Err(SparsityError::ShapeMismatch {
                name: "mask".into(),
                expected: self.shape.clone(),
                got: other.shape.clone(),
            });
        }
        Ok(())
    }

    fn check_tensor(&self, name: &str, t: &Tensor) -> Result<()> {
        if t.dims() != self.shape.as_slice() {
            return Err(SparsityError::ShapeMismatch {
                name: name.to_string(),
                expected: self.shape.clone(),
                got: t.dims().to_vec(),
            });
        }
        Ok(())
    }

    /// The mask as an `f32` tensor of 0.0 / 1.0 with the weight's shape.
    pub fn to_tensor(&self, device: &Device) -> Result<Tensor> {
        let v: Vec<f32> = self.keep.iter().map(|k| f32::from(u8::from(*k))).collect();
        Ok(Tensor::from_vec(v, self.shape.as_slice(), device)?)
    }

    /// The mask as a `u8` tensor of 0 / 1 (the condition for `where_cond`).
    pub fn to_u8_tensor(&self, device: &Device) -> Result<Tensor> {
        let v: Vec<u8> = self.keep.iter().map(|k| u8::from(*k)).collect();
        Ok(Tensor::from_vec(v, self.shape.as_slice(), device)?)
    }

    /// `t` with every pruned element replaced by exactly `+0.0`.
    ///
    /// Works for any float dtype and device, and for weights, gradients and optimizer
    /// state alike. It selects rather than multiplies, so a pruned position becomes `+0.0`
    /// even when it held `-x`, NaN or infinity (`t * mask` would give `-0.0` or NaN).
    pub fn apply(&self, t: &Tensor) -> Result<Tensor> {
        self.check_tensor("Mask::apply tensor", t)?;
        let cond = self.to_u8_tensor(t.device())?;
        apply_cond(&cond, t)
    }

    /// In-place version of [`Mask::apply`] for a row-major `f32` slice.
    pub fn apply_slice(&self, values: &mut [f32]) -> Result<()> {
        if values.len() != self.keep.len() {
            return Err(SparsityError::ShapeMismatch {
                name: "Mask::apply_slice values".into(),
                expected: vec![self.keep.len()],
                got: vec![values.len()],
            });
        }
        for (v, k) in values.iter_mut().zip(&self.keep) {
            if !*k {
                *v = 0.0;
            }
        }
        Ok(())
    }

    /// Number of pruned positions of `t` that are not bitwise `+0.0` (0 when the
    /// masked-finetune contract holds).
    pub fn violations(&self, t: &Tensor) -> Result<usize> {
        self.check_tensor("Mask::violations tensor", t)?;
        let v = t.flatten_all()?.to_dtype(DType::F64)?.to_vec1::<f64>()?;
        Ok(v.iter()
            .zip(&self.keep)
            .filter(|(x, k)| !**k && x.to_bits() != 0)
            .count())
    }
}

fn apply_cond(cond: &Tensor, t: &Tensor) -> Result<Tensor> {
    let zeros = t.zeros_like()?;
    Ok(cond.where_cond(t, &zeros)?)
}

/// One [`Mask`] per named weight, ordered by name.
///
/// Weights without an entry are dense (not pruned).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MaskSet {
    masks: BTreeMap<String, Mask>,
}

impl MaskSet {
    /// An empty set: nothing is pruned.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds or replaces the mask of `name`.
    pub fn insert(&mut self, name: impl Into<String>, mask: Mask) {
        self.masks.insert(name.into(), mask);
    }

    /// The mask of `name`, if the layer is pruned.
    pub fn get(&self, name: &str) -> Option<&Mask> {
        self.masks.get(name)
    }

    /// Whether `name` has a mask.
    pub fn contains(&self, name: &str) -> bool {
        self.masks.contains_key(name)
    }

    /// Number of masked layers.
    pub fn len(&self) -> usize {
        self.masks.len()
    }

    /// Whether no layer is masked.
    pub fn is_empty(&self) -> bool {
        self.masks.is_empty()
    }

    /// Layer names in order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.masks.keys().map(String::as_str)
    }

    /// `(name, mask)` pairs in name order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Mask)> {
        self.masks.iter().map(|(k, v)| (k.as_str(), v))
    }

    /// `t` masked by the mask of `name`; errors when `name` has no mask or the shapes differ.
    pub fn apply(&self, name: &str, t: &Tensor) -> Result<Tensor> {
        self.masks
            .get(name)
            .ok_or_else(|| SparsityError::UnknownLayer {
                name: name.to_string(),
                context: "MaskSet::apply: no mask for this name",
            })?
            .apply(t)
    }

    /// `t` masked when `name` has a mask, otherwise `t` unchanged (for loops over all
    /// parameters, biases included).
    pub fn apply_if_masked(&self, name: &str, t: &Tensor) -> Result<Tensor> {
        match self.masks.get(name) {
            Some(m) => m.apply(t),
            None => Ok(t.clone()),
        }
    }

    /// Uploads every mask once to `device` as a `u8` condition tensor, for a training
    /// loop that masks weights, gradients and optimizer state after every step.
    pub fn to_device(&self, device: &Device) -> Result<DeviceMasks> {
        let mut masks = BTreeMap::new();
        for (name, m) in &self.masks {
            masks.insert(name.clone(), (m.shape.clone(), m.to_u8_tensor(device)?));
        }
        Ok(DeviceMasks { masks })
    }

    /// Total number of pruned positions (over all layers) of the named tensors that are
    /// not exactly `+0.0`; unknown names are an error.
    pub fn violations(&self, tensors: &[(&str, &Tensor)]) -> Result<usize> {
        let mut total = 0;
        for (name, t) in tensors {
            let m = self
                .masks
                .get(*name)
                .ok_or_else(|| SparsityError::UnknownLayer {
                    name: name.to_string(),
                    context: "MaskSet::violations: no mask for this name",
                })?;
            total += m.violations(t)?;
        }
        Ok(total)
    }

    /// Whether no mask revives an element pruned in `earlier` (layers absent from
    /// `earlier` are unconstrained; layers of `earlier` missing here are revivals).
    pub fn is_subset_of(&self, earlier: &MaskSet) -> Result<bool> {
        for (name, old) in &earlier.masks {
            match self.masks.get(name) {
                Some(new) => {
                    if !new.is_subset_of(old)? {
                        return Ok(false);
                    }
                }
                None => {
                    if old.pruned() > 0 {
                        return Ok(false);
                    }
                }
            }
        }
        Ok(true)
    }

    /// Per-layer kept / total counts of the masks (see [`SparsitySummary`]).
    pub fn summary(&self) -> SparsitySummary {
        SparsitySummary {
            layers: self
                .masks
                .iter()
                .map(|(name, m)| LayerSparsity {
                    name: name.clone(),
                    nonzero: m.nonzero(),
                    total: m.len(),
                })
                .collect(),
        }
    }
}

impl FromIterator<(String, Mask)> for MaskSet {
    fn from_iter<I: IntoIterator<Item = (String, Mask)>>(iter: I) -> Self {
        Self {
            masks: iter.into_iter().collect(),
        }
    }
}

/// A [`MaskSet`] uploaded to one device (built by [`MaskSet::to_device`]), so that
/// masking after every optimizer step costs one `where_cond` per tensor.
#[derive(Debug, Clone)]
pub struct DeviceMasks {
    masks: BTreeMap<String, (Vec<usize>, Tensor)>,
}

impl DeviceMasks {
    /// The condition tensor of `name`, after checking that `t` has the mask's shape.
    fn cond_for(&self, name: &str, t: &Tensor, context: &'static str) -> Result<&Tensor> {
        let (shape, cond) = self
            .masks
            .get(name)
            .ok_or_else(|| SparsityError::UnknownLayer {
                name: name.to_string(),
                context,
            })?;
        if t.dims() != shape.as_slice() {
            return Err(SparsityError::ShapeMismatch {
                name: name.to_string(),
                expected: shape.clone(),
                got: t.dims().to_vec(),
            });
        }
        Ok(cond)
    }

    /// `t` with the pruned positions of `name` set to `+0.0`; errors on unknown names,
    /// shape mismatches or a tensor on another device.
    pub fn apply(&self, name: &str, t: &Tensor) -> Result<Tensor> {
        apply_cond(
            self.cond_for(name, t, "DeviceMasks::apply: no mask for this name")?,
            t,
        )
    }

    /// Like [`DeviceMasks::apply`], but returns `t` unchanged for unmasked names.
    pub fn apply_if_masked(&self, name: &str, t: &Tensor) -> Result<Tensor> {
        if self.masks.contains_key(name) {
            self.apply(name, t)
        } else {
            Ok(t.clone())
        }
    }

    /// Sets the pruned positions of `name` in `t` to `+0.0` in place, without allocating, when `t` is a
    /// contiguous f32/f64 tensor on the CPU; returns `Ok(false)` (and leaves `t` alone) otherwise, so the
    /// caller can fall back to [`DeviceMasks::apply`]. Errors on unknown names and shape mismatches.
    ///
    /// Writing into `t` changes every tensor that shares its storage: use it on tensors the caller
    /// owns (a parameter after the optimizer step, a gradient in a `GradStore`).
    pub fn zero_in_place(&self, name: &str, t: &Tensor) -> Result<bool> {
        let cond = self.cond_for(name, t, "DeviceMasks::zero_in_place: no mask for this name")?;
        if !t.device().is_cpu()
            || !cond.device().is_cpu()
            || !t.is_contiguous()
            || !matches!(t.dtype(), DType::F32 | DType::F64)
        {
            return Ok(false);
        }
        t.inplace_op2(cond, &ZeroPruned)?;
        Ok(true)
    }

    /// Whether `name` has a mask.
    pub fn contains(&self, name: &str) -> bool {
        self.masks.contains_key(name)
    }
}

/// In-place op: `dst[i] = +0.0` where the u8 mask is 0 (CPU, contiguous f32/f64 `dst`).
struct ZeroPruned;

impl candle_core::InplaceOp2 for ZeroPruned {
    fn name(&self) -> &'static str {
        "deepcomp-zero-pruned"
    }

    fn cpu_fwd(
        &self,
        dst: &mut candle_core::CpuStorage,
        dl: &candle_core::Layout,
        mask: &candle_core::CpuStorage,
        ml: &candle_core::Layout,
    ) -> candle_core::Result<()> {
        use candle_core::CpuStorage;
        let range = |l: &candle_core::Layout, what: &str| {
            l.contiguous_offsets().ok_or_else(|| {
                candle_core::Error::Msg(format!("zero_in_place: {what} must be contiguous"))
            })
        };
        let (m0, m1) = range(ml, "mask")?;
        let (d0, d1) = range(dl, "tensor")?;
        let CpuStorage::U8(m) = mask else {
            candle_core::bail!("zero_in_place: the mask must be u8");
        };
        let m = m
            .get(m0..m1)
            .ok_or_else(|| candle_core::Error::Msg("zero_in_place: mask out of bounds".into()))?;
        fn zero<T: Copy + Default>(v: &mut [T], m: &[u8]) -> candle_core::Result<()> {
            if v.len() != m.len() {
                candle_core::bail!(
                    "zero_in_place: {} values but {} mask entries",
                    v.len(),
                    m.len()
                );
            }
            for (x, &keep) in v.iter_mut().zip(m) {
                // A select, not a conditional store, so that the loop vectorizes; masks are random
                // patterns and a branch on them mispredicts. `Default` is +0.0 for floats.
                *x = if keep == 0 { T::default() } else { *x };
            }
            Ok(())
        }
        let oob = || candle_core::Error::Msg("zero_in_place: tensor out of bounds".into());
        match dst {
            CpuStorage::F32(v) => zero(v.get_mut(d0..d1).ok_or_else(oob)?, m),
            CpuStorage::F64(v) => zero(v.get_mut(d0..d1).ok_or_else(oob)?, m),
            _ => candle_core::bail!("zero_in_place: only f32 and f64 tensors"),
        }
    }
}
