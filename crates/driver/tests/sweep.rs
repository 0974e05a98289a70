//! Overrides and sweeps end to end on generated data: `--set` errors come before anything is written,
//! points that share stages train them once, a re-run redoes nothing, and a failing point is named
//! after the others' summary is written.

use std::path::{Path, PathBuf};
use std::process::Command;

use deepcomp_driver::sweep::{self, SweepOptions, SweepRow};

mod common;
use common::write_dataset;

struct Setup {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    recipe: PathBuf,
}

/// A small MLP on 600 generated examples, one epoch per stage.
fn setup() -> Setup {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().to_path_buf();
    let data = root.join("data");
    std::fs::create_dir_all(&data).unwrap();
    write_dataset(&data, 600, 200);
    let text = format!(
        r#"
name = "sweep-test"
model = "mlp"
dataset = "fashion-mnist"
seed = 3
[arch]
hidden = [48]
[data]
path = "{}"
batch_size = 50
eval_batch_size = 200
allow_download = false
verify = false
[train]
epochs = 1
lr = 0.05
[prune]
method = "percentile"
rounds = [{{ target = 0.5, epochs = 1 }}]
lr = 0.01
[quant]
fc_bits = 5
epochs = 1
lr = 0.0005
"#,
        data.display()
    );
    let recipe = root.join("recipe.toml");
    std::fs::write(&recipe, text).unwrap();
    Setup {
        _tmp: tmp,
        root,
        recipe,
    }
}

fn opts(s: &Setup, sets: &[&str], zip: bool, out: &Path) -> SweepOptions {
    SweepOptions {
        recipe: s.recipe.display().to_string(),
        sets: sets.iter().map(|x| x.to_string()).collect(),
        zip,
        out: Some(out.to_path_buf()),
        data_path: None,
        progress: false,
        donors: Vec::new(),
    }
}

fn deepcomp(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_deepcomp"))
        .args(args)
        .env("RUST_BACKTRACE", "0")
        .output()
        .expect("deepcomp runs")
}

#[cfg(unix)]
fn inode(p: &Path) -> (u64, std::time::SystemTime) {
    use std::os::unix::fs::MetadataExt as _;
    let m = std::fs::metadata(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    (m.ino(), m.modified().unwrap())
}

/// Two points that differ only in `quant.bits`: the second takes the dense model and the pruning
/// from the first (the same files, hard-linked) and trains neither; `sweep.json` holds both points;
/// a second run of the same sweep computes nothing again.
#[test]
fn a_sweep_over_bits_trains_once_and_a_rerun_redoes_nothing() {
    let s = setup();
    let out = s.root.join("sweep");
    let o = opts(&s, &["quant.bits.fc1.weight=3,6"], false, &out);
    let rows = sweep::run(&o, &candle_core::Device::Cpu).unwrap().rows;
    assert_eq!(rows.len(), 2);
    let (a, b) = (&rows[0], &rows[1]);
    assert_eq!(a.point, "quant.bits.fc1.weight=3");
    assert_eq!(b.point, "quant.bits.fc1.weight=6");
    assert!(a.reused.is_empty(), "{:?}", a.reused);
    assert_eq!(b.reused, ["dense", "prune-round0", "pruned"]);
    assert_eq!(b.seeded_from.as_deref(), Some("quant.bits.fc1.weight=3"));
    // Same dense model, trained once: one file under two names, one set of training rows.
    #[cfg(unix)]
    assert_eq!(
        inode(&out.join("points/quant.bits.fc1.weight=3/checkpoints/dense.safetensors")).0,
        inode(&out.join("points/quant.bits.fc1.weight=6/checkpoints/dense.safetensors")).0
    );
    let report = |slug: &str| -> serde_json::Value {
        let p = out.join("points").join(slug).join("report.json");
        serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap()
    };
    let (ra, rb) = (
        report("quant.bits.fc1.weight=3"),
        report("quant.bits.fc1.weight=6"),
    );
    assert_eq!(rb["reused"][0], "dense");
    assert_eq!(
        rb["seconds"]["train"], 0.0,
        "the second point trained nothing"
    );
    assert!(ra["seconds"]["train"].as_f64().unwrap() > 0.0);
    assert_eq!(ra["accuracy"]["dense"], rb["accuracy"]["dense"]);
    assert_eq!(ra["accuracy"]["finetuned"], rb["accuracy"]["finetuned"]);
    // The effective recipe of each point is in its folder.
    let text =
        std::fs::read_to_string(out.join("points/quant.bits.fc1.weight=6/recipe.toml")).unwrap();
    let back = deepcomp_driver::recipe::parse(&text, "point").unwrap();
    assert_eq!(back.recipe.quant.bits["fc1.weight"], 6);

    // sweep.json: one object per point with the figures of its report.
    let json: Vec<SweepRow> =
        serde_json::from_str(&std::fs::read_to_string(out.join("sweep.json")).unwrap()).unwrap();
    assert_eq!(json, rows);
    let raw: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("sweep.json")).unwrap()).unwrap();
    for field in [
        "/0/point",
        "/0/folder",
        "/0/values/quant.bits.fc1.weight",
        "/0/accuracy/dense",
        "/0/accuracy/pruned",
        "/0/accuracy/finetuned",
        "/0/accuracy/quantized",
        "/0/accuracy/decoded",
        "/0/sparsity",
        "/0/bits/fc1.weight",
        "/0/ratio/file",
        "/0/ratio/formula",
        "/0/seconds",
    ] {
        assert!(raw.pointer(field).is_some(), "sweep.json lacks {field}");
    }
    for (row, bits, r) in [(a, 3, &ra), (b, 6, &rb)] {
        assert_eq!(row.values["quant.bits.fc1.weight"], bits);
        assert_eq!(row.bits["fc1.weight"], bits);
        assert_eq!(row.bits["fc2.weight"], 5);
        assert_eq!(row.folder, format!("points/{}", row.point));
        assert_eq!(
            row.accuracy.decoded,
            r["accuracy"]["decoded"].as_f64().unwrap()
        );
        assert_eq!(row.ratio.file, r["ratio"]["file"].as_f64().unwrap());
        assert!(row.ratio.file > 1.0 && row.ratio.formula > 1.0, "{row:?}");
        assert!((row.sparsity - 0.5).abs() < 0.05, "{}", row.sparsity);
        assert!((0.0..=1.0).contains(&row.accuracy.decoded));
    }
    assert!(
        a.ratio.file > b.ratio.file,
        "3 bits make a smaller file than 6"
    );
    let md = std::fs::read_to_string(out.join("sweep.md")).unwrap();
    assert!(md.contains("| # | `quant.bits.fc1.weight` |"), "{md}");
    assert!(md.contains("\n| 2 | 6 |"), "{md}");
    assert!(md.contains("points/quant.bits.fc1.weight=6"), "{md}");
    let svg = std::fs::read_to_string(out.join("plots/tradeoff.svg")).unwrap();
    assert!(svg.contains("Pareto front"), "{svg}");

    // The same sweep again: every stage of every point comes from its checkpoint, untouched.
    let ckpts = |slug: &str| {
        ["dense", "prune-round0", "pruned", "quantized"]
            .map(|f| out.join(format!("points/{slug}/checkpoints/{f}.safetensors")))
    };
    #[cfg(unix)]
    let before: Vec<_> = ckpts(&a.point)
        .iter()
        .chain(&ckpts(&b.point))
        .map(|p| inode(p))
        .collect();
    let again = sweep::run(&o, &candle_core::Device::Cpu).unwrap().rows;
    for r in &again {
        assert_eq!(
            r.reused,
            ["dense", "prune-round0", "pruned", "quantized"],
            "{}",
            r.point
        );
        assert_eq!(r.seeded_from, None);
    }
    #[cfg(unix)]
    {
        let after: Vec<_> = ckpts(&a.point)
            .iter()
            .chain(&ckpts(&b.point))
            .map(|p| inode(p))
            .collect();
        assert_eq!(before, after, "no checkpoint was rewritten");
    }
    for (x, y) in again.iter().zip(&rows) {
        assert_eq!(x.accuracy, y.accuracy);
        assert_eq!(x.ratio, y.ratio);
        assert_eq!(x.dcz_bytes, y.dcz_bytes);
    }
}

/// A grid over a pruning target and the bits: points with the same target share the pruning, every
/// point shares the dense model.
#[test]
fn points_share_exactly_the_stages_whose_inputs_agree() {
    let s = setup();
    let out = s.root.join("grid");
    let o = opts(
        &s,
        &["prune.rounds.0.target=0.5,0.7", "quant.fc_bits=4,5"],
        false,
        &out,
    );
    let rows = sweep::run(&o, &candle_core::Device::Cpu).unwrap().rows;
    let got: Vec<(&str, Vec<String>)> = rows
        .iter()
        .map(|r| (r.point.as_str(), r.reused.clone()))
        .collect();
    let v = |x: &[&str]| x.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    assert_eq!(
        got,
        vec![
            ("prune.rounds.0.target=0.5,quant.fc_bits=4", v(&[])),
            (
                "prune.rounds.0.target=0.5,quant.fc_bits=5",
                v(&["dense", "prune-round0", "pruned"])
            ),
            ("prune.rounds.0.target=0.7,quant.fc_bits=4", v(&["dense"])),
            (
                "prune.rounds.0.target=0.7,quant.fc_bits=5",
                v(&["dense", "prune-round0", "pruned"])
            ),
        ]
    );
    assert!(
        (rows[2].sparsity - 0.7).abs() < 0.05,
        "{}",
        rows[2].sparsity
    );
    assert_eq!(rows[0].accuracy.dense, rows[3].accuracy.dense);
}

#[test]
fn grid_and_zip_give_their_point_counts() {
    let s = setup();
    let r = s.recipe.display().to_string();
    let sets = |x: &[&str]| x.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let grid = sweep::plan(&r, &sets(&["quant.fc_bits=3,4,5", "seed=1,2"]), false).unwrap();
    assert_eq!(grid.len(), 6);
    let zip = sweep::plan(&r, &sets(&["quant.fc_bits=3,4", "seed=1,2"]), true).unwrap();
    assert_eq!(zip.len(), 2);
    assert_eq!(zip[1].recipe.recipe.seed, 2);
    assert_eq!(zip[1].recipe.recipe.quant.fc_bits, 4);
    // Under --zip a single value fixes the field for every point.
    let fixed = sweep::plan(&r, &sets(&["quant.fc_bits=3,4", "seed=9"]), true).unwrap();
    assert_eq!(fixed.len(), 2);
    assert!(fixed.iter().all(|p| p.recipe.recipe.seed == 9));
    assert_eq!(fixed[0].slug, "quant.fc_bits=3");
    // Array values: commas inside brackets belong to the value.
    let arrays = sweep::plan(
        &r,
        &sets(&[
            "prune.rounds=[{target=0.5,epochs=1}],[{target=0.6,epochs=1},{target=0.8,epochs=1}]",
        ]),
        false,
    )
    .unwrap();
    assert_eq!(arrays.len(), 2);
    assert_eq!(arrays[1].recipe.recipe.prune.rounds.len(), 2);
    let e = sweep::plan(&r, &sets(&["quant.fc_bits=3,4,5", "seed=1,2"]), true)
        .unwrap_err()
        .to_string();
    assert!(e.contains("same length"), "{e}");
}

/// Bad keys and values in any point, and unequal zip lists, fail before any point runs or any file
/// is written.
#[test]
fn a_bad_point_fails_before_anything_is_written() {
    let s = setup();
    for (sets, zip, want) in [
        (
            &["quant.fc_bits=4,17"][..],
            false,
            &["quant.fc_bits", "17"][..],
        ),
        (
            &["quant.fc_bitz=4,5"],
            false,
            &["quant.fc_bitz", "not a recipe field"],
        ),
        (&["train.epochs=1,many"], false, &["train.epochs", "many"]),
        (
            &["quant.bits.fc9.weight=4"],
            false,
            &["fc9.weight", "matches no prunable layer"],
        ),
        (&["quant.fc_bits=4,5", "seed=1,2,3"], true, &["same length"]),
    ] {
        let out = s.root.join("never");
        let e = sweep::run(&opts(&s, sets, zip, &out), &candle_core::Device::Cpu)
            .unwrap_err()
            .to_string();
        for w in want {
            assert!(e.contains(w), "{sets:?}: `{e}` lacks `{w}`");
        }
        assert!(!out.exists(), "{sets:?}: {} was created", out.display());
    }
}

/// A point that fails while running (here: its folder is held by another run) is named in the error,
/// after the summary of the points that finished is written.
#[test]
fn a_failing_point_is_named_after_the_others_are_summarized() {
    let s = setup();
    let out = s.root.join("fail");
    let held = out.join("points/quant.fc_bits=4");
    let _lock = deepcomp_driver::resume::OutputLock::acquire(&held).unwrap();
    let e = sweep::run(
        &opts(&s, &["quant.fc_bits=4,5"], false, &out),
        &candle_core::Device::Cpu,
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("1 of 2 point(s) failed") && e.contains("quant.fc_bits=4:"),
        "{e}"
    );
    let rows: Vec<SweepRow> =
        serde_json::from_str(&std::fs::read_to_string(out.join("sweep.json")).unwrap()).unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].point, "quant.fc_bits=5");
    assert!(out.join("plots/tradeoff.svg").exists());
}

/// `deepcomp pipeline --set`: a misspelled key or a bad value is refused, naming it, before the output
/// folder exists; `deepcomp sweep` exits non-zero on unequal zip lists.
#[test]
fn cli_set_errors_name_the_key_and_write_nothing() {
    let s = setup();
    let out = s.root.join("cli-out");
    let r = s.recipe.to_str().unwrap();
    let o = out.to_str().unwrap();
    for (set, want) in [
        ("trian.epochs=3", "trian"),
        ("train.epochs=three", "three"),
        ("prune.rounds.0.target=1.5", "prune.rounds[0].target"),
    ] {
        let res = deepcomp(&[
            "pipeline",
            "--recipe",
            r,
            "--out",
            o,
            "--no-progress",
            "--set",
            set,
        ]);
        let err = String::from_utf8_lossy(&res.stderr);
        assert!(!res.status.success(), "{set}");
        assert!(err.contains(want), "{set}: {err}");
        assert!(!out.exists(), "{set}: output folder created");
    }
    let res = deepcomp(&[
        "sweep",
        "--recipe",
        r,
        "--out",
        o,
        "--zip",
        "--set",
        "seed=1,2",
        "--set",
        "quant.fc_bits=3,4,5",
    ]);
    assert!(!res.status.success());
    assert!(String::from_utf8_lossy(&res.stderr).contains("same length"));
    assert!(!out.exists());
}

/// `deepcomp pipeline --set`: the override changes the run, and a second run with another value
/// reuses exactly the stages the change leaves alone (the resume check sees the effective recipe).
#[test]
fn cli_set_changes_the_run_and_resume_sees_the_effective_recipe() {
    let s = setup();
    let out = s.root.join("cli-run");
    let r = s.recipe.to_str().unwrap();
    let o = out.to_str().unwrap();
    let report = || -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).unwrap()).unwrap()
    };
    for (bits, reused) in [(4, &[][..]), (3, &["dense", "prune-round0", "pruned"][..])] {
        let set = format!("quant.fc_bits={bits}");
        let res = deepcomp(&[
            "pipeline",
            "--recipe",
            r,
            "--out",
            o,
            "--no-progress",
            "--set",
            &set,
            "--set",
            "data.eval_batch_size=100",
        ]);
        assert!(
            res.status.success(),
            "{}",
            String::from_utf8_lossy(&res.stderr)
        );
        let rep = report();
        assert_eq!(rep["layers"][1]["bits"], bits, "{set}");
        assert_eq!(rep["reused"], serde_json::json!(reused), "{set}");
    }
}
