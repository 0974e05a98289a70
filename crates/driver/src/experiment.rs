//! `deepcomp experiment FILE`: the tables of one notebook, reproduced by one command.
//!
//! The seed notebooks each fill a handful of tables by hand (a pruning sweep before and after
//! retraining, a bit-width sweep, a grid of ranges and bits); each table is a sweep over a few recipe
//! fields. An experiment file (TOML, in `experiments/`) is therefore a list of sweep invocations on
//! one base recipe, plus what a table needs beyond `sweep.md`: which figures to show, in which
//! columns, and the notebook's own figures beside ours.
//!
//! ```toml
//! title = "Seed 001: ResNet-20"
//! recipe = "resnet20-cifar10-jpeg"          # built-in name, or a path relative to this file
//! set = ["data.path=${data}/cifar10-jpeg.tar.gz"]   # every point of every sweep
//!
//! [short]                                   # `--short`: added after the sets above
//! set = ["data.train_limit=1000", "data.test_limit=500", "data.balanced_limits=true"]
//!
//! [[sweep]]
//! name = "std"                              # its folder under the output folder
//! title = "Pruning by std, before and after retraining (Lab 1 (d), Lab 2 (c))"
//! set = ["prune.method=std", "prune.rounds=[{epochs=20}]",
//!        "prune.std_s=[0.0]", "prune.std_s.0=0.0,0.25,0.5,1.0"]
//! short = ["prune.std_s.0=0.5,1.0", "prune.rounds=[{epochs=1}]"]
//! columns = [
//!   { axis = "prune.std_s.0", label = "s" },
//!   { seed = [0.0, 0.2053, 0.3973, 0.6951], label = "seed: sparsity" },
//!   { field = "sparsity", label = "sparsity" },
//!   { field = "accuracy.pruned", label = "top-1 before", percent = true },
//! ]
//! ```
//!
//! Every `set` entry is exactly a `deepcomp sweep --set` argument: `KEY=VALUE` fixes a field,
//! `KEY=V1,V2,…` is an axis, the points are the product of the axes (or, with `zip = true`, their
//! pairing). The entries of a sweep's point list are, in order, the file's `set`, the sweep's `set`,
//! and with `--short` the `[short] set` and the sweep's `short`; a key given again replaces the earlier
//! value list and keeps its place, so `short` can shrink an axis to fewer points or cut the epochs.
//! `${data}` in a value is the shared data folder (`--data-root`, default `../shared/data`).
//!
//! Columns: `axis` shows a swept key's value (the swept keys are shown first when no axis column is
//! listed); `field` is a figure of the point's `report.json`, by dotted path (`accuracy.pruned`,
//! `structured.params`, `layers.0.macs_pruned`), or one of the derived figures in [`DERIVED`]; `seed`
//! lists the notebook's figures, one per point of the full sweep (`nan` where it has none), matched
//! to our points by their swept values, so the short variant's fewer points still sit beside the right
//! figures. `percent` multiplies by 100, `digits` fixes the decimals, and `drop_from` turns seed
//! figures into drops from the notebook's baseline. A sweep with `table = "sensitivity"` has one row
//! per layer and level of the pruning sensitivity scan instead of one per point.
//!
//! The run: every sweep of the file is planned and validated (keys, values, layer names, columns,
//! the number of seed figures), its data read and its stage inputs computed, before the first point
//! runs; a bad file writes nothing. Sweeps then run in order into `OUT/<name>/` (ordinary sweep
//! folders), each point seeded from the checkpoints of any earlier point of the experiment whose stage
//! inputs match, so the dense model is trained once for all tables. `OUT/experiment.md` (one table
//! per sweep, with the equivalent `deepcomp sweep` command) and `OUT/experiment.json` (the same
//! cells as numbers) are rewritten after every sweep.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::Device;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{DriverError, Result};
use crate::overrides;
use crate::report::Report;
use crate::sweep::{self, Point, SweepOptions, SweepRow};
use crate::{fsutil, pipeline, resume};

/// The default shared data folder, relative to the current directory (the repository root).
pub const DEFAULT_DATA_ROOT: &str = "../shared/data";

/// Figures a `field` column may name besides `report.json` paths, for `table = "points"`:
/// `sparsity` (fraction of the prunable weights that are zero), `macs` / `macs_dense` (multiply-adds
/// per example of the prunable layers after pruning / dense: nonzero weights × output positions),
/// `huffman_bits` (average Huffman code bits per kept weight, over all coded layers), `seconds` (the
/// point's wall time in this run) and `drop_<stage>` (`100 × (accuracy.dense − accuracy.<stage>)`,
/// points of top-1 lost by that stage).
pub const DERIVED: &[&str] = &[
    "sparsity",
    "macs",
    "macs_dense",
    "huffman_bits",
    "seconds",
    "drop_pruned",
    "drop_finetuned",
    "drop_shared",
    "drop_quantized",
    "drop_decoded",
];

/// Figures of one sensitivity-scan row, for `table = "sensitivity"`: the layer's achieved sparsity,
/// validation top-1 with it pruned alone, the drop from the dense validation top-1 (points), the
/// layer's MACs per example, and the MACs of all prunable layers with this one at its level.
pub const SENSITIVITY_FIELDS: &[&str] = &[
    "sens.sparsity",
    "sens.top1",
    "sens.drop",
    "sens.macs",
    "sens.macs_network",
];

/// An experiment file as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExperimentFile {
    /// Heading of `experiment.md`.
    pub title: String,
    /// A paragraph under the heading (Markdown).
    #[serde(default)]
    pub notes: String,
    /// Base recipe: built-in name, or a TOML file (relative paths: from the experiment file's folder).
    pub recipe: String,
    /// Overrides of every point of every sweep (`KEY=VALUE` or `KEY=V1,V2,…`).
    #[serde(default)]
    pub set: Vec<String>,
    /// What `--short` changes.
    #[serde(default)]
    pub short: ShortSection,
    /// The tables.
    #[serde(rename = "sweep")]
    pub sweeps: Vec<SweepSpec>,
}

/// The `[short]` section.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShortSection {
    /// What the short variant gives up, said in `experiment.md`.
    #[serde(default)]
    pub notes: String,
    /// Overrides added after the file's and each sweep's own.
    #[serde(default)]
    pub set: Vec<String>,
}

/// One `[[sweep]]`: one table.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SweepSpec {
    /// Folder name under the output folder (letters, digits, `.`, `_`, `-`).
    pub name: String,
    /// The table's heading: which table of the notebook it reproduces.
    pub title: String,
    /// A paragraph under the heading: what differs from the notebook and why.
    #[serde(default)]
    pub notes: String,
    /// Overrides and axes of this sweep.
    #[serde(default)]
    pub set: Vec<String>,
    /// Pair the axes element by element instead of taking their product.
    #[serde(default)]
    pub zip: bool,
    /// With `--short`: overrides and axes replacing or added to the others.
    #[serde(default)]
    pub short: Vec<String>,
    /// Leave this sweep out of the short variant.
    #[serde(default)]
    pub skip_short: bool,
    /// `points` (one row per point, the default) or `sensitivity` (one row per layer and level of
    /// the pruning sensitivity scan).
    #[serde(default = "default_table")]
    pub table: String,
    /// The table's columns, in order.
    pub columns: Vec<ColumnSpec>,
}

fn default_table() -> String {
    "points".into()
}

/// One column: exactly one of `axis`, `field` and `seed`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ColumnSpec {
    /// A swept key: the point's value.
    #[serde(default)]
    pub axis: Option<String>,
    /// A `report.json` path or a derived figure.
    #[serde(default)]
    pub field: Option<String>,
    /// The notebook's figures, one per point (or scan row) of the full sweep; `nan`: none.
    #[serde(default)]
    pub seed: Option<Vec<toml::Value>>,
    /// Heading (default: the axis or field).
    #[serde(default)]
    pub label: Option<String>,
    /// Multiply by 100.
    #[serde(default)]
    pub percent: bool,
    /// Decimals shown.
    #[serde(default)]
    pub digits: Option<usize>,
    /// `seed` only: show `drop_from − value` (then `percent`) instead of the value.
    #[serde(default)]
    pub drop_from: Option<f64>,
}

/// How to run an experiment.
#[derive(Debug, Clone)]
pub struct ExperimentOptions {
    /// The experiment file.
    pub file: PathBuf,
    /// Run the short variant.
    pub short: bool,
    /// Output folder; `None`: `target/deepcomp/experiments/<file stem>[-short]`.
    pub out: Option<PathBuf>,
    /// What `${data}` stands for.
    pub data_root: PathBuf,
    /// Show progress bars.
    pub progress: bool,
}

/// What a column shows, checked.
#[derive(Debug, Clone, PartialEq)]
pub enum ColumnKind {
    /// A swept key (canonical).
    Axis(String),
    /// A figure of ours.
    Field(String),
    /// The notebook's figures (integers stay integers).
    Seed(Vec<Option<serde_json::Number>>),
    /// The layer of a sensitivity row.
    Layer,
    /// The level of a sensitivity row.
    Level,
}

/// A checked column.
#[derive(Debug, Clone)]
pub struct Column {
    /// Heading.
    pub label: String,
    /// What it shows.
    pub kind: ColumnKind,
    /// Multiply by 100.
    pub percent: bool,
    /// Decimals.
    pub digits: Option<usize>,
    /// Seed figures shown as drops from this baseline.
    pub drop_from: Option<f64>,
}

/// One sweep, planned.
#[derive(Debug, Clone)]
pub struct PlannedSweep {
    /// As written.
    pub spec: SweepSpec,
    /// The effective `--set` list of this variant (`${data}` replaced).
    pub sets: Vec<String>,
    /// Its points, validated.
    pub points: Vec<Point>,
    /// For each point, the point of the full sweep with the same swept values (seed figures).
    pub full_index: Vec<Option<usize>>,
    /// Points of the full sweep.
    pub full_points: usize,
    /// Keys that vary over the full or this variant's points (canonical).
    pub varying: Vec<String>,
    /// The columns, checked (axis columns added when none was listed).
    pub columns: Vec<Column>,
    /// `table = "sensitivity"`: the prunable layers and the scan levels of the full sweep.
    pub full_scan: Option<(Vec<String>, Vec<f64>)>,
}

/// An experiment, planned: every sweep of the chosen variant validated.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The file as read.
    pub file: ExperimentFile,
    /// Its path.
    pub path: PathBuf,
    /// The base recipe as sweeps get it (a built-in name or a path).
    pub recipe: String,
    /// Short variant.
    pub short: bool,
    /// What `${data}` stood for.
    pub data_root: PathBuf,
    /// The sweeps that run in this variant.
    pub sweeps: Vec<PlannedSweep>,
    /// Sweeps left out of this variant (`skip_short`), with their points in the full variant.
    pub skipped: Vec<(SweepSpec, usize)>,
}

/// One row of a table: the point (or point and layer) and its cells.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TableRow {
    /// The point's folder name under `<sweep>/points/`.
    pub point: String,
    /// One cell per column: a number, a text (axis values, layers) or null (no figure).
    pub cells: Vec<Value>,
}

/// A column as `experiment.json` describes it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ColumnInfo {
    /// Heading.
    pub label: String,
    /// `axis`, `field`, `seed`, `layer` or `level`.
    pub kind: String,
    /// The axis key or field (empty for the others).
    pub key: String,
}

/// One sweep's table, as `experiment.json` holds it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TableJson {
    /// The sweep's name (its folder).
    pub name: String,
    /// Heading.
    pub title: String,
    /// `points` or `sensitivity`.
    pub table: String,
    /// Points this variant runs.
    pub points: usize,
    /// Points of the full sweep.
    pub full_points: usize,
    /// `run`, `failed` (some points failed), `pending` (not run yet) or `skipped` (not in this
    /// variant).
    pub status: String,
    /// Wall time of the sweep in this invocation.
    pub seconds: f64,
    /// The equivalent `deepcomp sweep` command.
    pub command: String,
    /// The columns.
    pub columns: Vec<ColumnInfo>,
    /// The rows, in point order.
    pub rows: Vec<TableRow>,
    /// Points that failed: `point: error`.
    pub failed: Vec<String>,
}

/// `experiment.json`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ExperimentJson {
    /// The file's title.
    pub title: String,
    /// The experiment file.
    pub file: String,
    /// `short` or `full`.
    pub mode: String,
    /// The base recipe.
    pub recipe: String,
    /// What `${data}` stood for.
    pub data_root: String,
    /// deepcomp version.
    pub version: String,
    /// Git commit of the build.
    pub commit: String,
    /// Wall time so far.
    pub seconds: f64,
    /// One table per sweep of the file, in order.
    pub sweeps: Vec<TableJson>,
}

/// What an experiment did.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The output folder.
    pub out: PathBuf,
    /// `experiment.md` as written.
    pub markdown: String,
    /// `experiment.json` as written.
    pub json: ExperimentJson,
}

fn bad(file: &Path, reason: impl Into<String>) -> DriverError {
    DriverError::Experiment {
        file: file.to_path_buf(),
        reason: reason.into(),
    }
}

/// Reads and parses an experiment file (unknown fields are errors naming them).
pub fn read(path: &Path) -> Result<ExperimentFile> {
    let text = std::fs::read_to_string(path).map_err(|e| DriverError::io(path, e))?;
    toml::from_str(&text).map_err(|e| bad(path, e.to_string().trim().replace('\n', " ")))
}

/// Replaces `${data}` by the data root; any other `${…}` is an error.
fn substitute(entry: &str, data_root: &Path) -> std::result::Result<String, String> {
    let root = data_root.display().to_string();
    let out = entry.replace("${data}", &root);
    if let Some(i) = out.find("${") {
        let rest = &out[i..];
        let end = rest.find('}').map_or(rest.len(), |j| j + 1);
        return Err(format!(
            "`{}` is not a placeholder this file may use (only ${{data}}, the shared data folder)",
            &rest[..end]
        ));
    }
    Ok(out)
}

/// Merges `--set` lists in order: a key given again (in any spelling) replaces the earlier value
/// list and keeps its place. Each entry is named as `<where>[<i>]` in errors.
fn merge(
    lists: &[(&str, &[String])],
    data_root: &Path,
) -> std::result::Result<Vec<(String, String)>, String> {
    let mut out: Vec<(String, String)> = Vec::new();
    for (place, list) in lists {
        for (i, entry) in list.iter().enumerate() {
            let at = format!("{place}[{i}] `{entry}`");
            let text = substitute(entry, data_root).map_err(|e| format!("{at}: {e}"))?;
            let (key, _) = overrides::split_assignment(&text).map_err(|e| format!("{at}: {e}"))?;
            let canonical = overrides::parse_key(&key)
                .map_err(|e| format!("{at}: {e}"))?
                .join(".");
            match out.iter_mut().find(|(k, _)| *k == canonical) {
                Some(slot) => slot.1 = text,
                None => out.push((canonical, text)),
            }
        }
    }
    Ok(out)
}

/// The base recipe as a sweep gets it: a built-in name as is, a relative path from the file's folder.
fn resolve_recipe(file: &Path, recipe: &str) -> String {
    if crate::recipe::BUILTIN.iter().any(|(n, _)| *n == recipe) {
        return recipe.to_string();
    }
    let p = Path::new(recipe);
    if p.is_relative() {
        if let Some(dir) = file.parent() {
            return dir.join(p).display().to_string();
        }
    }
    recipe.to_string()
}

/// The swept values of each combination, by canonical key, parsed as TOML values.
fn combos_of(
    sets: &[String],
    zip: bool,
) -> Result<Vec<BTreeMap<String, toml::Value>>, DriverError> {
    let axes = sweep::parse_axes(sets)?;
    let combos = sweep::combine(&axes, zip)?;
    combos
        .into_iter()
        .map(|c| {
            c.into_iter()
                .map(|(k, v)| {
                    let key = overrides::parse_key(&k)
                        .map_err(DriverError::msg)?
                        .join(".");
                    Ok((key, overrides::parse_value(&v)))
                })
                .collect()
        })
        .collect()
}

/// Keys whose value differs between combinations.
fn varying_keys(combos: &[BTreeMap<String, toml::Value>]) -> Vec<String> {
    let Some(first) = combos.first() else {
        return Vec::new();
    };
    first
        .iter()
        .filter(|(k, v)| combos.iter().any(|c| c.get(*k) != Some(*v)))
        .map(|(k, _)| k.clone())
        .collect()
}

/// A value of a `seed` list: a number, or `nan` / an empty string for none.
fn seed_value(v: &toml::Value) -> std::result::Result<Option<serde_json::Number>, String> {
    match v {
        toml::Value::Integer(i) => Ok(Some(serde_json::Number::from(*i))),
        toml::Value::Float(f) if f.is_nan() => Ok(None),
        toml::Value::Float(f) => Ok(serde_json::Number::from_f64(*f)),
        toml::Value::String(s) if s.trim().is_empty() => Ok(None),
        other => Err(format!(
            "`{other}` is not a number (write nan where the notebook has no figure)"
        )),
    }
}

/// A report with one element in every list and every optional section present: the paths a `field`
/// column may name are the paths that exist in it.
fn sample_report() -> Value {
    use crate::pipeline::structured::{LatencyRow, StructuredReport};
    use crate::report::{EpochRow, LayerRow, RegularizerRow, SensitivityRow};
    let r = Report {
        layers: vec![LayerRow::default()],
        history: vec![EpochRow::default()],
        sensitivity: vec![SensitivityRow {
            levels: vec![0.0],
            macs: vec![0],
            points: vec![(0.0, 0.0)],
            ..Default::default()
        }],
        sensitivity_baseline: Some(0.0),
        sensitivity_targets: Some(Default::default()),
        memory: vec![Default::default()],
        regularizers: vec![RegularizerRow {
            k: Some(0),
            fraction: Some(0.0),
            ..Default::default()
        }],
        structured: Some(StructuredReport {
            latency: vec![LatencyRow::default()],
            ..Default::default()
        }),
        ..Default::default()
    };
    serde_json::to_value(&r).unwrap_or(Value::Null)
}

/// Fields of the report that are maps (any key below them is accepted).
const MAP_PATHS: &[&str] = &[
    "quant_methods",
    "quant_steps",
    "sensitivity_targets.targets",
];

/// Whether `path` names something in a report (numeric segments index lists).
fn report_path_exists(sample: &Value, path: &str) -> bool {
    if MAP_PATHS
        .iter()
        .any(|m| path.len() > m.len() && path.starts_with(m) && path[m.len()..].starts_with('.'))
    {
        return true;
    }
    let mut cur = sample;
    for seg in path.split('.') {
        cur = match cur {
            Value::Object(m) => match m.get(seg) {
                Some(v) => v,
                None => return false,
            },
            Value::Array(a) => match seg.parse::<usize>() {
                Ok(_) => match a.first() {
                    Some(v) => v,
                    None => return false,
                },
                Err(_) => return false,
            },
            _ => return false,
        };
    }
    true
}

/// Looks `path` up in a report (`None` when absent, e.g. a list index past the end).
fn lookup<'a>(report: &'a Value, path: &str) -> Option<&'a Value> {
    let mut cur = report;
    if let Some(m) = MAP_PATHS
        .iter()
        .find(|m| path.len() > m.len() && path.starts_with(*m) && path[m.len()..].starts_with('.'))
    {
        for seg in m.split('.') {
            cur = cur.get(seg)?;
        }
        return cur.get(&path[m.len() + 1..]);
    }
    for seg in path.split('.') {
        cur = match cur {
            Value::Object(m) => m.get(seg)?,
            Value::Array(a) => a.get(seg.parse::<usize>().ok()?)?,
            _ => return None,
        };
    }
    Some(cur)
}

impl PlannedSweep {
    /// The equivalent `deepcomp sweep` command line.
    pub fn command(&self, recipe: &str, out: &Path) -> String {
        let mut s = format!("deepcomp sweep --recipe {}", shell_quote(recipe));
        for e in &self.sets {
            let _ = write!(s, " --set {}", shell_quote(e));
        }
        if self.spec.zip {
            s.push_str(" --zip");
        }
        let _ = write!(
            s,
            " --out {}",
            shell_quote(&out.join(&self.spec.name).display().to_string())
        );
        s
    }
}

fn shell_quote(s: &str) -> String {
    if s.chars()
        .all(|c| c.is_ascii_alphanumeric() || "-_./=,:+".contains(c))
    {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// Checks the columns of a sweep; adds the axis columns when none is listed (and the layer / level
/// columns of a sensitivity table).
fn check_columns(
    spec: &SweepSpec,
    varying: &[String],
    keys: &[String],
    full_rows: usize,
) -> std::result::Result<Vec<Column>, String> {
    let sample = sample_report();
    let sens = spec.table == "sensitivity";
    let mut out = Vec::new();
    for (i, c) in spec.columns.iter().enumerate() {
        let at = format!("columns[{i}]");
        let given = [c.axis.is_some(), c.field.is_some(), c.seed.is_some()]
            .iter()
            .filter(|x| **x)
            .count();
        if given != 1 {
            return Err(format!(
                "{at}: give exactly one of `axis`, `field` and `seed` ({given} given)"
            ));
        }
        if c.drop_from.is_some() && c.seed.is_none() {
            return Err(format!(
                "{at}: `drop_from` turns seed figures into drops; for our figures use a \
                 `drop_<stage>` field"
            ));
        }
        let kind = if let Some(a) = &c.axis {
            let key = overrides::parse_key(a)
                .map_err(|e| format!("{at}: {e}"))?
                .join(".");
            if !keys.contains(&key) {
                return Err(format!(
                    "{at}: axis `{a}` is not set by this sweep (its keys: {})",
                    keys.join(", ")
                ));
            }
            ColumnKind::Axis(key)
        } else if let Some(f) = &c.field {
            let ok = DERIVED.contains(&f.as_str()) && !sens
                || sens && SENSITIVITY_FIELDS.contains(&f.as_str())
                || report_path_exists(&sample, f);
            if !ok {
                let derived = if sens {
                    SENSITIVITY_FIELDS.join(", ")
                } else {
                    DERIVED.join(", ")
                };
                return Err(format!(
                    "{at}: field `{f}` is neither a report.json path nor one of {derived}"
                ));
            }
            ColumnKind::Field(f.clone())
        } else {
            let values = c.seed.as_deref().unwrap_or_default();
            if values.len() != full_rows {
                return Err(format!(
                    "{at}: {} seed figure(s), but the full sweep has {full_rows} {}",
                    values.len(),
                    if sens {
                        "scan rows (layers × levels)"
                    } else {
                        "point(s)"
                    }
                ));
            }
            let parsed = values
                .iter()
                .enumerate()
                .map(|(j, v)| seed_value(v).map_err(|e| format!("{at}: seed[{j}]: {e}")))
                .collect::<std::result::Result<Vec<_>, _>>()?;
            ColumnKind::Seed(parsed)
        };
        let label = c.label.clone().unwrap_or_else(|| match &kind {
            ColumnKind::Axis(k) | ColumnKind::Field(k) => k.clone(),
            _ => "seed".into(),
        });
        out.push(Column {
            label,
            kind,
            percent: c.percent,
            digits: c.digits,
            drop_from: c.drop_from,
        });
    }
    let mut lead = Vec::new();
    if !out.iter().any(|c| matches!(c.kind, ColumnKind::Axis(_))) {
        for k in varying {
            lead.push(Column {
                label: format!("`{k}`"),
                kind: ColumnKind::Axis(k.clone()),
                percent: false,
                digits: None,
                drop_from: None,
            });
        }
    }
    if sens {
        for (label, kind) in [("layer", ColumnKind::Layer), ("level", ColumnKind::Level)] {
            lead.push(Column {
                label: label.into(),
                kind,
                percent: false,
                digits: None,
                drop_from: None,
            });
        }
    }
    lead.extend(out);
    Ok(lead)
}

/// Plans an experiment: reads the file, builds each sweep's point list for the chosen variant and
/// validates every point ([`sweep::plan`]) and every column. Nothing is run, loaded or written.
pub fn plan(opts: &ExperimentOptions) -> Result<Plan> {
    let path = &opts.file;
    let file = read(path)?;
    let recipe = resolve_recipe(path, &file.recipe);
    if file.sweeps.is_empty() {
        return Err(bad(path, "no [[sweep]]: nothing to run"));
    }
    let mut names: Vec<&str> = Vec::new();
    for (i, s) in file.sweeps.iter().enumerate() {
        let at = format!("sweep[{i}]");
        if s.name.is_empty()
            || s.name.starts_with('.')
            || !s
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
        {
            return Err(bad(
                path,
                format!(
                    "{at}: name `{}` must be letters, digits, `.`, `_`, `-` (it is a folder name), \
                     not starting with `.`",
                    s.name
                ),
            ));
        }
        if names.contains(&s.name.as_str()) {
            return Err(bad(path, format!("{at}: name `{}` is used twice", s.name)));
        }
        names.push(&s.name);
        if s.table != "points" && s.table != "sensitivity" {
            return Err(bad(
                path,
                format!(
                    "{at} (`{}`): table `{}` is not one of points, sensitivity",
                    s.name, s.table
                ),
            ));
        }
    }
    let mut sweeps = Vec::new();
    let mut skipped = Vec::new();
    for (i, spec) in file.sweeps.iter().enumerate() {
        let at = format!("sweep[{i}] (`{}`)", spec.name);
        let full_lists: Vec<(&str, &[String])> = vec![("set", &file.set), ("sweep.set", &spec.set)];
        if opts.short && spec.skip_short {
            let full: Vec<String> = merge(&full_lists, &opts.data_root)
                .map_err(|e| bad(path, format!("{at}: {e}")))?
                .into_iter()
                .map(|(_, t)| t)
                .collect();
            let n = combos_of(&full, spec.zip)
                .map_err(|e| bad(path, format!("{at}: {e}")))?
                .len();
            skipped.push((spec.clone(), n));
            continue;
        }
        let mut lists = full_lists.clone();
        if opts.short {
            lists.push(("short.set", &file.short.set));
            lists.push(("sweep.short", &spec.short));
        }
        let full: Vec<String> = merge(&full_lists, &opts.data_root)
            .map_err(|e| bad(path, format!("{at}: {e}")))?
            .into_iter()
            .map(|(_, t)| t)
            .collect();
        let merged = merge(&lists, &opts.data_root).map_err(|e| bad(path, format!("{at}: {e}")))?;
        let keys: Vec<String> = merged.iter().map(|(k, _)| k.clone()).collect();
        let sets: Vec<String> = merged.into_iter().map(|(_, t)| t).collect();
        let points =
            sweep::plan(&recipe, &sets, spec.zip).map_err(|e| bad(path, format!("{at}: {e}")))?;
        let full_combos =
            combos_of(&full, spec.zip).map_err(|e| bad(path, format!("{at}: {e}")))?;
        let run_combos = combos_of(&sets, spec.zip).map_err(|e| bad(path, format!("{at}: {e}")))?;
        let mut varying = varying_keys(&full_combos);
        for k in varying_keys(&run_combos) {
            if !varying.contains(&k) {
                varying.push(k);
            }
        }
        // Keep the order of the set list.
        varying.sort_by_key(|k| keys.iter().position(|x| x == k));
        let full_index: Vec<Option<usize>> = run_combos
            .iter()
            .map(|c| {
                full_combos.iter().position(|f| {
                    varying
                        .iter()
                        .filter(|k| f.contains_key(*k))
                        .all(|k| f.get(k) == c.get(k))
                })
            })
            .collect();
        let mut full_scan = None;
        let full_rows = if spec.table == "sensitivity" {
            for p in &points {
                if !crate::sensitivity::scan_enabled(&p.recipe.recipe.prune) {
                    return Err(bad(
                        path,
                        format!(
                            "{at}: table `sensitivity` shows the pruning sensitivity scan, but point \
                             {} does not run it (set prune.sensitivity=true)",
                            p.slug
                        ),
                    ));
                }
            }
            let has_seed = spec.columns.iter().any(|c| c.seed.is_some());
            if has_seed && full_combos.len() != 1 {
                return Err(bad(
                    path,
                    format!(
                        "{at}: seed figures of a sensitivity table need a full sweep of exactly one \
                         point ({} given)",
                        full_combos.len()
                    ),
                ));
            }
            if has_seed {
                let fp = sweep::plan(&recipe, &full, spec.zip)
                    .map_err(|e| bad(path, format!("{at}: the full sweep: {e}")))?;
                let r = &fp[0].recipe.recipe;
                let model = pipeline::build_model(r, &Device::Cpu)?;
                let layers: Vec<String> = model.prunable().into_iter().map(|p| p.name).collect();
                let levels = crate::sensitivity::levels(&r.prune);
                let n = layers.len() * levels.len();
                full_scan = Some((layers, levels));
                n
            } else {
                0
            }
        } else {
            full_combos.len()
        };
        let columns = check_columns(spec, &varying, &keys, full_rows)
            .map_err(|e| bad(path, format!("{at}: {e}")))?;
        sweeps.push(PlannedSweep {
            spec: spec.clone(),
            sets,
            points,
            full_index,
            full_points: full_combos.len(),
            varying,
            columns,
            full_scan,
        });
    }
    Ok(Plan {
        file,
        path: path.clone(),
        recipe,
        short: opts.short,
        data_root: opts.data_root.clone(),
        sweeps,
        skipped,
    })
}

/// The default output folder of an experiment file.
pub fn default_out(file: &Path, short: bool) -> PathBuf {
    let stem = file
        .file_stem()
        .map_or_else(|| "experiment".into(), |s| s.to_string_lossy().into_owned());
    PathBuf::from("target/deepcomp/experiments").join(if short {
        format!("{stem}-short")
    } else {
        stem
    })
}

/// A number of ours from one point's report (`None`: not there, e.g. no structured section).
fn derived(field: &str, report: &Value, row: &SweepRow) -> Option<Value> {
    let num = |v: f64| serde_json::Number::from_f64(v).map(Value::Number);
    let acc = |stage: &str| report.get("accuracy")?.get(stage)?.as_f64();
    let layers = || report.get("layers").and_then(Value::as_array);
    match field {
        "sparsity" => num(row.sparsity),
        "seconds" => num(row.seconds),
        "macs" | "macs_dense" => {
            let key = if field == "macs" {
                "macs_pruned"
            } else {
                "macs_dense"
            };
            let total: u64 = layers()?.iter().filter_map(|l| l.get(key)?.as_u64()).sum();
            Some(Value::from(total))
        }
        "huffman_bits" => {
            let (mut bits, mut n) = (0.0, 0.0);
            for l in layers()? {
                let k = l.get("nonzero")?.as_f64()?;
                bits += k * l.get("huffman_avg_bits")?.as_f64()?;
                n += k;
            }
            if n > 0.0 {
                num(bits / n)
            } else {
                None
            }
        }
        f => {
            let stage = f.strip_prefix("drop_")?;
            num(100.0 * (acc("dense")? - acc(stage)?))
        }
    }
}

/// One row of a sensitivity table: (layer, level, figures by `sens.*` name).
type ScanRow = (String, f64, BTreeMap<&'static str, Value>);

/// The rows of a point's sensitivity scan.
fn scan_rows(report: &Value) -> Vec<ScanRow> {
    let Ok(r) = serde_json::from_value::<Report>(report.clone()) else {
        return Vec::new();
    };
    let network: u64 = r.sensitivity.iter().map(|s| s.macs_dense).sum();
    let base = r.sensitivity_baseline;
    let mut out = Vec::new();
    for s in &r.sensitivity {
        for (j, &(sparsity, top1)) in s.points.iter().enumerate() {
            let level = s.levels.get(j).copied().unwrap_or(sparsity);
            let mut m: BTreeMap<&'static str, Value> = BTreeMap::new();
            let num = |v: f64| serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number);
            m.insert("sens.sparsity", num(sparsity));
            m.insert("sens.top1", num(top1));
            if let Some(b) = base {
                m.insert("sens.drop", num(100.0 * (b - top1)));
            }
            if let Some(&macs) = s.macs.get(j) {
                m.insert("sens.macs", Value::from(macs));
                m.insert(
                    "sens.macs_network",
                    Value::from(network - s.macs_dense + macs),
                );
            }
            out.push((s.layer.clone(), level, m));
        }
    }
    out
}

/// Applies a column's `percent`.
fn scaled(v: Value, percent: bool) -> Value {
    if !percent {
        return v;
    }
    match v.as_f64() {
        Some(x) => serde_json::Number::from_f64(100.0 * x).map_or(Value::Null, Value::Number),
        None => v,
    }
}

/// The sensitivity-scan part of a row: its layer (shown name), level, figures and the index of the
/// same layer and level in the full sweep's scan.
#[derive(Clone, Copy)]
struct ScanCell<'a> {
    layer: &'a str,
    level: f64,
    figures: &'a BTreeMap<&'static str, Value>,
    full: Option<usize>,
}

/// The cells of one row.
fn cells(
    sw: &PlannedSweep,
    point: &Point,
    index: usize,
    report: &Value,
    row: &SweepRow,
    scan: Option<ScanCell<'_>>,
) -> Vec<Value> {
    sw.columns
        .iter()
        .map(|c| match &c.kind {
            ColumnKind::Axis(k) => point
                .sets
                .iter()
                .find(|a| a.canonical_key() == *k)
                .map_or(Value::Null, |a| Value::String(a.value.clone())),
            ColumnKind::Layer => scan.map_or(Value::Null, |s| Value::String(s.layer.to_string())),
            ColumnKind::Level => scan
                .and_then(|s| serde_json::Number::from_f64(s.level))
                .map_or(Value::Null, Value::Number),
            ColumnKind::Seed(values) => {
                let i = match scan {
                    Some(s) => s.full,
                    None => sw.full_index.get(index).copied().flatten(),
                };
                let v = i.and_then(|i| values.get(i).cloned().flatten());
                let v = match (v, c.drop_from) {
                    (Some(x), Some(b)) => x
                        .as_f64()
                        .and_then(|x| serde_json::Number::from_f64(b - x))
                        .map_or(Value::Null, Value::Number),
                    (Some(x), None) => Value::Number(x),
                    (None, _) => Value::Null,
                };
                scaled(v, c.percent)
            }
            ColumnKind::Field(f) => {
                let v = if let Some(s) = scan.filter(|_| f.starts_with("sens.")) {
                    s.figures.get(f.as_str()).cloned()
                } else if DERIVED.contains(&f.as_str()) {
                    derived(f, report, row)
                } else {
                    lookup(report, f).cloned()
                };
                scaled(v.unwrap_or(Value::Null), c.percent)
            }
        })
        .collect()
}

/// The table of one finished sweep.
fn table_rows(sw: &PlannedSweep, out: &Path, rows: &[SweepRow]) -> Vec<TableRow> {
    let mut table = Vec::new();
    for row in rows {
        let Some((index, point)) = sw
            .points
            .iter()
            .enumerate()
            .find(|(_, p)| p.slug == row.point)
        else {
            continue;
        };
        let path = out
            .join(&sw.spec.name)
            .join(&row.folder)
            .join("report.json");
        let report: Value = std::fs::read_to_string(&path)
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or(Value::Null);
        if sw.spec.table == "sensitivity" {
            for (layer, level, figures) in scan_rows(&report) {
                let full = sw.full_scan.as_ref().and_then(|(layers, levels)| {
                    let li = layers.iter().position(|l| *l == layer)?;
                    let vi = levels.iter().position(|l| *l == level)?;
                    Some(li * levels.len() + vi)
                });
                let shown = layer.trim_end_matches(".weight").to_string();
                table.push(TableRow {
                    point: row.point.clone(),
                    cells: cells(
                        sw,
                        point,
                        index,
                        &report,
                        row,
                        Some(ScanCell {
                            layer: &shown,
                            level,
                            figures: &figures,
                            full,
                        }),
                    ),
                });
            }
        } else {
            table.push(TableRow {
                point: row.point.clone(),
                cells: cells(sw, point, index, &report, row, None),
            });
        }
    }
    table
}

/// Groups the digits of an integer by thousands (`1,246,265`).
fn thousands(v: i128) -> String {
    let digits = v.unsigned_abs().to_string();
    let mut s = String::new();
    for (i, ch) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            s.push(',');
        }
        s.push(ch);
    }
    if v < 0 {
        format!("-{s}")
    } else {
        s
    }
}

/// A cell as Markdown.
fn fmt_cell(v: &Value, c: &Column) -> String {
    match v {
        Value::Null => "–".into(),
        Value::String(s) => s.replace('|', "\\|"),
        Value::Number(n) => {
            if let Some(d) = c.digits {
                return format!("{:.d$}", n.as_f64().unwrap_or(f64::NAN));
            }
            if let Some(i) = n.as_i64() {
                return thousands(i as i128);
            }
            if let Some(u) = n.as_u64() {
                return thousands(u as i128);
            }
            let x = n.as_f64().unwrap_or(f64::NAN);
            match &c.kind {
                // As the notebook wrote them (shortest form), unless computed.
                ColumnKind::Seed(_) if c.drop_from.is_none() && !c.percent => format!("{x}"),
                ColumnKind::Level => format!("{x}"),
                _ if c.percent || c.drop_from.is_some() => format!("{x:.2}"),
                ColumnKind::Field(f) if f.starts_with("drop_") || f == "sens.drop" => {
                    format!("{x:.2}")
                }
                ColumnKind::Field(f) if f == "seconds" => format!("{x:.1}"),
                _ => format!("{x:.4}"),
            }
        }
        other => other.to_string(),
    }
}

fn column_info(c: &Column) -> ColumnInfo {
    let (kind, key) = match &c.kind {
        ColumnKind::Axis(k) => ("axis", k.clone()),
        ColumnKind::Field(f) => ("field", f.clone()),
        ColumnKind::Seed(_) => ("seed", String::new()),
        ColumnKind::Layer => ("layer", String::new()),
        ColumnKind::Level => ("level", String::new()),
    };
    ColumnInfo {
        label: c.label.clone(),
        kind: kind.into(),
        key,
    }
}

/// Builds `experiment.md` from the plan and the tables so far.
fn markdown(plan: &Plan, out: &Path, tables: &[TableJson], seconds: f64) -> String {
    let f = &plan.file;
    let mut s = format!("# {}\n\n", f.title);
    if !f.notes.trim().is_empty() {
        let _ = writeln!(s, "{}\n", f.notes.trim());
    }
    let (version, commit) = crate::report::build_info();
    let _ = writeln!(
        s,
        "Variant: **{}**{}. Base recipe `{}`, data from `{}`, file `{}`; deepcomp {version} \
         (commit {commit}); {:.0} s so far.\n",
        if plan.short { "short" } else { "full" },
        if plan.short && !f.short.notes.trim().is_empty() {
            format!(" ({})", f.short.notes.trim())
        } else {
            String::new()
        },
        plan.recipe,
        plan.data_root.display(),
        plan.path.display(),
        seconds
    );
    for (i, t) in tables.iter().enumerate() {
        let _ = writeln!(s, "## {}. {} (`{}`)\n", i + 1, t.title, t.name);
        let spec = plan
            .sweeps
            .iter()
            .map(|p| &p.spec)
            .chain(plan.skipped.iter().map(|(sp, _)| sp))
            .find(|sp| sp.name == t.name);
        if let Some(notes) = spec.map(|sp| sp.notes.trim()).filter(|n| !n.is_empty()) {
            let _ = writeln!(s, "{notes}\n");
        }
        if t.status == "skipped" {
            let _ = writeln!(
                s,
                "Not run in the short variant ({} point(s) in the full one).\n",
                t.full_points
            );
            continue;
        }
        let _ = writeln!(s, "```sh\n{}\n```\n", t.command);
        let planned = plan.sweeps.iter().find(|p| p.spec.name == t.name);
        let columns: Vec<Column> = planned.map(|p| p.columns.clone()).unwrap_or_default();
        let head: Vec<String> = columns
            .iter()
            .map(|c| c.label.replace('|', "\\|"))
            .collect();
        let _ = writeln!(s, "| {} |", head.join(" | "));
        let align: Vec<&str> = columns
            .iter()
            .map(|c| match c.kind {
                ColumnKind::Layer => "---",
                _ => "---:",
            })
            .collect();
        let _ = writeln!(s, "|{}|", align.join("|"));
        for r in &t.rows {
            let row: Vec<String> = r
                .cells
                .iter()
                .zip(&columns)
                .map(|(v, c)| fmt_cell(v, c))
                .collect();
            let _ = writeln!(s, "| {} |", row.join(" | "));
        }
        let status = match t.status.as_str() {
            "pending" => "not run yet".to_string(),
            _ => format!("{:.0} s", t.seconds),
        };
        let _ = writeln!(
            s,
            "\n{} point(s){}; folder `{}`; {status}.\n",
            t.points,
            if t.points != t.full_points {
                format!(" of the full sweep's {}", t.full_points)
            } else {
                String::new()
            },
            out.join(&t.name).display()
        );
        for fl in &t.failed {
            let _ = writeln!(s, "- FAILED: {fl}");
        }
        if !t.failed.is_empty() {
            s.push('\n');
        }
    }
    s
}

fn table_json(plan: &Plan, sw: &SweepSpec, out: &Path) -> TableJson {
    let planned = plan.sweeps.iter().find(|p| p.spec.name == sw.name);
    let skipped_full = plan
        .skipped
        .iter()
        .find(|(sp, _)| sp.name == sw.name)
        .map_or(0, |(_, n)| *n);
    TableJson {
        name: sw.name.clone(),
        title: sw.title.clone(),
        table: sw.table.clone(),
        points: planned.map_or(0, |p| p.points.len()),
        full_points: planned.map_or(skipped_full, |p| p.full_points),
        status: if planned.is_some() {
            "pending".into()
        } else {
            "skipped".into()
        },
        seconds: 0.0,
        command: planned.map_or_else(String::new, |p| p.command(&plan.recipe, out)),
        columns: planned.map_or_else(Vec::new, |p| p.columns.iter().map(column_info).collect()),
        rows: Vec::new(),
        failed: Vec::new(),
    }
}

fn write_outputs(plan: &Plan, out: &Path, tables: &[TableJson], seconds: f64) -> Result<Outcome> {
    let (version, commit) = crate::report::build_info();
    let json = ExperimentJson {
        title: plan.file.title.clone(),
        file: plan.path.display().to_string(),
        mode: if plan.short { "short" } else { "full" }.into(),
        recipe: plan.recipe.clone(),
        data_root: plan.data_root.display().to_string(),
        version: version.into(),
        commit: commit.into(),
        seconds,
        sweeps: tables.to_vec(),
    };
    let md = markdown(plan, out, tables, seconds);
    fsutil::write_json(&out.join("experiment.json"), &json)?;
    fsutil::write_atomic(&out.join("experiment.md"), md.as_bytes())?;
    Ok(Outcome {
        out: out.to_path_buf(),
        markdown: md,
        json,
    })
}

/// Runs an experiment on `device`: plans and prepares every sweep (nothing is written when any
/// point, column or data set is wrong), then runs the sweeps in order into `OUT/<name>/`, rewriting
/// `experiment.md` / `experiment.json` after each. When points failed, the error names them after
/// both files are written.
pub fn run(opts: &ExperimentOptions, device: &Device) -> Result<Outcome> {
    let t0 = Instant::now();
    let plan = plan(opts)?;
    let _cache = pipeline::DataCache::enable();
    let out = opts
        .out
        .clone()
        .unwrap_or_else(|| default_out(&opts.file, opts.short));
    let sweep_opts = |sw: &PlannedSweep| SweepOptions {
        recipe: plan.recipe.clone(),
        sets: sw.sets.clone(),
        zip: sw.spec.zip,
        out: Some(out.join(&sw.spec.name)),
        data_path: None,
        progress: opts.progress,
        donors: plan
            .sweeps
            .iter()
            .filter(|o| o.spec.name != sw.spec.name)
            .map(|o| out.join(&o.spec.name).join("points"))
            .collect(),
    };
    let mut described: HashMap<String, Value> = HashMap::new();
    let mut prepared = Vec::new();
    for sw in &plan.sweeps {
        prepared.push(
            sweep::prepare(&sweep_opts(sw), &mut described)
                .map_err(|e| bad(&plan.path, format!("sweep `{}`: {e}", sw.spec.name)))?,
        );
    }
    let _lock = resume::OutputLock::acquire(&out)?;
    let mut tables: Vec<TableJson> = plan
        .file
        .sweeps
        .iter()
        .map(|sw| table_json(&plan, sw, &out))
        .collect();
    let mut outcome = write_outputs(&plan, &out, &tables, t0.elapsed().as_secs_f64())?;
    let n = plan.sweeps.len();
    for (k, (sw, prep)) in plan.sweeps.iter().zip(&prepared).enumerate() {
        eprintln!(
            "experiment: sweep {}/{n} `{}`: {} point(s)",
            k + 1,
            sw.spec.name,
            sw.points.len()
        );
        let t = Instant::now();
        let done = sweep::execute(prep, &sweep_opts(sw), device)?;
        let Some(table) = tables.iter_mut().find(|t| t.name == sw.spec.name) else {
            continue;
        };
        table.rows = table_rows(sw, &out, &done.rows);
        table.failed = done
            .failed
            .iter()
            .map(|(p, e)| format!("{p}: {e}"))
            .collect();
        table.status = if done.failed.is_empty() {
            "run".into()
        } else {
            "failed".into()
        };
        table.seconds = t.elapsed().as_secs_f64();
        outcome = write_outputs(&plan, &out, &tables, t0.elapsed().as_secs_f64())?;
    }
    let failed: Vec<String> = tables
        .iter()
        .flat_map(|t| t.failed.iter().map(move |f| format!("{}/{f}", t.name)))
        .collect();
    if !failed.is_empty() {
        return Err(bad(
            &plan.path,
            format!(
                "{} point(s) failed (the tables in {} have the others): {}",
                failed.len(),
                out.join("experiment.md").display(),
                failed.join("; ")
            ),
        ));
    }
    Ok(outcome)
}

/// `--check`: one line per sweep (its points in this variant and in the full one, and the
/// equivalent `deepcomp sweep` command) after planning and validating everything. Nothing is run.
pub fn describe(plan: &Plan, out: &Path) -> String {
    let mut s = format!(
        "{}: {} sweep(s), {} point(s) ({} variant)\n",
        plan.path.display(),
        plan.sweeps.len(),
        plan.sweeps.iter().map(|p| p.points.len()).sum::<usize>(),
        if plan.short { "short" } else { "full" }
    );
    for p in &plan.sweeps {
        let _ = writeln!(
            s,
            "  {}: {} point(s) (full: {}); {}",
            p.spec.name,
            p.points.len(),
            p.full_points,
            p.command(&plan.recipe, out)
        );
    }
    for (sp, n) in &plan.skipped {
        let _ = writeln!(
            s,
            "  {}: not in the short variant ({n} point(s) in the full one)",
            sp.name
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn later_sets_replace_earlier_ones_in_place() {
        let a = strings(&["train.epochs=3", "seed=1,2", "data.path=${data}/mnist"]);
        let b = strings(&["quant.fc_bits=4,5", "train.epochs=1"]);
        let m = merge(&[("set", &a), ("short", &b)], Path::new("/d")).unwrap();
        let texts: Vec<&str> = m.iter().map(|(_, t)| t.as_str()).collect();
        assert_eq!(
            texts,
            [
                "train.epochs=1",
                "seed=1,2",
                "data.path=/d/mnist",
                "quant.fc_bits=4,5"
            ]
        );
        // Spellings of one key are one key.
        let q = strings(&["quant.bits.\"fc1.weight\"=3"]);
        let r = strings(&["quant.bits.fc1.weight=4"]);
        let m = merge(&[("a", &q), ("b", &r)], Path::new("/d")).unwrap();
        assert_eq!(m.len(), 1);
        assert_eq!(m[0].1, "quant.bits.fc1.weight=4");
        let e = merge(
            &[("set", &strings(&["data.path=${home}/x"]))],
            Path::new("/d"),
        )
        .unwrap_err();
        assert!(e.contains("set[0]") && e.contains("${home}"), "{e}");
        let e = merge(&[("set", &strings(&["train.epochs"]))], Path::new("/d")).unwrap_err();
        assert!(e.contains("set[0]") && e.contains("KEY=VALUE"), "{e}");
    }

    #[test]
    fn report_paths_are_checked_against_every_section() {
        let s = sample_report();
        for ok in [
            "accuracy.pruned",
            "ratio.formula",
            "layers.0.macs_pruned",
            "layers.3.huffman_avg_bits",
            "structured.params",
            "structured.latency.1.structured_ms",
            "decoded_top5",
            "sensitivity_baseline",
            "quant_methods.fc1.weight",
            "regularizers.0.zero_fraction",
        ] {
            assert!(report_path_exists(&s, ok), "{ok}");
        }
        for bad in [
            "accuracy.prunned",
            "layers.x.bits",
            "structured.latency.0.nope",
            "ratio.formula.x",
        ] {
            assert!(!report_path_exists(&s, bad), "{bad}");
        }
        let r = serde_json::json!({
            "layers": [{"bits": 4}, {"bits": 5}],
            "quant_methods": {"fc1.weight": "uniform"}
        });
        assert_eq!(lookup(&r, "layers.1.bits"), Some(&Value::from(5)));
        assert_eq!(lookup(&r, "layers.2.bits"), None);
        assert_eq!(
            lookup(&r, "quant_methods.fc1.weight"),
            Some(&Value::from("uniform"))
        );
    }

    #[test]
    fn cells_are_formatted_for_people() {
        let col = |kind: ColumnKind, percent: bool| Column {
            label: String::new(),
            kind,
            percent,
            digits: None,
            drop_from: None,
        };
        let field = col(ColumnKind::Field("accuracy.pruned".into()), false);
        assert_eq!(fmt_cell(&serde_json::json!(0.91234), &field), "0.9123");
        assert_eq!(fmt_cell(&serde_json::json!(1246265), &field), "1,246,265");
        assert_eq!(fmt_cell(&Value::Null, &field), "–");
        let pct = col(ColumnKind::Field("accuracy.pruned".into()), true);
        assert_eq!(fmt_cell(&serde_json::json!(91.234), &pct), "91.23");
        let seed = col(ColumnKind::Seed(vec![]), false);
        assert_eq!(fmt_cell(&serde_json::json!(0.2053), &seed), "0.2053");
        assert_eq!(fmt_cell(&serde_json::json!(24.4), &seed), "24.4");
        assert_eq!(thousands(-1234), "-1,234");
        assert_eq!(thousands(999), "999");
        assert_eq!(
            shell_quote("prune.rounds=[{target=0.5,epochs=1}]"),
            "'prune.rounds=[{target=0.5,epochs=1}]'"
        );
        assert_eq!(shell_quote("quant.fc_bits=4,5"), "quant.fc_bits=4,5");
    }
}
