//! The `deepcomp` binary: compress → inspect → decompress on a generated safetensors file, `--help` on
//! every command, and a clear error naming the file for a corrupt `.dcz`.

use std::process::Command;

use deepcomp_driver::compress::{read_safetensors, write_safetensors, NamedTensor};

fn deepcomp(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_deepcomp"))
        .args(args)
        .env("RUST_BACKTRACE", "0")
        .output()
        .expect("deepcomp runs")
}

#[test]
fn compress_inspect_decompress_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("net.safetensors");
    let w: Vec<f32> = (0..64 * 100)
        .map(|i| ((i as f32) * 0.613).sin() * 0.05)
        .collect();
    let b: Vec<f32> = (0..64).map(|i| i as f32 * 1e-3).collect();
    write_safetensors(
        &input,
        &[
            NamedTensor {
                name: "fc.weight".into(),
                shape: vec![64, 100],
                data: w,
            },
            NamedTensor {
                name: "fc.bias".into(),
                shape: vec![64],
                data: b.clone(),
            },
        ],
    )
    .unwrap();
    let dcz = dir.path().join("net.dcz");
    let out = deepcomp(&[
        "compress",
        input.to_str().unwrap(),
        "-o",
        dcz.to_str().unwrap(),
        "--q",
        "80",
        "--fc-bits",
        "4",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("fc.weight") && text.contains("25856 →"),
        "{text}"
    );

    let out = deepcomp(&["inspect", dcz.to_str().unwrap()]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("fc.weight") && text.contains("1280") && text.contains("raw  fc.bias"),
        "{text}"
    );

    let back = dir.path().join("back.safetensors");
    let out = deepcomp(&[
        "decompress",
        dcz.to_str().unwrap(),
        "-o",
        back.to_str().unwrap(),
    ]);
    assert!(out.status.success());
    let tensors = read_safetensors(&back).unwrap();
    let fc = tensors.iter().find(|t| t.name == "fc.weight").unwrap();
    assert_eq!(
        fc.data.iter().filter(|v| **v != 0.0).count(),
        1280,
        "80th percentile keeps 20 %"
    );
    let distinct: std::collections::BTreeSet<u32> = fc
        .data
        .iter()
        .filter(|v| **v != 0.0)
        .map(|v| v.to_bits())
        .collect();
    assert!(
        distinct.len() <= 16,
        "4 bits: at most 16 shared values, got {}",
        distinct.len()
    );
    assert_eq!(
        tensors.iter().find(|t| t.name == "fc.bias").unwrap().data,
        b
    );
}

#[test]
fn corrupt_file_is_a_clear_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("broken.dcz");
    std::fs::write(&bad, b"not a dcz file at all").unwrap();
    let out = deepcomp(&["inspect", bad.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("broken.dcz") && err.contains("magic"), "{err}");
}

#[test]
fn every_command_has_help() {
    for cmd in [
        "pipeline",
        "compress",
        "decompress",
        "inspect",
        "eval",
        "bench",
        "recipes",
    ] {
        let out = deepcomp(&[cmd, "--help"]);
        assert!(out.status.success(), "{cmd} --help");
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("Usage"),
            "{cmd} --help prints usage"
        );
    }
    let out = deepcomp(&["recipes"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("lenet300-fashion"));
}
