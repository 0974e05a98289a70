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
    /// One scale per output channel that multiplies `codebook[code]` (uniform quantization per
    /// channel: the codebook holds the integer levels); `None` for an ordinary codebook.
    pub channel_steps: Option<Vec<f32>>,
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

/// Several hooks in a row: each method calls every hook in order.
#[derive(Default)]
pub struct Chain<'a>(pub Vec<&'a mut dyn TrainHook>);

impl std::fmt::Debug for Chain<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Chain({} hooks)", self.0.len())
    }
}

impl TrainHook for Chain<'_> {
    fn on_epoch_start(&mut self, epoch: usize, model: &dyn Model) -> Result<(), ModelError> {
        for h in &mut self.0 {
            h.on_epoch_start(epoch, model)?;
        }
        Ok(())
    }

    fn loss(
        &mut self,
        images: &Tensor,
        logits: &Tensor,
        loss: Tensor,
    ) -> Result<Tensor, ModelError> {
        let mut loss = loss;
        for h in &mut self.0 {
            loss = h.loss(images, logits, loss)?;
        }
        Ok(loss)
    }

    fn after_backward(
        &mut self,
        model: &dyn Model,
        grads: &mut GradStore,
    ) -> Result<(), ModelError> {
        for h in &mut self.0 {
            h.after_backward(model, grads)?;
        }
        Ok(())
    }

    fn after_step(&mut self, model: &dyn Model, opt: &mut dyn Optimizer) -> Result<(), ModelError> {
        for h in &mut self.0 {
            h.after_step(model, opt)?;
        }
        Ok(())
    }
}

/// Keeps some weights fixed: their gradients are dropped, so the optimizer never moves them.
#[derive(Debug, Default)]
pub struct FreezeHook {
    /// Weight names.
    pub names: Vec<String>,
}

impl TrainHook for FreezeHook {
    fn after_backward(
        &mut self,
        model: &dyn Model,
        grads: &mut GradStore,
    ) -> Result<(), ModelError> {
        for name in &self.names {
            let var = var_of(model, name)?;
            grads.remove(var.as_tensor());
        }
        Ok(())
    }
}

/// Which sparsity-inducing regularizer a [`RegularizerHook`] applies.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Regularizer {
    /// `λ · sign(w)` added to the gradient (sub-gradient descent on `L + λ‖w‖₁`).
    L1 {
        /// λ.
        lambda: f64,
    },
    /// Soft thresholding by `lr · λ` after every optimizer step (proximal gradient).
    ProxL1 {
        /// λ.
        lambda: f64,
    },
    /// Soft thresholding by `lr · λ` of the smallest magnitudes of each layer only (trimmed L1).
    TrimmedL1 {
        /// λ.
        lambda: f64,
        /// Weights penalized per layer (capped at the layer's size).
        k: Option<usize>,
        /// Or this fraction of each layer's elements.
        fraction: Option<f64>,
    },
}

impl Regularizer {
    /// From a recipe's `regularizer` table (validated).
    pub fn from_recipe(r: &crate::recipe::RegularizerSection) -> Self {
        match r.kind.as_str() {
            "prox_l1" => Regularizer::ProxL1 { lambda: r.lambda },
            "trimmed_l1" => Regularizer::TrimmedL1 {
                lambda: r.lambda,
                k: r.k,
                fraction: r.fraction,
            },
            _ => Regularizer::L1 { lambda: r.lambda },
        }
    }
}

/// Applies a [`Regularizer`] to named weights during training (chain it before a [`MaskHook`], which
/// then keeps pruned weights and their gradients at zero).
#[derive(Debug)]
pub struct RegularizerHook {
    /// The regularizer.
    pub reg: Regularizer,
    /// Weight names (the prunable weights).
    pub names: Vec<String>,
}

impl TrainHook for RegularizerHook {
    fn after_backward(
        &mut self,
        model: &dyn Model,
        grads: &mut GradStore,
    ) -> Result<(), ModelError> {
        if let Regularizer::L1 { lambda } = self.reg {
            for name in &self.names {
                let var = var_of(model, name)?;
                if let Some(g) = grads.get(var.as_tensor()) {
                    let sub =
                        deepcomp_sparsity::regularize::l1_subgradient(var.as_tensor(), lambda)
                            .map_err(hook_err)?;
                    let g = g.add(&sub)?;
                    grads.insert(var.as_tensor(), g);
                }
            }
        }
        Ok(())
    }

    fn after_step(&mut self, model: &dyn Model, opt: &mut dyn Optimizer) -> Result<(), ModelError> {
        use deepcomp_sparsity::regularize::{soft_threshold, trimmed_soft_threshold};
        let lr = opt.lr();
        for name in &self.names {
            let var = var_of(model, name)?;
            let w = var.as_tensor();
            let new = match self.reg {
                Regularizer::L1 { .. } => continue,
                Regularizer::ProxL1 { lambda } => {
                    soft_threshold(w, lr * lambda).map_err(hook_err)?
                }
                Regularizer::TrimmedL1 {
                    lambda,
                    k,
                    fraction,
                } => {
                    let n = w.elem_count();
                    let k = match (k, fraction) {
                        (Some(k), _) => k.min(n),
                        (None, Some(f)) => ((f * n as f64).round() as usize).min(n),
                        (None, None) => 0,
                    };
                    trimmed_soft_threshold(w, lr * lambda, k).map_err(hook_err)?
                }
            };
            var.set(&new)?;
        }
        Ok(())
    }
}

/// One layer under quantization-aware training.
#[derive(Debug, Clone)]
pub struct SteLayer {
    /// Weight name.
    pub name: String,
    /// Tensor shape.
    pub shape: Vec<usize>,
    /// Bits.
    pub bits: u8,
    /// Per output channel (one scale per row of dimension 0) rather than per tensor.
    pub per_channel: bool,
    /// Kept positions (pruned ones stay zero and do not count in the scale); `None`: all.
    pub keep: Option<Vec<bool>>,
}

impl SteLayer {
    /// The layer's float weights `w` quantized: step `Δ = 2q / 2^bits` with `q = max |w|` of the kept
    /// weights of the tensor or channel (dynamic scaling), levels clipped to `[−2^(bits−1), 2^(bits−1) − 1]`.
    pub fn quantize(
        &self,
        w: &[f32],
    ) -> Result<deepcomp_quant::RangeCodes, deepcomp_quant::QuantError> {
        let groups = if self.per_channel {
            self.shape.first().copied().unwrap_or(1).max(1)
        } else {
            1
        };
        deepcomp_quant::range_codes(
            w,
            self.keep.as_deref(),
            groups,
            self.bits,
            deepcomp_quant::RangeScale::MaxAbs,
        )
    }
}

/// Quantization-aware training with the straight-through estimator (seed 003, Lab 3): the forward and
/// backward passes see the quantized weights, the optimizer updates float "shadow" weights with those
/// gradients (the quantizer's derivative is taken as 1), and the next step quantizes them again with a
/// fresh scale.
///
/// Mechanics, per batch: the model's weights hold the quantized values during forward and backward;
/// `after_backward` writes the float weights back (the gradients stay), the optimizer steps them, and
/// `after_step` re-applies the masks (keep-zeros: pruned weights, their gradients and their optimizer
/// state stay zero), remembers the new float weights and writes their quantization into the model. So
/// between steps, and after training, the model holds quantized weights; [`Self::codes`] gives their
/// codes.
#[derive(Debug)]
pub struct SteHook {
    /// The layers.
    pub layers: Vec<SteLayer>,
    /// Float weights, by layer name (empty before the first batch).
    shadow: BTreeMap<String, Vec<f32>>,
    masks: Option<MaskHook>,
    device: Device,
}

impl SteHook {
    /// A hook over `layers`; `masks` (of these layers) keeps pruned weights at zero.
    pub fn new(layers: Vec<SteLayer>, masks: Option<MaskHook>, device: Device) -> Self {
        Self {
            layers,
            shadow: BTreeMap::new(),
            masks,
            device,
        }
    }

    /// Takes the model's current weights as the float weights and writes their quantization into the
    /// model (done by the first batch if not called).
    pub fn start(&mut self, model: &dyn Model) -> Result<(), ModelError> {
        if let Some(m) = &self.masks {
            m.apply_to_weights(model)?;
        }
        for l in &self.layers {
            let var = var_of(model, &l.name)?;
            let w: Vec<f32> = var.as_tensor().flatten_all()?.to_vec1()?;
            self.shadow.insert(l.name.clone(), w);
        }
        self.write_quantized(model)
    }

    fn write_quantized(&self, model: &dyn Model) -> Result<(), ModelError> {
        for l in &self.layers {
            let var = var_of(model, &l.name)?;
            let w = self
                .shadow
                .get(&l.name)
                .ok_or_else(|| ModelError::UnknownParam(l.name.clone()))?;
            let q = l.quantize(w).map_err(hook_err)?;
            var.set(&Tensor::from_vec(
                q.values,
                l.shape.as_slice(),
                &self.device,
            )?)?;
        }
        Ok(())
    }

    /// The codes of every layer's current quantization (after training: what the model holds).
    pub fn codes(&self) -> Result<Vec<deepcomp_quant::RangeCodes>, ModelError> {
        self.layers
            .iter()
            .map(|l| {
                let w = self
                    .shadow
                    .get(&l.name)
                    .ok_or_else(|| ModelError::UnknownParam(l.name.clone()))?;
                l.quantize(w).map_err(hook_err)
            })
            .collect()
    }
}

impl TrainHook for SteHook {
    fn on_epoch_start(&mut self, _epoch: usize, model: &dyn Model) -> Result<(), ModelError> {
        if self.shadow.is_empty() {
            self.start(model)?;
        }
        Ok(())
    }

    fn after_backward(
        &mut self,
        model: &dyn Model,
        grads: &mut GradStore,
    ) -> Result<(), ModelError> {
        if let Some(m) = &mut self.masks {
            m.after_backward(model, grads)?;
        }
        for l in &self.layers {
            let var = var_of(model, &l.name)?;
            if let Some(w) = self.shadow.get(&l.name) {
                var.set(&Tensor::from_vec(
                    w.clone(),
                    l.shape.as_slice(),
                    &self.device,
                )?)?;
            }
        }
        Ok(())
    }

    fn after_step(&mut self, model: &dyn Model, opt: &mut dyn Optimizer) -> Result<(), ModelError> {
        if let Some(m) = &mut self.masks {
            m.after_step(model, opt)?;
        }
        for l in &self.layers {
            let var = var_of(model, &l.name)?;
            let w: Vec<f32> = var.as_tensor().flatten_all()?.to_vec1()?;
            self.shadow.insert(l.name.clone(), w);
        }
        self.write_quantized(model)
    }
}
