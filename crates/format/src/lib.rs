//! # deepcomp-format
//!
//! The `.dcz` container of deepcomp: a model compressed with Deep Compression (pruning, trained
//! quantization, Huffman coding; Han, Mao, Dally 2016), read, validated and written. This crate is all
//! a program needs to list, decode or re-encode a `.dcz` file: it depends on `deepcomp-entropy` (bit
//! I/O, canonical Huffman codes, relative indices) and a few small crates (`crc32fast`, `thiserror`,
//! `serde` for the statistics, `serde_json` for the metadata block), and not on candle, clap or the
//! training pipeline.
//!
//! **The format in one paragraph.** A file is an 8-byte PNG-style magic, a version (`2`; `1` is
//! still read), then sections, each framed as tag + length + payload + CRC-32: one `HEAD` (model
//! name, recipe hash, counts; from version 2 also each layer's original element type and a metadata
//! block, a JSON object of at most 1 MiB describing the model: [`ModelMeta`]), one `LAYR` per
//! pruned and weight-shared tensor (name, kind, bits, index width `b`, shape, an `f32` codebook,
//! and one bit block holding two canonical Huffman length tables, the Huffman-coded relative-index
//! stream of the kept positions with `b`-bit gaps and fillers, and the Huffman-coded cluster code
//! of each kept weight), one `DENS` per raw `f32` tensor, one `TYPD` per raw tensor of another
//! element type ([`TypedTensor`], [`Dtype`]; version 2), optional `CHSC` sections (one `f32` scale per
//! output channel of a layer quantized uniformly per channel, see [`channel`]), then `DEND` and a CRC-32 of the whole
//! file. `docs/FORMAT.md` specifies it byte by byte, with a worked example.
//!
//! **Guarantees.**
//! - Decoding never panics: any byte string gives a [`DczFile`] or a [`ContainerError`] naming the
//!   section, field, byte offset and, once known, the tensor. [`DczFile::to_bytes`] and
//!   [`DczFile::from_bytes`] are exact inverses, so a parsed file re-encodes to the same bytes.
//! - Bounded allocation: every count read from a file is checked against the bytes (or bits) that
//!   remain before anything is allocated from it, and the decoded size is bounded before any tensor is
//!   materialized: at most [`Limits::max_elements`] elements per file (default [`MAX_FILE_ELEMENTS`]),
//!   and a sparse layer's shape may exceed what its index stream reaches by at most
//!   [`Limits::max_implicit_zeros`] elements per file (default [`MAX_IMPLICIT_ZEROS`]) plus
//!   [`Limits::implicit_zeros_per_byte`] per byte of the file (default [`IMPLICIT_ZEROS_PER_BYTE`]).
//!   So a small file cannot ask [`SparseLayer::to_dense`] for gigabytes.
//! - Names are checked on read and on write: every tensor name is non-empty, at most
//!   [`MAX_NAME_LEN`] bytes, free of control characters, not `__metadata__`, and unique across
//!   layers and raw tensors.
//! - [`write_atomic`] (used by [`DczFile::write_atomic`]) replaces a file atomically and refuses
//!   targets that are not regular files.
//!
//! ```
//! use deepcomp_format::{DczFile, DenseTensor, LayerKind, SparseLayer};
//!
//! let file = DczFile {
//!     model: "tiny".into(),
//!     recipe_hash: [0; 32],
//!     layers: vec![SparseLayer {
//!         name: "fc.weight".into(),
//!         kind: LayerKind::Fc,
//!         shape: vec![2, 3],
//!         bits: 2,
//!         index_bits: 2,
//!         codebook: vec![-0.5, 0.5],
//!         positions: vec![1, 5],
//!         codes: vec![0, 1],
//!     }],
//!     dense: vec![DenseTensor { name: "fc.bias".into(), shape: vec![2], data: vec![0.1, 0.2] }],
//!     ..Default::default()
//! };
//! let bytes = file.to_bytes()?;
//! let back = DczFile::from_bytes(&bytes)?;
//! assert_eq!(back, file);
//! assert_eq!(back.layers[0].try_to_dense()?, vec![0.0, -0.5, 0.0, 0.0, 0.0, 0.5]);
//! # Ok::<(), deepcomp_format::ContainerError>(())
//! ```

mod atomic;
pub mod channel;
mod dcz;
mod v2;

pub use atomic::write_atomic;
pub use channel::ChannelScales;
pub use dcz::*;
pub use v2::{Dtype, ModelMeta, TypedTensor, MAX_METADATA_LEN};
