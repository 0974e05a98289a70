//! Seed 004's sensitivity scan from a recipe: configurable levels (100 % included), MACs of each layer
//! after pruning, the memory table, and per-layer targets chosen from the scan
//! (`prune.from_sensitivity`), on a small generated dataset.

use deepcomp_driver::pipeline::{run, PipelineOptions};
use deepcomp_driver::recipe;
use deepcomp_driver::report::{LayerRow, Report};
use deepcomp_driver::sensitivity::{memory_markdown, memory_rows};
use deepcomp_models::{LayerCost, LayerOp, ModelReport};

mod common;
use common::recipe_text;

/// The common recipe with `[prune]` lines replaced by `(from, to)` pairs.
fn edited(data: &std::path::Path, edits: &[(&str, &str)]) -> String {
    let mut t = recipe_text(data);
    for (from, to) in edits {
        assert!(t.contains(from), "{from}");
        t = t.replacen(from, to, 1);
    }
    t
}

fn parse_err(text: &str) -> String {
    match recipe::parse(text, "t") {
        Ok(_) => panic!("accepted:\n{text}"),
        Err(e) => e.to_string(),
    }
}

fn run_text(text: &str) -> (Report, tempfile::TempDir) {
    let (tmp, data) = common::generated_data(800, 200);
    let text = text.replace("@DATA@", &data.display().to_string());
    let loaded = recipe::parse(&text, "test").unwrap();
    let r = run(&PipelineOptions {
        recipe: loaded,
        out: tmp.path().join("out"),
        fresh: true,
        progress: false,
        data_path: None,
    })
    .unwrap();
    (r, tmp)
}

#[test]
fn levels_and_from_sensitivity_are_validated() {
    let d = std::path::Path::new("/nonexistent");
    let levels = |l: &str| {
        edited(
            d,
            &[(
                "sensitivity = true\n",
                &format!("sensitivity = true\nsensitivity_levels = {l}\n"),
            )],
        )
    };
    for (bad, field) in [
        ("[]", "prune.sensitivity_levels"),
        ("[0.2, 0.1]", "prune.sensitivity_levels"),
        ("[0.1, 0.1]", "prune.sensitivity_levels"),
        ("[0.5, 1.5]", "prune.sensitivity_levels[1]"),
        ("[-0.1]", "prune.sensitivity_levels[0]"),
        ("[nan]", "prune.sensitivity_levels[0]"),
    ] {
        let e = parse_err(&levels(bad));
        assert!(e.contains(field), "{bad}: {e}");
    }
    // 10 % … 100 % is fine.
    let ok = levels("[0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0]");
    let r = recipe::parse(&ok, "t").unwrap().recipe;
    assert_eq!(r.prune.sensitivity_levels.as_ref().unwrap().len(), 10);
    // Levels without a scan.
    let e = parse_err(&edited(
        d,
        &[("sensitivity = true\n", "sensitivity_levels = [0.5]\n")],
    ));
    assert!(e.contains("prune.sensitivity_levels"), "{e}");
    // from_sensitivity: max_drop range, layer_scale conflict, method without per-layer targets.
    let e = parse_err(&edited(
        d,
        &[(
            "sensitivity = true\n",
            "from_sensitivity = { max_drop = 0.01 }\n",
        )],
    ));
    assert!(
        e.contains("prune.from_sensitivity") && e.contains("layer_scale"),
        "{e}"
    );
    let no_scale = |extra: &str| {
        edited(
            d,
            &[
                ("layer_scale = { \"fc3.weight\" = 0.5 }\n", ""),
                ("sensitivity = true\n", extra),
            ],
        )
    };
    let e = parse_err(&no_scale("from_sensitivity = { max_drop = 1.5 }\n"));
    assert!(e.contains("prune.from_sensitivity.max_drop"), "{e}");
    let e = parse_err(&no_scale("from_sensitivity = { max_drp = 0.1 }\n"));
    assert!(e.contains("max_drp"), "{e}");
    let e = parse_err(
        &no_scale("from_sensitivity = { max_drop = 0.01 }\n")
            .replace("method = \"percentile\"", "method = \"global\""),
    );
    assert!(
        e.contains("prune.from_sensitivity") && e.contains("global"),
        "{e}"
    );
    // from_sensitivity implies the scan: levels alone with it are fine.
    recipe::parse(
        &no_scale("from_sensitivity = { max_drop = 0.01 }\nsensitivity_levels = [0.5, 1.0]\n"),
        "t",
    )
    .unwrap();
}

#[test]
fn full_level_zeroes_the_layer_and_macs_follow_the_pruning() {
    let text = edited(
        std::path::Path::new("@DATA@"),
        &[
            (
                "sensitivity = true\n",
                "sensitivity = true\nsensitivity_levels = [0.5, 1.0]\n",
            ),
            ("epochs = 1\nlr = 0.0005", "epochs = 0\nlr = 0.0005"),
        ],
    );
    let (r, tmp) = run_text(&text);
    assert_eq!(r.sensitivity.len(), 3);
    for row in &r.sensitivity {
        assert_eq!(row.levels, vec![0.5, 1.0]);
        let params = r
            .layers
            .iter()
            .find(|l| l.name == row.layer)
            .unwrap()
            .params;
        // fc layers: one output position, so MACs = nonzero weights.
        assert_eq!(row.macs_dense, params);
        let (s50, _) = row.points[0];
        assert_eq!(row.macs[0], params - (s50 * params as f64).round() as u64);
        assert!(row.macs[0] < row.macs_dense);
        // 100 %: every weight of the layer is zero, no MAC is left, and top-1 falls to about chance
        // (10 classes; a constant prediction gets one class's share).
        let (s100, acc100) = row.points[1];
        assert_eq!(s100, 1.0, "{}", row.layer);
        assert_eq!(row.macs[1], 0);
        assert!(acc100 < 0.25, "{} at 100 %: {acc100}", row.layer);
        assert!(row.points[0].1 > acc100, "{}", row.layer);
    }
    // The layer table: MACs after pruning are nonzero × positions, below the dense count.
    for l in &r.layers {
        assert!(l.macs_pruned < l.macs_dense, "{}", l.name);
        assert_eq!(l.macs_pruned, l.nonzero * (l.macs_dense / l.params));
    }
    // The memory table is in report.json and report.md.
    assert_eq!(r.memory.len(), 3);
    let fc1 = &r.memory[0];
    assert_eq!(fc1.layer, "fc1.weight");
    assert_eq!(fc1.weights_f32, 4 * 784 * 300);
    assert_eq!(fc1.activations, 300);
    let out = tmp.path().join("out");
    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(md.contains("## Memory per layer"), "{md}");
    assert!(md.contains("| layer | 50 % | 100 % |"), "{md}");
    assert!(md.contains("MACs per example of the layer pruned alone"));
    let json: Report =
        serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).unwrap()).unwrap();
    assert_eq!(json.memory, r.memory);
    assert_eq!(json.sensitivity, r.sensitivity);
}

#[test]
fn memory_table_of_a_known_conv_layer() {
    // conv1 of seed 004: 6 filters 3×8×8 on 32×32 → 6×25×25 outputs; 4-bit, 25 % kept, 3.5 index
    // bits per kept weight.
    let layer = LayerRow {
        name: "conv1.weight".into(),
        kind: "conv".into(),
        shape: vec![6, 3, 8, 8],
        params: 1152,
        nonzero: 288,
        bits: 4,
        index_avg_bits: 3.5,
        ..Default::default()
    };
    let costs = ModelReport {
        arch: "t".into(),
        layers: vec![LayerCost {
            name: "conv1".into(),
            op: LayerOp::Conv {
                in_channels: 3,
                out_channels: 6,
                kernel: 8,
                stride: 1,
                padding: 0,
                bias: true,
            },
            out_shape: vec![6, 25, 25],
            weights: 1152,
            nonzero_weights: 288,
            other_params: 6,
            macs: 720_000,
            sparse_macs: 180_000,
            activations: 3750,
        }],
    };
    let rows = memory_rows(&[layer], &costs);
    let m = &rows[0];
    assert_eq!(m.weights_f32, 4608); // 1152 × 4 bytes
    assert_eq!(m.weights_8bit, 1152);
    assert_eq!(m.weights_nbit, 576); // 1152 × 4 / 8
    assert_eq!(m.sparse_nbit, 270); // 288 × (4 + 3.5) / 8
    assert_eq!(m.activations, 3750);
    assert_eq!(m.activations_f32, 15_000);
    assert_eq!(m.activations_8bit, 3750);
    assert_eq!(m.activations_nbit, 1875);
    let md = memory_markdown(&rows);
    assert!(
        md.contains("| conv1.weight | 4 | 4608 | 1152 | 576 | 270 | 3750 | 15000 | 3750 | 1875 |"),
        "{md}"
    );
}

#[test]
fn from_sensitivity_targets_respect_max_drop_and_drive_the_masks() {
    let max_drop = 0.02;
    let text = edited(
        std::path::Path::new("@DATA@"),
        &[
            ("layer_scale = { \"fc3.weight\" = 0.5 }\n", ""),
            (
                "sensitivity = true\n",
                &format!(
                    "from_sensitivity = {{ max_drop = {max_drop} }}\n\
                     sensitivity_levels = [0.3, 0.6, 0.8, 0.9, 0.95, 1.0]\n"
                ),
            ),
            ("epochs = 1\nlr = 0.0005", "epochs = 0\nlr = 0.0005"),
        ],
    );
    let (r, tmp) = run_text(&text);
    let chosen = r.sensitivity_targets.as_ref().expect("targets recorded");
    let baseline = r.sensitivity_baseline.unwrap();
    assert_eq!(chosen.baseline, baseline);
    assert_eq!(chosen.max_drop, max_drop);
    assert_eq!(chosen.targets.len(), 3);
    for row in &r.sensitivity {
        let t = chosen.targets[&row.layer];
        // The chosen level is within max_drop and every higher level is not.
        let mut expect = 0.0;
        for (l, (_, acc)) in row.levels.iter().zip(&row.points) {
            if baseline - acc <= max_drop {
                expect = *l;
            }
        }
        assert_eq!(t, expect, "{}", row.layer);
        for (l, (_, acc)) in row.levels.iter().zip(&row.points) {
            if *l == t {
                assert!(baseline - acc <= max_drop + 1e-12);
            }
            if *l > t {
                assert!(baseline - acc > max_drop, "{} at {l}", row.layer);
            }
        }
        // The final masks have that sparsity (the percentile rule stops short of 100 %).
        let l = r.layers.iter().find(|l| l.name == row.layer).unwrap();
        let sparsity = 1.0 - l.nonzero as f64 / l.params as f64;
        assert!(
            (sparsity - t.min(0.999)).abs() < 0.01,
            "{}: sparsity {sparsity}, target {t}",
            row.layer
        );
    }
    // The easy problem tolerates pruning: some layer gets a high target.
    assert!(
        chosen.targets.values().any(|t| *t >= 0.6),
        "{:?}",
        chosen.targets
    );
    let md = std::fs::read_to_string(tmp.path().join("out/report.md")).unwrap();
    assert!(md.contains("Targets chosen from the scan"), "{md}");
}
