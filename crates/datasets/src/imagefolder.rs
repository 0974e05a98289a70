//! Image folders in the torchvision `ImageFolder` convention:
//! `<root>/{train,test}/<class>/<image>.{jpg,jpeg,png}`, read from a folder or straight from a
//! `.tar` / `.tar.gz` / `.tgz` archive (nothing is unpacked to disk).
//!
//! Layout rules (a violation is a [`DatasetError::ImageFolder`] naming the file or folder, for
//! archive members as `archive.tar.gz!path/inside`):
//!
//! * The root holds `train/` and `test/`, either directly or under one top-level folder
//!   (`cifar10/train/...`): when the root has neither `train` nor `test` but exactly one
//!   visible entry, a folder, that folder is the root.
//! * Only the splits asked for ([`Splits`]) are looked at; an asked-for split that is missing
//!   is an error. Other top-level entries (a README, a `val/` folder) are ignored.
//! * Inside a split, every entry is a class folder, and every class folder holds only image
//!   files (extension `jpg`, `jpeg` or `png`, any case). A file directly under `train/`, a
//!   sub-folder inside a class folder, another extension or an empty class folder is an error.
//! * Hidden entries (name starting with `.`, e.g. `.DS_Store`) and `__MACOSX/` folders are
//!   skipped wherever they are.
//! * Class order: the names given by the caller ([`ImageFolderOptions::classes`]; a split
//!   whose folders differ from them is an error listing the missing and extra classes), else
//!   the split's folder names sorted byte-wise. When both splits are read they must have the
//!   same class folders. Examples are ordered class by class, files by name (byte-wise).
//! * Images are decoded by content (JPEG or PNG, whatever the extension says), once, on all
//!   cores (rayon): JPEG with `zune-jpeg` directly (the decoder the `image` crate wraps;
//!   measured faster called directly), PNG and unusual JPEGs (CMYK; colour to be reduced to
//!   one channel) with the `image` crate. Every image must have the expected height and width (given, or those of
//!   the first image); nothing is resized. Channels are converted to the expected count the
//!   way torchvision's loader does with `convert("RGB")`: grayscale is replicated to three
//!   channels, an alpha channel is dropped (not composited); for one channel colour is
//!   turned into luma. 16-bit PNGs are reduced to 8 bits. When the shape is taken from the
//!   first image, a grayscale first image (with or without alpha) means one channel, any
//!   other means three.
//! * Pixels are stored as in the rest of the crate: `u8`, each image `(C, H, W)`.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

use indicatif::{ProgressBar, ProgressStyle};
use rayon::prelude::*;

use crate::error::DatasetError;
use crate::{Dataset, DatasetId, Split};

/// Which splits [`crate::load`] and [`read_image_folder`] read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Splits {
    /// Training and test split (the default).
    #[default]
    Both,
    /// Only the training split; the test split is empty (`n == 0`) and its files need not exist.
    TrainOnly,
    /// Only the test split; the training split is empty (`n == 0`) and its files need not exist.
    TestOnly,
}

impl Splits {
    /// True when the training split is read.
    pub fn train(self) -> bool {
        self != Splits::TestOnly
    }

    /// True when the test split is read.
    pub fn test(self) -> bool {
        self != Splits::TrainOnly
    }
}

/// How [`read_image_folder`] reads an image folder.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ImageFolderOptions {
    /// The class names in label order; `None`: the class folders sorted byte-wise.
    pub classes: Option<Vec<String>>,
    /// Expected image shape `(C, H, W)`; `None`: taken from the first image.
    /// `C` must be 1 or 3.
    pub shape: Option<(usize, usize, usize)>,
    /// Which splits to read.
    pub splits: Splits,
    /// Show a progress bar (stderr) while decoding.
    pub progress: bool,
}

/// An image folder in memory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageFolder {
    /// Training split (empty when not read).
    pub train: Split,
    /// Test split (empty when not read).
    pub test: Split,
    /// Class names in label order.
    pub classes: Vec<String>,
    /// The folder or archive read.
    pub source: PathBuf,
}

impl ImageFolder {
    /// Turns the folder into a [`Dataset`] of kind `id`, with `id`'s normalization statistics.
    /// The images must have `id`'s shape and there must be `id.classes()` classes.
    pub fn into_dataset(self, id: DatasetId) -> Result<Dataset, DatasetError> {
        let (c, h, w) = id.shape();
        let split = if self.train.n > 0 || self.test.n == 0 {
            &self.train
        } else {
            &self.test
        };
        if (split.c, split.h, split.w) != (c, h, w) {
            return Err(DatasetError::ImageFolder {
                file: self.source.clone(),
                message: format!(
                    "{id} needs {c}×{h}×{w} images (C×H×W), the folder's are {}×{}×{}",
                    split.c, split.h, split.w
                ),
            });
        }
        if self.classes.len() != id.classes() {
            return Err(DatasetError::ImageFolder {
                file: self.source.clone(),
                message: format!(
                    "{id} has {} classes, the folder has {}",
                    id.classes(),
                    self.classes.len()
                ),
            });
        }
        Ok(Dataset {
            id,
            train: self.train,
            test: self.test,
            classes: id.classes(),
            class_names: self.classes,
            mean: id.mean(),
            std: id.std(),
            source: self.source,
        })
    }
}

/// Reads an image folder for data set `id`: the class list defaults to `id`'s class names
/// ([`DatasetId::class_names`]) and the shape to `id`'s; see [`read_image_folder`].
pub fn load_image_folder(
    id: DatasetId,
    path: &Path,
    opts: &ImageFolderOptions,
) -> Result<Dataset, DatasetError> {
    let mut o = opts.clone();
    if o.classes.is_none() {
        o.classes = Some(id.class_names().iter().map(|s| s.to_string()).collect());
    }
    if o.shape.is_none() {
        o.shape = Some(id.shape());
    }
    read_image_folder(path, &o)?.into_dataset(id)
}

/// Where an image's bytes are.
#[derive(Debug)]
enum Bytes {
    Memory(Vec<u8>),
    File(PathBuf),
}

/// One entry of the folder or archive, path relative to the root, split by `/`.
#[derive(Debug)]
struct Entry {
    parts: Vec<String>,
    is_dir: bool,
    /// How to name it in errors.
    display: PathBuf,
    bytes: Option<Bytes>,
}

fn skipped(name: &str) -> bool {
    name.starts_with('.') || name == "__MACOSX"
}

fn layout_err(file: impl Into<PathBuf>, message: impl Into<String>) -> DatasetError {
    DatasetError::ImageFolder {
        file: file.into(),
        message: message.into(),
    }
}

/// True for a path that names a tar archive (`.tar`, `.tar.gz`, `.tgz`).
pub(crate) fn is_tar_name(path: &Path) -> bool {
    let n = path.to_string_lossy().to_ascii_lowercase();
    n.ends_with(".tar") || n.ends_with(".tar.gz") || n.ends_with(".tgz")
}

/// Opens a tar archive, gzip-compressed or not (decided by the magic bytes).
pub(crate) fn open_tar(path: &Path) -> Result<tar::Archive<Box<dyn Read>>, DatasetError> {
    let file = File::open(path).map_err(|e| DatasetError::io(path, e))?;
    let mut reader = BufReader::with_capacity(1 << 18, file);
    let head = reader.fill_buf().map_err(|e| DatasetError::io(path, e))?;
    let gz = head.len() >= 2 && head[0] == 0x1f && head[1] == 0x8b;
    let r: Box<dyn Read> = if gz {
        // tar reads 512-byte headers and small members: buffer the decompressed stream so
        // that inflate works on large chunks.
        Box::new(BufReader::with_capacity(
            1 << 20,
            flate2::bufread::GzDecoder::new(reader),
        ))
    } else {
        Box::new(reader)
    };
    Ok(tar::Archive::new(r))
}

fn tar_err(path: &Path, e: std::io::Error) -> DatasetError {
    DatasetError::format(path, 0, format!("a readable tar archive ({e})"))
}

/// Splits a member path into its normal components (`./` and empty parts dropped); `None`
/// for paths that leave the archive (`..`, absolute).
fn member_parts(p: &Path) -> Option<Vec<String>> {
    use std::path::Component;
    let mut out = Vec::new();
    for c in p.components() {
        match c {
            Component::Normal(s) => out.push(s.to_string_lossy().into_owned()),
            Component::CurDir => {}
            _ => return None,
        }
    }
    Some(out)
}

/// Reads the entries of an archive; file contents are kept only when `keep(parts)` says so.
fn archive_entries(
    path: &Path,
    keep: &dyn Fn(&[String]) -> bool,
) -> Result<Vec<Entry>, DatasetError> {
    let mut archive = open_tar(path)?;
    let mut out = Vec::new();
    for entry in archive.entries().map_err(|e| tar_err(path, e))? {
        let mut entry = entry.map_err(|e| tar_err(path, e))?;
        let member = entry.path().map_err(|e| tar_err(path, e))?.into_owned();
        let display = PathBuf::from(format!("{}!{}", path.display(), member.display()));
        let Some(parts) = member_parts(&member) else {
            return Err(layout_err(display, "member path leaves the archive root"));
        };
        if parts.is_empty() || parts.iter().any(|p| skipped(p)) {
            continue;
        }
        let kind = entry.header().entry_type();
        let is_dir = kind.is_dir();
        if !is_dir && !kind.is_file() {
            // Links, devices, global headers: not part of an image folder.
            if kind.is_symlink() || kind.is_hard_link() {
                return Err(layout_err(display, "a link; only plain files are read"));
            }
            continue;
        }
        let bytes = if !is_dir && keep(&parts) {
            let size = entry.size();
            let mut v = Vec::with_capacity(size.min(1 << 26) as usize);
            entry.read_to_end(&mut v).map_err(|e| {
                DatasetError::format(
                    &display,
                    v.len() as u64,
                    format!("{size} bytes of tar member data ({e})"),
                )
            })?;
            Some(Bytes::Memory(v))
        } else {
            None
        };
        out.push(Entry {
            parts,
            is_dir,
            display,
            bytes,
        });
    }
    Ok(out)
}

/// Walks a folder (no symlink following beyond what `metadata` does for the root).
fn folder_entries(root: &Path) -> Result<Vec<Entry>, DatasetError> {
    let mut out = Vec::new();
    let mut stack = vec![(root.to_path_buf(), Vec::<String>::new())];
    while let Some((dir, parts)) = stack.pop() {
        // Deeper than root/prefix/split/class/file is never needed.
        if parts.len() > 4 {
            continue;
        }
        let rd = std::fs::read_dir(&dir).map_err(|e| DatasetError::io(&dir, e))?;
        for item in rd {
            let item = item.map_err(|e| DatasetError::io(&dir, e))?;
            let name = item.file_name().to_string_lossy().into_owned();
            if skipped(&name) {
                continue;
            }
            let path = item.path();
            let is_dir = std::fs::metadata(&path)
                .map_err(|e| DatasetError::io(&path, e))?
                .is_dir();
            let mut p = parts.clone();
            p.push(name);
            if is_dir {
                stack.push((path.clone(), p.clone()));
            }
            out.push(Entry {
                parts: p,
                is_dir,
                bytes: (!is_dir).then(|| Bytes::File(path.clone())),
                display: path,
            });
        }
    }
    Ok(out)
}

/// One split's files grouped by class folder (class → (file name → entry index)).
type ClassFiles = BTreeMap<String, BTreeMap<String, usize>>;

/// Determines the root prefix (empty or one folder) of the entries.
fn find_prefix(entries: &[Entry], source: &Path) -> Result<Vec<String>, DatasetError> {
    let top: BTreeSet<&str> = entries.iter().map(|e| e.parts[0].as_str()).collect();
    if top.contains("train") || top.contains("test") {
        return Ok(Vec::new());
    }
    if top.len() == 1 {
        let only = top.iter().next().copied().unwrap_or_default();
        let is_dir = entries.iter().any(|e| e.parts.len() > 1 || e.is_dir);
        let sub: BTreeSet<&str> = entries
            .iter()
            .filter(|e| e.parts.len() > 1)
            .map(|e| e.parts[1].as_str())
            .collect();
        if is_dir && (sub.contains("train") || sub.contains("test")) {
            return Ok(vec![only.to_string()]);
        }
    }
    let found: Vec<&str> = top.into_iter().take(10).collect();
    Err(layout_err(
        source,
        format!(
            "no train/ or test/ folder at the top level or under a single top-level folder (found: {})",
            if found.is_empty() {
                "nothing".to_string()
            } else {
                found.join(", ")
            }
        ),
    ))
}

fn image_extension(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    lower.ends_with(".jpg") || lower.ends_with(".jpeg") || lower.ends_with(".png")
}

/// Groups the entries of split `split` by class, checking the layout.
fn group_split(
    entries: &[Entry],
    prefix: &[String],
    split: &str,
    source: &Path,
    in_archive: bool,
) -> Result<ClassFiles, DatasetError> {
    let depth = prefix.len();
    let mut classes: ClassFiles = BTreeMap::new();
    let mut seen_split = false;
    for (i, e) in entries.iter().enumerate() {
        if e.parts.len() <= depth || e.parts[..depth] != *prefix || e.parts[depth] != split {
            continue;
        }
        seen_split = true;
        let rest = &e.parts[depth + 1..];
        match (rest.len(), e.is_dir) {
            (0, _) => {
                if !e.is_dir {
                    return Err(layout_err(&e.display, format!("{split} must be a folder")));
                }
            }
            (1, true) => {
                classes.entry(rest[0].clone()).or_default();
            }
            (1, false) => {
                return Err(layout_err(
                    &e.display,
                    format!(
                        "a file directly under {split}/; images must be inside class folders ({split}/<class>/<image>)"
                    ),
                ))
            }
            (2, false) => {
                if !image_extension(&rest[1]) {
                    return Err(layout_err(
                        &e.display,
                        "not an image file (expected extension .jpg, .jpeg or .png)",
                    ));
                }
                classes
                    .entry(rest[0].clone())
                    .or_default()
                    .insert(rest[1].clone(), i);
            }
            (2, true) => {
                return Err(layout_err(
                    &e.display,
                    format!("a folder inside class folder {}; class folders hold only images", rest[0]),
                ))
            }
            _ => {
                // Deeper entries: report at their class folder's level.
                return Err(layout_err(
                    &e.display,
                    format!("nested too deep; expected {split}/<class>/<image>"),
                ));
            }
        }
    }
    let mut split_path = source.to_path_buf();
    let rel: Vec<&str> = prefix.iter().map(String::as_str).chain([split]).collect();
    if in_archive {
        split_path = PathBuf::from(format!("{}!{}/", source.display(), rel.join("/")));
    } else {
        for r in &rel {
            split_path.push(r);
        }
    }
    if !seen_split {
        return Err(layout_err(split_path, format!("missing {split}/ folder")));
    }
    if classes.is_empty() {
        return Err(layout_err(split_path, "holds no class folder"));
    }
    for (class, files) in &classes {
        if files.is_empty() {
            let p = if in_archive {
                PathBuf::from(format!("{}{class}/", split_path.display()))
            } else {
                split_path.join(class)
            };
            return Err(layout_err(p, "empty class folder (no image)"));
        }
    }
    Ok(classes)
}

fn diff_classes(want: &[String], have: &ClassFiles) -> Option<String> {
    let missing: Vec<&str> = want
        .iter()
        .filter(|c| !have.contains_key(*c))
        .map(String::as_str)
        .collect();
    let extra: Vec<&str> = have
        .keys()
        .filter(|c| !want.contains(c))
        .map(String::as_str)
        .collect();
    if missing.is_empty() && extra.is_empty() {
        return None;
    }
    let mut parts = Vec::new();
    if !missing.is_empty() {
        parts.push(format!("missing class folder(s): {}", missing.join(", ")));
    }
    if !extra.is_empty() {
        parts.push(format!("unexpected class folder(s): {}", extra.join(", ")));
    }
    Some(parts.join("; "))
}

/// A decoded image: interleaved 8-bit pixels with `c` channels (1 or 3), or anything else
/// the `image` crate produced.
enum Decoded {
    Pixels {
        px: Vec<u8>,
        w: usize,
        h: usize,
        c: usize,
    },
    Image(image::DynamicImage),
}

impl Decoded {
    fn size(&self) -> (usize, usize) {
        match self {
            Decoded::Pixels { w, h, .. } => (*w, *h),
            Decoded::Image(img) => (img.width() as usize, img.height() as usize),
        }
    }

    /// The channel count a shape taken from this image gets: 1 for grayscale, else 3.
    fn natural_channels(&self) -> usize {
        match self {
            Decoded::Pixels { c, .. } => *c,
            Decoded::Image(img) if img.color().has_color() => 3,
            Decoded::Image(_) => 1,
        }
    }
}

fn is_jpeg(bytes: &[u8]) -> bool {
    bytes.starts_with(&[0xff, 0xd8, 0xff])
}

/// Decodes a baseline/progressive JPEG with zune-jpeg straight into `want` channels (or its
/// natural count); `None` when the JPEG is of a kind left to the `image` crate (CMYK, or
/// colour to be reduced to one channel, so that all luma conversions are the same).
fn decode_jpeg(
    bytes: &[u8],
    want: Option<usize>,
    display: &Path,
) -> Result<Option<Decoded>, DatasetError> {
    use zune_core::bytestream::ZCursor;
    use zune_core::colorspace::ColorSpace;
    use zune_core::options::DecoderOptions;
    let options = DecoderOptions::default()
        .set_strict_mode(false)
        .set_max_width(1 << 16)
        .set_max_height(1 << 16);
    let mut d = zune_jpeg::JpegDecoder::new_with_options(ZCursor::new(bytes), options);
    d.decode_headers()
        .map_err(|e| layout_err(display, format!("does not decode: {e:?}")))?;
    let gray = match d.input_colorspace() {
        Some(ColorSpace::Luma) => true,
        Some(ColorSpace::YCbCr | ColorSpace::RGB) => false,
        _ => return Ok(None),
    };
    let c = want.unwrap_or(if gray { 1 } else { 3 });
    let out = match (c, gray) {
        (1, true) => ColorSpace::Luma,
        (3, _) => ColorSpace::RGB,
        _ => return Ok(None),
    };
    d.set_options(options.jpeg_set_out_colorspace(out));
    let px = d
        .decode()
        .map_err(|e| layout_err(display, format!("does not decode: {e:?}")))?;
    let (w, h) = d
        .dimensions()
        .ok_or_else(|| layout_err(display, "does not decode: no dimensions"))?;
    if px.len() != w * h * c {
        return Err(layout_err(
            display,
            format!("does not decode: {} bytes for {w}×{h}×{c}", px.len()),
        ));
    }
    Ok(Some(Decoded::Pixels { px, w, h, c }))
}

/// Decodes one image (JPEG or PNG, by content); `want` is the channel count to produce when
/// known.
fn decode(bytes: &[u8], want: Option<usize>, display: &Path) -> Result<Decoded, DatasetError> {
    if is_jpeg(bytes) {
        if let Some(d) = decode_jpeg(bytes, want, display)? {
            return Ok(d);
        }
    }
    let reader = image::ImageReader::new(std::io::Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| layout_err(display, format!("cannot be read: {e}")))?;
    if reader.format().is_none() {
        return Err(layout_err(
            display,
            "does not decode: neither JPEG nor PNG data",
        ));
    }
    reader
        .decode()
        .map(Decoded::Image)
        .map_err(|e| layout_err(display, format!("does not decode: {e}")))
}

/// Converts to `c` channels (1 or 3), checks `h × w`, and writes CHW bytes into `out`.
fn to_chw(
    img: &Decoded,
    (c, h, w): (usize, usize, usize),
    display: &Path,
    out: &mut [u8],
) -> Result<(), DatasetError> {
    let (iw, ih) = img.size();
    if (ih, iw) != (h, w) {
        return Err(layout_err(
            display,
            format!("image is {iw}×{ih} (W×H), expected {w}×{h}"),
        ));
    }
    let plane = h * w;
    let converted;
    let (px, pc): (&[u8], usize) = match img {
        Decoded::Pixels { px, c: pc, .. } if *pc == c => (px, c),
        Decoded::Pixels { .. } => {
            return Err(layout_err(display, "internal error: channel count"));
        }
        Decoded::Image(img) => {
            converted = match c {
                1 => img.to_luma8().into_raw(),
                3 => img.to_rgb8().into_raw(),
                _ => {
                    return Err(DatasetError::Config {
                        field: "shape",
                        message: format!("{c} channels; image folders support 1 or 3"),
                    })
                }
            };
            (&converted, c)
        }
    };
    if pc == 1 {
        out.copy_from_slice(px);
    } else {
        let (r, rest) = out.split_at_mut(plane);
        let (g, b) = rest.split_at_mut(plane);
        for (k, p) in px.chunks_exact(3).enumerate() {
            r[k] = p[0];
            g[k] = p[1];
            b[k] = p[2];
        }
    }
    Ok(())
}

fn load_bytes(b: &Bytes) -> Result<std::borrow::Cow<'_, [u8]>, DatasetError> {
    match b {
        Bytes::Memory(v) => Ok(std::borrow::Cow::Borrowed(v)),
        Bytes::File(p) => std::fs::read(p)
            .map(std::borrow::Cow::Owned)
            .map_err(|e| DatasetError::io(p, e)),
    }
}

/// Reads an image folder or archive; see the module documentation for the rules.
pub fn read_image_folder(
    path: &Path,
    opts: &ImageFolderOptions,
) -> Result<ImageFolder, DatasetError> {
    if let Some((c, h, w)) = opts.shape {
        if !(c == 1 || c == 3) || h == 0 || w == 0 {
            return Err(DatasetError::Config {
                field: "shape",
                message: format!(
                    "{c}×{h}×{w}: image folders need 1 or 3 channels and a non-zero size"
                ),
            });
        }
    }
    if let Some(classes) = &opts.classes {
        let unique: BTreeSet<&String> = classes.iter().collect();
        if classes.is_empty() || unique.len() != classes.len() {
            return Err(DatasetError::Config {
                field: "classes",
                message: "the class list must be non-empty and without repeats".into(),
            });
        }
    }
    let meta = std::fs::metadata(path).map_err(|e| DatasetError::io(path, e))?;
    let in_archive = !meta.is_dir();
    let want = [(opts.splits.train(), "train"), (opts.splits.test(), "test")];
    let entries = if in_archive {
        if !is_tar_name(path) {
            return Err(layout_err(
                path,
                "neither a folder nor a .tar/.tar.gz/.tgz archive",
            ));
        }
        // Keep the bytes of files that sit in a wanted split (with or without a prefix).
        let keep = |parts: &[String]| {
            let n = parts.len();
            n >= 3
                && want
                    .iter()
                    .any(|(on, name)| *on && parts[n - 3] == *name && n <= 4)
        };
        archive_entries(path, &keep)?
    } else {
        folder_entries(path)?
    };
    if entries.is_empty() {
        return Err(layout_err(path, "is empty: no train/ or test/ folder"));
    }
    let prefix = find_prefix(&entries, path)?;
    let mut grouped: Vec<Option<ClassFiles>> = Vec::new();
    for (on, name) in want {
        grouped.push(if on {
            Some(group_split(&entries, &prefix, name, path, in_archive)?)
        } else {
            None
        });
    }
    // The class list.
    let classes: Vec<String> = match &opts.classes {
        Some(list) => list.clone(),
        None => grouped
            .iter()
            .flatten()
            .next()
            .map(|g| g.keys().cloned().collect())
            .unwrap_or_default(),
    };
    for (g, (_, name)) in grouped.iter().zip(want) {
        let Some(g) = g else { continue };
        if let Some(why) = diff_classes(&classes, g) {
            let mut rel: Vec<&str> = prefix.iter().map(String::as_str).collect();
            rel.push(name);
            let file = if in_archive {
                PathBuf::from(format!("{}!{}/", path.display(), rel.join("/")))
            } else {
                rel.iter().fold(path.to_path_buf(), |p, r| p.join(r))
            };
            let against = if opts.classes.is_some() {
                "the given class list"
            } else {
                "the train/ class folders"
            };
            return Err(layout_err(file, format!("{why} (compared with {against})")));
        }
    }
    // The examples in order: class by class, files by name.
    let mut lists: Vec<Vec<(usize, u32)>> = Vec::new();
    for g in &grouped {
        let mut list = Vec::new();
        if let Some(g) = g {
            for (label, class) in classes.iter().enumerate() {
                if let Some(files) = g.get(class) {
                    list.extend(files.values().map(|&i| (i, label as u32)));
                }
            }
        }
        lists.push(list);
    }
    // The shape: given, or from the first image.
    let shape = match opts.shape {
        Some(s) => s,
        None => {
            let first = lists.iter().flatten().next().map(|&(i, _)| i);
            let Some(first) = first else {
                return Err(layout_err(path, "holds no image"));
            };
            let e = &entries[first];
            let bytes = load_bytes(e.bytes.as_ref().ok_or_else(|| {
                layout_err(&e.display, "image bytes were not kept (internal error)")
            })?)?;
            let img = decode(&bytes, None, &e.display)?;
            let (w, h) = img.size();
            (img.natural_channels(), h, w)
        }
    };
    let (c, h, w) = shape;
    let size = c * h * w;
    let total: usize = lists.iter().map(Vec::len).sum();
    let bar = if opts.progress {
        let bar = ProgressBar::new(total as u64);
        if let Ok(style) =
            ProgressStyle::with_template("decoding images [{bar:30}] {pos}/{len} eta {eta}")
        {
            bar.set_style(style.progress_chars("=> "));
        }
        bar
    } else {
        ProgressBar::hidden()
    };
    let mut splits = Vec::new();
    for list in &lists {
        let mut images = vec![0u8; list.len() * size];
        // Chunks of 64 images per task: little scheduling overhead, and the progress bar
        // (a lock) is touched once per chunk.
        const CHUNK: usize = 64;
        images
            .par_chunks_mut(size.max(1) * CHUNK)
            .zip(list.par_chunks(CHUNK))
            .try_for_each(|(out, items)| -> Result<(), DatasetError> {
                for (out, &(i, _)) in out.chunks_exact_mut(size.max(1)).zip(items) {
                    let e = &entries[i];
                    let b = e.bytes.as_ref().ok_or_else(|| {
                        layout_err(&e.display, "image bytes were not kept (internal error)")
                    })?;
                    let bytes = load_bytes(b)?;
                    let img = decode(&bytes, Some(shape.0), &e.display)?;
                    to_chw(&img, shape, &e.display, out)?;
                }
                if opts.progress {
                    bar.inc(items.len() as u64);
                }
                Ok(())
            })?;
        let labels: Vec<u32> = list.iter().map(|&(_, l)| l).collect();
        splits.push(Split {
            n: labels.len(),
            images,
            labels,
            c,
            h,
            w,
        });
    }
    bar.finish_and_clear();
    let test = splits.pop().unwrap_or_else(|| Split::empty(c, h, w));
    let train = splits.pop().unwrap_or_else(|| Split::empty(c, h, w));
    Ok(ImageFolder {
        train,
        test,
        classes,
        source: path.to_path_buf(),
    })
}

/// What a CIFAR-style archive holds, judged from its first entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ArchiveKind {
    /// The binary release (`*.bin` batch files).
    CifarBinary,
    /// An image folder (`train/` or `test/`, possibly under one top-level folder).
    ImageFolder,
}

/// Looks at up to the first 64 entries of a tar archive to tell the binary CIFAR release
/// from an image folder. Returns the reason when it is neither.
pub(crate) fn peek_archive(path: &Path) -> Result<ArchiveKind, String> {
    let mut archive = open_tar(path).map_err(|e| e.to_string())?;
    let entries = archive
        .entries()
        .map_err(|e| format!("not a readable tar archive ({e})"))?;
    for entry in entries.take(64) {
        let entry = entry.map_err(|e| format!("not a readable tar archive ({e})"))?;
        let p = entry
            .path()
            .map_err(|e| format!("not a readable tar archive ({e})"))?
            .into_owned();
        let Some(parts) = member_parts(&p) else {
            continue;
        };
        if parts.iter().any(|s| s.ends_with(".bin")) {
            return Ok(ArchiveKind::CifarBinary);
        }
        if parts.iter().take(2).any(|s| s == "train" || s == "test") {
            return Ok(ArchiveKind::ImageFolder);
        }
    }
    Err(
        "a tar archive holding neither CIFAR batch files (*.bin) nor train/ or test/ folders"
            .into(),
    )
}

/// True when `dir` is an image-folder root (`train/` or `test/` inside, or inside its single
/// visible sub-folder).
pub(crate) fn looks_like_image_folder(dir: &Path) -> bool {
    let has_split = |d: &Path| d.join("train").is_dir() || d.join("test").is_dir();
    if has_split(dir) {
        return true;
    }
    let Ok(rd) = std::fs::read_dir(dir) else {
        return false;
    };
    let visible: Vec<PathBuf> = rd
        .filter_map(Result::ok)
        .filter(|e| !skipped(&e.file_name().to_string_lossy()))
        .map(|e| e.path())
        .collect();
    visible.len() == 1 && visible[0].is_dir() && has_split(&visible[0])
}
