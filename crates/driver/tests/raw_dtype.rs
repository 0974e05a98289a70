//! `encode.raw_dtype`: the tensors a `.dcz` stores raw (biases, BatchNorm) as `f16` / `bf16`. The file
//! holds them as typed sections, decodes bit-exact to the rounded model, is smaller by two bytes per
//! value, and the trained stages are reused (the setting changes the encoding only).

use candle_core::{Device, Tensor};
use deepcomp_driver::container::{DczFile, Dtype};
use deepcomp_driver::pipeline::{build_model, round_raw_tensors};
use deepcomp_driver::recipe;

mod common;
use common::{recipe_text, run_in};

#[test]
fn half_precision_raw_tensors_shrink_the_file_and_decode_to_the_rounded_model() {
    let (tmp, data) = common::generated_data(600, 200);
    let plain = recipe_text(&data).replace("sensitivity = true\n", "");
    let out = tmp.path().join("run");
    let f32_run = run_in(&out, &plain);
    let f32_file = DczFile::read(&out.join("model.dcz")).unwrap();
    // The decoded model agrees with deepcomp-runtime (an independent implementation) on test images.
    assert!(
        f32_run.runtime_check.is_some_and(|d| d <= 1e-4),
        "{:?}",
        f32_run.runtime_check
    );
    assert!(f32_file.typed.is_empty());
    // LeNet-300-100's three biases: 300 + 100 + 10 values.
    let raw_values: usize = f32_file.dense.iter().map(|d| d.data.len()).sum();
    assert_eq!(raw_values, 410);

    for (dtype_name, dtype) in [("f16", Dtype::F16), ("bf16", Dtype::BF16)] {
        let text = format!("{plain}[encode]\nraw_dtype = \"{dtype_name}\"\n");
        let r = run_in(&out, &text);
        // Only the encoding changed: every trained stage comes from the checkpoints.
        assert!(
            r.reused.contains(&"quantized".to_string()),
            "{dtype_name}: {:?}",
            r.reused
        );
        let file = DczFile::read(&out.join("model.dcz")).unwrap();
        assert!(
            file.dense.is_empty(),
            "{dtype_name}: no f32 raw tensor left"
        );
        assert_eq!(file.typed.len(), f32_file.dense.len());
        for (t, d) in file.typed.iter().zip(&f32_file.dense) {
            assert_eq!((&t.name, t.dtype, &t.shape), (&d.name, dtype, &d.shape));
            assert_eq!(t.data.len(), 2 * d.data.len());
            // Each stored value is the f32 run's value rounded to nearest even.
            let want: Vec<u8> = match dtype {
                Dtype::F16 => d
                    .data
                    .iter()
                    .flat_map(|&v| half::f16::from_f32(v).to_le_bytes())
                    .collect(),
                _ => d
                    .data
                    .iter()
                    .flat_map(|&v| half::bf16::from_f32(v).to_le_bytes())
                    .collect(),
            };
            assert_eq!(t.data, want, "{dtype_name}: {}", t.name);
        }
        // The coded layers are untouched.
        assert_eq!(file.layers, f32_file.layers);
        // Two bytes saved per raw value; the typed sections' framing is one dtype byte longer each.
        let saved = f32_run.bytes.dcz as i64 - r.bytes.dcz as i64;
        let expected = 2 * raw_values as i64 - file.typed.len() as i64;
        assert!(
            (saved - expected).abs() <= 8,
            "{dtype_name}: saved {saved} bytes, expected about {expected}"
        );
        assert_eq!(
            r.bytes.pq + 2 * raw_values as u64,
            f32_run.bytes.pq,
            "{dtype_name}: the P+Q figure counts raw tensors at their stored size"
        );
        // The decoded model is evaluated and reported; rounding biases barely moves it.
        assert!(
            (r.accuracy.decoded - f32_run.accuracy.decoded).abs() <= 0.02,
            "{dtype_name}: decoded {} vs {}",
            r.accuracy.decoded,
            f32_run.accuracy.decoded
        );
    }
}

#[test]
fn a_value_beyond_the_half_range_is_an_error_naming_the_tensor() {
    let (_tmp, data) = common::generated_data(10, 10);
    let text = format!("{}[encode]\nraw_dtype = \"f16\"\n", recipe_text(&data));
    let loaded = recipe::parse(&text, "test").unwrap();
    let model = build_model(&loaded.recipe, &Device::Cpu).unwrap();
    let bias = model.params().get("fc2.bias").unwrap();
    let mut v = vec![0.25f32; 100];
    v[7] = 1.0e6;
    bias.var
        .set(&Tensor::new(v, &Device::Cpu).unwrap())
        .unwrap();
    let err = round_raw_tensors(&loaded.recipe, model.as_ref())
        .unwrap_err()
        .to_string();
    assert!(err.contains("fc2.bias") && err.contains("1000000"), "{err}");
    assert!(err.contains("raw_dtype"), "{err}");

    // bf16 holds it (rounded); every raw tensor is rounded and nothing else.
    let text = text.replace("\"f16\"", "\"bf16\"");
    let loaded = recipe::parse(&text, "test").unwrap();
    let n = round_raw_tensors(&loaded.recipe, model.as_ref()).unwrap();
    assert_eq!(n, 3);
    let got = bias.var.as_tensor().to_vec1::<f32>().unwrap();
    assert_eq!(got[7], half::bf16::from_f32(1.0e6).to_f32());
    assert_eq!(got[0], 0.25);
}

#[test]
fn an_unknown_raw_dtype_is_refused_naming_the_field() {
    let (_tmp, data) = common::generated_data(10, 10);
    let text = format!("{}[encode]\nraw_dtype = \"f8\"\n", recipe_text(&data));
    let err = recipe::parse(&text, "test").unwrap_err().to_string();
    assert!(
        err.contains("encode.raw_dtype") && err.contains("f8") && err.contains("bf16"),
        "{err}"
    );
}
