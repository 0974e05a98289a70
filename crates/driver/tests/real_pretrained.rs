//! Real data: the pretrained PyTorch ResNet-20 (akamaster/pytorch_resnet_cifar10, converted to
//! safetensors) evaluated on the JPEG copy of CIFAR-10's test split with ImageNet normalization, read
//! straight from the `.tar.gz`. PyTorch gives 0.8103 top-1 on the same files (see the shared data's
//! README); our eval must agree within 0.002. The data is looked for in `$DEEPCOMP_TEST_DATA` or
//! `../shared/data` beside the checkout; under CI its absence fails the test, elsewhere the test says
//! loudly that it was skipped.

use deepcomp_driver::pipeline::eval_file;
use deepcomp_driver::recipe;

#[test]
fn pretrained_resnet20_on_jpeg_cifar10_test_split_matches_pytorch() {
    let manifest = env!("CARGO_MANIFEST_DIR");
    let Some(archive) =
        deepcomp_datasets::shared_data_file(manifest, "cifar10-jpeg.tar.gz").unwrap()
    else {
        return;
    };
    let Some(weights) =
        deepcomp_datasets::shared_data_file(manifest, "pretrained/resnet20-cifar10.safetensors")
            .unwrap()
    else {
        return;
    };
    let text = format!(
        r#"
name = "pretrained-eval"
model = "resnet20"
dataset = "cifar10"
[data]
path = "{}"
eval_batch_size = 500
mean = [0.485, 0.456, 0.406]
std = [0.229, 0.224, 0.225]
[train]
checkpoint = "{}"
[prune]
method = "percentile"
rounds = [{{ target = 0.5, epochs = 0 }}]
[quant]
"#,
        archive.display(),
        weights.display()
    );
    let r = recipe::parse(&text, "pretrained-eval").unwrap().recipe;
    let (top1, top5) = eval_file(&r, &weights, None, None).unwrap();
    eprintln!(
        "pretrained ResNet-20 on the JPEG CIFAR-10 test split: top-1 {top1:.4}, top-5 {top5:.4}"
    );
    assert!((top1 - 0.8103).abs() <= 0.002, "top-1 {top1}");
}
