//! `prune.method = "structured"`: L2-norm neuron selection, the smaller model against the masked big
//! one (MLP, LeNet-5, CIFAR LeNet, VGG16-half), the whole pipeline on a tiny MLP and a tiny LeNet-5,
//! and the recipe checks.

use std::collections::BTreeMap;

use candle_core::{Device, Tensor};
use deepcomp_driver::pipeline::structured::{chain_names, kept_widths, shrink};
use deepcomp_driver::pipeline::{build_model, eval_file, run, PipelineOptions};
use deepcomp_driver::recipe;
use deepcomp_sparsity::structured::{kept_top, prune_neurons_to};

mod common;

fn t(v: Vec<f32>, shape: &[usize]) -> Tensor {
    Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
}

#[test]
fn l2_norm_selection_on_a_hand_made_matrix() {
    // Row norms: 5, 1, 2, √2.
    let w = t(
        vec![3., 4., 0., 1., 0., 0., 0., 0., 2., 0., 1., -1.],
        &[4, 3],
    );
    let b = t(vec![0.1, 0.2, 0.3, 0.4], &[4]);
    let next = t(vec![1., 2., 3., 4., 5., 6., 7., 8.], &[2, 4]);
    let p = prune_neurons_to(&w, Some(&b), &next, 2, 1).unwrap();
    assert_eq!(p.kept, vec![0, 2]);
    assert_eq!(
        p.w_a.to_vec2::<f32>().unwrap(),
        vec![vec![3., 4., 0.], vec![0., 0., 2.]]
    );
    assert_eq!(p.b_a.unwrap().to_vec1::<f32>().unwrap(), vec![0.1, 0.3]);
    assert_eq!(
        p.w_b.to_vec2::<f32>().unwrap(),
        vec![vec![1., 3.], vec![5., 7.]]
    );
    // Three kept: the √2 row (index 3) beats the norm-1 row.
    assert_eq!(kept_top(&[5.0, 1.0, 2.0, 2f64.sqrt()], 3), vec![0, 2, 3]);
    // Ties go to the higher index; never fewer than one, never more than all.
    assert_eq!(kept_top(&[1.0, 1.0, 1.0], 2), vec![1, 2]);
    assert_eq!(kept_top(&[1.0, 2.0], 0), vec![1]);
    assert_eq!(kept_top(&[1.0, 2.0], 9), vec![0, 1]);
    // Per-layer widths: target × layer_scale, floor, at least one kept.
    let names = vec!["fc1.weight".to_string(), "fc2.weight".to_string()];
    let scale = BTreeMap::from([("fc2.weight".to_string(), 0.5)]);
    assert_eq!(kept_widths(&[10, 7], &names, 0.5, &scale), vec![5, 6]);
    assert_eq!(kept_widths(&[10, 7], &names, 0.0, &scale), vec![10, 7]);
    assert_eq!(
        kept_widths(&[3, 7], &names, 0.9, &BTreeMap::new()),
        vec![1, 1]
    );
}

fn mlp_recipe(hidden: &str) -> recipe::Recipe {
    let text = format!(
        "name = \"s\"\nmodel = \"mlp\"\ndataset = \"mnist\"\nseed = 7\n[arch]\nhidden = {hidden}\n\
         [train]\nepochs = 1\nlr = 0.1\n[prune]\nmethod = \"structured\"\n\
         rounds = [{{ target = 0.5, epochs = 0 }}]\n[quant]\n"
    );
    recipe::parse(&text, "test").unwrap().recipe
}

#[test]
fn smaller_model_equals_the_big_model_with_removed_neurons_zeroed() {
    let dev = Device::Cpu;
    let r = mlp_recipe("[16, 12]");
    let big = build_model(&r, &dev).unwrap();
    let s = shrink(&r, big.as_ref(), &[9, 5], &dev).unwrap();
    assert_eq!(s.recipe.arch.hidden, Some(vec![9, 5]));
    let shape = |n: &str| s.model.params().get(n).unwrap().var.dims().to_vec();
    assert_eq!(shape("fc1.weight"), vec![9, 784]);
    assert_eq!(shape("fc1.bias"), vec![9]);
    assert_eq!(shape("fc2.weight"), vec![5, 9]);
    assert_eq!(shape("fc2.bias"), vec![5]);
    assert_eq!(shape("fc3.weight"), vec![10, 5]);
    assert_eq!(shape("fc3.bias"), vec![10]);

    let x = Tensor::rand(-1f32, 1f32, (6, 1, 28, 28), &dev).unwrap();
    let y_small = s.model.forward_t(&x, false).unwrap();
    let y_big_before = big.forward_t(&x, false).unwrap();
    // Zero the removed neurons' rows and biases in the big model.
    for (j, kept) in s.kept.iter().enumerate() {
        for suffix in ["weight", "bias"] {
            let var = &big
                .params()
                .get(&format!("fc{}.{suffix}", j + 1))
                .unwrap()
                .var;
            let n = var.dims()[0];
            let keep: Vec<f32> = (0..n)
                .map(|i| if kept.contains(&i) { 1.0 } else { 0.0 })
                .collect();
            let mut mshape = vec![1usize; var.rank()];
            mshape[0] = n;
            let m = t(keep, &mshape);
            var.set(&var.as_tensor().broadcast_mul(&m).unwrap())
                .unwrap();
        }
    }
    let y_big = big.forward_t(&x, false).unwrap();
    let diff = |a: &Tensor, b: &Tensor| {
        (a - b)
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
    };
    assert!(diff(&y_small, &y_big) < 1e-5, "{}", diff(&y_small, &y_big));
    // Not trivially equal: removing neurons changed the output.
    assert!(diff(&y_big_before, &y_big) > 1e-4);
}

fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

/// Multiplies dim 0 of `name` in `model` by 1 for the kept indices, 0 for the others.
fn zero_removed(model: &dyn deepcomp_models::Model, name: &str, kept: &[usize]) {
    let var = &model.params().get(name).unwrap().var;
    let n = var.dims()[0];
    let keep: Vec<f32> = (0..n)
        .map(|i| if kept.contains(&i) { 1.0 } else { 0.0 })
        .collect();
    let mut mshape = vec![1usize; var.rank()];
    mshape[0] = n;
    var.set(&var.as_tensor().broadcast_mul(&t(keep, &mshape)).unwrap())
        .unwrap();
}

fn conv_recipe(model: &str, arch: &str) -> recipe::Recipe {
    let dataset = if model == "lenet5" {
        "mnist"
    } else {
        "cifar10"
    };
    let text = format!(
        "name = \"s\"\nmodel = \"{model}\"\ndataset = \"{dataset}\"\nseed = 5\n[arch]\n{arch}\
         init = \"torch_default\"\n[train]\nepochs = 1\nlr = 0.1\n[prune]\nmethod = \"structured\"\n\
         rounds = [{{ target = 0.5, epochs = 0 }}]\n[quant]\n"
    );
    recipe::parse(&text, "test").unwrap().recipe
}

/// Shrinks `model` of `r` to `keep` and checks that the smaller model's outputs equal those of the big
/// one in which every removed output (weight rows / filters, biases and, with BatchNorm, its affine
/// parameters) was zeroed: a removed channel is then all-zero after the layer (and its pooling / ReLU)
/// and contributes nothing to the next layer. Returns the smaller model's tensor shapes.
fn check_equivalence(
    r: &recipe::Recipe,
    keep: &[usize],
    input: &[usize],
) -> (recipe::Recipe, BTreeMap<String, Vec<usize>>) {
    let dev = Device::Cpu;
    let big = build_model(r, &dev).unwrap();
    let s = shrink(r, big.as_ref(), keep, &dev).unwrap();
    let x = Tensor::rand(-1f32, 1f32, input, &dev).unwrap();
    let y_small = s.model.forward_t(&x, false).unwrap();
    let y_before = big.forward_t(&x, false).unwrap();
    let names = chain_names(big.as_ref()).unwrap();
    assert_eq!(names.len(), keep.len() + 1);
    for ((c, kept), &k) in names.iter().zip(&s.kept).zip(keep) {
        assert_eq!(kept.len(), k);
        zero_removed(big.as_ref(), &c.weight, kept);
        if let Some(b) = &c.bias {
            zero_removed(big.as_ref(), b, kept);
        }
        // A BatchNorm's output for a zero channel is beta − gamma · mean / σ: zero its affine pair.
        for n in c.per_output.iter().filter(|n| !n.contains("running")) {
            zero_removed(big.as_ref(), n, kept);
        }
    }
    let y_big = big.forward_t(&x, false).unwrap();
    let d = max_diff(&y_small, &y_big);
    assert!(d < 1e-5, "{} {d}", r.model);
    // Not trivially equal: removing outputs changed the result.
    assert!(max_diff(&y_before, &y_big) > 1e-4, "{}", r.model);
    let shapes = s
        .model
        .params()
        .iter()
        .map(|p| (p.name.clone(), p.var.dims().to_vec()))
        .collect();
    (s.recipe, shapes)
}

#[test]
fn smaller_lenet5_equals_the_dense_one_with_removed_filters_zeroed() {
    let r = conv_recipe("lenet5", "");
    let (small, shapes) = check_equivalence(&r, &[12, 30, 200], &[5, 1, 28, 28]);
    assert_eq!(small.arch.channels, Some(vec![12, 30]));
    assert_eq!(small.arch.hidden, Some(vec![200]));
    assert_eq!(shapes["conv1.weight"], vec![12, 1, 5, 5]);
    assert_eq!(shapes["conv1.bias"], vec![12]);
    assert_eq!(shapes["conv2.weight"], vec![30, 12, 5, 5]);
    assert_eq!(shapes["conv2.bias"], vec![30]);
    // conv2's 30 channels of 4×4 after the second pool, flattened channel-major.
    assert_eq!(shapes["fc1.weight"], vec![200, 30 * 16]);
    assert_eq!(shapes["fc1.bias"], vec![200]);
    assert_eq!(shapes["fc2.weight"], vec![10, 200]);
    assert_eq!(shapes.len(), 8);
}

#[test]
fn smaller_cifar_lenet_and_vgg16_half_equal_their_zeroed_dense_models() {
    let r = conv_recipe("cifar_lenet", "kernels = [5, 5]\n");
    let (small, shapes) = check_equivalence(&r, &[4, 9, 60, 40], &[3, 3, 32, 32]);
    assert_eq!(small.arch.channels, Some(vec![4, 9]));
    assert_eq!(small.arch.hidden, Some(vec![60, 40]));
    assert_eq!(shapes["fc1.weight"], vec![60, 9 * 25]);
    assert_eq!(shapes["fc3.weight"], vec![10, 40]);

    // VGG16-half with narrow layers (BatchNorm after every conv and hidden linear layer).
    let r = conv_recipe(
        "vgg16_half",
        "channels = [8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8]\nhidden = [12, 12]\n",
    );
    let keep = [5, 6, 4, 7, 3, 5, 6, 2, 8, 4, 5, 6, 3, 9, 7];
    let (small, shapes) = check_equivalence(&r, &keep, &[2, 3, 32, 32]);
    assert_eq!(small.arch.channels, Some(keep[..13].to_vec()));
    assert_eq!(small.arch.hidden, Some(vec![9, 7]));
    assert_eq!(shapes["features.0.weight"], vec![5, 3, 3, 3]);
    assert_eq!(shapes["features.1.running_var"], vec![5]);
    assert_eq!(shapes["features.3.weight"], vec![6, 5, 3, 3]);
    assert_eq!(shapes["features.40.weight"], vec![3, 6, 3, 3]);
    assert_eq!(shapes["classifier.0.weight"], vec![9, 3]);
    assert_eq!(shapes["classifier.4.running_mean"], vec![7]);
    assert_eq!(shapes["classifier.6.weight"], vec![10, 7]);
}

/// A finished pipeline run on generated data: its folders, its options (for a second run), its report.
struct GeneratedRun {
    _tmp: tempfile::TempDir,
    data: std::path::PathBuf,
    out: std::path::PathBuf,
    opts: PipelineOptions,
    report: deepcomp_driver::report::Report,
}

/// Runs `recipe_text` (`{data}` standing for the data folder) on 600 + 200 generated images.
fn run_generated(recipe_text: &str) -> GeneratedRun {
    let (tmp, data) = common::generated_data(600, 200);
    let text = recipe_text.replace("{data}", &data.display().to_string());
    let loaded = recipe::parse(&text, "test").unwrap();
    let out = tmp.path().join("out");
    let opts = PipelineOptions {
        recipe: loaded,
        out: out.clone(),
        fresh: false,
        progress: false,
        data_path: None,
    };
    let report = run(&opts).unwrap();
    GeneratedRun {
        _tmp: tmp,
        data,
        out,
        opts,
        report,
    }
}

/// Tensor shapes of the smaller model's checkpoint.
fn pruned_shapes(out: &std::path::Path) -> BTreeMap<String, Vec<usize>> {
    let (tensors, _) =
        deepcomp_models::read_safetensors(&out.join("checkpoints/pruned.safetensors")).unwrap();
    tensors
        .iter()
        .map(|(n, t)| (n.clone(), t.dims().to_vec()))
        .collect()
}

/// The `.dcz` alone says what to build: the recipe from its metadata evaluates it to the pipeline's
/// decoded accuracy, and the compressed engine agrees within 0.02. Returns that recipe.
fn check_dcz_alone(g: &GeneratedRun) -> recipe::Recipe {
    let dcz = g.out.join("model.dcz");
    let mut r = deepcomp_driver::meta::recipe_for(&dcz, None, None, "ci").unwrap();
    r.data.verify = false;
    r.data.allow_download = false;
    let (top1, _) = eval_file(&r, &dcz, Some(&g.data), None).unwrap();
    assert_eq!(top1, g.report.accuracy.decoded);
    let rt = deepcomp_driver::engine::run_file(&r, &dcz, Some(&g.data)).unwrap();
    assert!((rt.top1 - top1).abs() < 0.02, "{} vs {top1}", rt.top1);
    r
}

#[test]
fn structured_lenet5_pipeline_end_to_end() {
    let g = run_generated(
        r#"
name = "structured-lenet5"
model = "lenet5"
dataset = "fashion-mnist"
seed = 4
[arch]
channels = [8, 12]
hidden = [32]
init = "torch_default"
[data]
path = "{data}"
batch_size = 50
eval_batch_size = 200
allow_download = false
verify = false
validation = 100
[train]
epochs = 1
lr = 0.02
momentum = 0.9
[prune]
method = "structured"
rounds = [{ target = 0.25, epochs = 1 }, { target = 0.5, epochs = 1 }]
layer_scale = { "conv1.weight" = 0.5 }
lr = 0.01
momentum = 0.9
[quant]
conv_bits = 5
fc_bits = 4
epochs = 1
lr = 0.0005
"#,
    );
    let (out, report, opts) = (&g.out, &g.report, &g.opts);
    // conv1: 8 − floor(8 · 0.25) = 6; conv2: 12 → 6; fc1: 32 → 16; the 10 classes stay.
    let shapes = pruned_shapes(out);
    assert_eq!(shapes["conv1.weight"], vec![6, 1, 5, 5]);
    assert_eq!(shapes["conv1.bias"], vec![6]);
    assert_eq!(shapes["conv2.weight"], vec![6, 6, 5, 5]);
    assert_eq!(shapes["conv2.bias"], vec![6]);
    assert_eq!(shapes["fc1.weight"], vec![16, 6 * 16]);
    assert_eq!(shapes["fc1.bias"], vec![16]);
    assert_eq!(shapes["fc2.weight"], vec![10, 16]);
    assert_eq!(shapes["fc2.bias"], vec![10]);
    assert_eq!(shapes.len(), 8);
    let st = report.structured.as_ref().expect("structured report");
    assert_eq!(st.layers, vec!["conv1", "conv2", "fc1"]);
    assert_eq!(st.hidden_dense, vec![8, 12, 32]);
    assert_eq!(st.hidden, vec![6, 6, 16]);
    let params = |c1: usize, c2: usize, h: usize| {
        (c1 * 25 + c1 + c2 * c1 * 25 + c2 + h * c2 * 16 + h + 10 * h + 10) as u64
    };
    assert_eq!(st.params_dense, params(8, 12, 32));
    assert_eq!(st.params, params(6, 6, 16));
    assert_eq!(
        st.latency.iter().map(|l| l.batch).collect::<Vec<_>>(),
        vec![1, 128]
    );
    assert!(st
        .latency
        .iter()
        .all(|l| l.dense_ms > 0.0 && l.structured_ms > 0.0 && l.repeats >= 5));
    assert_eq!(report.bytes.dense_f32, 4 * st.params_dense);
    assert!(report.accuracy.decoded > 0.3, "{:?}", report.accuracy);
    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(
        md.contains("## Structured pruning") && md.contains("(conv1, conv2, fc1) 8-12-32 → 6-6-16"),
        "{md}"
    );

    // The `.dcz` alone says what to build: its metadata carries the new channels and width.
    let dcz = out.join("model.dcz");
    let file = deepcomp_driver::container::DczFile::read(&dcz).unwrap();
    assert!(file
        .metadata
        .as_deref()
        .unwrap()
        .contains("\"channels\":[6,6]"));
    let r = check_dcz_alone(&g);
    assert_eq!(r.model, "lenet5");
    assert_eq!(r.arch.channels, Some(vec![6, 6]));
    assert_eq!(r.arch.hidden, Some(vec![16]));

    // A second run resumes from the smaller checkpoints and writes the same file.
    let sha = report.dcz_sha256.clone();
    let again = run(opts).unwrap();
    assert_eq!(again.dcz_sha256, sha);
    assert_eq!(again.structured.unwrap().hidden, vec![6, 6, 16]);
}

#[test]
fn structured_pipeline_writes_the_smaller_model_and_a_self_describing_dcz() {
    let g = run_generated(
        r#"
name = "structured-e2e"
model = "mlp"
dataset = "fashion-mnist"
seed = 3
[arch]
hidden = [32, 24]
[data]
path = "{data}"
batch_size = 50
eval_batch_size = 200
allow_download = false
verify = false
validation = 100
[train]
epochs = 1
lr = 0.05
[prune]
method = "structured"
rounds = [{ target = 0.25, epochs = 1 }, { target = 0.5, epochs = 1 }]
layer_scale = { "fc2.weight" = 0.5 }
lr = 0.01
[quant]
fc_bits = 4
epochs = 1
lr = 0.0005
"#,
    );
    let (out, report, opts) = (&g.out, &g.report, &g.opts);
    // fc1: 32 → 16; fc2: 24 → 24 − floor(24 · 0.25) = 18; the 10 classes stay.
    let shapes = pruned_shapes(out);
    assert_eq!(shapes["fc1.weight"], vec![16, 784]);
    assert_eq!(shapes["fc1.bias"], vec![16]);
    assert_eq!(shapes["fc2.weight"], vec![18, 16]);
    assert_eq!(shapes["fc2.bias"], vec![18]);
    assert_eq!(shapes["fc3.weight"], vec![10, 18]);
    assert_eq!(shapes["fc3.bias"], vec![10]);
    assert_eq!(shapes.len(), 6);
    let st = report.structured.as_ref().expect("structured report");
    assert_eq!(st.hidden_dense, vec![32, 24]);
    assert_eq!(st.hidden, vec![16, 18]);
    assert_eq!(
        st.params_dense,
        (784 * 32 + 32 + 32 * 24 + 24 + 24 * 10 + 10) as u64
    );
    assert_eq!(
        st.params,
        (784 * 16 + 16 + 16 * 18 + 18 + 18 * 10 + 10) as u64
    );
    assert_eq!(st.latency.len(), 2);
    assert!(st
        .latency
        .iter()
        .all(|l| l.dense_ms > 0.0 && l.structured_ms > 0.0));
    assert_eq!(report.bytes.dense_f32, 4 * st.params_dense);
    assert!(report.accuracy.decoded > 0.3, "{:?}", report.accuracy);
    let json = std::fs::read_to_string(out.join("report.json")).unwrap();
    assert!(json.contains("\"structured\"") && json.contains("structured_ms"));
    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(md.contains("## Structured pruning"), "{md}");

    // The `.dcz` alone says what to build: its metadata carries the new widths.
    let r = check_dcz_alone(&g);
    assert_eq!(r.model, "mlp");
    assert_eq!(r.arch.hidden, Some(vec![16, 18]));

    // A second run resumes from the smaller checkpoints and writes the same file.
    let sha = report.dcz_sha256.clone();
    let again = run(opts).unwrap();
    assert_eq!(again.dcz_sha256, sha);
    assert_eq!(again.structured.unwrap().hidden, vec![16, 18]);
}

#[test]
fn structured_recipe_errors_name_the_field() {
    let base = |model: &str, extra: &str, rounds: &str| {
        format!(
            "name = \"s\"\nmodel = \"{model}\"\ndataset = \"cifar10\"\n[train]\nepochs = 1\nlr = 0.1\n\
             [prune]\nmethod = \"structured\"\n{extra}{rounds}[quant]\n"
        )
    };
    let ok_rounds = "rounds = [{ target = 0.5, epochs = 0 }]\n";
    let e = recipe::parse(&base("resnet20", "", ok_rounds), "r")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("prune.method") && e.contains("resnet20") && e.contains("residual"),
        "{e}"
    );
    for conv in ["lenet5", "cifar_lenet", "vgg16_half"] {
        recipe::parse(&base(conv, "", ok_rounds), "r").unwrap();
    }
    for bad in ["1.2", "-0.1", "1.0"] {
        let rounds = format!("rounds = [{{ target = {bad}, epochs = 0 }}]\n");
        let e = recipe::parse(&base("mlp", "", &rounds), "r")
            .unwrap_err()
            .to_string();
        assert!(e.contains("prune.rounds[0].target"), "{e}");
    }
    let e = recipe::parse(&base("mlp", "", "rounds = [{ epochs = 0 }]\n"), "r")
        .unwrap_err()
        .to_string();
    assert!(e.contains("prune.rounds[0].target"), "{e}");
    let e = recipe::parse(
        &base(
            "mlp",
            "schedule = \"agp\"\nfinal_target = 0.5\nepochs = 1\nlr = 0.01\n",
            "",
        ),
        "r",
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("prune.schedule"), "{e}");
    let e = recipe::parse(&base("lenet300", "qat_bits = 4\n", ok_rounds), "r")
        .unwrap_err()
        .to_string();
    assert!(e.contains("prune.qat_bits"), "{e}");
    // layer_scale is allowed with method structured.
    recipe::parse(
        &base(
            "lenet300",
            "layer_scale = { \"fc2.weight\" = 0.5 }\n",
            ok_rounds,
        ),
        "r",
    )
    .unwrap();
}
