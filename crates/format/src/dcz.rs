//! The `.dcz` container, specified byte by byte in `docs/FORMAT.md`.
//!
//! A [`DczFile`] holds the model name, a recipe hash, one [`SparseLayer`]
//! per pruned + quantized weight tensor (codebook, kept positions as
//! Huffman-coded relative indices, Huffman-coded cluster codes) and the
//! remaining tensors (biases, BatchNorm parameters and buffers) as raw
//! [`DenseTensor`]s. [`DczFile::to_bytes`] / [`DczFile::from_bytes`] are exact
//! inverses; every section carries a CRC-32 and the whole file another, so a
//! truncated or altered file is a [`ContainerError`], never a panic or a
//! silently different model. Every length read from a file is checked
//! against the bytes that remain before anything is allocated from it, and
//! the decoded size is bounded by [`Limits`].

use std::fs;
use std::path::{Path, PathBuf};

use deepcomp_entropy::relindex::{count_fillers, decode_positions, encode_positions};
use deepcomp_entropy::{frequencies, BitReader, BitWriter, EntropyError, HuffmanCode};
use serde::Serialize;
use thiserror::Error;

use crate::v2::{Dtype, TypedTensor};

/// File magic: `\x89DCZ\r\n\x1a\n` (PNG-style: catches 7-bit and newline
/// mangling).
pub const MAGIC: [u8; 8] = [0x89, b'D', b'C', b'Z', b'\r', b'\n', 0x1A, b'\n'];
/// The format version this build writes (it reads every version in [`SUPPORTED_VERSIONS`]).
pub const VERSION: u16 = 2;
/// The format versions this build reads: 1 (no metadata, no typed tensors, every layer `F32`) and 2.
pub const SUPPORTED_VERSIONS: [u16; 2] = [1, 2];
/// Largest number of elements of one tensor the format can describe (2^34).
/// The default [`Limits`] allow far less per file: [`MAX_FILE_ELEMENTS`].
pub const MAX_ELEMENTS: u64 = 1 << 34;
/// Largest tensor rank.
pub const MAX_RANK: usize = 8;
/// Default [`Limits::max_elements`]: 2^30 elements (4 GiB of `f32`) in all
/// tensors of one file together, layers and raw tensors.
pub const MAX_FILE_ELEMENTS: u64 = 1 << 30;
/// Default [`Limits::max_implicit_zeros`]: 2^24 elements per file that lie
/// beyond the reach of their layer's index stream, whatever the file's size.
pub const MAX_IMPLICIT_ZEROS: u64 = 1 << 24;
/// Default [`Limits::implicit_zeros_per_byte`]: each byte of a file allows 256
/// more implicit zeros (1 KiB of `f32` per byte), so a large layer pruned to
/// nothing fits in a file that holds other data, while a small file still
/// cannot inflate beyond [`MAX_IMPLICIT_ZEROS`] and a few times its size.
pub const IMPLICIT_ZEROS_PER_BYTE: u64 = 256;
/// Longest tensor name, in bytes.
pub const MAX_NAME_LEN: usize = 1024;
/// The one name a tensor may not have (safetensors keeps it for its metadata).
pub const RESERVED_NAME: &str = "__metadata__";

/// Resource limits of the reader (and of the writer, which uses the defaults
/// so that it never writes a file the default reader refuses). Both are
/// checked before any tensor is materialized.
///
/// A sparse layer stores its kept positions as `b`-bit gaps; each entry of
/// the index stream (a kept weight or a filler) advances by at most
/// `2^b - 1` positions, so the stream *reaches* at most
/// `index_symbols × (2^b - 1)` elements, exactly one past its last kept
/// position. Elements after that are implicit zeros that cost no bits at
/// all; they are what a decompression bomb inflates, so their total per file
/// is bounded separately.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Most elements of all tensors of one file together.
    pub max_elements: u64,
    /// Most elements of all sparse layers of one file together that lie
    /// beyond the last kept position of their layer, plus
    /// `implicit_zeros_per_byte` for each byte of the file.
    pub max_implicit_zeros: u64,
    /// Implicit zeros allowed per byte of the file, on top of
    /// `max_implicit_zeros`.
    pub implicit_zeros_per_byte: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_elements: MAX_FILE_ELEMENTS,
            max_implicit_zeros: MAX_IMPLICIT_ZEROS,
            implicit_zeros_per_byte: IMPLICIT_ZEROS_PER_BYTE,
        }
    }
}

impl Limits {
    /// Implicit zeros a file of `file_len` bytes may hold in all.
    pub fn implicit_zeros_for(&self, file_len: u64) -> u64 {
        self.max_implicit_zeros
            .saturating_add(self.implicit_zeros_per_byte.saturating_mul(file_len))
    }
}

/// Checks the tensor-name rules of `docs/FORMAT.md`: non-empty, at most
/// [`MAX_NAME_LEN`] bytes, no control characters, not [`RESERVED_NAME`].
/// (Uniqueness is a property of a whole file: [`DczFile::check`].)
pub fn check_tensor_name(name: &str) -> Result<(), ContainerError> {
    name_problem(name).map_err(|reason| ContainerError::InvalidName {
        name: name.to_string(),
        reason,
    })
}

/// Why `name` cannot be a tensor name, if it cannot: a predicate to follow
/// `tensor name "…"`.
fn name_problem(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("is empty".into());
    }
    if name.len() > MAX_NAME_LEN {
        return Err(format!("is {} bytes, at most {MAX_NAME_LEN}", name.len()));
    }
    if let Some(c) = name.chars().find(|c| c.is_control()) {
        return Err(format!("contains the control character {c:?}"));
    }
    if name == RESERVED_NAME {
        return Err("is reserved (safetensors keeps it for metadata)".into());
    }
    Ok(())
}

/// [`name_problem`] as a whole sentence naming the tensor.
pub(crate) fn name_error(name: &str) -> Result<(), String> {
    name_problem(name).map_err(|p| format!("tensor name {name:?} {p}"))
}

const TAG_HEAD: [u8; 4] = *b"HEAD";
const TAG_LAYER: [u8; 4] = *b"LAYR";
const TAG_DENSE: [u8; 4] = *b"DENS";
const TAG_TYPED: [u8; 4] = *b"TYPD";
const TAG_END: [u8; 4] = *b"DEND";
const PREAMBLE_LEN: usize = 12;
/// tag (4) + payload length (8) before the payload, CRC (4) after.
const SECTION_OVERHEAD: usize = 16;

/// Everything that can go wrong reading or writing a `.dcz` file. Messages
/// name the section, the field and the absolute byte offset.
#[derive(Debug, Error)]
pub enum ContainerError {
    /// Reading or writing the file failed.
    #[error("I/O error on {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The first eight bytes are not the `.dcz` magic.
    #[error("not a .dcz file: magic at offset 0 is {found:02x?}, expected {MAGIC:02x?}")]
    BadMagic {
        /// The bytes found (fewer than 8 if the input is shorter).
        found: Vec<u8>,
    },
    /// The version field names a version this build cannot read.
    #[error(
        "unsupported .dcz version {found} at offset 8: this build reads versions 1 and 2 (writes {VERSION}); \
         a newer deepcomp wrote this file"
    )]
    UnsupportedVersion {
        /// Version found.
        found: u16,
    },
    /// The input ends inside a field.
    #[error("{section}: field `{field}` at byte offset {offset} needs {needed} byte(s) but only {available} remain")]
    Truncated {
        /// Section description.
        section: String,
        /// Field name.
        field: &'static str,
        /// Absolute byte offset of the field.
        offset: u64,
        /// Bytes the field needs.
        needed: u64,
        /// Bytes left in the input (or section).
        available: u64,
    },
    /// A stored CRC-32 does not match the bytes it covers.
    #[error("{section}: CRC-32 mismatch for the bytes at offset {offset}..{end}: stored {stored:#010x}, computed {computed:#010x}")]
    Checksum {
        /// Section description.
        section: String,
        /// First covered byte.
        offset: u64,
        /// One past the last covered byte.
        end: u64,
        /// Stored checksum.
        stored: u32,
        /// Checksum of the bytes as read.
        computed: u32,
    },
    /// A field holds a value the format does not allow.
    #[error("{section}: field `{field}` at byte offset {offset} is invalid: {reason}")]
    Invalid {
        /// Section description.
        section: String,
        /// Field name.
        field: &'static str,
        /// Absolute byte offset of the field.
        offset: u64,
        /// What is wrong.
        reason: String,
    },
    /// An entropy-coded field inside a layer's bit block failed to decode.
    #[error(
        "{section}: entropy-coded `{field}` in the bit block at byte offset {offset}: {source}"
    )]
    Entropy {
        /// Section description.
        section: String,
        /// Field name.
        field: &'static str,
        /// Absolute byte offset of the bit block.
        offset: u64,
        /// The decoding error (its bit offsets are relative to the block).
        #[source]
        source: EntropyError,
    },
    /// A layer handed to the writer (or built by hand) is inconsistent.
    #[error("layer `{layer}`: {reason}")]
    InvalidLayer {
        /// Layer name.
        layer: String,
        /// What is wrong.
        reason: String,
    },
    /// A dense tensor handed to the writer is inconsistent.
    #[error("dense tensor `{name}`: {reason}")]
    InvalidDense {
        /// Tensor name.
        name: String,
        /// What is wrong.
        reason: String,
    },
    /// A tensor name handed to the writer is invalid or used twice.
    #[error("tensor name {name:?} {reason}")]
    InvalidName {
        /// The name (escaped when printed).
        name: String,
        /// What is wrong.
        reason: String,
    },
    /// The file describes more data than the [`Limits`] allow.
    #[error("{section}: {reason}")]
    Limit {
        /// Section description (names the tensor).
        section: String,
        /// What exceeds which limit.
        reason: String,
    },
    /// An output path exists and is not a regular file.
    #[error("{path}: refusing to write: it is {what}, not a regular file")]
    NotRegularFile {
        /// The output path.
        path: PathBuf,
        /// What it is (e.g. `a named pipe (FIFO)`).
        what: String,
    },
    /// A file-level field handed to the writer is out of range.
    #[error("file header: {reason}")]
    InvalidHeader {
        /// What is wrong.
        reason: String,
    },
}

/// What kind of layer a sparse weight tensor belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum LayerKind {
    /// Convolution weight (stored as kind byte 0).
    Conv,
    /// Fully connected weight (stored as kind byte 1).
    Fc,
}

impl LayerKind {
    fn to_byte(self) -> u8 {
        match self {
            LayerKind::Conv => 0,
            LayerKind::Fc => 1,
        }
    }
    fn from_byte(b: u8) -> Option<Self> {
        match b {
            0 => Some(LayerKind::Conv),
            1 => Some(LayerKind::Fc),
            _ => None,
        }
    }
}

/// One pruned and weight-shared tensor.
///
/// The dense tensor has `shape.iter().product()` elements; element
/// `positions[i]` (flat, row-major) holds `codebook[codes[i]]`, every other
/// element is `0.0`.
#[derive(Debug, Clone, PartialEq)]
pub struct SparseLayer {
    /// Tensor name (e.g. `features.0.weight`).
    pub name: String,
    /// Layer kind.
    pub kind: LayerKind,
    /// Tensor shape, 1 to 8 dimensions.
    pub shape: Vec<usize>,
    /// Quantization bits, `1..=16`: the codebook has at most `2^bits` entries.
    pub bits: u8,
    /// Relative-index field width `b`, `2..=16`.
    pub index_bits: u8,
    /// Shared weight values (stored bit-exactly).
    pub codebook: Vec<f32>,
    /// Sorted unique flat indices of kept weights.
    pub positions: Vec<u64>,
    /// Codebook index of each kept weight, one per position.
    pub codes: Vec<u32>,
}

/// A tensor stored as raw `f32` values (biases, BatchNorm parameters and
/// running statistics).
#[derive(Debug, Clone, PartialEq)]
pub struct DenseTensor {
    /// Tensor name.
    pub name: String,
    /// Shape, 0 to 8 dimensions (0 = scalar).
    pub shape: Vec<usize>,
    /// Row-major values, `shape.iter().product()` of them.
    pub data: Vec<f32>,
}

/// A whole compressed model.
///
/// `typed`, `layer_dtypes` and `metadata` are version 2 (empty / `None` in a version-1 file); build
/// a file with `..Default::default()` to leave them out.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct DczFile {
    /// Model name (e.g. `lenet-300-100`).
    pub model: String,
    /// SHA-256 of the recipe that produced the file.
    pub recipe_hash: [u8; 32],
    /// Pruned + quantized weight tensors, in file order.
    pub layers: Vec<SparseLayer>,
    /// Raw tensors, in file order.
    pub dense: Vec<DenseTensor>,
    /// Per-channel scales of some sparse layers (`CHSC` sections; see [`crate::channel`]).
    pub channel_scales: Vec<crate::channel::ChannelScales>,
    /// Raw tensors of any element type as their bytes (`TYPD` sections, after the `DENS` ones):
    /// integer buffers, and float tensors that were not `f32`.
    pub typed: Vec<TypedTensor>,
    /// Element type each layer had before compression, one per layer in order (the decoded `f32`
    /// values convert to it); empty when every layer was `F32` (a file read back gives an empty
    /// vector then).
    pub layer_dtypes: Vec<Dtype>,
    /// The metadata block: a JSON object of at most [`crate::MAX_METADATA_LEN`] bytes describing the
    /// model (see [`crate::ModelMeta`]), or `None`.
    pub metadata: Option<String>,
}

/// Size figures of one layer, as stored and under the paper's simpler
/// storage schemes.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LayerStats {
    /// Layer name.
    pub name: String,
    /// Elements of the dense tensor.
    pub params: u64,
    /// Kept weights.
    pub nonzero: u64,
    /// Quantization bits.
    pub bits: u8,
    /// Relative-index field width b.
    pub index_bits: u8,
    /// Codebook entries.
    pub codebook_len: u64,
    /// Relative-index entries, fillers included.
    pub index_symbols: u64,
    /// Huffman-coded cluster-code bits per kept weight (Σ freq·len / Σ freq).
    pub huffman_avg_bits: f64,
    /// Huffman-coded index bits per kept weight, fillers included.
    pub index_avg_bits: f64,
    /// Bytes of this layer's section in the file (tag, length, payload, CRC).
    pub bytes: u64,
    /// Pruning only: `nonzero × 4` bytes of f32 plus fixed b-bit index
    /// fields (fillers included), rounded up to whole bytes.
    pub p_bytes: u64,
    /// Pruning + quantization: `nonzero × bits` plus fixed b-bit index
    /// fields, rounded up to whole bytes, plus the f32 codebook.
    pub pq_bytes: u64,
}

fn layer_err(layer: &SparseLayer, reason: impl Into<String>) -> ContainerError {
    ContainerError::InvalidLayer {
        layer: layer.name.clone(),
        reason: reason.into(),
    }
}

/// Product of dims as u64, `None` on overflow or above [`MAX_ELEMENTS`].
pub(crate) fn element_count(shape: &[usize]) -> Option<u64> {
    shape
        .iter()
        .try_fold(1u64, |acc, &d| acc.checked_mul(d as u64))
        .filter(|&n| n <= MAX_ELEMENTS)
}

impl SparseLayer {
    /// Number of elements of the dense tensor.
    pub fn numel(&self) -> u64 {
        element_count(&self.shape).unwrap_or(0)
    }

    /// Checks every invariant the format needs: a valid name
    /// ([`check_tensor_name`]), bit widths,
    /// rank and element count, codebook size, positions sorted, unique and
    /// inside the tensor, one code per position, codes inside the codebook.
    pub fn validate(&self) -> Result<(), ContainerError> {
        name_error(&self.name).map_err(|reason| layer_err(self, reason))?;
        if !(1..=16).contains(&self.bits) {
            return Err(layer_err(
                self,
                format!("bits = {} outside 1..=16", self.bits),
            ));
        }
        if !(2..=16).contains(&self.index_bits) {
            return Err(layer_err(
                self,
                format!("index_bits = {} outside 2..=16", self.index_bits),
            ));
        }
        if self.shape.is_empty() || self.shape.len() > MAX_RANK {
            return Err(layer_err(
                self,
                format!("rank {} outside 1..={MAX_RANK}", self.shape.len()),
            ));
        }
        let numel = element_count(&self.shape).ok_or_else(|| {
            layer_err(
                self,
                format!(
                    "shape {:?} has more than {MAX_ELEMENTS} elements",
                    self.shape
                ),
            )
        })?;
        if self.codebook.len() > 1usize << self.bits {
            return Err(layer_err(
                self,
                format!(
                    "codebook has {} entries, more than 2^{}",
                    self.codebook.len(),
                    self.bits
                ),
            ));
        }
        if self.codes.len() != self.positions.len() {
            return Err(layer_err(
                self,
                format!(
                    "{} codes for {} positions",
                    self.codes.len(),
                    self.positions.len()
                ),
            ));
        }
        for (i, w) in self.positions.windows(2).enumerate() {
            if w[1] <= w[0] {
                return Err(layer_err(
                    self,
                    format!(
                        "positions not strictly increasing at entry {}: {} then {}",
                        i + 1,
                        w[0],
                        w[1]
                    ),
                ));
            }
        }
        if let Some(&last) = self.positions.last() {
            if last >= numel {
                return Err(layer_err(
                    self,
                    format!("position {last} outside {numel} elements"),
                ));
            }
        }
        if let Some((i, &c)) = self
            .codes
            .iter()
            .enumerate()
            .find(|(_, &c)| c as usize >= self.codebook.len())
        {
            return Err(layer_err(
                self,
                format!(
                    "code {c} of entry {i} outside a codebook of {}",
                    self.codebook.len()
                ),
            ));
        }
        Ok(())
    }

    /// The dense tensor: row-major, `numel()` values, pruned weights exactly
    /// `0.0`, kept weights `codebook[code]` bit for bit.
    ///
    /// Never panics: on a layer that fails [`Self::validate`] (possible only
    /// for hand-built layers; [`DczFile::from_bytes`] validates), positions
    /// or codes out of range are skipped and an oversized shape gives an
    /// empty vector. Use [`Self::try_to_dense`] to get the error instead.
    pub fn to_dense(&self) -> Vec<f32> {
        let mut out = vec![0.0f32; self.numel() as usize];
        for (&p, &c) in self.positions.iter().zip(&self.codes) {
            if let (Some(slot), Some(&v)) = (out.get_mut(p as usize), self.codebook.get(c as usize))
            {
                *slot = v;
            }
        }
        out
    }

    /// [`Self::validate`], then [`Self::to_dense`].
    pub fn try_to_dense(&self) -> Result<Vec<f32>, ContainerError> {
        self.validate()?;
        Ok(self.to_dense())
    }
}

impl DenseTensor {
    fn validate(&self) -> Result<(), ContainerError> {
        let err = |reason: String| ContainerError::InvalidDense {
            name: self.name.clone(),
            reason,
        };
        name_error(&self.name).map_err(err)?;
        if self.shape.len() > MAX_RANK {
            return Err(err(format!("rank {} above {MAX_RANK}", self.shape.len())));
        }
        let n = element_count(&self.shape).ok_or_else(|| {
            err(format!(
                "shape {:?} has more than {MAX_ELEMENTS} elements",
                self.shape
            ))
        })?;
        if n != self.data.len() as u64 {
            return Err(err(format!(
                "shape {:?} needs {n} values, data has {}",
                self.shape,
                self.data.len()
            )));
        }
        Ok(())
    }
}

// ---------------------------------------------------------------- writing

/// One encoded layer section plus the figures `layer_stats` reports.
struct EncodedLayer {
    section: Vec<u8>,
    index_symbols: u64,
    index_stream_bits: u64,
    code_stream_bits: u64,
}

pub(crate) fn put_name(p: &mut Vec<u8>, name: &str) {
    p.extend_from_slice(&(name.len() as u16).to_le_bytes());
    p.extend_from_slice(name.as_bytes());
}

pub(crate) fn put_shape(p: &mut Vec<u8>, shape: &[usize]) {
    p.push(shape.len() as u8);
    for &d in shape {
        p.extend_from_slice(&(d as u64).to_le_bytes());
    }
}

fn section(tag: [u8; 4], payload: &[u8]) -> Vec<u8> {
    let mut s = Vec::with_capacity(payload.len() + SECTION_OVERHEAD);
    s.extend_from_slice(&tag);
    s.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    s.extend_from_slice(payload);
    let crc = crc32fast::hash(&s);
    s.extend_from_slice(&crc.to_le_bytes());
    s
}

fn encode_layer(layer: &SparseLayer) -> Result<EncodedLayer, ContainerError> {
    layer.validate()?;
    let numel = layer.numel();
    let entropy = |e: EntropyError| layer_err(layer, e.to_string());
    let symbols = encode_positions(&layer.positions, numel, layer.index_bits).map_err(entropy)?;
    let index_code =
        HuffmanCode::from_symbols(&symbols, 1usize << layer.index_bits, None).map_err(entropy)?;
    let cluster_code =
        HuffmanCode::from_symbols(&layer.codes, layer.codebook.len(), None).map_err(entropy)?;

    let mut w = BitWriter::new();
    index_code.write_lengths(&mut w);
    cluster_code.write_lengths(&mut w);
    let before = w.bit_len();
    index_code.encode_into(&symbols, &mut w).map_err(entropy)?;
    let mid = w.bit_len();
    cluster_code
        .encode_into(&layer.codes, &mut w)
        .map_err(entropy)?;
    let index_stream_bits = mid - before;
    let code_stream_bits = w.bit_len() - mid;
    let (block, bit_len) = w.finish();

    let mut p = Vec::with_capacity(block.len() + 64 + layer.codebook.len() * 4);
    put_name(&mut p, &layer.name);
    p.push(layer.kind.to_byte());
    p.push(layer.bits);
    p.push(layer.index_bits);
    put_shape(&mut p, &layer.shape);
    p.extend_from_slice(&(layer.codebook.len() as u32).to_le_bytes());
    for v in &layer.codebook {
        p.extend_from_slice(&v.to_bits().to_le_bytes());
    }
    p.extend_from_slice(&(layer.positions.len() as u64).to_le_bytes());
    p.extend_from_slice(&(symbols.len() as u64).to_le_bytes());
    p.extend_from_slice(&bit_len.to_le_bytes());
    p.extend_from_slice(&block);
    Ok(EncodedLayer {
        section: section(TAG_LAYER, &p),
        index_symbols: symbols.len() as u64,
        index_stream_bits,
        code_stream_bits,
    })
}

fn encode_dense(t: &DenseTensor) -> Result<Vec<u8>, ContainerError> {
    t.validate()?;
    let mut p = Vec::with_capacity(t.data.len() * 4 + t.name.len() + 80);
    put_name(&mut p, &t.name);
    put_shape(&mut p, &t.shape);
    for v in &t.data {
        p.extend_from_slice(&v.to_bits().to_le_bytes());
    }
    Ok(section(TAG_DENSE, &p))
}

/// What the rest of a file may still decode to, under [`Limits`].
pub(crate) struct Budget {
    limits: Limits,
    elements_left: u64,
    zeros_left: u64,
    file_len: u64,
}

impl Budget {
    /// The budget of a file of `file_len` bytes.
    fn new(limits: &Limits, file_len: u64) -> Self {
        Self {
            limits: *limits,
            elements_left: limits.max_elements,
            zeros_left: limits.implicit_zeros_for(file_len),
            file_len,
        }
    }

    /// How the implicit-zero limit of this file came about, for error texts.
    fn zeros_limit(&self) -> String {
        format!(
            "{} + {} per byte of this {}-byte file = {}",
            self.limits.max_implicit_zeros,
            self.limits.implicit_zeros_per_byte,
            self.file_len,
            self.limits.implicit_zeros_for(self.file_len)
        )
    }

    /// Takes `numel` elements of the per-file total; the error text names the limit.
    pub(crate) fn take_elements(&mut self, numel: u64) -> Result<(), String> {
        if numel > self.elements_left {
            return Err(format!(
                "{numel} elements exceed the limit of {} elements per file \
                 ({} left after the tensors before this one)",
                self.limits.max_elements, self.elements_left
            ));
        }
        self.elements_left -= numel;
        Ok(())
    }

    /// Takes the implicit zeros of a layer of `numel` elements whose index
    /// stream reaches `reach` elements.
    fn take_zeros(&mut self, numel: u64, reach: u64) -> Result<(), String> {
        let zeros = numel.saturating_sub(reach);
        if zeros > self.zeros_left {
            return Err(format!(
                "shape has {numel} elements but the index stream reaches only {reach}: \
                 {zeros} implicit zeros exceed the limit of {} \
                 ({} left after the layers before this one)",
                self.zeros_limit(),
                self.zeros_left
            ));
        }
        self.zeros_left -= zeros;
        Ok(())
    }
}

/// Elements a layer's index stream reaches: one past its last kept position.
fn reach(positions: &[u64]) -> u64 {
    positions.last().map_or(0, |&p| p + 1)
}

impl DczFile {
    /// Checks what [`Self::to_bytes`] checks beyond each tensor's own
    /// validity: every name valid and unique across layers and raw tensors,
    /// and the file, serialized to `file_len` bytes, within `limits`.
    pub fn check(&self, limits: &Limits, file_len: u64) -> Result<(), ContainerError> {
        let mut seen: std::collections::HashMap<&str, String> = Default::default();
        let names = self
            .layers
            .iter()
            .enumerate()
            .map(|(i, l)| (l.name.as_str(), format!("layer #{i}")))
            .chain(
                self.dense
                    .iter()
                    .enumerate()
                    .map(|(i, d)| (d.name.as_str(), format!("raw tensor #{i}"))),
            )
            .chain(
                self.typed
                    .iter()
                    .enumerate()
                    .map(|(i, d)| (d.name.as_str(), format!("typed tensor #{i}"))),
            );
        for (name, what) in names {
            name_problem(name).map_err(|reason| ContainerError::InvalidName {
                name: name.to_string(),
                reason: format!("({what}) {reason}"),
            })?;
            if let Some(first) = seen.get(name) {
                return Err(ContainerError::InvalidName {
                    name: name.to_string(),
                    reason: format!("is used by both {first} and {what}; names must be unique"),
                });
            }
            seen.insert(name, what);
        }
        let mut budget = Budget::new(limits, file_len);
        for l in &self.layers {
            let numel = element_count(&l.shape).unwrap_or(u64::MAX);
            let section = || format!("layer `{}`", l.name);
            budget
                .take_elements(numel)
                .and_then(|()| budget.take_zeros(numel, reach(&l.positions)))
                .map_err(|reason| ContainerError::Limit {
                    section: section(),
                    reason,
                })?;
        }
        for d in &self.dense {
            let numel = element_count(&d.shape).unwrap_or(u64::MAX);
            budget
                .take_elements(numel)
                .map_err(|reason| ContainerError::Limit {
                    section: format!("raw tensor `{}`", d.name),
                    reason,
                })?;
        }
        for t in &self.typed {
            budget
                .take_elements(element_count(&t.shape).unwrap_or(u64::MAX))
                .map_err(|reason| ContainerError::Limit {
                    section: format!("typed tensor `{}`", t.name),
                    reason,
                })?;
        }
        Ok(())
    }

    /// Serializes the file. Deterministic: equal inputs give identical bytes.
    /// Refuses invalid or duplicate names and files beyond the default
    /// [`Limits`] (see [`Self::check`]), so it never writes a file that
    /// [`Self::from_bytes`] rejects.
    pub fn to_bytes(&self) -> Result<Vec<u8>, ContainerError> {
        if self.model.len() > usize::from(u16::MAX) {
            return Err(ContainerError::InvalidHeader {
                reason: format!("model name is {} bytes, at most 65535", self.model.len()),
            });
        }
        if self.layers.len() > u32::MAX as usize
            || self.dense.len() > u32::MAX as usize
            || self.typed.len() > u32::MAX as usize
        {
            return Err(ContainerError::InvalidHeader {
                reason: "more than 2^32 - 1 layers or dense tensors".into(),
            });
        }
        for l in &self.layers {
            l.validate()?;
        }
        for t in &self.typed {
            t.validate()?;
        }
        // Names and element counts before the work; the implicit zeros, which the file's size
        // bounds, once its bytes are known.
        self.check(&Limits::default(), u64::MAX)?;
        let mut out = Vec::new();
        out.extend_from_slice(&MAGIC);
        out.extend_from_slice(&VERSION.to_le_bytes());
        out.extend_from_slice(&0u16.to_le_bytes());
        let mut head = Vec::new();
        put_name(&mut head, &self.model);
        head.extend_from_slice(&self.recipe_hash);
        head.extend_from_slice(&(self.layers.len() as u32).to_le_bytes());
        head.extend_from_slice(&(self.dense.len() as u32).to_le_bytes());
        crate::v2::encode_head_ext(
            &mut head,
            &crate::v2::HeadExt {
                typed_count: self.typed.len(),
                layer_dtypes: &self.layer_dtypes,
                layer_count: self.layers.len(),
                metadata: self.metadata.as_deref(),
            },
        )?;
        out.extend_from_slice(&section(TAG_HEAD, &head));
        for layer in &self.layers {
            out.extend_from_slice(&encode_layer(layer)?.section);
        }
        for t in &self.dense {
            out.extend_from_slice(&encode_dense(t)?);
        }
        for t in &self.typed {
            out.extend_from_slice(&section(TAG_TYPED, &crate::v2::encode_typed(t)?));
        }
        crate::channel::write_sections(self, &mut out)?;
        out.extend_from_slice(&TAG_END);
        self.check(&Limits::default(), out.len() as u64 + 4)?;
        let crc = crc32fast::hash(&out);
        out.extend_from_slice(&crc.to_le_bytes());
        Ok(out)
    }

    /// Parses and fully validates a file produced by [`Self::to_bytes`],
    /// under the default [`Limits`].
    pub fn from_bytes(b: &[u8]) -> Result<Self, ContainerError> {
        Self::from_bytes_with_limits(b, &Limits::default())
    }

    /// [`Self::from_bytes`] under the given limits (raise them to read a
    /// model larger than [`MAX_FILE_ELEMENTS`], lower them to bound memory).
    pub fn from_bytes_with_limits(b: &[u8], limits: &Limits) -> Result<Self, ContainerError> {
        if b.len() < MAGIC.len() || b[..MAGIC.len()] != MAGIC {
            return Err(ContainerError::BadMagic {
                found: b[..b.len().min(MAGIC.len())].to_vec(),
            });
        }
        let mut c = Cursor::new(b, 0, "preamble".into());
        c.skip(MAGIC.len(), "magic")?;
        let version = c.u16("version")?;
        if !SUPPORTED_VERSIONS.contains(&version) {
            return Err(ContainerError::UnsupportedVersion { found: version });
        }
        let off = c.offset();
        if c.u16("reserved")? != 0 {
            return Err(c.invalid("reserved", off, "must be 0".into()));
        }
        let mut pos = PREAMBLE_LEN;

        let (head, next) = read_section(b, pos, TAG_HEAD, "header")?;
        pos = next;
        let mut h = Cursor::new(head.payload, head.payload_offset, "header".into());
        let model = h.name("model")?;
        let mut recipe_hash = [0u8; 32];
        recipe_hash.copy_from_slice(h.bytes(32, "recipe_hash")?);
        let layer_count = h.u32("layer_count")?;
        let dense_count = h.u32("dense_count")?;
        let (typed_count, layer_dtypes, metadata) = if version >= 2 {
            crate::v2::decode_head_ext(&mut h, layer_count)?
        } else {
            (0, Vec::new(), None)
        };
        h.finish()?;

        let mut budget = Budget::new(limits, b.len() as u64);
        // Tensor name → the section that first used it.
        let mut seen: std::collections::HashMap<String, String> = Default::default();
        let mut unique = |name: &str, desc: &str, offset: u64| match seen.get(name) {
            Some(first) => Err(ContainerError::Invalid {
                section: desc.to_string(),
                field: "name",
                offset,
                reason: format!(
                    "tensor name {name:?} is already used by {first}; names must be unique"
                ),
            }),
            None => {
                seen.insert(name.to_string(), desc.to_string());
                Ok(())
            }
        };
        let mut layers = Vec::new();
        for i in 0..layer_count {
            let desc = format!("layer section #{i}");
            let (s, next) = read_section(b, pos, TAG_LAYER, &desc)?;
            pos = next;
            let layer = decode_layer(s.payload, s.payload_offset, desc.clone(), &mut budget)?;
            unique(&layer.name, &desc, s.payload_offset)?;
            layers.push(layer);
        }
        let mut dense = Vec::new();
        for i in 0..dense_count {
            let desc = format!("dense section #{i}");
            let (s, next) = read_section(b, pos, TAG_DENSE, &desc)?;
            pos = next;
            let t = decode_dense(s.payload, s.payload_offset, desc.clone(), &mut budget)?;
            unique(&t.name, &desc, s.payload_offset)?;
            dense.push(t);
        }
        let mut typed = Vec::new();
        for i in 0..typed_count {
            let desc = format!("typed section #{i}");
            let (s, next) = read_section(b, pos, TAG_TYPED, &desc)?;
            pos = next;
            let t =
                crate::v2::decode_typed(s.payload, s.payload_offset, desc.clone(), &mut budget)?;
            unique(&t.name, &desc, s.payload_offset)?;
            typed.push(t);
        }
        let (channel_scales, next) = crate::channel::read_sections(b, pos, &layers)?;
        pos = next;

        let mut t = Cursor::new(&b[pos..], pos as u64, "trailer".into());
        let off = t.offset();
        if t.bytes(4, "end tag")? != TAG_END {
            return Err(t.invalid(
                "end tag",
                off,
                "expected `DEND` after the last section".into(),
            ));
        }
        let stored = t.u32("file crc32")?;
        let computed = crc32fast::hash(&b[..pos + 4]);
        if stored != computed {
            return Err(ContainerError::Checksum {
                section: "whole file".into(),
                offset: 0,
                end: pos as u64 + 4,
                stored,
                computed,
            });
        }
        t.finish()?;
        Ok(Self {
            model,
            recipe_hash,
            layers,
            dense,
            channel_scales,
            typed,
            layer_dtypes,
            metadata,
        })
    }

    /// Writes the file atomically with [`crate::write_atomic`] (temp file in
    /// the same directory, fsync, rename; a `path` that exists and is not a
    /// regular file is refused). Returns the number of bytes written.
    pub fn write_atomic(&self, path: &Path) -> Result<u64, ContainerError> {
        let bytes = self.to_bytes()?;
        crate::write_atomic(path, &bytes)?;
        Ok(bytes.len() as u64)
    }

    /// Reads and parses a file.
    pub fn read(path: &Path) -> Result<Self, ContainerError> {
        let bytes = fs::read(path).map_err(|source| ContainerError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_bytes(&bytes)
    }
}

/// Per-layer size figures for `file` (encodes every layer once).
pub fn layer_stats(file: &DczFile) -> Result<Vec<LayerStats>, ContainerError> {
    file.layers
        .iter()
        .map(|layer| {
            let enc = encode_layer(layer)?;
            let nonzero = layer.positions.len() as u64;
            let per = |bits: u64| {
                if nonzero == 0 {
                    0.0
                } else {
                    bits as f64 / nonzero as f64
                }
            };
            let index_fixed_bits = enc.index_symbols * u64::from(layer.index_bits);
            let freqs = frequencies(&layer.codes, layer.codebook.len())
                .map_err(|e| layer_err(layer, e.to_string()))?;
            debug_assert_eq!(freqs.iter().sum::<u64>(), nonzero);
            Ok(LayerStats {
                name: layer.name.clone(),
                params: layer.numel(),
                nonzero,
                bits: layer.bits,
                index_bits: layer.index_bits,
                codebook_len: layer.codebook.len() as u64,
                index_symbols: enc.index_symbols,
                huffman_avg_bits: per(enc.code_stream_bits),
                index_avg_bits: per(enc.index_stream_bits),
                bytes: enc.section.len() as u64,
                p_bytes: nonzero * 4 + index_fixed_bits.div_ceil(8),
                pq_bytes: (nonzero * u64::from(layer.bits) + index_fixed_bits).div_ceil(8)
                    + layer.codebook.len() as u64 * 4,
            })
        })
        .collect()
}

// ---------------------------------------------------------------- reading

struct Section<'a> {
    payload: &'a [u8],
    payload_offset: u64,
}

/// Reads the section starting at `pos`: checks tag, bounds its length by the
/// input, verifies its CRC. Returns the payload and the next position.
fn read_section<'a>(
    b: &'a [u8],
    pos: usize,
    tag: [u8; 4],
    desc: &str,
) -> Result<(Section<'a>, usize), ContainerError> {
    let mut c = Cursor::new(&b[pos..], pos as u64, desc.to_string());
    let off = c.offset();
    let found = c.bytes(4, "tag")?;
    if found != tag {
        return Err(c.invalid(
            "tag",
            off,
            format!(
                "expected `{}`, found {:02x?}",
                String::from_utf8_lossy(&tag),
                found
            ),
        ));
    }
    let len_off = c.offset();
    let len = c.u64("payload length")?;
    let available = c.remaining() as u64;
    if len.saturating_add(4) > available {
        return Err(ContainerError::Truncated {
            section: desc.to_string(),
            field: "payload",
            offset: len_off + 8,
            needed: len.saturating_add(4),
            available,
        });
    }
    let len = len as usize;
    let payload_start = pos + 12;
    let crc_pos = payload_start + len;
    let mut crc_bytes = [0u8; 4];
    crc_bytes.copy_from_slice(&b[crc_pos..crc_pos + 4]);
    let stored = u32::from_le_bytes(crc_bytes);
    let computed = crc32fast::hash(&b[pos..crc_pos]);
    if stored != computed {
        return Err(ContainerError::Checksum {
            section: desc.to_string(),
            offset: pos as u64,
            end: crc_pos as u64,
            stored,
            computed,
        });
    }
    Ok((
        Section {
            payload: &b[payload_start..crc_pos],
            payload_offset: payload_start as u64,
        },
        crc_pos + 4,
    ))
}

fn decode_layer(
    payload: &[u8],
    base: u64,
    desc: String,
    budget: &mut Budget,
) -> Result<SparseLayer, ContainerError> {
    let mut c = Cursor::new(payload, base, desc);
    let name = c.tensor_name()?;
    c.section = format!("{} (layer `{name}`)", c.section);
    let off = c.offset();
    let kind_byte = c.u8("kind")?;
    let kind = LayerKind::from_byte(kind_byte).ok_or_else(|| {
        c.invalid(
            "kind",
            off,
            format!("{kind_byte} is neither 0 (conv) nor 1 (fc)"),
        )
    })?;
    let off = c.offset();
    let bits = c.u8("bits")?;
    if !(1..=16).contains(&bits) {
        return Err(c.invalid("bits", off, format!("{bits} outside 1..=16")));
    }
    let off = c.offset();
    let index_bits = c.u8("index_bits")?;
    if !(2..=16).contains(&index_bits) {
        return Err(c.invalid("index_bits", off, format!("{index_bits} outside 2..=16")));
    }
    let shape = c.shape(1)?;
    let numel = element_count(&shape).unwrap_or(0);
    budget.take_elements(numel).map_err(|r| c.limit(r))?;
    let off = c.offset();
    let k = c.u32("codebook_len")? as usize;
    if k > 1usize << bits {
        return Err(c.invalid("codebook_len", off, format!("{k} entries exceed 2^{bits}")));
    }
    let raw = c.bytes(k.saturating_mul(4), "codebook")?;
    let codebook: Vec<f32> = raw
        .chunks_exact(4)
        .map(|q| f32::from_bits(u32::from_le_bytes([q[0], q[1], q[2], q[3]])))
        .collect();
    let off_nz = c.offset();
    let nonzero = c.u64("nonzero")?;
    let off_sym = c.offset();
    let index_symbols = c.u64("index_symbols")?;
    if index_symbols < nonzero {
        return Err(c.invalid(
            "index_symbols",
            off_sym,
            format!("{index_symbols} index entries cannot hold {nonzero} kept weights"),
        ));
    }
    if nonzero > numel {
        return Err(c.invalid(
            "nonzero",
            off_nz,
            format!("{nonzero} kept weights in {numel} elements"),
        ));
    }
    // Before any decoding: the stream reaches at most index_symbols × F
    // elements, and the rest must fit the implicit-zero budget.
    let filler = (1u64 << index_bits) - 1;
    let reach_max = index_symbols.saturating_mul(filler).min(numel);
    if numel - reach_max > budget.zeros_left {
        return Err(c.limit(format!(
            "shape has {numel} elements but {index_symbols} index entries of {index_bits} bits \
             reach at most {reach_max}: {} implicit zeros exceed the limit of {} \
             ({} left after the layers before this one)",
            numel - reach_max,
            budget.zeros_limit(),
            budget.zeros_left
        )));
    }
    let off = c.offset();
    let bit_len = c.u64("bit_len")?;
    let block_off = c.offset();
    let block_len = bit_len.div_ceil(8);
    if block_len != c.remaining() as u64 {
        return Err(c.invalid(
            "bit_len",
            off,
            format!(
                "{bit_len} bits need {block_len} bytes but the payload has {} left",
                c.remaining()
            ),
        ));
    }
    let block = c.bytes(block_len as usize, "bit block")?;
    let section = c.section.clone();
    let ent = |field: &'static str| {
        let section = section.clone();
        move |source: EntropyError| ContainerError::Entropy {
            section,
            field,
            offset: block_off,
            source,
        }
    };
    let mut r = BitReader::with_bit_len(block, bit_len).map_err(ent("bit block"))?;
    let index_code = HuffmanCode::read_lengths(&mut r).map_err(ent("index code lengths"))?;
    if index_code.alphabet_size() != 1usize << index_bits {
        return Err(c.invalid(
            "index code lengths",
            block_off,
            format!(
                "alphabet {} is not 2^{index_bits}",
                index_code.alphabet_size()
            ),
        ));
    }
    let cluster_code = HuffmanCode::read_lengths(&mut r).map_err(ent("cluster code lengths"))?;
    if cluster_code.alphabet_size() != k {
        return Err(c.invalid(
            "cluster code lengths",
            block_off,
            format!(
                "alphabet {} is not the codebook length {k}",
                cluster_code.alphabet_size()
            ),
        ));
    }
    // decode_from bounds the count by the bits left before allocating.
    let n_sym = usize::try_from(index_symbols).unwrap_or(usize::MAX);
    let mut symbols = Vec::new();
    index_code
        .decode_from(&mut r, n_sym, &mut symbols)
        .map_err(ent("index stream"))?;
    let positions = decode_positions(&symbols, index_bits, numel).map_err(ent("index stream"))?;
    if positions.len() as u64 != nonzero {
        let fillers = count_fillers(&symbols, index_bits).unwrap_or(0);
        return Err(c.invalid(
            "nonzero",
            off_nz,
            format!(
                "header says {nonzero} kept weights, the index stream has {} ({fillers} fillers)",
                positions.len()
            ),
        ));
    }
    budget
        .take_zeros(numel, reach(&positions))
        .map_err(|r| c.limit(r))?;
    let mut codes = Vec::new();
    cluster_code
        .decode_from(&mut r, positions.len(), &mut codes)
        .map_err(ent("cluster code stream"))?;
    if !r.is_at_end() {
        return Err(c.invalid(
            "bit_len",
            off,
            format!(
                "{} unused bit(s) at the end of the bit block",
                r.remaining()
            ),
        ));
    }
    let pad = (block_len * 8 - bit_len) as u32;
    if pad > 0 && block.last().is_some_and(|&x| x & ((1u8 << pad) - 1) != 0) {
        return Err(c.invalid(
            "bit block",
            block_off + block_len - 1,
            "padding bits are not zero".into(),
        ));
    }
    c.finish()?;
    let layer = SparseLayer {
        name,
        kind,
        shape,
        bits,
        index_bits,
        codebook,
        positions,
        codes,
    };
    layer.validate()?;
    Ok(layer)
}

fn decode_dense(
    payload: &[u8],
    base: u64,
    desc: String,
    budget: &mut Budget,
) -> Result<DenseTensor, ContainerError> {
    let mut c = Cursor::new(payload, base, desc);
    let name = c.tensor_name()?;
    c.section = format!("{} (tensor `{name}`)", c.section);
    let shape = c.shape(0)?;
    let off = c.offset();
    let n = element_count(&shape).unwrap_or(u64::MAX);
    budget.take_elements(n).map_err(|r| c.limit(r))?;
    if n.saturating_mul(4) != c.remaining() as u64 {
        return Err(c.invalid(
            "data",
            off,
            format!(
                "shape {shape:?} needs {n} f32 values but {} bytes remain",
                c.remaining()
            ),
        ));
    }
    let raw = c.bytes(c.remaining(), "data")?;
    let data = raw
        .chunks_exact(4)
        .map(|q| f32::from_bits(u32::from_le_bytes([q[0], q[1], q[2], q[3]])))
        .collect();
    c.finish()?;
    Ok(DenseTensor { name, shape, data })
}

/// Bounds-checked little-endian reader over one section's bytes.
pub(crate) struct Cursor<'a> {
    data: &'a [u8],
    pos: usize,
    base: u64,
    pub(crate) section: String,
}

impl<'a> Cursor<'a> {
    pub(crate) fn new(data: &'a [u8], base: u64, section: String) -> Self {
        Self {
            data,
            pos: 0,
            base,
            section,
        }
    }
    pub(crate) fn offset(&self) -> u64 {
        self.base + self.pos as u64
    }
    pub(crate) fn remaining(&self) -> usize {
        self.data.len() - self.pos
    }
    pub(crate) fn invalid(
        &self,
        field: &'static str,
        offset: u64,
        reason: String,
    ) -> ContainerError {
        ContainerError::Invalid {
            section: self.section.clone(),
            field,
            offset,
            reason,
        }
    }
    pub(crate) fn bytes(
        &mut self,
        n: usize,
        field: &'static str,
    ) -> Result<&'a [u8], ContainerError> {
        if n > self.remaining() {
            return Err(ContainerError::Truncated {
                section: self.section.clone(),
                field,
                offset: self.offset(),
                needed: n as u64,
                available: self.remaining() as u64,
            });
        }
        let s = &self.data[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }
    pub(crate) fn skip(&mut self, n: usize, field: &'static str) -> Result<(), ContainerError> {
        self.bytes(n, field).map(|_| ())
    }
    pub(crate) fn u8(&mut self, field: &'static str) -> Result<u8, ContainerError> {
        Ok(self.bytes(1, field)?[0])
    }
    pub(crate) fn u16(&mut self, field: &'static str) -> Result<u16, ContainerError> {
        let b = self.bytes(2, field)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }
    pub(crate) fn u32(&mut self, field: &'static str) -> Result<u32, ContainerError> {
        let b = self.bytes(4, field)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    pub(crate) fn u64(&mut self, field: &'static str) -> Result<u64, ContainerError> {
        let b = self.bytes(8, field)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_le_bytes(a))
    }
    pub(crate) fn name(&mut self, field: &'static str) -> Result<String, ContainerError> {
        let off = self.offset();
        let n = self.u16(field)? as usize;
        let raw = self.bytes(n, field)?;
        String::from_utf8(raw.to_vec())
            .map_err(|e| self.invalid(field, off, format!("not UTF-8: {e}")))
    }
    /// A tensor name: a `name` field that follows the name rules.
    pub(crate) fn tensor_name(&mut self) -> Result<String, ContainerError> {
        let off = self.offset();
        let name = self.name("name")?;
        name_error(&name).map_err(|reason| self.invalid("name", off, reason))?;
        Ok(name)
    }
    pub(crate) fn limit(&self, reason: String) -> ContainerError {
        ContainerError::Limit {
            section: self.section.clone(),
            reason,
        }
    }
    pub(crate) fn shape(&mut self, min_rank: usize) -> Result<Vec<usize>, ContainerError> {
        let off = self.offset();
        let rank = self.u8("rank")? as usize;
        if rank < min_rank || rank > MAX_RANK {
            return Err(self.invalid(
                "rank",
                off,
                format!("{rank} outside {min_rank}..={MAX_RANK}"),
            ));
        }
        let off = self.offset();
        let mut shape = Vec::with_capacity(rank);
        for _ in 0..rank {
            let d = self.u64("dims")?;
            shape.push(
                usize::try_from(d)
                    .map_err(|_| self.invalid("dims", off, format!("dimension {d} too large")))?,
            );
        }
        if element_count(&shape).is_none() {
            return Err(self.invalid(
                "dims",
                off,
                format!("shape {shape:?} exceeds {MAX_ELEMENTS} elements"),
            ));
        }
        Ok(shape)
    }
    pub(crate) fn finish(&self) -> Result<(), ContainerError> {
        if self.remaining() != 0 {
            return Err(self.invalid(
                "end",
                self.offset(),
                format!("{} unexpected trailing byte(s)", self.remaining()),
            ));
        }
        Ok(())
    }
}

/// A per-layer table of a file, as `deepcomp inspect` prints it.
pub fn stats_table(file: &DczFile) -> Result<String, ContainerError> {
    use std::fmt::Write as _;
    let stats = layer_stats(file)?;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{:<24} {:<4} {:<16} {:>10} {:>9} {:>7} {:>4} {:>3} {:>9} {:>9} {:>9}",
        "layer",
        "kind",
        "shape",
        "params",
        "nonzero",
        "kept%",
        "bits",
        "b",
        "code b/w",
        "index b/w",
        "bytes"
    );
    for (l, st) in file.layers.iter().zip(&stats) {
        let shape: Vec<String> = l.shape.iter().map(|d| d.to_string()).collect();
        let kind = match l.kind {
            LayerKind::Conv => "conv",
            LayerKind::Fc => "fc",
        };
        let _ = writeln!(
            s,
            "{:<24} {:<4} {:<16} {:>10} {:>9} {:>7.2} {:>4} {:>3} {:>9.3} {:>9.3} {:>9}",
            l.name,
            kind,
            shape.join("x"),
            st.params,
            st.nonzero,
            100.0 * st.nonzero as f64 / st.params.max(1) as f64,
            st.bits,
            st.index_bits,
            st.huffman_avg_bits,
            st.index_avg_bits,
            st.bytes
        );
    }
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    fn gen_layer(
        rng: &mut ChaCha8Rng,
        name: &str,
        shape: Vec<usize>,
        density: f64,
        bits: u8,
        k: usize,
        b: u8,
    ) -> SparseLayer {
        let n: usize = shape.iter().product();
        let positions: Vec<u64> = (0..n as u64)
            .filter(|_| rng.random::<f64>() < density)
            .collect();
        let codebook: Vec<f32> = (0..k)
            .map(|i| (i as f32 - k as f32 / 2.0) * 0.013 + rng.random::<f32>() * 1e-3)
            .collect();
        let codes = positions
            .iter()
            .map(|_| {
                let r: f64 = rng.random();
                ((r * r) * k as f64) as u32
            })
            .collect();
        SparseLayer {
            name: name.into(),
            kind: if shape.len() == 4 {
                LayerKind::Conv
            } else {
                LayerKind::Fc
            },
            shape,
            bits,
            index_bits: b,
            codebook,
            positions,
            codes,
        }
    }

    fn sample_file() -> DczFile {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let mut layers = vec![
            gen_layer(&mut rng, "conv1.weight", vec![8, 3, 3, 3], 0.4, 8, 256, 5),
            gen_layer(&mut rng, "fc1.weight", vec![100, 300], 0.08, 5, 32, 4),
            gen_layer(&mut rng, "empty.weight", vec![10, 10], 0.0, 4, 16, 8),
            gen_layer(&mut rng, "dense.weight", vec![7, 9], 1.0, 2, 4, 2),
            gen_layer(&mut rng, "k1.weight", vec![50], 0.5, 1, 1, 3),
            gen_layer(&mut rng, "wide.weight", vec![300, 300], 0.3, 16, 65536, 16),
        ];
        layers.push(SparseLayer {
            name: "one.weight".into(),
            kind: LayerKind::Fc,
            shape: vec![1000],
            bits: 3,
            index_bits: 2,
            codebook: vec![-0.5, 0.25, f32::MIN_POSITIVE, -0.0],
            positions: vec![999],
            codes: vec![3],
        });
        DczFile {
            model: "test-net".into(),
            recipe_hash: [0xAB; 32],
            layers,
            dense: vec![
                DenseTensor {
                    name: "fc1.bias".into(),
                    shape: vec![100],
                    data: (0..100).map(|i| i as f32 * 0.5).collect(),
                },
                DenseTensor {
                    name: "bn.num_batches".into(),
                    shape: vec![],
                    data: vec![7.0],
                },
                DenseTensor {
                    name: "bn.nan".into(),
                    shape: vec![2],
                    data: vec![f32::NAN, f32::INFINITY],
                },
            ],
            ..Default::default()
        }
    }

    fn tiny_file() -> DczFile {
        DczFile {
            model: "tiny".into(),
            recipe_hash: [7; 32],
            layers: vec![SparseLayer {
                name: "fc.w".into(),
                kind: LayerKind::Fc,
                shape: vec![2, 10],
                bits: 2,
                index_bits: 3,
                codebook: vec![-1.0, 0.5, 2.0],
                positions: vec![1, 4, 15, 19],
                codes: vec![0, 1, 1, 2],
            }],
            dense: vec![DenseTensor {
                name: "fc.b".into(),
                shape: vec![2],
                data: vec![0.25, -3.0],
            }],
            ..Default::default()
        }
    }

    fn bits_eq(a: &[f32], b: &[f32]) -> bool {
        a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits())
    }

    #[test]
    fn round_trip_is_bit_exact_and_deterministic() {
        let f = sample_file();
        let bytes = f.to_bytes().unwrap();
        assert_eq!(bytes, f.to_bytes().unwrap(), "deterministic");
        let g = DczFile::from_bytes(&bytes).unwrap();
        assert_eq!(g.model, f.model);
        assert_eq!(g.recipe_hash, f.recipe_hash);
        for (a, b) in f.layers.iter().zip(&g.layers) {
            assert_eq!(a.positions, b.positions);
            assert_eq!(a.codes, b.codes);
            assert_eq!(a.shape, b.shape);
            assert_eq!(
                (a.kind, a.bits, a.index_bits, &a.name),
                (b.kind, b.bits, b.index_bits, &b.name)
            );
            assert!(bits_eq(&a.codebook, &b.codebook));
            assert!(bits_eq(&a.to_dense(), &b.try_to_dense().unwrap()));
        }
        for (a, b) in f.dense.iter().zip(&g.dense) {
            assert_eq!((&a.name, &a.shape), (&b.name, &b.shape));
            assert!(bits_eq(&a.data, &b.data));
        }
        assert_eq!(g.to_bytes().unwrap(), bytes);
        // Dense reconstruction puts codebook values at the kept positions.
        let one = &g.layers[6].to_dense();
        assert_eq!(one.len(), 1000);
        assert_eq!(one[999].to_bits(), (-0.0f32).to_bits());
        assert!(one[..999].iter().all(|&v| v.to_bits() == 0));
    }

    #[test]
    fn every_truncation_is_an_error() {
        let bytes = tiny_file().to_bytes().unwrap();
        for len in 0..bytes.len() {
            assert!(
                DczFile::from_bytes(&bytes[..len]).is_err(),
                "truncated to {len}"
            );
        }
        // The fuzzer's first find: a section header with a zero payload
        // length and fewer than 4 CRC bytes left (the dense section of the
        // tiny file starts at offset 175).
        assert_eq!(&bytes[175..179], b"DENS");
        let mut cut = bytes[..175].to_vec();
        cut.extend_from_slice(b"DENS\0\0\0\0\0\0\0\0\x01");
        assert!(DczFile::from_bytes(&cut).is_err());
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(DczFile::from_bytes(&longer).is_err());
    }

    #[test]
    fn every_flipped_byte_is_an_error() {
        let bytes = tiny_file().to_bytes().unwrap();
        for i in 0..bytes.len() {
            for mask in [0x01u8, 0x80, 0xFF] {
                let mut b = bytes.clone();
                b[i] ^= mask;
                assert!(
                    DczFile::from_bytes(&b).is_err(),
                    "byte {i} ^ {mask:#x} accepted"
                );
            }
        }
    }

    #[test]
    fn magic_and_version_are_checked() {
        let mut bytes = tiny_file().to_bytes().unwrap();
        assert!(matches!(
            DczFile::from_bytes(b"PK\x03\x04"),
            Err(ContainerError::BadMagic { .. })
        ));
        bytes[8] = 3;
        let e = DczFile::from_bytes(&bytes).unwrap_err();
        assert!(matches!(e, ContainerError::UnsupportedVersion { found: 3 }));
        let msg = e.to_string();
        assert!(
            msg.contains("version 3") && msg.contains("versions 1 and 2"),
            "{msg}"
        );
    }

    #[test]
    fn corrupted_payload_with_fixed_crc_is_still_an_error() {
        // Re-sign a section after corrupting its length fields: the
        // structural checks must catch it, with no huge allocation.
        let f = tiny_file();
        let bytes = f.to_bytes().unwrap();
        // Preamble, HEAD framing, model name, hash, 2 counts, then version 2's typed count, one layer
        // dtype and the metadata length.
        let head_len = 12 + 16 + 2 + 4 + 32 + 8 + 4 + 1 + 4;
        let layer_start = head_len;
        let payload_start = layer_start + 12;
        // nonzero/index_symbols sit after name(2+4) kind bits b rank dims(16) k(4) codebook(12).
        let nz_off = payload_start + 6 + 3 + 1 + 16 + 4 + 12;
        for (field_off, value) in [
            (nz_off, u64::MAX),
            (nz_off + 8, u64::MAX / 3),
            (nz_off + 16, 1u64 << 60),
        ] {
            let mut b = bytes.clone();
            b[field_off..field_off + 8].copy_from_slice(&value.to_le_bytes());
            let len = u64::from_le_bytes(b[layer_start + 4..layer_start + 12].try_into().unwrap())
                as usize;
            let crc_pos = payload_start + len;
            let crc = crc32fast::hash(&b[layer_start..crc_pos]);
            b[crc_pos..crc_pos + 4].copy_from_slice(&crc.to_le_bytes());
            let n = b.len();
            let crc = crc32fast::hash(&b[..n - 4]);
            b[n - 4..].copy_from_slice(&crc.to_le_bytes());
            let err = DczFile::from_bytes(&b).unwrap_err();
            assert!(
                matches!(
                    err,
                    ContainerError::Invalid { .. } | ContainerError::Entropy { .. }
                ),
                "{err}"
            );
        }
    }

    #[test]
    fn invalid_layers_are_rejected_on_write() {
        let mut f = tiny_file();
        f.layers[0].positions = vec![4, 1, 15, 19];
        assert!(matches!(
            f.to_bytes(),
            Err(ContainerError::InvalidLayer { .. })
        ));
        let mut f = tiny_file();
        f.layers[0].codes[0] = 3;
        assert!(f.to_bytes().is_err());
        let mut f = tiny_file();
        f.layers[0].positions[3] = 20;
        assert!(f.to_bytes().is_err());
        let mut f = tiny_file();
        f.layers[0].index_bits = 1;
        assert!(f.to_bytes().is_err());
        let mut f = tiny_file();
        f.dense[0].data.push(1.0);
        assert!(matches!(
            f.to_bytes(),
            Err(ContainerError::InvalidDense { .. })
        ));
        assert!(f.layers[0].try_to_dense().is_ok());
        let mut bad = tiny_file().layers.remove(0);
        bad.codes[1] = 99;
        bad.positions[3] = 1000;
        assert!(bad.try_to_dense().is_err());
        let dense = bad.to_dense();
        assert_eq!(dense.len(), 20);
        assert_eq!(dense[1], -1.0);
        assert_eq!(dense[4], 0.0, "out-of-range code skipped");
    }

    #[test]
    fn stats_figures() {
        let f = sample_file();
        let stats = layer_stats(&f).unwrap();
        let bytes = f.to_bytes().unwrap();
        assert_eq!(stats.len(), f.layers.len());
        let total: u64 = stats.iter().map(|s| s.bytes).sum();
        assert!(total < bytes.len() as u64);
        let fc1 = &stats[1];
        assert_eq!(fc1.params, 30_000);
        assert_eq!(fc1.nonzero, f.layers[1].positions.len() as u64);
        assert!(fc1.huffman_avg_bits > 0.0 && fc1.huffman_avg_bits <= 5.0);
        assert!(fc1.index_avg_bits > 0.0);
        assert!(fc1.bytes < fc1.pq_bytes && fc1.pq_bytes < fc1.p_bytes);
        let empty = &stats[2];
        assert_eq!(
            (empty.nonzero, empty.huffman_avg_bits, empty.index_avg_bits),
            (0, 0.0, 0.0)
        );
        // k = 1: one-bit codes.
        assert_eq!(stats[4].huffman_avg_bits, 1.0);
    }

    #[test]
    fn atomic_write_and_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.dcz");
        let f = tiny_file();
        let n = f.write_atomic(&path).unwrap();
        assert_eq!(n, std::fs::metadata(&path).unwrap().len());
        assert_eq!(DczFile::read(&path).unwrap(), f);
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            1,
            "no temp file left"
        );
        assert!(matches!(
            DczFile::read(&dir.path().join("missing.dcz")),
            Err(ContainerError::Io { .. })
        ));
    }

    /// Recomputes every section CRC and the file CRC after an edit, so only
    /// the structural checks can catch it.
    fn resign(b: &mut [u8]) {
        let mut pos = PREAMBLE_LEN;
        while b[pos..pos + 4] != TAG_END {
            let len = u64::from_le_bytes(b[pos + 4..pos + 12].try_into().unwrap()) as usize;
            let crc_pos = pos + 12 + len;
            let crc = crc32fast::hash(&b[pos..crc_pos]);
            b[crc_pos..crc_pos + 4].copy_from_slice(&crc.to_le_bytes());
            pos = crc_pos + 4;
        }
        let n = b.len();
        let crc = crc32fast::hash(&b[..n - 4]);
        b[n - 4..].copy_from_slice(&crc.to_le_bytes());
    }

    /// Offset of the first occurrence of `needle` in `hay`.
    fn find(hay: &[u8], needle: &[u8]) -> usize {
        hay.windows(needle.len())
            .position(|w| w == needle)
            .expect("needle present")
    }

    /// The tiny file with the first dimension of `fc.w` (shape [2, 10])
    /// raised to `dim0`, CRCs recomputed.
    fn tiny_with_dim0(dim0: u64) -> Vec<u8> {
        let mut b = tiny_file().to_bytes().unwrap();
        // name "fc.w", kind, bits, b, rank, then the first dimension.
        let at = find(&b, b"fc.w") + 4 + 3 + 1;
        assert_eq!(b[at..at + 8], 2u64.to_le_bytes());
        b[at..at + 8].copy_from_slice(&dim0.to_le_bytes());
        resign(&mut b);
        b
    }

    #[test]
    fn decompression_bomb_is_refused_before_allocation() {
        // 17,179,869,180 elements (a 68.7 GB dense tensor, just within the
        // format's 2^34 per tensor): above the per-file limit.
        let b = tiny_with_dim0(1_717_986_918);
        let err = DczFile::from_bytes(&b).unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, ContainerError::Limit { .. }), "{msg}");
        assert!(
            msg.contains("fc.w") && msg.contains(&MAX_FILE_ELEMENTS.to_string()),
            "{msg}"
        );
        // 268,435,450 elements (1 GB as f32): within the element limit, but
        // the 5 index entries of 3 bits reach at most 35 of them.
        let b = tiny_with_dim0(26_843_545);
        let err = DczFile::from_bytes(&b).unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, ContainerError::Limit { .. }), "{msg}");
        assert!(
            msg.contains("fc.w")
                && msg.contains("implicit zeros")
                && msg.contains(&MAX_IMPLICIT_ZEROS.to_string()),
            "{msg}"
        );
        // Raised limits read it (nothing dense is materialized by reading).
        let big = Limits {
            max_elements: 1 << 30,
            max_implicit_zeros: 1 << 29,
            implicit_zeros_per_byte: 0,
        };
        let f = DczFile::from_bytes_with_limits(&b, &big).unwrap();
        assert_eq!(f.layers[0].numel(), 268_435_450);
        // A legitimately longer zero tail still reads, with the same positions.
        let f = DczFile::from_bytes(&tiny_with_dim0(3)).unwrap();
        assert_eq!(f.layers[0].shape, vec![3, 10]);
        assert_eq!(f.layers[0].positions, tiny_file().layers[0].positions);
        assert_eq!(f.layers[0].try_to_dense().unwrap().len(), 30);
    }

    #[test]
    fn limits_are_per_file_and_checked_on_write() {
        let f = tiny_file();
        let bytes = f.to_bytes().unwrap();
        // 20 + 2 elements: a limit of 21 refuses the raw tensor that comes last.
        let tight = Limits {
            max_elements: 21,
            max_implicit_zeros: 0,
            implicit_zeros_per_byte: 0,
        };
        let msg = DczFile::from_bytes_with_limits(&bytes, &tight)
            .unwrap_err()
            .to_string();
        assert!(msg.contains("fc.b") && msg.contains("limit of 21"), "{msg}");
        // fc.w's last kept position is 19 of 20: no implicit zeros.
        let ok = Limits {
            max_elements: 22,
            max_implicit_zeros: 0,
            implicit_zeros_per_byte: 0,
        };
        assert_eq!(DczFile::from_bytes_with_limits(&bytes, &ok).unwrap(), f);
        // The writer refuses what the default reader would refuse.
        let mut g = tiny_file();
        g.layers[0].shape = vec![1 << 20, 1 << 11];
        let msg = g.to_bytes().unwrap_err().to_string();
        assert!(msg.contains("fc.w") && msg.contains("limit"), "{msg}");
        let mut g = tiny_file();
        g.layers[0].shape = vec![1 << 14, 1 << 11];
        let msg = g.to_bytes().unwrap_err().to_string();
        assert!(
            msg.contains("fc.w") && msg.contains("implicit zeros"),
            "{msg}"
        );
    }

    #[test]
    fn a_large_layer_pruned_to_nothing_fits_a_file_that_holds_other_data() {
        // fc.w with 2^25 elements (its kept positions end at 19): about 2^25 implicit zeros, above
        // the 2^24 a file of any size may hold, below 2^24 + 256 per byte of a 128 KB file.
        let mut g = tiny_file();
        g.layers[0].shape = vec![1 << 13, 1 << 12];
        let msg = g.to_bytes().unwrap_err().to_string();
        assert!(
            msg.contains("fc.w") && msg.contains("implicit zeros") && msg.contains("per byte"),
            "{msg}"
        );
        g.dense.push(DenseTensor {
            name: "other.weight".into(),
            shape: vec![32_000],
            data: (0..32_000).map(|i| i as f32 * 1e-3).collect(),
        });
        let bytes = g.to_bytes().unwrap();
        assert!(bytes.len() > 128_000);
        let back = DczFile::from_bytes(&bytes).unwrap();
        assert_eq!(back, g);
        // Without the per-byte allowance the reader refuses it, naming the limit.
        let strict = Limits {
            implicit_zeros_per_byte: 0,
            ..Limits::default()
        };
        let msg = DczFile::from_bytes_with_limits(&bytes, &strict)
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains("fc.w") && msg.contains("implicit zeros"),
            "{msg}"
        );
    }

    #[test]
    fn duplicate_names_are_refused_on_read_and_write() {
        // Writer: a raw tensor named like a layer.
        let mut f = tiny_file();
        f.dense[0].name = "fc.w".into();
        let err = f.to_bytes().unwrap_err();
        assert!(matches!(err, ContainerError::InvalidName { .. }), "{err}");
        let msg = err.to_string();
        assert!(msg.contains("fc.w") && msg.contains("unique"), "{msg}");
        let mut f = tiny_file();
        f.dense.push(f.dense[0].clone());
        let msg = f.to_bytes().unwrap_err().to_string();
        assert!(
            msg.contains("fc.b") && msg.contains("raw tensor #1"),
            "{msg}"
        );
        // Reader: rename `fc.b` to `fc.w` in the bytes, re-sign.
        let mut b = tiny_file().to_bytes().unwrap();
        let at = find(&b, b"fc.b");
        b[at..at + 4].copy_from_slice(b"fc.w");
        resign(&mut b);
        let err = DczFile::from_bytes(&b).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("\"fc.w\"") && msg.contains("layer section #0") && msg.contains("unique"),
            "{msg}"
        );
        // Two layers with one name.
        let mut f = tiny_file();
        let mut l = f.layers[0].clone();
        l.name = "fc.x".into();
        f.layers.push(l);
        let mut b = f.to_bytes().unwrap();
        let at = find(&b, b"fc.x");
        b[at..at + 4].copy_from_slice(b"fc.w");
        resign(&mut b);
        let msg = DczFile::from_bytes(&b).unwrap_err().to_string();
        assert!(
            msg.contains("layer section #1") && msg.contains("fc.w"),
            "{msg}"
        );
    }

    #[test]
    fn invalid_names_are_refused_on_read_and_write() {
        let long = "w".repeat(MAX_NAME_LEN + 1);
        for bad in ["", "__metadata__", "fc\nb", "a\u{7}b", long.as_str()] {
            let mut f = tiny_file();
            f.dense[0].name = bad.into();
            let msg = f.to_bytes().unwrap_err().to_string();
            assert!(msg.contains("tensor name"), "{bad:?}: {msg}");
            let mut f = tiny_file();
            f.layers[0].name = bad.into();
            assert!(f.to_bytes().is_err(), "{bad:?}");
        }
        assert!(check_tensor_name(&"w".repeat(MAX_NAME_LEN)).is_ok());
        // Reader: names patched in place (same length), re-signed.
        for (from, to) in [
            (&b"fc.b"[..], &b"fc\x01b"[..]),
            (b"fc.b", b"fc\x7fb"),
            (b"__metadata_x", b"__metadata__"),
        ] {
            let mut f = tiny_file();
            f.dense[0].name = String::from_utf8(from.to_vec()).unwrap();
            let mut b = f.to_bytes().unwrap();
            let at = find(&b, from);
            b[at..at + to.len()].copy_from_slice(to);
            resign(&mut b);
            let err = DczFile::from_bytes(&b).unwrap_err();
            assert!(
                matches!(err, ContainerError::Invalid { field: "name", .. }),
                "{err}"
            );
            assert!(err.to_string().contains("dense section #0"), "{err}");
        }
        // Empty name in a layer.
        let mut b = tiny_file().to_bytes().unwrap();
        let at = find(&b, b"fc.w");
        b[at - 2..at].copy_from_slice(&0u16.to_le_bytes());
        // Keep the payload length consistent: drop the 4 name bytes.
        b.drain(at..at + 4);
        let len_at = at - 2 - 12 + 4;
        let len = u64::from_le_bytes(b[len_at..len_at + 8].try_into().unwrap()) - 4;
        b[len_at..len_at + 8].copy_from_slice(&len.to_le_bytes());
        resign(&mut b);
        let msg = DczFile::from_bytes(&b).unwrap_err().to_string();
        assert!(msg.contains("empty"), "{msg}");
    }

    /// Prints the tiny file in hex (used for the worked example in
    /// docs/FORMAT.md): `cargo test -p deepcomp-format --lib tiny_hex -- --nocapture`.
    #[test]
    fn tiny_hex() {
        let bytes = tiny_file().to_bytes().unwrap();
        for (i, chunk) in bytes.chunks(16).enumerate() {
            let hex: Vec<String> = chunk.iter().map(|b| format!("{b:02x}")).collect();
            println!("{:04x}: {}", i * 16, hex.join(" "));
        }
        assert_eq!(bytes.len(), 222);
    }
}
