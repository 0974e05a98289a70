//! What version 2 of the `.dcz` container adds to version 1 (`docs/FORMAT.md`): a model-description
//! metadata block in the header, the original element type ([`Dtype`]) of every sparse layer, and
//! `TYPD` sections holding raw tensors of any element type as their bytes ([`TypedTensor`]).
//!
//! Kept apart from `dcz.rs` so that the version-1 code path reads as it did; `dcz.rs` calls the
//! `encode_*` / `decode_*` functions here.

use serde::{Deserialize, Serialize};

use crate::dcz::{put_name, put_shape, Budget, ContainerError, Cursor, MAX_RANK};

/// Largest metadata block, in bytes (1 MiB).
pub const MAX_METADATA_LEN: usize = 1 << 20;

/// Element type of a tensor as the model had it, with safetensors' names (`F32`, `I64`, …).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub enum Dtype {
    /// 32-bit float (code 0).
    #[default]
    F32,
    /// IEEE half (code 1).
    F16,
    /// bfloat16 (code 2).
    BF16,
    /// 64-bit float (code 3).
    F64,
    /// Signed 64-bit integer (code 4), e.g. BatchNorm's `num_batches_tracked`.
    I64,
    /// Signed 32-bit integer (code 5).
    I32,
    /// Signed 16-bit integer (code 6).
    I16,
    /// Signed 8-bit integer (code 7).
    I8,
    /// Unsigned 8-bit integer (code 8).
    U8,
    /// Boolean, one byte each, 0 or 1 (code 9).
    Bool,
    /// Unsigned 16-bit integer (code 10).
    U16,
    /// Unsigned 32-bit integer (code 11).
    U32,
    /// Unsigned 64-bit integer (code 12).
    U64,
    /// 8-bit float E4M3 (code 13; stored, never interpreted).
    F8E4M3,
    /// 8-bit float E5M2 (code 14; stored, never interpreted).
    F8E5M2,
}

const DTYPES: [Dtype; 15] = [
    Dtype::F32,
    Dtype::F16,
    Dtype::BF16,
    Dtype::F64,
    Dtype::I64,
    Dtype::I32,
    Dtype::I16,
    Dtype::I8,
    Dtype::U8,
    Dtype::Bool,
    Dtype::U16,
    Dtype::U32,
    Dtype::U64,
    Dtype::F8E4M3,
    Dtype::F8E5M2,
];

impl Dtype {
    /// The byte that stands for it in a file.
    pub fn code(self) -> u8 {
        DTYPES.iter().position(|&d| d == self).unwrap_or(0) as u8
    }

    /// The dtype of a code byte, if it is one.
    pub fn from_code(code: u8) -> Option<Self> {
        DTYPES.get(usize::from(code)).copied()
    }

    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            Dtype::F64 | Dtype::I64 | Dtype::U64 => 8,
            Dtype::F32 | Dtype::I32 | Dtype::U32 => 4,
            Dtype::F16 | Dtype::BF16 | Dtype::I16 | Dtype::U16 => 2,
            Dtype::I8 | Dtype::U8 | Dtype::Bool | Dtype::F8E4M3 | Dtype::F8E5M2 => 1,
        }
    }

    /// Whether the type is one of the floats a sparse layer may decode to (`F32`, `F16`, `BF16`,
    /// `F64`).
    pub fn is_float(self) -> bool {
        matches!(self, Dtype::F32 | Dtype::F16 | Dtype::BF16 | Dtype::F64)
    }

    /// safetensors' name of the type (`F32`, `BF16`, `I64`, `BOOL`, `F8_E4M3`, …).
    pub fn name(self) -> &'static str {
        match self {
            Dtype::F32 => "F32",
            Dtype::F16 => "F16",
            Dtype::BF16 => "BF16",
            Dtype::F64 => "F64",
            Dtype::I64 => "I64",
            Dtype::I32 => "I32",
            Dtype::I16 => "I16",
            Dtype::I8 => "I8",
            Dtype::U8 => "U8",
            Dtype::Bool => "BOOL",
            Dtype::U16 => "U16",
            Dtype::U32 => "U32",
            Dtype::U64 => "U64",
            Dtype::F8E4M3 => "F8_E4M3",
            Dtype::F8E5M2 => "F8_E5M2",
        }
    }
}

impl std::fmt::Display for Dtype {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A raw tensor of any element type, stored as its little-endian bytes (a `TYPD` section).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TypedTensor {
    /// Tensor name (the tensor-name rules apply).
    pub name: String,
    /// Element type.
    pub dtype: Dtype,
    /// Shape, 0 to 8 dimensions.
    pub shape: Vec<usize>,
    /// `numel × dtype.size()` bytes, row-major, little-endian.
    pub data: Vec<u8>,
}

/// What a file says about the model it holds, so that it can be rebuilt and evaluated without the
/// recipe that made it: the JSON object of the metadata block as deepcomp writes it. Every field is
/// optional; unknown fields are kept out of this view but are not an error (a newer writer may add
/// some).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ModelMeta {
    /// Architecture id (`lenet300`, `lenet5`, `mlp`, `cifar_lenet`, `vgg16_half`, `resnet20`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arch: Option<String>,
    /// Architecture options as deepcomp-models' `ArchConfig` serializes them (`in_channels`,
    /// `input_size`, `num_classes`, `hidden`, `channels`, `kernels`, `conv_bias`,
    /// `init`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arch_config: Option<serde_json::Value>,
    /// Dataset id the model was trained / evaluated on (`mnist`, `fashion-mnist`, `cifar10`, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dataset: Option<String>,
    /// 28×28 images were padded to this side for the model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pad_to: Option<usize>,
    /// Per-channel input normalization mean, on pixels scaled to [0, 1].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mean: Option<Vec<f32>>,
    /// Per-channel input normalization standard deviation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub std: Option<Vec<f32>>,
    /// What wrote the file (e.g. `deepcomp pipeline`, `deepcomp compress`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub producer: Option<String>,
}

impl ModelMeta {
    /// The JSON text of the metadata block.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|_| "{}".into())
    }

    /// Parses a metadata block; `Err` says why it is not a `ModelMeta`.
    pub fn from_json(text: &str) -> Result<Self, String> {
        serde_json::from_str(text).map_err(|e| e.to_string())
    }
}

/// The version-2 fields of a file (all empty in a version-1 file).
pub(crate) struct HeadExt<'a> {
    pub typed_count: usize,
    pub layer_dtypes: &'a [Dtype],
    pub layer_count: usize,
    pub metadata: Option<&'a str>,
}

/// Why `text` cannot be a metadata block, if it cannot.
pub(crate) fn metadata_problem(text: &str) -> Result<(), String> {
    if text.is_empty() {
        return Err("is empty (leave it out instead)".into());
    }
    if text.len() > MAX_METADATA_LEN {
        return Err(format!(
            "is {} bytes, at most {MAX_METADATA_LEN}",
            text.len()
        ));
    }
    match serde_json::from_str::<serde_json::Value>(text) {
        Ok(serde_json::Value::Object(_)) => Ok(()),
        Ok(_) => Err("is JSON but not an object".into()),
        Err(e) => Err(format!("is not JSON: {e}")),
    }
}

/// Appends the version-2 header fields after `dense_count`.
pub(crate) fn encode_head_ext(head: &mut Vec<u8>, ext: &HeadExt<'_>) -> Result<(), ContainerError> {
    let bad = |reason: String| ContainerError::InvalidHeader { reason };
    if ext.typed_count > u32::MAX as usize {
        return Err(bad("more than 2^32 - 1 typed tensors".into()));
    }
    head.extend_from_slice(&(ext.typed_count as u32).to_le_bytes());
    if !ext.layer_dtypes.is_empty() && ext.layer_dtypes.len() != ext.layer_count {
        return Err(bad(format!(
            "{} layer dtypes for {} layers (give none, or one per layer)",
            ext.layer_dtypes.len(),
            ext.layer_count
        )));
    }
    for i in 0..ext.layer_count {
        let d = ext.layer_dtypes.get(i).copied().unwrap_or(Dtype::F32);
        if !d.is_float() {
            return Err(bad(format!(
                "layer #{i}: dtype {d} is not a float type a sparse layer can decode to"
            )));
        }
        head.push(d.code());
    }
    match ext.metadata {
        None => head.extend_from_slice(&0u32.to_le_bytes()),
        Some(text) => {
            metadata_problem(text).map_err(|p| bad(format!("metadata {p}")))?;
            head.extend_from_slice(&(text.len() as u32).to_le_bytes());
            head.extend_from_slice(text.as_bytes());
        }
    }
    Ok(())
}

/// The version-2 header fields read after `dense_count`: typed count, layer dtypes (empty when all
/// are `F32`), metadata.
pub(crate) fn decode_head_ext(
    h: &mut Cursor<'_>,
    layer_count: u32,
) -> Result<(u32, Vec<Dtype>, Option<String>), ContainerError> {
    let typed_count = h.u32("typed_count")?;
    let off = h.offset();
    let raw = h.bytes(layer_count as usize, "layer_dtypes")?;
    let mut dtypes = Vec::with_capacity(raw.len());
    for (i, &b) in raw.iter().enumerate() {
        match Dtype::from_code(b).filter(|d| d.is_float()) {
            Some(d) => dtypes.push(d),
            None => {
                return Err(h.invalid(
                    "layer_dtypes",
                    off + i as u64,
                    format!("layer #{i}: {b} is not the code of F32, F16, BF16 or F64"),
                ))
            }
        }
    }
    if dtypes.iter().all(|&d| d == Dtype::F32) {
        dtypes.clear();
    }
    let off = h.offset();
    let len = h.u32("meta_len")? as usize;
    if len > MAX_METADATA_LEN {
        return Err(h.invalid(
            "meta_len",
            off,
            format!("{len} bytes exceed the limit of {MAX_METADATA_LEN}"),
        ));
    }
    let metadata = if len == 0 {
        None
    } else {
        let off = h.offset();
        let raw = h.bytes(len, "metadata")?;
        let text = std::str::from_utf8(raw)
            .map_err(|e| h.invalid("metadata", off, format!("not UTF-8: {e}")))?;
        metadata_problem(text).map_err(|p| h.invalid("metadata", off, format!("metadata {p}")))?;
        Some(text.to_string())
    };
    Ok((typed_count, dtypes, metadata))
}

impl TypedTensor {
    /// Checks name, rank, and that the bytes match shape and dtype (booleans 0 or 1).
    pub fn validate(&self) -> Result<(), ContainerError> {
        let err = |reason: String| ContainerError::InvalidDense {
            name: self.name.clone(),
            reason,
        };
        crate::dcz::name_error(&self.name).map_err(err)?;
        if self.shape.len() > MAX_RANK {
            return Err(err(format!("rank {} above {MAX_RANK}", self.shape.len())));
        }
        let n = crate::dcz::element_count(&self.shape).ok_or_else(|| {
            err(format!(
                "shape {:?} has more than {} elements",
                self.shape,
                crate::dcz::MAX_ELEMENTS
            ))
        })?;
        if n.saturating_mul(self.dtype.size() as u64) != self.data.len() as u64 {
            return Err(err(format!(
                "shape {:?} of {} needs {} bytes, data has {}",
                self.shape,
                self.dtype,
                n.saturating_mul(self.dtype.size() as u64),
                self.data.len()
            )));
        }
        if self.dtype == Dtype::Bool {
            if let Some(i) = self.data.iter().position(|&b| b > 1) {
                return Err(err(format!(
                    "BOOL element {i} is {}, not 0 or 1",
                    self.data[i]
                )));
            }
        }
        Ok(())
    }

    /// Number of elements.
    pub fn numel(&self) -> u64 {
        crate::dcz::element_count(&self.shape).unwrap_or(0)
    }

    /// The values as `f32` when the type is a float (`F32`, `F16`, `BF16` exactly, `F64` rounded),
    /// `None` otherwise.
    pub fn to_f32(&self) -> Option<Vec<f32>> {
        let d = &self.data;
        Some(match self.dtype {
            Dtype::F32 => d
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
            Dtype::F64 => d
                .chunks_exact(8)
                .map(|c| {
                    f64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]) as f32
                })
                .collect(),
            Dtype::BF16 => d
                .chunks_exact(2)
                .map(|c| f32::from_bits(u32::from(u16::from_le_bytes([c[0], c[1]])) << 16))
                .collect(),
            Dtype::F16 => d
                .chunks_exact(2)
                .map(|c| f16_to_f32(u16::from_le_bytes([c[0], c[1]])))
                .collect(),
            _ => return None,
        })
    }
}

/// IEEE half → single, exact (subnormals normalized, infinities and NaN payloads kept).
fn f16_to_f32(h: u16) -> f32 {
    let sign = u32::from(h >> 15) << 31;
    let exp = u32::from((h >> 10) & 0x1f);
    let frac = u32::from(h & 0x3ff);
    let bits = match exp {
        0 if frac == 0 => sign,
        0 => {
            // Subnormal: value = frac × 2^-24; normalize.
            let shift = frac.leading_zeros() - 21;
            let f = (frac << shift) & 0x3ff;
            sign | ((127 - 15 + 1 - shift) << 23) | (f << 13)
        }
        0x1f => sign | 0x7f80_0000 | (frac << 13),
        _ => sign | ((exp + 127 - 15) << 23) | (frac << 13),
    };
    f32::from_bits(bits)
}

/// The payload of a `TYPD` section.
pub(crate) fn encode_typed(t: &TypedTensor) -> Result<Vec<u8>, ContainerError> {
    t.validate()?;
    let mut p = Vec::with_capacity(t.data.len() + t.name.len() + 80);
    put_name(&mut p, &t.name);
    p.push(t.dtype.code());
    put_shape(&mut p, &t.shape);
    p.extend_from_slice(&t.data);
    Ok(p)
}

/// Parses a `TYPD` payload.
pub(crate) fn decode_typed(
    payload: &[u8],
    base: u64,
    desc: String,
    budget: &mut Budget,
) -> Result<TypedTensor, ContainerError> {
    let mut c = Cursor::new(payload, base, desc);
    let name = c.tensor_name()?;
    c.section = format!("{} (tensor `{name}`)", c.section);
    let off = c.offset();
    let code = c.u8("dtype")?;
    let dtype = Dtype::from_code(code)
        .ok_or_else(|| c.invalid("dtype", off, format!("{code} is not a dtype code (0..=14)")))?;
    let shape = c.shape(0)?;
    let off = c.offset();
    let n = crate::dcz::element_count(&shape).unwrap_or(u64::MAX);
    budget.take_elements(n).map_err(|r| c.limit(r))?;
    let need = n.saturating_mul(dtype.size() as u64);
    if need != c.remaining() as u64 {
        return Err(c.invalid(
            "data",
            off,
            format!(
                "shape {shape:?} of {dtype} needs {need} bytes but {} remain",
                c.remaining()
            ),
        ));
    }
    let data = c.bytes(c.remaining(), "data")?.to_vec();
    c.finish()?;
    let t = TypedTensor {
        name,
        dtype,
        shape,
        data,
    };
    if dtype == Dtype::Bool {
        if let Some(i) = t.data.iter().position(|&b| b > 1) {
            return Err(c.invalid(
                "data",
                off + i as u64,
                format!("BOOL element {i} is {}, not 0 or 1", t.data[i]),
            ));
        }
    }
    Ok(t)
}
