//! The seam between training and compression: a hook the training loop calls around each optimizer step.
//!
//! The sparsity crate's masks and the quant crate's centroid training act through this trait (the driver
//! implements it on top of them), so the models crate never depends on either.

use candle_core::backprop::GradStore;
use candle_core::Tensor;

use crate::error::Result;
use crate::model::Model;
use crate::optim::Optimizer;

/// Called by the training loop; every method has a do-nothing default.
pub trait TrainHook: Send {
    /// Before the first batch of `epoch` (0-based). Pruning schedules act here.
    fn on_epoch_start(&mut self, _epoch: usize, _model: &dyn Model) -> Result<()> {
        Ok(())
    }

    /// Between the forward pass and `backward`: given the batch's `images`, the model's `logits` (part of
    /// the graph) and the cross-entropy `loss`, returns the loss to differentiate. The default returns
    /// `loss` unchanged; knowledge distillation ([`crate::distill::Distill`]) mixes in a teacher's soft
    /// targets here.
    fn loss(&mut self, _images: &Tensor, _logits: &Tensor, loss: Tensor) -> Result<Tensor> {
        Ok(loss)
    }

    /// After `loss.backward()`, before the optimizer step: may rewrite gradients (mask them, group them).
    fn after_backward(&mut self, _model: &dyn Model, _grads: &mut GradStore) -> Result<()> {
        Ok(())
    }

    /// After the optimizer step: may rewrite weights and optimizer state (re-apply masks, zero momentum,
    /// write shared centroids back).
    fn after_step(&mut self, _model: &dyn Model, _opt: &mut dyn Optimizer) -> Result<()> {
        Ok(())
    }

    /// The masks to store in a checkpoint, named by parameter (`fc1.weight` → its 0/1 mask). The training
    /// loop's checkpoints save them under `mask.<param>`; hooks without masks keep the empty default.
    fn masks(&self) -> Vec<(String, Tensor)> {
        Vec::new()
    }
}

/// The hook that does nothing (plain training).
#[derive(Debug, Default, Clone, Copy)]
pub struct NoHook;

impl TrainHook for NoHook {}
