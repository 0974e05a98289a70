//! Relative-index coding of sparse positions (Deep Compression §2, Fig. 2).
//!
//! A pruned tensor of `len` elements keeps the weights at sorted, unique flat
//! positions `p_0 < p_1 < …`. Instead of absolute positions, the paper stores
//! each position as its distance from the previous one in a `b`-bit field,
//! inserting a *filler* entry whenever the distance does not fit.
//!
//! # Definition used here
//!
//! Let `F = 2^b − 1` (the largest `b`-bit value). With `prev = −1` before the
//! first position, each kept position `p` has the **gap**
//! `g = p − prev − 1`, the number of pruned (skipped) elements in between.
//! The encoder emits `⌊g / F⌋` filler symbols `F`, then the real symbol
//! `g mod F` (a value in `0..F`), and sets `prev = p`.
//!
//! The decoder keeps `next = prev + 1` (initially 0): a symbol `F` advances
//! `next` by `F` and produces no position; any other symbol `s` produces the
//! position `p = next + s` and sets `next = p + 1`.
//!
//! So every `b`-bit field is either one real entry (one kept weight) or one
//! filler that skips exactly `F` elements. The mapping is a bijection
//! between strictly increasing position lists and symbol sequences that do
//! not end in a filler; the decoder rejects everything else (symbols wider
//! than `b` bits, positions `>= len`, trailing fillers).
//!
//! ## Why not the paper's filler verbatim
//!
//! In the paper a filler is a *real entry whose weight is zero*, placed
//! `2^b` after the previous entry, so it also occupies a slot in the weight
//! array. After k-means weight sharing the codebook need not contain an exact
//! zero, and cluster codes are stored one per kept weight, so a weight-zero
//! filler would need an extra codebook entry and an extra cluster code.
//! Here the filler is an escape value of the index stream itself: it costs
//! the same single `b`-bit index field as in the paper, but no weight slot,
//! and the kept-weight count equals the number of real entries exactly.
//! Using gap = distance − 1 also makes `0` (adjacent weights, the common case
//! in dense layers) a valid real symbol, so no field value is wasted.

use bitvec::prelude::*;

use crate::huffman::{frequencies, HuffmanCode};
use crate::EntropyError;

/// Smallest and largest supported field width `b`.
pub const INDEX_BITS_RANGE: std::ops::RangeInclusive<u8> = 1..=16;

fn check_bits(b: u8) -> Result<u32, EntropyError> {
    if INDEX_BITS_RANGE.contains(&b) {
        Ok((1u32 << b) - 1)
    } else {
        Err(EntropyError::InvalidIndexBits { bits: b })
    }
}

/// The filler symbol `2^b − 1` for field width `b`.
pub fn filler_symbol(b: u8) -> Result<u32, EntropyError> {
    check_bits(b)
}

/// Encodes sorted unique `positions` (each `< len`) as `b`-bit
/// relative-index symbols (see the module docs for the exact definition).
pub fn encode_positions(positions: &[u64], len: u64, b: u8) -> Result<Vec<u32>, EntropyError> {
    let filler = check_bits(b)?;
    let f = u64::from(filler);
    let mut out = Vec::with_capacity(positions.len());
    let mut next = 0u64;
    for (index, &p) in positions.iter().enumerate() {
        if p >= len {
            return Err(EntropyError::PositionOutOfRange {
                index,
                position: p,
                len,
            });
        }
        if p < next {
            return Err(EntropyError::PositionsNotIncreasing {
                index,
                prev: next - 1,
                position: p,
            });
        }
        let gap = p - next;
        let fillers = gap / f;
        out.extend(std::iter::repeat_n(filler, fillers as usize));
        out.push((gap % f) as u32);
        next = p + 1;
    }
    Ok(out)
}

/// Decodes relative-index symbols back to positions in a tensor of `len`
/// elements, validating every symbol: width, range, no trailing filler.
pub fn decode_positions(symbols: &[u32], b: u8, len: u64) -> Result<Vec<u64>, EntropyError> {
    let filler = check_bits(b)?;
    let mut out = Vec::with_capacity(symbols.len().min(len as usize));
    let mut next = 0u64;
    for (index, &s) in symbols.iter().enumerate() {
        if s > filler {
            return Err(EntropyError::IndexSymbolOutOfRange {
                index,
                symbol: s,
                bits: b,
            });
        }
        if s == filler {
            next += u64::from(filler);
            if next >= len {
                return Err(EntropyError::PositionOutOfRange {
                    index,
                    position: next,
                    len,
                });
            }
            continue;
        }
        let p = next + u64::from(s);
        if p >= len {
            return Err(EntropyError::PositionOutOfRange {
                index,
                position: p,
                len,
            });
        }
        out.push(p);
        next = p + 1;
    }
    if symbols.last() == Some(&filler) {
        return Err(EntropyError::TrailingFiller {
            index: symbols.len() - 1,
        });
    }
    Ok(out)
}

/// Number of filler symbols in a relative-index symbol stream.
pub fn count_fillers(symbols: &[u32], b: u8) -> Result<usize, EntropyError> {
    let filler = check_bits(b)?;
    Ok(symbols.iter().filter(|&&s| s == filler).count())
}

/// Flat positions of the set bits of a mask, in increasing order.
pub fn positions_from_mask(mask: &BitSlice<u8, Msb0>) -> Vec<u64> {
    mask.iter_ones().map(|i| i as u64).collect()
}

/// A mask of `len` bits with the given positions set.
pub fn mask_from_positions(positions: &[u64], len: u64) -> Result<BitVec<u8, Msb0>, EntropyError> {
    let mut mask = BitVec::<u8, Msb0>::repeat(false, len as usize);
    for (index, &p) in positions.iter().enumerate() {
        if p >= len {
            return Err(EntropyError::PositionOutOfRange {
                index,
                position: p,
                len,
            });
        }
        mask.set(p as usize, true);
    }
    Ok(mask)
}

/// A relative-index encoding of one sparse tensor, with its cost figures.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelativeIndex {
    /// Field width `b`.
    pub index_bits: u8,
    /// Number of elements of the dense tensor.
    pub len: u64,
    /// The `b`-bit symbols, fillers included.
    pub symbols: Vec<u32>,
    /// Number of kept positions (real entries).
    pub nonzero: u64,
}

impl RelativeIndex {
    /// Encodes sorted unique positions inside a tensor of `len` elements.
    pub fn encode(positions: &[u64], len: u64, index_bits: u8) -> Result<Self, EntropyError> {
        let symbols = encode_positions(positions, len, index_bits)?;
        Ok(Self {
            index_bits,
            len,
            symbols,
            nonzero: positions.len() as u64,
        })
    }

    /// Decodes back to the positions.
    pub fn decode(&self) -> Result<Vec<u64>, EntropyError> {
        decode_positions(&self.symbols, self.index_bits, self.len)
    }

    /// Number of filler entries.
    pub fn fillers(&self) -> u64 {
        self.symbols.len() as u64 - self.nonzero
    }

    /// Fixed-width index cost: `symbols × b` bits.
    pub fn fixed_bits(&self) -> u64 {
        self.symbols.len() as u64 * u64::from(self.index_bits)
    }

    /// Fixed-width index bits per kept weight (fillers included; 0 when
    /// nothing is kept).
    pub fn avg_fixed_bits(&self) -> f64 {
        per_nonzero(self.fixed_bits(), self.nonzero)
    }

    /// A Huffman code for these symbols over the `2^b` alphabet.
    pub fn huffman_code(&self, max_len: Option<u8>) -> Result<HuffmanCode, EntropyError> {
        HuffmanCode::from_symbols(&self.symbols, 1usize << self.index_bits, max_len)
    }

    /// Huffman-coded index bits per kept weight (fillers included, code
    /// table excluded; 0 when nothing is kept).
    pub fn avg_huffman_bits(&self, code: &HuffmanCode) -> Result<f64, EntropyError> {
        let freqs = frequencies(&self.symbols, 1usize << self.index_bits)?;
        Ok(per_nonzero(code.encoded_bits(&freqs)?, self.nonzero))
    }
}

fn per_nonzero(bits: u64, nonzero: u64) -> f64 {
    if nonzero == 0 {
        0.0
    } else {
        bits as f64 / nonzero as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paper_style_example() {
        // b = 3: F = 7. Positions 1, 4, 15: gaps 1, 2, 10 = 7 + 3.
        let syms = encode_positions(&[1, 4, 15], 16, 3).unwrap();
        assert_eq!(syms, vec![1, 2, 7, 3]);
        assert_eq!(decode_positions(&syms, 3, 16).unwrap(), vec![1, 4, 15]);
        // A gap of exactly F needs one filler and a real 0.
        assert_eq!(encode_positions(&[7], 8, 3).unwrap(), vec![7, 0]);
        assert_eq!(encode_positions(&[6], 8, 3).unwrap(), vec![6]);
        assert_eq!(encode_positions(&[0, 1, 2], 3, 3).unwrap(), vec![0, 0, 0]);
    }

    #[test]
    fn edge_masks() {
        for b in [1u8, 2, 4, 8, 16] {
            for len in [0u64, 1, 2, 17, 300] {
                let all: Vec<u64> = (0..len).collect();
                for pos in [vec![], all.clone(), vec![len.saturating_sub(1)], vec![0]] {
                    if pos.iter().any(|&p| p >= len) {
                        assert!(encode_positions(&pos, len, b).is_err());
                        continue;
                    }
                    let ri = RelativeIndex::encode(&pos, len, b).unwrap();
                    assert_eq!(ri.decode().unwrap(), pos);
                    assert_eq!(ri.symbols.len() as u64, ri.nonzero + ri.fillers());
                }
            }
        }
    }

    #[test]
    fn invalid_inputs() {
        assert!(matches!(
            encode_positions(&[1], 4, 0),
            Err(EntropyError::InvalidIndexBits { bits: 0 })
        ));
        assert!(encode_positions(&[1], 4, 17).is_err());
        assert!(matches!(
            encode_positions(&[2, 2], 4, 3),
            Err(EntropyError::PositionsNotIncreasing { index: 1, .. })
        ));
        assert!(matches!(
            encode_positions(&[3, 1], 4, 3),
            Err(EntropyError::PositionsNotIncreasing { .. })
        ));
        assert!(matches!(
            encode_positions(&[4], 4, 3),
            Err(EntropyError::PositionOutOfRange { .. })
        ));
        assert!(matches!(
            decode_positions(&[8], 3, 100),
            Err(EntropyError::IndexSymbolOutOfRange { .. })
        ));
        assert!(matches!(
            decode_positions(&[1, 7], 3, 100),
            Err(EntropyError::TrailingFiller { index: 1 })
        ));
        assert!(matches!(
            decode_positions(&[3, 3], 3, 5),
            Err(EntropyError::PositionOutOfRange {
                index: 1,
                position: 7,
                ..
            })
        ));
        // Fillers alone can run past the end: caught at the filler.
        assert!(matches!(
            decode_positions(&[7, 7, 0], 3, 10),
            Err(EntropyError::PositionOutOfRange { index: 1, .. })
        ));
    }

    #[test]
    fn cost_figures() {
        let pos: Vec<u64> = (0..100u64).map(|i| i * 20).collect();
        let ri = RelativeIndex::encode(&pos, 2000, 4).unwrap();
        // gap 19 = 15 + 4: one filler per position except the first (gap 0).
        assert_eq!(ri.fillers(), 99);
        assert_eq!(ri.fixed_bits(), 199 * 4);
        assert!((ri.avg_fixed_bits() - 7.96).abs() < 1e-12);
        let code = ri.huffman_code(None).unwrap();
        let h = ri.avg_huffman_bits(&code).unwrap();
        assert!(h < ri.avg_fixed_bits() && h > 0.0);
        let mask = mask_from_positions(&pos, 2000).unwrap();
        assert_eq!(positions_from_mask(&mask), pos);
        assert_eq!(
            RelativeIndex::encode(&[], 10, 4).unwrap().avg_fixed_bits(),
            0.0
        );
    }
}
