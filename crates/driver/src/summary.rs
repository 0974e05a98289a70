//! The JSON documents of `deepcomp compress --json`, `inspect --json` and `eval --json`.
//!
//! Field names are a contract with users' scripts (documented in the README): new fields may be
//! added, none is renamed or removed.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::container::{self, DczFile, LayerKind};
use crate::error::Result;

/// One weight-shared layer of a `.dcz` file.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct LayerSummary {
    /// Tensor name (`fc1.weight`).
    pub name: String,
    /// `conv` or `fc`.
    pub kind: String,
    /// Tensor shape.
    pub shape: Vec<usize>,
    /// Elements of the dense tensor.
    pub params: u64,
    /// Weights kept (not pruned).
    pub nonzero: u64,
    /// Weight-sharing bits (codebook of at most 2^bits values).
    pub bits: u8,
    /// Relative-index field width.
    pub index_bits: u8,
    /// Huffman-coded bits per kept weight for its cluster code.
    pub huffman_avg_bits: f64,
    /// Huffman-coded relative-index bits per kept weight.
    pub index_avg_bits: f64,
    /// The dense tensor as fp32: `4 × params`.
    pub bytes_in: u64,
    /// Bytes of this layer's section in the file.
    pub bytes: u64,
    /// `bytes_in / bytes`.
    pub ratio: f64,
}

/// A tensor stored raw (fp32) in the file: biases, BatchNorm.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RawSummary {
    /// Tensor name.
    pub name: String,
    /// Tensor shape.
    pub shape: Vec<usize>,
    /// `4 × elements`.
    pub bytes: u64,
}

/// A `.dcz` file and how much it compresses.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct FileSummary {
    /// The subcommand that wrote this document: `compress` or `inspect`.
    pub command: String,
    /// The `.dcz` file.
    pub file: String,
    /// The input file (`compress`), else absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input: Option<String>,
    /// Model id stored in the file.
    pub model: String,
    /// SHA-256 of the recipe (hex; zeros when written by `compress`).
    pub recipe_hash: String,
    /// Every tensor as fp32: the uncompressed size.
    pub bytes_in: u64,
    /// The file's size.
    pub bytes_out: u64,
    /// `bytes_in / bytes_out`.
    pub ratio: f64,
    /// Weights of the shared layers.
    pub params: u64,
    /// Weights kept.
    pub nonzero: u64,
    /// One row per weight-shared layer.
    pub layers: Vec<LayerSummary>,
    /// Tensors stored raw.
    pub raw: Vec<RawSummary>,
}

fn ratio(a: u64, b: u64) -> f64 {
    if b == 0 {
        0.0
    } else {
        a as f64 / b as f64
    }
}

/// The summary of `file`, whose encoded size is `bytes_out`, written at `path`.
pub fn file_summary(
    command: &str,
    path: &Path,
    input: Option<&Path>,
    file: &DczFile,
    bytes_out: u64,
) -> Result<FileSummary> {
    let stats = container::layer_stats(file)?;
    let layers: Vec<LayerSummary> = file
        .layers
        .iter()
        .zip(&stats)
        .map(|(l, s)| LayerSummary {
            name: l.name.clone(),
            kind: match l.kind {
                LayerKind::Conv => "conv".into(),
                LayerKind::Fc => "fc".into(),
            },
            shape: l.shape.clone(),
            params: s.params,
            nonzero: s.nonzero,
            bits: l.bits,
            index_bits: l.index_bits,
            huffman_avg_bits: s.huffman_avg_bits,
            index_avg_bits: s.index_avg_bits,
            bytes_in: 4 * s.params,
            bytes: s.bytes,
            ratio: ratio(4 * s.params, s.bytes),
        })
        .collect();
    let raw: Vec<RawSummary> = file
        .dense
        .iter()
        .map(|d| RawSummary {
            name: d.name.clone(),
            shape: d.shape.clone(),
            bytes: 4 * d.data.len() as u64,
        })
        .collect();
    let bytes_in =
        layers.iter().map(|l| l.bytes_in).sum::<u64>() + raw.iter().map(|r| r.bytes).sum::<u64>();
    Ok(FileSummary {
        command: command.into(),
        file: path.display().to_string(),
        input: input.map(|p| p.display().to_string()),
        model: file.model.clone(),
        recipe_hash: hex::encode(file.recipe_hash),
        bytes_in,
        bytes_out,
        ratio: ratio(bytes_in, bytes_out),
        params: layers.iter().map(|l| l.params).sum(),
        nonzero: layers.iter().map(|l| l.nonzero).sum(),
        layers,
        raw,
    })
}

/// The result of `deepcomp eval --json`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct EvalSummary {
    /// Always `eval`.
    pub command: String,
    /// The model file evaluated.
    pub file: String,
    /// The recipe (built-in name or path) giving architecture and data.
    pub recipe: String,
    /// `dense` or `compressed`.
    pub engine: String,
    /// The split evaluated (`test`).
    pub split: String,
    /// Examples evaluated.
    pub examples: usize,
    /// Top-1 in [0, 1].
    pub accuracy: f64,
    /// Top-5 in [0, 1] (NaN is written as null).
    pub top5: Option<f64>,
}
