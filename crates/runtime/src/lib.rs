//! # deepcomp-runtime
//!
//! Runs a model compressed with Deep Compression (Han, Mao, Dally 2016) straight from its `.dcz`
//! file, without decoding the weights back to dense `f32` and without candle. A `.dcz` stores, per
//! pruned layer, the positions of the kept weights and one cluster code per kept weight into a small
//! `f32` codebook. The runtime keeps exactly that information in memory, in a form made for the
//! kernels rather than for the disk: per output row (a neuron, or an output channel of a convolution)
//! a run of `(gap: u8, code)` entries, the column advancing by `gap` and the value being
//! `codebook[code]`, as in EIE (Han et al. 2016, ISCA). A kept weight costs 2 bytes instead of 4 for a
//! dense `f32` that is mostly zeros; gaps over 255 are bridged by filler entries whose code points to a
//! `0.0` in the codebook.
//!
//! **Kernels.** Fully connected layers run on a feature-major batch (`[features][batch]`): each
//! entry decodes its column and weight once and adds `w · x[col][..]` to the output row over the whole
//! batch, a contiguous, vectorizable loop; at batch 1 it is a gather-dot with four accumulators.
//! Convolutions run per sample in NCHW: each kept weight `(ci, ky, kx)` adds `w · x[ci]` shifted by
//! `(ky, kx)` to its output plane, with the zero padding skipped rather than materialized; batch norm
//! (eval mode, running statistics) is folded into a per-channel scale and shift after the convolution.
//! Rows / channels (batch 1) or samples (larger batches) are spread over the rayon pool; set its size
//! with `RAYON_NUM_THREADS` or run inside `ThreadPool::install`.
//!
//! **Architectures.** The forward pass is chosen by the file's model id ([`DczFile::model`]) and the
//! shapes of its tensors: `lenet300` and `mlp` (a chain `fc1`, `fc2`, … with ReLU between), `lenet5`
//! (Caffe LeNet-5: conv, pool, conv, pool, `fc1` + ReLU, `fc2`), `cifar_lenet` and `resnet20`
//! (option-A shortcuts). Tensor names are those of `deepcomp-models` (PyTorch's). An unknown id is an
//! error naming it.
//!
//! **Input.** `f32`, NCHW (or, for the MLPs, flattened `[batch][features]`, which is the same memory),
//! already normalized as in training: `(pixel/255 − mean[c]) / std[c]`; [`normalize_u8`] does it from
//! raw bytes with [`MNIST_MEAN_STD`]-style constants. The output is `[batch][classes]` logits.
//!
//! ```no_run
//! use deepcomp_runtime::CompressedModel;
//! let model = CompressedModel::load(std::path::Path::new("model.dcz"))?;
//! let x = vec![0f32; model.input_len()];
//! let logits = model.forward(&x, 1)?;
//! println!("{} classes, {} weight bytes", logits.len(), model.weight_bytes());
//! # Ok::<(), deepcomp_runtime::RuntimeError>(())
//! ```

mod arch;
mod error;
mod ops;
mod sparse;

use std::path::Path;

pub use deepcomp_format::DczFile;
pub use error::{Result, RuntimeError};

/// Mean and standard deviation of MNIST (as `deepcomp-datasets` uses them), for [`normalize_u8`].
pub const MNIST_MEAN_STD: ([f32; 1], [f32; 1]) = ([0.1307], [0.3081]);
/// Mean and standard deviation of Fashion-MNIST.
pub const FASHION_MNIST_MEAN_STD: ([f32; 1], [f32; 1]) = ([0.2860], [0.3530]);
/// Per-channel mean and standard deviation of CIFAR-10.
pub const CIFAR10_MEAN_STD: ([f32; 3], [f32; 3]) =
    ([0.4914, 0.4822, 0.4465], [0.2470, 0.2435, 0.2616]);

/// Normalizes raw NCHW bytes to the network input: `(v/255 − mean[c]) / std[c]`, where `c` is the
/// channel of each value (`pixels.len()` must be a multiple of `mean.len() · plane`).
pub fn normalize_u8(pixels: &[u8], plane: usize, mean: &[f32], std: &[f32]) -> Vec<f32> {
    let c = mean.len().max(1);
    pixels
        .iter()
        .enumerate()
        .map(|(i, &v)| {
            let ch = (i / plane.max(1)) % c;
            (v as f32 / 255.0 - mean[ch]) / std[ch]
        })
        .collect()
}

/// A model loaded from a `.dcz`, its weights kept compressed, ready to run.
#[derive(Debug, Clone)]
pub struct CompressedModel {
    model: String,
    net: arch::Net,
}

/// Per-layer figures of a loaded model.
#[derive(Debug, Clone, PartialEq)]
pub struct LayerSummary {
    /// Weight tensor name.
    pub name: String,
    /// Weights of the dense tensor.
    pub params: usize,
    /// Kept (nonzero) weights.
    pub nonzero: usize,
    /// Resident bytes of the compressed form (with bias / folded batch norm).
    pub bytes: usize,
}

impl CompressedModel {
    /// Reads and loads a `.dcz` file.
    pub fn load(path: &Path) -> Result<Self> {
        let file = DczFile::read(path).map_err(|source| RuntimeError::Container {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_file(&file)
    }

    /// Loads from a parsed container.
    pub fn from_file(file: &DczFile) -> Result<Self> {
        Ok(Self {
            model: file.model.clone(),
            net: arch::Net::build(file)?,
        })
    }

    /// The model id of the file (`lenet300`, `resnet20`, …).
    pub fn model_id(&self) -> &str {
        &self.model
    }

    /// Per-sample input shape `[C, H, W]` (the MLPs report `[1, 1, features]` unless the feature count
    /// is a square, then `[1, s, s]`).
    pub fn input_shape(&self) -> [usize; 3] {
        self.net.input_shape()
    }

    /// Values per sample (`C·H·W`).
    pub fn input_len(&self) -> usize {
        self.input_shape().iter().product()
    }

    /// Output classes.
    pub fn num_classes(&self) -> usize {
        self.net.num_classes()
    }

    /// ResNet-20 only: sets the input side (a multiple of 4, default 32; the network ends in a global
    /// average pool, so any such side works). Other models: an error unless `side` is their side.
    pub fn set_input_side(&mut self, side: usize) -> Result<()> {
        self.net.set_input_side(side)
    }

    /// Logits `[batch][classes]` for `input` = `batch` samples of [`Self::input_shape`], NCHW, normalized.
    pub fn forward(&self, input: &[f32], batch: usize) -> Result<Vec<f32>> {
        let per = self.input_len();
        if batch == 0 || input.len() != batch * per {
            return Err(RuntimeError::Input {
                reason: format!(
                    "expected {batch} × {:?} = {} values (batch ≥ 1), got {}",
                    self.input_shape(),
                    batch * per,
                    input.len()
                ),
            });
        }
        Ok(self.net.forward(input, batch))
    }

    /// Index of the largest logit of each sample.
    pub fn predict(&self, input: &[f32], batch: usize) -> Result<Vec<usize>> {
        let logits = self.forward(input, batch)?;
        Ok(argmax_rows(&logits, self.num_classes()))
    }

    /// Resident bytes of all weights as the runtime holds them (compressed layers, biases, folded
    /// batch norm).
    pub fn weight_bytes(&self) -> usize {
        self.net.layers().iter().map(|l| l.bytes).sum()
    }

    /// Bytes the same weights take as dense `f32` (weights, biases, folded batch norm).
    pub fn dense_bytes(&self) -> usize {
        self.net.dense_bytes()
    }

    /// Decodes every weight matrix to dense `f32` (same kernels' loop structure, every multiply done):
    /// the dense-decoded baseline. [`Self::weight_bytes`] then equals [`Self::dense_bytes`].
    pub fn decode_dense(&mut self) {
        for w in self.net.weights_mut() {
            w.densify();
        }
    }

    /// Per-layer figures.
    pub fn layers(&self) -> Vec<LayerSummary> {
        self.net.layers()
    }
}

/// Arg-max of each row of `logits` (`classes` values per row); ties go to the first.
pub fn argmax_rows(logits: &[f32], classes: usize) -> Vec<usize> {
    logits
        .chunks(classes.max(1))
        .map(|row| {
            let mut best = 0;
            for (i, &v) in row.iter().enumerate() {
                if v > row[best] {
                    best = i;
                }
            }
            best
        })
        .collect()
}
