//! Training checkpoints: one safetensors file holding everything needed to resume a run exactly.
//!
//! Layout of the file:
//!
//! * every model tensor (weights, biases, BatchNorm parameters and running statistics) under its own name,
//!   e.g. `fc1.weight`;
//! * optimizer state under `optim.<slot>.<param>`, e.g. `optim.momentum_buffer.fc1.weight`,
//!   `optim.exp_avg.fc1.weight`, `optim.step.fc1.weight` (slot names are PyTorch's);
//! * pruning masks under `mask.<param>` (u8 or f32, whatever the caller stored);
//! * in the safetensors `__metadata__`: `format` (`deepcomp-checkpoint`), `format_version`, `epoch`
//!   (completed epochs), `step` (optimizer steps), `arch`, `optim.kind`, `optim.<hyperparameter>` (including
//!   the current `optim.lr`), and anything else the caller put in [`Checkpoint::meta`] (`seed`, ...).
//!
//! The writer is deterministic (tensors ordered by element size then name, metadata sorted by key), so the
//! same state always gives the same bytes, and atomic: it writes `<file>.tmp`, syncs it and renames it over
//! the target, so a run killed mid-write leaves the previous checkpoint intact.

use std::collections::BTreeMap;

use std::path::Path;

// Checkpoints are written like every other file of this crate: temp file, sync, rename.
use crate::io::write_atomic;

use candle_core::{DType, Device, Tensor};

use crate::error::{ModelError, Result};
use crate::model::Model;
use crate::optim::Optimizer;

/// Value of the `format` metadata key.
pub const FORMAT: &str = "deepcomp-checkpoint";
/// Value of the `format_version` metadata key.
pub const FORMAT_VERSION: &str = "1";

const OPTIM_PREFIX: &str = "optim.";
const MASK_PREFIX: &str = "mask.";

/// A snapshot of a training run: model tensors, optimizer state, masks and metadata.
///
/// All tensors are owned copies (never views of live parameters), so later training does not change a
/// checkpoint held in memory.
#[derive(Debug, Clone)]
pub struct Checkpoint {
    /// Number of completed epochs: a resumed run starts at this 0-based epoch index.
    pub epoch: usize,
    /// Number of optimizer steps taken so far.
    pub step: u64,
    /// Every model tensor: in the model's `state_dict` order after [`Checkpoint::capture`], sorted by name
    /// after [`Checkpoint::load`].
    pub model: Vec<(String, Tensor)>,
    /// Optimizer state named `<slot>.<param>` (without the `optim.` prefix of the file).
    pub optim: Vec<(String, Tensor)>,
    /// Pruning masks named by parameter (without the `mask.` prefix of the file).
    pub masks: Vec<(String, Tensor)>,
    /// Metadata: `arch`, `optim.kind`, `optim.<hyperparameter>`, `seed`, and any caller-defined keys.
    /// `epoch`, `step`, `format` and `format_version` are kept in the fields above, not here.
    pub meta: BTreeMap<String, String>,
}

fn ckpt_err(path: &Path, reason: impl Into<String>) -> ModelError {
    ModelError::Checkpoint {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

fn io_err(path: &Path, source: std::io::Error) -> ModelError {
    ModelError::Io {
        path: path.to_path_buf(),
        source,
    }
}

impl Checkpoint {
    /// Captures `model` and `opt` after `epoch` completed epochs, with the caller's `masks` (e.g. from
    /// [`crate::TrainHook::masks`]). Metadata gets `arch`, `optim.kind` and the optimizer hyperparameters.
    pub fn capture(
        model: &dyn Model,
        opt: &dyn Optimizer,
        epoch: usize,
        masks: Vec<(String, Tensor)>,
    ) -> Result<Self> {
        let model_tensors = model
            .params()
            .iter()
            .map(|p| Ok((p.name.clone(), p.var.as_tensor().copy()?)))
            .collect::<Result<Vec<_>>>()?;
        let masks = masks
            .into_iter()
            .map(|(n, t)| Ok((n, t.copy()?)))
            .collect::<Result<Vec<_>>>()?;
        let mut meta = BTreeMap::new();
        meta.insert("arch".to_string(), model.arch().to_string());
        meta.insert("optim.kind".to_string(), opt.kind().to_string());
        for (k, v) in opt.hyperparameters() {
            meta.insert(format!("optim.{k}"), v);
        }
        Ok(Self {
            epoch,
            step: opt.steps(),
            model: model_tensors,
            optim: opt.state()?,
            masks,
            meta,
        })
    }

    /// Writes the checkpoint to `path` atomically (temporary file, sync, rename).
    pub fn save(&self, path: &Path) -> Result<()> {
        let mut named: Vec<(String, &Tensor)> = Vec::new();
        for (n, t) in &self.model {
            if n.starts_with(OPTIM_PREFIX) || n.starts_with(MASK_PREFIX) || n == "__metadata__" {
                return Err(ckpt_err(
                    path,
                    format!("model tensor name `{n}` collides with a reserved prefix"),
                ));
            }
            named.push((n.clone(), t));
        }
        named.extend(
            self.optim
                .iter()
                .map(|(n, t)| (format!("{OPTIM_PREFIX}{n}"), t)),
        );
        named.extend(
            self.masks
                .iter()
                .map(|(n, t)| (format!("{MASK_PREFIX}{n}"), t)),
        );
        let mut seen = std::collections::BTreeSet::new();
        for (n, _) in &named {
            if !seen.insert(n.as_str()) {
                return Err(ckpt_err(path, format!("tensor `{n}` appears twice")));
            }
        }
        let mut meta = self.meta.clone();
        meta.insert("format".into(), FORMAT.into());
        meta.insert("format_version".into(), FORMAT_VERSION.into());
        meta.insert("epoch".into(), self.epoch.to_string());
        meta.insert("step".into(), self.step.to_string());
        let bytes = encode_safetensors(&named, &meta).map_err(|e| match e {
            ModelError::Config { field, reason } => ckpt_err(path, format!("{field}: {reason}")),
            other => other,
        })?;
        write_atomic(path, &bytes)
    }

    /// Reads a checkpoint written by [`Checkpoint::save`]; tensors are loaded on the CPU.
    pub fn load(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|e| io_err(path, e))?;
        let (_, header) = safetensors::SafeTensors::read_metadata(&bytes)
            .map_err(|e| ckpt_err(path, format!("not a safetensors file: {e}")))?;
        let st = safetensors::SafeTensors::deserialize(&bytes)
            .map_err(|e| ckpt_err(path, format!("not a safetensors file: {e}")))?;
        let mut meta: BTreeMap<String, String> = header
            .metadata()
            .as_ref()
            .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
            .unwrap_or_default();
        match meta.remove("format") {
            Some(f) if f == FORMAT => {}
            Some(f) => {
                return Err(ckpt_err(
                    path,
                    format!("format is `{f}`, expected `{FORMAT}`"),
                ))
            }
            None => {
                return Err(ckpt_err(
                    path,
                    "no `format` metadata: not a deepcomp checkpoint",
                ))
            }
        }
        match meta.remove("format_version") {
            Some(v) if v == FORMAT_VERSION => {}
            v => return Err(ckpt_err(path, format!("unsupported format_version {v:?}"))),
        }
        let epoch = parse_meta::<usize>(path, &mut meta, "epoch")?;
        let step = parse_meta::<u64>(path, &mut meta, "step")?;

        let mut tensors: BTreeMap<String, Tensor> = BTreeMap::new();
        for (name, view) in st.iter() {
            tensors.insert(name.to_string(), view_to_tensor(path, name, &view)?);
        }
        // Sections come out sorted by name; `apply_to` walks the model's own `state_dict` order.
        let mut model = Vec::new();
        let mut optim = Vec::new();
        let mut masks = Vec::new();
        for (name, t) in tensors {
            if let Some(rest) = name.strip_prefix(OPTIM_PREFIX) {
                optim.push((rest.to_string(), t));
            } else if let Some(rest) = name.strip_prefix(MASK_PREFIX) {
                masks.push((rest.to_string(), t));
            } else {
                model.push((name, t));
            }
        }
        Ok(Self {
            epoch,
            step,
            model,
            optim,
            masks,
            meta,
        })
    }

    /// Copies the model tensors into `model` and the state into `opt` (masks are left to the caller, who
    /// hands them to its hook). Every model parameter must be present with its shape and dtype, and no
    /// extra model tensor may be present; the optimizer kind must match `optim.kind`. The optimizer's
    /// learning rate is set from `optim.lr` when present.
    pub fn apply_to(&self, model: &dyn Model, opt: &mut dyn Optimizer) -> Result<()> {
        let here = Path::new("<checkpoint>");
        if let Some(kind) = self.meta.get("optim.kind") {
            if kind != opt.kind() {
                return Err(ckpt_err(
                    here,
                    format!(
                        "optimizer kind is `{kind}` but the optimizer given is `{}`",
                        opt.kind()
                    ),
                ));
            }
        }
        let by_name: BTreeMap<&str, &Tensor> =
            self.model.iter().map(|(n, t)| (n.as_str(), t)).collect();
        for (n, _) in &self.model {
            if model.params().get(n).is_none() {
                return Err(ckpt_err(
                    here,
                    format!(
                        "tensor `{n}` is not a parameter of model `{}`",
                        model.arch()
                    ),
                ));
            }
        }
        // Check everything before writing anything, so a mismatch leaves the model untouched.
        let mut updates = Vec::with_capacity(model.params().len());
        for p in model.params().iter() {
            let t = by_name
                .get(p.name.as_str())
                .ok_or_else(|| ckpt_err(here, format!("missing tensor `{}`", p.name)))?;
            if t.dims() != p.var.dims() {
                return Err(ModelError::Shape {
                    name: p.name.clone(),
                    expected: p.var.dims().to_vec(),
                    found: t.dims().to_vec(),
                });
            }
            if t.dtype() != p.var.dtype() {
                return Err(ckpt_err(
                    here,
                    format!(
                        "tensor `{}` has dtype {:?}, the model has {:?}",
                        p.name,
                        t.dtype(),
                        p.var.dtype()
                    ),
                ));
            }
            updates.push((p, t.to_device(p.var.device())?));
        }
        opt.load_state(model.params(), &self.optim, self.step)?;
        for (p, t) in updates {
            p.var.set(&t)?;
        }
        if let Some(lr) = self.meta.get("optim.lr") {
            let lr: f64 = lr.parse().map_err(|_| {
                ckpt_err(here, format!("metadata optim.lr = `{lr}` is not a number"))
            })?;
            opt.set_lr(lr);
        }
        Ok(())
    }

    /// Loads the checkpoint at `path` and applies it to `model` and `opt`; returns it (for its masks,
    /// metadata and `epoch`, the epoch to resume at).
    pub fn resume(path: &Path, model: &dyn Model, opt: &mut dyn Optimizer) -> Result<Self> {
        let ckpt = Self::load(path)?;
        ckpt.apply_to(model, opt).map_err(|e| match e {
            ModelError::Checkpoint { reason, .. } => ckpt_err(path, reason),
            other => other,
        })?;
        Ok(ckpt)
    }
}

fn parse_meta<T: std::str::FromStr>(
    path: &Path,
    meta: &mut BTreeMap<String, String>,
    key: &str,
) -> Result<T> {
    let v = meta
        .remove(key)
        .ok_or_else(|| ckpt_err(path, format!("missing metadata `{key}`")))?;
    v.parse().map_err(|_| {
        ckpt_err(
            path,
            format!("metadata `{key}` = `{v}` is not a valid number"),
        )
    })
}

fn view_to_tensor(
    path: &Path,
    name: &str,
    view: &safetensors::tensor::TensorView<'_>,
) -> Result<Tensor> {
    use safetensors::Dtype as S;
    let shape = view.shape().to_vec();
    let data = view.data();
    fn decode<T: candle_core::WithDType, const N: usize>(
        data: &[u8],
        shape: Vec<usize>,
        f: fn([u8; N]) -> T,
    ) -> Result<Tensor> {
        let v: Vec<T> = data
            .chunks_exact(N)
            .map(|c| {
                let mut a = [0u8; N];
                a.copy_from_slice(c);
                f(a)
            })
            .collect();
        Ok(Tensor::from_vec(v, shape, &Device::Cpu)?)
    }
    match view.dtype() {
        S::F32 => decode::<f32, 4>(data, shape, f32::from_le_bytes),
        S::F64 => decode::<f64, 8>(data, shape, f64::from_le_bytes),
        S::U8 => decode::<u8, 1>(data, shape, |[b]| b),
        S::U32 => decode::<u32, 4>(data, shape, u32::from_le_bytes),
        S::I64 => decode::<i64, 8>(data, shape, i64::from_le_bytes),
        other => Err(ckpt_err(
            path,
            format!("tensor `{name}` has unsupported dtype {other:?}"),
        )),
    }
}

/// safetensors name and element size of a candle dtype.
fn st_dtype(dtype: DType) -> Option<(&'static str, usize)> {
    Some(match dtype {
        DType::F32 => ("F32", 4),
        DType::F64 => ("F64", 8),
        DType::U8 => ("U8", 1),
        DType::U32 => ("U32", 4),
        DType::I64 => ("I64", 8),
        _ => return None,
    })
}

fn tensor_bytes(t: &Tensor) -> Result<Vec<u8>> {
    let t = t.flatten_all()?;
    Ok(match t.dtype() {
        DType::F32 => t
            .to_vec1::<f32>()?
            .iter()
            .flat_map(|x| x.to_le_bytes())
            .collect(),
        DType::F64 => t
            .to_vec1::<f64>()?
            .iter()
            .flat_map(|x| x.to_le_bytes())
            .collect(),
        DType::U8 => t.to_vec1::<u8>()?,
        DType::U32 => t
            .to_vec1::<u32>()?
            .iter()
            .flat_map(|x| x.to_le_bytes())
            .collect(),
        DType::I64 => t
            .to_vec1::<i64>()?
            .iter()
            .flat_map(|x| x.to_le_bytes())
            .collect(),
        other => {
            return Err(ModelError::Config {
                field: "dtype".into(),
                reason: format!("{other:?} cannot be stored in a checkpoint"),
            })
        }
    })
}

/// JSON string literal of `s`.
fn json_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Serializes `named` tensors and `meta` in the safetensors format, deterministically: tensors ordered by
/// descending element size then name (so every tensor is aligned to its element size), metadata by key.
pub(crate) fn encode_safetensors(
    named: &[(String, &Tensor)],
    meta: &BTreeMap<String, String>,
) -> Result<Vec<u8>> {
    let mut entries = Vec::with_capacity(named.len());
    for (n, t) in named {
        let (dt, size) = st_dtype(t.dtype()).ok_or_else(|| ModelError::Config {
            field: n.clone(),
            reason: format!("dtype {:?} cannot be stored in a checkpoint", t.dtype()),
        })?;
        entries.push((size, n.as_str(), dt, *t));
    }
    entries.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(b.1)));

    let mut header = String::from("{\"__metadata__\":{");
    for (i, (k, v)) in meta.iter().enumerate() {
        if i > 0 {
            header.push(',');
        }
        header.push_str(&json_str(k));
        header.push(':');
        header.push_str(&json_str(v));
    }
    header.push('}');
    let mut data = Vec::new();
    for (_, n, dt, t) in &entries {
        let start = data.len();
        data.extend(tensor_bytes(t)?);
        let shape: Vec<String> = t.dims().iter().map(|d| d.to_string()).collect();
        header.push_str(&format!(
            ",{}:{{\"dtype\":\"{dt}\",\"shape\":[{}],\"data_offsets\":[{start},{}]}}",
            json_str(n),
            shape.join(","),
            data.len()
        ));
    }
    header.push('}');
    while header.len() % 8 != 0 {
        header.push(' ');
    }
    let mut out = Vec::with_capacity(8 + header.len() + data.len());
    out.extend((header.len() as u64).to_le_bytes());
    out.extend(header.as_bytes());
    out.extend(data);
    Ok(out)
}
