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
    /// After k-means weight sharing, before centroid finetuning (0 in reports of older versions).
    #[serde(default)]
    pub shared: f64,
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
    /// Multiply-accumulates per inference of the dense layer (the same as `macs_dense`).
    pub macs: u64,
    /// Multiply-accumulates per example of the dense layer: weights × output positions.
    #[serde(default)]
    pub macs_dense: u64,
    /// Multiply-accumulates per example left after pruning: nonzero weights × output positions.
    #[serde(default)]
    pub macs_pruned: u64,
    /// This layer's compression ratio: its weights as fp32 / its section of the file.
    #[serde(default)]
    pub ratio: f64,
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
    /// Learning rate of the optimizer. In the `centroids` stage the optimizer moves only the tensors
    /// that are not shared (biases, BatchNorm): this is the recipe's `quant.other_lr`, and the
    /// centroids' own rate is `centroid_lr`.
    pub lr: f64,
    /// Learning rate of the shared centroids (`quant.lr`); only in the `centroids` stage.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub centroid_lr: Option<f64>,
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
    /// (achieved sparsity, top-1) pairs.
    pub points: Vec<(f64, f64)>,
    /// The scanned levels (fractions), one per point.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub levels: Vec<f64>,
    /// MACs per example of this layer at each level: nonzero weights × output positions.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub macs: Vec<u64>,
    /// MACs per example of the dense layer.
    #[serde(default)]
    pub macs_dense: u64,
}

/// The accuracy lost from the dense model to the model decoded from the file, stated outright.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct AccuracyDrop {
    /// `100 × (accuracy.dense − accuracy.decoded)`: percentage points of top-1 lost (negative: gained).
    pub points: f64,
    /// From this stage (`dense`).
    pub from: String,
    /// To this stage (`decoded`).
    pub to: String,
    /// The split both accuracies are measured on (`test`).
    pub split: String,
    /// Examples of that split used.
    pub examples: usize,
}

/// This build of deepcomp: the package version and the git commit it was built from (`unknown` when
/// it was not built from a git checkout).
pub fn build_info() -> (&'static str, &'static str) {
    (env!("CARGO_PKG_VERSION"), env!("DEEPCOMP_GIT_COMMIT"))
}

/// Everything a run reports.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Report {
    /// deepcomp version that wrote the report.
    #[serde(default)]
    pub version: String,
    /// Git commit deepcomp was built from (`unknown` outside a git checkout).
    #[serde(default)]
    pub commit: String,
    /// Recipe name.
    pub recipe: String,
    /// The recipe's exact text.
    #[serde(default)]
    pub recipe_text: String,
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
    /// Dense → decoded accuracy drop.
    #[serde(default)]
    pub drop: AccuracyDrop,
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
    /// Validation top-1 of the dense model, the scan's baseline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sensitivity_baseline: Option<f64>,
    /// Per-layer targets chosen from the scan (`prune.from_sensitivity`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sensitivity_targets: Option<crate::sensitivity::ChosenTargets>,
    /// Memory per prunable layer: weights and activations at 32, 8 and n bits.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub memory: Vec<crate::sensitivity::MemoryRow>,
    /// SHA-256 of the `.dcz` file (hex).
    pub dcz_sha256: String,
    /// Largest relative logit difference between the decoded model and deepcomp-runtime on the first
    /// test images ([`crate::engine::runtime_cross_check`]); absent when the runtime does not run the
    /// architecture.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime_check: Option<f64>,
    /// Stages this run took from checkpoints instead of computing them (`dense`, `prune-round0`, …,
    /// `pruned`, `quantized`): kept from an earlier run in the folder or seeded by a sweep.
    #[serde(default)]
    pub reused: Vec<String>,
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
    /// Structured pruning (`prune.method = "structured"`): sizes, parameters and latency of the
    /// dense and the smaller model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub structured: Option<crate::pipeline::structured::StructuredReport>,
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

/// The seeds' formula ratio after each stage, over the prunable weights (dense fp32 = 32 bits each):
/// what the paper's tables call P, P+Q and P+Q+H, ignoring index bits, codebooks and other tensors.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct StageRatios {
    /// Pruning: `total / nonzero`.
    pub p: f64,
    /// + weight sharing: `32 × total / Σ nonzero × bits`.
    pub pq: f64,
    /// + Huffman coding: [`formula_ratio`].
    pub pqh: f64,
}

/// A Markdown fence longer than any run of backticks in `text`.
fn fence_for(text: &str) -> String {
    let mut longest = 0;
    let mut run = 0;
    for c in text.chars() {
        run = if c == '`' { run + 1 } else { 0 };
        longest = longest.max(run);
    }
    "`".repeat((longest + 1).max(3))
}

/// A table cell: the value with `decimals`, or empty when not finite.
fn cell(v: f64, decimals: usize) -> String {
    if v.is_finite() {
        format!("{v:.decimals$}")
    } else {
        String::new()
    }
}

impl Report {
    /// Fills `ratio` from `bytes` and the layer table, the per-layer ratios, and `drop` from
    /// `accuracy` and `examples`.
    pub fn compute_ratios(&mut self) {
        self.ratio.file = ratio(self.bytes.dense_f32, self.bytes.dcz);
        self.ratio.pqh = self.ratio.file;
        self.ratio.p = ratio(self.bytes.dense_f32, self.bytes.p);
        self.ratio.pq = ratio(self.bytes.dense_f32, self.bytes.pq);
        self.ratio.formula = formula_ratio(&self.layers);
        for l in &mut self.layers {
            l.ratio = ratio(4 * l.params, l.bytes);
        }
        self.drop = AccuracyDrop {
            points: 100.0 * (self.accuracy.dense - self.accuracy.decoded),
            from: "dense".into(),
            to: "decoded".into(),
            split: "test".into(),
            examples: self.examples.test,
        };
    }

    /// The seeds' formula ratio after pruning, sharing and Huffman coding (see [`StageRatios`]).
    pub fn stage_ratios(&self) -> StageRatios {
        let total: u64 = self.layers.iter().map(|l| l.params).sum();
        let nonzero: u64 = self.layers.iter().map(|l| l.nonzero).sum();
        let shared_bits: u64 = self.layers.iter().map(|l| l.nonzero * l.bits as u64).sum();
        StageRatios {
            p: ratio(total, nonzero),
            pq: ratio(32 * total, shared_bits),
            pqh: formula_ratio(&self.layers),
        }
    }

    /// The accuracy drop as a sentence.
    pub fn drop_sentence(&self) -> String {
        let d = &self.drop;
        let what = if d.points >= 0.0 { "drop" } else { "gain" };
        format!(
            "Accuracy {what}, dense → decoded: {:.2} points (top-1 {:.4} → {:.4}, on the {} split, {} examples).",
            d.points.abs(),
            self.accuracy.dense,
            self.accuracy.decoded,
            d.split,
            d.examples
        )
    }

    /// `report.md`: the same figures as tables, with the recipe and the build that produced them.
    pub fn to_markdown(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "# deepcomp report: `{}`\n", self.recipe);
        let _ = writeln!(
            s,
            "deepcomp {}, commit `{}`.\n",
            if self.version.is_empty() {
                "?"
            } else {
                &self.version
            },
            if self.commit.is_empty() {
                "unknown"
            } else {
                &self.commit
            }
        );
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
        let _ = writeln!(s, "**{}**\n", self.drop_sentence());
        let _ = writeln!(
            s,
            "| dense | pruned¹ | finetuned² | shared³ | quantized⁴ | decoded⁵ |"
        );
        let _ = writeln!(s, "|---:|---:|---:|---:|---:|---:|");
        let shared = if a.shared > 0.0 {
            format!("{:.4}", a.shared)
        } else {
            "n/a".into()
        };
        let _ = writeln!(
            s,
            "| {:.4} | {:.4} | {:.4} | {shared} | {:.4} | {:.4} |\n",
            a.dense, a.pruned, a.finetuned, a.quantized, a.decoded
        );
        let _ = writeln!(
            s,
            "¹ after the last pruning step, before its finetune. ² after masked finetuning. \
             ³ after k-means weight sharing, before centroid finetuning. ⁴ after centroid finetuning. \
             ⁵ the model decoded from the `.dcz` file.\n"
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
        let st = self.stage_ratios();
        let _ = writeln!(
            s,
            "\nSeeds' formula `1/(nonzero/total × bits/32 × huffman_avg/bits)`: {:.1}× (ignores indices, codebooks, biases); \
             the same formula after pruning only: {:.1}×, after weight sharing: {:.1}×.",
            r.formula, st.p, st.pq
        );
        let _ = writeln!(
            s,
            "Prunable weights kept: {} of {} ({:.2} %).\n",
            self.prunable_nonzero,
            self.prunable_params,
            100.0 * ratio(self.prunable_nonzero, self.prunable_params.max(1))
        );
        if let Some(st) = &self.structured {
            s.push_str(&st.to_markdown());
        }
        let _ = writeln!(s, "## Layers\n");
        let _ = writeln!(
            s,
            "| layer | kind | shape | params | nonzero | kept % | bits | Huffman bits/code | index bits/nz | bytes | ratio | MACs dense | MACs pruned |"
        );
        let _ = writeln!(
            s,
            "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
        );
        for l in &self.layers {
            let shape: Vec<String> = l.shape.iter().map(|d| d.to_string()).collect();
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {} | {:.2} | {} | {:.3} | {:.3} | {} | {:.1}× | {} | {} |",
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
                l.ratio,
                l.macs_dense,
                l.macs_pruned
            );
        }
        let md: u64 = self.layers.iter().map(|l| l.macs_dense).sum();
        let mp: u64 = self.layers.iter().map(|l| l.macs_pruned).sum();
        let _ = writeln!(
            s,
            "\nMACs per example of the prunable layers: {md} dense, {mp} after pruning ({:.1} %); \
             after pruning = nonzero weights × output positions. Ratio = the layer's fp32 bytes / its \
             bytes in the file.",
            100.0 * ratio(mp, md.max(1))
        );
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
            let _ = writeln!(s, "| stage | round | epoch | sparsity | lr | loss | train top-1 | val top-1 | test top-1 | test top-5 | ex/s |");
            let _ = writeln!(s, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
            for e in &self.history {
                let _ = writeln!(s, "{}", history_row(e));
            }
            let _ = writeln!(
                s,
                "\n`shared`: the model right after k-means weight sharing (no training, so no lr, loss or \
                 speed). `centroids`: lr is the centroids' (`quant.lr`), then the rate of the other tensors \
                 (`quant.other_lr`: biases, BatchNorm).\n"
            );
        }
        if !self.memory.is_empty() {
            s.push_str(&crate::sensitivity::memory_markdown(&self.memory));
        }
        s.push_str(&crate::sensitivity::sensitivity_markdown(
            &self.sensitivity,
            self.sensitivity_baseline,
            self.sensitivity_targets.as_ref(),
        ));
        if !self.recipe_text.is_empty() {
            let fence = fence_for(&self.recipe_text);
            let _ = writeln!(s, "## Recipe\n");
            let _ = writeln!(s, "{fence}toml");
            let _ = writeln!(s, "{}", self.recipe_text.trim_end());
            let _ = writeln!(s, "{fence}\n");
        }
        let _ = writeln!(s, "`.dcz` SHA-256: `{}`", self.dcz_sha256);
        s
    }
}

/// One row of the epoch table; what a stage did not measure is left empty.
fn history_row(e: &EpochRow) -> String {
    let lr = match e.centroid_lr {
        Some(c) => format!("{c:.5} / {:.5}", if e.lr > 1e-300 { e.lr } else { 0.0 }),
        None => format!("{:.5}", e.lr),
    };
    if e.stage == "shared" {
        return format!(
            "| shared | | | {:.3} | | | | {} | {} | {} | |",
            e.sparsity,
            cell(e.val_top1, 4),
            cell(e.test_top1, 4),
            cell(e.test_top5, 4)
        );
    }
    format!(
        "| {} | {} | {} | {:.3} | {lr} | {:.4} | {:.4} | {} | {:.4} | {} | {:.0} |",
        e.stage,
        e.round,
        e.epoch,
        e.sparsity,
        e.loss,
        e.train_top1,
        cell(e.val_top1, 4),
        e.test_top1,
        cell(e.test_top5, 4),
        e.ex_per_s
    )
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

    #[test]
    fn markdown_states_the_drop_the_build_and_the_recipe_and_leaves_unmeasured_cells_empty() {
        let mut r = Report {
            version: "9.9.9".into(),
            commit: "abc123".into(),
            recipe_text: "name = \"x\"\n# a ```fence``` inside\n".into(),
            accuracy: Accuracy {
                dense: 0.9,
                decoded: 0.8875,
                shared: 0.88,
                ..Default::default()
            },
            examples: Examples {
                test: 300,
                ..Default::default()
            },
            history: vec![EpochRow {
                stage: "shared".into(),
                sparsity: 0.9,
                val_top1: f64::NAN,
                test_top1: 0.88,
                test_top5: 0.99,
                ..Default::default()
            }],
            ..Default::default()
        };
        r.compute_ratios();
        assert!((r.drop.points - 1.25).abs() < 1e-9);
        let md = r.to_markdown();
        assert!(md.contains("deepcomp 9.9.9, commit `abc123`."), "{md}");
        assert!(
            md.contains("Accuracy drop, dense → decoded: 1.25 points (top-1 0.9000 → 0.8875, on the test split, 300 examples)."),
            "{md}"
        );
        assert!(
            md.contains("````toml\nname = \"x\"\n# a ```fence``` inside\n````"),
            "{md}"
        );
        assert!(
            md.contains("| shared | | | 0.900 | | | |  | 0.8800 | 0.9900 | |"),
            "{md}"
        );
        r.accuracy.decoded = 0.91;
        r.compute_ratios();
        assert!(r
            .to_markdown()
            .contains("Accuracy gain, dense → decoded: 1.00 points"));
    }
}
