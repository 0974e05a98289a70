//! MSB-first bit I/O.
//!
//! Bit order, used by every stream in this crate and by the `.dcz`
//! container: bits are packed **most significant bit first** within each
//! byte. The first bit written is bit 7 (value `0x80`) of byte 0, the eighth
//! is bit 0 of byte 0, the ninth is bit 7 of byte 1, and so on. A value of
//! `n` bits is written with its most significant bit first. The last byte is
//! padded with zero bits. This is exactly the layout of
//! `bitvec::vec::BitVec<u8, Msb0>`, so the two convert without reshuffling.

use bitvec::prelude::*;

use crate::EntropyError;

/// Largest width accepted by [`BitWriter::write_bits`] and
/// [`BitReader::read_bits`].
pub const MAX_BITS_PER_CALL: u32 = 32;

/// Appends bits MSB-first to a growing byte buffer.
///
/// Internally a 64-bit accumulator collects bits and flushes them 32 at a
/// time, so writing is cheap even for 1-bit fields.
#[derive(Debug, Clone, Default)]
pub struct BitWriter {
    pub(crate) bytes: Vec<u8>,
    /// Pending bits, right-aligned: the low `nacc` bits are not yet flushed.
    pub(crate) acc: u64,
    /// Number of pending bits; always `< 32` between calls.
    pub(crate) nacc: u32,
}

impl BitWriter {
    /// An empty writer.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty writer whose buffer can hold `bits` bits without reallocating.
    pub fn with_capacity_bits(bits: usize) -> Self {
        Self {
            bytes: Vec::with_capacity(bits.div_ceil(8) + 8),
            acc: 0,
            nacc: 0,
        }
    }

    /// Discards everything written, keeping the allocated buffer.
    pub fn clear(&mut self) {
        self.bytes.clear();
        self.acc = 0;
        self.nacc = 0;
    }

    /// Number of bits written so far.
    pub fn bit_len(&self) -> u64 {
        self.bytes.len() as u64 * 8 + u64::from(self.nacc)
    }

    /// Appends the low `n` bits of `value`, most significant first
    /// (`n <= 32`; higher bits of `value` are ignored).
    pub fn write_bits(&mut self, value: u64, n: u32) -> Result<(), EntropyError> {
        if n > MAX_BITS_PER_CALL {
            return Err(EntropyError::BitCountOutOfRange {
                requested: n,
                max: MAX_BITS_PER_CALL,
            });
        }
        let masked = if n == 0 {
            0
        } else {
            value & (u64::MAX >> (64 - n))
        };
        self.put(masked, n);
        Ok(())
    }

    /// Appends one bit.
    pub fn write_bit(&mut self, bit: bool) {
        self.put(u64::from(bit), 1);
    }

    /// Pads with zero bits up to the next byte boundary.
    pub fn align_to_byte(&mut self) {
        let rem = (self.nacc % 8) as usize;
        if rem != 0 {
            self.put(0, (8 - rem) as u32);
        }
    }

    /// Fast append: `code < 2^len`, `len <= 32`.
    #[inline(always)]
    pub(crate) fn put(&mut self, code: u64, len: u32) {
        self.acc = (self.acc << len) | code;
        self.nacc += len;
        if self.nacc >= 32 {
            self.nacc -= 32;
            self.bytes
                .extend_from_slice(&((self.acc >> self.nacc) as u32).to_be_bytes());
        }
    }

    /// Finishes the stream: returns the bytes (last byte zero padded) and the
    /// exact number of bits written.
    pub fn finish(mut self) -> (Vec<u8>, u64) {
        let bit_len = self.bit_len();
        while self.nacc >= 8 {
            self.nacc -= 8;
            self.bytes.push((self.acc >> self.nacc) as u8);
        }
        if self.nacc > 0 {
            self.bytes.push((self.acc << (8 - self.nacc)) as u8);
        }
        (self.bytes, bit_len)
    }

    /// Finishes the stream into a `BitVec` of exactly [`Self::bit_len`] bits.
    pub fn into_bitvec(self) -> BitVec<u8, Msb0> {
        let (bytes, bit_len) = self.finish();
        let mut bv = BitVec::<u8, Msb0>::from_vec(bytes);
        bv.truncate(bit_len as usize);
        bv
    }
}

/// Reads bits MSB-first from a byte slice, never past a declared end.
#[derive(Debug, Clone)]
pub struct BitReader<'a> {
    pub(crate) data: &'a [u8],
    pub(crate) pos: u64,
    pub(crate) end: u64,
}

impl<'a> BitReader<'a> {
    /// A reader over all `8 * data.len()` bits of `data`.
    pub fn new(data: &'a [u8]) -> Self {
        Self {
            data,
            pos: 0,
            end: data.len() as u64 * 8,
        }
    }

    /// A reader over the first `bit_len` bits of `data`.
    pub fn with_bit_len(data: &'a [u8], bit_len: u64) -> Result<Self, EntropyError> {
        if bit_len > data.len() as u64 * 8 {
            return Err(EntropyError::BitLenExceedsBuffer {
                bit_len,
                byte_len: data.len() as u64,
            });
        }
        Ok(Self {
            data,
            pos: 0,
            end: bit_len,
        })
    }

    /// Current bit offset from the start of the data.
    pub fn position(&self) -> u64 {
        self.pos
    }

    /// Bits left before the declared end.
    pub fn remaining(&self) -> u64 {
        self.end - self.pos
    }

    /// Whether every bit has been consumed.
    pub fn is_at_end(&self) -> bool {
        self.pos == self.end
    }

    /// Reads `n <= 32` bits as an unsigned integer (first bit most significant).
    pub fn read_bits(&mut self, n: u32) -> Result<u32, EntropyError> {
        if n > MAX_BITS_PER_CALL {
            return Err(EntropyError::BitCountOutOfRange {
                requested: n,
                max: MAX_BITS_PER_CALL,
            });
        }
        if n == 0 {
            return Ok(0);
        }
        self.need(u64::from(n))?;
        let w = peek_word(self.data, self.pos);
        self.pos += u64::from(n);
        Ok((w >> (64 - n)) as u32)
    }

    /// Reads one bit.
    pub fn read_bit(&mut self) -> Result<bool, EntropyError> {
        Ok(self.read_bits(1)? == 1)
    }

    /// Skips to the next byte boundary; the skipped padding bits must be zero.
    /// Returns `false` (and still skips) when a padding bit is set.
    pub fn align_to_byte(&mut self) -> Result<bool, EntropyError> {
        let rem = (self.pos % 8) as u32;
        if rem == 0 {
            return Ok(true);
        }
        Ok(self.read_bits(8 - rem)? == 0)
    }

    pub(crate) fn need(&self, n: u64) -> Result<(), EntropyError> {
        let available = self.remaining();
        if n > available {
            return Err(EntropyError::UnexpectedEnd {
                at_bit: self.pos,
                needed: n,
                available,
            });
        }
        Ok(())
    }
}

/// The 64 bits starting at bit `pos` of `data`, MSB-aligned; bits past the end
/// of `data` read as zero. At least 57 of the returned bits come from `data`
/// when `data` extends that far.
#[inline(always)]
pub(crate) fn peek_word(data: &[u8], pos: u64) -> u64 {
    let byte = (pos >> 3) as usize;
    let shift = (pos & 7) as u32;
    if let Some(chunk) = data.get(byte..byte.wrapping_add(8)) {
        let mut a = [0u8; 8];
        a.copy_from_slice(chunk);
        u64::from_be_bytes(a) << shift
    } else {
        let mut a = [0u8; 8];
        if let Some(tail) = data.get(byte..) {
            a[..tail.len()].copy_from_slice(tail);
        }
        u64::from_be_bytes(a) << shift
    }
}

/// The bytes of a bit slice, realigned so the first bit is bit 7 of byte 0,
/// with the last byte zero padded.
pub(crate) fn bitslice_bytes(bits: &BitSlice<u8, Msb0>) -> Vec<u8> {
    let mut bv = bits.to_bitvec();
    bv.force_align();
    bv.set_uninitialized(false);
    bv.into_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn msb_first_layout() {
        let mut w = BitWriter::new();
        w.write_bits(0b101, 3).unwrap();
        w.write_bits(0b1, 1).unwrap();
        w.write_bits(0xABCD, 16).unwrap();
        let (bytes, len) = w.finish();
        assert_eq!(len, 20);
        // 101 1 1010 | 1011 1100 | 1101 0000
        assert_eq!(bytes, vec![0b1011_1010, 0b1011_1100, 0b1101_0000]);
        let bv = BitVec::<u8, Msb0>::from_vec(bytes.clone());
        assert!(bv[0] && !bv[1] && bv[2] && bv[3]);
        let mut r = BitReader::with_bit_len(&bytes, len).unwrap();
        assert_eq!(r.read_bits(3).unwrap(), 0b101);
        assert!(r.read_bit().unwrap());
        assert_eq!(r.read_bits(16).unwrap(), 0xABCD);
        assert!(r.is_at_end());
        assert!(matches!(
            r.read_bits(1),
            Err(EntropyError::UnexpectedEnd {
                at_bit: 20,
                needed: 1,
                available: 0
            })
        ));
    }

    #[test]
    fn many_widths_round_trip() {
        let mut w = BitWriter::new();
        let mut expect = Vec::new();
        for i in 0..2000u64 {
            let n = (i % 33) as u32;
            let v = i.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 7;
            w.write_bits(v, n).unwrap();
            expect.push((if n == 0 { 0 } else { v & ((1u64 << n) - 1) }, n));
        }
        let bv = w.into_bitvec();
        let bytes = bitslice_bytes(&bv);
        let mut r = BitReader::with_bit_len(&bytes, bv.len() as u64).unwrap();
        for (v, n) in expect {
            assert_eq!(u64::from(r.read_bits(n).unwrap()), v);
        }
        assert!(r.is_at_end());
    }

    #[test]
    fn widths_over_32_are_errors() {
        let mut w = BitWriter::new();
        assert!(w.write_bits(0, 33).is_err());
        let data = [0u8; 8];
        let mut r = BitReader::new(&data);
        assert!(r.read_bits(33).is_err());
        assert!(BitReader::with_bit_len(&data, 65).is_err());
    }

    #[test]
    fn alignment_checks_padding() {
        let mut w = BitWriter::new();
        w.write_bits(1, 3).unwrap();
        w.align_to_byte();
        assert_eq!(w.bit_len(), 8);
        let data = [0b0010_0000u8, 0b1000_0001];
        let mut r = BitReader::new(&data);
        r.read_bits(3).unwrap();
        assert!(r.align_to_byte().unwrap());
        r.read_bits(1).unwrap();
        assert!(!r.align_to_byte().unwrap());
    }

    #[test]
    fn unaligned_bitslice_is_realigned() {
        let bytes = [0b0101_1010u8, 0b1100_0011];
        let bv = BitVec::<u8, Msb0>::from_vec(bytes.to_vec());
        let sub = &bv[3..13];
        let out = bitslice_bytes(sub);
        let mut r = BitReader::with_bit_len(&out, 10).unwrap();
        assert_eq!(r.read_bits(10).unwrap(), 0b11010_11000);
    }
}
