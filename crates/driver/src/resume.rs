//! Safe resumption of a pipeline in an output folder.
//!
//! A run writes one checkpoint per finished stage. A later run into the same folder may reuse a
//! checkpoint only if everything that produced it is unchanged, so each checkpoint carries, in its
//! safetensors metadata:
//!
//! * `deepcomp.stage_inputs`: the recipe fields (and data, code and format versions) its stage and every
//!   stage before it depend on, as canonical JSON ([`StageInputs`]);
//! * `deepcomp.report`: the report as it stood when the checkpoint was written, so the history and
//!   figures of a resumed run come from the checkpoints it keeps, never from a `progress.json` that a
//!   kill may have left one step behind.
//!
//! A checkpoint whose inputs differ from the recipe's is deleted together with every later one, and the
//! run redoes the pipeline from that stage, naming the fields that changed. The folder is locked for
//! the whole run ([`OutputLock`]), and temp files that a killed run left behind are removed first.

use std::fs::File;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use crate::error::{DriverError, Result};
use crate::recipe::{LoadedRecipe, Recipe};
use crate::report::Report;

/// Metadata key of the stage inputs.
pub const INPUTS_KEY: &str = "deepcomp.stage_inputs";
/// Metadata key of the report snapshot.
pub const REPORT_KEY: &str = "deepcomp.report";
/// Name of the lock file in an output folder.
pub const LOCK_FILE: &str = ".deepcomp.lock";

/// What each checkpoint's stage depends on, as JSON objects (field path → value).
#[derive(Debug, Clone, Default)]
pub struct StageInputs {
    /// The dense model (training or loading).
    pub dense: Value,
    /// Pruning round `i` of a `rounds` schedule (the rounds up to and including `i`).
    pub rounds: Vec<Value>,
    /// The pruned and finetuned model.
    pub pruned: Value,
    /// The quantized model (weight sharing and centroid training).
    pub quantized: Value,
}

fn to_value<T: serde::Serialize>(v: &T) -> Value {
    serde_json::to_value(v).unwrap_or(Value::Null)
}

impl StageInputs {
    /// The inputs of every stage of `recipe`. `data` describes the data actually loaded (source and
    /// split sizes); a `train.checkpoint` file is identified by its SHA-256.
    pub fn new(loaded: &LoadedRecipe, data: Value) -> Result<Self> {
        let r: &Recipe = &loaded.recipe;
        let checkpoint_sha = match &r.train.checkpoint {
            Some(p) => Value::String(crate::fsutil::sha256_file(p)?),
            None => Value::Null,
        };
        let dense = json!({
            "deepcomp": env!("CARGO_PKG_VERSION"),
            "checkpoint_format": "1",
            "model": r.model,
            "dataset": r.dataset,
            "seed": r.seed,
            "arch": to_value(&r.arch),
            "data": to_value(&r.data),
            "loaded_data": data,
            "train": to_value(&r.train),
            "train_checkpoint_sha256": checkpoint_sha,
        });
        let mut prune = to_value(&r.prune);
        if let Value::Object(m) = &mut prune {
            // Reported only; it changes no weight.
            m.remove("sensitivity");
            if r.prune.from_sensitivity.is_none() {
                m.remove("sensitivity_levels");
            }
        }
        let with = |base: &Value, key: &str, v: Value| -> Value {
            let mut out = base.clone();
            if let Value::Object(m) = &mut out {
                m.insert(key.to_string(), v);
            }
            out
        };
        let rounds = (0..r.prune.rounds.len())
            .map(|i| {
                let mut p = prune.clone();
                if let Value::Object(m) = &mut p {
                    m.insert("rounds".into(), to_value(&r.prune.rounds[..=i].to_vec()));
                    let s: Vec<f64> = r.prune.std_s.iter().take(i + 1).copied().collect();
                    m.insert("std_s".into(), to_value(&s));
                }
                with(&dense, "prune", p)
            })
            .collect();
        let pruned = with(&dense, "prune", prune);
        let quantized = with(&pruned, "quant", to_value(&r.quant));
        Ok(Self {
            dense,
            rounds,
            pruned,
            quantized,
        })
    }
}

/// Field paths whose values differ between two JSON values (`prune.rounds[0].target: 0.93 → 0.97`).
pub fn diff(old: &Value, new: &Value) -> Vec<String> {
    fn walk(path: &str, a: &Value, b: &Value, out: &mut Vec<String>) {
        match (a, b) {
            (Value::Object(x), Value::Object(y)) => {
                let mut keys: Vec<&String> = x.keys().chain(y.keys()).collect();
                keys.sort();
                keys.dedup();
                for k in keys {
                    let p = if path.is_empty() {
                        k.clone()
                    } else {
                        format!("{path}.{k}")
                    };
                    walk(
                        &p,
                        x.get(k).unwrap_or(&Value::Null),
                        y.get(k).unwrap_or(&Value::Null),
                        out,
                    );
                }
            }
            (Value::Array(x), Value::Array(y)) if x.len() == y.len() => {
                for (i, (u, v)) in x.iter().zip(y).enumerate() {
                    walk(&format!("{path}[{i}]"), u, v, out);
                }
            }
            _ if a == b => {}
            _ => out.push(format!("{path}: {a} → {b}")),
        }
    }
    let mut out = Vec::new();
    walk("", old, new, &mut out);
    out
}

/// Whether a checkpoint may be reused.
#[derive(Debug)]
pub enum Reuse {
    /// No such file.
    Absent,
    /// Same inputs; the report as it stood when the checkpoint was written.
    Yes(Box<Report>),
    /// Different inputs (or none recorded): why.
    No(String),
}

/// Reads a checkpoint's metadata and compares its recorded inputs with `want`.
pub fn check(path: &Path, want: &Value) -> Result<Reuse> {
    if !path.exists() {
        return Ok(Reuse::Absent);
    }
    let bytes = std::fs::read(path).map_err(|e| DriverError::io(path, e))?;
    let meta = match safetensors::SafeTensors::read_metadata(&bytes) {
        Ok((_, h)) => h.metadata().clone().unwrap_or_default(),
        Err(e) => return Ok(Reuse::No(format!("it does not parse ({e})"))),
    };
    let Some(inputs) = meta.get(INPUTS_KEY) else {
        return Ok(Reuse::No(
            "it records no stage inputs (written by an older deepcomp)".into(),
        ));
    };
    let got: Value = match serde_json::from_str(inputs) {
        Ok(v) => v,
        Err(e) => return Ok(Reuse::No(format!("its stage inputs do not parse ({e})"))),
    };
    if &got != want {
        let d = diff(&got, want);
        return Ok(Reuse::No(format!("the recipe changed: {}", d.join("; "))));
    }
    let report = match meta
        .get(REPORT_KEY)
        .map(|t| serde_json::from_str::<Report>(t))
    {
        Some(Ok(r)) => r,
        Some(Err(e)) => return Ok(Reuse::No(format!("its report does not parse ({e})"))),
        None => return Ok(Reuse::No("it holds no report".into())),
    };
    Ok(Reuse::Yes(Box::new(report)))
}

/// The metadata to store with a checkpoint. Wall-clock figures (`seconds.*`, `ex_per_s`) are left
/// out, so that the same run writes the same checkpoint bytes; [`restore_timings`] takes them back from
/// `progress.json`.
pub fn metadata(inputs: &Value, report: &Report) -> Result<deepcomp_models::io::Metadata> {
    let mut r = report.clone();
    r.seconds = Default::default();
    // Says what one run reused, not what the checkpoint holds.
    r.reused.clear();
    for row in &mut r.history {
        row.ex_per_s = 0.0;
    }
    let mut m = deepcomp_models::io::Metadata::new();
    m.insert(INPUTS_KEY.into(), inputs.to_string());
    m.insert(
        REPORT_KEY.into(),
        serde_json::to_string(&r).map_err(|e| DriverError::msg(e.to_string()))?,
    );
    Ok(m)
}

/// Copies the wall-clock figures of the stages `report` holds from an earlier `progress.json`, where
/// it has them (best effort: they are measurements, not results). `stages` says which stage timings
/// carry over: those whose checkpoints were kept.
pub fn restore_timings(report: &mut Report, progress: &Report, stages: KeptStages) {
    for row in &mut report.history {
        if let Some(p) = progress.history.iter().find(|p| {
            (p.stage.as_str(), p.round, p.epoch) == (row.stage.as_str(), row.round, row.epoch)
        }) {
            row.ex_per_s = p.ex_per_s;
        }
    }
    let (s, p) = (&mut report.seconds, &progress.seconds);
    if stages.dense {
        s.train = p.train;
    }
    if stages.pruned {
        s.prune = p.prune;
        s.finetune = p.finetune;
    }
    if stages.quantized {
        s.quantize = p.quantize;
    }
}

/// Which whole stages an output folder's kept checkpoints cover.
#[derive(Debug, Clone, Copy, Default)]
pub struct KeptStages {
    /// `dense.safetensors`.
    pub dense: bool,
    /// `pruned.safetensors`.
    pub pruned: bool,
    /// `quantized.safetensors`.
    pub quantized: bool,
}

/// An exclusive lock on an output folder, held until dropped.
#[derive(Debug)]
pub struct OutputLock {
    _file: File,
    path: PathBuf,
}

impl OutputLock {
    /// Creates `dir` and locks it; fails at once, naming the folder and the holder's pid, when another
    /// run holds it.
    pub fn acquire(dir: &Path) -> Result<Self> {
        crate::fsutil::create_dir_all(dir)?;
        let path = dir.join(LOCK_FILE);
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| DriverError::io(&path, e))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                let holder = std::fs::read_to_string(&path).unwrap_or_default();
                return Err(DriverError::msg(format!(
                    "output folder {} is in use by another deepcomp run (pid {}); wait for it to \
                     finish or choose another --out",
                    dir.display(),
                    holder.trim()
                )));
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(DriverError::io(&path, e)),
        }
        file.set_len(0).map_err(|e| DriverError::io(&path, e))?;
        write!(file, "{}", std::process::id()).map_err(|e| DriverError::io(&path, e))?;
        Ok(Self { _file: file, path })
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Whether `name` is one of the temp files our atomic writers create (`.<name>.<pid>[.<n>].tmp` or
/// `<name>.tmp.<pid>`).
pub fn is_temp_name(name: &str) -> bool {
    (name.starts_with('.') && name.ends_with(".tmp"))
        || name
            .rsplit_once(".tmp.")
            .is_some_and(|(_, pid)| !pid.is_empty() && pid.bytes().all(|b| b.is_ascii_digit()))
}

/// Removes temp files a killed run left in `dirs` (call with the folder locked). Returns how many.
pub fn remove_stale_temps(dirs: &[PathBuf]) -> Result<usize> {
    let mut n = 0;
    for dir in dirs {
        let Ok(entries) = std::fs::read_dir(dir) else {
            continue;
        };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if is_temp_name(&name) && e.file_type().is_ok_and(|t| t.is_file()) {
                std::fs::remove_file(e.path()).map_err(|err| DriverError::io(&e.path(), err))?;
                n += 1;
            }
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn diff_names_changed_fields() {
        let a = json!({"prune": {"rounds": [{"target": 0.93}], "lr": 0.1}, "seed": 1});
        let b = json!({"prune": {"rounds": [{"target": 0.97}], "lr": 0.1}, "seed": 2});
        let d = diff(&a, &b);
        assert_eq!(
            d,
            vec![
                "prune.rounds[0].target: 0.93 → 0.97".to_string(),
                "seed: 1 → 2".to_string()
            ]
        );
        assert!(diff(&a, &a).is_empty());
    }

    #[test]
    fn temp_names() {
        assert!(is_temp_name(".progress.json.1234.tmp"));
        assert!(is_temp_name(".report.json.1234.7.tmp"));
        assert!(is_temp_name("dense.safetensors.tmp.99"));
        assert!(!is_temp_name("dense.safetensors"));
        assert!(!is_temp_name("report.json"));
        assert!(!is_temp_name("x.tmp.abc"));
    }

    #[test]
    fn second_lock_on_a_folder_fails_and_names_it() {
        let dir = tempfile::tempdir().unwrap();
        let first = OutputLock::acquire(dir.path()).unwrap();
        let e = OutputLock::acquire(dir.path()).unwrap_err().to_string();
        assert!(e.contains("in use by another deepcomp run"), "{e}");
        assert!(e.contains(&std::process::id().to_string()), "{e}");
        drop(first);
        OutputLock::acquire(dir.path()).unwrap();
    }
}
