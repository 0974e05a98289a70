//! Image folders generated in the test (PNG and JPEG, as folders, `.tar` and `.tar.gz`):
//! exact pixels, labels and class order, channel handling, and an error naming the file for
//! every kind of bad input.

mod common;

use std::io::Cursor;
use std::path::{Path, PathBuf};

use deepcomp_datasets::{
    load, read_image_folder, DatasetError, DatasetId, ImageFolderOptions, LoadOptions, SearchRoots,
    Splits,
};
use image::{DynamicImage, ImageFormat};

/// A deterministic RGB image.
fn rgb(seed: u64, w: u32, h: u32) -> DynamicImage {
    let px = common::bytes(seed, (w * h * 3) as usize);
    DynamicImage::ImageRgb8(image::RgbImage::from_raw(w, h, px).unwrap())
}

fn encode(img: &DynamicImage, fmt: ImageFormat) -> Vec<u8> {
    let mut out = Cursor::new(Vec::new());
    img.write_to(&mut out, fmt).unwrap();
    out.into_inner()
}

/// CHW bytes of an RGB image.
fn chw(img: &DynamicImage) -> Vec<u8> {
    let rgb = img.to_rgb8();
    let mut out = Vec::new();
    for c in 0..3 {
        out.extend(rgb.as_raw().chunks_exact(3).map(|p| p[c]));
    }
    out
}

/// `(relative path, bytes)` of a generated image folder: `per_class` PNG images of `w × h`
/// per class and split; the seed of image i of class k in split s is `100*s + 10*k + i`.
fn png_files(classes: &[&str], per_class: usize, w: u32, h: u32) -> Vec<(String, Vec<u8>)> {
    let mut v = Vec::new();
    for (s, split) in ["train", "test"].iter().enumerate() {
        for (k, class) in classes.iter().enumerate() {
            for i in 0..per_class {
                let seed = (100 * s + 10 * k + i) as u64;
                v.push((
                    format!("{split}/{class}/{i:04}.png"),
                    encode(&rgb(seed, w, h), ImageFormat::Png),
                ));
            }
        }
    }
    v
}

fn write_tree(root: &Path, files: &[(String, Vec<u8>)]) {
    for (rel, data) in files {
        let p = root.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, data).unwrap();
    }
}

/// A tar (gzip-compressed when `gz`) of `files` under `prefix` (may be empty), with
/// directory entries for every folder.
fn tar_of(files: &[(String, Vec<u8>)], prefix: &str, gz: bool, extra_dirs: &[&str]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    let mut dirs: Vec<String> = extra_dirs.iter().map(|d| d.to_string()).collect();
    for (rel, _) in files {
        let mut p = Path::new(rel).parent();
        while let Some(d) = p.filter(|d| !d.as_os_str().is_empty()) {
            dirs.push(d.to_string_lossy().into_owned());
            p = d.parent();
        }
    }
    dirs.sort();
    dirs.dedup();
    for d in &dirs {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Directory);
        h.set_size(0);
        h.set_mode(0o755);
        h.set_cksum();
        builder
            .append_data(&mut h, format!("{prefix}{d}/"), &[][..])
            .unwrap();
    }
    for (rel, data) in files {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        builder
            .append_data(&mut h, format!("{prefix}{rel}"), &data[..])
            .unwrap();
    }
    let raw = builder.into_inner().unwrap();
    if gz {
        common::gzip(&raw)
    } else {
        raw
    }
}

fn err_of(path: &Path, opts: &ImageFolderOptions) -> String {
    match read_image_folder(path, opts) {
        Ok(_) => panic!("{} was accepted", path.display()),
        Err(e) => e.to_string(),
    }
}

#[test]
fn png_folder_pixels_labels_and_class_order() {
    let tmp = tempfile::tempdir().unwrap();
    let classes = ["b", "a", "c"];
    let files = png_files(&classes, 2, 5, 4);
    write_tree(tmp.path(), &files);
    let f = read_image_folder(tmp.path(), &ImageFolderOptions::default()).unwrap();
    // Default order: folder names sorted; examples class by class, files by name.
    assert_eq!(f.classes, ["a", "b", "c"]);
    assert_eq!((f.train.n, f.train.c, f.train.h, f.train.w), (6, 3, 4, 5));
    assert_eq!(f.train.labels, [0, 0, 1, 1, 2, 2]);
    assert_eq!(f.test.n, 6);
    // Class "a" is index 1 in generation order: train seeds 10, 11.
    assert_eq!(f.train.image(0).unwrap(), chw(&rgb(10, 5, 4)));
    assert_eq!(f.train.image(1).unwrap(), chw(&rgb(11, 5, 4)));
    assert_eq!(f.train.image(2).unwrap(), chw(&rgb(0, 5, 4)));
    assert_eq!(f.test.image(5).unwrap(), chw(&rgb(121, 5, 4)));
    f.train.check_consistent().unwrap();
    // An explicit class list sets the label order.
    let o = ImageFolderOptions {
        classes: Some(vec!["c".into(), "a".into(), "b".into()]),
        ..ImageFolderOptions::default()
    };
    let g = read_image_folder(tmp.path(), &o).unwrap();
    assert_eq!(g.classes, ["c", "a", "b"]);
    assert_eq!(g.train.labels, [0, 0, 1, 1, 2, 2]);
    assert_eq!(g.train.image(0).unwrap(), chw(&rgb(20, 5, 4)));
    assert_eq!(g.train.image(2).unwrap(), f.train.image(0).unwrap());
}

#[test]
fn tar_and_tar_gz_with_and_without_prefix_equal_the_folder() {
    let tmp = tempfile::tempdir().unwrap();
    let files = png_files(&["x", "y"], 3, 4, 4);
    write_tree(&tmp.path().join("folder"), &files);
    let want =
        read_image_folder(&tmp.path().join("folder"), &ImageFolderOptions::default()).unwrap();
    for (name, prefix, gz) in [
        ("a.tar", "", false),
        ("b.tar.gz", "", true),
        ("c.tgz", "myset/", true),
        ("d.tar", "./", false),
    ] {
        let p = tmp.path().join(name);
        std::fs::write(&p, tar_of(&files, prefix, gz, &[])).unwrap();
        let got = read_image_folder(&p, &ImageFolderOptions::default()).unwrap();
        assert_eq!(
            (&got.train, &got.test, &got.classes),
            (&want.train, &want.test, &want.classes),
            "{name}"
        );
        assert_eq!(got.source, p);
    }
    // A folder holding a single top-level folder is read the same way.
    write_tree(&tmp.path().join("outer/inner"), &files);
    let got = read_image_folder(&tmp.path().join("outer"), &ImageFolderOptions::default()).unwrap();
    assert_eq!(got.train, want.train);
}

#[test]
fn jpeg_decodes_like_the_image_crate() {
    let tmp = tempfile::tempdir().unwrap();
    let mut files = Vec::new();
    let mut expected = Vec::new();
    for (k, class) in ["cat", "dog"].iter().enumerate() {
        for i in 0..3 {
            let img = rgb(7 * k as u64 + i, 8, 6);
            let jpg = encode(&img, ImageFormat::Jpeg);
            expected.push(chw(&image::load_from_memory(&jpg).unwrap()));
            let ext = if i == 2 { "JPEG" } else { "jpg" };
            files.push((format!("train/{class}/{i}.{ext}"), jpg.clone()));
            files.push((format!("test/{class}/{i}.{ext}"), jpg));
        }
    }
    let p = tmp.path().join("j.tar.gz");
    std::fs::write(&p, tar_of(&files, "", true, &[])).unwrap();
    let f = read_image_folder(&p, &ImageFolderOptions::default()).unwrap();
    assert_eq!((f.train.c, f.train.h, f.train.w), (3, 6, 8));
    assert_eq!(f.train.images, expected.concat());
    assert_eq!(f.test.images, expected.concat());
    assert_eq!(f.train.labels, [0, 0, 0, 1, 1, 1]);

    // A grayscale JPEG: one channel by default, replicated when three are asked for; both
    // equal to the image crate's decoding.
    let gray =
        DynamicImage::ImageLuma8(image::GrayImage::from_raw(8, 8, common::bytes(5, 64)).unwrap());
    let jpg = encode(&gray, ImageFormat::Jpeg);
    let files = vec![
        ("train/g/0.jpg".to_string(), jpg.clone()),
        ("test/g/0.jpg".to_string(), jpg.clone()),
    ];
    let root = tmp.path().join("gray");
    write_tree(&root, &files);
    let decoded = image::load_from_memory(&jpg).unwrap();
    let f = read_image_folder(&root, &ImageFolderOptions::default()).unwrap();
    assert_eq!(
        (f.train.c, f.train.images.clone()),
        (1, decoded.to_luma8().into_raw())
    );
    let o = ImageFolderOptions {
        shape: Some((3, 8, 8)),
        ..ImageFolderOptions::default()
    };
    let f = read_image_folder(&root, &o).unwrap();
    assert_eq!(f.train.images, chw(&decoded));
}

#[test]
fn grayscale_and_rgba_channel_handling() {
    let tmp = tempfile::tempdir().unwrap();
    let gray = |seed| {
        DynamicImage::ImageLuma8(image::GrayImage::from_raw(3, 2, common::bytes(seed, 6)).unwrap())
    };
    let rgba =
        DynamicImage::ImageRgba8(image::RgbaImage::from_raw(3, 2, common::bytes(9, 24)).unwrap());
    let files = vec![
        (
            "train/k/0.png".to_string(),
            encode(&gray(1), ImageFormat::Png),
        ),
        (
            "test/k/0.png".to_string(),
            encode(&gray(2), ImageFormat::Png),
        ),
    ];
    write_tree(&tmp.path().join("g"), &files);
    // Shape from the first image: grayscale → one channel, exact pixels.
    let f = read_image_folder(&tmp.path().join("g"), &ImageFolderOptions::default()).unwrap();
    assert_eq!((f.train.c, f.train.h, f.train.w), (1, 2, 3));
    assert_eq!(f.train.images, common::bytes(1, 6));
    // Three channels asked for: the gray value is replicated.
    let o = ImageFolderOptions {
        shape: Some((3, 2, 3)),
        ..ImageFolderOptions::default()
    };
    let f = read_image_folder(&tmp.path().join("g"), &o).unwrap();
    assert_eq!(f.train.images, common::bytes(1, 6).repeat(3));
    // RGBA: the alpha channel is dropped, not composited.
    let files = vec![
        ("train/k/0.png".to_string(), encode(&rgba, ImageFormat::Png)),
        ("test/k/0.png".to_string(), encode(&rgba, ImageFormat::Png)),
    ];
    write_tree(&tmp.path().join("a"), &files);
    let f = read_image_folder(&tmp.path().join("a"), &ImageFolderOptions::default()).unwrap();
    assert_eq!(f.train.c, 3);
    let px = common::bytes(9, 24);
    let want: Vec<u8> = (0..3)
        .flat_map(|c| px.chunks_exact(4).map(move |p| p[c]).collect::<Vec<_>>())
        .collect();
    assert_eq!(f.train.images, want);
}

#[test]
fn hidden_entries_and_top_level_extras_are_skipped() {
    let tmp = tempfile::tempdir().unwrap();
    let mut files = png_files(&["a", "b"], 1, 2, 2);
    files.push(("train/a/.DS_Store".into(), b"junk".to_vec()));
    files.push(("train/.DS_Store".into(), b"junk".to_vec()));
    files.push(("test/.hidden/x.txt".into(), b"junk".to_vec()));
    files.push(("README.txt".into(), b"about".to_vec()));
    files.push(("__MACOSX/train/a/._0000.png".into(), b"junk".to_vec()));
    write_tree(tmp.path(), &files);
    let f = read_image_folder(tmp.path(), &ImageFolderOptions::default()).unwrap();
    assert_eq!((f.train.n, f.test.n), (2, 2));
    let p = tmp.path().join("t.tar");
    std::fs::write(&p, tar_of(&files, "", false, &[])).unwrap();
    assert_eq!(
        read_image_folder(&p, &ImageFolderOptions::default())
            .unwrap()
            .train,
        f.train
    );
}

#[test]
fn test_only_needs_no_train_folder() {
    let tmp = tempfile::tempdir().unwrap();
    let files: Vec<_> = png_files(&["a", "b"], 2, 3, 3)
        .into_iter()
        .filter(|(p, _)| p.starts_with("test/"))
        .collect();
    write_tree(tmp.path(), &files);
    let o = ImageFolderOptions {
        splits: Splits::TestOnly,
        ..ImageFolderOptions::default()
    };
    let f = read_image_folder(tmp.path(), &o).unwrap();
    assert_eq!((f.train.n, f.train.c, f.train.h, f.train.w), (0, 3, 3, 3));
    assert_eq!(f.test.n, 4);
    let e = err_of(tmp.path(), &ImageFolderOptions::default());
    assert!(
        e.contains(&tmp.path().join("train").display().to_string()) && e.contains("missing train/"),
        "{e}"
    );
}

/// Writes `files` as a folder, a `.tar` and a `.tar.gz` (with a prefix), and checks that each
/// is rejected with a message holding `needle` and the offending path (`rel`, relative to
/// the root).
fn rejected_everywhere(files: &[(String, Vec<u8>)], extra_dirs: &[&str], rel: &str, needle: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    write_tree(&root, files);
    for d in extra_dirs {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    let e = err_of(&root, &ImageFolderOptions::default());
    let want = root.join(rel).display().to_string();
    assert!(
        e.contains(want.trim_end_matches('/')) && e.contains(needle),
        "folder: {e}"
    );
    for (name, gz, prefix) in [("r.tar", false, ""), ("r.tar.gz", true, "top/")] {
        let p = tmp.path().join(name);
        std::fs::write(&p, tar_of(files, prefix, gz, extra_dirs)).unwrap();
        let e = err_of(&p, &ImageFolderOptions::default());
        let member = format!("{}!{prefix}{rel}", p.display());
        assert!(
            e.contains(&member) && e.contains(needle),
            "{name}: {e} (want {member})"
        );
    }
}

#[test]
fn bad_inputs_name_the_file() {
    let good = png_files(&["a", "b"], 2, 4, 4);
    // An image that does not decode.
    let mut f = good.clone();
    f[1].1 = b"\x89PNG\r\n\x1a\n but then nothing sensible".to_vec();
    rejected_everywhere(&f, &[], "train/a/0001.png", "does not decode");
    let mut f = good.clone();
    f[1].1 = b"plain text, not an image".to_vec();
    rejected_everywhere(&f, &[], "train/a/0001.png", "neither JPEG nor PNG");
    // A wrong size.
    let mut f = good.clone();
    f[6].1 = encode(&rgb(1, 5, 4), ImageFormat::Png);
    rejected_everywhere(
        &f,
        &[],
        "test/b/0000.png",
        "image is 5×4 (W×H), expected 4×4",
    );
    // An empty class folder.
    rejected_everywhere(&good, &["test/c"], "test/c/", "empty class folder");
    // A stray file: wrong extension, or directly under train/.
    let mut f = good.clone();
    f.push(("train/b/notes.txt".into(), b"x".to_vec()));
    rejected_everywhere(&f, &[], "train/b/notes.txt", "not an image file");
    let mut f = good.clone();
    f.push(("train/0009.png".into(), f[0].1.clone()));
    rejected_everywhere(&f, &[], "train/0009.png", "directly under train/");
    // A folder inside a class folder.
    let mut f = good.clone();
    f.push(("test/a/deeper/0.png".into(), f[0].1.clone()));
    rejected_everywhere(&f, &[], "test/a/deeper", "folder inside class folder");
    // A missing test/ folder.
    let f: Vec<_> = good
        .iter()
        .filter(|(p, _)| p.starts_with("train/"))
        .cloned()
        .collect();
    rejected_everywhere(&f, &[], "test", "missing test/");
    // Train and test disagree on the classes.
    let mut f = good.clone();
    f.push(("test/zebra/0.png".into(), f[0].1.clone()));
    rejected_everywhere(&f, &[], "test", "unexpected class folder(s): zebra");
}

#[test]
fn class_list_mismatch_names_missing_and_extra() {
    let tmp = tempfile::tempdir().unwrap();
    write_tree(tmp.path(), &png_files(&["cat", "dog", "emu"], 1, 2, 2));
    let o = ImageFolderOptions {
        classes: Some(vec!["cat".into(), "dog".into(), "frog".into()]),
        ..ImageFolderOptions::default()
    };
    let e = err_of(tmp.path(), &o);
    assert!(
        e.contains(&tmp.path().join("train").display().to_string())
            && e.contains("missing class folder(s): frog")
            && e.contains("unexpected class folder(s): emu"),
        "{e}"
    );
    // Not a folder, not an archive; an empty folder; a bad shape.
    let p = tmp.path().join("x.zip");
    std::fs::write(&p, b"PK").unwrap();
    assert!(err_of(&p, &ImageFolderOptions::default()).contains("x.zip"));
    let empty = tmp.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    assert!(err_of(&empty, &ImageFolderOptions::default()).contains("empty"));
    let o = ImageFolderOptions {
        shape: Some((2, 2, 2)),
        ..ImageFolderOptions::default()
    };
    assert!(err_of(tmp.path(), &o).contains("shape"));
    // A corrupt archive.
    let p = tmp.path().join("bad.tar.gz");
    std::fs::write(
        &p,
        common::gzip(b"this is not a tar archive at all, just text"),
    )
    .unwrap();
    let e = err_of(&p, &ImageFolderOptions::default());
    assert!(e.contains("bad.tar.gz"), "{e}");
}

fn cifar_like(per_class: usize) -> Vec<(String, Vec<u8>)> {
    png_files(DatasetId::Cifar10.class_names(), per_class, 32, 32)
}

fn roots(base: &Path) -> SearchRoots {
    SearchRoots {
        data_env: None,
        cache: Some(base.join("cache")),
        system: vec![base.join("sys")],
    }
}

#[test]
fn load_cifar10_from_an_image_folder_archive_or_folder() {
    let tmp = tempfile::tempdir().unwrap();
    let files = cifar_like(2);
    let archive = tmp.path().join("anything.tar.gz");
    std::fs::write(&archive, tar_of(&files, "cifar10/", true, &[])).unwrap();
    let opts = LoadOptions {
        explicit: Some(archive.clone()),
        roots: Some(roots(tmp.path())),
        ..LoadOptions::default()
    };
    let ds = load(DatasetId::Cifar10, &opts).unwrap();
    assert_eq!(ds.source, archive);
    assert_eq!(ds.class_names, DatasetId::Cifar10.class_names());
    assert_eq!(
        (ds.train.n, ds.test.n, ds.train.c, ds.train.h),
        (20, 20, 3, 32)
    );
    assert_eq!(ds.mean, DatasetId::Cifar10.mean());
    assert_eq!(ds.train.labels[..4], [0, 0, 1, 1]);
    assert_eq!(ds.train.image(0).unwrap(), chw(&rgb(0, 32, 32)));
    // Batching works unchanged.
    let cfg = deepcomp_datasets::BatchConfig {
        batch_size: 8,
        augment: Some(deepcomp_datasets::Augment::CIFAR),
        ..Default::default()
    };
    let n: usize = ds
        .train
        .batches(&cfg, &ds.mean, &ds.std, 0, &candle_core::Device::Cpu)
        .unwrap()
        .map(|b| b.unwrap().1.dims1().unwrap())
        .sum();
    assert_eq!(n, 20);

    // Discovered: the manifest's alternative name in a search folder, or an unpacked folder.
    let sys = tmp.path().join("sys/cifar10");
    std::fs::create_dir_all(&sys).unwrap();
    std::fs::copy(&archive, sys.join("cifar10-jpeg.tar.gz")).unwrap();
    let mut o = LoadOptions {
        roots: Some(roots(tmp.path())),
        ..LoadOptions::default()
    };
    let ds2 = load(DatasetId::Cifar10, &o).unwrap();
    assert_eq!(ds2.source, sys.join("cifar10-jpeg.tar.gz"));
    assert_eq!(ds2.train, ds.train);
    // With verification, the generated archive is not the listed one: the error names it
    // and the expected digest.
    o.verify_checksums = true;
    let e = load(DatasetId::Cifar10, &o).unwrap_err().to_string();
    assert!(
        e.contains("cifar10-jpeg.tar.gz")
            && e.contains("097287809041e0a666355dfce11470ba1b3f2631fe910d8793c716253f10b297"),
        "{e}"
    );
    let cache = tmp.path().join("cache/cifar10");
    write_tree(&cache, &files);
    o.verify_checksums = false;
    let ds3 = load(DatasetId::Cifar10, &o).unwrap();
    assert_eq!(ds3.source, cache);
    assert_eq!(ds3.test, ds.test);

    // Test-only: only test/ is needed.
    let test_only = tmp.path().join("t");
    let tf: Vec<_> = files
        .iter()
        .filter(|(p, _)| p.starts_with("test/"))
        .cloned()
        .collect();
    write_tree(&test_only, &tf);
    let o = LoadOptions {
        explicit: Some(test_only.clone()),
        splits: Splits::TestOnly,
        roots: Some(roots(tmp.path())),
        ..LoadOptions::default()
    };
    let ds4 = load(DatasetId::Cifar10, &o).unwrap();
    assert_eq!((ds4.train.n, ds4.train.c, ds4.test.n), (0, 3, 20));
    assert_eq!(ds4.test, ds.test);

    // Wrong class names for CIFAR-10.
    let bad = tmp.path().join("bad");
    write_tree(&bad, &png_files(&["plane", "car"], 1, 32, 32));
    let o = LoadOptions {
        explicit: Some(bad.clone()),
        roots: Some(roots(tmp.path())),
        ..LoadOptions::default()
    };
    let e = load(DatasetId::Cifar10, &o).unwrap_err();
    assert!(matches!(e, DatasetError::ImageFolder { .. }), "{e}");
    let e = e.to_string();
    assert!(
        e.contains("missing class folder(s): airplane, automobile")
            && e.contains("unexpected class folder(s): car, plane"),
        "{e}"
    );
    // Wrong image size for CIFAR-10.
    let small = tmp.path().join("small");
    write_tree(
        &small,
        &png_files(DatasetId::Cifar10.class_names(), 1, 8, 8),
    );
    let o = LoadOptions {
        explicit: Some(small.clone()),
        ..o
    };
    let e = load(DatasetId::Cifar10, &o).unwrap_err().to_string();
    assert!(
        e.contains("expected 32×32") && e.contains(&small.display().to_string()),
        "{e}"
    );
}

#[test]
fn progress_bar_does_not_change_the_result() {
    let tmp = tempfile::tempdir().unwrap();
    write_tree(tmp.path(), &png_files(&["a"], 3, 2, 2));
    let quiet = read_image_folder(tmp.path(), &ImageFolderOptions::default()).unwrap();
    let o = ImageFolderOptions {
        progress: true,
        ..ImageFolderOptions::default()
    };
    assert_eq!(read_image_folder(tmp.path(), &o).unwrap(), quiet);
    let _: PathBuf = quiet.source;
}
