//! Which split each figure comes from: the pipeline chooses on a validation split held out of training
//! and reports on the test split; `eval` needs only the test files.

use deepcomp_driver::pipeline::{eval_file, run, PipelineOptions};
use deepcomp_driver::recipe;

mod common;
use common::{recipe_text, write_dataset};

#[test]
fn validation_is_held_out_of_training_and_eval_needs_only_test_files() {
    let (tmp, data) = common::generated_data(600, 200);
    let text = recipe_text(&data)
        .replace("epochs = 2\n", "epochs = 1\n")
        .replace("verify = false\n", "verify = false\nvalidation = 120\n");
    let loaded = recipe::parse(&text, "splits-test").unwrap();
    let out = tmp.path().join("out");
    let r = run(&PipelineOptions {
        recipe: loaded.clone(),
        out: out.clone(),
        fresh: false,
        progress: false,
        data_path: None,
    })
    .unwrap();
    assert_eq!(
        (r.examples.train, r.examples.validation, r.examples.test),
        (480, 120, 200)
    );
    assert!(r
        .history
        .iter()
        .filter(|e| e.stage != "shared")
        .all(|e| (0.0..=1.0).contains(&e.val_top1)));
    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(md.contains("120 validation"), "{md}");
    assert!(md.contains("top-1 on the validation split"), "{md}");

    // Only the test files: eval works on them alone.
    for f in ["train-images-idx3-ubyte", "train-labels-idx1-ubyte"] {
        std::fs::remove_file(data.join(f)).unwrap();
    }
    let (top1, _) = eval_file(&loaded.recipe, &out.join("model.dcz"), None, None).unwrap();
    assert_eq!(top1, r.accuracy.decoded);

    // A validation split as large as the training split is refused, naming the field.
    let bad = recipe::parse(&text.replace("validation = 120", "validation = 600"), "t").unwrap();
    write_dataset(&data, 600, 200);
    let e = run(&PipelineOptions {
        recipe: bad,
        out: tmp.path().join("out2"),
        fresh: false,
        progress: false,
        data_path: None,
    })
    .unwrap_err()
    .to_string();
    assert!(e.contains("data.validation"), "{e}");
}
