//! Experiment files end to end: the machinery on generated data (sets merged in order, the short
//! variant's fewer points beside the right notebook figures, the dense model trained once for every
//! table, errors before anything is written), every file in `experiments/` planned in both variants,
//! and the short variants of seed 002 (MNIST) and seed 004 (the JPEG CIFAR-10 copy) run on the real
//! data with every table checked cell by cell.

use std::path::{Path, PathBuf};
use std::process::Command;

use deepcomp_driver::experiment::{self, ExperimentJson, ExperimentOptions};
use serde_json::Value;

mod common;
use common::write_dataset;

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}

const RECIPE: &str = r#"
name = "exp-test"
model = "mlp"
dataset = "fashion-mnist"
seed = 3
[arch]
hidden = [48]
[data]
batch_size = 50
eval_batch_size = 200
allow_download = false
verify = false
[train]
epochs = 1
lr = 0.05
[prune]
method = "percentile"
rounds = [{ target = 0.5, epochs = 1 }]
lr = 0.01
[quant]
fc_bits = 5
epochs = 1
lr = 0.0005
"#;

const EXPERIMENT: &str = r#"
title = "Generated"
notes = "A test."
recipe = "recipe.toml"
set = ["data.path=${data}/gen", "train.epochs=1"]

[short]
notes = "fewer points"
set = ["quant.epochs=0"]

[[sweep]]
name = "bits"
title = "Bits"
zip = true
set = ["quant.fc_bits=3,4,5", "quant.bits.fc1.weight=3,4,5"]
short = ["quant.fc_bits=3,5", "quant.bits.fc1.weight=3,5"]
columns = [
  { axis = "quant.fc_bits", label = "bits" },
  { seed = [0.5, 0.6, 0.7], label = "seed top-1" },
  { seed = [0.5, 0.6, 0.7], drop_from = 0.9, percent = true, label = "seed drop" },
  { seed = [1000, nan, 3000], label = "seed count" },
  { field = "accuracy.decoded", percent = true, label = "ours top-1 %" },
  { field = "drop_decoded", label = "ours drop" },
  { field = "huffman_bits", label = "Huffman bits" },
  { field = "layers.0.bits", label = "fc1 bits" },
  { field = "macs", label = "MACs" },
]

[[sweep]]
name = "prune"
title = "Pruning"
set = ["prune.rounds.0.target=0.3,0.6"]
columns = [
  { field = "sparsity", label = "sparsity" },
  { field = "accuracy.pruned", label = "top-1 before" },
]

[[sweep]]
name = "scan"
title = "Scan"
table = "sensitivity"
set = ["prune.sensitivity=true", "prune.sensitivity_levels=[0.5,1.0]"]
short = ["prune.sensitivity_levels=[1.0]"]
columns = [
  { seed = [11, 12, 21, 22], label = "seed" },
  { field = "sens.top1", label = "top-1" },
  { field = "sens.macs_network", label = "MACs" },
]

[[sweep]]
name = "long"
title = "Only in the full variant"
skip_short = true
set = ["seed=5,6"]
columns = [{ field = "accuracy.dense" }]
"#;

struct Setup {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    file: PathBuf,
}

fn setup(experiment_text: &str) -> Setup {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().to_path_buf();
    let data = root.join("data/gen");
    std::fs::create_dir_all(&data).unwrap();
    write_dataset(&data, 600, 200);
    std::fs::write(root.join("recipe.toml"), RECIPE).unwrap();
    let file = root.join("exp.toml");
    std::fs::write(&file, experiment_text).unwrap();
    Setup {
        _tmp: tmp,
        root,
        file,
    }
}

fn opts(s: &Setup, short: bool, out: &Path) -> ExperimentOptions {
    ExperimentOptions {
        file: s.file.clone(),
        short,
        out: Some(out.to_path_buf()),
        data_root: s.root.join("data"),
        progress: false,
    }
}

fn table<'a>(j: &'a ExperimentJson, name: &str) -> &'a experiment::TableJson {
    j.sweeps.iter().find(|t| t.name == name).unwrap()
}

fn col(t: &experiment::TableJson, label: &str) -> usize {
    t.columns
        .iter()
        .position(|c| c.label == label)
        .unwrap_or_else(|| panic!("{}: no column `{label}`", t.name))
}

/// The short variant of a four-table file on generated data: fewer points, each beside the notebook
/// figure of its own point; the dense model trained once for all tables; a sensitivity table; the
/// skipped table named; experiment.md and experiment.json saying the same.
#[test]
fn a_short_experiment_runs_every_table_with_the_right_seed_figures() {
    let s = setup(EXPERIMENT);
    let out = s.root.join("out");
    let done = experiment::run(&opts(&s, true, &out), &candle_core::Device::Cpu).unwrap();
    let j: ExperimentJson =
        serde_json::from_str(&std::fs::read_to_string(out.join("experiment.json")).unwrap())
            .unwrap();
    assert_eq!(j, done.json);
    assert_eq!(j.mode, "short");
    assert_eq!(j.sweeps.len(), 4);

    let bits = table(&j, "bits");
    assert_eq!(bits.status, "run");
    assert_eq!((bits.points, bits.full_points), (2, 3));
    assert_eq!(bits.rows.len(), 2);
    let cell =
        |t: &experiment::TableJson, r: usize, label: &str| t.rows[r].cells[col(t, label)].clone();
    // Points 3 and 5 bits are the full sweep's first and third: their seed figures.
    assert_eq!(cell(bits, 0, "bits"), "3");
    assert_eq!(cell(bits, 1, "bits"), "5");
    assert_eq!(cell(bits, 0, "seed top-1"), 0.5);
    assert_eq!(cell(bits, 1, "seed top-1"), 0.7);
    assert!((cell(bits, 0, "seed drop").as_f64().unwrap() - 40.0).abs() < 1e-9);
    assert!((cell(bits, 1, "seed drop").as_f64().unwrap() - 20.0).abs() < 1e-9);
    assert_eq!(cell(bits, 0, "seed count"), 1000);
    assert_eq!(cell(bits, 1, "seed count"), 3000);
    assert_eq!(cell(bits, 0, "fc1 bits"), 3);
    assert_eq!(cell(bits, 1, "fc1 bits"), 5);
    for r in 0..2 {
        let top1 = cell(bits, r, "ours top-1 %").as_f64().unwrap();
        assert!((0.0..=100.0).contains(&top1), "{top1}");
        let h = cell(bits, r, "Huffman bits").as_f64().unwrap();
        assert!(h > 0.0 && h <= 5.0, "{h}");
        assert!(cell(bits, r, "MACs").as_u64().unwrap() > 0);
        assert!(cell(bits, r, "ours drop").as_f64().unwrap().is_finite());
    }

    // The pruning table took the dense model from the first table's points.
    let prune = table(&j, "prune");
    assert_eq!(prune.rows.len(), 2);
    let rows: Vec<deepcomp_driver::sweep::SweepRow> =
        serde_json::from_str(&std::fs::read_to_string(out.join("prune/sweep.json")).unwrap())
            .unwrap();
    assert!(
        rows[0]
            .seeded_from
            .as_deref()
            .is_some_and(|f| f.starts_with("bits/points/")),
        "{:?}",
        rows[0].seeded_from
    );
    assert_eq!(rows[0].reused, ["dense"]);
    for (r, want) in [(0, 0.3), (1, 0.6)] {
        let sp = cell(prune, r, "sparsity").as_f64().unwrap();
        assert!((sp - want).abs() < 0.05, "{sp}");
    }

    // Sensitivity: 2 layers × the short variant's one level (1.0), beside seed figures 12 and 22.
    let scan = table(&j, "scan");
    assert_eq!(scan.rows.len(), 2);
    assert_eq!(cell(scan, 0, "layer"), "fc1");
    assert_eq!(cell(scan, 1, "layer"), "fc2");
    assert_eq!(cell(scan, 0, "level"), 1.0);
    assert_eq!(cell(scan, 0, "seed"), 12);
    assert_eq!(cell(scan, 1, "seed"), 22);
    let full_macs = 784 * 48 + 48 * 10;
    assert_eq!(cell(scan, 0, "MACs"), 48 * 10);
    assert_eq!(cell(scan, 1, "MACs"), 784 * 48);
    assert!(cell(scan, 0, "top-1").as_f64().unwrap() <= 1.0);
    assert!(full_macs > 0);

    let long = table(&j, "long");
    assert_eq!(long.status, "skipped");
    assert!(long.rows.is_empty());

    let md = std::fs::read_to_string(out.join("experiment.md")).unwrap();
    assert_eq!(md, done.markdown);
    for want in [
        "# Generated",
        "Variant: **short** (fewer points)",
        "## 1. Bits (`bits`)",
        "| bits | seed top-1 | seed drop | seed count | ours top-1 % |",
        "| 3 | 0.5 | 40.00 | 1,000 |",
        "| 5 | 0.7 | 20.00 | 3,000 |",
        "--set quant.fc_bits=3,5",
        "2 point(s) of the full sweep's 3",
        "| layer | level | seed | top-1 | MACs |",
        "| fc1 | 1 | 12 |",
        "## 4. Only in the full variant (`long`)",
        "Not run in the short variant (2 point(s) in the full one).",
    ] {
        assert!(md.contains(want), "experiment.md lacks `{want}`:\n{md}");
    }

    // A second run reuses every stage of every point.
    let again = experiment::run(&opts(&s, true, &out), &candle_core::Device::Cpu).unwrap();
    for (a, b) in again.json.sweeps.iter().zip(&j.sweeps) {
        assert_eq!(a.rows, b.rows, "{}", a.name);
    }
}

/// Every mistake in a file is reported, naming the file and what is wrong, before any folder exists.
#[test]
fn a_bad_experiment_fails_before_anything_is_written() {
    // (file text, what the error must say, whether the full variant fails too)
    let cases: Vec<(String, Vec<&str>, bool)> = vec![
        (
            EXPERIMENT.replace("\"layers.0.bits\"", "\"layers.0.bitz\""),
            vec!["sweep[0] (`bits`)", "columns[7]", "layers.0.bitz"],
            true,
        ),
        (
            EXPERIMENT.replace(
                "[0.5, 0.6, 0.7], label = \"seed top-1\"",
                "[0.5, 0.6], label = \"seed top-1\"",
            ),
            vec!["columns[1]", "2 seed figure(s)", "3 point(s)"],
            true,
        ),
        (
            EXPERIMENT.replace("prune.rounds.0.target=", "prune.rounds.0.targt="),
            vec![
                "sweep[1] (`prune`)",
                "prune.rounds.0.targt",
                "not a recipe field",
            ],
            true,
        ),
        (
            EXPERIMENT.replace(
                "short = [\"prune.sensitivity_levels",
                "short = [\"prune.sensitivity_levelz",
            ),
            vec![
                "sweep[2] (`scan`)",
                "prune.sensitivity_levelz",
                "not a recipe field",
            ],
            false,
        ),
        (
            EXPERIMENT.replace("train.epochs=1", "train.epochs=${epochs}"),
            vec!["set[1]", "${epochs}"],
            true,
        ),
        (
            EXPERIMENT.replace("title = \"Bits\"", "title = \"Bits\"\ncolums = []"),
            vec!["colums"],
            true,
        ),
        (
            EXPERIMENT.replace("name = \"prune\"", "name = \"bits\""),
            vec!["name `bits` is used twice"],
            true,
        ),
        (
            EXPERIMENT.replace(
                "{ seed = [11, 12, 21, 22], label = \"seed\" }",
                "{ seed = [11, 12, 21], label = \"seed\" }",
            ),
            vec!["sweep[2] (`scan`)", "3 seed figure(s)", "4 scan rows"],
            true,
        ),
        (
            EXPERIMENT.replace(
                "{ axis = \"quant.fc_bits\", label = \"bits\" }",
                "{ axis = \"quant.fc_bits\", field = \"sparsity\" }",
            ),
            vec!["columns[0]", "exactly one of"],
            true,
        ),
        (
            EXPERIMENT.replace("\"prune.sensitivity=true\", ", ""),
            vec!["sweep[2] (`scan`)", "prune.sensitivity"],
            true,
        ),
    ];
    for (text, wants, full_too) in cases {
        let s = setup(&text);
        let out = s.root.join("never");
        let variants: &[bool] = if full_too { &[false, true] } else { &[true] };
        for &short in variants {
            let e = experiment::run(&opts(&s, short, &out), &candle_core::Device::Cpu)
                .unwrap_err()
                .to_string();
            assert!(e.contains("exp.toml"), "{e}");
            for w in &wants {
                assert!(e.contains(w), "`{e}` lacks `{w}`");
            }
            assert!(!out.exists(), "{e}: {} was created", out.display());
        }
    }
    // Data that is not there: also before anything is written (the sweeps are prepared first).
    let s = setup(&EXPERIMENT.replace("${data}/gen", "${data}/none"));
    let out = s.root.join("never");
    let e = experiment::run(&opts(&s, true, &out), &candle_core::Device::Cpu)
        .unwrap_err()
        .to_string();
    assert!(e.contains("none"), "{e}");
    assert!(!out.exists());
}

/// Every experiment file of the repository plans in both variants: keys, values, layer names,
/// columns and the number of notebook figures all check out, every table has the notebook's figures,
/// and the short variant is smaller.
#[test]
fn every_experiment_file_plans_in_both_variants() {
    let dir = workspace().join("experiments");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    files.sort();
    let names: Vec<String> = files
        .iter()
        .map(|p| p.file_stem().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        names,
        ["seed-000", "seed-001", "seed-002", "seed-003", "seed-004"]
    );
    for f in &files {
        let plan = |short| {
            experiment::plan(&ExperimentOptions {
                file: f.clone(),
                short,
                out: None,
                data_root: PathBuf::from("/data"),
                progress: false,
            })
            .unwrap_or_else(|e| panic!("{} (short: {short}): {e}", f.display()))
        };
        let (full, short) = (plan(false), plan(true));
        let count = |p: &experiment::Plan| p.sweeps.iter().map(|s| s.points.len()).sum::<usize>();
        assert!(count(&short) < count(&full), "{}", f.display());
        assert!(
            count(&short) <= 12,
            "{}: {} short points",
            f.display(),
            count(&short)
        );
        for sw in &full.sweeps {
            assert!(
                sw.columns
                    .iter()
                    .any(|c| matches!(c.kind, experiment::ColumnKind::Seed(_))),
                "{}: sweep `{}` has no seed column",
                f.display(),
                sw.spec.name
            );
            // Data comes from the shared folder.
            assert!(
                sw.sets.iter().any(|s| s.starts_with("data.path=/data/")),
                "{}: {}",
                f.display(),
                sw.spec.name
            );
        }
    }
}

fn deepcomp(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_deepcomp"))
        .args(args)
        .current_dir(workspace())
        .env("RUST_BACKTRACE", "0")
        .output()
        .expect("deepcomp runs")
}

/// Runs `experiments/<name>.toml --short` with the binary and checks its tables: every sweep ran,
/// one row per point (per layer and level for a scan), every figure of ours present, accuracies
/// finite and in [0, 100] %, and every notebook figure that the point has beside it.
fn run_short(name: &str, data_root: &Path) -> ExperimentJson {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let file = workspace().join("experiments").join(format!("{name}.toml"));
    let t = std::time::Instant::now();
    let res = deepcomp(&[
        "-q",
        "experiment",
        file.to_str().unwrap(),
        "--short",
        "--data-root",
        data_root.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(
        res.status.success(),
        "{name}: {}",
        String::from_utf8_lossy(&res.stderr)
    );
    eprintln!("{name} --short: {:.1} s", t.elapsed().as_secs_f64());
    let md = std::fs::read_to_string(out.join("experiment.md")).unwrap();
    let stdout = String::from_utf8_lossy(&res.stdout);
    assert!(
        stdout.starts_with(md.trim_end()),
        "{name}: stdout is not experiment.md"
    );
    assert!(stdout.contains("experiment: "), "{stdout}");
    let j: ExperimentJson =
        serde_json::from_str(&std::fs::read_to_string(out.join("experiment.json")).unwrap())
            .unwrap();
    assert_eq!(j.mode, "short");
    for t in &j.sweeps {
        if t.status == "skipped" {
            continue;
        }
        assert_eq!(t.status, "run", "{name}/{}: {:?}", t.name, t.failed);
        assert!(t.failed.is_empty());
        assert!(
            md.contains(&format!("(`{}`)", t.name)),
            "{name}: {}",
            t.name
        );
        if t.table == "sensitivity" {
            assert!(t.rows.len() >= t.points, "{name}/{}", t.name);
        } else {
            assert_eq!(t.rows.len(), t.points, "{name}/{}", t.name);
        }
        for r in &t.rows {
            assert_eq!(r.cells.len(), t.columns.len());
            for (c, v) in t.columns.iter().zip(&r.cells) {
                let at = format!("{name}/{} point {} column `{}`", t.name, r.point, c.label);
                match c.kind.as_str() {
                    "field" => {
                        let x = v.as_f64().unwrap_or_else(|| panic!("{at}: {v}"));
                        assert!(x.is_finite(), "{at}: {x}");
                        let acc = c.key.starts_with("accuracy.")
                            || c.key == "decoded_top5"
                            || c.key == "sens.top1";
                        if acc {
                            assert!((0.0..=100.0).contains(&x), "{at}: {x}");
                        }
                        if c.key.starts_with("drop_") || c.key == "sens.drop" {
                            assert!((-100.0..=100.0).contains(&x), "{at}: {x}");
                        }
                    }
                    "axis" | "layer" | "level" => assert!(!v.is_null(), "{at}"),
                    _ => {}
                }
            }
        }
        // Every row of a points table has at least one notebook figure beside it.
        if t.table == "points" {
            for r in &t.rows {
                assert!(
                    t.columns
                        .iter()
                        .zip(&r.cells)
                        .any(|(c, v)| c.kind == "seed" && v.is_number()),
                    "{name}/{} point {}: no seed figure",
                    t.name,
                    r.point
                );
            }
        }
    }
    j
}

/// Seed 002 on the real MNIST, short: the q × l grid and the structured-pruning table.
#[test]
fn seed_002_short_runs_on_real_mnist() {
    let Some(mnist) =
        deepcomp_datasets::shared_data_file(env!("CARGO_MANIFEST_DIR"), "mnist").unwrap()
    else {
        return;
    };
    let j = run_short("seed-002", mnist.parent().unwrap());
    let grid = j.sweeps.iter().find(|t| t.name == "quant-grid").unwrap();
    assert_eq!(grid.rows.len(), 4);
    let st = j.sweeps.iter().find(|t| t.name == "structured").unwrap();
    assert_eq!(st.rows.len(), 3);
    // Fewer neurons, fewer parameters.
    let p = st
        .columns
        .iter()
        .position(|c| c.key == "structured.params")
        .unwrap();
    let params: Vec<u64> = st
        .rows
        .iter()
        .map(|r| r.cells[p].as_u64().unwrap())
        .collect();
    assert!(params.windows(2).all(|w| w[0] > w[1]), "{params:?}");
}

/// Seed 004 on the JPEG CIFAR-10 copy, short: both bit sweeps, the pruning sweep with MACs and the
/// per-layer scan (5 layers × 2 levels).
#[test]
fn seed_004_short_runs_on_the_jpeg_cifar_copy() {
    let Some(cifar) =
        deepcomp_datasets::shared_data_file(env!("CARGO_MANIFEST_DIR"), "cifar10-jpeg.tar.gz")
            .unwrap()
    else {
        return;
    };
    let j = run_short("seed-004", cifar.parent().unwrap());
    let scan = j
        .sweeps
        .iter()
        .find(|t| t.name == "prune-per-layer")
        .unwrap();
    assert_eq!(scan.rows.len(), 10);
    let layers: Vec<&Value> = scan.rows.iter().map(|r| &r.cells[0]).collect();
    assert_eq!(layers[0], "conv1");
    assert_eq!(layers[9], "fc3");
    // At level 1.0 the layer's MACs are gone; the notebook figure of that layer and level is beside it.
    let lm = scan
        .columns
        .iter()
        .position(|c| c.key == "sens.macs")
        .unwrap();
    let seed = scan
        .columns
        .iter()
        .position(|c| c.label == "seed network MACs")
        .unwrap();
    assert_eq!(scan.rows[1].cells[1], 1.0);
    assert_eq!(scan.rows[1].cells[lm], 0);
    assert_eq!(scan.rows[1].cells[seed], 61320);
    let all = j.sweeps.iter().find(|t| t.name == "prune-all").unwrap();
    let m = all.columns.iter().position(|c| c.key == "macs").unwrap();
    let macs: Vec<u64> = all
        .rows
        .iter()
        .map(|r| r.cells[m].as_u64().unwrap())
        .collect();
    assert!(macs[0] > macs[1], "{macs:?}");
}
