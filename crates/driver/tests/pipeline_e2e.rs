//! The whole pipeline on a small generated IDX dataset: every stage runs, the file decodes bit-exact
//! (decoded accuracy == quantized accuracy), the same seed gives the same `.dcz` bytes, and a re-run
//! after losing the later checkpoints resumes to the same result.

use deepcomp_driver::pipeline::{run, PipelineOptions};
use deepcomp_driver::recipe;

mod common;
use common::recipe_text;

#[test]
fn pipeline_runs_every_stage_decodes_exactly_and_is_deterministic() {
    let (tmp, data) = common::generated_data(1000, 300);
    let loaded = recipe::parse(&recipe_text(&data), "e2e-test").unwrap();
    let out = tmp.path().join("out");
    let opts = PipelineOptions {
        recipe: loaded.clone(),
        out: out.clone(),
        fresh: true,
        progress: false,
        data_path: None,
    };
    let r = run(&opts).unwrap();

    // Every stage ran and learned the easy problem.
    assert!(r.accuracy.dense > 0.9, "dense {}", r.accuracy.dense);
    assert!(
        r.accuracy.finetuned > 0.9,
        "finetuned {}",
        r.accuracy.finetuned
    );
    assert_eq!(
        r.accuracy.decoded, r.accuracy.quantized,
        "decoding is exact"
    );
    assert!(r.history.iter().any(|e| e.stage == "centroids"));
    // Sizes: the file is what we measured, and pruning 85 % + 4 bits + Huffman compresses well.
    let dcz = out.join("model.dcz");
    assert_eq!(std::fs::metadata(&dcz).unwrap().len(), r.bytes.dcz);
    assert!(r.ratio.file > 15.0, "file ratio {}", r.ratio.file);
    assert!(
        r.ratio.p < r.ratio.pq && r.ratio.pq < r.ratio.file,
        "P < PQ < PQH: {:?}",
        r.ratio
    );
    assert!(
        r.ratio.formula > r.ratio.file,
        "the formula ignores index bytes"
    );
    let fc1 = r.layers.iter().find(|l| l.name == "fc1.weight").unwrap();
    assert_eq!(fc1.params, 784 * 300);
    assert!(
        (fc1.nonzero as f64 / fc1.params as f64 - 0.15).abs() < 0.01,
        "fc1 keeps 15 %: {}",
        fc1.nonzero
    );
    assert_eq!(fc1.bits, 4);
    // The sensitivity scan: every layer alone at 10 %..90 %.
    assert_eq!(r.sensitivity.len(), 3);
    for row in &r.sensitivity {
        assert_eq!(row.points.len(), 9);
        assert!(
            (row.points[0].0 - 0.1).abs() < 0.01 && (row.points[8].0 - 0.9).abs() < 0.01,
            "{row:?}"
        );
        assert!(row.points.iter().all(|(_, a)| (0.0..=1.0).contains(a)));
    }
    // Outputs exist.
    for f in [
        "report.json",
        "report.md",
        "plots/accuracy.svg",
        "plots/hist-fc1_weight.svg",
        "plots/sensitivity.svg",
    ] {
        assert!(out.join(f).exists(), "{f} missing");
    }
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).unwrap()).unwrap();
    assert_eq!(json["accuracy"]["decoded"], json["accuracy"]["quantized"]);
    let bytes1 = std::fs::read(&dcz).unwrap();

    // Resume: drop the later checkpoints (as if killed after the first pruning round), re-run.
    for f in [
        "checkpoints/prune-round1.safetensors",
        "checkpoints/pruned.safetensors",
        "checkpoints/quantized.safetensors",
        "model.dcz",
    ] {
        std::fs::remove_file(out.join(f)).unwrap();
    }
    let r2 = run(&PipelineOptions {
        fresh: false,
        ..opts.clone()
    })
    .unwrap();
    assert_eq!(
        std::fs::read(&dcz).unwrap(),
        bytes1,
        "resumed run writes the same bytes"
    );
    assert_eq!(
        r2.accuracy.dense, r.accuracy.dense,
        "dense accuracy carried over from the first run"
    );

    // Same seed, fresh folder: byte-identical file.
    let out2 = tmp.path().join("out2");
    run(&PipelineOptions {
        out: out2.clone(),
        ..opts
    })
    .unwrap();
    assert_eq!(
        std::fs::read(out2.join("model.dcz")).unwrap(),
        bytes1,
        "same seed → same .dcz"
    );
}
