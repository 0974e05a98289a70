//! Shared by the pipeline tests: a small generated dataset and a recipe that runs every stage on it.
#![allow(dead_code)]

use std::path::Path;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// A temporary folder holding [`write_dataset`]'s set in `data/`: (the folder, kept alive while the
/// `TempDir` lives; the data path). Tests write their outputs beside `data/`.
pub fn generated_data(n_train: usize, n_test: usize) -> (tempfile::TempDir, std::path::PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    write_dataset(&data, n_train, n_test);
    (tmp, data)
}

/// A learnable 10-class set in Fashion-MNIST's file layout: class k has a bright bar at rows 2k+3..2k+5.
pub fn write_dataset(dir: &Path, n_train: usize, n_test: usize) {
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    for (prefix, n) in [("train", n_train), ("t10k", n_test)] {
        let mut images = Vec::with_capacity(n * 784);
        let mut labels = Vec::with_capacity(n);
        for _ in 0..n {
            let k: u8 = rng.random_range(0..10);
            labels.push(k);
            for r in 0..28 {
                for _c in 0..28 {
                    let bar = r >= 2 * k as usize + 3 && r < 2 * k as usize + 5;
                    let base: u8 = if bar { 200 } else { 20 };
                    images.push(base.saturating_add(rng.random_range(0..50)));
                }
            }
        }
        let img = deepcomp_datasets::encode_idx_u8(&[n, 28, 28], &images);
        let lab = deepcomp_datasets::encode_idx_u8(&[n], &labels);
        std::fs::write(dir.join(format!("{prefix}-images-idx3-ubyte")), img).unwrap();
        std::fs::write(dir.join(format!("{prefix}-labels-idx1-ubyte")), lab).unwrap();
    }
}

/// Runs the recipe `text` into `out` (resuming what is there), without progress bars.
pub fn run_in(out: &Path, text: &str) -> deepcomp_driver::report::Report {
    deepcomp_driver::pipeline::run(&deepcomp_driver::pipeline::PipelineOptions {
        recipe: deepcomp_driver::recipe::parse(text, "test").unwrap(),
        out: out.to_path_buf(),
        fresh: false,
        progress: false,
        data_path: None,
    })
    .unwrap()
}

pub fn recipe_text(data: &Path) -> String {
    format!(
        r#"
name = "e2e"
model = "lenet300"
dataset = "fashion-mnist"
seed = 3
[data]
path = "{}"
batch_size = 50
eval_batch_size = 200
allow_download = false
verify = false
[train]
epochs = 2
lr = 0.05
nesterov = true
lr_schedule = "cosine"
[prune]
method = "percentile"
rounds = [{{ target = 0.6, epochs = 1 }}, {{ target = 0.85, epochs = 1 }}]
layer_scale = {{ "fc3.weight" = 0.5 }}
sensitivity = true
lr = 0.01
[quant]
fc_bits = 4
epochs = 1
lr = 0.0005
"#,
        data.display()
    )
}
