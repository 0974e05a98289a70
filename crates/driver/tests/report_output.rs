//! What a run tells its user: `report.md` (recipe text, build, accuracy drop, MACs after pruning),
//! `report.json`'s new fields, the SVG plots, `-q` (one result line), and the `--json` documents of
//! `inspect`, `eval` and `compress`. One small pipeline on generated data, run through the binary.

use std::path::Path;
use std::process::Command;

use serde_json::Value;

mod common;
use common::recipe_text;

fn deepcomp(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_deepcomp"))
        .args(args)
        .env("RAYON_NUM_THREADS", "2")
        .output()
        .expect("deepcomp runs")
}

fn ok(out: &std::process::Output) -> (String, String) {
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        out.status.success(),
        "status {:?}\n{stdout}\n{stderr}",
        out.status
    );
    (stdout, stderr)
}

fn json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not one JSON document ({e}):\n{text}"))
}

fn num(v: &Value, ptr: &str) -> f64 {
    v.pointer(ptr)
        .and_then(Value::as_f64)
        .unwrap_or_else(|| panic!("{ptr} missing or not a number in {v}"))
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn quiet_pipeline_report_plots_and_json_documents() {
    let (tmp, data) = common::generated_data(1000, 300);
    let text = recipe_text(&data);
    let recipe = tmp.path().join("e2e.toml");
    std::fs::write(&recipe, &text).unwrap();
    let out_dir = tmp.path().join("out");

    // -q: nothing on standard error, one result line on standard output.
    let out = deepcomp(&[
        "-q",
        "--threads",
        "2",
        "pipeline",
        "--recipe",
        s(&recipe),
        "--out",
        s(&out_dir),
    ]);
    let (stdout, stderr) = ok(&out);
    assert_eq!(stderr, "", "-q writes nothing to standard error");
    assert_eq!(stdout.lines().count(), 1, "-q prints one line:\n{stdout}");
    assert!(
        stdout.contains("report.md") && stdout.contains("bytes"),
        "{stdout}"
    );

    // report.md: the build, the drop, the recipe itself, MACs after pruning.
    let md = std::fs::read_to_string(out_dir.join("report.md")).unwrap();
    assert!(md.contains("commit `"), "commit line:\n{md}");
    assert!(
        md.contains(&format!("deepcomp {}", env!("CARGO_PKG_VERSION"))),
        "version:\n{md}"
    );
    assert!(
        md.contains("Accuracy drop, dense → decoded:")
            || md.contains("Accuracy gain, dense → decoded:"),
        "drop line:\n{md}"
    );
    assert!(md.contains("on the test split, 300 examples"), "{md}");
    assert!(md.contains("```toml\n"), "recipe in a toml block:\n{md}");
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        assert!(
            md.contains(line),
            "recipe line `{line}` missing from report.md"
        );
    }
    assert!(
        md.contains("MACs pruned") && md.contains("MACs dense"),
        "{md}"
    );
    assert!(
        md.contains("before its finetune"),
        "pruned is labelled:\n{md}"
    );
    assert!(
        md.contains("| shared | | |"),
        "the shared row leaves what it did not measure empty:\n{md}"
    );

    // report.json: old contract fields kept, new ones present.
    let report = json(&std::fs::read_to_string(out_dir.join("report.json")).unwrap());
    for ptr in [
        "/accuracy/dense",
        "/accuracy/decoded",
        "/ratio/file",
        "/ratio/formula",
    ] {
        num(&report, ptr);
    }
    assert_eq!(report["version"], env!("CARGO_PKG_VERSION"));
    let commit = report["commit"].as_str().unwrap();
    assert!(
        commit == "unknown"
            || (commit.len() == 40 && commit.chars().all(|c| c.is_ascii_hexdigit())),
        "commit {commit}"
    );
    assert!(md.contains(&format!("commit `{commit}`")));
    assert_eq!(report["recipe_text"], text.as_str());
    let drop = num(&report, "/drop/points");
    let want = 100.0 * (num(&report, "/accuracy/dense") - num(&report, "/accuracy/decoded"));
    assert!((drop - want).abs() < 1e-9, "drop {drop} vs {want}");
    assert_eq!(report["drop"]["split"], "test");
    assert!(num(&report, "/accuracy/shared") > 0.0);
    let layers = report["layers"].as_array().unwrap();
    for l in layers {
        let (dense, pruned) = (num(l, "/macs_dense"), num(l, "/macs_pruned"));
        assert!(pruned < dense, "pruned MACs {pruned} < dense {dense}: {l}");
        assert_eq!(num(l, "/macs"), dense);
        assert!(num(l, "/ratio") > 1.0);
    }
    let fc1 = layers.iter().find(|l| l["name"] == "fc1.weight").unwrap();
    assert_eq!(num(fc1, "/macs_dense"), 784.0 * 300.0);
    assert_eq!(num(fc1, "/macs_pruned"), num(fc1, "/nonzero"));
    let centroids = report["history"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["stage"] == "centroids")
        .unwrap();
    assert_eq!(num(centroids, "/centroid_lr"), 0.0005);

    // Plots: SVG documents with their titles.
    for (file, title) in [
        ("accuracy.svg", "top-1 per stage"),
        ("hist-fc1_weight.svg", "fc1.weight: weight distribution"),
        ("hist-fc3_weight.svg", "shared values (centroids)"),
        ("sensitivity.svg", "sensitivity: each layer pruned alone"),
    ] {
        let svg = std::fs::read_to_string(out_dir.join("plots").join(file)).unwrap();
        assert!(svg.trim_start().starts_with("<svg"), "{file}");
        assert!(svg.trim_end().ends_with("</svg>"), "{file}");
        assert!(svg.contains(title), "{file} lacks `{title}`");
        assert!(
            !svg.contains("e-1"),
            "{file}: a tick label in exponent notation"
        );
    }
    let acc = std::fs::read_to_string(out_dir.join("plots/accuracy.svg")).unwrap();
    assert!(
        acc.contains("centroid-trained") && acc.contains("file "),
        "{acc}"
    );

    // inspect --json.
    let dcz = out_dir.join("model.dcz");
    let size = std::fs::metadata(&dcz).unwrap().len() as f64;
    let (stdout, _) = ok(&deepcomp(&["inspect", "--json", s(&dcz)]));
    let v = json(&stdout);
    assert_eq!(v["command"], "inspect");
    assert_eq!(num(&v, "/bytes_out"), size);
    assert_eq!(num(&v, "/bytes_in"), num(&report, "/bytes/dense_f32"));
    assert!((num(&v, "/ratio") - num(&report, "/ratio/file")).abs() < 1e-9);
    let rows = v["layers"].as_array().unwrap();
    assert_eq!(rows.len(), 3);
    for r in rows {
        for f in ["name", "shape", "nonzero", "bits", "bytes", "ratio"] {
            assert!(r.get(f).is_some(), "inspect row lacks {f}: {r}");
        }
    }
    assert_eq!(rows[0]["shape"], serde_json::json!([300, 784]));

    // eval --json, the same accuracy as the report's decoded model.
    let (stdout, _) = ok(&deepcomp(&[
        "eval",
        "--json",
        s(&dcz),
        "--recipe",
        s(&recipe),
    ]));
    let v = json(&stdout);
    assert_eq!(v["command"], "eval");
    assert_eq!(v["split"], "test");
    assert_eq!(num(&v, "/examples"), 300.0);
    assert_eq!(num(&v, "/accuracy"), num(&report, "/accuracy/decoded"));
    assert_eq!(v["file"], s(&dcz));

    // -q eval: the result line only.
    let (stdout, stderr) = ok(&deepcomp(&["-q", "eval", s(&dcz), "--recipe", s(&recipe)]));
    assert_eq!(stdout.lines().count(), 1, "{stdout}");
    assert_eq!(stderr, "");

    // compress --json on the dense checkpoint (a safetensors file).
    let dense = out_dir.join("checkpoints/dense.safetensors");
    let small = tmp.path().join("small.dcz");
    let (stdout, _) = ok(&deepcomp(&[
        "compress",
        "--json",
        s(&dense),
        "-o",
        s(&small),
        "--q",
        "90",
        "--fc-bits",
        "5",
        "--no-keep-first-last",
    ]));
    let v = json(&stdout);
    assert_eq!(v["command"], "compress");
    assert_eq!(
        num(&v, "/bytes_out"),
        std::fs::metadata(&small).unwrap().len() as f64
    );
    assert!(num(&v, "/bytes_in") >= 4.0 * 266_200.0);
    assert!(num(&v, "/ratio") > 5.0);
    assert_eq!(v["layers"].as_array().unwrap().len(), 3);
    assert_eq!(v["input"], s(&dense));

    // -q compress: one line.
    let (stdout, stderr) = ok(&deepcomp(&["-q", "compress", s(&dense), "-o", s(&small)]));
    assert_eq!(stdout.lines().count(), 1, "{stdout}");
    assert_eq!(stderr, "");

    // Without -q, pipeline prints a short summary, not report.md; --print-report prints it.
    let (stdout, _) = ok(&deepcomp(&[
        "pipeline",
        "--recipe",
        s(&recipe),
        "--out",
        s(&out_dir),
        "--no-progress",
    ]));
    assert!(!stdout.contains("## Layers"), "{stdout}");
    assert!(
        stdout.contains("dense → decoded") && stdout.contains("report:"),
        "{stdout}"
    );
    let (stdout, _) = ok(&deepcomp(&[
        "pipeline",
        "--recipe",
        s(&recipe),
        "--out",
        s(&out_dir),
        "--no-progress",
        "--print-report",
    ]));
    assert!(
        stdout.contains("## Layers") && stdout.contains("```toml"),
        "{stdout}"
    );
}

#[test]
fn threads_and_quiet_flags_are_checked() {
    let out = deepcomp(&["--threads", "0", "recipes"]);
    assert_eq!(out.status.code(), Some(2), "a usage error");
    let out = deepcomp(&["-q", "-v", "recipes"]);
    assert_eq!(out.status.code(), Some(2), "-q and -v conflict");
    let out = deepcomp(&["--threads", "1", "recipes"]);
    assert!(out.status.success());
    let out = deepcomp(&["inspect", "--json", "/nonexistent/x.dcz"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
}
