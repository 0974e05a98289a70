//! Post-training compression of any safetensors file, and the way back.
//!
//! `deepcomp compress` needs no data and no architecture: every rank-2 tensor is treated as an fc weight
//! and every rank-4 tensor as a conv weight (both pruned and shared), unless a rule keeps it dense;
//! everything else (biases, BatchNorm, integer buffers) is stored raw with its own element type.
//! Pruning is per-layer magnitude by percentile (`q`), by `s`·std, or one global magnitude threshold;
//! weight sharing is k-means with the given bits. Settings can differ per tensor by name pattern
//! ([`LayerRule`]) and come from a TOML file ([`CompressConfig`]). `deepcomp decompress` writes the
//! decoded tensors back to a safetensors file with the original names and element types, loadable by
//! PyTorch's `safetensors.torch.load_file`.

use std::path::Path;

use safetensors::tensor::{Dtype as StDtype, SafeTensors, TensorView};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::container::{DczFile, DenseTensor, Dtype, LayerKind, TypedTensor};
use crate::error::{DriverError, Result};
use crate::fsutil;

/// A per-tensor override, selected by a regular expression on the tensor name (after `key_map`).
/// Every rule whose pattern matches applies, in order; a later rule overrides the fields it sets.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LayerRule {
    /// Regular expression searched in the tensor name (`^conv1\.`, `downsample`, …).
    pub pattern: String,
    /// Pruning percentile for the matching tensors (overrides `q`, `std` and the global threshold).
    pub q: Option<f64>,
    /// Prune |w| < s·std for the matching tensors.
    pub std: Option<f64>,
    /// Quantization bits.
    pub bits: Option<u8>,
    /// `true`: store the matching tensors raw (not pruned, not shared); `false`: compress them even if
    /// an earlier rule or the default exclusions keep them dense.
    pub dense: Option<bool>,
}

/// How to prune and share without data.
#[derive(Debug, Clone)]
pub struct CompressOptions {
    /// Per-layer pruning percentile in [0, 100) (ignored when `std_s` is set); with `global`, the
    /// percentile of all compressed weights together.
    pub q: f64,
    /// Han's rule: prune |w| < s·std (per layer).
    pub std_s: Option<f64>,
    /// One magnitude threshold over every compressed tensor (the `q`-th percentile of all their
    /// |w| together) instead of one per tensor.
    pub global: bool,
    /// Bits of fc (rank-2) weights.
    pub fc_bits: u8,
    /// Bits of conv (rank-4) weights.
    pub conv_bits: u8,
    /// Centroid initialization.
    pub init: deepcomp_quant::Init,
    /// Relative-index field width; `None` picks the smallest per layer.
    pub index_bits: Option<u8>,
    /// Model name stored in the header.
    pub model_name: String,
    /// Keep the input layer (rank-4 weights reading at most 4 channels, rank-2 weights of the
    /// smallest input width… see [`default_dense`]) and the output layer dense.
    pub keep_first_last: bool,
    /// Tensors whose name matches one of these regular expressions are stored raw.
    pub exclude: Vec<String>,
    /// Per-tensor overrides.
    pub rules: Vec<LayerRule>,
    /// The metadata block of the file (JSON), if the architecture is known.
    pub metadata: Option<String>,
    /// Element type of every raw float tensor (`F32`, `F16` or `BF16`); `None` keeps each tensor's
    /// own type.
    pub raw_dtype: Option<Dtype>,
}

impl Default for CompressOptions {
    fn default() -> Self {
        Self {
            q: DEFAULT_Q,
            std_s: None,
            global: false,
            fc_bits: DEFAULT_BITS,
            conv_bits: DEFAULT_BITS,
            init: deepcomp_quant::Init::Linear,
            index_bits: None,
            model_name: "safetensors".into(),
            keep_first_last: true,
            exclude: Vec::new(),
            rules: Vec::new(),
            metadata: None,
            raw_dtype: None,
        }
    }
}

/// Default pruning percentile of `deepcomp compress` (per layer).
pub const DEFAULT_Q: f64 = 50.0;
/// Default quantization bits of `deepcomp compress` (fc and conv).
pub const DEFAULT_BITS: u8 = 8;

/// The settings of `deepcomp compress --config FILE` (TOML); every field optional, command-line
/// options override them.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CompressConfig {
    /// Pruning percentile.
    pub q: Option<f64>,
    /// Std rule multiplier.
    pub std: Option<f64>,
    /// Global magnitude pruning.
    pub global: Option<bool>,
    /// Bits of fc weights.
    pub fc_bits: Option<u8>,
    /// Bits of conv weights.
    pub conv_bits: Option<u8>,
    /// Centroid init: `linear`, `density`, `random`, `kmeans++`.
    pub init: Option<String>,
    /// Relative-index width.
    pub index_bits: Option<u8>,
    /// Keep the first and last layer dense (default true).
    pub keep_first_last: Option<bool>,
    /// Name patterns stored raw.
    #[serde(default)]
    pub exclude: Vec<String>,
    /// Renames applied to the input's tensor names first: `[regex, replacement]` pairs, in order.
    pub key_map: Option<Vec<[String; 2]>>,
    /// Per-tensor rules.
    #[serde(default)]
    pub layer: Vec<LayerRule>,
    /// Element type of the raw float tensors: `f32`, `f16` or `bf16` (default: each tensor's own).
    pub raw_dtype: Option<String>,
}

impl CompressConfig {
    /// Reads and parses a config file; errors name the file and the field.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| DriverError::io(path, e))?;
        toml::from_str(&text)
            .map_err(|e| DriverError::msg(format!("config {}: {e}", path.display())))
    }
}

/// A tensor read from a safetensors file.
#[derive(Debug, Clone)]
pub struct NamedTensor {
    /// Name.
    pub name: String,
    /// Shape.
    pub shape: Vec<usize>,
    /// Values (f32; f64/f16/bf16 files are converted).
    pub data: Vec<f32>,
}

/// A floating-point tensor of the input.
#[derive(Debug, Clone)]
pub struct FloatTensor {
    /// Name, shape and values as `f32` (exact, except for `F64` inputs).
    pub tensor: NamedTensor,
    /// The element type in the input.
    pub dtype: Dtype,
    /// The input's bytes (what a tensor stored raw keeps).
    pub bytes: Vec<u8>,
}

/// Every tensor of a safetensors file, in file order (sorted by name): the floating-point ones as
/// `f32` values with their original type, the others as their bytes.
#[derive(Debug, Clone, Default)]
pub struct InputModel {
    /// Float tensors (`F32`, `F16`, `BF16`, `F64`).
    pub floats: Vec<FloatTensor>,
    /// Every other tensor (integers, booleans, 8-bit floats), bytes as they are.
    pub other: Vec<TypedTensor>,
    /// Size of the input file in bytes.
    pub file_bytes: u64,
}

impl InputModel {
    /// Renames every tensor by `(regex, replacement)` pairs (the recipe's `train.key_map` rules).
    pub fn apply_key_map(&mut self, map: &[[String; 2]]) -> Result<()> {
        if map.is_empty() {
            return Ok(());
        }
        let names: Vec<String> = self
            .floats
            .iter()
            .map(|f| f.tensor.name.clone())
            .chain(self.other.iter().map(|t| t.name.clone()))
            .collect();
        let new = crate::pipeline::apply_key_map(&names, map)?;
        let mut it = new.into_iter();
        for f in &mut self.floats {
            f.tensor.name = it.next().unwrap_or_default();
        }
        for t in &mut self.other {
            t.name = it.next().unwrap_or_default();
        }
        Ok(())
    }

    /// The float tensors as `f32` (the model's view; integer buffers left out).
    pub fn f32_tensors(&self) -> Vec<NamedTensor> {
        self.floats.iter().map(|f| f.tensor.clone()).collect()
    }
}

fn dtype_of(d: StDtype) -> Option<Dtype> {
    Some(match d {
        StDtype::F32 => Dtype::F32,
        StDtype::F16 => Dtype::F16,
        StDtype::BF16 => Dtype::BF16,
        StDtype::F64 => Dtype::F64,
        StDtype::I64 => Dtype::I64,
        StDtype::I32 => Dtype::I32,
        StDtype::I16 => Dtype::I16,
        StDtype::I8 => Dtype::I8,
        StDtype::U8 => Dtype::U8,
        StDtype::BOOL => Dtype::Bool,
        StDtype::U16 => Dtype::U16,
        StDtype::U32 => Dtype::U32,
        StDtype::U64 => Dtype::U64,
        StDtype::F8_E4M3 => Dtype::F8E4M3,
        StDtype::F8_E5M2 => Dtype::F8E5M2,
        _ => return None,
    })
}

fn st_dtype(d: Dtype) -> StDtype {
    match d {
        Dtype::F32 => StDtype::F32,
        Dtype::F16 => StDtype::F16,
        Dtype::BF16 => StDtype::BF16,
        Dtype::F64 => StDtype::F64,
        Dtype::I64 => StDtype::I64,
        Dtype::I32 => StDtype::I32,
        Dtype::I16 => StDtype::I16,
        Dtype::I8 => StDtype::I8,
        Dtype::U8 => StDtype::U8,
        Dtype::Bool => StDtype::BOOL,
        Dtype::U16 => StDtype::U16,
        Dtype::U32 => StDtype::U32,
        Dtype::U64 => StDtype::U64,
        Dtype::F8E4M3 => StDtype::F8_E4M3,
        Dtype::F8E5M2 => StDtype::F8_E5M2,
    }
}

/// `f32` values of little-endian float bytes of type `d` (`F32`, `F16`, `BF16`, `F64`).
pub fn floats_from_bytes(d: Dtype, raw: &[u8]) -> Vec<f32> {
    match d {
        Dtype::F64 => raw
            .chunks_exact(8)
            .map(|c| f64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]) as f32)
            .collect(),
        Dtype::F16 => raw
            .chunks_exact(2)
            .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        Dtype::BF16 => raw
            .chunks_exact(2)
            .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        _ => raw
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
    }
}

/// Little-endian bytes of `values` converted to type `d` (`F16` / `BF16` round to nearest even).
pub fn floats_to_bytes(d: Dtype, values: &[f32]) -> Vec<u8> {
    match d {
        Dtype::F64 => values
            .iter()
            .flat_map(|&v| f64::from(v).to_le_bytes())
            .collect(),
        Dtype::F16 => values
            .iter()
            .flat_map(|&v| half::f16::from_f32(v).to_le_bytes())
            .collect(),
        Dtype::BF16 => values
            .iter()
            .flat_map(|&v| half::bf16::from_f32(v).to_le_bytes())
            .collect(),
        _ => values.iter().flat_map(|v| v.to_le_bytes()).collect(),
    }
}

/// Reads every tensor of a safetensors file, in file order (sorted by name).
pub fn read_input(path: &Path) -> Result<InputModel> {
    let bytes = std::fs::read(path).map_err(|e| DriverError::io(path, e))?;
    let st = SafeTensors::deserialize(&bytes).map_err(|e| {
        DriverError::msg(format!("{}: not a safetensors file: {e}", path.display()))
    })?;
    let mut names: Vec<String> = st.names().into_iter().map(|s| s.to_string()).collect();
    names.sort();
    let mut out = InputModel {
        file_bytes: bytes.len() as u64,
        ..Default::default()
    };
    for name in names {
        let view = st
            .tensor(&name)
            .map_err(|e| DriverError::msg(format!("{}: tensor `{name}`: {e}", path.display())))?;
        let dtype = dtype_of(view.dtype()).ok_or_else(|| {
            DriverError::msg(format!(
                "{}: tensor `{name}`: element type {:?} is not supported",
                path.display(),
                view.dtype()
            ))
        })?;
        if dtype.is_float() {
            out.floats.push(FloatTensor {
                tensor: NamedTensor {
                    name,
                    shape: view.shape().to_vec(),
                    data: floats_from_bytes(dtype, view.data()),
                },
                dtype,
                bytes: view.data().to_vec(),
            });
        } else {
            out.other.push(TypedTensor {
                name,
                dtype,
                shape: view.shape().to_vec(),
                data: view.data().to_vec(),
            });
        }
    }
    Ok(out)
}

/// Reads every floating-point tensor of a safetensors file as `f32`, in file order (sorted by name).
pub fn read_safetensors(path: &Path) -> Result<Vec<NamedTensor>> {
    Ok(read_input(path)?.f32_tensors())
}

/// Writes named f32 tensors to a safetensors file (atomically).
pub fn write_safetensors(path: &Path, tensors: &[NamedTensor]) -> Result<()> {
    let typed: Vec<TypedTensor> = tensors
        .iter()
        .map(|t| TypedTensor {
            name: t.name.clone(),
            dtype: Dtype::F32,
            shape: t.shape.clone(),
            data: floats_to_bytes(Dtype::F32, &t.data),
        })
        .collect();
    write_safetensors_typed(path, &typed)
}

/// Writes tensors of any element type to a safetensors file (atomically).
pub fn write_safetensors_typed(path: &Path, tensors: &[TypedTensor]) -> Result<()> {
    let mut views = Vec::new();
    for t in tensors {
        let v = TensorView::new(st_dtype(t.dtype), t.shape.clone(), &t.data)
            .map_err(|e| DriverError::msg(format!("tensor `{}`: {e}", t.name)))?;
        views.push((t.name.clone(), v));
    }
    let out = safetensors::tensor::serialize(views, None)
        .map_err(|e| DriverError::msg(format!("{}: {e}", path.display())))?;
    fsutil::write_atomic(path, &out)
}

/// The name-based decisions of one compression run, compiled.
struct Plan {
    exclude: Vec<regex::Regex>,
    rules: Vec<(regex::Regex, LayerRule)>,
}

/// What one tensor gets.
#[derive(Debug, Clone, PartialEq)]
enum Treatment {
    Raw,
    Compress {
        kind: LayerKind,
        q: Option<f64>,
        std: Option<f64>,
        bits: u8,
    },
}

fn compile(pattern: &str, what: &str) -> Result<regex::Regex> {
    regex::Regex::new(pattern).map_err(|e| {
        DriverError::msg(format!(
            "{what} `{pattern}` is not a regular expression: {e}"
        ))
    })
}

impl Plan {
    fn new(opts: &CompressOptions) -> Result<Self> {
        Ok(Self {
            exclude: opts
                .exclude
                .iter()
                .map(|p| compile(p, "--exclude"))
                .collect::<Result<_>>()?,
            rules: opts
                .rules
                .iter()
                .map(|r| Ok((compile(&r.pattern, "layer rule")?, r.clone())))
                .collect::<Result<_>>()?,
        })
    }

    fn treatment(&self, t: &NamedTensor, default_dense: bool, opts: &CompressOptions) -> Treatment {
        let kind = match t.shape.len() {
            _ if t.data.is_empty() => return Treatment::Raw,
            2 => LayerKind::Fc,
            4 => LayerKind::Conv,
            _ => return Treatment::Raw,
        };
        let mut dense = default_dense || self.exclude.iter().any(|re| re.is_match(&t.name));
        let (mut q, mut std) = (None, None);
        let mut bits = if kind == LayerKind::Conv {
            opts.conv_bits
        } else {
            opts.fc_bits
        };
        for (re, r) in &self.rules {
            if !re.is_match(&t.name) {
                continue;
            }
            if let Some(d) = r.dense {
                dense = d;
            }
            if let Some(v) = r.q {
                (q, std) = (Some(v), None);
            }
            if let Some(v) = r.std {
                (q, std) = (None, Some(v));
            }
            if let Some(b) = r.bits {
                bits = b;
            }
        }
        if dense {
            Treatment::Raw
        } else {
            Treatment::Compress { kind, q, std, bits }
        }
    }
}

/// The tensors kept dense by `keep_first_last`: the input layer — rank-4 weights reading at most 4
/// channels (an image's), or, in a model without convolutions, the rank-2 weight(s) with the widest
/// input — and the output layer: the rank-2 weight(s) with the fewest outputs (a classifier's
/// `num_classes`). safetensors files carry no layer order, so these are guessed from shapes; name
/// rules (`dense = false`) undo a wrong guess.
pub fn default_dense(tensors: &[NamedTensor]) -> Vec<bool> {
    let convs_in: Vec<bool> = tensors
        .iter()
        .map(|t| t.shape.len() == 4 && t.shape[1] <= 4)
        .collect();
    let any_conv = tensors.iter().any(|t| t.shape.len() == 4);
    let fc: Vec<&NamedTensor> = tensors.iter().filter(|t| t.shape.len() == 2).collect();
    let min_out = fc.iter().map(|t| t.shape[0]).min();
    let max_in = fc.iter().map(|t| t.shape[1]).max();
    tensors
        .iter()
        .zip(convs_in)
        .map(|(t, first_conv)| {
            if first_conv {
                return true;
            }
            if t.shape.len() != 2 {
                return false;
            }
            Some(t.shape[0]) == min_out || (!any_conv && fc.len() > 1 && Some(t.shape[1]) == max_in)
        })
        .collect()
}

/// Prunes, shares and encodes every tensor of `input` into a `.dcz` file structure: float tensors
/// as sparse layers or raw tensors (`DENS` for `f32`, typed for other floats), the rest as typed raw
/// tensors, each with its original element type.
pub fn compress_model(input: &InputModel, opts: &CompressOptions) -> Result<DczFile> {
    let tensors: Vec<NamedTensor> = input.f32_tensors();
    let mut file = compress_tensors(&tensors, opts)?;
    let by_name: std::collections::HashMap<&str, &FloatTensor> = input
        .floats
        .iter()
        .map(|f| (f.tensor.name.as_str(), f))
        .collect();
    let dtype = |name: &str| by_name.get(name).map_or(Dtype::F32, |f| f.dtype);
    // Raw float tensors that were not f32 keep their type and bytes.
    let mut dense = Vec::new();
    for d in std::mem::take(&mut file.dense) {
        match dtype(&d.name) {
            Dtype::F32 => dense.push(d),
            other => {
                let data = match by_name.get(d.name.as_str()) {
                    Some(f) => f.bytes.clone(),
                    None => floats_to_bytes(other, &d.data),
                };
                file.typed.push(TypedTensor {
                    name: d.name,
                    dtype: other,
                    shape: d.shape,
                    data,
                });
            }
        }
    }
    file.dense = dense;
    if let Some(target) = opts.raw_dtype {
        convert_raw(&mut file, target)?;
    }
    file.typed.extend(input.other.iter().cloned());
    let dtypes: Vec<Dtype> = file.layers.iter().map(|l| dtype(&l.name)).collect();
    if dtypes.iter().any(|&d| d != Dtype::F32) {
        file.layer_dtypes = dtypes;
    }
    Ok(file)
}

/// The element type `--raw-dtype` / `raw_dtype` names: `f32`, `f16` or `bf16`
/// ([`crate::recipe::EncodeSection::RAW_DTYPES`]).
pub fn parse_raw_dtype(s: &str) -> Result<Dtype> {
    match s {
        "f32" => Ok(Dtype::F32),
        "f16" => Ok(Dtype::F16),
        "bf16" => Ok(Dtype::BF16),
        other => Err(DriverError::msg(format!(
            "raw dtype `{other}` is not one of {}",
            crate::recipe::EncodeSection::RAW_DTYPES.join(", ")
        ))),
    }
}

/// `values` of raw tensor `name` as the little-endian bytes of `dtype` (`F32`, `F16` or `BF16`; the
/// 16-bit types round to nearest even). A finite value the type cannot hold is an error naming the
/// tensor, never a silent infinity.
pub fn raw_bytes(name: &str, dtype: Dtype, values: &[f32]) -> Result<Vec<u8>> {
    let bytes = floats_to_bytes(dtype, values);
    let back = floats_from_bytes(dtype, &bytes);
    if let Some((v, _)) = values
        .iter()
        .zip(&back)
        .find(|(v, b)| v.is_finite() && !b.is_finite())
    {
        let type_name = match dtype {
            Dtype::F16 => "f16",
            Dtype::BF16 => "bf16",
            _ => "f32",
        };
        return Err(DriverError::msg(format!(
            "tensor `{name}`: value {v} does not fit raw_dtype {type_name} (use bf16 or f32)"
        )));
    }
    Ok(bytes)
}

/// Stores every raw float tensor of `file` (`F32`, `F16`, `BF16`, `F64`) as `target`: `F32` in `DENS`
/// sections, a 16-bit type in typed sections (round to nearest even). A finite value the type cannot
/// hold is an error naming the tensor, never a silent infinity. Other tensors are left as they are.
fn convert_raw(file: &mut DczFile, target: Dtype) -> Result<()> {
    let convertible = |d: Dtype| matches!(d, Dtype::F32 | Dtype::F16 | Dtype::BF16 | Dtype::F64);
    let mut raw: Vec<(String, Vec<usize>, Vec<f32>)> = std::mem::take(&mut file.dense)
        .into_iter()
        .map(|d| (d.name, d.shape, d.data))
        .collect();
    let mut kept = Vec::new();
    for t in std::mem::take(&mut file.typed) {
        if convertible(t.dtype) {
            let values = floats_from_bytes(t.dtype, &t.data);
            raw.push((t.name, t.shape, values));
        } else {
            kept.push(t);
        }
    }
    file.typed = kept;
    for (name, shape, data) in raw {
        if target == Dtype::F32 {
            file.dense.push(DenseTensor { name, shape, data });
            continue;
        }
        let bytes = raw_bytes(&name, target, &data)?;
        file.typed.push(TypedTensor {
            name,
            dtype: target,
            shape,
            data: bytes,
        });
    }
    Ok(())
}

/// Prunes, shares and encodes `f32` tensors into a `.dcz` file structure (raw tensors as `DENS`).
pub fn compress_tensors(tensors: &[NamedTensor], opts: &CompressOptions) -> Result<DczFile> {
    let check_q = |q: f64, what: &str| {
        if (0.0..100.0).contains(&q) {
            Ok(())
        } else {
            Err(DriverError::msg(format!("{what} {q} is outside [0, 100)")))
        }
    };
    check_q(opts.q, "--q")?;
    for r in &opts.rules {
        if let Some(q) = r.q {
            check_q(q, &format!("layer rule `{}`: q", r.pattern))?;
        }
        if let Some(b) = r.bits {
            if !(1..=16).contains(&b) {
                return Err(DriverError::msg(format!(
                    "layer rule `{}`: bits {b} outside 1..=16",
                    r.pattern
                )));
            }
        }
    }
    // Every tensor, raw ones included, before anything is pruned or written: a NaN would make the
    // written file differ from itself on read-back, and an infinity has no place in a codebook.
    for t in tensors {
        if let Some((i, v)) = t.data.iter().enumerate().find(|(_, v)| !v.is_finite()) {
            return Err(DriverError::msg(format!(
                "tensor `{}`: element {i} is {v}; compress needs finite values",
                t.name
            )));
        }
    }
    let plan = Plan::new(opts)?;
    let defaults = if opts.keep_first_last {
        default_dense(tensors)
    } else {
        vec![false; tensors.len()]
    };
    let treatments: Vec<Treatment> = tensors
        .iter()
        .zip(defaults)
        .map(|(t, d)| plan.treatment(t, d, opts))
        .collect();
    // Global pruning: one threshold over the tensors that take it (no per-tensor q or std).
    let global_threshold = if opts.global && opts.std_s.is_none() && opts.q > 0.0 {
        let all: Vec<f32> = tensors
            .iter()
            .zip(&treatments)
            .filter(|(_, tr)| {
                matches!(
                    tr,
                    Treatment::Compress {
                        q: None,
                        std: None,
                        ..
                    }
                )
            })
            .flat_map(|(t, _)| t.data.iter().map(|v| v.abs()))
            .collect();
        if all.is_empty() {
            None
        } else {
            Some(
                deepcomp_sparsity::numpy_percentile(&all, opts.q)
                    .map_err(|e| DriverError::msg(format!("global pruning percentile: {e}")))?,
            )
        }
    } else {
        None
    };
    let mut layers = Vec::new();
    let mut dense = Vec::new();
    for (t, tr) in tensors.iter().zip(treatments) {
        let Treatment::Compress { kind, q, std, bits } = tr else {
            dense.push(DenseTensor {
                name: t.name.clone(),
                shape: t.shape.clone(),
                data: t.data.clone(),
            });
            continue;
        };
        let std = match (q, std) {
            (None, None) => opts.std_s,
            (_, s) => s,
        };
        let threshold = match (std, q, global_threshold) {
            (Some(s), _, _) => {
                if s.is_nan() || s < 0.0 {
                    return Err(DriverError::msg(format!(
                        "tensor `{}`: std multiplier {s} must be ≥ 0",
                        t.name
                    )));
                }
                s as f32 * deepcomp_sparsity::torch_std(&t.data).unwrap_or(0.0)
            }
            (None, None, Some(g)) => g,
            (None, q, _) => {
                let q = q.unwrap_or(opts.q);
                if q == 0.0 {
                    0.0
                } else {
                    let abs: Vec<f32> = t.data.iter().map(|v| v.abs()).collect();
                    deepcomp_sparsity::numpy_percentile(&abs, q).map_err(|e| {
                        DriverError::msg(format!("tensor `{}`: pruning percentile: {e}", t.name))
                    })?
                }
            }
        };
        let keep: Vec<bool> = t
            .data
            .iter()
            .map(|v| v.abs() >= threshold && *v != 0.0)
            .collect();
        let shared = deepcomp_quant::share_weights(&t.data, Some(&keep), bits, opts.init)?;
        layers.push(crate::pipeline::sparse_layer(
            &t.name,
            kind,
            &t.shape,
            &shared,
            opts.index_bits,
        )?);
    }
    let mut hasher = Sha256::new();
    hasher.update(format!("{opts:?}").as_bytes());
    Ok(DczFile {
        model: opts.model_name.clone(),
        recipe_hash: hasher.finalize().into(),
        layers,
        dense,
        metadata: opts.metadata.clone(),
        ..Default::default()
    })
}

/// The decoded tensors of a `.dcz` file with their original element types: layers (converted from
/// the decoded `f32` to the recorded type), raw `f32` tensors, then typed raw tensors as stored.
pub fn decoded_typed(file: &DczFile) -> Vec<TypedTensor> {
    let mut out: Vec<TypedTensor> = file
        .layers
        .iter()
        .enumerate()
        .map(|(i, l)| {
            let dtype = file.layer_dtypes.get(i).copied().unwrap_or(Dtype::F32);
            TypedTensor {
                name: l.name.clone(),
                dtype,
                shape: l.shape.clone(),
                data: floats_to_bytes(dtype, &l.to_dense()),
            }
        })
        .collect();
    out.extend(file.dense.iter().map(|d| TypedTensor {
        name: d.name.clone(),
        dtype: Dtype::F32,
        shape: d.shape.clone(),
        data: floats_to_bytes(Dtype::F32, &d.data),
    }));
    out.extend(file.typed.iter().cloned());
    out
}

/// The decoded float tensors of a `.dcz` file as `f32`, layers first then raw tensors.
pub fn decoded_tensors(file: &DczFile) -> Vec<NamedTensor> {
    let mut out: Vec<NamedTensor> = file
        .layers
        .iter()
        .enumerate()
        .map(|(i, l)| NamedTensor {
            name: l.name.clone(),
            shape: l.shape.clone(),
            data: file.layer_values(i),
        })
        .collect();
    out.extend(file.dense.iter().map(|d| NamedTensor {
        name: d.name.clone(),
        shape: d.shape.clone(),
        data: d.data.clone(),
    }));
    // Raw float tensors of other types, as f32 (integer buffers have no f32 view: left out).
    out.extend(
        file.typed
            .iter()
            .filter(|t| t.dtype.is_float())
            .map(|t| NamedTensor {
                name: t.name.clone(),
                shape: t.shape.clone(),
                data: floats_from_bytes(t.dtype, &t.data),
            }),
    );
    out
}

/// Parses a `--layer` rule: `PATTERN:key=value,…` with keys `q`, `std`, `bits` and the flags `dense`
/// / `compress` (the pattern is everything before the last `:`).
pub fn parse_layer_rule(spec: &str) -> Result<LayerRule> {
    let bad = |why: String| DriverError::msg(format!("--layer `{spec}`: {why}"));
    let (pattern, settings) = spec
        .rsplit_once(':')
        .ok_or_else(|| bad("expected PATTERN:key=value,… (e.g. '^fc3\\.:bits=8,q=30')".into()))?;
    let mut rule = LayerRule {
        pattern: pattern.to_string(),
        ..Default::default()
    };
    for item in settings.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        match item.split_once('=') {
            None if item == "dense" => rule.dense = Some(true),
            None if item == "compress" => rule.dense = Some(false),
            Some((k, v)) => {
                let num = |v: &str| {
                    v.parse::<f64>()
                        .map_err(|_| bad(format!("`{k}` needs a number, got `{v}`")))
                };
                match k.trim() {
                    "q" => rule.q = Some(num(v)?),
                    "std" => rule.std = Some(num(v)?),
                    "bits" => {
                        rule.bits = Some(
                            v.trim()
                                .parse()
                                .map_err(|_| bad(format!("`bits` needs 1..=16, got `{v}`")))?,
                        )
                    }
                    other => return Err(bad(format!("unknown key `{other}` (q, std, bits)"))),
                }
            }
            None => return Err(bad(format!("unknown flag `{item}` (dense, compress)"))),
        }
    }
    Ok(rule)
}

/// The model's parameters from named `f32` tensors, as candle tensors (integer buffers and
/// `num_batches_tracked` are not parameters).
fn candle_tensors(tensors: &[NamedTensor]) -> Result<Vec<(String, candle_core::Tensor)>> {
    tensors
        .iter()
        .map(|t| {
            Ok((
                t.name.clone(),
                candle_core::Tensor::from_vec(
                    t.data.clone(),
                    t.shape.as_slice(),
                    &candle_core::Device::Cpu,
                )?,
            ))
        })
        .collect()
}

/// Top-1 and top-5 of the input tensors (`before`) and of the compressed file (`after`, decoded) on
/// the test split of `recipe`'s dataset, loaded once.
pub fn evaluate_before_after(
    recipe: &crate::recipe::Recipe,
    data_path: Option<&Path>,
    input: &Path,
    before: &[NamedTensor],
    after: &DczFile,
) -> Result<((f64, f64), (f64, f64))> {
    let data = crate::pipeline::load_data(
        recipe,
        data_path,
        false,
        deepcomp_datasets::Splits::TestOnly,
    )?;
    let device = candle_core::Device::Cpu;
    let mut out = Vec::new();
    for tensors in [before.to_vec(), decoded_tensors(after)] {
        let model = crate::pipeline::build_model(recipe, &device)?;
        deepcomp_models::io::assign_tensors(model.as_ref(), &candle_tensors(&tensors)?, input)?;
        out.push(crate::pipeline::eval_on_test(
            recipe,
            model.as_ref(),
            data.clone(),
        )?);
    }
    Ok((out[0], out[1]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tensors() -> Vec<NamedTensor> {
        let w: Vec<f32> = (0..600).map(|i| ((i as f32) * 0.731).sin() * 0.1).collect();
        let c: Vec<f32> = (0..2 * 3 * 3 * 3)
            .map(|i| ((i as f32) * 1.3).cos() * 0.2)
            .collect();
        vec![
            NamedTensor {
                name: "fc.weight".into(),
                shape: vec![20, 30],
                data: w,
            },
            NamedTensor {
                name: "fc.bias".into(),
                shape: vec![20],
                data: (0..20).map(|i| i as f32 * 0.01).collect(),
            },
            NamedTensor {
                name: "conv.weight".into(),
                shape: vec![2, 3, 3, 3],
                data: c,
            },
        ]
    }

    #[test]
    fn compress_decompress_round_trip_through_files() {
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("in.safetensors");
        write_safetensors(&input, &tensors()).unwrap();
        let read = read_safetensors(&input).unwrap();
        assert_eq!(read.len(), 3);
        let opts = CompressOptions {
            q: 75.0,
            fc_bits: 5,
            keep_first_last: false,
            ..Default::default()
        };
        let file = compress_tensors(&read, &opts).unwrap();
        assert_eq!(file.layers.len(), 2);
        let fc = file.layers.iter().find(|l| l.name == "fc.weight").unwrap();
        assert_eq!(
            fc.positions.len(),
            150,
            "75th percentile keeps a quarter of 600"
        );
        assert!(fc.codebook.len() <= 32);
        let dcz = dir.path().join("m.dcz");
        file.write_atomic(&dcz).unwrap();
        let back = DczFile::read(&dcz).unwrap();
        let out = dir.path().join("out.safetensors");
        write_safetensors(&out, &decoded_tensors(&back)).unwrap();
        let dec = read_safetensors(&out).unwrap();
        let bias = dec.iter().find(|t| t.name == "fc.bias").unwrap();
        assert_eq!(bias.data, tensors()[1].data, "raw tensors are exact");
        let w = dec.iter().find(|t| t.name == "fc.weight").unwrap();
        assert_eq!(w.data.iter().filter(|v| **v != 0.0).count(), 150);
        let orig = &tensors()[0].data;
        let max_err = w
            .data
            .iter()
            .zip(orig)
            .filter(|(d, _)| **d != 0.0)
            .map(|(d, o)| (d - o).abs())
            .fold(0.0f32, f32::max);
        assert!(max_err < 0.2 / 31.0, "5-bit sharing error {max_err}");
    }

    #[test]
    fn not_a_safetensors_file_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("junk.safetensors");
        std::fs::write(&p, b"hello world").unwrap();
        let e = read_safetensors(&p).unwrap_err().to_string();
        assert!(
            e.contains("junk.safetensors") && e.contains("not a safetensors"),
            "{e}"
        );
    }

    #[test]
    fn nan_weights_are_rejected_with_the_tensor_name() {
        let mut t = tensors();
        t[0].data[7] = f32::NAN;
        let e = compress_tensors(&t, &CompressOptions::default())
            .unwrap_err()
            .to_string();
        assert!(e.contains("fc.weight") && e.contains("element 7"), "{e}");
        assert!(e.contains("NaN"), "{e}");
    }

    #[test]
    fn non_finite_values_in_any_tensor_are_rejected_before_writing() {
        // A raw (rank-1) tensor too: its NaN used to reach the file and fail the read-back check.
        for (i, v) in [
            (1usize, f32::NAN),
            (1, f32::INFINITY),
            (0, f32::NEG_INFINITY),
        ] {
            let mut t = tensors();
            t[i].data[3] = v;
            let e = compress_tensors(&t, &CompressOptions::default())
                .unwrap_err()
                .to_string();
            let name = &t[i].name;
            assert!(
                e.contains(name.as_str()) && e.contains("element 3") && e.contains("finite"),
                "{e}"
            );
        }
    }

    #[test]
    fn empty_weight_tensors_are_stored_raw() {
        let mut t = tensors();
        t.push(NamedTensor {
            name: "empty.weight".into(),
            shape: vec![0, 5],
            data: vec![],
        });
        t.push(NamedTensor {
            name: "empty.conv".into(),
            shape: vec![4, 0, 3, 3],
            data: vec![],
        });
        let opts = CompressOptions {
            keep_first_last: false,
            ..Default::default()
        };
        let file = compress_tensors(&t, &opts).unwrap();
        assert_eq!(file.layers.len(), 2);
        let e = file
            .dense
            .iter()
            .find(|d| d.name == "empty.weight")
            .unwrap();
        assert_eq!((e.shape.as_slice(), e.data.len()), (&[0usize, 5][..], 0));
        assert!(file.dense.iter().any(|d| d.name == "empty.conv"));
        let back = DczFile::from_bytes(&file.to_bytes().unwrap()).unwrap();
        assert_eq!(back, file);
    }

    #[test]
    fn f16_conversion_matches_known_values() {
        let f16 = |h: u16| floats_from_bytes(Dtype::F16, &h.to_le_bytes())[0];
        assert_eq!(f16(0x3c00), 1.0);
        assert_eq!(f16(0xc000), -2.0);
        assert_eq!(f16(0x0000), 0.0);
        assert_eq!(f16(0x7bff), 65504.0);
        assert_eq!(f16(0x0001), 2f32.powi(-24));
        let bf = floats_from_bytes(Dtype::BF16, &0x3f80u16.to_le_bytes())[0];
        assert_eq!(bf, 1.0);
        assert_eq!(floats_to_bytes(Dtype::F16, &[1.0]), vec![0x00, 0x3c]);
    }

    /// A safetensors file with an f16 conv weight, an f16 fc weight (and bias), a BatchNorm with an
    /// int64 `num_batches_tracked`, and a bf16 vector.
    fn mixed_file(path: &Path) -> Vec<TypedTensor> {
        let f16 = |n: usize, scale: f32| -> Vec<u8> {
            let v: Vec<f32> = (0..n).map(|i| ((i as f32) * 0.377).sin() * scale).collect();
            floats_to_bytes(Dtype::F16, &v)
        };
        let t = |name: &str, dtype, shape: Vec<usize>, data| TypedTensor {
            name: name.into(),
            dtype,
            shape,
            data,
        };
        let tensors = vec![
            t("conv.weight", Dtype::F16, vec![8, 3, 3, 3], f16(216, 0.3)),
            t(
                "block.weight",
                Dtype::F16,
                vec![16, 8, 3, 3],
                f16(1152, 0.2),
            ),
            t("fc.weight", Dtype::F16, vec![10, 64], f16(640, 0.1)),
            t("fc.bias", Dtype::F16, vec![10], f16(10, 0.01)),
            t(
                "bn.num_batches_tracked",
                Dtype::I64,
                vec![],
                123_456_789i64.to_le_bytes().to_vec(),
            ),
            t(
                "bn.running_var",
                Dtype::BF16,
                vec![4],
                floats_to_bytes(Dtype::BF16, &[1.0, 0.5, 2.0, 0.25]),
            ),
            t(
                "ids",
                Dtype::I32,
                vec![3],
                [7i32, -1, 9].iter().flat_map(|v| v.to_le_bytes()).collect(),
            ),
        ];
        write_safetensors_typed(path, &tensors).unwrap();
        tensors
    }

    #[test]
    fn f16_and_int64_models_round_trip_with_their_dtypes() {
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("mixed.safetensors");
        let orig = mixed_file(&input);
        let model = read_input(&input).unwrap();
        assert_eq!(model.file_bytes, std::fs::metadata(&input).unwrap().len());
        assert_eq!(model.other.len(), 2, "int64 and int32 tensors kept");
        let opts = CompressOptions {
            metadata: Some(r#"{"arch":"none"}"#.into()),
            ..Default::default()
        };
        let file = compress_model(&model, &opts).unwrap();
        // Default exclusions: the 3-channel conv and the 10-output fc stay raw (typed, f16).
        let layer_names: Vec<&str> = file.layers.iter().map(|l| l.name.as_str()).collect();
        assert_eq!(layer_names, ["block.weight"]);
        assert_eq!(file.layer_dtypes, vec![Dtype::F16]);
        let dcz = dir.path().join("m.dcz");
        file.write_atomic(&dcz).unwrap();
        let back = DczFile::read(&dcz).unwrap();
        assert_eq!(back, file);
        let out = dir.path().join("out.safetensors");
        write_safetensors_typed(&out, &decoded_typed(&back)).unwrap();
        let bytes = std::fs::read(&out).unwrap();
        let st = SafeTensors::deserialize(&bytes).unwrap();
        for t in &orig {
            let v = st.tensor(&t.name).unwrap();
            assert_eq!(dtype_of(v.dtype()), Some(t.dtype), "{}", t.name);
            assert_eq!(v.shape(), t.shape.as_slice(), "{}", t.name);
            if t.name != "block.weight" {
                assert_eq!(v.data(), t.data.as_slice(), "{} is stored as is", t.name);
            }
        }
        // The compressed f16 weight: half of it pruned, the rest within the 8-bit quantization.
        let w = floats_from_bytes(Dtype::F16, st.tensor("block.weight").unwrap().data());
        let o = floats_from_bytes(Dtype::F16, &orig[1].data);
        let kept = w.iter().filter(|v| **v != 0.0).count();
        assert!((570..=582).contains(&kept), "q = 50 keeps half: {kept}");
        let err = w
            .iter()
            .zip(&o)
            .filter(|(d, _)| **d != 0.0)
            .map(|(d, o)| (d - o).abs())
            .fold(0.0f32, f32::max);
        assert!(err < 0.4 / 255.0 + 1e-3, "8-bit sharing error {err}");
        let i64 = st.tensor("bn.num_batches_tracked").unwrap();
        assert_eq!(i64.data(), 123_456_789i64.to_le_bytes());
    }

    #[test]
    fn raw_dtype_converts_every_raw_float_tensor_and_leaves_integers() {
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("mixed.safetensors");
        let orig = mixed_file(&input);
        let model = read_input(&input).unwrap();
        let raw_floats = ["conv.weight", "fc.weight", "fc.bias", "bn.running_var"];
        for target in [Dtype::F16, Dtype::BF16, Dtype::F32] {
            let opts = CompressOptions {
                raw_dtype: Some(target),
                ..Default::default()
            };
            let file = compress_model(&model, &opts).unwrap();
            assert_eq!(file.layers.len(), 1, "block.weight is still coded");
            for name in raw_floats {
                let src = orig.iter().find(|t| t.name == name).unwrap();
                let want = floats_from_bytes(src.dtype, &src.data);
                let got = if target == Dtype::F32 {
                    let d = file.dense.iter().find(|d| d.name == name).unwrap();
                    d.data.clone()
                } else {
                    let t = file.typed.iter().find(|t| t.name == name).unwrap();
                    assert_eq!((t.dtype, &t.shape), (target, &src.shape), "{name}");
                    floats_from_bytes(target, &t.data)
                };
                // Each value is the source value rounded to the target type.
                let rounded = floats_from_bytes(target, &floats_to_bytes(target, &want));
                assert_eq!(got, rounded, "{target:?} {name}");
            }
            for name in ["bn.num_batches_tracked", "ids"] {
                let t = file.typed.iter().find(|t| t.name == name).unwrap();
                let src = orig.iter().find(|t| t.name == name).unwrap();
                assert_eq!(
                    (t.dtype, &t.data),
                    (src.dtype, &src.data),
                    "{name} untouched"
                );
            }
            let dcz = dir.path().join("m.dcz");
            file.write_atomic(&dcz).unwrap();
            assert_eq!(DczFile::read(&dcz).unwrap(), file);
        }
        // f16 cannot hold 1e6: an error naming the tensor, not an infinity in the file.
        let big = dir.path().join("big.safetensors");
        write_safetensors(
            &big,
            &[NamedTensor {
                name: "bn.running_var".into(),
                shape: vec![2],
                data: vec![1.0, 1.0e6],
            }],
        )
        .unwrap();
        let opts = CompressOptions {
            raw_dtype: Some(Dtype::F16),
            ..Default::default()
        };
        let err = compress_model(&read_input(&big).unwrap(), &opts)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("bn.running_var") && err.contains("1000000"),
            "{err}"
        );
        assert!(parse_raw_dtype("f8")
            .unwrap_err()
            .to_string()
            .contains("f8"));
    }

    #[test]
    fn rules_exclusions_and_defaults_pick_each_tensors_treatment() {
        let t = |name: &str, shape: Vec<usize>| NamedTensor {
            name: name.into(),
            data: (0..shape.iter().product::<usize>())
                .map(|i| ((i as f32) * 0.91).sin() + 0.01)
                .collect(),
            shape,
        };
        let ts = vec![
            t("conv1.weight", vec![16, 3, 3, 3]),
            t("layer1.0.conv1.weight", vec![16, 16, 3, 3]),
            t("layer3.0.conv1.weight", vec![64, 64, 3, 3]),
            t("layer3.0.bn1.weight", vec![64]),
            t("linear.weight", vec![10, 64]),
        ];
        assert_eq!(default_dense(&ts), [true, false, false, false, true]);
        let opts = CompressOptions {
            exclude: vec!["^layer1\\.".into()],
            rules: vec![
                parse_layer_rule("^layer3\\.:q=75,bits=4").unwrap(),
                parse_layer_rule("^linear\\.:compress,bits=6").unwrap(),
            ],
            ..Default::default()
        };
        let f = compress_tensors(&ts, &opts).unwrap();
        let names: Vec<&str> = f.layers.iter().map(|l| l.name.as_str()).collect();
        assert_eq!(names, ["layer3.0.conv1.weight", "linear.weight"]);
        assert_eq!((f.layers[0].bits, f.layers[0].positions.len()), (4, 9216));
        assert_eq!((f.layers[1].bits, f.layers[1].positions.len()), (6, 320));
        let raw: Vec<&str> = f.dense.iter().map(|d| d.name.as_str()).collect();
        assert_eq!(
            raw,
            [
                "conv1.weight",
                "layer1.0.conv1.weight",
                "layer3.0.bn1.weight"
            ]
        );
        // An MLP: the widest-input and the fewest-output fc layers.
        let mlp = vec![
            t("fc1.weight", vec![300, 784]),
            t("fc2.weight", vec![100, 300]),
            t("fc3.weight", vec![10, 100]),
        ];
        assert_eq!(default_dense(&mlp), [true, false, true]);
        assert!(parse_layer_rule("no-colon").is_err());
        assert!(parse_layer_rule("x:bits=abc").is_err());
        assert!(parse_layer_rule("x:speed=3").is_err());
        let e = compress_tensors(
            &ts,
            &CompressOptions {
                exclude: vec!["(".into()],
                ..Default::default()
            },
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("--exclude `(`"), "{e}");
    }

    #[test]
    fn global_pruning_uses_one_threshold_across_layers() {
        let small = NamedTensor {
            name: "a.weight".into(),
            shape: vec![20, 50],
            data: (0..1000).map(|i| 0.001 * (1.0 + (i % 7) as f32)).collect(),
        };
        let large = NamedTensor {
            name: "b.weight".into(),
            shape: vec![20, 50],
            data: (0..1000).map(|i| 1.0 + (i % 5) as f32).collect(),
        };
        let opts = CompressOptions {
            q: 50.0,
            global: true,
            keep_first_last: false,
            ..Default::default()
        };
        let f = compress_tensors(&[small.clone(), large.clone()], &opts).unwrap();
        // Half of all weights go: every small one, none of the large ones.
        assert_eq!(f.layers[0].positions.len(), 0);
        assert_eq!(f.layers[1].positions.len(), 1000);
        let per_layer = CompressOptions {
            global: false,
            ..opts
        };
        let f = compress_tensors(&[small, large], &per_layer).unwrap();
        assert!(f.layers.iter().all(|l| l.positions.len() < 1000));
    }

    #[test]
    fn config_file_parses_and_rejects_unknown_fields() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.toml");
        std::fs::write(
            &p,
            "q = 60\nconv_bits = 6\nexclude = ['^conv1\\.']\nkey_map = [['^0\\.', 'fc1.']]\n\
             [[layer]]\npattern = 'linear'\nbits = 8\ndense = false\n",
        )
        .unwrap();
        let c = CompressConfig::load(&p).unwrap();
        assert_eq!((c.q, c.conv_bits), (Some(60.0), Some(6)));
        assert_eq!(c.layer[0].bits, Some(8));
        assert_eq!(c.key_map.unwrap()[0][1], "fc1.");
        std::fs::write(&p, "qq = 1\n").unwrap();
        let e = CompressConfig::load(&p).unwrap_err().to_string();
        assert!(e.contains("c.toml") && e.contains("qq"), "{e}");
    }
}
