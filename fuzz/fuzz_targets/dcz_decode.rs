//! Fuzz target: `DczFile::from_bytes` on arbitrary input must return
//! `Ok` or `Err`, never panic, hang or allocate absurdly. Inputs that parse
//! must re-serialize to the same bytes and decode to dense tensors.
#![no_main]

use deepcomp_driver::container::DczFile;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(file) = DczFile::from_bytes(data) {
        let again = file.to_bytes().expect("a parsed file re-serializes");
        assert_eq!(again, data, "parse/serialize is not the identity");
        for layer in &file.layers {
            if layer.numel() <= 1 << 20 {
                layer.try_to_dense().expect("a parsed layer is valid");
            }
        }
    }
});
