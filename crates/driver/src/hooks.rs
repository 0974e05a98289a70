//! The two training hooks that tie compression to the models crate's training loop.
//!
//! [`MaskHook`] is the masked-finetune contract: gradients of pruned weights are zeroed after backward;
//! after every optimizer step, pruned weights are written back as exactly 0.0 and the optimizer's state
//! for them (momentum, Adam moments) is zeroed. [`CentroidHook`] is trained quantization (paper §3.3):
//! the codes stay fixed, each centroid moves by `lr × Σ gradients of its weights`, and the shared weights
//! are written back after the step; the optimizer never sees their gradients.

use std::collections::BTreeMap;

use candle_core::backprop::GradStore;
use candle_core::{Device, Tensor, Var};
use deepcomp_models::{Model, ModelError, Optimizer, TrainHook};
use deepcomp_quant::SharedWeights;
use deepcomp_sparsity::{DeviceMasks, MaskSet};

fn hook_err<E: std::error::Error + Send + Sync + 'static>(e: E) -> ModelError {
    ModelError::Hook(Box::new(e))
}

fn var_of(model: &dyn Model, name: &str) -> Result<Var, ModelError> {
    model
        .params()
        .get(name)
        .map(|p| p.var.clone())
        .ok_or_else(|| ModelError::UnknownParam(name.to_string()))
}

/// Keeps pruned weights at exactly zero through training.
#[derive(Debug)]
pub struct MaskHook {
    /// 0/1 f32 masks (for gradients and optimizer state), keyed by weight name.
    masks: BTreeMap<String, Tensor>,
    /// The same masks for `where`-style application: a pruned weight becomes +0.0 exactly (a
    /// multiplication would leave -0.0 for negative weights, which is not bit-equal to a decoded 0).
    exact: DeviceMasks,
}

impl MaskHook {
    /// Masks on `device`, keyed by weight name.
    pub fn new(masks: &MaskSet, device: &Device) -> Result<Self, deepcomp_sparsity::SparsityError> {
        let mut out = BTreeMap::new();
        for (name, m) in masks.iter() {
            out.insert(name.to_string(), m.to_tensor(device)?);
        }
        Ok(Self {
            masks: out,
            exact: masks.to_device(device)?,
        })
    }

    /// Sets every pruned weight of `model` to +0.0.
    pub fn apply_to_weights(&self, model: &dyn Model) -> Result<(), ModelError> {
        for name in self.masks.keys() {
            let var = var_of(model, name)?;
            if !self
                .exact
                .zero_in_place(name, var.as_tensor())
                .map_err(hook_err)?
            {
                var.set(&self.exact.apply(name, var.as_tensor()).map_err(hook_err)?)?;
            }
        }
        Ok(())
    }
}

impl TrainHook for MaskHook {
    fn after_backward(
        &mut self,
        model: &dyn Model,
        grads: &mut GradStore,
    ) -> Result<(), ModelError> {
        for name in self.masks.keys() {
            let var = var_of(model, name)?;
            if let Some(g) = grads.get(var.as_tensor()) {
                // The gradient belongs to this step's GradStore alone: zero it in place where possible.
                if !self.exact.zero_in_place(name, g).map_err(hook_err)? {
                    let masked = self.exact.apply(name, g).map_err(hook_err)?;
                    grads.insert(var.as_tensor(), masked);
                }
            }
        }
        Ok(())
    }

    fn after_step(&mut self, model: &dyn Model, opt: &mut dyn Optimizer) -> Result<(), ModelError> {
        self.apply_to_weights(model)?;
        for (name, mask) in &self.masks {
            opt.mask_state(name, mask)?;
        }
        Ok(())
    }
}

/// One shared layer under centroid training.
#[derive(Debug)]
pub struct SharedLayer {
    /// Weight name.
    pub name: String,
    /// Tensor shape.
    pub shape: Vec<usize>,
    /// Codebook, positions and codes.
    pub shared: SharedWeights,
}

/// Trains the centroids of shared layers with fixed codes.
#[derive(Debug)]
pub struct CentroidHook {
    /// The shared layers.
    pub layers: Vec<SharedLayer>,
    /// Centroid learning rate.
    pub lr: f32,
    device: Device,
}

impl CentroidHook {
    /// A hook over `layers` with centroid learning rate `lr`.
    pub fn new(layers: Vec<SharedLayer>, lr: f32, device: Device) -> Self {
        Self { layers, lr, device }
    }

    /// Writes every layer's `codebook[code]` (zeros where pruned) into the model.
    pub fn write_weights(&self, model: &dyn Model) -> Result<(), ModelError> {
        for l in &self.layers {
            let var = var_of(model, &l.name)?;
            let t = l
                .shared
                .to_tensor(l.shape.as_slice(), &self.device)
                .map_err(hook_err)?;
            var.set(&t)?;
        }
        Ok(())
    }
}

impl TrainHook for CentroidHook {
    fn after_backward(
        &mut self,
        model: &dyn Model,
        grads: &mut GradStore,
    ) -> Result<(), ModelError> {
        for l in &mut self.layers {
            let var = var_of(model, &l.name)?;
            if let Some(g) = grads.remove(var.as_tensor()) {
                let flat: Vec<f32> = g.flatten_all()?.to_vec1()?;
                l.shared.centroid_step(&flat, self.lr).map_err(hook_err)?;
            }
        }
        Ok(())
    }

    fn after_step(
        &mut self,
        model: &dyn Model,
        _opt: &mut dyn Optimizer,
    ) -> Result<(), ModelError> {
        self.write_weights(model)
    }
}
