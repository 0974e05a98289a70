//! The real Fashion-MNIST, as installed by Debian's `dataset-fashion-mnist` package (CI
//! installs it). Where the package is absent the test says so loudly and checks instead that
//! the not-found error names the Debian location; under CI (`CI` set) absence is a failure.

use std::path::Path;

use deepcomp_datasets::{
    load, DatasetError, DatasetId, LoadOptions, Manifest, SearchRoots, Verified,
};

const DEBIAN_DIR: &str = "/usr/share/datasets/fashion-mnist";

fn system_only() -> LoadOptions {
    LoadOptions {
        roots: Some(SearchRoots {
            data_env: None,
            cache: None,
            system: vec!["/usr/share/datasets".into()],
        }),
        ..LoadOptions::default()
    }
}

#[test]
fn real_fashion_mnist_from_debian_package() {
    if !Path::new(DEBIAN_DIR)
        .join("train-images-idx3-ubyte.gz")
        .is_file()
    {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must install the Debian package dataset-fashion-mnist"
        );
        eprintln!("NOTE: {DEBIAN_DIR} absent (apt-get install dataset-fashion-mnist); checking the error only");
        let e = load(DatasetId::FashionMnist, &system_only()).unwrap_err();
        assert!(matches!(e, DatasetError::NotFound { .. }), "{e}");
        assert!(e.to_string().contains(DEBIAN_DIR), "{e}");
        return;
    }
    let mut opts = system_only();
    opts.verify_checksums = true;
    let ds = load(DatasetId::FashionMnist, &opts).unwrap();
    assert_eq!(ds.source, Path::new(DEBIAN_DIR));
    assert_eq!(
        (ds.train.n, ds.train.c, ds.train.h, ds.train.w),
        (60_000, 1, 28, 28)
    );
    assert_eq!(ds.test.n, 10_000);
    // Fashion-MNIST is balanced: 6000 / 1000 examples per class.
    for (split, per_class) in [(&ds.train, 6000), (&ds.test, 1000)] {
        let mut hist = [0usize; 10];
        for &l in &split.labels {
            hist[l as usize] += 1;
        }
        assert_eq!(hist, [per_class; 10]);
    }
    // The customary statistics match the training pixels.
    let (mean, std) = ds.train.channel_stats().unwrap();
    assert!((mean[0] - 0.2860).abs() < 5e-4, "{mean:?}");
    assert!((std[0] - 0.3530).abs() < 5e-4, "{std:?}");
    // The first training label of Fashion-MNIST is 9 (ankle boot), the first test label 9 too.
    assert_eq!(ds.train.labels[0], 9);
    assert_eq!(ds.test.labels[0], 9);
    // The Debian files match the manifest's known copies.
    let m = Manifest::embedded(DatasetId::FashionMnist).unwrap();
    for f in &m.files {
        let v = f.verify(&Path::new(DEBIAN_DIR).join(&f.name)).unwrap();
        assert!(matches!(v, Verified::KnownCopy(_)), "{}: {v:?}", f.name);
    }
}
