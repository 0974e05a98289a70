//! `deepcomp compress` on real data, and the self-describing `.dcz`: the pretrained ResNet-20 with the
//! default settings, evaluated before and after on (the first 2,000 images of) the JPEG CIFAR-10 test
//! split, `--max-drop` refusing a destructive setting without leaving a file; a LeNet-300-100 file
//! evaluated and run with no recipe, from its metadata alone. Real data comes from
//! `$DEEPCOMP_TEST_DATA` or `../shared/data` beside the checkout (a failure under CI, a loud skip
//! elsewhere).

use std::path::PathBuf;
use std::process::Command;

use deepcomp_driver::compress::{write_safetensors, NamedTensor};

fn deepcomp(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_deepcomp"))
        .args(args)
        .env("RUST_BACKTRACE", "0")
        .output()
        .expect("deepcomp runs")
}

fn shared(rel: &str) -> Option<PathBuf> {
    deepcomp_datasets::shared_data_file(env!("CARGO_MANIFEST_DIR"), rel).unwrap()
}

/// The number after `key` in `text` (e.g. `top-1 0.8110`).
fn figure(text: &str, line_start: &str, key: &str) -> f64 {
    let line = text
        .lines()
        .find(|l| l.starts_with(line_start))
        .unwrap_or_else(|| panic!("no `{line_start}` line in {text}"));
    let rest = &line[line.find(key).unwrap() + key.len()..];
    rest.split_whitespace().next().unwrap().parse().unwrap()
}

#[test]
fn pretrained_resnet20_default_compress_keeps_accuracy_and_max_drop_refuses() {
    let (Some(archive), Some(weights)) = (
        shared("cifar10-jpeg.tar.gz"),
        shared("pretrained/resnet20-cifar10.safetensors"),
    ) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let recipe = dir.path().join("r20.toml");
    std::fs::write(
        &recipe,
        r#"
name = "r20-eval"
model = "resnet20"
dataset = "cifar10"
[data]
eval_batch_size = 500
test_limit = 2000
mean = [0.485, 0.456, 0.406]
std = [0.229, 0.224, 0.225]
[train]
epochs = 1
lr = 0.01
[prune]
method = "percentile"
rounds = [{ target = 0.5, epochs = 0 }]
[quant]
"#,
    )
    .unwrap();
    let out_file = dir.path().join("r20.dcz");
    let out = deepcomp(&[
        "compress",
        weights.to_str().unwrap(),
        "-o",
        out_file.to_str().unwrap(),
        "--recipe",
        recipe.to_str().unwrap(),
        "--data",
        archive.to_str().unwrap(),
        "--max-drop",
        "6",
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let before = figure(&text, "before:", "top-1 ");
    let after = figure(&text, "after:", "top-1 ");
    eprintln!("ResNet-20, default compress, first 2000 test images: {before} → {after}");
    // The first 2,000 images are the first two classes (image-folder order): 0.76 there, 0.81 on all.
    assert!(before > 0.7, "{text}");
    assert!(before - after < 0.06, "{text}");
    assert!(text.contains("ratio vs input file bytes"), "{text}");
    // The file describes itself.
    let f = deepcomp_driver::container::DczFile::read(&out_file).unwrap();
    let meta =
        deepcomp_driver::container::ModelMeta::from_json(f.metadata.as_deref().unwrap()).unwrap();
    assert_eq!(meta.arch.as_deref(), Some("resnet20"));
    assert_eq!(meta.mean, Some(vec![0.485, 0.456, 0.406]));

    // The old defaults (q 90) destroy the model: --max-drop refuses and writes nothing.
    let bad = dir.path().join("bad.dcz");
    let out = deepcomp(&[
        "compress",
        weights.to_str().unwrap(),
        "-o",
        bad.to_str().unwrap(),
        "--recipe",
        recipe.to_str().unwrap(),
        "--data",
        archive.to_str().unwrap(),
        "--q",
        "90",
        "--no-keep-first-last",
        "--max-drop",
        "2",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("--max-drop 2") && err.contains("not written"),
        "{err}"
    );
    assert!(!bad.exists(), "no output file");
}

#[test]
fn a_dcz_with_metadata_is_evaluated_and_run_without_a_recipe() {
    let Some(mnist) = shared("mnist") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let st = dir.path().join("mlp.safetensors");
    let t = |name: &str, shape: Vec<usize>| {
        let n: usize = shape.iter().product();
        NamedTensor {
            name: name.into(),
            shape,
            data: (0..n).map(|i| ((i as f32) * 0.37).sin() * 0.05).collect(),
        }
    };
    write_safetensors(
        &st,
        &[
            t("fc1.weight", vec![300, 784]),
            t("fc1.bias", vec![300]),
            t("fc2.weight", vec![100, 300]),
            t("fc2.bias", vec![100]),
            t("fc3.weight", vec![10, 100]),
            t("fc3.bias", vec![10]),
        ],
    )
    .unwrap();
    let dcz = dir.path().join("mlp.dcz");
    let out = deepcomp(&[
        "compress",
        st.to_str().unwrap(),
        "-o",
        dcz.to_str().unwrap(),
        "--arch",
        "lenet300",
        "--dataset",
        "mnist",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let m = mnist.to_str().unwrap();
    let alone = deepcomp(&["eval", dcz.to_str().unwrap(), "--data", m]);
    let text = String::from_utf8_lossy(&alone.stdout).to_string();
    assert!(
        alone.status.success(),
        "{}",
        String::from_utf8_lossy(&alone.stderr)
    );
    let with_recipe = deepcomp(&[
        "eval",
        dcz.to_str().unwrap(),
        "--data",
        m,
        "--recipe",
        "lenet300-mnist",
    ]);
    assert!(with_recipe.status.success());
    let t1 = figure(&text, dcz.to_str().unwrap(), "top-1 ");
    let t2 = figure(
        &String::from_utf8_lossy(&with_recipe.stdout),
        dcz.to_str().unwrap(),
        "top-1 ",
    );
    assert_eq!(t1, t2, "metadata and recipe give the same evaluation");
    let run = deepcomp(&["run", dcz.to_str().unwrap(), "--data", m]);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let t3 = figure(
        &String::from_utf8_lossy(&run.stdout),
        dcz.to_str().unwrap(),
        "top-1 ",
    );
    assert!(
        (t3 - t1).abs() < 0.002,
        "compressed engine {t3} vs dense {t1}"
    );
    // decompress needs nothing but the file either.
    let back = dir.path().join("back.safetensors");
    let out = deepcomp(&[
        "decompress",
        dcz.to_str().unwrap(),
        "-o",
        back.to_str().unwrap(),
    ]);
    assert!(out.status.success());
}
