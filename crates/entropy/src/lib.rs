//! Entropy coding for deepcomp: the last stage of Deep Compression.
//!
//! After pruning and weight sharing, a layer is a sparse set of kept
//! positions, each carrying a small cluster code. This crate turns both into
//! compact bitstreams, and back, exactly:
//!
//! * [`bits`] — [`BitWriter`] / [`BitReader`], MSB-first bit I/O over bytes
//!   (the first bit is bit 7 of byte 0; identical to `BitVec<u8, Msb0>`).
//!   Reads never pass a declared end; every over-read is an
//!   [`EntropyError::UnexpectedEnd`].
//! * [`huffman`] — [`HuffmanCode`], a canonical Huffman code for alphabets up
//!   to 65,536 symbols, built from frequencies (optionally length-limited by
//!   package-merge), serialized as code lengths only, with a fast encoder
//!   (precomputed code words into a 64-bit accumulator) and a table-driven
//!   decoder (an 11-bit table that yields up to 6, 4 or 3 symbols per
//!   lookup for alphabets of at most 256, 4096 or 65,536 symbols,
//!   canonical decoding for longer code words).
//!   [`HuffmanCode::average_bits`] is the seeds' figure Σ freq·len / Σ freq.
//! * [`relindex`] — relative-index coding of sparse positions as in the
//!   paper (§2, Fig. 2): gaps in `b`-bit fields with filler entries; the
//!   module docs define the scheme exactly. The symbols are then Huffman
//!   coded like any other.
//!
//! # Serialized code-length table
//!
//! [`HuffmanCode::write_lengths`] writes, MSB-first:
//!
//! 1. `n`, the alphabet size, in 17 bits (0..=65536);
//! 2. `w`, the width of one length field, in 3 bits: the number of bits of
//!    the longest code length (0 for the empty code, at most 6 since lengths
//!    are at most 32);
//! 3. if `w > 0`, entries until all `n` symbols are covered, in symbol
//!    order: a `w`-bit length `L`; when `L = 0` it is followed by the Elias
//!    gamma code of the run `r >= 1` of consecutive zero lengths starting
//!    there (`⌊log2 r⌋` zero bits, then `r` in binary); runs are maximal, so
//!    a zero run is never directly followed by another.
//!
//! A 32-symbol code with lengths up to 9 takes 17 + 3 + 32·4 = 148 bits.
//!
//! # Errors
//!
//! All fallible operations return [`EntropyError`]. Truncated or corrupted
//! streams, invalid length tables (over-subscribed, over-long, malformed
//! runs) and symbol counts larger than a stream can hold are reported, never
//! panicked on, and no allocation is sized from an unchecked count.
//!
//! ```
//! use deepcomp_entropy::{HuffmanCode, RelativeIndex};
//!
//! let symbols = [0u32, 0, 1, 0, 2, 0, 0, 3];
//! let code = HuffmanCode::from_symbols(&symbols, 4, None).unwrap();
//! let bits = code.encode(&symbols).unwrap();
//! assert_eq!(code.decode(&bits, symbols.len()).unwrap(), symbols);
//! // Lengths 1, 3, 3, 2: (5·1 + 3 + 3 + 2) / 8 bits per symbol.
//! assert_eq!(code.average_bits(&[5, 1, 1, 1]).unwrap(), 1.625);
//!
//! let ri = RelativeIndex::encode(&[1, 4, 40], 64, 4).unwrap();
//! // Gaps 1, 2 and 35 = 15 + 15 + 5 (two fillers, F = 2^4 - 1 = 15).
//! assert_eq!(ri.symbols, vec![1, 2, 15, 15, 5]);
//! assert_eq!(ri.decode().unwrap(), vec![1, 4, 40]);
//! ```

pub mod bits;
mod error;
pub mod huffman;
pub mod relindex;

pub use bits::{BitReader, BitWriter};
pub use error::EntropyError;
pub use huffman::{frequencies, HuffmanCode, MAX_ALPHABET, MAX_CODE_LEN};
pub use relindex::{decode_positions, encode_positions, RelativeIndex};
