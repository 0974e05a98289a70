//! Discovery order, readers for generated IDX and CIFAR sets (folder and tarball), and the
//! errors for bad files.

mod common;

use std::path::{Path, PathBuf};

use deepcomp_datasets::{
    load, DatasetError, DatasetId, LoadOptions, SearchRoots, Splits, CIFAR_PIXELS,
};

fn roots(base: &Path) -> SearchRoots {
    SearchRoots {
        data_env: Some(base.join("env")),
        cache: Some(base.join("cache")),
        system: vec![base.join("sys")],
    }
}

fn opts(base: &Path) -> LoadOptions {
    LoadOptions {
        roots: Some(roots(base)),
        ..LoadOptions::default()
    }
}

#[test]
fn not_found_lists_every_place_in_order() {
    let tmp = tempfile::tempdir().unwrap();
    let e = load(DatasetId::Mnist, &opts(tmp.path())).unwrap_err();
    let DatasetError::NotFound { looked, .. } = &e else {
        panic!("{e}")
    };
    let places: Vec<PathBuf> = looked.iter().map(|l| l.0.clone()).collect();
    assert_eq!(
        places,
        vec![
            tmp.path().join("env/mnist"),
            tmp.path().join("cache/mnist"),
            tmp.path().join("sys/mnist"),
        ]
    );
    let msg = e.to_string();
    for p in &places {
        assert!(msg.contains(&p.display().to_string()), "{msg}");
    }
    assert!(
        msg.contains("DEEPCOMP_DATA") && msg.contains("does not exist"),
        "{msg}"
    );
}

#[test]
fn search_order_prefers_earlier_roots() {
    let tmp = tempfile::tempdir().unwrap();
    let small = common::idx_files(20, 10, 28, 28);
    let large = common::idx_files(40, 10, 28, 28);
    common::write_files(&tmp.path().join("sys/fashion-mnist"), &small);
    let ds = load(DatasetId::FashionMnist, &opts(tmp.path())).unwrap();
    assert_eq!(ds.train.n, 20);
    assert_eq!(ds.source, tmp.path().join("sys/fashion-mnist"));

    common::write_files(&tmp.path().join("cache/fashion-mnist"), &large);
    let ds = load(DatasetId::FashionMnist, &opts(tmp.path())).unwrap();
    assert_eq!(ds.source, tmp.path().join("cache/fashion-mnist"));
    assert_eq!(ds.train.n, 40);

    // An incomplete folder earlier in the order is skipped, and its reason kept.
    common::write_files(&tmp.path().join("env/fashion-mnist"), &small[..2]);
    let ds = load(DatasetId::FashionMnist, &opts(tmp.path())).unwrap();
    assert_eq!(ds.source, tmp.path().join("cache/fashion-mnist"));

    // An explicit path wins and is the only place searched.
    let mut o = opts(tmp.path());
    o.explicit = Some(tmp.path().join("sys"));
    let ds = load(DatasetId::FashionMnist, &o).unwrap();
    assert_eq!(ds.source, tmp.path().join("sys/fashion-mnist"));
    o.explicit = Some(tmp.path().join("nowhere"));
    let e = load(DatasetId::FashionMnist, &o).unwrap_err();
    let DatasetError::NotFound { looked, .. } = &e else {
        panic!("{e}")
    };
    assert_eq!(looked.len(), 2);
    assert!(looked
        .iter()
        .all(|l| l.0.starts_with(tmp.path().join("nowhere"))));
}

#[test]
fn idx_contents_and_metadata() {
    let tmp = tempfile::tempdir().unwrap();
    let files = common::idx_files(25, 7, 28, 28);
    let dir = tmp.path().join("m");
    common::write_files(&dir, &files);
    let mut o = opts(tmp.path());
    o.explicit = Some(dir.clone());
    let ds = load(DatasetId::Mnist, &o).unwrap();
    assert_eq!(
        (ds.classes, ds.mean.clone(), ds.std.clone()),
        (10, vec![0.1307], vec![0.3081])
    );
    assert_eq!(
        (ds.train.n, ds.train.c, ds.train.h, ds.train.w),
        (25, 1, 28, 28)
    );
    assert_eq!(ds.train.images, common::bytes(1, 25 * 28 * 28));
    assert_eq!(ds.test.images, common::bytes(2, 7 * 28 * 28));
    assert_eq!(
        ds.train.labels,
        (0..25).map(|i| i % 10).collect::<Vec<u32>>()
    );
    // Raw (decompressed) files are read the same way.
    let raw = tmp.path().join("raw");
    std::fs::create_dir_all(&raw).unwrap();
    for (name, gz) in &files {
        let mut d = flate2::read::GzDecoder::new(&gz[..]);
        let mut v = Vec::new();
        std::io::Read::read_to_end(&mut d, &mut v).unwrap();
        std::fs::write(raw.join(name.trim_end_matches(".gz")), v).unwrap();
    }
    o.explicit = Some(raw);
    assert_eq!(load(DatasetId::Mnist, &o).unwrap().train, ds.train);
}

#[test]
fn corrupt_idx_file_names_file_and_offset() {
    let tmp = tempfile::tempdir().unwrap();
    let mut files = common::idx_files(10, 5, 28, 28);
    // Label 12 in a 10-class set, at record 3 of the test labels.
    let labels = deepcomp_datasets::encode_idx_u8(&[5], &[0, 1, 2, 12, 4]);
    files[3].1 = common::gzip(&labels);
    let dir = tmp.path().join("fashion-mnist");
    common::write_files(&dir, &files);
    let mut o = opts(tmp.path());
    o.explicit = Some(dir.clone());
    let e = load(DatasetId::FashionMnist, &o).unwrap_err();
    let DatasetError::Format {
        file,
        offset,
        expected,
    } = &e
    else {
        panic!("{e}")
    };
    assert_eq!(file, &dir.join("t10k-labels-idx1-ubyte.gz"));
    assert_eq!(*offset, 8 + 3);
    assert!(expected.contains("found 12"), "{e}");
    // Image/label count mismatch between the two files of a split.
    files[3].1 = common::gzip(&deepcomp_datasets::encode_idx_u8(&[4], &[0, 1, 2, 3]));
    common::write_files(&dir, &files);
    let e = load(DatasetId::FashionMnist, &o).unwrap_err();
    assert!(matches!(e, DatasetError::Inconsistent { .. }), "{e}");
    assert!(
        e.to_string().contains("4 labels") && e.to_string().contains("5 images"),
        "{e}"
    );
}

fn check_cifar(ds: &deepcomp_datasets::Dataset, hundred: bool, per_batch: usize) {
    let classes = if hundred { 100 } else { 10 };
    assert_eq!(ds.classes, classes);
    assert_eq!(
        (ds.train.n, ds.train.c, ds.train.h, ds.train.w),
        (5 * per_batch, 3, 32, 32)
    );
    assert_eq!(ds.test.n, per_batch);
    assert_eq!(ds.train.channel_stats().unwrap().0.len(), 3);
    let files = common::cifar_files(hundred, per_batch);
    let first_seed = if hundred { 10 } else { 1 };
    assert_eq!(
        ds.train.image(0).unwrap(),
        &common::bytes(first_seed, per_batch * CIFAR_PIXELS)[..CIFAR_PIXELS]
    );
    assert_eq!(files.len(), if hundred { 2 } else { 6 });
    if hundred {
        assert_eq!(ds.train.labels[..5], [0, 1, 2, 3, 4]);
        assert!(ds.train.labels.iter().any(|&l| l >= 10));
    } else {
        // Batches are concatenated in order: record 0 of data_batch_2 follows data_batch_1.
        assert_eq!(
            ds.train.image(per_batch).unwrap(),
            &common::bytes(2, per_batch * CIFAR_PIXELS)[..CIFAR_PIXELS]
        );
        assert_eq!(ds.train.labels[per_batch], 0);
    }
}

#[test]
fn cifar_folder_and_tarball() {
    for (id, hundred) in [(DatasetId::Cifar10, false), (DatasetId::Cifar100, true)] {
        let tmp = tempfile::tempdir().unwrap();
        let files = common::cifar_files(hundred, 12);
        let folder = if hundred {
            "cifar-100-binary"
        } else {
            "cifar-10-batches-bin"
        };
        let tarball = if hundred {
            "cifar-100-binary.tar.gz"
        } else {
            "cifar-10-binary.tar.gz"
        };
        // The published archive in the system folder.
        let sys = tmp.path().join("sys").join(id.name());
        std::fs::create_dir_all(&sys).unwrap();
        std::fs::write(sys.join(tarball), common::tar_gz(folder, &files)).unwrap();
        let ds = load(id, &opts(tmp.path())).unwrap();
        check_cifar(&ds, hundred, 12);
        assert_eq!(ds.source, sys.join(tarball));
        // The archive itself as explicit path.
        let mut o = opts(tmp.path());
        o.explicit = Some(sys.join(tarball));
        assert_eq!(load(id, &o).unwrap().train, ds.train);
        // The extracted folder in the cache wins over the system archive.
        let cache = tmp.path().join("cache").join(id.name()).join(folder);
        common::write_files(&cache, &files);
        let ds2 = load(id, &opts(tmp.path())).unwrap();
        assert_eq!(ds2.source, cache);
        assert_eq!(ds2.train, ds.train);
        assert_eq!(ds2.test, ds.test);
    }
}

#[test]
fn cifar_bad_files_are_located() {
    let tmp = tempfile::tempdir().unwrap();
    let mut files = common::cifar_files(false, 4);
    // A truncated batch: 3 whole records and 100 stray bytes.
    files[2].1.truncate(3 * 3073 + 100);
    let dir = tmp.path().join("c");
    common::write_files(&dir, &files);
    let mut o = opts(tmp.path());
    o.explicit = Some(dir.clone());
    let e = load(DatasetId::Cifar10, &o).unwrap_err();
    let DatasetError::Format {
        file,
        offset,
        expected,
    } = &e
    else {
        panic!("{e}")
    };
    assert_eq!(file, &dir.join("data_batch_3.bin"));
    assert_eq!(*offset, 3 * 3073);
    assert!(expected.contains("3073-byte records"), "{e}");

    // Label out of range inside the archive: the member is named.
    let mut files = common::cifar_files(false, 4);
    files[5].1[3073] = 10;
    let tar = tmp.path().join("cifar-10-binary.tar.gz");
    std::fs::write(&tar, common::tar_gz("cifar-10-batches-bin", &files)).unwrap();
    o.explicit = Some(tar.clone());
    let e = load(DatasetId::Cifar10, &o).unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.contains("cifar-10-binary.tar.gz!cifar-10-batches-bin/test_batch.bin"),
        "{msg}"
    );
    assert!(
        matches!(e, DatasetError::Format { offset: 3073, .. }),
        "{msg}"
    );

    // An archive lacking a batch.
    std::fs::write(&tar, common::tar_gz("cifar-10-batches-bin", &files[1..])).unwrap();
    let e = load(DatasetId::Cifar10, &o).unwrap_err();
    assert!(e.to_string().contains("lacks data_batch_1.bin"), "{e}");

    // Not an archive at all.
    std::fs::write(&tar, b"definitely not gzip").unwrap();
    let e = load(DatasetId::Cifar10, &o).unwrap_err();
    assert!(matches!(e, DatasetError::Format { .. }), "{e}");
}

#[test]
fn dataset_ids_parse_and_print() {
    for id in DatasetId::ALL {
        assert_eq!(id.name().parse::<DatasetId>().unwrap(), id);
        assert_eq!(id.to_string(), id.name());
        assert_eq!(id.mean().len(), id.shape().0);
        assert_eq!(id.std().len(), id.shape().0);
    }
    assert_eq!("CIFAR-10".parse::<DatasetId>().unwrap(), DatasetId::Cifar10);
    let e = "imagenet".parse::<DatasetId>().unwrap_err();
    assert!(e.to_string().contains("imagenet"));
}

#[test]
fn verify_checksums_rejects_files_that_differ_from_the_manifest() {
    let tmp = tempfile::tempdir().unwrap();
    common::write_files(
        &tmp.path().join("sys/mnist"),
        &common::idx_files(10, 5, 28, 28),
    );
    let mut o = opts(tmp.path());
    assert_eq!(load(DatasetId::Mnist, &o).unwrap().train.n, 10);
    o.verify_checksums = true;
    let e = load(DatasetId::Mnist, &o).unwrap_err();
    let DatasetError::Checksum {
        file,
        algorithm,
        expected,
        ..
    } = &e
    else {
        panic!("{e}")
    };
    assert_eq!(
        file,
        &tmp.path().join("sys/mnist/train-images-idx3-ubyte.gz")
    );
    assert_eq!(*algorithm, "md5");
    assert_eq!(expected, "f68b3c2dcbeaaa9fbdd348bbdeb94873");
}

#[test]
fn test_only_loads_need_no_training_files() {
    let tmp = tempfile::tempdir().unwrap();
    // MNIST: only the two t10k files.
    let files = common::idx_files(10, 6, 28, 28);
    let dir = tmp.path().join("sys/mnist");
    common::write_files(&dir, &files[2..]);
    let mut o = opts(tmp.path());
    let e = load(DatasetId::Mnist, &o).unwrap_err();
    assert!(
        e.to_string()
            .contains("missing train-images-idx3-ubyte[.gz]"),
        "{e}"
    );
    o.splits = Splits::TestOnly;
    let ds = load(DatasetId::Mnist, &o).unwrap();
    assert_eq!(
        (ds.train.n, ds.train.c, ds.train.h, ds.train.w),
        (0, 1, 28, 28)
    );
    assert_eq!(ds.test.n, 6);
    assert_eq!(ds.test.images, common::bytes(2, 6 * 28 * 28));
    assert_eq!(ds.source, dir);
    // Train-only mirrors it.
    common::write_files(&dir, &files[..2]);
    std::fs::remove_file(dir.join("t10k-labels-idx1-ubyte.gz")).unwrap();
    o.splits = Splits::TrainOnly;
    let ds = load(DatasetId::Mnist, &o).unwrap();
    assert_eq!((ds.train.n, ds.test.n, ds.test.h), (10, 0, 28));

    // CIFAR-10 binary: only test_batch.bin, as folder and as archive.
    let files = common::cifar_files(false, 5);
    let folder = tmp.path().join("c10");
    common::write_files(&folder, &files[5..]);
    let mut o = opts(tmp.path());
    o.explicit = Some(folder.clone());
    assert!(load(DatasetId::Cifar10, &o).is_err());
    o.splits = Splits::TestOnly;
    let ds = load(DatasetId::Cifar10, &o).unwrap();
    assert_eq!(
        (ds.train.n, ds.train.c, ds.train.h, ds.test.n),
        (0, 3, 32, 5)
    );
    assert_eq!(ds.test.images, common::bytes(99, 5 * CIFAR_PIXELS));
    let tar = tmp.path().join("cifar-10-binary.tar.gz");
    std::fs::write(&tar, common::tar_gz("cifar-10-batches-bin", &files[5..])).unwrap();
    o.explicit = Some(tar);
    assert_eq!(load(DatasetId::Cifar10, &o).unwrap().test, ds.test);
    assert_eq!(ds.class_names[0], "airplane");
}

#[test]
fn a_missing_dataset_creates_no_folder() {
    let tmp = tempfile::tempdir().unwrap();
    for id in DatasetId::ALL {
        assert!(load(id, &opts(tmp.path())).is_err());
    }
    assert!(
        common::listing(tmp.path()).is_empty(),
        "{:?}",
        common::listing(tmp.path())
    );
}

#[test]
fn checksum_errors_list_the_digest_found_and_every_accepted_one() {
    let tmp = tempfile::tempdir().unwrap();
    let files = common::idx_files(10, 5, 28, 28);
    common::write_files(&tmp.path().join("sys/mnist"), &files);
    let mut o = opts(tmp.path());
    o.verify_checksums = true;
    let e = load(DatasetId::Mnist, &o).unwrap_err().to_string();
    let found = common::sha256_hex(&files[0].1);
    for want in [
        "train-images-idx3-ubyte.gz",
        &found,
        "md5 f68b3c2dcbeaaa9fbdd348bbdeb94873 (published)",
        "sha256 8e59d4e6322d5e291f26338633ee8015e1369ee4616a784cd934bc27c2948978 (rebuilt copy",
    ] {
        assert!(e.contains(want), "{want} not in: {e}");
    }
    // A file whose manifest entry has a SHA-256 and no known copy: one expected digest.
    let mut ok_files = files.clone();
    ok_files.remove(0);
    let dir = tmp.path().join("m2");
    common::write_files(&dir, &ok_files);
    std::fs::copy(
        tmp.path().join("sys/mnist/train-images-idx3-ubyte.gz"),
        dir.join("train-images-idx3-ubyte.gz"),
    )
    .unwrap();
    let e = deepcomp_datasets::Manifest::embedded(DatasetId::Mnist)
        .unwrap()
        .file("train-labels-idx1-ubyte.gz")
        .unwrap()
        .verify(&dir.join("train-labels-idx1-ubyte.gz"))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains(
            "expected sha256 3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c"
        ) && e.contains(&common::sha256_hex(&files[1].1)),
        "{e}"
    );
}

#[test]
fn normalization_can_be_overridden_and_is_validated() {
    let tmp = tempfile::tempdir().unwrap();
    common::write_files(
        &tmp.path().join("sys/cifar10"),
        &common::cifar_files(false, 2),
    );
    let mut ds = load(DatasetId::Cifar10, &opts(tmp.path())).unwrap();
    assert_eq!(ds.mean, DatasetId::Cifar10.mean());
    let imagenet = (vec![0.485, 0.456, 0.406], vec![0.229, 0.224, 0.225]);
    ds.set_normalization(imagenet.0.clone(), imagenet.1.clone())
        .unwrap();
    assert_eq!((ds.mean.clone(), ds.std.clone()), imagenet);
    for (mean, std, field) in [
        (vec![0.5], vec![0.2, 0.2, 0.2], "mean"),
        (vec![0.5; 3], vec![0.2; 4], "std"),
        (vec![0.5, f32::NAN, 0.5], vec![0.2; 3], "mean"),
        (vec![0.5; 3], vec![0.2, 0.0, 0.2], "std"),
        (vec![0.5; 3], vec![0.2, 0.2, f32::INFINITY], "std"),
    ] {
        let e = ds.set_normalization(mean, std).unwrap_err();
        assert!(
            matches!(&e, DatasetError::Config { field: f, .. } if *f == field),
            "{e}"
        );
        assert!(e.to_string().contains(field), "{e}");
    }
    // Unchanged after the failures.
    assert_eq!((ds.mean.clone(), ds.std.clone()), imagenet);
}

#[test]
fn batching_with_limit_zero_is_an_error_naming_the_limit() {
    let tmp = tempfile::tempdir().unwrap();
    common::write_files(
        &tmp.path().join("sys/mnist"),
        &common::idx_files(10, 5, 28, 28),
    );
    let ds = load(DatasetId::Mnist, &opts(tmp.path())).unwrap();
    let cfg = deepcomp_datasets::BatchConfig {
        limit: Some(0),
        ..Default::default()
    };
    let e = ds
        .train
        .batches(&cfg, &ds.mean, &ds.std, 0, &candle_core::Device::Cpu)
        .unwrap_err();
    assert!(
        matches!(e, DatasetError::Config { field: "limit", .. }),
        "{e}"
    );
    assert!(
        e.to_string().contains("limit") && e.to_string().contains("no batch"),
        "{e}"
    );
}
