//! The crate's single error type.

use thiserror::Error;

/// Everything that can go wrong while building, serializing or applying a code.
///
/// Every variant says which field or position failed and why; decoding
/// corrupted or truncated input always ends in one of these, never in a panic
/// or an endless loop.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum EntropyError {
    /// A read needed more bits than the stream has left.
    #[error("bitstream ended early: needed {needed} bit(s) at bit offset {at_bit}, only {available} left")]
    UnexpectedEnd {
        /// Bit offset where the read started.
        at_bit: u64,
        /// Bits the read needed.
        needed: u64,
        /// Bits that were left.
        available: u64,
    },
    /// A single read/write asked for more bits than the API supports.
    #[error("bit count {requested} out of range: at most {max} bits per call")]
    BitCountOutOfRange {
        /// Requested width.
        requested: u32,
        /// Largest supported width.
        max: u32,
    },
    /// A declared bit length does not fit in the byte buffer it describes.
    #[error("declared bit length {bit_len} exceeds the {byte_len}-byte buffer ({} bits)", byte_len * 8)]
    BitLenExceedsBuffer {
        /// Declared length in bits.
        bit_len: u64,
        /// Buffer length in bytes.
        byte_len: u64,
    },
    /// The bits at this offset are not the code word of any symbol.
    #[error("invalid Huffman code word at bit offset {at_bit}: no symbol has this code")]
    InvalidCodeword {
        /// Bit offset of the offending code word.
        at_bit: u64,
    },
    /// More symbols were requested than the stream could possibly hold.
    #[error("requested {requested} symbol(s) but {bits} bit(s) with shortest code length {min_len} hold at most {max_possible}")]
    CountExceedsStream {
        /// Requested symbol count.
        requested: u64,
        /// Bits available.
        bits: u64,
        /// Shortest code length of the code.
        min_len: u8,
        /// Upper bound on the symbols the bits can hold.
        max_possible: u64,
    },
    /// Symbols were requested from a code in which no symbol has a code word.
    #[error(
        "the code is empty (no symbol has a code word) but {requested} symbol(s) were requested"
    )]
    EmptyCode {
        /// Requested symbol count.
        requested: u64,
    },
    /// The alphabet is larger than [`crate::MAX_ALPHABET`].
    #[error("alphabet of {size} symbols exceeds the maximum of {max}")]
    AlphabetTooLarge {
        /// Requested alphabet size.
        size: usize,
        /// Largest supported alphabet.
        max: usize,
    },
    /// A code length is larger than [`crate::MAX_CODE_LEN`].
    #[error("code length {len} of symbol {symbol} exceeds the maximum of {max}")]
    CodeLengthTooLong {
        /// Offending symbol.
        symbol: u32,
        /// Its length.
        len: u32,
        /// Largest supported length.
        max: u8,
    },
    /// The code lengths violate Kraft's inequality, so no prefix code has them.
    #[error("code lengths are not a prefix code: Kraft sum {kraft_sum}/2^32 exceeds 1")]
    OversubscribedLengths {
        /// Σ 2^(32 − len) over all coded symbols.
        kraft_sum: u64,
    },
    /// The requested maximum code length is out of range or too small for
    /// the number of symbols in use.
    #[error("maximum code length {max_len} invalid for {used_symbols} used symbol(s): need 1..={max} and 2^max_len >= used symbols")]
    InvalidMaxLen {
        /// Requested maximum length.
        max_len: u8,
        /// Symbols with a nonzero frequency.
        used_symbols: usize,
        /// Largest supported length.
        max: u8,
    },
    /// A symbol to encode has no code word (outside the alphabet or zero
    /// frequency when the code was built).
    #[error("symbol {symbol} at input index {index} has no code word (alphabet size {alphabet})")]
    SymbolNotInCode {
        /// Index of the symbol in the input slice.
        index: usize,
        /// The symbol.
        symbol: u32,
        /// Alphabet size of the code.
        alphabet: usize,
    },
    /// A serialized code-length table is malformed.
    #[error("malformed code-length table at bit offset {at_bit}: {reason}")]
    MalformedLengthTable {
        /// Bit offset of the offending field.
        at_bit: u64,
        /// What is wrong.
        reason: String,
    },
    /// The relative-index field width is outside `1..=16`.
    #[error("relative-index field width b = {bits} is outside 1..=16")]
    InvalidIndexBits {
        /// Requested width.
        bits: u8,
    },
    /// A position is not inside the tensor.
    #[error("position {position} (entry {index}) is outside a tensor of {len} element(s)")]
    PositionOutOfRange {
        /// Index of the entry (position list index or symbol index).
        index: usize,
        /// The position.
        position: u64,
        /// Tensor length.
        len: u64,
    },
    /// Positions to encode are not strictly increasing.
    #[error("positions not strictly increasing at entry {index}: {prev} then {position}")]
    PositionsNotIncreasing {
        /// Index of the offending entry.
        index: usize,
        /// Previous position.
        prev: u64,
        /// Offending position.
        position: u64,
    },
    /// A relative-index symbol does not fit in `b` bits.
    #[error("relative-index symbol {symbol} (entry {index}) does not fit in {bits} bit(s)")]
    IndexSymbolOutOfRange {
        /// Index of the symbol.
        index: usize,
        /// The symbol.
        symbol: u32,
        /// Field width b.
        bits: u8,
    },
    /// A relative-index symbol stream ends with filler entries, which the
    /// encoder never produces.
    #[error("relative-index stream ends with a filler at entry {index} (non-canonical)")]
    TrailingFiller {
        /// Index of the last symbol.
        index: usize,
    },
}
