//! The real data sets in the shared data folder (`$DEEPCOMP_TEST_DATA`, else `../shared/data`
//! beside the workspace; see `deepcomp_datasets::shared_data_file`): the CIFAR-10 JPEG archive's
//! test split and the MNIST files. Absent data fails under CI and is a loud skip elsewhere.

use deepcomp_datasets::{
    load, shared_data_file, DatasetId, LoadOptions, Manifest, SearchRoots, Splits, Verified,
};

fn nowhere_else() -> Option<SearchRoots> {
    Some(SearchRoots::default())
}

#[test]
fn real_cifar10_jpeg_test_split() {
    let Some(archive) =
        shared_data_file(env!("CARGO_MANIFEST_DIR"), "cifar10-jpeg.tar.gz").unwrap()
    else {
        return;
    };
    let opts = LoadOptions {
        explicit: Some(archive.clone()),
        splits: Splits::TestOnly,
        verify_checksums: true,
        roots: nowhere_else(),
        ..LoadOptions::default()
    };
    let ds = load(DatasetId::Cifar10, &opts).unwrap();
    assert_eq!(ds.source, archive);
    assert_eq!(
        (ds.train.n, ds.train.c, ds.train.h, ds.train.w),
        (0, 3, 32, 32)
    );
    assert_eq!(
        (ds.test.n, ds.test.c, ds.test.h, ds.test.w),
        (10_000, 3, 32, 32)
    );
    assert_eq!(ds.class_names, DatasetId::Cifar10.class_names());
    // 1000 per class, class by class in CIFAR-10 order.
    for (k, chunk) in ds.test.labels.chunks(1000).enumerate() {
        assert!(chunk.iter().all(|&l| l == k as u32), "class {k}");
    }
    // Natural images: the channel statistics are close to CIFAR-10's customary ones.
    let (mean, _) = ds.test.channel_stats().unwrap();
    for (m, want) in mean.iter().zip(DatasetId::Cifar10.mean()) {
        assert!((m - want).abs() < 0.02, "{mean:?}");
    }
    let m = Manifest::embedded(DatasetId::Cifar10).unwrap();
    assert!(matches!(
        m.verify_local(&archive).unwrap(),
        Some(Verified::Alternative(_))
    ));
}

#[test]
fn real_mnist_with_the_known_copy() {
    let Some(dir) = shared_data_file(env!("CARGO_MANIFEST_DIR"), "mnist").unwrap() else {
        return;
    };
    let opts = LoadOptions {
        explicit: Some(dir.clone()),
        verify_checksums: true,
        roots: nowhere_else(),
        ..LoadOptions::default()
    };
    let ds = load(DatasetId::Mnist, &opts).unwrap();
    assert_eq!((ds.train.n, ds.train.h, ds.train.w), (60_000, 28, 28));
    assert_eq!(ds.test.n, 10_000);
    // The first MNIST labels: 5 (train) and 7 (test).
    assert_eq!((ds.train.labels[0], ds.test.labels[0]), (5, 7));
    let m = Manifest::embedded(DatasetId::Mnist).unwrap();
    let v = |name: &str| m.file(name).unwrap().verify(&dir.join(name)).unwrap();
    assert!(
        matches!(v("train-images-idx3-ubyte.gz"), Verified::KnownCopy(d) if d.contains("rebuilt"))
    );
    for name in [
        "train-labels-idx1-ubyte.gz",
        "t10k-images-idx3-ubyte.gz",
        "t10k-labels-idx1-ubyte.gz",
    ] {
        assert_eq!(v(name), Verified::Sha256, "{name}");
    }
}
