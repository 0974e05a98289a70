//! Safetensors files with PyTorch parameter names, so weights interchange with `torch` in both directions.
//!
//! The general pair [`read_safetensors`] / [`write_safetensors`] moves named tensors and string metadata
//! (checkpoints add optimizer state on top of them); [`save_safetensors`] / [`load_safetensors`] move a
//! model's full `state_dict` (weights, biases, BatchNorm affine parameters and running statistics).
//!
//! Writes are atomic: the file is written to a temporary sibling, flushed to disk, then renamed over the
//! target, so a crash never leaves a half-written file under the final name. Loads validate every name,
//! shape and dtype before touching the model, so a bad file leaves the model unchanged. PyTorch's
//! integer `*.num_batches_tracked` buffers are ignored on load (this crate does not keep them, see
//! [`crate::layers::BatchNorm`]).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use safetensors::tensor::{Dtype, SafeTensors};

use crate::error::{ModelError, Result};
use crate::model::Model;

/// Metadata key under which [`save_safetensors`] records the architecture id.
pub const ARCH_KEY: &str = "deepcomp.arch";

/// Named tensors, in a meaningful order (file order or `state_dict` order).
pub type NamedTensors = Vec<(String, Tensor)>;

/// Safetensors string metadata, sorted by key.
pub type Metadata = BTreeMap<String, String>;

/// Suffix of PyTorch's BatchNorm step counter, skipped on load.
const NUM_BATCHES_TRACKED: &str = ".num_batches_tracked";

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

/// Maps a safetensors dtype to the candle dtype it is read as.
fn candle_dtype(dtype: Dtype) -> Option<DType> {
    Some(match dtype {
        Dtype::U8 => DType::U8,
        Dtype::U32 => DType::U32,
        Dtype::I16 => DType::I16,
        Dtype::I32 => DType::I32,
        Dtype::I64 => DType::I64,
        Dtype::F16 => DType::F16,
        Dtype::BF16 => DType::BF16,
        Dtype::F32 => DType::F32,
        Dtype::F64 => DType::F64,
        _ => return None,
    })
}

/// Reads every tensor of a safetensors file onto the CPU, in the file's data order, with the file's
/// string metadata. Tensors keep their stored dtype.
pub fn read_safetensors(path: &Path) -> Result<(NamedTensors, Metadata)> {
    let bytes = std::fs::read(path).map_err(|e| io_err(path, e))?;
    let st = SafeTensors::deserialize(&bytes)
        .map_err(|e| ckpt_err(path, format!("not a valid safetensors file: {e}")))?;
    let (_, header) = SafeTensors::read_metadata(&bytes)
        .map_err(|e| ckpt_err(path, format!("not a valid safetensors file: {e}")))?;
    let metadata: Metadata = header
        .metadata()
        .as_ref()
        .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
        .unwrap_or_default();
    let mut tensors = Vec::new();
    for name in header.offset_keys() {
        let view = st
            .tensor(&name)
            .map_err(|e| ckpt_err(path, format!("tensor `{name}`: {e}")))?;
        let dtype = candle_dtype(view.dtype()).ok_or_else(|| {
            ckpt_err(
                path,
                format!("tensor `{name}` has unsupported dtype {:?}", view.dtype()),
            )
        })?;
        let t = Tensor::from_raw_buffer(view.data(), dtype, view.shape(), &Device::Cpu)?;
        tensors.push((name, t));
    }
    Ok((tensors, metadata))
}

/// Checks that `t`'s dtype can be written (f32, f64, i64, u32, u8); the error names the tensor.
fn check_writable(name: &str, t: &Tensor) -> Result<()> {
    match t.dtype() {
        DType::F32 | DType::F64 | DType::I64 | DType::U32 | DType::U8 => Ok(()),
        other => Err(ModelError::Config {
            field: name.to_string(),
            reason: format!(
                "cannot write dtype {other:?} to safetensors (supported: f32, f64, i64, u32, u8)"
            ),
        }),
    }
}

/// Writes `tensors` (unique names) and `metadata` to `path` atomically (temporary sibling file, fsync,
/// rename). Supported dtypes: f32, f64, i64, u32, u8.
pub fn write_safetensors(
    path: &Path,
    tensors: &[(String, Tensor)],
    metadata: &Metadata,
) -> Result<()> {
    let mut seen = std::collections::BTreeSet::new();
    let mut named: Vec<(String, &Tensor)> = Vec::with_capacity(tensors.len());
    for (name, t) in tensors {
        if !seen.insert(name.as_str()) {
            return Err(ckpt_err(path, format!("duplicate tensor name `{name}`")));
        }
        if name == "__metadata__" {
            return Err(ckpt_err(path, "a tensor may not be named `__metadata__`"));
        }
        check_writable(name, t)?;
        named.push((name.clone(), t));
    }
    // Our own deterministic encoder (tensors by element size then name, metadata by key): the
    // safetensors crate takes the metadata as a HashMap, whose order changes from run to run.
    let buffer = crate::checkpoint::encode_safetensors(&named, metadata).map_err(|e| match e {
        ModelError::Config { field, reason } => ckpt_err(path, format!("{field}: {reason}")),
        other => other,
    })?;
    write_atomic(path, &buffer)
}

/// Writes `bytes` to a temporary file next to `path`, syncs it and renames it over `path`.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let file_name = path
        .file_name()
        .ok_or_else(|| ckpt_err(path, "path has no file name"))?;
    let mut tmp_name = file_name.to_os_string();
    tmp_name.push(format!(".tmp.{}", std::process::id()));
    let tmp: PathBuf = path.with_file_name(tmp_name);
    let result = (|| {
        let mut f = std::fs::File::create(&tmp).map_err(|e| io_err(&tmp, e))?;
        f.write_all(bytes).map_err(|e| io_err(&tmp, e))?;
        f.sync_all().map_err(|e| io_err(&tmp, e))?;
        drop(f);
        std::fs::rename(&tmp, path).map_err(|e| io_err(path, e))
    })();
    if result.is_err() {
        // Best effort: the temporary file is useless once the write failed.
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// The model's full `state_dict` as (name, tensor) pairs in order (tensors share storage with the model's
/// variables until the model is next updated).
pub fn model_tensors(model: &dyn Model) -> NamedTensors {
    model
        .params()
        .iter()
        .map(|p| (p.name.clone(), p.var.as_tensor().clone()))
        .collect()
}

/// Saves every parameter and buffer of `model` under its PyTorch name as f32, with metadata
/// `format = pt` and [`ARCH_KEY`] = the architecture id. Atomic.
pub fn save_safetensors(model: &dyn Model, path: &Path) -> Result<()> {
    save_safetensors_with(model, path, &Metadata::new())
}

/// [`save_safetensors`] with extra string metadata (keys `format` and [`ARCH_KEY`] are set by this
/// function and override `extra`'s).
pub fn save_safetensors_with(model: &dyn Model, path: &Path, extra: &Metadata) -> Result<()> {
    let mut metadata = extra.clone();
    metadata.insert("format".to_string(), "pt".to_string());
    metadata.insert(ARCH_KEY.to_string(), model.arch().to_string());
    let tensors = model_tensors(model)
        .into_iter()
        .map(|(n, t)| Ok((n, t.to_dtype(DType::F32)?)))
        .collect::<Result<Vec<_>>>()?;
    write_safetensors(path, &tensors, &metadata)
}

/// Copies `named` tensors into the model's variables. Every model parameter must be present exactly once
/// with the same shape and a floating-point dtype (converted to f32); names the model does not have are
/// an error, except PyTorch's `*.num_batches_tracked`. Nothing is modified unless everything checks out.
/// `source` names the origin in error messages.
pub fn assign_tensors(model: &dyn Model, named: &[(String, Tensor)], source: &Path) -> Result<()> {
    let store = model.params();
    // Names first, all of them at once as PyTorch's strict `load_state_dict` reports them (missing and
    // unexpected keys), then shapes and dtypes.
    let mut found: BTreeMap<&str, &Tensor> = BTreeMap::new();
    let mut unexpected: Vec<&str> = Vec::new();
    for (name, t) in named {
        if name.ends_with(NUM_BATCHES_TRACKED) {
            continue;
        }
        if store.get(name).is_none() {
            unexpected.push(name);
            continue;
        }
        if found.insert(name.as_str(), t).is_some() {
            return Err(ckpt_err(source, format!("tensor `{name}` appears twice")));
        }
    }
    let missing: Vec<&str> = store
        .iter()
        .map(|p| p.name.as_str())
        .filter(|n| !found.contains_key(n))
        .collect();
    if !missing.is_empty() || !unexpected.is_empty() {
        let list = |v: &[&str]| {
            let shown: Vec<String> = v.iter().take(8).map(|n| format!("\"{n}\"")).collect();
            let more = if v.len() > 8 {
                format!(", … ({} more)", v.len() - 8)
            } else {
                String::new()
            };
            format!("[{}{more}]", shown.join(", "))
        };
        return Err(ckpt_err(
            source,
            format!(
                "not a state_dict of architecture `{}`: missing keys {} ({} of {}); unexpected \
                 keys {} (a name map such as a `module.` prefix strip may help)",
                model.arch(),
                list(&missing),
                missing.len(),
                store.iter().count(),
                list(&unexpected)
            ),
        ));
    }
    for p in store.iter() {
        let Some(t) = found.get(p.name.as_str()) else {
            continue;
        };
        if p.var.dims() != t.dims() {
            return Err(ckpt_err(
                source,
                format!(
                    "shape mismatch for `{}`: the model expects {:?}, the file has {:?}",
                    p.name,
                    p.var.dims(),
                    t.dims()
                ),
            ));
        }
        if !t.dtype().is_float() {
            return Err(ckpt_err(
                source,
                format!(
                    "tensor `{}` has dtype {:?}, expected a floating-point type",
                    p.name,
                    t.dtype()
                ),
            ));
        }
    }
    for p in store.iter() {
        if let Some(t) = found.get(p.name.as_str()) {
            // A fresh copy, so that even the model's own tensors can be assigned back.
            let t = if t.dtype() == DType::F32 {
                t.copy()?
            } else {
                t.to_dtype(DType::F32)?
            };
            p.var.set(&t.to_device(p.var.device())?)?;
        }
    }
    Ok(())
}

/// Loads a safetensors `state_dict` (as written by [`save_safetensors`] or by PyTorch's
/// `safetensors.torch.save_file(model.state_dict(), ...)`) into `model`; see [`assign_tensors`] for the
/// checks.
pub fn load_safetensors(model: &dyn Model, path: &Path) -> Result<()> {
    let (tensors, _) = read_safetensors(path)?;
    assign_tensors(model, &tensors, path)
}
