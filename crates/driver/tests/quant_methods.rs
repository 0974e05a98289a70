//! `quant.method = "uniform" | "ste"`, float layers and regularizers, end to end on a small generated
//! dataset, and the hooks behind them on a LeNet-300-100 with generated batches.

use candle_core::{Device, Tensor};
use deepcomp_driver::hooks::{MaskHook, Regularizer, RegularizerHook, SteHook, SteLayer};
use deepcomp_driver::pipeline::{run, PipelineOptions};
use deepcomp_driver::recipe;
use deepcomp_format::DczFile;
use deepcomp_models::{Model, ProgressConfig, Sgd, SgdConfig, TrainHook};
use deepcomp_sparsity::{compute_masks, Criterion, MaskSet};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

mod common;
use common::recipe_text;

/// The common recipe with its `[quant]` table replaced, without the sensitivity scan, plus `extra`
/// lines at the end of `[train]`.
fn recipe_with(data: &std::path::Path, quant: &str, train_extra: &str) -> String {
    let base = recipe_text(data).replace("sensitivity = true\n", "");
    let (head, _) = base.split_once("[quant]").unwrap();
    let head = head.replacen(
        "lr_schedule = \"cosine\"\n",
        &format!("lr_schedule = \"cosine\"\n{train_extra}"),
        1,
    );
    format!("{head}[quant]\n{quant}")
}

fn run_recipe(text: &str) -> (deepcomp_driver::report::Report, DczFile, tempfile::TempDir) {
    let (tmp, data) = common::generated_data(600, 200);
    let text = text.replace("@DATA@", &data.display().to_string());
    let loaded = recipe::parse(&text, "test").unwrap();
    let out = tmp.path().join("out");
    let r = run(&PipelineOptions {
        recipe: loaded,
        out: out.clone(),
        fresh: true,
        progress: false,
        data_path: None,
    })
    .unwrap();
    let file = DczFile::read(&out.join("model.dcz")).unwrap();
    (r, file, tmp)
}

fn distinct_nonzero(v: &[f32]) -> usize {
    let s: std::collections::BTreeSet<u32> = v
        .iter()
        .filter(|x| **x != 0.0)
        .map(|x| x.to_bits())
        .collect();
    s.len()
}

/// Per-tensor uniform, 3 bits, a fixed range, and a prox-L1 dense training: the file decodes bit-exact
/// (the pipeline verifies it; decoded accuracy equals quantized accuracy), each layer's codebook is the
/// evenly spaced grid of 2^3 values, and the report names the methods and the regularizer.
#[test]
fn uniform_per_tensor_codes_the_grid_and_decodes_exactly() {
    let text = recipe_with(
        std::path::Path::new("@DATA@"),
        "method = \"uniform\"\nfc_bits = 3\nrange = 0.25\n",
        "regularizer = { kind = \"prox_l1\", lambda = 0.02 }\n",
    );
    let (r, file, _tmp) = run_recipe(&text);
    assert_eq!(
        r.accuracy.decoded, r.accuracy.quantized,
        "decoding is exact"
    );
    assert!(r.accuracy.decoded > 0.5, "decoded {}", r.accuracy.decoded);
    assert_eq!(
        r.quant_methods.get("fc1.weight").map(String::as_str),
        Some("uniform")
    );
    assert!(file.channel_scales.is_empty());
    for (i, l) in file.layers.iter().enumerate() {
        assert_eq!(l.bits, 3);
        // q = 0.25, l = 3: Δ = 0.0625, grid −0.25 … 0.1875.
        let want: Vec<f32> = (-4..4).map(|k| k as f32 * 0.0625).collect();
        assert_eq!(l.codebook, want, "{}", l.name);
        let v = file.layer_values(i);
        assert!(distinct_nonzero(&v) <= 8);
        assert!(v.iter().all(|x| (-0.25..=0.1875).contains(x)));
    }
    let reg = &r.regularizers[0];
    assert_eq!(
        (reg.stage.as_str(), reg.kind.as_str()),
        ("train", "prox_l1")
    );
    assert!(reg.zero_fraction > 0.0, "prox-L1 makes exact zeros");
}

/// Per-channel uniform (max scaling), 4 bits, the last layer kept in float: channel-scales sections,
/// at most 2^4 distinct values per output channel, fc3 stored raw, and the runtime runs the file with
/// the same predictions as the decoded model's.
#[test]
fn uniform_per_channel_with_a_float_layer() {
    let text = recipe_with(
        std::path::Path::new("@DATA@"),
        "method = \"uniform\"\ngranularity = \"channel\"\nfc_bits = 4\nfloat_layers = [\"fc3.weight\"]\n",
        "",
    );
    let (r, file, tmp) = run_recipe(&text);
    assert_eq!(
        r.accuracy.decoded, r.accuracy.quantized,
        "decoding is exact"
    );
    // A re-run resumes from the quantized checkpoint (codes rebuilt from the recorded steps) and writes
    // the same bytes.
    let data = tmp.path().join("data");
    let loaded =
        recipe::parse(&text.replace("@DATA@", &data.display().to_string()), "test").unwrap();
    let again = run(&PipelineOptions {
        recipe: loaded,
        out: tmp.path().join("out"),
        fresh: false,
        progress: false,
        data_path: None,
    })
    .unwrap();
    assert_eq!(
        again.dcz_sha256, r.dcz_sha256,
        "resumed run writes the same file"
    );
    assert!(file.layers.iter().all(|l| l.name != "fc3.weight"));
    assert!(file.dense.iter().any(|d| d.name == "fc3.weight"));
    assert_eq!(file.channel_scales.len(), 2, "fc1 and fc2");
    for (i, l) in file.layers.iter().enumerate() {
        let scales = file.channel_scales_of(&l.name).unwrap();
        assert_eq!(scales.len(), l.shape[0]);
        let v = file.layer_values(i);
        let per = v.len() / l.shape[0];
        for row in v.chunks(per) {
            assert!(distinct_nonzero(row) <= 16);
        }
    }
    // Written and read back byte for byte.
    assert_eq!(
        DczFile::from_bytes(&file.to_bytes().unwrap()).unwrap(),
        file
    );
    let rt = deepcomp_runtime::CompressedModel::from_file(&file).unwrap();
    let x = vec![0.5f32; 784 * 2];
    assert_eq!(rt.forward(&x, 2).unwrap().len(), 20);
}

fn batches(n: usize, seed: u64, device: &Device) -> Vec<(Tensor, Tensor)> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..n)
        .map(|_| {
            let x: Vec<f32> = (0..32 * 784)
                .map(|_| rng.random_range(-1.0f32..1.0))
                .collect();
            let y: Vec<u32> = (0..32).map(|_| rng.random_range(0..10u32)).collect();
            (
                Tensor::from_vec(x, (32, 1, 28, 28), device).unwrap(),
                Tensor::from_vec(y, 32, device).unwrap(),
            )
        })
        .collect()
}

fn pruned_model(device: &Device) -> (Box<dyn Model>, MaskSet) {
    let model = deepcomp_models::build("lenet300", &Default::default(), 3, device).unwrap();
    let ws: Vec<(String, Tensor)> = model
        .prunable()
        .into_iter()
        .map(|p| (p.name, p.var.as_tensor().clone()))
        .collect();
    let named: Vec<(&str, &Tensor)> = ws.iter().map(|(n, t)| (n.as_str(), t)).collect();
    let masks = compute_masks(&named, &Criterion::Percentile { q: 80.0 }, None, None).unwrap();
    (model, masks)
}

fn values(model: &dyn Model, name: &str) -> Vec<f32> {
    let p = model.params().get(name).unwrap();
    p.var.as_tensor().flatten_all().unwrap().to_vec1().unwrap()
}

/// Trains `epochs` epochs over the same batches; returns each epoch's mean loss.
fn epochs(model: &dyn Model, hook: &mut dyn TrainHook, epochs: usize, lr: f64) -> Vec<f64> {
    let device = Device::Cpu;
    let data = batches(4, 9, &device);
    let mut opt = Sgd::new(SgdConfig {
        lr,
        momentum: 0.9,
        ..SgdConfig::default()
    })
    .unwrap();
    (0..epochs)
        .map(|e| {
            let it = data.iter().cloned().map(Ok);
            deepcomp_models::train_epoch(model, &mut opt, it, hook, e, &ProgressConfig::default())
                .unwrap()
                .loss
        })
        .collect()
}

/// STE with keep-zeros on a pruned model: the loss falls, pruned weights stay +0.0, and after
/// training the model holds exactly the exported codes' values, at most 2^bits per tensor (per
/// channel: per row).
#[test]
fn ste_trains_on_the_grid_and_keeps_pruned_zeros() {
    let device = Device::Cpu;
    for per_channel in [false, true] {
        let (model, masks) = pruned_model(&device);
        let layers: Vec<SteLayer> = model
            .prunable()
            .into_iter()
            .map(|p| SteLayer {
                keep: Some(masks.get(&p.name).unwrap().keep().to_vec()),
                name: p.name,
                shape: p.shape,
                bits: 3,
                per_channel,
            })
            .collect();
        let mut hook = SteHook::new(
            layers,
            Some(MaskHook::new(&masks, &device).unwrap()),
            device.clone(),
        );
        let losses = epochs(model.as_ref(), &mut hook, 6, 0.02);
        assert!(
            losses.windows(2).all(|w| w[1] < w[0]) && losses[5] < losses[0] - 0.02,
            "loss falls: {losses:?}"
        );
        let codes = hook.codes().unwrap();
        for (l, c) in hook.layers.iter().zip(&codes) {
            let v = values(model.as_ref(), &l.name);
            assert!(
                v.iter()
                    .zip(&c.values)
                    .all(|(a, b)| a.to_bits() == b.to_bits()),
                "{}: the model holds the codes' values",
                l.name
            );
            let keep = masks.get(&l.name).unwrap().keep();
            assert!(
                v.iter().zip(keep).all(|(x, k)| *k || x.to_bits() == 0),
                "{}: pruned weights are +0.0",
                l.name
            );
            let rows = if per_channel { l.shape[0] } else { 1 };
            for row in v.chunks(v.len() / rows) {
                assert!(distinct_nonzero(row) <= 8, "{}", l.name);
            }
        }
    }
}

/// Proximal L1 makes exact zeros; sub-gradient L1 shrinks the L1 norm against the same training
/// without it; trimmed L1 zeroes only among the smallest weights.
#[test]
fn regularizers_make_zeros_and_shrink() {
    let device = Device::Cpu;
    let l1_norm = |m: &dyn Model| -> f64 {
        m.prunable()
            .iter()
            .map(|p| {
                values(m, &p.name)
                    .iter()
                    .map(|x| f64::from(x.abs()))
                    .sum::<f64>()
            })
            .sum()
    };
    let zeros = |m: &dyn Model| -> usize {
        m.prunable()
            .iter()
            .map(|p| values(m, &p.name).iter().filter(|x| **x == 0.0).count())
            .sum()
    };
    let names = |m: &dyn Model| m.prunable().into_iter().map(|p| p.name).collect::<Vec<_>>();
    let fresh = || deepcomp_models::build("lenet300", &Default::default(), 3, &device).unwrap();

    let plain = fresh();
    epochs(plain.as_ref(), &mut deepcomp_models::NoHook, 2, 0.01);
    assert_eq!(zeros(plain.as_ref()), 0);

    let l1 = fresh();
    let mut hook = RegularizerHook {
        reg: Regularizer::L1 { lambda: 0.05 },
        names: names(l1.as_ref()),
    };
    epochs(l1.as_ref(), &mut hook, 2, 0.01);
    assert!(
        l1_norm(l1.as_ref()) < 0.9 * l1_norm(plain.as_ref()),
        "L1 shrinks the norm: {} vs {}",
        l1_norm(l1.as_ref()),
        l1_norm(plain.as_ref())
    );

    let prox = fresh();
    let mut hook = RegularizerHook {
        reg: Regularizer::ProxL1 { lambda: 0.05 },
        names: names(prox.as_ref()),
    };
    epochs(prox.as_ref(), &mut hook, 2, 0.01);
    let z = zeros(prox.as_ref());
    assert!(z > 1000, "prox-L1 makes exact zeros: {z}");

    let trimmed = fresh();
    let before: Vec<f32> = values(trimmed.as_ref(), "fc3.weight");
    let mut hook = RegularizerHook {
        reg: Regularizer::TrimmedL1 {
            lambda: 0.05,
            k: None,
            fraction: Some(0.3),
        },
        names: vec!["fc3.weight".into()],
    };
    epochs(trimmed.as_ref(), &mut hook, 1, 0.01);
    let after = values(trimmed.as_ref(), "fc3.weight");
    let z = after.iter().filter(|x| **x == 0.0).count();
    assert!(
        z > 0 && z <= (0.3 * after.len() as f64).round() as usize,
        "{z}"
    );
    // The largest weights were not penalized: the largest |w| barely moved.
    let max_b = before.iter().fold(0.0f32, |m, x| m.max(x.abs()));
    let max_a = after.iter().fold(0.0f32, |m, x| m.max(x.abs()));
    assert!((max_a - max_b).abs() < 0.05, "{max_b} → {max_a}");
}

/// Quantization-aware finetuning during iterative pruning (`prune.qat_bits`): every round trains
/// through 3-bit weights, so the pruned checkpoint holds at most 2^3 distinct values per layer; the
/// k-means stage and the file work as usual after it.
#[test]
fn qat_during_pruning_leaves_weights_on_the_grid() {
    let text = recipe_with(
        std::path::Path::new("@DATA@"),
        "fc_bits = 4\nepochs = 1\nlr = 0.0005\n",
        "",
    )
    .replacen("lr = 0.01\n", "lr = 0.01\nqat_bits = 3\n", 1);
    assert!(text.contains("qat_bits = 3"));
    let (r, _file, tmp) = run_recipe(&text);
    assert_eq!(
        r.accuracy.decoded, r.accuracy.quantized,
        "decoding is exact"
    );
    assert!(
        r.accuracy.finetuned > 0.5,
        "finetuned {}",
        r.accuracy.finetuned
    );
    let (tensors, _) =
        deepcomp_models::read_safetensors(&tmp.path().join("out/checkpoints/pruned.safetensors"))
            .unwrap();
    for (name, t) in tensors.iter().filter(|(n, _)| n.ends_with("weight")) {
        let v: Vec<f32> = t.flatten_all().unwrap().to_vec1().unwrap();
        assert!(
            distinct_nonzero(&v) <= 8,
            "{name}: {}",
            distinct_nonzero(&v)
        );
    }
}
