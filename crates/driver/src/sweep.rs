//! `deepcomp sweep`: one recipe run at every point of a grid of overrides.
//!
//! Each `--set KEY=V1,V2,…` is an axis; the points are the product of the axes (or, with `zip`, their
//! element-wise pairing). Every point is an ordinary pipeline run into `DIR/points/<slug>/`, so a
//! re-run of the sweep reuses what the pipeline's resume logic accepts there. Before a point runs, its
//! folder is seeded from another point's checkpoints: the longest run of stages, from the dense model
//! on, whose recorded stage inputs equal this point's (see [`crate::resume`]) is hard-linked in, so
//! points that differ only in pruning or quantization train the dense model once.
//!
//! Every point is parsed, validated and its data looked at before the first one runs ([`prepare`];
//! [`execute`] then runs them, and [`run`] does both). The data set is read once for all points (see
//! [`pipeline::DataCache`]), and a sweep may also take checkpoints from other sweeps' point folders
//! (`SweepOptions::donors`, used by [`crate::experiment`]). The results go to `DIR/sweep.json`,
//! `DIR/sweep.md` and `DIR/plots/tradeoff.svg` (decoded accuracy against the file's compression
//! ratio, Pareto front marked), written also when some points fail.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::Device;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::error::{DriverError, Result};
use crate::overrides::{self, Assignment};
use crate::recipe::{LoadedRecipe, RecipeError};
use crate::report::{Accuracy, Report};
use crate::resume::{self, StageInputs};
use crate::{fsutil, pipeline, sweep_plot};

/// How to run a sweep.
#[derive(Debug, Clone)]
pub struct SweepOptions {
    /// Built-in recipe name or TOML file.
    pub recipe: String,
    /// The axes as given: `KEY=V1,V2,…` each.
    pub sets: Vec<String>,
    /// Pair the value lists element-wise instead of taking their product.
    pub zip: bool,
    /// The sweep's folder; `None`: `target/deepcomp/sweep-<recipe name>`.
    pub out: Option<PathBuf>,
    /// Dataset folder overriding the recipe's (every point).
    pub data_path: Option<PathBuf>,
    /// Show progress bars.
    pub progress: bool,
    /// Other folders of point folders (other sweeps' `points/`) whose checkpoints may seed this
    /// sweep's points, searched after its own.
    pub donors: Vec<PathBuf>,
}

/// One axis: a key and its values (texts, each parsed as an override value).
#[derive(Debug, Clone, PartialEq)]
pub struct Axis {
    /// The key as given.
    pub key: String,
    /// The values, in order.
    pub values: Vec<String>,
}

/// One point of a sweep, parsed and validated.
#[derive(Debug, Clone)]
pub struct Point {
    /// Folder name under `points/`: the point's `key=value` pairs, filesystem-safe and unique.
    pub slug: String,
    /// The overrides of this point, one per axis.
    pub sets: Vec<Assignment>,
    /// The effective recipe.
    pub recipe: LoadedRecipe,
}

/// One finished point, as `sweep.json` holds it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SweepRow {
    /// The point's name (its folder under `points/`).
    pub point: String,
    /// Its folder, relative to the sweep folder.
    pub folder: String,
    /// The value of every swept key at this point.
    pub values: BTreeMap<String, Value>,
    /// Top-1 after each stage.
    pub accuracy: Accuracy,
    /// Fraction of prunable weights that are zero.
    pub sparsity: f64,
    /// Weight-sharing bits per prunable layer.
    pub bits: BTreeMap<String, u8>,
    /// Compression ratios: `file` (the `.dcz` written and verified) and `formula`.
    pub ratio: RowRatio,
    /// Bytes of the `.dcz` file.
    pub dcz_bytes: u64,
    /// Wall time of this point's pipeline run in this sweep invocation.
    pub seconds: f64,
    /// Stages taken from checkpoints rather than computed (see [`Report::reused`]).
    pub reused: Vec<String>,
    /// The point whose checkpoints seeded this one's folder, when one did.
    pub seeded_from: Option<String>,
}

/// What a sweep did.
#[derive(Debug, Clone)]
pub struct SweepOutcome {
    /// The sweep's folder.
    pub out: PathBuf,
    /// The recipe's name.
    pub recipe: String,
    /// One row per point that finished, in order.
    pub rows: Vec<SweepRow>,
    /// The points that failed: (name, error).
    pub failed: Vec<(String, String)>,
}

/// A sweep checked and ready to run: every point validated, its data looked at and its stage inputs
/// computed.
#[derive(Debug, Clone)]
pub struct Prepared {
    /// The points, in order.
    pub points: Vec<Point>,
    /// Each point's stage inputs.
    inputs: Vec<StageInputs>,
    /// The recipe's name.
    pub recipe: String,
}

/// The two ratios a sweep compares.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct RowRatio {
    /// `bytes.dense_f32 / bytes.dcz`.
    pub file: f64,
    /// The paper's formula over the prunable weights.
    pub formula: f64,
}

fn err(msg: impl Into<String>) -> DriverError {
    DriverError::msg(msg)
}

/// Splits a value list on its top-level commas: commas inside `[]`, `{}` or quotes belong to the
/// value (`[0.5,0.9],[0.6,0.95]` is two values). Values are trimmed; an empty one is an error.
pub fn split_list(text: &str) -> std::result::Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut depth: i32 = 0;
    let mut quote: Option<char> = None;
    let mut escaped = false;
    for c in text.chars() {
        if let Some(q) = quote {
            cur.push(c);
            if escaped {
                escaped = false;
            } else if c == '\\' && q == '"' {
                escaped = true;
            } else if c == q {
                quote = None;
            }
            continue;
        }
        match c {
            '"' | '\'' => {
                quote = Some(c);
                cur.push(c);
            }
            '[' | '{' => {
                depth += 1;
                cur.push(c);
            }
            ']' | '}' => {
                depth -= 1;
                if depth < 0 {
                    return Err(format!("`{text}`: unbalanced `{c}`"));
                }
                cur.push(c);
            }
            ',' if depth == 0 => out.push(std::mem::take(&mut cur)),
            _ => cur.push(c),
        }
    }
    if quote.is_some() {
        return Err(format!("`{text}`: unclosed quote"));
    }
    if depth != 0 {
        return Err(format!("`{text}`: unclosed `[` or `{{`"));
    }
    out.push(cur);
    let out: Vec<String> = out.into_iter().map(|v| v.trim().to_string()).collect();
    if let Some(i) = out.iter().position(String::is_empty) {
        return Err(format!("`{text}`: value {} is empty", i + 1));
    }
    Ok(out)
}

/// Parses the axes (`KEY=V1,V2,…`): a key given twice, or a value given twice for one key, is an
/// error.
pub fn parse_axes(sets: &[String]) -> Result<Vec<Axis>> {
    let mut axes: Vec<Axis> = Vec::new();
    let mut keys: Vec<String> = Vec::new();
    for s in sets {
        let (key, list) = overrides::split_assignment(s)?;
        let path = overrides::parse_key(&key).map_err(|reason| RecipeError::Override {
            assignment: s.clone(),
            reason,
        })?;
        let canonical = path.join(".");
        if keys.contains(&canonical) {
            return Err(err(format!("sweep: --set {key} is given twice")));
        }
        keys.push(canonical);
        let values = split_list(&list).map_err(|reason| RecipeError::Override {
            assignment: s.clone(),
            reason,
        })?;
        for (i, v) in values.iter().enumerate() {
            if values[..i].contains(v) {
                return Err(err(format!(
                    "sweep: --set {key}: value `{v}` is listed twice"
                )));
            }
        }
        axes.push(Axis { key, values });
    }
    Ok(axes)
}

/// The points' overrides: the product of the axes (first axis outermost) or, with `zip`, the i-th
/// value of every axis for point i. Under `zip` the lists need the same length, except that a list of
/// one value is that value at every point (a fixed field, as without `zip`).
pub fn combine(axes: &[Axis], zip: bool) -> Result<Vec<Vec<(String, String)>>> {
    if axes.is_empty() {
        return Ok(vec![Vec::new()]);
    }
    if zip {
        let n = axes.iter().map(|a| a.values.len()).max().unwrap_or(1);
        if let Some(a) = axes
            .iter()
            .find(|a| a.values.len() != n && a.values.len() != 1)
        {
            let lens: Vec<String> = axes
                .iter()
                .map(|a| format!("{} has {}", a.key, a.values.len()))
                .collect();
            return Err(err(format!(
                "sweep --zip pairs the lists element by element, so they need the same length \
                 (or one value, used at every point): {} (`{}` differs)",
                lens.join(", "),
                a.key
            )));
        }
        return Ok((0..n)
            .map(|i| {
                axes.iter()
                    .map(|a| {
                        let v = if a.values.len() == 1 {
                            &a.values[0]
                        } else {
                            &a.values[i]
                        };
                        (a.key.clone(), v.clone())
                    })
                    .collect()
            })
            .collect());
    }
    let mut points: Vec<Vec<(String, String)>> = vec![Vec::new()];
    for a in axes {
        points = points
            .into_iter()
            .flat_map(|p| {
                a.values.iter().map(move |v| {
                    let mut q = p.clone();
                    q.push((a.key.clone(), v.clone()));
                    q
                })
            })
            .collect();
    }
    Ok(points)
}

fn sanitize(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._-=,+".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// Folder names for points: the `key=value` pairs of the keys that vary (all keys when none does),
/// joined by commas, with characters outside `A-Za-z0-9._-=,+` replaced. A name that had to be
/// changed, is over 80 characters, or would be shared gets a hash of its exact pairs appended, so
/// every point's folder is its own and the same pairs always give the same folder.
pub fn slugs(points: &[Vec<(String, String)>]) -> Vec<String> {
    let varying: Vec<bool> = match points.first() {
        None => return Vec::new(),
        Some(first) => (0..first.len())
            .map(|i| points.iter().any(|p| p[i].1 != first[i].1))
            .collect(),
    };
    let any_varies = varying.iter().any(|v| *v);
    let raw: Vec<String> = points
        .iter()
        .map(|p| {
            let pairs: Vec<String> = p
                .iter()
                .enumerate()
                .filter(|(i, _)| varying[*i] || !any_varies)
                .map(|(_, (k, v))| format!("{k}={v}"))
                .collect();
            if pairs.is_empty() {
                "base".to_string()
            } else {
                pairs.join(",")
            }
        })
        .collect();
    let base: Vec<String> = raw.iter().map(|r| sanitize(r)).collect();
    raw.iter()
        .zip(&base)
        .map(|(r, b)| {
            let shared = base.iter().filter(|x| *x == b).count() > 1;
            if b != r || b.len() > 80 || shared || b.starts_with('.') {
                let h = hex::encode(&Sha256::digest(r.as_bytes())[..4]);
                let mut short: String = b.chars().take(64).collect();
                short.push('-');
                short.push_str(&h);
                short
            } else {
                b.clone()
            }
        })
        .collect()
}

/// Parses and validates every point of a sweep: each point's recipe, with its overrides, must parse,
/// validate and name only layers its model has. Nothing is written.
pub fn plan(recipe: &str, sets: &[String], zip: bool) -> Result<Vec<Point>> {
    let (text, origin) = crate::recipe::load_text(recipe)?;
    let axes = parse_axes(sets)?;
    let combos = combine(&axes, zip)?;
    let names = slugs(&combos);
    let mut points = Vec::new();
    for (combo, slug) in combos.into_iter().zip(names) {
        let sets = combo
            .iter()
            .map(|(k, v)| overrides::parse_assignment(&format!("{k}={v}")))
            .collect::<std::result::Result<Vec<_>, _>>()?;
        let loaded = overrides::parse_with(&text, &origin, &sets)
            .map_err(|e| err(format!("sweep point {slug}: {e}")))?;
        pipeline::check_recipe(&loaded.recipe)
            .map_err(|e| err(format!("sweep point {slug}: {e}")))?;
        points.push(Point {
            slug,
            sets,
            recipe: loaded,
        });
    }
    let mut seen: HashMap<&str, &str> = HashMap::new();
    for p in &points {
        if let Some(other) = seen.insert(&p.recipe.text, &p.slug) {
            return Err(err(format!(
                "sweep points {other} and {} give the same recipe",
                p.slug
            )));
        }
    }
    Ok(points)
}

/// The recorded stage inputs of a checkpoint, read from its header alone (`None` when it has none or
/// does not parse).
fn recorded_inputs(path: &Path) -> Option<Value> {
    use std::io::Read as _;
    let mut f = std::fs::File::open(path).ok()?;
    let mut len = [0u8; 8];
    f.read_exact(&mut len).ok()?;
    let n = u64::from_le_bytes(len);
    if n > 100 << 20 {
        return None;
    }
    let mut header = vec![0u8; n as usize];
    f.read_exact(&mut header).ok()?;
    let header: Value = serde_json::from_slice(&header).ok()?;
    let text = header
        .get("__metadata__")?
        .get(resume::INPUTS_KEY)?
        .as_str()?;
    serde_json::from_str(text).ok()
}

/// How many of `files` (stage checkpoints in order, with the inputs each must record), from the
/// first, `dir` holds with matching inputs.
fn matching_prefix(dir: &Path, files: &[(PathBuf, Value)]) -> usize {
    files
        .iter()
        .take_while(|(p, want)| {
            p.file_name()
                .and_then(|n| recorded_inputs(&dir.join("checkpoints").join(n)))
                .is_some_and(|got| &got == want)
        })
        .count()
}

/// Puts `src` at `dst` (hard link, else copy), replacing what is there through a temp name.
fn link_or_copy(src: &Path, dst: &Path) -> Result<()> {
    let tmp = dst.with_file_name(format!(
        ".{}.{}.tmp",
        dst.file_name()
            .map_or_else(String::new, |n| n.to_string_lossy().into_owned()),
        std::process::id()
    ));
    let _ = std::fs::remove_file(&tmp);
    if std::fs::hard_link(src, &tmp).is_err() {
        std::fs::copy(src, &tmp).map_err(|e| DriverError::io(src, e))?;
    }
    std::fs::rename(&tmp, dst).map_err(|e| DriverError::io(dst, e))
}

/// The point folders under `points`, sorted by name.
fn point_folders(points: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(points) else {
        return Vec::new();
    };
    let mut names: Vec<String> = entries
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// Seeds `dir`'s checkpoints from the point folder (under `points`, then under each of `donors`)
/// that holds the longest matching run of stages, when that is longer than what `dir` holds itself.
/// Returns the donor's name: its folder name when it is under `points`, else
/// `<sweep folder>/points/<name>`.
fn seed(
    dir: &Path,
    points: &Path,
    donors: &[PathBuf],
    files: &[(PathBuf, Value)],
) -> Result<Option<(String, usize)>> {
    let own = matching_prefix(dir, files);
    if own == files.len() {
        return Ok(None);
    }
    let mut best: Option<(PathBuf, String, usize)> = None;
    for (i, root) in std::iter::once(points)
        .chain(donors.iter().map(PathBuf::as_path))
        .enumerate()
    {
        for name in point_folders(root) {
            let other = root.join(&name);
            if other == dir {
                continue;
            }
            let k = matching_prefix(&other, files);
            if k > own && best.as_ref().is_none_or(|(_, _, b)| k > *b) {
                let label = if i == 0 {
                    name
                } else {
                    let sweep = root
                        .parent()
                        .and_then(Path::file_name)
                        .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
                    format!("{sweep}/points/{name}")
                };
                best = Some((other, label, k));
            }
        }
    }
    let Some((from, label, k)) = best else {
        return Ok(None);
    };
    let ck = dir.join("checkpoints");
    fsutil::create_dir_all(&ck)?;
    for (p, _) in &files[..k] {
        let Some(file) = p.file_name() else { continue };
        link_or_copy(&from.join("checkpoints").join(file), &ck.join(file))?;
    }
    Ok(Some((label, k)))
}

fn row_of(point: &Point, report: &Report, seconds: f64, seeded: Option<String>) -> SweepRow {
    let values = point
        .sets
        .iter()
        .map(|a| {
            (
                a.canonical_key(),
                serde_json::to_value(overrides::parse_value(&a.value)).unwrap_or(Value::Null),
            )
        })
        .collect();
    SweepRow {
        point: point.slug.clone(),
        folder: format!("points/{}", point.slug),
        values,
        accuracy: report.accuracy.clone(),
        sparsity: if report.prunable_params == 0 {
            0.0
        } else {
            1.0 - report.prunable_nonzero as f64 / report.prunable_params as f64
        },
        bits: report
            .layers
            .iter()
            .map(|l| (l.name.clone(), l.bits))
            .collect(),
        ratio: RowRatio {
            file: report.ratio.file,
            formula: report.ratio.formula,
        },
        dcz_bytes: report.bytes.dcz,
        seconds,
        reused: report.reused.clone(),
        seeded_from: seeded,
    }
}

/// Bits per layer in a table cell: one number when every layer has it, else `layer=bits` pairs
/// (`.weight` left off).
fn bits_cell(bits: &BTreeMap<String, u8>) -> String {
    let mut distinct: Vec<u8> = bits.values().copied().collect();
    distinct.sort_unstable();
    distinct.dedup();
    if distinct.len() == 1 {
        return distinct[0].to_string();
    }
    bits.iter()
        .map(|(n, b)| format!("{}={b}", n.trim_end_matches(".weight")))
        .collect::<Vec<_>>()
        .join(" ")
}

/// `sweep.md`: one row per point.
pub fn to_markdown(recipe: &str, rows: &[SweepRow]) -> String {
    let mut keys: Vec<&String> = rows.iter().flat_map(|r| r.values.keys()).collect();
    keys.sort();
    keys.dedup();
    let mut s = format!("# Sweep of `{recipe}`\n\n");
    let head: Vec<String> = std::iter::once("#".to_string())
        .chain(keys.iter().map(|k| format!("`{k}`")))
        .chain(
            [
                "dense",
                "pruned",
                "finetuned",
                "quantized",
                "decoded",
                "sparsity",
                "bits",
                "ratio.file",
                "ratio.formula",
                "seconds",
                "reused",
                "folder",
            ]
            .map(String::from),
        )
        .collect();
    let _ = writeln!(s, "| {} |", head.join(" | "));
    let _ = writeln!(s, "|{}", "---|".repeat(head.len()));
    for (i, r) in rows.iter().enumerate() {
        let a = &r.accuracy;
        let mut cells: Vec<String> = std::iter::once((i + 1).to_string())
            .chain(
                keys.iter()
                    .map(|k| r.values.get(*k).map_or_else(String::new, |v| v.to_string())),
            )
            .collect();
        cells.extend([
            format!("{:.4}", a.dense),
            format!("{:.4}", a.pruned),
            format!("{:.4}", a.finetuned),
            format!("{:.4}", a.quantized),
            format!("{:.4}", a.decoded),
            format!("{:.4}", r.sparsity),
            bits_cell(&r.bits),
            format!("{:.1}×", r.ratio.file),
            format!("{:.1}×", r.ratio.formula),
            format!("{:.1}", r.seconds),
            if r.reused.is_empty() {
                "–".into()
            } else {
                r.reused.join(", ")
            },
            r.folder.clone(),
        ]);
        let _ = writeln!(s, "| {} |", cells.join(" | ").replace('\n', " "));
    }
    s
}

/// Writes `sweep.json`, `sweep.md` and `plots/tradeoff.svg` for `rows`.
pub fn write_summary(out: &Path, recipe: &str, rows: &[SweepRow]) -> Result<()> {
    fsutil::write_json(&out.join("sweep.json"), &rows)?;
    fsutil::write_atomic(&out.join("sweep.md"), to_markdown(recipe, rows).as_bytes())?;
    let plots = out.join("plots");
    fsutil::create_dir_all(&plots)?;
    let pts: Vec<sweep_plot::TradeoffPoint> = rows
        .iter()
        .enumerate()
        .map(|(i, r)| sweep_plot::TradeoffPoint {
            label: (i + 1).to_string(),
            ratio: r.ratio.file,
            accuracy: r.accuracy.decoded,
        })
        .collect();
    let svg = sweep_plot::tradeoff_svg(
        &format!("sweep of {recipe}: decoded top-1 vs file ratio (numbers: rows of sweep.md)"),
        &pts,
    )
    .map_err(err)?;
    fsutil::write_atomic(&plots.join("tradeoff.svg"), svg.as_bytes())?;
    Ok(())
}

/// Checks a sweep before anything runs: every point parsed and validated ([`plan`]), its data loaded
/// once per distinct data configuration and its stage inputs computed (a data error or a missing
/// checkpoint file shows here). `described` caches the data descriptions across calls (an experiment
/// prepares all its sweeps before the first one runs). Nothing is written.
pub fn prepare(opts: &SweepOptions, described: &mut HashMap<String, Value>) -> Result<Prepared> {
    let points = plan(&opts.recipe, &opts.sets, opts.zip)?;
    let mut inputs = Vec::with_capacity(points.len());
    for p in &points {
        let r = &p.recipe.recipe;
        let key = serde_json::to_string(&(&r.dataset, &r.data, &r.seed, &opts.data_path))
            .map_err(|e| err(e.to_string()))?;
        let desc = match described.get(&key) {
            Some(d) => d.clone(),
            None => {
                let d = pipeline::data_description(r, opts.data_path.as_deref())
                    .map_err(|e| err(format!("sweep point {}: {e}", p.slug)))?;
                described.insert(key, d.clone());
                d
            }
        };
        inputs.push(
            StageInputs::new(&p.recipe, desc)
                .map_err(|e| err(format!("sweep point {}: {e}", p.slug)))?,
        );
    }
    let recipe = points
        .first()
        .map_or_else(String::new, |p| p.recipe.recipe.name.clone());
    Ok(Prepared {
        points,
        inputs,
        recipe,
    })
}

/// The folder a sweep writes to: `opts.out`, else `target/deepcomp/sweep-<recipe name>`.
pub fn out_dir(opts: &SweepOptions, recipe: &str) -> PathBuf {
    opts.out
        .clone()
        .unwrap_or_else(|| PathBuf::from("target/deepcomp").join(format!("sweep-{recipe}")))
}

/// Runs the points of a prepared sweep on `device` in order, seeding each folder from the points
/// before it (and from `opts.donors`), and writes the summary of the points that finished. A point
/// that fails is recorded in [`SweepOutcome::failed`] and the others still run; only an error of the
/// sweep folder itself (its lock, its summary) is returned as an error.
pub fn execute(prepared: &Prepared, opts: &SweepOptions, device: &Device) -> Result<SweepOutcome> {
    let _cache = pipeline::DataCache::enable();
    let name = prepared.recipe.clone();
    let out = out_dir(opts, &name);
    let _lock = resume::OutputLock::acquire(&out)?;
    let points_dir = out.join("points");
    fsutil::create_dir_all(&points_dir)?;
    let n = prepared.points.len();
    let mut rows = Vec::new();
    let mut failed: Vec<(String, String)> = Vec::new();
    for (i, (p, inp)) in prepared.points.iter().zip(&prepared.inputs).enumerate() {
        let dir = points_dir.join(&p.slug);
        let t = Instant::now();
        let outcome = (|| -> Result<(Report, Option<String>)> {
            fsutil::create_dir_all(&dir)?;
            fsutil::write_atomic(&dir.join("recipe.toml"), p.recipe.text.as_bytes())?;
            let files = pipeline::stage_files(&dir, &p.recipe.recipe, inp);
            let seeded = seed(&dir, &points_dir, &opts.donors, &files)?;
            if let Some((from, k)) = &seeded {
                eprintln!(
                    "sweep: [{}/{n}] {}: {k} stage checkpoint(s) taken from {}{from}",
                    i + 1,
                    p.slug,
                    if from.contains('/') { "" } else { "points/" }
                );
            }
            eprintln!("sweep: [{}/{n}] {}: running", i + 1, p.slug);
            let report = pipeline::run_on(
                &pipeline::PipelineOptions {
                    recipe: p.recipe.clone(),
                    out: dir.clone(),
                    fresh: false,
                    progress: opts.progress,
                    data_path: opts.data_path.clone(),
                },
                device,
            )?;
            Ok((report, seeded.map(|(from, _)| from)))
        })();
        let secs = t.elapsed().as_secs_f64();
        match outcome {
            Ok((report, seeded)) => {
                let row = row_of(p, &report, secs, seeded);
                eprintln!(
                    "sweep: [{}/{n}] {}: decoded top-1 {:.4}, ratio.file {:.1}×, {:.1} s{}",
                    i + 1,
                    p.slug,
                    row.accuracy.decoded,
                    row.ratio.file,
                    secs,
                    if row.reused.is_empty() {
                        String::new()
                    } else {
                        format!(" (reused {})", row.reused.join(", "))
                    }
                );
                rows.push(row);
            }
            Err(e) => {
                eprintln!("sweep: [{}/{n}] {}: FAILED: {e}", i + 1, p.slug);
                failed.push((p.slug.clone(), e.to_string()));
            }
        }
    }
    write_summary(&out, &name, &rows)?;
    Ok(SweepOutcome {
        out,
        recipe: name,
        rows,
        failed,
    })
}

/// Runs a sweep on `device`: validates every point ([`prepare`]), then runs them in order
/// ([`execute`]). Writes the summary of the points that finished; when any failed, the error names
/// them (after the summary is written).
pub fn run(opts: &SweepOptions, device: &Device) -> Result<SweepOutcome> {
    let _cache = pipeline::DataCache::enable();
    let prepared = prepare(opts, &mut HashMap::new())?;
    let done = execute(&prepared, opts, device)?;
    if !done.failed.is_empty() {
        let list: Vec<String> = done
            .failed
            .iter()
            .map(|(s, e)| format!("{s}: {e}"))
            .collect();
        return Err(err(format!(
            "sweep: {} of {} point(s) failed (the summary in {} has the others): {}",
            done.failed.len(),
            prepared.points.len(),
            done.out.display(),
            list.join("; ")
        )));
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_split_on_top_level_commas_only() {
        assert_eq!(split_list("2,3, 4").unwrap(), ["2", "3", "4"]);
        assert_eq!(
            split_list("[0.5,0.9],[0.6, 0.95]").unwrap(),
            ["[0.5,0.9]", "[0.6, 0.95]"]
        );
        assert_eq!(
            split_list("{ target = 0.9, epochs = 1 },\"a,b\",'c,d'").unwrap(),
            ["{ target = 0.9, epochs = 1 }", "\"a,b\"", "'c,d'"]
        );
        assert_eq!(split_list("\"x\\\",y\"").unwrap(), ["\"x\\\",y\""]);
        assert!(split_list("1,,2").is_err());
        assert!(split_list("[1,2").is_err());
        assert!(split_list("1]").is_err());
        assert!(split_list("\"a,b").is_err());
    }

    fn axes(sets: &[&str]) -> Vec<Axis> {
        parse_axes(&sets.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap()
    }

    #[test]
    fn grid_is_the_product_and_zip_pairs() {
        let a = axes(&["quant.fc_bits=3,4,5", "seed=1,2"]);
        let grid = combine(&a, false).unwrap();
        assert_eq!(grid.len(), 6);
        assert_eq!(
            grid[1],
            vec![
                ("quant.fc_bits".to_string(), "3".to_string()),
                ("seed".to_string(), "2".to_string())
            ]
        );
        let e = combine(&a, true).unwrap_err().to_string();
        assert!(e.contains("same length") && e.contains("seed has 2"), "{e}");
        let z = combine(&axes(&["quant.fc_bits=3,4", "seed=1,2"]), true).unwrap();
        assert_eq!(z.len(), 2);
        assert_eq!(z[1][0].1, "4");
        assert_eq!(z[1][1].1, "2");
        // One value is used at every point.
        let z = combine(&axes(&["quant.fc_bits=3,4,5", "seed=9"]), true).unwrap();
        assert_eq!(z.len(), 3);
        assert!(z.iter().all(|p| p[1].1 == "9"));
        assert_eq!(z[2][0].1, "5");
    }

    #[test]
    fn twice_given_keys_and_values_are_refused() {
        let e = parse_axes(&["seed=1,2".into(), "seed=3".into()])
            .unwrap_err()
            .to_string();
        assert!(e.contains("given twice"), "{e}");
        let e = parse_axes(&["seed=1,1".into()]).unwrap_err().to_string();
        assert!(e.contains("listed twice"), "{e}");
    }

    #[test]
    fn slugs_are_safe_unique_and_name_the_varying_keys() {
        let pts = combine(
            &axes(&[
                "quant.fc_bits=3,4",
                "train.epochs=2",
                "prune.rounds=[{target=0.5,epochs=1}],[{target=0.6,epochs=1}]",
            ]),
            false,
        )
        .unwrap();
        let s = slugs(&pts);
        assert_eq!(s.len(), 4);
        assert!(
            s[0].starts_with("quant.fc_bits=3,prune.rounds="),
            "{}",
            s[0]
        );
        assert!(!s[0].contains("train.epochs"), "{}", s[0]);
        for x in &s {
            assert!(
                x.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "._-=,+".contains(c)),
                "{x}"
            );
        }
        let mut u = s.clone();
        u.sort();
        u.dedup();
        assert_eq!(u.len(), 4);
        // Values that differ only in characters a file name cannot hold stay apart.
        let s = slugs(&combine(&axes(&["data.path=a/b,a:b"]), false).unwrap());
        assert_ne!(s[0], s[1]);
        assert_eq!(
            slugs(&combine(&axes(&["seed=1,2"]), false).unwrap()),
            ["seed=1", "seed=2"]
        );
        assert_eq!(
            slugs(&combine(&axes(&["seed=1"]), false).unwrap()),
            ["seed=1"]
        );
    }
}
