//! The `deepcomp` binary's output and exit status: a closed pipe is not a crash, errors are printed
//! once without a backtrace, and a `.dcz` that lacks a tensor of the model is refused by `eval`.

use std::process::{Command, Stdio};

use deepcomp_driver::compress::{write_safetensors, NamedTensor};

fn deepcomp(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_deepcomp"))
        .args(args)
        .env("RUST_BACKTRACE", "1")
        .output()
        .expect("deepcomp runs")
}

/// `deepcomp inspect m.dcz | head -1`: the reader goes away; here it is gone before the first write,
/// so the first write already meets a closed pipe.
#[test]
fn a_closed_pipe_ends_quietly_with_status_0() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_deepcomp"))
        .arg("recipes")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{:?}: {err}", out.status);
    assert!(!err.contains("panicked"), "{err}");
}

/// LeNet-300-100's tensors except `fc1.weight`, compressed: `eval` must not run with fc1's random
/// initial weights.
#[test]
fn eval_refuses_a_dcz_missing_a_tensor_and_prints_one_error_without_backtrace() {
    let dir = tempfile::tempdir().unwrap();
    let st = dir.path().join("partial.safetensors");
    let t = |name: &str, shape: Vec<usize>| {
        let n: usize = shape.iter().product();
        NamedTensor {
            name: name.into(),
            shape,
            data: (0..n).map(|i| ((i as f32) * 0.37).sin() * 0.1).collect(),
        }
    };
    write_safetensors(
        &st,
        &[
            t("fc1.bias", vec![300]),
            t("fc2.weight", vec![100, 300]),
            t("fc2.bias", vec![100]),
            t("fc3.weight", vec![10, 100]),
            t("fc3.bias", vec![10]),
        ],
    )
    .unwrap();
    let dcz = dir.path().join("partial.dcz");
    let out = deepcomp(&[
        "compress",
        st.to_str().unwrap(),
        "-o",
        dcz.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = deepcomp(&[
        "eval",
        dcz.to_str().unwrap(),
        "--recipe",
        "lenet300-fashion",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("missing tensors [fc1.weight]"), "{err}");
    assert_eq!(
        err.matches("missing tensors").count(),
        1,
        "printed once: {err}"
    );
    assert!(!err.contains("stack backtrace"), "{err}");
}
