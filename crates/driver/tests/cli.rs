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
        // The only layer is both the input and the output layer, kept dense by default.
        "--no-keep-first-last",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let input_bytes = std::fs::metadata(&input).unwrap().len();
    let dcz_bytes = std::fs::metadata(&dcz).unwrap().len();
    assert!(
        text.contains("fc.weight")
            && text.contains(&format!("{input_bytes} → {dcz_bytes} bytes"))
            && text.contains("ratio vs input file bytes"),
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

    // --raw-dtype f16: the bias in half precision, two bytes a value; the weights coded the same.
    let half_dcz = dir.path().join("net-f16.dcz");
    let out = deepcomp(&[
        "compress",
        input.to_str().unwrap(),
        "-o",
        half_dcz.to_str().unwrap(),
        "--q",
        "80",
        "--fc-bits",
        "4",
        "--no-keep-first-last",
        "--raw-dtype",
        "f16",
    ]);
    assert!(out.status.success(), "{}", stderr_of(&out));
    let half_bytes = std::fs::metadata(&half_dcz).unwrap().len();
    // 64 values × 2 bytes saved, one dtype byte more for the typed section.
    assert_eq!(half_bytes + 128 - 1, dcz_bytes);
    let out = deepcomp(&["inspect", half_dcz.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("fc.bias") && text.contains("F16"), "{text}");
    let back = dir.path().join("back-f16.safetensors");
    let out = deepcomp(&[
        "decompress",
        half_dcz.to_str().unwrap(),
        "-o",
        back.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", stderr_of(&out));
    let tensors = read_safetensors(&back).unwrap();
    let want: Vec<f32> = b.iter().map(|&v| half::f16::from_f32(v).to_f32()).collect();
    assert_eq!(
        tensors.iter().find(|t| t.name == "fc.bias").unwrap().data,
        want
    );
    let out = deepcomp(&[
        "compress",
        input.to_str().unwrap(),
        "-o",
        dir.path().join("x.dcz").to_str().unwrap(),
        "--raw-dtype",
        "f8",
    ]);
    assert!(!out.status.success());
    assert!(stderr_of(&out).contains("f8"), "{}", stderr_of(&out));
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
        "sweep",
        "compress",
        "decompress",
        "inspect",
        "eval",
        "run",
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

/// A small `.dcz` with a sparse layer `fc.w` (shape [2, 10]) and raw tensors `fc.b` and `fc.c`.
fn small_dcz() -> Vec<u8> {
    use deepcomp_driver::container::{DczFile, DenseTensor, LayerKind, SparseLayer};
    DczFile {
        model: "small".into(),
        recipe_hash: [1; 32],
        layers: vec![SparseLayer {
            name: "fc.w".into(),
            kind: LayerKind::Fc,
            shape: vec![2, 10],
            bits: 2,
            index_bits: 3,
            codebook: vec![-1.0, 0.5, 2.0],
            positions: vec![1, 4, 15, 19],
            codes: vec![0, 1, 1, 2],
        }],
        dense: ["fc.b", "fc.c"]
            .iter()
            .map(|n| DenseTensor {
                name: n.to_string(),
                shape: vec![2],
                data: vec![0.25, -3.0],
            })
            .collect(),
        ..Default::default()
    }
    .to_bytes()
    .unwrap()
}

/// Recomputes every section CRC and the file CRC after an edit (format: docs/FORMAT.md).
fn resign(b: &mut [u8]) {
    let mut pos = 12;
    while &b[pos..pos + 4] != b"DEND" {
        let len = u64::from_le_bytes(b[pos + 4..pos + 12].try_into().unwrap()) as usize;
        let crc_pos = pos + 12 + len;
        let crc = crc32fast::hash(&b[pos..crc_pos]);
        b[crc_pos..crc_pos + 4].copy_from_slice(&crc.to_le_bytes());
        pos = crc_pos + 4;
    }
    let n = b.len();
    let crc = crc32fast::hash(&b[..n - 4]);
    b[n - 4..].copy_from_slice(&crc.to_le_bytes());
}

fn replace_once(b: &mut [u8], from: &[u8], to: &[u8]) {
    let at = b
        .windows(from.len())
        .position(|w| w == from)
        .expect("present");
    b[at..at + to.len()].copy_from_slice(to);
}

fn stderr_of(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn hostile_dcz_files_are_clear_errors_not_crashes() {
    let dir = tempfile::tempdir().unwrap();
    let out_path = dir.path().join("out.safetensors");
    // (edit, what the error must mention)
    let cases: [(&[u8], &[u8], &str); 3] = [
        (b"fc.c", b"fc.b", "unique"),
        (b"fc.c", b"fc.w", "unique"),
        (b"fc.w", b"fc\x07w", "control character"),
    ];
    for (from, to, why) in cases {
        let mut b = small_dcz();
        replace_once(&mut b, from, to);
        resign(&mut b);
        let p = dir.path().join("edited.dcz");
        std::fs::write(&p, &b).unwrap();
        for cmd in ["decompress", "inspect"] {
            let mut args = vec![cmd, p.to_str().unwrap()];
            if cmd == "decompress" {
                args.extend(["-o", out_path.to_str().unwrap()]);
            }
            let out = deepcomp(&args);
            let err = stderr_of(&out);
            assert_eq!(out.status.code(), Some(1), "{cmd} {to:?}: {err}");
            assert!(
                err.contains("edited.dcz") && err.contains(why),
                "{cmd}: {err}"
            );
        }
        assert!(!out_path.exists(), "nothing written");
    }
    // A decompression bomb: the first dimension of `fc.w` raised to 26,843,545 (1.07 GB as f32) and to
    // 1,717,986,918 (68.7 GB); both refused before anything is allocated.
    for dim0 in [26_843_545u64, 1_717_986_918] {
        let mut b = small_dcz();
        let mut from = b"fc.w\x01\x02\x03\x02".to_vec();
        from.extend_from_slice(&2u64.to_le_bytes());
        let mut to = b"fc.w\x01\x02\x03\x02".to_vec();
        to.extend_from_slice(&dim0.to_le_bytes());
        replace_once(&mut b, &from, &to);
        resign(&mut b);
        let p = dir.path().join("bomb.dcz");
        std::fs::write(&p, &b).unwrap();
        let out = deepcomp(&[
            "decompress",
            p.to_str().unwrap(),
            "-o",
            out_path.to_str().unwrap(),
        ]);
        let err = stderr_of(&out);
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(err.contains("fc.w") && err.contains("limit"), "{err}");
        assert!(!out_path.exists(), "nothing written");
    }
}

#[test]
fn output_equal_to_input_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let dcz = dir.path().join("same.dcz");
    let bytes = small_dcz();
    std::fs::write(&dcz, &bytes).unwrap();
    let out = deepcomp(&[
        "decompress",
        dcz.to_str().unwrap(),
        "-o",
        dcz.to_str().unwrap(),
    ]);
    let err = stderr_of(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.matches("same.dcz").count() >= 2, "{err}");
    assert_eq!(std::fs::read(&dcz).unwrap(), bytes, "input untouched");

    let st = dir.path().join("in.safetensors");
    write_safetensors(
        &st,
        &[NamedTensor {
            name: "w".into(),
            shape: vec![4, 4],
            data: (0..16).map(|i| i as f32).collect(),
        }],
    )
    .unwrap();
    let before = std::fs::read(&st).unwrap();
    let alias = dir.path().join(".").join("in.safetensors");
    let out = deepcomp(&[
        "compress",
        st.to_str().unwrap(),
        "-o",
        alias.to_str().unwrap(),
    ]);
    let err = stderr_of(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("is the input file"), "{err}");
    assert_eq!(std::fs::read(&st).unwrap(), before, "input untouched");
}

#[test]
fn compress_refuses_nan_in_a_raw_tensor_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("nan.safetensors");
    write_safetensors(
        &input,
        &[
            NamedTensor {
                name: "fc.weight".into(),
                shape: vec![4, 4],
                data: (0..16).map(|i| i as f32 * 0.1).collect(),
            },
            NamedTensor {
                name: "fc.bias".into(),
                shape: vec![4],
                data: vec![0.0, f32::NAN, 1.0, 2.0],
            },
        ],
    )
    .unwrap();
    let dcz = dir.path().join("nan.dcz");
    let out = deepcomp(&[
        "compress",
        input.to_str().unwrap(),
        "-o",
        dcz.to_str().unwrap(),
    ]);
    let err = stderr_of(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("fc.bias") && err.contains("NaN"), "{err}");
    assert!(!dcz.exists(), "no output file left behind");
}

#[cfg(unix)]
#[test]
fn special_output_files_are_refused() {
    use std::os::unix::fs::FileTypeExt;
    let dir = tempfile::tempdir().unwrap();
    let dcz = dir.path().join("m.dcz");
    std::fs::write(&dcz, small_dcz()).unwrap();
    let fifo = dir.path().join("pipe.safetensors");
    assert!(Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap()
        .success());
    let out = deepcomp(&[
        "decompress",
        dcz.to_str().unwrap(),
        "-o",
        fifo.to_str().unwrap(),
    ]);
    let err = stderr_of(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("pipe.safetensors") && err.contains("FIFO"),
        "{err}"
    );
    assert!(std::fs::symlink_metadata(&fifo)
        .unwrap()
        .file_type()
        .is_fifo());
    if std::path::Path::new("/dev/null").exists() {
        let out = deepcomp(&["decompress", dcz.to_str().unwrap(), "-o", "/dev/null"]);
        let err = stderr_of(&out);
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(err.contains("/dev/null"), "{err}");
        assert!(std::fs::symlink_metadata("/dev/null")
            .unwrap()
            .file_type()
            .is_char_device());
    }
    let link = dir.path().join("link.safetensors");
    let real = dir.path().join("real.safetensors");
    std::fs::write(&real, b"keep").unwrap();
    std::os::unix::fs::symlink(&real, &link).unwrap();
    let out = deepcomp(&[
        "decompress",
        dcz.to_str().unwrap(),
        "-o",
        link.to_str().unwrap(),
    ]);
    let err = stderr_of(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("symbolic link"), "{err}");
    assert_eq!(std::fs::read(&real).unwrap(), b"keep");
}

/// An `nn.Sequential` export (`0.weight`, `2.weight`, …) renamed by `--key-map`, with settings from
/// `--config` that the command line overrides.
#[test]
fn compress_key_map_and_config_file() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("seq.safetensors");
    let t = |name: &str, shape: Vec<usize>| {
        let n: usize = shape.iter().product();
        NamedTensor {
            name: name.into(),
            shape,
            data: (0..n)
                .map(|i| ((i as f32) * 0.37).sin() * 0.1 + 1e-3)
                .collect(),
        }
    };
    write_safetensors(
        &input,
        &[
            t("0.weight", vec![40, 50]),
            t("0.bias", vec![40]),
            t("2.weight", vec![30, 40]),
            t("2.bias", vec![30]),
            t("4.weight", vec![10, 30]),
            t("4.bias", vec![10]),
        ],
    )
    .unwrap();
    let config = dir.path().join("c.toml");
    std::fs::write(
        &config,
        "q = 10\nfc_bits = 6\n[[layer]]\npattern = '^fc2\\.'\nbits = 4\n",
    )
    .unwrap();
    let dcz = dir.path().join("seq.dcz");
    let out = deepcomp(&[
        "compress",
        input.to_str().unwrap(),
        "-o",
        dcz.to_str().unwrap(),
        "--config",
        config.to_str().unwrap(),
        "--q",
        "75",
        "--key-map",
        r"^0\.=fc1.",
        "--key-map",
        r"^2\.=fc2.",
        "--key-map",
        r"^4\.=fc3.",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let f = deepcomp_driver::container::DczFile::read(&dcz).unwrap();
    let names: Vec<(&str, u8, usize)> = f
        .layers
        .iter()
        .map(|l| (l.name.as_str(), l.bits, l.positions.len()))
        .collect();
    // fc1 (widest input) and fc3 (fewest outputs) stay dense; fc2: --q 75 beats the config's 10,
    // the config's rule sets 4 bits.
    assert_eq!(names, [("fc2.weight", 4, 300)]);
    let raw: Vec<&str> = f.dense.iter().map(|d| d.name.as_str()).collect();
    assert_eq!(
        raw,
        [
            "fc1.bias",
            "fc1.weight",
            "fc2.bias",
            "fc3.bias",
            "fc3.weight"
        ]
    );
    // A misspelt config key is an error naming it; nothing is written.
    std::fs::write(&config, "fc_bit = 6\n").unwrap();
    let none = dir.path().join("none.dcz");
    let out = deepcomp(&[
        "compress",
        input.to_str().unwrap(),
        "-o",
        none.to_str().unwrap(),
        "--config",
        config.to_str().unwrap(),
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("fc_bit") && err.contains("c.toml"), "{err}");
    assert!(!none.exists());
}
