//! Property tests: exact round trips for arbitrary masks, symbol streams and
//! code-length tables, and clean errors on arbitrary garbage.

use bitvec::prelude::*;
use deepcomp_entropy::relindex::{mask_from_positions, positions_from_mask};
use deepcomp_entropy::{BitReader, BitWriter, HuffmanCode, RelativeIndex};
use proptest::prelude::*;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Any mask (random density, including all-zero / all-one / single
    /// element) survives relative-index coding plus Huffman coding of the
    /// index symbols, for any field width.
    #[test]
    fn mask_round_trip(
        len in 0usize..3000,
        density in prop_oneof![Just(0.0f64), Just(1.0f64), 0.0f64..1.0],
        seed in any::<u64>(),
        b in 1u8..=16,
        single in any::<bool>(),
    ) {
        let mut state = seed | 1;
        let mut mask: BitVec<u8, Msb0> = (0..len)
            .map(|_| {
                state ^= state << 13; state ^= state >> 7; state ^= state << 17;
                (state >> 11) as f64 / (1u64 << 53) as f64 <= density && density > 0.0
            })
            .collect();
        if single && len > 0 {
            mask.fill(false);
            mask.set((seed % len as u64) as usize, true);
        }
        let pos = positions_from_mask(&mask);
        let ri = RelativeIndex::encode(&pos, len as u64, b).unwrap();
        prop_assert_eq!(ri.decode().unwrap(), pos.clone());
        prop_assert_eq!(mask_from_positions(&pos, len as u64).unwrap(), mask);
        let code = ri.huffman_code(None).unwrap();
        let bits = code.encode(&ri.symbols).unwrap();
        let syms = code.decode(&bits, ri.symbols.len()).unwrap();
        prop_assert_eq!(&syms, &ri.symbols);
    }

    /// Arbitrary symbol streams round trip through encode/decode and through
    /// a serialized code-length table, also embedded at odd bit offsets.
    #[test]
    fn huffman_round_trip(
        syms in prop::collection::vec(0u32..300, 0..2000),
        limit in prop_oneof![Just(None), (9u8..=32).prop_map(Some)],
        prefix in 0u32..32,
    ) {
        let code = HuffmanCode::from_symbols(&syms, 300, limit).unwrap();
        let mut w = BitWriter::new();
        w.write_bits(0x5555_5555, prefix).unwrap();
        code.write_lengths(&mut w);
        code.encode_into(&syms, &mut w).unwrap();
        let (bytes, len) = w.finish();
        let mut r = BitReader::with_bit_len(&bytes, len).unwrap();
        r.read_bits(prefix).unwrap();
        let back = HuffmanCode::read_lengths(&mut r).unwrap();
        prop_assert_eq!(&back, &code);
        let mut out = Vec::new();
        back.decode_from(&mut r, syms.len(), &mut out).unwrap();
        prop_assert_eq!(out, syms);
        prop_assert!(r.is_at_end());
    }

    /// Garbage never panics or hangs: reading a table and decoding from it
    /// either succeeds or returns an error.
    #[test]
    fn garbage_is_an_error_not_a_panic(
        data in prop::collection::vec(any::<u8>(), 0..200),
        count in 0usize..5000,
    ) {
        let mut r = BitReader::new(&data);
        if let Ok(code) = HuffmanCode::read_lengths(&mut r) {
            let mut out = Vec::new();
            let _ = code.decode_from(&mut r, count, &mut out);
        }
        let syms: Vec<u32> = data.iter().map(|&x| u32::from(x % 16)).collect();
        let _ = deepcomp_entropy::decode_positions(&syms, 4, 1000);
    }
}
