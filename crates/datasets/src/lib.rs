//! Image-classification data sets for deepcomp: finding them, downloading them (only when
//! asked), reading them strictly, and serving them as normalized candle tensors.
//!
//! Deep Compression is evaluated on small vision benchmarks: MNIST and Fashion-MNIST for the
//! LeNet-style networks, CIFAR-10/100 for VGG and ResNet. This crate turns "the data set
//! called X" into a [`Dataset`] held in memory as compact `u8` pixels, and then into batches.
//!
//! * **Identification** — [`DatasetId`] names the four supported sets and knows their shape,
//!   number of classes, class names and the usual normalization statistics.
//! * **Discovery** — [`load`] looks, in order, at an explicit path ([`LoadOptions::explicit`]),
//!   `$DEEPCOMP_DATA/<name>`, the user cache `~/.cache/deepcomp/<name>` (honouring
//!   `XDG_CACHE_HOME`), and system folders such as `/usr/share/datasets/<name>` (where Debian's
//!   `dataset-fashion-mnist` package installs Fashion-MNIST); see [`SearchRoots`]. If nothing
//!   fits, the error lists every place examined and why it was rejected. Looking creates
//!   nothing: only a download creates the cache folder.
//! * **Split selection** — [`LoadOptions::splits`] ([`Splits`]) reads only the test (or only
//!   the training) split; the files of the other split need not exist and it comes back empty.
//! * **Download** — only when [`LoadOptions::allow_download`] is set: the files listed in the
//!   data set's [`Manifest`] (the TOML files of the repository's `datasets/` folder, embedded
//!   in the binary) are fetched by a [`Downloader`] into the cache, verified (SHA-256 when
//!   published, else MD5) and renamed into place only once verified.
//! * **Verification of local files** — a download is always verified; files found locally are
//!   verified when [`LoadOptions::verify_checksums`] is set (off by default, so generated test
//!   sets load): every file read whose name the manifest lists must match the published
//!   digest, one of its `known_copies` (byte-wise different copies of the same data, e.g.
//!   Debian's re-compressed Fashion-MNIST) or, for an `[[alternative]]` such as the CIFAR-10
//!   JPEG archive, its SHA-256. A mismatch names the file, the digest found and every digest
//!   accepted. Files the manifest does not list are only checked structurally.
//! * **Reading** — IDX files ([`read_idx`], gzip or raw), the CIFAR binary format (the
//!   published `.tar.gz` read in place, or its extracted folder), and image folders
//!   ([`read_image_folder`]: torchvision's `train/<class>/*.jpg` layout, as a folder or a
//!   `.tar`/`.tar.gz` read in place, decoded once on all cores). Every header, dimension and
//!   record count is checked against the file's size; a bad file yields a
//!   [`DatasetError::Format`] naming the file, the byte offset and what was expected, a bad
//!   image folder a [`DatasetError::ImageFolder`] naming the file or folder. For CIFAR-10/100,
//!   [`load`] accepts either form at the explicit path or in the searched folders.
//! * **Batching** — [`Split::batches`] yields `(images, labels)` tensor pairs per epoch, with
//!   seeded shuffling, optional drop-last, per-channel normalization, zero-padding of 28×28
//!   sets to 32×32 and augmentation by random padded crops with optional horizontal flips;
//!   the randomness depends only on `(seed, epoch)`, so an epoch is reproducible on its own.
//!   [`Split::split_off_validation`] holds out a seeded, stratified validation set;
//!   [`Dataset::set_normalization`] replaces the statistics (validated).
//! * **Test data** — [`shared_data_file`] finds the real data sets the tests use outside the
//!   repository (`$DEEPCOMP_TEST_DATA`, else `../shared/data` beside the workspace).
//!
//! ```no_run
//! use deepcomp_datasets::{load, BatchConfig, DatasetId, LoadOptions};
//! let ds = load(DatasetId::FashionMnist, &LoadOptions::default())?;
//! let cfg = BatchConfig { batch_size: 128, ..BatchConfig::default() };
//! for batch in ds.train.batches(&cfg, &ds.mean, &ds.std, 0, &candle_core::Device::Cpu)? {
//!     let (images, labels) = batch?; // (128, 1, 28, 28) f32, (128) u32
//!     # let _ = (images, labels);
//! }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod batch;
mod cifar;
mod discover;
mod download;
mod error;
mod idx;
mod imagefolder;
mod manifest;
mod split;
mod testdata;

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

pub use batch::{Augment, BatchConfig, Batches, CROP_PADDING};
pub use cifar::{encode_cifar_records, CIFAR_PIXELS};
pub use discover::SearchRoots;
pub use download::Downloader;
pub use error::DatasetError;
pub use idx::{encode_idx_u8, read_idx, IdxArray, IdxType};
pub use imagefolder::{
    load_image_folder, read_image_folder, ImageFolder, ImageFolderOptions, Splits,
};
pub use manifest::{Alternative, DatasetInfo, KnownCopy, Manifest, ManifestFile, Verified};
pub use split::check_normalization;
pub use testdata::{shared_data_dir, shared_data_file};

use cifar::CifarKind;
use discover::Located;

/// The supported data sets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DatasetId {
    /// MNIST handwritten digits, 28×28×1, 10 classes.
    Mnist,
    /// Zalando's Fashion-MNIST, 28×28×1, 10 classes.
    FashionMnist,
    /// CIFAR-10, 32×32×3, 10 classes.
    Cifar10,
    /// CIFAR-100 (fine labels), 32×32×3, 100 classes.
    Cifar100,
}

impl DatasetId {
    /// Every supported data set.
    pub const ALL: [DatasetId; 4] = [
        DatasetId::Mnist,
        DatasetId::FashionMnist,
        DatasetId::Cifar10,
        DatasetId::Cifar100,
    ];

    /// The short name used on the command line and as folder name:
    /// `mnist`, `fashion-mnist`, `cifar10`, `cifar100`.
    pub fn name(self) -> &'static str {
        match self {
            DatasetId::Mnist => "mnist",
            DatasetId::FashionMnist => "fashion-mnist",
            DatasetId::Cifar10 => "cifar10",
            DatasetId::Cifar100 => "cifar100",
        }
    }

    /// Number of classes.
    pub fn classes(self) -> usize {
        match self {
            DatasetId::Cifar100 => 100,
            _ => 10,
        }
    }

    /// Image shape `(C, H, W)`.
    pub fn shape(self) -> (usize, usize, usize) {
        match self {
            DatasetId::Mnist | DatasetId::FashionMnist => (1, 28, 28),
            DatasetId::Cifar10 | DatasetId::Cifar100 => (3, 32, 32),
        }
    }

    /// Per-channel mean of the training pixels scaled to `[0, 1]` (the customary values).
    pub fn mean(self) -> Vec<f32> {
        match self {
            DatasetId::Mnist => vec![0.1307],
            DatasetId::FashionMnist => vec![0.2860],
            DatasetId::Cifar10 => vec![0.4914, 0.4822, 0.4465],
            DatasetId::Cifar100 => vec![0.5071, 0.4865, 0.4409],
        }
    }

    /// Per-channel standard deviation matching [`DatasetId::mean`].
    pub fn std(self) -> Vec<f32> {
        match self {
            DatasetId::Mnist => vec![0.3081],
            DatasetId::FashionMnist => vec![0.3530],
            DatasetId::Cifar10 => vec![0.2470, 0.2435, 0.2616],
            DatasetId::Cifar100 => vec![0.2673, 0.2564, 0.2762],
        }
    }

    /// The class names in label order: the digits for MNIST, Zalando's names for
    /// Fashion-MNIST, the names of the CIFAR releases' `batches.meta` / `meta` files for
    /// CIFAR-10 and CIFAR-100 (fine labels). These are also the class-folder names expected
    /// in an image-folder copy of a CIFAR set.
    pub fn class_names(self) -> &'static [&'static str] {
        match self {
            DatasetId::Mnist => &["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"],
            DatasetId::FashionMnist => &[
                "T-shirt/top",
                "Trouser",
                "Pullover",
                "Dress",
                "Coat",
                "Sandal",
                "Shirt",
                "Sneaker",
                "Bag",
                "Ankle boot",
            ],
            DatasetId::Cifar10 => &CIFAR10_CLASSES,
            DatasetId::Cifar100 => &CIFAR100_CLASSES,
        }
    }

    fn cifar_kind(self) -> Option<CifarKind> {
        match self {
            DatasetId::Cifar10 => Some(CifarKind::Ten),
            DatasetId::Cifar100 => Some(CifarKind::Hundred),
            _ => None,
        }
    }
}

const CIFAR10_CLASSES: [&str; 10] = [
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
];

const CIFAR100_CLASSES: [&str; 100] = [
    "apple",
    "aquarium_fish",
    "baby",
    "bear",
    "beaver",
    "bed",
    "bee",
    "beetle",
    "bicycle",
    "bottle",
    "bowl",
    "boy",
    "bridge",
    "bus",
    "butterfly",
    "camel",
    "can",
    "castle",
    "caterpillar",
    "cattle",
    "chair",
    "chimpanzee",
    "clock",
    "cloud",
    "cockroach",
    "couch",
    "crab",
    "crocodile",
    "cup",
    "dinosaur",
    "dolphin",
    "elephant",
    "flatfish",
    "forest",
    "fox",
    "girl",
    "hamster",
    "house",
    "kangaroo",
    "keyboard",
    "lamp",
    "lawn_mower",
    "leopard",
    "lion",
    "lizard",
    "lobster",
    "man",
    "maple_tree",
    "motorcycle",
    "mountain",
    "mouse",
    "mushroom",
    "oak_tree",
    "orange",
    "orchid",
    "otter",
    "palm_tree",
    "pear",
    "pickup_truck",
    "pine_tree",
    "plain",
    "plate",
    "poppy",
    "porcupine",
    "possum",
    "rabbit",
    "raccoon",
    "ray",
    "road",
    "rocket",
    "rose",
    "sea",
    "seal",
    "shark",
    "shrew",
    "skunk",
    "skyscraper",
    "snail",
    "snake",
    "spider",
    "squirrel",
    "streetcar",
    "sunflower",
    "sweet_pepper",
    "table",
    "tank",
    "telephone",
    "television",
    "tiger",
    "tractor",
    "train",
    "trout",
    "tulip",
    "turtle",
    "wardrobe",
    "whale",
    "willow_tree",
    "wolf",
    "woman",
    "worm",
];

impl fmt::Display for DatasetId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for DatasetId {
    type Err = DatasetError;

    /// Accepts the short names, case-insensitively, plus the spellings `fashion_mnist`,
    /// `fashionmnist`, `cifar-10` and `cifar-100`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "mnist" => Ok(DatasetId::Mnist),
            "fashion-mnist" | "fashion_mnist" | "fashionmnist" => Ok(DatasetId::FashionMnist),
            "cifar10" | "cifar-10" => Ok(DatasetId::Cifar10),
            "cifar100" | "cifar-100" => Ok(DatasetId::Cifar100),
            _ => Err(DatasetError::UnknownDataset(s.to_string())),
        }
    }
}

/// One split (train or test) in memory: `n` images of `c × h × w` bytes, channel-major.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Split {
    /// Pixels, `n * c * h * w` bytes, image after image, each `(C, H, W)` row-major.
    pub images: Vec<u8>,
    /// One class index per image.
    pub labels: Vec<u32>,
    /// Number of examples.
    pub n: usize,
    /// Channels.
    pub c: usize,
    /// Height.
    pub h: usize,
    /// Width.
    pub w: usize,
}

impl Split {
    /// A split with no example and images of shape `(c, h, w)`.
    pub fn empty(c: usize, h: usize, w: usize) -> Split {
        Split {
            images: Vec::new(),
            labels: Vec::new(),
            n: 0,
            c,
            h,
            w,
        }
    }

    /// Number of examples.
    pub fn len(&self) -> usize {
        self.n
    }

    /// True when the split holds no example.
    pub fn is_empty(&self) -> bool {
        self.n == 0
    }

    /// The pixels of example `i` (`c * h * w` bytes), or `None` past the end.
    pub fn image(&self, i: usize) -> Option<&[u8]> {
        let size = self.c * self.h * self.w;
        self.images
            .get(i.checked_mul(size)?..i.checked_add(1)?.checked_mul(size)?)
    }

    /// Checks that the public fields agree with each other.
    pub fn check_consistent(&self) -> Result<(), DatasetError> {
        let size = self
            .n
            .checked_mul(self.c)
            .and_then(|v| v.checked_mul(self.h))
            .and_then(|v| v.checked_mul(self.w));
        if size != Some(self.images.len()) || self.labels.len() != self.n {
            return Err(DatasetError::Config {
                field: "split",
                message: format!(
                    "{} image bytes and {} labels do not match n={} c={} h={} w={}",
                    self.images.len(),
                    self.labels.len(),
                    self.n,
                    self.c,
                    self.h,
                    self.w
                ),
            });
        }
        Ok(())
    }

    /// All images normalized to `f32` (`(x/255 − mean[c]) / std[c]`), in storage order.
    /// Large splits are converted on several threads.
    pub fn normalized(&self, mean: &[f32], std: &[f32]) -> Result<Vec<f32>, DatasetError> {
        self.check_consistent()?;
        let lut = batch::normalization_lut(self.c, mean, std)?;
        let plane = self.h * self.w;
        let mut out = vec![0f32; self.images.len()];
        let planes = self.n * self.c;
        if plane == 0 || planes == 0 {
            return Ok(out);
        }
        let threads = if self.images.len() < 1 << 20 {
            1
        } else {
            std::thread::available_parallelism().map_or(1, |t| t.get().min(8))
        };
        let per_thread = planes.div_ceil(threads);
        let convert = |first_plane: usize, dst: &mut [f32], src: &[u8]| {
            for (k, (d, s)) in dst
                .chunks_exact_mut(plane)
                .zip(src.chunks_exact(plane))
                .enumerate()
            {
                let ch = (first_plane + k) % self.c;
                let table = &lut[ch * 256..(ch + 1) * 256];
                for (d, &s) in d.iter_mut().zip(s) {
                    *d = table[usize::from(s)];
                }
            }
        };
        std::thread::scope(|scope| {
            for (t, (dst, src)) in out
                .chunks_mut(per_thread * plane)
                .zip(self.images.chunks(per_thread * plane))
                .enumerate()
            {
                let convert = &convert;
                scope.spawn(move || convert(t * per_thread, dst, src));
            }
        });
        Ok(out)
    }

    /// Per-channel mean and standard deviation of the pixels scaled to `[0, 1]`.
    pub fn channel_stats(&self) -> Result<(Vec<f32>, Vec<f32>), DatasetError> {
        self.check_consistent()?;
        let plane = self.h * self.w;
        let mut hist = vec![[0u64; 256]; self.c];
        if plane > 0 {
            for (i, p) in self.images.chunks_exact(plane).enumerate() {
                let h = &mut hist[i % self.c];
                for &v in p {
                    h[usize::from(v)] += 1;
                }
            }
        }
        let mut mean = Vec::with_capacity(self.c);
        let mut std = Vec::with_capacity(self.c);
        for h in &hist {
            let count: u64 = h.iter().sum();
            let count = count.max(1) as f64;
            let m: f64 = h
                .iter()
                .enumerate()
                .map(|(v, &k)| v as f64 / 255.0 * k as f64)
                .sum::<f64>()
                / count;
            let var: f64 = h
                .iter()
                .enumerate()
                .map(|(v, &k)| (v as f64 / 255.0 - m).powi(2) * k as f64)
                .sum::<f64>()
                / count;
            mean.push(m as f32);
            std.push(var.sqrt() as f32);
        }
        Ok((mean, std))
    }
}

/// A data set in memory.
#[derive(Debug, Clone, PartialEq)]
pub struct Dataset {
    /// Which data set.
    pub id: DatasetId,
    /// Training split.
    pub train: Split,
    /// Test split.
    pub test: Split,
    /// Number of classes.
    pub classes: usize,
    /// Class names in label order (`classes` of them): [`DatasetId::class_names`], or the
    /// class folders of an image folder.
    pub class_names: Vec<String>,
    /// Per-channel normalization mean (see [`DatasetId::mean`]); change it with
    /// [`Dataset::set_normalization`], which validates.
    pub mean: Vec<f32>,
    /// Per-channel normalization standard deviation.
    pub std: Vec<f32>,
    /// Where it was found: the folder holding the files, the CIFAR archive, or the image
    /// folder / image-folder archive.
    pub source: PathBuf,
}

impl Dataset {
    /// Channels per image (the same in both splits, also when one is empty).
    pub fn channels(&self) -> usize {
        self.train.c
    }

    /// Replaces the normalization statistics (e.g. ImageNet's for a network pretrained with
    /// them), after checking them with [`check_normalization`]: one finite mean and one
    /// finite, positive std per channel. On error nothing is changed.
    pub fn set_normalization(&mut self, mean: Vec<f32>, std: Vec<f32>) -> Result<(), DatasetError> {
        check_normalization(self.channels(), &mean, &std)?;
        self.mean = mean;
        self.std = std;
        Ok(())
    }
}

/// How [`load`] looks for (and possibly fetches) a data set.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LoadOptions {
    /// Look only here: the data set's folder, a folder holding `<name>/`, or for CIFAR the
    /// published `.tar.gz`. Nothing else is searched when this is set.
    pub explicit: Option<PathBuf>,
    /// Download into the user cache when not found (off by default: no network unless asked).
    pub allow_download: bool,
    /// Show a progress bar while downloading.
    pub progress: bool,
    /// Check the files against the manifest digests before reading (files the manifest does
    /// not list, such as extracted raw IDX files, are only checked structurally).
    pub verify_checksums: bool,
    /// The search roots; `None` means [`SearchRoots::from_env`].
    pub roots: Option<SearchRoots>,
    /// Which splits to read (default both). With [`Splits::TestOnly`] the training files need
    /// not exist (discovery does not ask for them) and `train` is empty (`n == 0`, with the
    /// image shape of the test split); [`Splits::TrainOnly`] likewise.
    pub splits: Splits,
}

/// Finds (and, if allowed, downloads) data set `id` and reads both splits into memory.
pub fn load(id: DatasetId, opts: &LoadOptions) -> Result<Dataset, DatasetError> {
    load_with_manifest(
        id,
        &Manifest::embedded(id)?,
        &Downloader::new(opts.progress),
        opts,
    )
}

/// [`load`] with a given manifest and downloader (tests point these at a loopback server).
pub fn load_with_manifest(
    id: DatasetId,
    manifest: &Manifest,
    downloader: &Downloader,
    opts: &LoadOptions,
) -> Result<Dataset, DatasetError> {
    let roots = opts.roots.clone().unwrap_or_else(SearchRoots::from_env);
    let located = match discover::locate(
        id,
        opts.explicit.as_deref(),
        &roots,
        opts.splits,
        Some(manifest),
    ) {
        Ok(l) => l,
        Err(mut looked) => {
            let can_download = opts.allow_download && opts.explicit.is_none();
            match (&roots.cache, can_download) {
                (Some(cache), true) => {
                    let dir = cache.join(id.name());
                    if let Err(e) = downloader.fetch_all(manifest, &dir) {
                        if !matches!(e, DatasetError::Download { .. }) {
                            return Err(e);
                        }
                        return Err(DatasetError::Unavailable {
                            dataset: id.name().to_string(),
                            looked,
                            download: Box::new(e),
                            hint: offline_hint(id),
                        });
                    }
                    discover::probe(id, &dir, opts.splits, Some(manifest)).map_err(|why| {
                        DatasetError::Inconsistent {
                            file: dir.clone(),
                            message: format!("downloaded files do not form the data set: {why}"),
                        }
                    })?
                }
                (cache, allow) => {
                    let hint = if opts.explicit.is_some() {
                        "Fix the explicit path, or leave it unset to search the usual places."
                            .to_string()
                    } else if cache.is_none() {
                        looked.push((
                            PathBuf::from("<cache>"),
                            "no user cache directory (HOME/XDG_CACHE_HOME unset)".into(),
                        ));
                        "Set DEEPCOMP_DATA to a folder holding the data set.".to_string()
                    } else if !allow {
                        format!(
                            "Set DEEPCOMP_DATA=<dir> with <dir>/{} holding the files, or allow downloading.",
                            id.name()
                        )
                    } else {
                        String::new()
                    };
                    return Err(DatasetError::NotFound {
                        dataset: id.name().to_string(),
                        looked,
                        hint,
                    });
                }
            }
        }
    };
    if opts.verify_checksums {
        for f in located.files() {
            manifest.verify_local(&f)?;
        }
    }
    read_located(id, &located, opts)
}

/// What to do when a data set is neither on disk nor downloadable.
fn offline_hint(id: DatasetId) -> String {
    let package = match id {
        DatasetId::FashionMnist => Some("dataset-fashion-mnist"),
        _ => None,
    };
    let mut ways = Vec::new();
    if let Some(p) = package {
        ways.push(format!(
            "install the Debian/Ubuntu package (`apt-get install {p}`, files in /usr/share/datasets/{})",
            id.name()
        ));
    }
    ways.push(format!(
        "set DEEPCOMP_DATA=<dir> with the files in <dir>/{}",
        id.name()
    ));
    ways.push("pass the folder with `--data PATH` (or `[data] path` in the recipe)".to_string());
    ways.push("retry where the download URLs above are reachable".to_string());
    format!("To get it, do one of:\n  - {}", ways.join("\n  - "))
}

fn read_located(
    id: DatasetId,
    located: &Located,
    opts: &LoadOptions,
) -> Result<Dataset, DatasetError> {
    let classes = id.classes();
    let (train, test) = match located {
        Located::Idx(f) => {
            let read = |pair: &Option<(PathBuf, PathBuf)>| {
                pair.as_ref()
                    .map(|(i, l)| idx::read_idx_pair(i, l, classes))
                    .transpose()
            };
            let (train, test) = std::thread::scope(|s| {
                let t = s.spawn(|| read(&f.test));
                let train = read(&f.train);
                let test = t.join().unwrap_or_else(|_| {
                    Err(DatasetError::Inconsistent {
                        file: located.source(),
                        message: "reader thread panicked".into(),
                    })
                });
                (train, test)
            });
            let to_split = |p: idx::IdxPair| Split {
                images: p.images,
                labels: p.labels,
                n: p.n,
                c: 1,
                h: p.h,
                w: p.w,
            };
            let (train, test) = (train?.map(to_split), test?.map(to_split));
            let (h, w) = train
                .as_ref()
                .or(test.as_ref())
                .map_or((id.shape().1, id.shape().2), |s| (s.h, s.w));
            let train = train.unwrap_or_else(|| Split::empty(1, h, w));
            let test = test.unwrap_or_else(|| Split::empty(1, h, w));
            if (train.h, train.w) != (test.h, test.w) {
                return Err(DatasetError::Inconsistent {
                    file: f.test.as_ref().map(|p| p.0.clone()).unwrap_or_default(),
                    message: format!(
                        "{}×{} images but the training images are {}×{}",
                        test.h, test.w, train.h, train.w
                    ),
                });
            }
            (train, test)
        }
        Located::CifarFolder(p) | Located::CifarTarball(p) => {
            let kind = id.cifar_kind().ok_or_else(|| DatasetError::Inconsistent {
                file: p.clone(),
                message: format!("{id} is not a CIFAR data set"),
            })?;
            let (train, test) = if matches!(located, Located::CifarTarball(_)) {
                cifar::read_tarball(kind, p, opts.splits)?
            } else {
                cifar::read_extracted(kind, p, opts.splits)?
            };
            let to_split = |s: cifar::CifarSplit| Split {
                n: s.len(),
                images: s.images,
                labels: s.labels,
                c: 3,
                h: 32,
                w: 32,
            };
            (to_split(train), to_split(test))
        }
        Located::ImageFolder(p) => {
            let o = ImageFolderOptions {
                classes: None,
                shape: None,
                splits: opts.splits,
                progress: opts.progress,
            };
            return load_image_folder(id, p, &o);
        }
    };
    Ok(Dataset {
        id,
        train,
        test,
        classes,
        class_names: id.class_names().iter().map(|s| s.to_string()).collect(),
        mean: id.mean(),
        std: id.std(),
        source: located.source(),
    })
}
