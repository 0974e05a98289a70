//! Knowledge distillation from the dense model (`prune.distill`, `quant.distill`) end to end on a small
//! generated dataset: the finetuning losses are the mixed loss, the file decodes, and changing the
//! setting invalidates the stages it touches (and only those).

use deepcomp_driver::report::Report;

mod common;
use common::{recipe_text, run_in};

fn losses(r: &Report, stage: &str) -> Vec<f64> {
    r.history
        .iter()
        .filter(|e| e.stage == stage)
        .map(|e| e.loss)
        .collect()
}

#[test]
fn distillation_changes_the_finetuning_and_only_the_stages_it_is_set_for() {
    let (tmp, data) = common::generated_data(600, 200);
    let plain = recipe_text(&data).replace("sensitivity = true\n", "");
    let with_prune = plain.replacen(
        "lr = 0.01\n",
        "lr = 0.01\ndistill = { alpha = 0.9, temperature = 2.0 }\n",
        1,
    );
    let with_both = with_prune.replacen(
        "lr = 0.0005\n",
        "lr = 0.0005\ndistill = { alpha = 0.5 }\n",
        1,
    );
    assert!(with_both.matches("distill").count() == 2);

    let base = run_in(&tmp.path().join("plain"), &plain);
    // Same output folder as the plain run, now distilling while pruning: the dense model is reused,
    // the pruning stages are not.
    let out = tmp.path().join("kd");
    let first = run_in(&out, &plain);
    assert_eq!(losses(&first, "finetune"), losses(&base, "finetune"));
    let kd = run_in(&out, &with_prune);
    assert!(kd.reused.contains(&"dense".to_string()), "{:?}", kd.reused);
    assert!(!kd.reused.iter().any(|s| s == "pruned"), "{:?}", kd.reused);
    let (a, b) = (losses(&base, "finetune"), losses(&kd, "finetune"));
    assert_eq!(a.len(), b.len());
    assert!(
        a.iter().zip(&b).all(|(x, y)| x != y),
        "the distilled finetuning minimizes another loss: {a:?} vs {b:?}"
    );
    assert!(kd.recipe_text.contains("distill = { alpha = 0.9"));
    assert!(kd.accuracy.decoded > 0.5, "decoded {}", kd.accuracy.decoded);
    // Adding it to the centroid stage reuses the pruned model and retrains the centroids only.
    let both = run_in(&out, &with_both);
    assert!(
        both.reused.contains(&"pruned".to_string()),
        "{:?}",
        both.reused
    );
    assert!(
        !both.reused.iter().any(|s| s == "quantized"),
        "{:?}",
        both.reused
    );
    assert_eq!(losses(&both, "finetune"), b);
    let (qa, qb) = (losses(&kd, "centroids"), losses(&both, "centroids"));
    assert_eq!(qa.len(), 1);
    assert_ne!(qa, qb);
    assert!(
        both.accuracy.decoded > 0.5,
        "decoded {}",
        both.accuracy.decoded
    );
}
