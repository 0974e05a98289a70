//! `engine::eval_compressed` (the compressed runtime) gives the same accuracy as `pipeline::eval_file`
//! (the candle model with the decoded weights) on a generated data set and a generated `.dcz`.

mod common;

use candle_core::Device;
use deepcomp_driver::container::{DczFile, DenseTensor, LayerKind, SparseLayer};
use deepcomp_driver::{engine, pipeline, recipe};
use deepcomp_models::{ArchConfig, ParamRole};
use deepcomp_quant::{share_weights, Init};

fn lenet300_dcz() -> DczFile {
    let model =
        deepcomp_models::build("lenet300", &ArchConfig::default(), 9, &Device::Cpu).unwrap();
    let mut layers = Vec::new();
    let mut dense = Vec::new();
    for p in model.params().iter() {
        let t = p.var.as_tensor();
        let data = t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let shape = t.dims().to_vec();
        if let ParamRole::Weight(_) = p.role {
            // Keep every 10th weight, 4-bit codebook.
            let pruned: Vec<f32> = data
                .iter()
                .enumerate()
                .map(|(i, &v)| if i % 10 == 3 { v } else { 0.0 })
                .collect();
            let s = share_weights(&pruned, None, 4, Init::Linear).unwrap();
            layers.push(SparseLayer {
                name: p.name.clone(),
                kind: LayerKind::Fc,
                shape,
                bits: 4,
                index_bits: 4,
                codebook: s.codebook().to_vec(),
                positions: s.positions().to_vec(),
                codes: s.codes().to_vec(),
            });
        } else {
            let data = (0..data.len()).map(|i| (i % 7) as f32 * 0.01).collect();
            dense.push(DenseTensor {
                name: p.name.clone(),
                shape,
                data,
            });
        }
    }
    DczFile {
        model: "lenet300".into(),
        recipe_hash: [0; 32],
        layers,
        dense,
        ..Default::default()
    }
}

#[test]
fn compressed_engine_matches_candle_eval() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    common::write_dataset(&data, 20, 300);
    let recipe_path = dir.path().join("r.toml");
    std::fs::write(&recipe_path, common::recipe_text(&data)).unwrap();
    let r = recipe::load(recipe_path.to_str().unwrap()).unwrap().recipe;
    let dcz = dir.path().join("m.dcz");
    lenet300_dcz().write_atomic(&dcz).unwrap();

    let (c1, c5) = engine::eval_compressed(&r, &dcz, None).unwrap();
    let (d1, d5) = pipeline::eval_file(&r, &dcz, None, None).unwrap();
    assert_eq!((c1, c5), (d1, d5));
    let rep = engine::run_file(&r, &dcz, None).unwrap();
    assert_eq!(rep.examples, 300);
    assert_eq!(rep.model, "lenet300");
    assert!(rep.weight_bytes * 4 < rep.dense_bytes);

    // Errors name the file.
    let bad = dir.path().join("bad.dcz");
    std::fs::write(&bad, b"nope").unwrap();
    let err = engine::eval_compressed(&r, &bad, None).unwrap_err();
    assert!(err.to_string().contains("bad.dcz"), "{err}");
}

#[test]
fn the_runtime_cross_check_agrees_on_the_same_weights_and_catches_a_different_one() {
    let file = lenet300_dcz();
    let recipe = recipe::load("lenet300-fashion").unwrap().recipe;
    let model = pipeline::build_model(&recipe, &Device::Cpu).unwrap();
    pipeline::load_dcz_into(model.as_ref(), &file, &Device::Cpu).unwrap();
    let x: Vec<f32> = (0..5 * 784).map(|i| ((i as f32) * 0.37).sin()).collect();
    let images = candle_core::Tensor::from_vec(x, (5, 1, 28, 28), &Device::Cpu).unwrap();
    let d = engine::runtime_cross_check(&file, model.as_ref(), &images)
        .unwrap()
        .expect("the runtime runs LeNet-300-100");
    assert!(d <= 1e-5, "same weights, relative difference {d}");

    // One output row of fc3 changed in the candle model only: the check names the disagreement.
    let p = model.params().get("fc3.bias").unwrap();
    let mut b = p.var.as_tensor().to_vec1::<f32>().unwrap();
    b[4] += 3.0;
    p.var
        .set(&candle_core::Tensor::new(b, &Device::Cpu).unwrap())
        .unwrap();
    let err = engine::runtime_cross_check(&file, model.as_ref(), &images)
        .unwrap_err()
        .to_string();
    assert!(err.contains("disagree") && err.contains("class 4"), "{err}");

    // A model the runtime does not know is no error, only unchecked.
    let mut other = file.clone();
    other.model = "vgg16_half".into();
    assert_eq!(
        engine::runtime_cross_check(&other, model.as_ref(), &images).unwrap(),
        None
    );
}
