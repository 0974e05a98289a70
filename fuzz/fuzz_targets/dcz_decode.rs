//! Fuzz target: `DczFile::from_bytes_with_limits` on arbitrary input must
//! return `Ok` or `Err`, never panic, hang or allocate absurdly. Inputs that
//! parse must re-serialize to the same bytes, decode every layer to a dense
//! tensor (the limits bound its size, so there is no size escape), and load
//! into a name → tensor map with every name unique and valid.
#![no_main]

use std::collections::HashMap;

use deepcomp_format::{check_tensor_name, DczFile, Limits};
use libfuzzer_sys::fuzz_target;

/// Tighter than the defaults so one input can never need more than 64 MiB
/// of dense tensors (libFuzzer's RSS limit is 2 GiB).
const LIMITS: Limits = Limits {
    max_elements: 1 << 24,
    max_implicit_zeros: 1 << 22,
    implicit_zeros_per_byte: 0,
};

fuzz_target!(|data: &[u8]| {
    let Ok(file) = DczFile::from_bytes_with_limits(data, &LIMITS) else {
        return;
    };
    // Every file the reader accepts under these limits is also within the
    // defaults, so the writer (which checks the defaults) takes it back.
    let again = file.to_bytes().expect("a parsed file re-serializes");
    if data[8..10] == deepcomp_format::VERSION.to_le_bytes() {
        assert_eq!(again, data, "parse/serialize is not the identity");
    } else {
        // An older version is re-written as the current one, with the same content.
        let back = DczFile::from_bytes_with_limits(&again, &LIMITS).expect("re-read");
        assert_eq!(back.to_bytes().expect("re-serialize"), again);
    }
    let mut loaded: HashMap<&str, Vec<f32>> = HashMap::new();
    let mut total = 0u64;
    for layer in &file.layers {
        let dense = layer.try_to_dense().expect("a parsed layer is valid");
        assert_eq!(dense.len() as u64, layer.numel());
        total += dense.len() as u64;
        assert!(
            loaded.insert(&layer.name, dense).is_none(),
            "duplicate name"
        );
    }
    for t in &file.typed {
        assert_eq!(t.data.len() as u64, t.numel() * t.dtype.size() as u64);
        total += t.numel();
        assert!(
            loaded.insert(&t.name, Vec::new()).is_none(),
            "duplicate name"
        );
    }
    for t in &file.dense {
        assert_eq!(
            t.data.len() as u64,
            t.shape.iter().product::<usize>() as u64
        );
        total += t.data.len() as u64;
        assert!(
            loaded.insert(&t.name, t.data.clone()).is_none(),
            "duplicate name"
        );
    }
    assert!(total <= LIMITS.max_elements);
    for name in loaded.keys() {
        check_tensor_name(name).expect("a parsed name is valid");
    }
});
