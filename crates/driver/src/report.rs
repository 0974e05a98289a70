//! The run report: `report.json` (machine-readable) and `report.md` (tables a person reads).
//!
//! Field names are a contract with `cargo xtask ci` and with users' scripts: `accuracy.*` (top-1 in
//! [0, 1]), `bytes.*`, `ratio.*`, `layers[]`, `seconds.*`. The ratios follow the paper's tables:
//! `p` = pruning only (nonzero fp32 values + fixed-width relative indices), `pq` = + weight sharing
//! (fixed-width codes + codebook), `pqh` = + Huffman coding (the real `.dcz` file), and `formula` = the
//! seeds' `1 / (nonzero/total × bits/32 × huffman_avg/bits)`, which ignores index bytes.

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

/// How many examples each split has in this run.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Examples {
    /// Training examples (after `data.train_limit`), validation excluded.
    pub train: usize,
    /// Held out of the training split; every choice the pipeline makes is made on these.
    pub validation: usize,
    /// Test examples (after `data.test_limit`); every reported accuracy is measured on these.
    pub test: usize,
}

/// Top-1 accuracy after each stage.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Accuracy {
    /// Dense trained (or loaded) model.
    pub dense: f64,
    /// Right after the last pruning step, before its finetuning.
    pub pruned: f64,
    /// After masked finetuning.
    pub finetuned: f64,
    /// After weight sharing and centroid finetuning.
    pub quantized: f64,
    /// The model decoded from the `.dcz` file (equal to `quantized` when decoding is exact).
    pub decoded: f64,
}

/// Sizes in bytes.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Bytes {
    /// Every tensor of the model as fp32.
    pub dense_f32: u64,
    /// The `.dcz` file.
    pub dcz: u64,
    /// Pruning only: nonzero fp32 values + fixed-width relative indices + other tensors fp32.
    pub p: u64,
    /// Pruning + quantization: fixed-width codes + indices + codebooks + other tensors fp32.
    pub pq: u64,
}

/// Compression ratios (dense fp32 bytes / compressed bytes).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Ratio {
    /// The seeds' formula over the prunable weights.
    pub formula: f64,
    /// `bytes.dense_f32 / bytes.dcz`.
    pub file: f64,
    /// `bytes.dense_f32 / bytes.p`.
    pub p: f64,
    /// `bytes.dense_f32 / bytes.pq`.
    pub pq: f64,
    /// Pruning + quantization + Huffman: the file (equal to `file`).
    pub pqh: f64,
}

/// Wall time per stage in seconds.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Seconds {
    /// Dense training (0 when loaded).
    pub train: f64,
    /// Mask computation.
    pub prune: f64,
    /// Masked finetuning.
    pub finetune: f64,
    /// k-means and centroid finetuning.
    pub quantize: f64,
    /// Encoding, writing, decoding and verifying the file.
    pub encode: f64,
    /// The whole run.
    pub total: f64,
}

/// One prunable layer in the final file.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct LayerRow {
    /// Weight name (`fc1.weight`).
    pub name: String,
    /// `conv` or `fc`.
    pub kind: String,
    /// Tensor shape.
    pub shape: Vec<usize>,
    /// Number of weights.
    pub params: u64,
    /// Weights kept.
    pub nonzero: u64,
    /// Weight-sharing bits (k = 2^bits).
    pub bits: u8,
    /// Average Huffman bits per cluster code.
    pub huffman_avg_bits: f64,
    /// Average bits of relative index per nonzero (Huffman coded, fillers included).
    pub index_avg_bits: f64,
    /// Bytes of this layer's section in the file.
    pub bytes: u64,
    /// Multiply-accumulates per inference of the dense layer.
    pub macs: u64,
}

/// One epoch of one training stage.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct EpochRow {
    /// `train`, `finetune`, `centroids`.
    pub stage: String,
    /// Pruning round (finetune stage), else 0.
    pub round: usize,
    /// Epoch number within the stage (0-based).
    pub epoch: usize,
    /// Target sparsity in force (pruning stages).
    pub sparsity: f64,
    /// Learning rate.
    pub lr: f64,
    /// Mean training loss.
    pub loss: f64,
    /// Training top-1.
    pub train_top1: f64,
    /// Top-1 on the validation split held out of training (NaN without one).
    #[serde(default)]
    pub val_top1: f64,
    /// Test top-1.
    pub test_top1: f64,
    /// Test top-5.
    pub test_top5: f64,
    /// Training throughput.
    pub ex_per_s: f64,
}

/// One row of a sensitivity scan: a layer pruned alone at each level.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct SensitivityRow {
    /// Layer name.
    pub layer: String,
    /// (sparsity level, top-1) pairs.
    pub points: Vec<(f64, f64)>,
}

/// Everything a run reports.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Report {
    /// Recipe name.
    pub recipe: String,
    /// Architecture id.
    pub model: String,
    /// Dataset id.
    pub dataset: String,
    /// Seed.
    pub seed: u64,
    /// Where the dataset was found.
    pub data_source: String,
    /// Examples per split.
    #[serde(default)]
    pub examples: Examples,
    /// Top-1 per stage.
    pub accuracy: Accuracy,
    /// Top-5 of the decoded model.
    pub decoded_top5: f64,
    /// Sizes.
    pub bytes: Bytes,
    /// Ratios.
    pub ratio: Ratio,
    /// Prunable weights.
    pub prunable_params: u64,
    /// Prunable weights kept.
    pub prunable_nonzero: u64,
    /// Per-layer table.
    pub layers: Vec<LayerRow>,
    /// Stage timings.
    pub seconds: Seconds,
    /// Every epoch of every stage.
    pub history: Vec<EpochRow>,
    /// Sensitivity scan, when run.
    pub sensitivity: Vec<SensitivityRow>,
    /// SHA-256 of the `.dcz` file (hex).
    pub dcz_sha256: String,
    /// Quantization method of each prunable layer (`kmeans`, `uniform`, `ste`, `float`); absent when
    /// every layer uses k-means.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub quant_methods: std::collections::BTreeMap<String, String>,
    /// Uniform step(s) of each `uniform` / `ste` layer: one per tensor, or one per output channel
    /// (the codes of a resumed run are rebuilt from them).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub quant_steps: std::collections::BTreeMap<String, Vec<f32>>,
    /// Regularizers used, one row per training stage that had one.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub regularizers: Vec<RegularizerRow>,
}

/// A regularizer of one stage and the sparsity it left.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct RegularizerRow {
    /// `train` (dense training) or `prune` (masked finetuning).
    pub stage: String,
    /// `l1`, `prox_l1` or `trimmed_l1`.
    pub kind: String,
    /// λ.
    pub lambda: f64,
    /// `trimmed_l1`: weights per layer penalized.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub k: Option<usize>,
    /// `trimmed_l1`: fraction of each layer penalized.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fraction: Option<f64>,
    /// Fraction of the prunable weights that are exactly zero at the end of the stage.
    pub zero_fraction: f64,
}

fn ratio(a: u64, b: u64) -> f64 {
    if b == 0 {
        0.0
    } else {
        a as f64 / b as f64
    }
}

impl Report {
    /// Fills `ratio` from `bytes` and the layer table.
    pub fn compute_ratios(&mut self) {
        self.ratio.file = ratio(self.bytes.dense_f32, self.bytes.dcz);
        self.ratio.pqh = self.ratio.file;
        self.ratio.p = ratio(self.bytes.dense_f32, self.bytes.p);
        self.ratio.pq = ratio(self.bytes.dense_f32, self.bytes.pq);
        self.ratio.formula = formula_ratio(&self.layers);
    }

    /// `report.md`: the same figures as tables.
    pub fn to_markdown(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "# deepcomp report: `{}`\n", self.recipe);
        let _ = writeln!(
            s,
            "Model `{}` on `{}` (data from `{}`), seed {}.\n",
            self.model, self.dataset, self.data_source, self.seed
        );
        let a = &self.accuracy;
        let x = &self.examples;
        let _ = writeln!(
            s,
            "Splits: {} training, {} validation (held out of training; the sensitivity scan and any \
             other choice use it), {} test (every accuracy below).\n",
            x.train, x.validation, x.test
        );
        let _ = writeln!(s, "## Accuracy (top-1, test split)\n");
        let _ = writeln!(s, "| dense | pruned | finetuned | quantized | decoded |");
        let _ = writeln!(s, "|---:|---:|---:|---:|---:|");
        let _ = writeln!(
            s,
            "| {:.4} | {:.4} | {:.4} | {:.4} | {:.4} |\n",
            a.dense, a.pruned, a.finetuned, a.quantized, a.decoded
        );
        let _ = writeln!(s, "Decoded model top-5: {:.4}.\n", self.decoded_top5);
        let r = &self.ratio;
        let b = &self.bytes;
        let _ = writeln!(s, "## Compression\n");
        let _ = writeln!(s, "| stage | bytes | ratio |");
        let _ = writeln!(s, "|---|---:|---:|");
        let _ = writeln!(s, "| dense fp32 | {} | 1.0× |", b.dense_f32);
        let _ = writeln!(s, "| pruned (P) | {} | {:.1}× |", b.p, r.p);
        let _ = writeln!(s, "| + quantized (P+Q) | {} | {:.1}× |", b.pq, r.pq);
        let _ = writeln!(
            s,
            "| + Huffman: the `.dcz` file (P+Q+H) | {} | {:.1}× |",
            b.dcz, r.file
        );
        let _ = writeln!(
            s,
            "\nSeeds' formula `1/(nonzero/total × bits/32 × huffman_avg/bits)`: {:.1}× (ignores indices, codebooks, biases).",
            r.formula
        );
        let _ = writeln!(
            s,
            "Prunable weights kept: {} of {} ({:.2} %).\n",
            self.prunable_nonzero,
            self.prunable_params,
            100.0 * ratio(self.prunable_nonzero, self.prunable_params.max(1))
        );
        let _ = writeln!(s, "## Layers\n");
        let _ = writeln!(
            s,
            "| layer | kind | shape | params | nonzero | kept % | bits | Huffman bits/code | index bits/nz | bytes | MACs |"
        );
        let _ = writeln!(s, "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|");
        for l in &self.layers {
            let shape: Vec<String> = l.shape.iter().map(|d| d.to_string()).collect();
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {} | {:.2} | {} | {:.3} | {:.3} | {} | {} |",
                l.name,
                l.kind,
                shape.join("×"),
                l.params,
                l.nonzero,
                100.0 * ratio(l.nonzero, l.params.max(1)),
                l.bits,
                l.huffman_avg_bits,
                l.index_avg_bits,
                l.bytes,
                l.macs
            );
        }
        let t = &self.seconds;
        let _ = writeln!(s, "\n## Time (seconds)\n");
        let _ = writeln!(
            s,
            "| train | prune | finetune | quantize | encode | total |"
        );
        let _ = writeln!(s, "|---:|---:|---:|---:|---:|---:|");
        let _ = writeln!(
            s,
            "| {:.1} | {:.2} | {:.1} | {:.1} | {:.2} | {:.1} |\n",
            t.train, t.prune, t.finetune, t.quantize, t.encode, t.total
        );
        if !self.history.is_empty() {
            let _ = writeln!(s, "## Epochs\n");
            let _ = writeln!(s, "| stage | epoch | sparsity | lr | loss | train top-1 | val top-1 | test top-1 | test top-5 | ex/s |");
            let _ = writeln!(s, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
            for e in &self.history {
                let _ = writeln!(
                    s,
                    "| {} | {} | {:.3} | {:.5} | {:.4} | {:.4} | {:.4} | {:.4} | {:.4} | {:.0} |",
                    e.stage,
                    e.epoch,
                    e.sparsity,
                    e.lr,
                    e.loss,
                    e.train_top1,
                    e.val_top1,
                    e.test_top1,
                    e.test_top5,
                    e.ex_per_s
                );
            }
            s.push('\n');
        }
        if !self.sensitivity.is_empty() {
            let _ = writeln!(
                s,
                "## Sensitivity (each layer pruned alone, top-1 on the validation split)\n"
            );
            let levels: Vec<String> = self.sensitivity[0]
                .points
                .iter()
                .map(|(l, _)| format!("{:.0} %", l * 100.0))
                .collect();
            let _ = writeln!(s, "| layer | {} |", levels.join(" | "));
            let _ = writeln!(s, "|---|{}", "---:|".repeat(levels.len()));
            for row in &self.sensitivity {
                let v: Vec<String> = row.points.iter().map(|(_, a)| format!("{a:.4}")).collect();
                let _ = writeln!(s, "| {} | {} |", row.layer, v.join(" | "));
            }
            s.push('\n');
        }
        let _ = writeln!(s, "`.dcz` SHA-256: `{}`", self.dcz_sha256);
        s
    }
}

/// The seeds' ratio `1 / (nonzero/total × bits/32 × huffman_avg/bits)` over all prunable layers:
/// `32 × total / Σ_l nonzero_l × huffman_avg_l`.
pub fn formula_ratio(layers: &[LayerRow]) -> f64 {
    let total: u64 = layers.iter().map(|l| l.params).sum();
    let coded: f64 = layers
        .iter()
        .map(|l| l.nonzero as f64 * l.huffman_avg_bits)
        .sum();
    if coded <= 0.0 {
        0.0
    } else {
        32.0 * total as f64 / coded
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layer(params: u64, nonzero: u64, bits: u8, huff: f64) -> LayerRow {
        LayerRow {
            name: "fc".into(),
            kind: "fc".into(),
            params,
            nonzero,
            bits,
            huffman_avg_bits: huff,
            ..Default::default()
        }
    }

    #[test]
    fn formula_matches_the_seeds_expression_for_one_layer() {
        // Seed 001: 36 % nonzero, 5 bits, Huffman 4.298 bits → ratio = 1 / (0.36 × 5/32 × 4.298/5) = 20.67.
        let l = layer(100_000, 36_000, 5, 4.298);
        let seeds = 1.0 / (0.36 * 5.0 / 32.0 * (4.298 / 5.0));
        assert!((formula_ratio(&[l]) - seeds).abs() < 1e-9);
        assert!((seeds - 20.68).abs() < 0.01);
    }

    #[test]
    fn formula_weights_layers_by_their_nonzeros() {
        let a = layer(1000, 100, 5, 4.0);
        let b = layer(3000, 300, 5, 2.0);
        let expect = 32.0 * 4000.0 / (100.0 * 4.0 + 300.0 * 2.0);
        assert!((formula_ratio(&[a, b]) - expect).abs() < 1e-9);
    }

    #[test]
    fn ratios_come_from_bytes_and_json_has_the_contract_fields() {
        let mut r = Report {
            bytes: Bytes {
                dense_f32: 1000,
                dcz: 20,
                p: 200,
                pq: 50,
            },
            layers: vec![layer(250, 10, 5, 3.0)],
            ..Default::default()
        };
        r.compute_ratios();
        assert_eq!(r.ratio.file, 50.0);
        assert_eq!(r.ratio.pqh, 50.0);
        assert_eq!(r.ratio.p, 5.0);
        assert_eq!(r.ratio.pq, 20.0);
        let v: serde_json::Value = serde_json::to_value(&r).unwrap();
        for path in [
            "/accuracy/dense",
            "/accuracy/pruned",
            "/accuracy/finetuned",
            "/accuracy/quantized",
            "/accuracy/decoded",
            "/bytes/dense_f32",
            "/bytes/dcz",
            "/ratio/formula",
            "/ratio/file",
            "/ratio/p",
            "/ratio/pq",
            "/ratio/pqh",
            "/layers/0/name",
            "/layers/0/kind",
            "/layers/0/shape",
            "/layers/0/params",
            "/layers/0/nonzero",
            "/layers/0/bits",
            "/layers/0/huffman_avg_bits",
            "/layers/0/index_avg_bits",
            "/layers/0/bytes",
            "/seconds/train",
            "/seconds/prune",
            "/seconds/finetune",
            "/seconds/quantize",
            "/seconds/encode",
            "/seconds/total",
        ] {
            assert!(v.pointer(path).is_some(), "report.json lacks {path}");
        }
        let md = r.to_markdown();
        assert!(
            md.contains("| + Huffman: the `.dcz` file (P+Q+H) | 20 | 50.0× |"),
            "{md}"
        );
    }
}
