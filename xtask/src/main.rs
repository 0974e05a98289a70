//! `cargo xtask`: the project's orchestration commands.
//!
//! xtask depends on nothing of ours (so it builds in seconds); every real piece of work is done by the
//! `deepcomp` binary, which this program builds and runs through `$CARGO`. The commands:
//!
//! - `cargo xtask pipeline [--recipe NAME|PATH] [--out DIR] [--set KEY=VALUE]...`: the main job;
//!   default recipe `lenet300-fashion` (LeNet-300-100 on Fashion-MNIST); every argument, `--set`
//!   overrides included, goes to `deepcomp pipeline`.
//! - `cargo xtask test`: the whole test suite (`cargo test --workspace`).
//! - `cargo xtask ci`: short regression runs (`ci` on Fashion-MNIST, `ci-mnist` on the real MNIST in
//!   `../shared/data`); writes `target/deepcomp/ci.json` and fails when the
//!   compression ratio or the accuracy fall below `.ci/baseline.json` by more than its tolerance.
//! - `cargo xtask bench [--quick] [--criterion]`: training / Huffman / k-means throughput into
//!   `target/deepcomp/bench.json`, with PyTorch's training throughput on the same threads and the ratios
//!   when PyTorch is installed; `--criterion` first runs the criterion benches (entropy, quant).
//!   It also runs the compressed engine's latency bench (`deepcomp-runtime`'s `bench` example) and
//!   PyTorch's dense eval latency (`crates/runtime/benches/torch_dense.py`) and puts them side by side
//!   under `runtime` in the same file.
//! - `cargo xtask gpu-build`: the CUDA build (feature `cuda`) with nvcc and the CUDA libraries taken
//!   from pinned PyPI wheels, staged with the PyTorch comparison in `target/gpu/` (see [`gpu`]).

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};
use serde_json::Value;

mod gpu;

const USAGE: &str = "\
cargo xtask <command>

commands:
  pipeline [--recipe NAME|PATH] [--out DIR] [--set KEY=VALUE]... [-- extra deepcomp args]
                 run the compression pipeline end to end (default recipe: lenet300-fashion);
                 --set overrides any recipe field (train.epochs=3, prune.rounds.0.target=0.8)
  test           run the whole test suite (cargo test --workspace)
  ci             short regression run; fails when ratio/accuracy drop below .ci/baseline.json;
                 with ../shared/data also ci-mnist (.ci/baseline-mnist.json) and the short
                 variants of experiments/seed-000, -001 and -003
  bench [--quick] [--criterion]
                 measure throughput; writes target/deepcomp/bench.json (with PyTorch's figures and
                 the ratios when PyTorch is installed) and the compressed engine's latency next to
                 dense candle and PyTorch (`runtime`); --criterion also runs the criterion benches
                 of deepcomp-entropy and deepcomp-quant (reports in target/criterion)
  gpu-build      build `deepcomp` with --features cuda (CUDA 13.0 from PyPI wheels, sm_90) and stage
                 target/gpu/ (binary, torch_epoch.py, run.sh) for the GPU machine
";

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let cmd = args.next().unwrap_or_default();
    let rest: Vec<String> = args.collect();
    match cmd.as_str() {
        "pipeline" => pipeline(&rest),
        "test" => test(&rest),
        "ci" => ci(&rest),
        "bench" => bench(&rest),
        "gpu-build" => gpu::build(&root(), &rest),
        "" | "help" | "-h" | "--help" => {
            print!("{USAGE}");
            Ok(())
        }
        other => bail!("unknown xtask command `{other}`\n\n{USAGE}"),
    }
}

/// The workspace root (the parent of this crate's manifest dir).
fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

pub(crate) fn cargo() -> Command {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut c = Command::new(cargo);
    c.current_dir(root());
    c
}

pub(crate) fn run(mut c: Command) -> Result<()> {
    eprintln!("xtask: running {c:?}");
    let status = c
        .status()
        .with_context(|| format!("could not start {c:?}"))?;
    if !status.success() {
        bail!("{c:?} failed with {status}");
    }
    Ok(())
}

/// `cargo run --release -p deepcomp-driver --bin deepcomp -- <args>`
fn deepcomp(args: &[String]) -> Result<()> {
    let mut c = cargo();
    c.args([
        "run",
        "--release",
        "--quiet",
        "-p",
        "deepcomp-driver",
        "--bin",
        "deepcomp",
        "--",
    ]);
    c.args(args);
    run(c)
}

fn pipeline(rest: &[String]) -> Result<()> {
    deepcomp(&pipeline_args(rest))
}

/// The `deepcomp` arguments of `cargo xtask pipeline REST`: the default recipe unless one is given,
/// then every argument (`--set KEY=VALUE` overrides included) as it is.
fn pipeline_args(rest: &[String]) -> Vec<String> {
    let mut args = vec!["pipeline".to_string()];
    if !rest
        .iter()
        .any(|a| a == "--recipe" || a.starts_with("--recipe="))
    {
        args.push("--recipe".into());
        args.push("lenet300-fashion".into());
    }
    args.extend(rest.iter().filter(|a| a.as_str() != "--").cloned());
    args
}

fn test(rest: &[String]) -> Result<()> {
    let mut c = cargo();
    c.args(["test", "--workspace"]);
    c.args(rest);
    run(c)
}

fn read_json(path: &Path) -> Result<Value> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))
}

fn get_f64(v: &Value, path: &str, file: &Path) -> Result<f64> {
    let mut cur = v;
    for key in path.split('.') {
        cur = cur
            .get(key)
            .with_context(|| format!("{}: missing field `{path}`", file.display()))?;
    }
    cur.as_f64()
        .with_context(|| format!("{}: field `{path}` is not a number", file.display()))
}

/// The real data beside the checkout (`$DEEPCOMP_TEST_DATA` or `../shared/data`): `None`, said
/// loudly, when it is absent outside CI; an error under CI, where it must be there.
fn shared_data(root: &Path) -> Result<Option<PathBuf>> {
    let dir = std::env::var_os("DEEPCOMP_TEST_DATA")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("../shared/data"));
    if dir.is_dir() {
        return Ok(Some(dir));
    }
    let ci = std::env::var("CI")
        .is_ok_and(|v| !(v.is_empty() || v == "0" || v.eq_ignore_ascii_case("false")));
    if ci {
        bail!(
            "real test data not found at {} (CI must provide it; set DEEPCOMP_TEST_DATA)",
            dir.display()
        );
    }
    eprintln!(
        "\n=== xtask ci: SKIPPED the runs on real data: {} not found (set DEEPCOMP_TEST_DATA) ===\n",
        dir.display()
    );
    Ok(None)
}

/// One regression run: `recipe` into `target/deepcomp/<recipe>`, compared with `baseline`.
fn ci_run(
    root: &Path,
    recipe: &str,
    data: Option<&Path>,
    baseline: &str,
    rest: &[String],
) -> Result<(Value, bool)> {
    let out = root.join("target/deepcomp").join(recipe);
    let mut args: Vec<String> = vec![
        "pipeline".into(),
        "--recipe".into(),
        recipe.into(),
        "--out".into(),
        out.display().to_string(),
        "--fresh".into(),
    ];
    if let Some(d) = data {
        args.push("--data".into());
        args.push(d.display().to_string());
    }
    args.extend(rest.iter().cloned());
    deepcomp(&args)?;

    let report_path = out.join("report.json");
    let report = read_json(&report_path)?;
    let baseline_path = root.join(baseline);
    let baseline = read_json(&baseline_path)?;

    let mut checks = Vec::new();
    let mut failed = false;
    let metrics = baseline
        .get("metrics")
        .and_then(Value::as_object)
        .with_context(|| format!("{}: missing object `metrics`", baseline_path.display()))?;
    for (name, spec) in metrics {
        let want = get_f64(spec, "value", &baseline_path)?;
        let tol = get_f64(spec, "tolerance", &baseline_path)?;
        let got = get_f64(&report, name, &report_path)?;
        let ok = got >= want - tol;
        failed |= !ok;
        eprintln!(
            "xtask ci: {recipe:<9} {name:<18} measured {got:>10.4}  baseline {want:>10.4}  tolerance {tol:>8.4}  {}",
            if ok { "ok" } else { "REGRESSION" }
        );
        checks.push(serde_json::json!({
            "metric": name, "measured": got, "baseline": want, "tolerance": tol, "ok": ok
        }));
    }
    let decoded = get_f64(&report, "accuracy.decoded", &report_path)?;
    let quantized = get_f64(&report, "accuracy.quantized", &report_path)?;
    let exact = decoded == quantized;
    failed |= !exact;
    eprintln!("xtask ci: {recipe}: decoded accuracy == quantized accuracy: {exact}");
    let summary = serde_json::json!({
        "recipe": recipe,
        "baseline": baseline_path.display().to_string(),
        "report": report_path.display().to_string(),
        "checks": checks,
        "decoded_equals_quantized": exact,
        "ok": !failed,
    });
    Ok((summary, failed))
}

/// Seed experiments whose `--short` variant `cargo xtask ci` runs (about 5 minutes together).
const SHORT_EXPERIMENTS: [&str; 3] = ["seed-000", "seed-001", "seed-003"];

fn ci(rest: &[String]) -> Result<()> {
    let root = root();
    let mut runs = vec![ci_run(&root, "ci", None, ".ci/baseline.json", rest)?];
    if let Some(data) = shared_data(&root)? {
        let mnist = data.join("mnist");
        runs.push(ci_run(
            &root,
            "ci-mnist",
            Some(&mnist),
            ".ci/baseline-mnist.json",
            rest,
        )?);
        // The short variants of the seed experiments the test suite does not run itself (it runs
        // seed-002 and seed-004 on real data): each must run every table to the end.
        for seed in SHORT_EXPERIMENTS {
            let out = root
                .join("target/deepcomp/experiments")
                .join(format!("{seed}-short"));
            deepcomp(&[
                "experiment".into(),
                root.join("experiments")
                    .join(format!("{seed}.toml"))
                    .display()
                    .to_string(),
                "--short".into(),
                "--quiet".into(),
                "--no-progress".into(),
                "--data-root".into(),
                data.display().to_string(),
                "--out".into(),
                out.display().to_string(),
            ])
            .with_context(|| format!("the short run of experiments/{seed}.toml"))?;
        }
    }
    let failed = runs.iter().any(|(_, f)| *f);
    let summary = serde_json::json!({
        "runs": runs.iter().map(|(s, _)| s.clone()).collect::<Vec<_>>(),
        "ok": !failed,
    });
    let ci_json = root.join("target/deepcomp/ci.json");
    std::fs::write(&ci_json, serde_json::to_string_pretty(&summary)?)
        .with_context(|| format!("writing {}", ci_json.display()))?;
    eprintln!("xtask ci: wrote {}", ci_json.display());
    if failed {
        bail!(
            "regression against the baselines in .ci/ (see {})",
            ci_json.display()
        );
    }
    Ok(())
}

fn bench(rest: &[String]) -> Result<()> {
    let root = root();
    let out = root.join("target/deepcomp/bench.json");
    let criterion = rest.iter().any(|a| a == "--criterion");
    let mut args: Vec<String> = vec!["bench".into(), "--json".into(), out.display().to_string()];
    args.extend(rest.iter().filter(|a| *a != "--criterion").cloned());
    if criterion {
        let mut c = cargo();
        c.args(["bench", "-p", "deepcomp-entropy", "-p", "deepcomp-quant"]);
        run(c)?;
    }
    deepcomp(&args)?;
    // `deepcomp bench` printed the figures; check the file it wrote is there and parses.
    let mut figures = read_json(&out)?;
    let quick = rest.iter().any(|a| a == "--quick");
    torch_reference(&root, &out, &mut figures, quick)?;
    runtime_reference(&root, &out, &mut figures)?;
    // Both comparisons add to the figures; the file is written once, with everything.
    let text = serde_json::to_string_pretty(&figures)?;
    std::fs::write(&out, text + "\n").with_context(|| format!("writing {}", out.display()))?;
    eprintln!("xtask: wrote {}", out.display());
    Ok(())
}

/// When PyTorch is installed, times the same training / evaluation steps with it on the same number of threads
/// (`xtask/bench/torch_cpu_train.py`) and adds `pytorch_*_ex_s` and `ratio_*` (deepcomp ÷ PyTorch) to
/// the bench figures (the caller writes them). Without PyTorch it says so and leaves them alone.
fn torch_reference(root: &Path, out: &Path, figures: &mut Value, quick: bool) -> Result<()> {
    let python = std::env::var("PYTHON").unwrap_or_else(|_| "python3".into());
    let has_torch = Command::new(&python)
        .args(["-c", "import torch"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !has_torch {
        eprintln!("xtask: `{python}` has no torch module; skipping the PyTorch comparison");
        return Ok(());
    }
    let threads = get_f64(figures, "threads", out)? as usize;
    let script = root.join("xtask/bench/torch_cpu_train.py");
    let output = Command::new(&python)
        .arg(&script)
        .arg(threads.to_string())
        // Steps: LeNet-300-100, LeNet-5, the CIFAR nets; eval batches (as `deepcomp bench`).
        .args(if quick {
            ["20", "4", "2", "4"]
        } else {
            ["100", "20", "5", "10"]
        })
        .output()
        .with_context(|| format!("running {}", script.display()))?;
    if !output.status.success() {
        bail!(
            "{} failed: {}",
            script.display(),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let torch: Value = serde_json::from_slice(&output.stdout)
        .with_context(|| format!("parsing the output of {}", script.display()))?;
    let Some(map) = figures.as_object_mut() else {
        bail!("{}: not a JSON object", out.display());
    };
    // (figure name in bench.json, PyTorch's key, ratio key)
    let pairs = [
        ("train_lenet300_ex_s", "lenet300_ex_s", "ratio_lenet300"),
        ("train_lenet5_ex_s", "lenet5_ex_s", "ratio_lenet5"),
        ("train_resnet20_ex_s", "resnet20_ex_s", "ratio_resnet20"),
        (
            "train_vgg16_half_ex_s",
            "vgg16_half_ex_s",
            "ratio_vgg16_half",
        ),
        (
            "finetune_resnet20_ex_s",
            "finetune_resnet20_ex_s",
            "ratio_finetune_resnet20",
        ),
        (
            "eval_resnet20_ex_s",
            "eval_resnet20_ex_s",
            "ratio_eval_resnet20",
        ),
    ];
    for (ours_key, torch_key, ratio_key) in pairs {
        let theirs = get_f64(&torch, torch_key, &script)?;
        let ours = map
            .get(ours_key)
            .and_then(Value::as_f64)
            .with_context(|| format!("{}: missing {ours_key}", out.display()))?;
        map.insert(format!("pytorch_{torch_key}"), theirs.into());
        map.insert(ratio_key.into(), (ours / theirs).into());
        eprintln!(
            "xtask: {:<22} deepcomp {ours:>8.0} ex/s   PyTorch {theirs:>8.0} ex/s   ratio {:.2}",
            ratio_key.trim_start_matches("ratio_"),
            ours / theirs
        );
    }
    if let Some(v) = torch.get("torch") {
        map.insert("pytorch_version".into(), v.clone());
    }
    Ok(())
}

/// Parses JSON lines (one object per line; other lines, e.g. warnings, are skipped).
fn json_lines(text: &[u8]) -> Vec<Value> {
    String::from_utf8_lossy(text)
        .lines()
        .filter(|l| l.trim_start().starts_with('{'))
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// Latency at batch 1 and 128 and resident weight bytes of the compressed engine (`deepcomp-runtime`'s
/// `bench` example: generated pruned + shared LeNet-300-100, LeNet-5, ResNet-20), next to the same
/// network dense-decoded in the runtime's loops, deepcomp's dense (candle) forward from `deepcomp bench`
/// and, when installed, PyTorch's dense eval on the same threads. Adds `runtime` (one row per model and
/// thread count) to the bench figures (the caller writes them).
fn runtime_reference(root: &Path, out: &Path, figures: &mut Value) -> Result<()> {
    let mut c = cargo();
    c.args([
        "run",
        "--release",
        "--quiet",
        "-p",
        "deepcomp-runtime",
        "--example",
        "bench",
    ]);
    eprintln!("xtask: running {c:?}");
    let output = c
        .output()
        .with_context(|| format!("could not start {c:?}"))?;
    if !output.status.success() {
        bail!("{c:?} failed: {}", String::from_utf8_lossy(&output.stderr));
    }
    let mut rows = json_lines(&output.stdout);
    if rows.is_empty() {
        bail!("the runtime bench printed no figures");
    }
    let python = std::env::var("PYTHON").unwrap_or_else(|_| "python3".into());
    let script = root.join("crates/runtime/benches/torch_dense.py");
    let torch = match Command::new(&python).arg(&script).output() {
        Ok(o) if o.status.success() => json_lines(&o.stdout),
        Ok(o) => {
            eprintln!(
                "xtask: {} failed (no PyTorch?); the runtime rows have no PyTorch figures: {}",
                script.display(),
                String::from_utf8_lossy(&o.stderr)
                    .lines()
                    .last()
                    .unwrap_or("")
            );
            Vec::new()
        }
        Err(e) => {
            eprintln!(
                "xtask: cannot run `{python}`: {e}; the runtime rows have no PyTorch figures"
            );
            Vec::new()
        }
    };
    let threads = figures.get("threads").and_then(Value::as_u64);
    let candle: Vec<Value> = figures
        .get("dense_forward")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let num = |v: &Value, k: &str| v.get(k).and_then(Value::as_f64);
    eprintln!(
        "xtask: {:<9} {:>3} {:>12} {:>12} {:>12} {:>12} {:>12} {:>12} {:>9}",
        "model",
        "thr",
        "cmp b1 us",
        "candle b1",
        "torch b1",
        "cmp b128 ms",
        "candle b128",
        "torch b128",
        "w bytes÷"
    );
    for row in &mut rows {
        let model = row
            .get("model")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        let t = row.get("threads").and_then(Value::as_u64);
        let Some(map) = row.as_object_mut() else {
            continue;
        };
        if t == threads {
            for c in &candle {
                if c.get("model").and_then(Value::as_str) != Some(model.as_str()) {
                    continue;
                }
                let secs = num(c, "seconds").unwrap_or(f64::NAN);
                match c.get("batch").and_then(Value::as_u64) {
                    Some(1) => {
                        map.insert("candle_dense_b1_us".into(), (secs * 1e6).into());
                    }
                    Some(128) => {
                        map.insert("candle_dense_b128_ms".into(), (secs * 1e3).into());
                    }
                    _ => {}
                }
            }
        }
        if let Some(tr) = torch.iter().find(|r| {
            r.get("model").and_then(Value::as_str) == Some(model.as_str())
                && r.get("threads").and_then(Value::as_u64) == t
        }) {
            for k in ["torch_b1_us", "torch_b128_ms", "torch_param_bytes"] {
                if let Some(v) = tr.get(k) {
                    map.insert(k.into(), v.clone());
                }
            }
        }
        let get = |k: &str| map.get(k).and_then(Value::as_f64);
        let pairs = [
            (
                "speedup_b1_vs_torch",
                get("torch_b1_us"),
                get("compressed_b1_us"),
            ),
            (
                "speedup_b128_vs_torch",
                get("torch_b128_ms"),
                get("compressed_b128_ms"),
            ),
            (
                "speedup_b1_vs_candle",
                get("candle_dense_b1_us"),
                get("compressed_b1_us"),
            ),
            (
                "speedup_b128_vs_candle",
                get("candle_dense_b128_ms"),
                get("compressed_b128_ms"),
            ),
            (
                "weight_bytes_reduction",
                get("dense_weight_bytes"),
                get("compressed_weight_bytes"),
            ),
        ];
        let fmt = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.1}"));
        let line = format!(
            "xtask: {model:<9} {:>3} {:>12} {:>12} {:>12} {:>12} {:>12} {:>12} {:>9}",
            t.unwrap_or(0),
            fmt(get("compressed_b1_us")),
            fmt(get("candle_dense_b1_us")),
            fmt(get("torch_b1_us")),
            fmt(get("compressed_b128_ms")),
            fmt(get("candle_dense_b128_ms")),
            fmt(get("torch_b128_ms")),
            fmt(get("dense_weight_bytes")
                .zip(get("compressed_weight_bytes"))
                .map(|(a, b)| a / b)),
        );
        for (k, theirs, ours) in pairs {
            if let (Some(a), Some(b)) = (theirs, ours) {
                map.insert(k.into(), (a / b).into());
            }
        }
        eprintln!("{line}");
    }
    let Some(map) = figures.as_object_mut() else {
        bail!("{}: not a JSON object", out.display());
    };
    map.insert("runtime".into(), Value::Array(rows));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pipeline_passes_overrides_through() {
        let args = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            pipeline_args(&args(&["--set", "train.epochs=3", "--set=seed=43"])),
            args(&[
                "pipeline",
                "--recipe",
                "lenet300-fashion",
                "--set",
                "train.epochs=3",
                "--set=seed=43"
            ])
        );
        assert_eq!(
            pipeline_args(&args(&["--recipe", "ci", "--", "--set", "quant.fc_bits=4"])),
            args(&["pipeline", "--recipe", "ci", "--set", "quant.fc_bits=4"])
        );
    }
}
