//! `deepcomp train-epoch` on the CPU with a few examples: the JSON it writes, parameter counts equal
//! to the PyTorch mirror's (`xtask/gpu/torch_epoch.py`), and the `--device` errors.

use std::process::Command;

fn deepcomp(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_deepcomp"))
        .args(args)
        .env("RUST_BACKTRACE", "0")
        .output()
        .expect("deepcomp runs")
}

fn run_json(args: &[&str], json: &std::path::Path) -> serde_json::Value {
    let mut all = vec![
        "train-epoch",
        "--device",
        "cpu",
        "--json",
        json.to_str().unwrap(),
    ];
    all.extend_from_slice(args);
    let out = deepcomp(&all);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let printed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let written: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(json).unwrap()).unwrap();
    assert_eq!(printed, written, "stdout and the JSON file agree");
    written
}

#[test]
fn resnet20_epochs_on_cpu_write_json() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("r.json");
    let r = run_json(
        &[
            "--arch",
            "resnet20",
            "--examples",
            "40",
            "--batch",
            "16",
            "--epochs",
            "2",
        ],
        &json,
    );
    assert_eq!(r["tool"], "deepcomp");
    assert_eq!(r["device"], "cpu");
    assert_eq!(r["data"], "generated");
    assert_eq!(r["examples"], 40);
    // torch_epoch.py's ResNet20 counts 269,722 trainable parameters: the two mirror each other.
    assert_eq!(r["parameters"], 269_722);
    let epochs = r["epochs"].as_array().unwrap();
    assert_eq!(epochs.len(), 2);
    for (i, e) in epochs.iter().enumerate() {
        assert_eq!(e["epoch"], i);
        assert_eq!(e["batches"], 3, "40 examples in batches of 16: 16 + 16 + 8");
        let s = e["seconds"].as_f64().unwrap();
        let rate = e["ex_per_s"].as_f64().unwrap();
        assert!(s > 0.0 && (rate * s - 40.0).abs() < 1e-6, "{e}");
        let loss = e["loss"].as_f64().unwrap();
        assert!(loss.is_finite() && loss > 0.0, "{e}");
    }
    assert_eq!(r["warm_epoch"], 1);
    assert_eq!(r["warm_seconds"], epochs[1]["seconds"]);
}

#[test]
fn vgg16_half_parameter_count_matches_pytorch() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("v.json");
    let r = run_json(
        &[
            "--arch",
            "vgg16_half",
            "--examples",
            "8",
            "--batch",
            "4",
            "--epochs",
            "1",
        ],
        &json,
    );
    // torch_epoch.py's Vgg16Half: 3,811,680 conv/fc weights + biases and BatchNorm affine parameters.
    assert_eq!(r["parameters"], 3_817_450);
    assert_eq!(r["warm_epoch"], 0, "a single epoch is its own warm epoch");
    assert_eq!(r["epochs"][0]["batches"], 2);
}

#[test]
fn device_errors_are_clear() {
    let out = deepcomp(&["train-epoch", "--device", "tpu", "--examples", "4"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--device `tpu`") && err.contains("cpu, cuda or cuda:N"),
        "{err}"
    );
    if !cfg!(feature = "cuda") {
        for spec in ["cuda", "cuda:0"] {
            let out = deepcomp(&["train-epoch", "--device", spec, "--examples", "4"]);
            assert!(!out.status.success());
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(
                err.contains("built without the cuda feature")
                    && err.contains("cargo xtask gpu-build"),
                "{err}"
            );
        }
        let out = deepcomp(&[
            "pipeline",
            "--device",
            "cuda",
            "--recipe",
            "lenet300-fashion",
        ]);
        assert!(!out.status.success());
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("built without the cuda feature"),
            "pipeline refuses --device cuda before any work"
        );
    }
}
