//! Resuming, interruptions and mistakes in an output folder: a changed recipe never reuses a stale
//! checkpoint, a killed run's temp files and lost report rows come back, the folder is locked, and
//! mistakes are refused before anything is written.

use std::path::{Path, PathBuf};

use deepcomp_driver::pipeline::{run, PipelineOptions};
use deepcomp_driver::recipe::{self, LoadedRecipe};
use deepcomp_driver::report::Report;

mod common;
use common::{recipe_text, write_dataset};

struct Setup {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    data: PathBuf,
}

fn setup() -> Setup {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().to_path_buf();
    let data = root.join("data");
    std::fs::create_dir_all(&data).unwrap();
    write_dataset(&data, 600, 200);
    Setup {
        _tmp: tmp,
        root,
        data,
    }
}

/// The shared test recipe with one training epoch, no sensitivity scan, edited by `(from, to)` pairs.
fn recipe_with(data: &Path, edits: &[(&str, &str)]) -> LoadedRecipe {
    let mut text = recipe_text(data)
        .replace("epochs = 2\n", "epochs = 1\n")
        .replace("sensitivity = true\n", "");
    for (from, to) in edits {
        assert!(text.contains(from), "`{from}` not in the recipe");
        text = text.replacen(from, to, 1);
    }
    recipe::parse(&text, "resume-test").unwrap()
}

fn opts(recipe: LoadedRecipe, out: &Path) -> PipelineOptions {
    PipelineOptions {
        recipe,
        out: out.to_path_buf(),
        fresh: false,
        progress: false,
        data_path: None,
    }
}

fn read(p: &Path) -> Vec<u8> {
    std::fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// Changing a pruning target, then the seed, in a folder that holds a finished run: each result is
/// byte-identical to a fresh run of the new recipe, and only the stages the change affects are redone.
#[test]
fn a_changed_recipe_redoes_exactly_the_stages_it_affects() {
    let s = setup();
    let out = s.root.join("out");
    let base = recipe_with(&s.data, &[]);
    let r1 = run(&opts(base.clone(), &out)).unwrap();
    let dense1 = read(&out.join("checkpoints/dense.safetensors"));
    let round0 = read(&out.join("checkpoints/prune-round0.safetensors"));

    // The second round's target: 0.85 → 0.9.
    let edit = [("target = 0.85", "target = 0.9")];
    let r2 = run(&opts(recipe_with(&s.data, &edit), &out)).unwrap();
    let fresh = s.root.join("fresh-target");
    run(&opts(recipe_with(&s.data, &edit), &fresh)).unwrap();
    assert_eq!(
        read(&out.join("model.dcz")),
        read(&fresh.join("model.dcz")),
        "the resumed run equals a fresh run of the changed recipe"
    );
    let fc1 = r2.layers.iter().find(|l| l.name == "fc1.weight").unwrap();
    assert!(
        (fc1.nonzero as f64 / fc1.params as f64 - 0.10).abs() < 0.01,
        "fc1 keeps 10 % under the new target: {} of {}",
        fc1.nonzero,
        fc1.params
    );
    // The dense model and the first round were kept (byte-identical files), the history too.
    assert_eq!(read(&out.join("checkpoints/dense.safetensors")), dense1);
    assert_eq!(
        read(&out.join("checkpoints/prune-round0.safetensors")),
        round0
    );
    assert_eq!(r2.accuracy.dense, r1.accuracy.dense);
    let train_rows = |r: &Report| {
        r.history
            .iter()
            .filter(|e| e.stage == "train")
            .cloned()
            .collect::<Vec<_>>()
    };
    assert_eq!(train_rows(&r2), train_rows(&r1));

    // The seed: everything is redone.
    let edit = [("target = 0.85", "target = 0.9"), ("seed = 3", "seed = 4")];
    run(&opts(recipe_with(&s.data, &edit), &out)).unwrap();
    let fresh = s.root.join("fresh-seed");
    run(&opts(recipe_with(&s.data, &edit), &fresh)).unwrap();
    assert_ne!(read(&out.join("checkpoints/dense.safetensors")), dense1);
    assert_eq!(
        read(&out.join("checkpoints/dense.safetensors")),
        read(&fresh.join("checkpoints/dense.safetensors")),
        "checkpoints are byte-deterministic"
    );
    assert_eq!(read(&out.join("model.dcz")), read(&fresh.join("model.dcz")));
}

/// A kill between writing a checkpoint and writing `progress.json` (simulated: the later checkpoints
/// and the newest progress are lost, stale temp files are left): the resumed run cleans up and its
/// report has every history row of the uninterrupted run.
#[test]
fn after_a_kill_temp_files_go_and_the_history_comes_back_from_checkpoints() {
    let s = setup();
    let out = s.root.join("out");
    let r = recipe_with(&s.data, &[]);
    let full = run(&opts(r.clone(), &out)).unwrap();
    for f in [
        "checkpoints/prune-round1.safetensors",
        "checkpoints/pruned.safetensors",
        "checkpoints/quantized.safetensors",
        "model.dcz",
    ] {
        std::fs::remove_file(out.join(f)).unwrap();
    }
    // progress.json one step behind: only the dense stage.
    std::fs::write(out.join("progress.json"), "{}").unwrap();
    let stale = [
        out.join(".progress.json.4242.tmp"),
        out.join(".report.json.4242.tmp"),
        out.join("checkpoints/pruned.safetensors.tmp.4242"),
    ];
    for f in &stale {
        std::fs::write(f, b"partial").unwrap();
    }
    let resumed = run(&opts(r, &out)).unwrap();
    for f in &stale {
        assert!(!f.exists(), "{} left behind", f.display());
    }
    assert_eq!(resumed.history.len(), full.history.len());
    for (a, b) in resumed.history.iter().zip(&full.history) {
        assert_eq!(
            (a.stage.as_str(), a.round, a.epoch, a.test_top1),
            (b.stage.as_str(), b.round, b.epoch, b.test_top1)
        );
    }
    assert_eq!(resumed.accuracy, full.accuracy);
    assert_eq!(resumed.dcz_sha256, full.dcz_sha256);
}

#[test]
fn a_locked_output_folder_is_refused() {
    let s = setup();
    let out = s.root.join("out");
    let _held = deepcomp_driver::resume::OutputLock::acquire(&out).unwrap();
    let e = run(&opts(recipe_with(&s.data, &[]), &out))
        .unwrap_err()
        .to_string();
    assert!(e.contains("in use by another deepcomp run"), "{e}");
    assert!(!out.join("checkpoints").exists(), "nothing written");
}

#[test]
fn unknown_layer_names_and_missing_data_fail_before_anything_is_written() {
    let s = setup();
    let out = s.root.join("out");
    let r = recipe_with(
        &s.data,
        &[("fc_bits = 4", "fc_bits = 4\nbits = { \"fc9.weight\" = 3 }")],
    );
    let e = run(&opts(r, &out)).unwrap_err().to_string();
    assert!(
        e.contains("quant.bits.\"fc9.weight\"") && e.contains("fc1.weight"),
        "{e}"
    );
    let r = recipe_with(
        &s.data,
        &[(
            "\"fc3.weight\" = 0.5",
            "\"fc3.weight\" = 0.5, \"fc4.weight\" = 0.5",
        )],
    );
    let e = run(&opts(r, &out)).unwrap_err().to_string();
    assert!(e.contains("prune.layer_scale.\"fc4.weight\""), "{e}");
    let missing = s.root.join("no-such-data");
    let r = recipe_with(&missing, &[]);
    assert!(run(&opts(r, &out)).is_err());
    assert!(!out.exists(), "a failed run created {}", out.display());
}

/// AGP over 3 epochs with 1 extra: the first step already prunes, the ramp ends at the target, the
/// extra epoch finetunes with the final masks, and each history row has its own epoch number.
#[test]
fn agp_prunes_from_its_first_step_and_finetunes_after_the_ramp() {
    let s = setup();
    let out = s.root.join("out");
    let r = recipe_with(
        &s.data,
        &[
            (
                "rounds = [{ target = 0.6, epochs = 1 }, { target = 0.85, epochs = 1 }]\nlayer_scale = { \"fc3.weight\" = 0.5 }",
                "schedule = \"agp\"\nfinal_target = 0.8\nepochs = 3\nextra_epochs = 1",
            ),
        ],
    );
    let rep = run(&opts(r, &out)).unwrap();
    let rows: Vec<_> = rep
        .history
        .iter()
        .filter(|e| e.stage == "finetune")
        .collect();
    let epochs: Vec<usize> = rows.iter().map(|e| e.epoch).collect();
    assert_eq!(epochs, vec![0, 1, 2, 3]);
    // fin·(1 − (1 − t/3)³) for t = 1, 2, 3, then the final target again.
    let want = [
        0.8 * (1.0 - (2.0f64 / 3.0).powi(3)),
        0.8 * (1.0 - (1.0f64 / 3.0).powi(3)),
        0.8,
        0.8,
    ];
    for (row, w) in rows.iter().zip(want) {
        assert!((row.sparsity - w).abs() < 1e-9, "{} vs {w}", row.sparsity);
    }
    let kept = rep.prunable_nonzero as f64 / rep.prunable_params as f64;
    assert!((kept - 0.2).abs() < 0.01, "kept {kept}");
}
