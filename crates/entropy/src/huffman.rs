//! Canonical Huffman codes: construction (optionally length-limited),
//! compact serialization as code lengths, fast encoding and table-driven
//! decoding.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use bitvec::prelude::*;

use crate::bits::{bitslice_bytes, peek_word, BitReader, BitWriter};
use crate::EntropyError;

/// Longest code word supported, in bits. Codes built without an explicit
/// limit are limited to this length (only pathological, Fibonacci-like
/// frequency sets with totals above ~3.5 million ever need longer codes).
pub const MAX_CODE_LEN: u8 = 32;

/// Largest alphabet supported (symbols `0..65536`).
pub const MAX_ALPHABET: usize = 1 << 16;

/// Width of the primary decoding table index.
const TABLE_BITS: u32 = 11;
const TABLE_SIZE: usize = 1 << TABLE_BITS;
/// Width of the alphabet-size field of a serialized length table.
const ALPHABET_FIELD_BITS: u32 = 17;
/// Width of the length-width field of a serialized length table.
const WIDTH_FIELD_BITS: u32 = 3;

/// A canonical Huffman code over the alphabet `0..alphabet_size()`.
///
/// The code is fully determined by its code lengths: code words are assigned
/// in order of (length, symbol), each length's first code word following the
/// previous length's last one (the DEFLATE convention). A length of 0 means
/// the symbol has no code word. The struct also carries the encoding table
/// and the decoding tables derived from the lengths.
#[derive(Clone)]
pub struct HuffmanCode {
    lengths: Vec<u8>,
    /// `(code << 6) | len` per symbol, 0 for symbols without a code word.
    enc: Vec<u64>,
    min_len: u8,
    max_len: u8,
    /// Primary table: `(symbol << 8) | len` for code words of length
    /// `<= TABLE_BITS`, 0 for prefixes that need the slow path.
    single: Box<[u32; TABLE_SIZE]>,
    /// Multi-symbol table: bits 0..4 total length, bits 4..8 symbol count
    /// (0 = slow path), bits 8..56 up to `48 / sym_width` symbols of
    /// `sym_width` bits each, the first in the lowest bits.
    multi: Box<[u64; TABLE_SIZE]>,
    /// 8, 12 or 16: the smallest width holding every symbol of the alphabet.
    sym_width: u32,
    /// Canonical decoding: first code word and first sorted index per length.
    first_code: [u64; MAX_CODE_LEN as usize + 1],
    first_index: [u32; MAX_CODE_LEN as usize + 1],
    count: [u32; MAX_CODE_LEN as usize + 1],
    /// Coded symbols sorted by (length, symbol).
    sorted: Vec<u32>,
}

impl std::fmt::Debug for HuffmanCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HuffmanCode")
            .field("alphabet", &self.lengths.len())
            .field("coded_symbols", &self.sorted.len())
            .field("min_len", &self.min_len)
            .field("max_len", &self.max_len)
            .field("lengths", &self.lengths)
            .finish()
    }
}

impl PartialEq for HuffmanCode {
    fn eq(&self, other: &Self) -> bool {
        self.lengths == other.lengths
    }
}
impl Eq for HuffmanCode {}

/// Counts symbol occurrences; every symbol must be `< alphabet`.
pub fn frequencies(symbols: &[u32], alphabet: usize) -> Result<Vec<u64>, EntropyError> {
    if alphabet > MAX_ALPHABET {
        return Err(EntropyError::AlphabetTooLarge {
            size: alphabet,
            max: MAX_ALPHABET,
        });
    }
    let mut freqs = vec![0u64; alphabet];
    for (index, &s) in symbols.iter().enumerate() {
        match freqs.get_mut(s as usize) {
            Some(f) => *f += 1,
            None => {
                return Err(EntropyError::SymbolNotInCode {
                    index,
                    symbol: s,
                    alphabet,
                })
            }
        }
    }
    Ok(freqs)
}

impl HuffmanCode {
    /// Builds an optimal code for `freqs` (one entry per symbol of the
    /// alphabet; zero-frequency symbols get no code word).
    ///
    /// With `max_len = None` the result is a plain Huffman code (limited to
    /// [`MAX_CODE_LEN`] only in the pathological case where it would be
    /// longer). With `Some(l)` code lengths are at most `l` and the code is
    /// optimal among such codes (package-merge); the limit is applied only
    /// when the plain Huffman code exceeds it, so the result equals the plain
    /// code whenever the limit does not bind.
    ///
    /// Edge cases: no used symbol gives the empty code (all lengths 0); a
    /// single used symbol gets length 1 (one bit per occurrence, never 0).
    pub fn from_frequencies(freqs: &[u64], max_len: Option<u8>) -> Result<Self, EntropyError> {
        if freqs.len() > MAX_ALPHABET {
            return Err(EntropyError::AlphabetTooLarge {
                size: freqs.len(),
                max: MAX_ALPHABET,
            });
        }
        let limit = max_len.unwrap_or(MAX_CODE_LEN);
        let mut used: Vec<(u64, u32)> = freqs
            .iter()
            .enumerate()
            .filter(|(_, &f)| f > 0)
            .map(|(s, &f)| (f, s as u32))
            .collect();
        if limit == 0 || limit > MAX_CODE_LEN || (used.len() as u64) > (1u64 << limit) {
            return Err(EntropyError::InvalidMaxLen {
                max_len: limit,
                used_symbols: used.len(),
                max: MAX_CODE_LEN,
            });
        }
        let mut lengths = vec![0u8; freqs.len()];
        match used.len() {
            0 => {}
            1 => lengths[used[0].1 as usize] = 1,
            _ => {
                used.sort_unstable();
                let weights: Vec<u64> = used.iter().map(|&(f, _)| f).collect();
                let mut lens = huffman_lengths(&weights);
                if lens.iter().any(|&l| l > u32::from(limit)) {
                    lens = package_merge(&weights, u32::from(limit));
                }
                for (&(_, s), &l) in used.iter().zip(&lens) {
                    lengths[s as usize] = l as u8;
                }
            }
        }
        Self::from_lengths(&lengths)
    }

    /// Counts `symbols` over `0..alphabet` and builds the code for them.
    pub fn from_symbols(
        symbols: &[u32],
        alphabet: usize,
        max_len: Option<u8>,
    ) -> Result<Self, EntropyError> {
        Self::from_frequencies(&frequencies(symbols, alphabet)?, max_len)
    }

    /// Rebuilds a canonical code from its code lengths (0 = no code word).
    ///
    /// Fails when the alphabet is too large, a length exceeds
    /// [`MAX_CODE_LEN`], or the lengths over-subscribe the code space
    /// (Kraft sum above 1: not a prefix code). Incomplete codes (Kraft sum
    /// below 1) are accepted; their unused code words decode as errors.
    pub fn from_lengths(lengths: &[u8]) -> Result<Self, EntropyError> {
        if lengths.len() > MAX_ALPHABET {
            return Err(EntropyError::AlphabetTooLarge {
                size: lengths.len(),
                max: MAX_ALPHABET,
            });
        }
        const N: usize = MAX_CODE_LEN as usize + 1;
        let mut count = [0u32; N];
        let mut kraft: u64 = 0;
        for (s, &l) in lengths.iter().enumerate() {
            if l > MAX_CODE_LEN {
                return Err(EntropyError::CodeLengthTooLong {
                    symbol: s as u32,
                    len: u32::from(l),
                    max: MAX_CODE_LEN,
                });
            }
            if l > 0 {
                count[l as usize] += 1;
                kraft += 1u64 << (MAX_CODE_LEN - l);
            }
        }
        if kraft > 1u64 << MAX_CODE_LEN {
            return Err(EntropyError::OversubscribedLengths { kraft_sum: kraft });
        }
        let mut first_code = [0u64; N];
        let mut first_index = [0u32; N];
        let mut code = 0u64;
        let mut index = 0u32;
        for l in 1..N {
            code = (code + u64::from(count[l - 1])) << 1;
            first_code[l] = code;
            first_index[l] = index;
            index += count[l];
        }
        // first_code[1] must be 0: count[0] counts nothing.
        let mut sorted: Vec<u32> = (0..lengths.len() as u32)
            .filter(|&s| lengths[s as usize] > 0)
            .collect();
        sorted.sort_by_key(|&s| (lengths[s as usize], s));
        let mut next = first_code;
        let mut enc = vec![0u64; lengths.len()];
        let mut single = Box::new([0u32; TABLE_SIZE]);
        for &s in &sorted {
            let l = lengths[s as usize];
            let c = next[l as usize];
            next[l as usize] += 1;
            enc[s as usize] = (c << 6) | u64::from(l);
            if u32::from(l) <= TABLE_BITS {
                let shift = TABLE_BITS - u32::from(l);
                let lo = (c << shift) as usize;
                let hi = ((c + 1) << shift) as usize;
                for e in &mut single[lo..hi] {
                    *e = (s << 8) | u32::from(l);
                }
            }
        }
        let sym_width = match lengths.len() {
            0..=256 => 8,
            257..=4096 => 12,
            _ => 16,
        };
        let multi = build_multi(&single, sym_width);
        let min_len = (1..N).find(|&l| count[l] > 0).unwrap_or(0) as u8;
        let max_len = (1..N).rev().find(|&l| count[l] > 0).unwrap_or(0) as u8;
        Ok(Self {
            lengths: lengths.to_vec(),
            enc,
            min_len,
            max_len,
            single,
            multi,
            sym_width,
            first_code,
            first_index,
            count,
            sorted,
        })
    }

    /// Code length of every symbol (0 = no code word).
    pub fn lengths(&self) -> &[u8] {
        &self.lengths
    }

    /// Number of symbols in the alphabet.
    pub fn alphabet_size(&self) -> usize {
        self.lengths.len()
    }

    /// Shortest code length (0 for the empty code).
    pub fn min_len(&self) -> u8 {
        self.min_len
    }

    /// Longest code length (0 for the empty code).
    pub fn max_len(&self) -> u8 {
        self.max_len
    }

    /// The canonical code word of `symbol` as `(bits, length)`, the code
    /// word in the low `length` bits; `None` when the symbol has none.
    pub fn codeword(&self, symbol: u32) -> Option<(u32, u8)> {
        let e = *self.enc.get(symbol as usize)?;
        (e != 0).then_some(((e >> 6) as u32, (e & 63) as u8))
    }

    /// Total encoded size in bits of a message with these symbol counts:
    /// Σ freq·len. Fails if a symbol with nonzero count has no code word.
    pub fn encoded_bits(&self, freqs: &[u64]) -> Result<u64, EntropyError> {
        let mut total = 0u64;
        for (s, &f) in freqs.iter().enumerate() {
            if f == 0 {
                continue;
            }
            match self.lengths.get(s) {
                Some(&l) if l > 0 => total = total.saturating_add(f.saturating_mul(u64::from(l))),
                _ => {
                    return Err(EntropyError::SymbolNotInCode {
                        index: s,
                        symbol: s as u32,
                        alphabet: self.lengths.len(),
                    })
                }
            }
        }
        Ok(total)
    }

    /// Average code length in bits per symbol, Σ freq·len / Σ freq
    /// (0 when all counts are 0).
    pub fn average_bits(&self, freqs: &[u64]) -> Result<f64, EntropyError> {
        let bits = self.encoded_bits(freqs)?;
        let n: u64 = freqs.iter().fold(0u64, |a, &f| a.saturating_add(f));
        Ok(if n == 0 { 0.0 } else { bits as f64 / n as f64 })
    }

    /// Encodes `symbols` into a fresh bit vector.
    pub fn encode(&self, symbols: &[u32]) -> Result<BitVec<u8, Msb0>, EntropyError> {
        let mut w =
            BitWriter::with_capacity_bits(symbols.len() * usize::from(self.max_len.max(1)) / 2);
        self.encode_into(symbols, &mut w)?;
        Ok(w.into_bitvec())
    }

    /// Appends the code words of `symbols` to `w`. On error nothing is
    /// appended.
    pub fn encode_into(&self, symbols: &[u32], w: &mut BitWriter) -> Result<(), EntropyError> {
        const CHUNK: usize = 1024;
        let start_len = w.bytes.len();
        let (start_acc, start_nacc) = (w.acc, w.nacc);
        // Bring the writer to fewer than 8 pending bits.
        while w.nacc >= 8 {
            w.nacc -= 8;
            w.bytes.push((w.acc >> w.nacc) as u8);
        }
        let mut acc = w.acc;
        let mut nacc = w.nacc;
        let enc = self.enc.as_slice();
        let mut bad = false;
        // Each code word is at most 32 bits: a chunk fills at most 4 bytes
        // per symbol, plus 8 bytes of slack for the unconditional stores.
        let mut buf = [0u8; CHUNK * 4 + 8];
        for chunk in symbols.chunks(CHUNK) {
            let mut p = 0usize;
            for &s in chunk {
                let e = enc.get(s as usize).copied().unwrap_or(0);
                bad |= e == 0;
                let len = (e & 63) as u32;
                // nacc < 8 and len <= 32, so nothing is lost from `acc`.
                acc = (acc << len) | (e >> 6);
                nacc += len;
                // Branch-free flush: store the pending bits MSB-aligned, keep
                // the whole bytes, carry the remaining < 8 bits.
                let out = acc.wrapping_shl(64 - nacc);
                if let Some(dst) = buf.get_mut(p..p + 8) {
                    dst.copy_from_slice(&out.to_be_bytes());
                }
                p += (nacc >> 3) as usize;
                nacc &= 7;
            }
            w.bytes.extend_from_slice(&buf[..p]);
        }
        if bad {
            w.bytes.truncate(start_len);
            w.acc = start_acc;
            w.nacc = start_nacc;
            let index = symbols
                .iter()
                .position(|&s| self.enc.get(s as usize).copied().unwrap_or(0) == 0)
                .unwrap_or(0);
            return Err(EntropyError::SymbolNotInCode {
                index,
                symbol: symbols.get(index).copied().unwrap_or(0),
                alphabet: self.lengths.len(),
            });
        }
        w.acc = if nacc == 0 {
            0
        } else {
            acc & (u64::MAX >> (64 - nacc))
        };
        w.nacc = nacc;
        Ok(())
    }

    /// Decodes exactly `count` symbols from the start of `bits`.
    pub fn decode(
        &self,
        bits: &BitSlice<u8, Msb0>,
        count: usize,
    ) -> Result<Vec<u32>, EntropyError> {
        let bytes = bitslice_bytes(bits);
        let mut out = Vec::new();
        self.decode_raw(&bytes, 0, bits.len() as u64, count, &mut out)?;
        Ok(out)
    }

    /// Decodes exactly `count` symbols from `r`, appending them to `out`.
    /// The reader ends right after the last code word; on error `out` and
    /// the reader are left unchanged.
    pub fn decode_from(
        &self,
        r: &mut BitReader<'_>,
        count: usize,
        out: &mut Vec<u32>,
    ) -> Result<(), EntropyError> {
        r.pos = self.decode_raw(r.data, r.pos, r.end, count, out)?;
        Ok(())
    }

    /// Slow path: canonical decoding of one code word longer than the table,
    /// or one whose prefix is unassigned. `w` is MSB-aligned at `pos`.
    #[cold]
    #[inline(never)]
    fn decode_slow(&self, w: u64, pos: u64) -> Result<(u32, u32), EntropyError> {
        for l in 1..=u32::from(self.max_len) {
            let code = w >> (64 - l);
            let offset = code.wrapping_sub(self.first_code[l as usize]);
            if offset < u64::from(self.count[l as usize]) {
                let i = self.first_index[l as usize] as usize + offset as usize;
                if let Some(&s) = self.sorted.get(i) {
                    return Ok((s, l));
                }
            }
        }
        Err(EntropyError::InvalidCodeword { at_bit: pos })
    }

    /// Core decoder over `data` bits `[start, end)`; returns the end position.
    fn decode_raw(
        &self,
        data: &[u8],
        start: u64,
        end: u64,
        count: usize,
        out: &mut Vec<u32>,
    ) -> Result<u64, EntropyError> {
        if count == 0 {
            return Ok(start);
        }
        if self.max_len == 0 {
            return Err(EntropyError::EmptyCode {
                requested: count as u64,
            });
        }
        let bits = end.saturating_sub(start);
        let max_possible = bits / u64::from(self.min_len);
        if count as u64 > max_possible {
            return Err(EntropyError::CountExceedsStream {
                requested: count as u64,
                bits,
                min_len: self.min_len,
                max_possible,
            });
        }
        let base = out.len();
        out.reserve(count);
        let result = match self.sym_width {
            8 => self.decode_loop::<8>(data, start, end, count, out),
            12 => self.decode_loop::<12>(data, start, end, count, out),
            _ => self.decode_loop::<16>(data, start, end, count, out),
        };
        if result.is_err() {
            out.truncate(base);
        }
        result
    }

    /// Decodes `count` symbols starting at bit `start`, appending to `out`.
    /// `SW` is the width of one symbol in the multi-symbol table entries.
    #[inline(never)]
    fn decode_loop<const SW: u32>(
        &self,
        data: &[u8],
        start: u64,
        end: u64,
        count: usize,
        out: &mut Vec<u32>,
    ) -> Result<u64, EntropyError> {
        const CHUNK: usize = 4096;
        let cap = (48 / SW) as usize;
        let mask = (1u64 << SW) - 1;
        // Symbols one refill can produce: five lookups of `cap`, or four
        // lookups and one slow-path symbol.
        let per_refill = 5 * cap;
        let multi: &[u64; TABLE_SIZE] = &self.multi;
        let single: &[u32; TABLE_SIZE] = &self.single;
        let mut buf = [0u32; CHUNK + 32];
        let mut done = 0usize;
        // Fast path: a 64-bit buffer of MSB-aligned bits, refilled
        // branch-free to at least 57 valid bits, then up to five table
        // lookups, each consuming at most TABLE_BITS = 11 bits and producing
        // up to `cap` symbols. `byte` is the next byte to load; the bit
        // offset of the first unconsumed bit is `byte * 8 - bitcount`.
        let mut byte = (start >> 3) as usize + 8;
        let mut bitbuf = peek_word(data, start);
        let mut bitcount = 64 - (start & 7) as u32;
        let pos_of = |byte: usize, bitcount: u32| (byte as u64) * 8 - u64::from(bitcount);
        loop {
            let limit = (count - done).min(CHUNK);
            let mut n = 0usize;
            // Per iteration at most 5 * 11 table bits plus one slow-path
            // code word (<= 32 bits) are consumed: 87 < 128 bits before `end`.
            while n + per_refill < limit
                && pos_of(byte, bitcount) + 128 <= end
                && byte + 8 <= data.len()
            {
                // Refill: the free low (64 - bitcount) bits receive the next
                // bytes; only whole bytes count as loaded. The bits of a
                // partially loaded byte are harmless: the next refill ORs the
                // very same bits into the very same place.
                let mut a = [0u8; 8];
                a.copy_from_slice(&data[byte..byte + 8]);
                bitbuf |= u64::from_be_bytes(a).checked_shr(bitcount).unwrap_or(0);
                let loaded = (64 - bitcount) >> 3;
                byte += loaded as usize;
                bitcount += loaded * 8;
                let mut slow = false;
                for _ in 0..5 {
                    let e = multi[(bitbuf >> (64 - TABLE_BITS)) as usize];
                    let k = ((e >> 4) & 15) as usize;
                    if k == 0 {
                        slow = true;
                        break;
                    }
                    let d = &mut buf[n..n + cap];
                    for (i, slot) in d.iter_mut().enumerate() {
                        *slot = ((e >> (8 + SW * i as u32)) & mask) as u32;
                    }
                    n += k;
                    let len = (e & 15) as u32;
                    bitbuf <<= len;
                    bitcount -= len;
                }
                if slow {
                    if bitcount < u32::from(MAX_CODE_LEN) {
                        // Reload exactly at the current position.
                        let pos = pos_of(byte, bitcount);
                        bitbuf = peek_word(data, pos);
                        byte = (pos >> 3) as usize + 8;
                        bitcount = 64 - (pos & 7) as u32;
                    }
                    let (s, l) = self.decode_slow(bitbuf, pos_of(byte, bitcount))?;
                    buf[n] = s;
                    n += 1;
                    bitbuf <<= l;
                    bitcount -= l;
                }
            }
            if n == 0 {
                break;
            }
            out.extend_from_slice(&buf[..n]);
            done += n;
        }
        // Careful tail: one symbol at a time with exact end checks.
        let mut pos = pos_of(byte, bitcount);
        while done < count {
            let w = peek_word(data, pos);
            let e = single[(w >> (64 - TABLE_BITS)) as usize];
            let (s, l) = if e & 0xFF != 0 {
                (e >> 8, e & 0xFF)
            } else {
                self.decode_slow(w, pos)?
            };
            let available = end - pos;
            if u64::from(l) > available {
                return Err(EntropyError::UnexpectedEnd {
                    at_bit: pos,
                    needed: u64::from(l),
                    available,
                });
            }
            out.push(s);
            done += 1;
            pos += u64::from(l);
        }
        Ok(pos)
    }

    /// Serializes the code as its code lengths (see the crate docs for the
    /// exact layout).
    pub fn write_lengths(&self, w: &mut BitWriter) {
        w.put(self.lengths.len() as u64, ALPHABET_FIELD_BITS);
        let width = bit_width(u64::from(self.max_len));
        w.put(u64::from(width), WIDTH_FIELD_BITS);
        if width == 0 {
            return;
        }
        let mut i = 0;
        while i < self.lengths.len() {
            let l = self.lengths[i];
            w.put(u64::from(l), width);
            if l == 0 {
                let run = self.lengths[i..].iter().take_while(|&&x| x == 0).count();
                write_gamma(w, run as u64);
                i += run;
            } else {
                i += 1;
            }
        }
    }

    /// Serialized size in bits of [`Self::write_lengths`].
    pub fn lengths_bits(&self) -> u64 {
        let mut w = BitWriter::new();
        self.write_lengths(&mut w);
        w.bit_len()
    }

    /// Reads a table written by [`Self::write_lengths`] and rebuilds the code.
    /// Every field is validated: alphabet size, length width, each length,
    /// run lengths (maximal and inside the alphabet), Kraft's inequality.
    pub fn read_lengths(r: &mut BitReader<'_>) -> Result<Self, EntropyError> {
        let at = r.position();
        let n = r.read_bits(ALPHABET_FIELD_BITS)? as usize;
        if n > MAX_ALPHABET {
            return Err(EntropyError::MalformedLengthTable {
                at_bit: at,
                reason: format!("alphabet size {n} exceeds {MAX_ALPHABET}"),
            });
        }
        let at_w = r.position();
        let width = r.read_bits(WIDTH_FIELD_BITS)?;
        if width > bit_width(u64::from(MAX_CODE_LEN)) {
            return Err(EntropyError::MalformedLengthTable {
                at_bit: at_w,
                reason: format!(
                    "length width {width} exceeds {}",
                    bit_width(u64::from(MAX_CODE_LEN))
                ),
            });
        }
        if width > 0 && n == 0 {
            return Err(EntropyError::MalformedLengthTable {
                at_bit: at_w,
                reason: "nonzero length width for an empty alphabet".into(),
            });
        }
        let mut lengths = vec![0u8; n];
        if width > 0 {
            let mut i = 0;
            let mut prev_was_run = false;
            while i < n {
                let at_l = r.position();
                let l = r.read_bits(width)?;
                if l > u32::from(MAX_CODE_LEN) {
                    return Err(EntropyError::MalformedLengthTable {
                        at_bit: at_l,
                        reason: format!("code length {l} of symbol {i} exceeds {MAX_CODE_LEN}"),
                    });
                }
                if l == 0 {
                    if prev_was_run {
                        return Err(EntropyError::MalformedLengthTable {
                            at_bit: at_l,
                            reason: "two consecutive zero runs (non-canonical)".into(),
                        });
                    }
                    let run = read_gamma(r)?;
                    if run > (n - i) as u64 {
                        return Err(EntropyError::MalformedLengthTable {
                            at_bit: at_l,
                            reason: format!("zero run of {run} passes the end of a {n}-symbol alphabet at symbol {i}"),
                        });
                    }
                    i += run as usize;
                    prev_was_run = true;
                } else {
                    lengths[i] = l as u8;
                    i += 1;
                    prev_was_run = false;
                }
            }
        }
        let code = Self::from_lengths(&lengths)?;
        if bit_width(u64::from(code.max_len)) != width {
            return Err(EntropyError::MalformedLengthTable {
                at_bit: at_w,
                reason: format!(
                    "length width {width} does not match the longest code length {}",
                    code.max_len
                ),
            });
        }
        Ok(code)
    }
}

/// Builds the multi-symbol table from the single-symbol table: each entry
/// holds every code word that lies completely inside its 11-bit window, up
/// to `48 / sym_width` of them.
fn build_multi(single: &[u32; TABLE_SIZE], sym_width: u32) -> Box<[u64; TABLE_SIZE]> {
    let cap = 48 / sym_width;
    let mut multi = Box::new([0u64; TABLE_SIZE]);
    for (idx, m) in multi.iter_mut().enumerate() {
        let mut used_bits = 0u32;
        let mut k = 0u32;
        let mut syms = 0u64;
        while k < cap {
            let sub = (idx << used_bits) & (TABLE_SIZE - 1);
            let e = single[sub];
            let l = e & 0xFF;
            if l == 0 || l > TABLE_BITS - used_bits {
                break;
            }
            syms |= u64::from(e >> 8) << (sym_width * k);
            k += 1;
            used_bits += l;
        }
        *m = if k == 0 {
            0
        } else {
            (syms << 8) | (u64::from(k) << 4) | u64::from(used_bits)
        };
    }
    multi
}

/// Bits needed to write `v` in binary (0 for 0).
fn bit_width(v: u64) -> u32 {
    64 - v.leading_zeros()
}

/// Elias gamma code of `v >= 1`: `bit_width(v) - 1` zero bits, then `v`.
fn write_gamma(w: &mut BitWriter, v: u64) {
    let nb = bit_width(v);
    w.put(0, nb - 1);
    w.put(v, nb);
}

fn read_gamma(r: &mut BitReader<'_>) -> Result<u64, EntropyError> {
    let at = r.position();
    let mut zeros = 0u32;
    while !r.read_bit()? {
        zeros += 1;
        if zeros > ALPHABET_FIELD_BITS {
            return Err(EntropyError::MalformedLengthTable {
                at_bit: at,
                reason: "zero-run length code longer than 17 bits".into(),
            });
        }
    }
    let rest = r.read_bits(zeros)?;
    Ok((1u64 << zeros) | u64::from(rest))
}

/// Optimal (unlimited) Huffman code lengths for ascending `weights`
/// (at least two), by the two-queue method with deterministic ties.
fn huffman_lengths(weights: &[u64]) -> Vec<u32> {
    let m = weights.len();
    let mut parent = vec![0usize; 2 * m - 1];
    let mut node_w: Vec<u128> = Vec::with_capacity(m - 1);
    let (mut li, mut ni) = (0usize, 0usize);
    let mut pick = |node_w: &Vec<u128>| -> (usize, u128) {
        let leaf = weights.get(li).map(|&w| u128::from(w));
        let node = node_w.get(ni).copied();
        match (leaf, node) {
            (Some(a), Some(b)) if a <= b => {
                li += 1;
                (li - 1, a)
            }
            (Some(a), None) => {
                li += 1;
                (li - 1, a)
            }
            (_, Some(b)) => {
                ni += 1;
                (m + ni - 1, b)
            }
            (None, None) => (0, 0), // unreachable: 2m-1 picks from 2m-1 nodes
        }
    };
    for k in 0..m - 1 {
        let (a, wa) = pick(&node_w);
        let (b, wb) = pick(&node_w);
        parent[a] = m + k;
        parent[b] = m + k;
        node_w.push(wa + wb);
    }
    let mut depth = vec![0u32; 2 * m - 1];
    for i in (0..2 * m - 2).rev() {
        depth[i] = depth[parent[i]] + 1;
    }
    depth.truncate(m);
    depth
}

/// Optimal length-limited code lengths for ascending `weights` (at least
/// two, `weights.len() <= 2^limit`) by the package-merge algorithm.
fn package_merge(weights: &[u64], limit: u32) -> Vec<u32> {
    let m = weights.len();
    // is_leaf[j]: for the list at depth limit-j, whether each item (in merged
    // order) is a leaf (true) or a package (false).
    let mut is_leaf: Vec<Vec<bool>> = Vec::with_capacity(limit as usize);
    let mut prev: Vec<u128> = Vec::new();
    for _ in 0..limit {
        let packages: Vec<u128> = prev.chunks_exact(2).map(|p| p[0] + p[1]).collect();
        let mut merged = Vec::with_capacity(m + packages.len());
        let mut flags = Vec::with_capacity(m + packages.len());
        let (mut i, mut j) = (0, 0);
        while i < m || j < packages.len() {
            let take_leaf = j >= packages.len() || (i < m && u128::from(weights[i]) <= packages[j]);
            if take_leaf {
                merged.push(u128::from(weights[i]));
                flags.push(true);
                i += 1;
            } else {
                merged.push(packages[j]);
                flags.push(false);
                j += 1;
            }
        }
        is_leaf.push(flags);
        prev = merged;
    }
    let mut lens = vec![0u32; m];
    let mut take = 2 * m - 2;
    for flags in is_leaf.iter().rev() {
        let taken = &flags[..take.min(flags.len())];
        let leaves = taken.iter().filter(|&&b| b).count();
        for l in &mut lens[..leaves] {
            *l += 1;
        }
        take = 2 * (taken.len() - leaves);
        if take == 0 {
            break;
        }
    }
    lens
}

/// Reference for tests: the total cost Σ freq·len of an optimal Huffman
/// code and the height of the tree, computed with a plain binary heap (the
/// cost equals the sum of all merged weights). Symbols with zero frequency
/// are ignored; fewer than two used symbols give cost 0.
pub fn reference_huffman_cost(freqs: &[u64]) -> (u128, u32) {
    let mut heap: BinaryHeap<Reverse<(u128, u32)>> = freqs
        .iter()
        .filter(|&&f| f > 0)
        .map(|&f| Reverse((u128::from(f), 0)))
        .collect();
    let mut cost = 0u128;
    while heap.len() > 1 {
        let Reverse((a, da)) = heap.pop().unwrap_or(Reverse((0, 0)));
        let Reverse((b, db)) = heap.pop().unwrap_or(Reverse((0, 0)));
        cost += a + b;
        heap.push(Reverse((a + b, da.max(db) + 1)));
    }
    let height = heap.pop().map_or(0, |Reverse((_, d))| d);
    (cost, height)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    fn kraft(lengths: &[u8]) -> f64 {
        lengths
            .iter()
            .filter(|&&l| l > 0)
            .map(|&l| 0.5f64.powi(i32::from(l)))
            .sum()
    }

    fn round_trip(code: &HuffmanCode, symbols: &[u32]) {
        let bits = code.encode(symbols).unwrap();
        let freqs = frequencies(symbols, code.alphabet_size()).unwrap();
        assert_eq!(bits.len() as u64, code.encoded_bits(&freqs).unwrap());
        assert_eq!(code.decode(&bits, symbols.len()).unwrap(), symbols);
    }

    #[test]
    fn empty_input() {
        let code = HuffmanCode::from_frequencies(&[], None).unwrap();
        assert_eq!(code.max_len(), 0);
        assert_eq!(code.encode(&[]).unwrap().len(), 0);
        assert_eq!(
            code.decode(BitSlice::empty(), 0).unwrap(),
            Vec::<u32>::new()
        );
        assert!(matches!(
            code.decode(BitSlice::empty(), 1),
            Err(EntropyError::EmptyCode { requested: 1 })
        ));
        let zeros = HuffmanCode::from_frequencies(&[0, 0, 0], None).unwrap();
        assert_eq!(zeros.lengths(), &[0, 0, 0]);
        assert!(zeros.encode(&[1]).is_err());
        assert_eq!(zeros.average_bits(&[0, 0, 0]).unwrap(), 0.0);
    }

    #[test]
    fn single_symbol_is_one_bit() {
        let code = HuffmanCode::from_frequencies(&[0, 0, 7, 0], None).unwrap();
        assert_eq!(code.lengths(), &[0, 0, 1, 0]);
        assert_eq!(code.average_bits(&[0, 0, 7, 0]).unwrap(), 1.0);
        round_trip(&code, &[2; 7]);
        // The unused code word `1` is an error, not a symbol.
        let bad = bitvec![u8, Msb0; 0, 1];
        assert_eq!(
            code.decode(&bad, 2),
            Err(EntropyError::InvalidCodeword { at_bit: 1 })
        );
    }

    #[test]
    fn uniform_frequencies() {
        for n in [2usize, 3, 5, 8, 13, 32, 100, 256, 1000, 4096] {
            let code = HuffmanCode::from_frequencies(&vec![10; n], None).unwrap();
            let lo = (n as f64).log2().floor() as u8;
            let hi = (n as f64).log2().ceil() as u8;
            assert!(code.lengths().iter().all(|&l| l == lo || l == hi), "n={n}");
            assert!((kraft(code.lengths()) - 1.0).abs() < 1e-12);
        }
    }

    #[test]
    fn skewed_and_fibonacci_frequencies() {
        let mut fib = vec![1u64, 1];
        while fib.len() < 40 {
            let k = fib.len();
            fib.push(fib[k - 1] + fib[k - 2]);
        }
        // Unlimited Huffman would need 39 bits here; the default cap is 32.
        let code = HuffmanCode::from_frequencies(&fib, None).unwrap();
        assert_eq!(code.max_len(), MAX_CODE_LEN);
        assert!((kraft(code.lengths()) - 1.0).abs() < 1e-9);
        let short = &fib[..20];
        let code = HuffmanCode::from_frequencies(short, None).unwrap();
        assert_eq!(code.max_len(), 19);
        assert_eq!(
            u128::from(code.encoded_bits(short).unwrap()),
            reference_huffman_cost(short).0
        );
        let skew = [1_000_000u64, 1, 1, 1];
        let code = HuffmanCode::from_frequencies(&skew, None).unwrap();
        assert_eq!(code.lengths(), &[1, 3, 3, 2]);
    }

    #[test]
    fn matches_heap_reference_on_random_frequencies() {
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        for trial in 0..300 {
            let n = rng.random_range(2..400usize);
            let freqs: Vec<u64> = (0..n)
                .map(|_| match trial % 3 {
                    0 => rng.random_range(0..1000u64),
                    1 => 1u64 << rng.random_range(0..30u32),
                    _ => rng.random_range(0..3u64),
                })
                .collect();
            let code = HuffmanCode::from_frequencies(&freqs, None).unwrap();
            let used = freqs.iter().filter(|&&f| f > 0).count();
            let (ref_cost, height) = reference_huffman_cost(&freqs);
            let expect = if used == 1 {
                freqs.iter().sum::<u64>() as u128
            } else {
                ref_cost
            };
            let got = u128::from(code.encoded_bits(&freqs).unwrap());
            if height <= u32::from(MAX_CODE_LEN) {
                // Some optimal code fits the 32-bit cap, so ours is optimal.
                assert_eq!(got, expect, "trial {trial}");
            } else {
                assert!(
                    got >= expect && code.max_len() == MAX_CODE_LEN,
                    "trial {trial}"
                );
                continue;
            }
            let total: u64 = freqs.iter().sum();
            if total > 0 {
                let avg = code.average_bits(&freqs).unwrap();
                assert!((avg - expect as f64 / total as f64).abs() < 1e-12);
            }
        }
    }

    /// Exhaustive optimum of Σ w·len over length vectors within `limit`
    /// satisfying Kraft.
    fn brute_force_limited(weights: &[u64], limit: u8) -> u64 {
        let n = weights.len();
        let mut best = u64::MAX;
        let mut lens = vec![1u8; n];
        loop {
            if kraft(&lens) <= 1.0 + 1e-12 {
                let c: u64 = weights
                    .iter()
                    .zip(&lens)
                    .map(|(&w, &l)| w * u64::from(l))
                    .sum();
                best = best.min(c);
            }
            let mut i = 0;
            loop {
                if i == n {
                    return best;
                }
                lens[i] += 1;
                if lens[i] <= limit {
                    break;
                }
                lens[i] = 1;
                i += 1;
            }
        }
    }

    #[test]
    fn length_limited_is_optimal_and_bounded() {
        let mut rng = ChaCha8Rng::seed_from_u64(11);
        for _ in 0..150 {
            let n = rng.random_range(2..7usize);
            let freqs: Vec<u64> = (0..n).map(|_| 1u64 << rng.random_range(0..12u32)).collect();
            let min_limit = (n as f64).log2().ceil() as u8;
            for limit in min_limit.max(1)..=4 {
                let code = HuffmanCode::from_frequencies(&freqs, Some(limit)).unwrap();
                assert!(code.max_len() <= limit);
                assert_eq!(
                    code.encoded_bits(&freqs).unwrap(),
                    brute_force_limited(&freqs, limit)
                );
            }
        }
        // Large alphabet with a tight limit.
        let freqs: Vec<u64> = (0..5000u64)
            .map(|i| 1 + (i * i) % 977 + (1 << (i % 20)))
            .collect();
        let code = HuffmanCode::from_frequencies(&freqs, Some(13)).unwrap();
        assert!(code.max_len() <= 13);
        assert!(kraft(code.lengths()) <= 1.0 + 1e-12);
        let syms: Vec<u32> = (0..20000u32).map(|i| (i * 7919) % 5000).collect();
        round_trip(&code, &syms);
        assert!(matches!(
            HuffmanCode::from_frequencies(&[1, 1, 1, 1, 1], Some(2)),
            Err(EntropyError::InvalidMaxLen { .. })
        ));
        assert!(HuffmanCode::from_frequencies(&[1, 1], Some(33)).is_err());
    }

    #[test]
    fn full_alphabet_round_trip() {
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let syms: Vec<u32> = (0..200_000)
            .map(|_| {
                let r: f64 = rng.random();
                ((r * r * r * r) * 65536.0) as u32
            })
            .collect();
        let code = HuffmanCode::from_symbols(&syms, MAX_ALPHABET, None).unwrap();
        assert!(code.max_len() > TABLE_BITS as u8, "exercise the slow path");
        round_trip(&code, &syms);
        let mut w = BitWriter::new();
        code.write_lengths(&mut w);
        let (bytes, len) = w.finish();
        let mut r = BitReader::with_bit_len(&bytes, len).unwrap();
        assert_eq!(HuffmanCode::read_lengths(&mut r).unwrap(), code);
        assert!(r.is_at_end());
        assert!(HuffmanCode::from_frequencies(&vec![1; MAX_ALPHABET + 1], None).is_err());
    }

    #[test]
    fn decode_from_reader_positions_exactly() {
        let code = HuffmanCode::from_frequencies(&[5, 3, 1, 1], None).unwrap();
        let a: Vec<u32> = (0..100).map(|i| (i * 7 % 4) as u32).collect();
        let mut w = BitWriter::new();
        w.write_bits(0b101, 3).unwrap();
        code.encode_into(&a, &mut w).unwrap();
        w.write_bits(0x3FF, 10).unwrap();
        let (bytes, len) = w.finish();
        let mut r = BitReader::with_bit_len(&bytes, len).unwrap();
        assert_eq!(r.read_bits(3).unwrap(), 0b101);
        let mut out = vec![99];
        code.decode_from(&mut r, a.len(), &mut out).unwrap();
        assert_eq!(out[0], 99);
        assert_eq!(&out[1..], a.as_slice());
        assert_eq!(r.read_bits(10).unwrap(), 0x3FF);
        assert!(r.is_at_end());
    }

    #[test]
    fn corrupted_and_truncated_streams_are_errors() {
        let freqs = [100u64, 50, 20, 5, 3, 1, 1, 0];
        let code = HuffmanCode::from_frequencies(&freqs, Some(4)).unwrap();
        let syms: Vec<u32> = (0..500u32)
            .map(|i| [0, 0, 1, 0, 2, 1, 3, 4, 5, 6][i as usize % 10])
            .collect();
        let bits = code.encode(&syms).unwrap();
        for cut in [0, 1, bits.len() / 2, bits.len() - 1] {
            assert!(code.decode(&bits[..cut], syms.len()).is_err(), "cut {cut}");
        }
        // Count far beyond what the stream can hold: error, no huge allocation.
        assert!(matches!(
            code.decode(&bits, usize::MAX / 2),
            Err(EntropyError::CountExceedsStream { .. })
        ));
        // An incomplete code has unassigned code words.
        let partial = HuffmanCode::from_lengths(&[1, 2]).unwrap();
        let bad = bitvec![u8, Msb0; 1, 1, 0, 0];
        assert_eq!(
            partial.decode(&bad, 1),
            Err(EntropyError::InvalidCodeword { at_bit: 0 })
        );
        // Flipping bits never panics; it decodes something or errors.
        for i in 0..bits.len() {
            let mut b = bits.clone();
            let v = !b[i];
            b.set(i, v);
            let _ = code.decode(&b, syms.len());
        }
        assert!(matches!(
            code.encode(&[7]),
            Err(EntropyError::SymbolNotInCode { index: 0, .. })
        ));
        assert!(matches!(
            code.encode(&[0, 99]),
            Err(EntropyError::SymbolNotInCode { index: 1, .. })
        ));
    }

    #[test]
    fn invalid_length_tables_are_rejected() {
        assert!(matches!(
            HuffmanCode::from_lengths(&[1, 1, 1]),
            Err(EntropyError::OversubscribedLengths { .. })
        ));
        assert!(matches!(
            HuffmanCode::from_lengths(&[33, 1]),
            Err(EntropyError::CodeLengthTooLong { .. })
        ));
        // Serialized table claiming lengths 1,1,1.
        let mut w = BitWriter::new();
        w.write_bits(3, 17).unwrap();
        w.write_bits(1, 3).unwrap();
        for _ in 0..3 {
            w.write_bits(1, 1).unwrap();
        }
        let (bytes, len) = w.finish();
        assert!(
            HuffmanCode::read_lengths(&mut BitReader::with_bit_len(&bytes, len).unwrap()).is_err()
        );
        // Every truncation of a valid table is an error.
        let code = HuffmanCode::from_frequencies(&[0, 0, 3, 9, 0, 0, 0, 1, 1, 0], None).unwrap();
        let mut w = BitWriter::new();
        code.write_lengths(&mut w);
        let (bytes, len) = w.finish();
        for cut in 0..len {
            let mut r = BitReader::with_bit_len(&bytes, cut).unwrap();
            assert!(HuffmanCode::read_lengths(&mut r).is_err(), "cut {cut}");
        }
        let mut r = BitReader::with_bit_len(&bytes, len).unwrap();
        assert_eq!(HuffmanCode::read_lengths(&mut r).unwrap(), code);
    }
}
