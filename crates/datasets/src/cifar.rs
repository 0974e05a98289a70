//! CIFAR-10 / CIFAR-100 binary version: the published `.tar.gz` or its extracted folder.
//!
//! Each record is the label byte(s) followed by 3072 pixel bytes: the 1024 red values of the
//! 32×32 image row-major, then green, then blue, i.e. already channel-major (C, H, W).
//! CIFAR-10 records have one label byte (3073 bytes per record); CIFAR-100 records have a
//! coarse then a fine label byte (3074 bytes; the fine label, 0..100, is used).

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use crate::error::DatasetError;
use crate::Splits;

/// Pixels per CIFAR image (3 × 32 × 32).
pub const CIFAR_PIXELS: usize = 3 * 32 * 32;

/// Which CIFAR variant a file set belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CifarKind {
    Ten,
    Hundred,
}

impl CifarKind {
    pub(crate) fn label_bytes(self) -> usize {
        match self {
            CifarKind::Ten => 1,
            CifarKind::Hundred => 2,
        }
    }
    pub(crate) fn record(self) -> usize {
        self.label_bytes() + CIFAR_PIXELS
    }
    /// Name of the folder inside the published tarball.
    pub(crate) fn folder(self) -> &'static str {
        match self {
            CifarKind::Ten => "cifar-10-batches-bin",
            CifarKind::Hundred => "cifar-100-binary",
        }
    }
    /// Name of the published tarball.
    pub(crate) fn tarball(self) -> &'static str {
        match self {
            CifarKind::Ten => "cifar-10-binary.tar.gz",
            CifarKind::Hundred => "cifar-100-binary.tar.gz",
        }
    }
    pub(crate) fn train_files(self) -> &'static [&'static str] {
        match self {
            CifarKind::Ten => &[
                "data_batch_1.bin",
                "data_batch_2.bin",
                "data_batch_3.bin",
                "data_batch_4.bin",
                "data_batch_5.bin",
            ],
            CifarKind::Hundred => &["train.bin"],
        }
    }
    pub(crate) fn test_files(self) -> &'static [&'static str] {
        match self {
            CifarKind::Ten => &["test_batch.bin"],
            CifarKind::Hundred => &["test.bin"],
        }
    }
    /// The batch files needed for `splits`.
    pub(crate) fn files_for(self, splits: Splits) -> Vec<&'static str> {
        let mut v = Vec::new();
        if splits.train() {
            v.extend_from_slice(self.train_files());
        }
        if splits.test() {
            v.extend_from_slice(self.test_files());
        }
        v
    }
    fn classes(self) -> usize {
        match self {
            CifarKind::Ten => 10,
            CifarKind::Hundred => 100,
        }
    }
}

/// Images (N × 3072 bytes, CHW) and labels of one split.
#[derive(Debug, Default)]
pub(crate) struct CifarSplit {
    pub images: Vec<u8>,
    pub labels: Vec<u32>,
}

impl CifarSplit {
    pub(crate) fn len(&self) -> usize {
        self.labels.len()
    }
}

/// Appends the records of one batch file (already in memory) to `out`.
fn parse_records(
    kind: CifarKind,
    file: &Path,
    bytes: &[u8],
    out: &mut CifarSplit,
) -> Result<(), DatasetError> {
    let rec = kind.record();
    if bytes.is_empty() {
        return Err(DatasetError::format(
            file,
            0,
            format!("at least one {rec}-byte record, the file is empty"),
        ));
    }
    let whole = bytes.len() - bytes.len() % rec;
    if whole != bytes.len() {
        return Err(DatasetError::format(
            file,
            whole as u64,
            format!(
                "a whole number of {rec}-byte records, file size {} leaves {} extra bytes after record {}",
                bytes.len(),
                bytes.len() - whole,
                whole / rec
            ),
        ));
    }
    let n = bytes.len() / rec;
    out.images.reserve(n * CIFAR_PIXELS);
    out.labels.reserve(n);
    let lb = kind.label_bytes();
    for (i, r) in bytes.chunks_exact(rec).enumerate() {
        if kind == CifarKind::Hundred && r[0] >= 20 {
            return Err(DatasetError::format(
                file,
                (i * rec) as u64,
                format!("a coarse label below 20 (record {i}), found {}", r[0]),
            ));
        }
        let label = r[lb - 1];
        if usize::from(label) >= kind.classes() {
            return Err(DatasetError::format(
                file,
                (i * rec + lb - 1) as u64,
                format!(
                    "a label below {} (record {i}), found {label}",
                    kind.classes()
                ),
            ));
        }
        out.labels.push(u32::from(label));
        out.images.extend_from_slice(&r[lb..]);
    }
    Ok(())
}

fn read_file(path: &Path) -> Result<Vec<u8>, DatasetError> {
    let mut f = File::open(path).map_err(|e| DatasetError::io(path, e))?;
    let len = f.metadata().map_err(|e| DatasetError::io(path, e))?.len();
    let mut v = Vec::with_capacity(len.min(1 << 31) as usize);
    f.read_to_end(&mut v)
        .map_err(|e| DatasetError::io(path, e))?;
    Ok(v)
}

/// Locates the batch files of an extracted folder: `dir` itself or `dir/<published folder>`.
/// Returns the folder holding them, or the reason it does not fit.
pub(crate) fn find_extracted(
    kind: CifarKind,
    dir: &Path,
    splits: Splits,
) -> Result<PathBuf, String> {
    let wanted = kind.files_for(splits);
    let candidates = [dir.join(kind.folder()), dir.to_path_buf()];
    for c in &candidates {
        if wanted.iter().all(|f| c.join(f).is_file()) {
            return Ok(c.clone());
        }
    }
    Err(format!(
        "no {} and no {}/ or ./ with {}",
        kind.tarball(),
        kind.folder(),
        wanted.join(", ")
    ))
}

/// Reads an extracted folder (the one holding the `.bin` files).
pub(crate) fn read_extracted(
    kind: CifarKind,
    folder: &Path,
    splits: Splits,
) -> Result<(CifarSplit, CifarSplit), DatasetError> {
    let read_split = |names: &[&str], on: bool| -> Result<CifarSplit, DatasetError> {
        let mut split = CifarSplit::default();
        if !on {
            return Ok(split);
        }
        for name in names {
            let p = folder.join(name);
            let bytes = read_file(&p)?;
            parse_records(kind, &p, &bytes, &mut split)?;
        }
        Ok(split)
    };
    let train = read_split(kind.train_files(), splits.train())?;
    let test = read_split(kind.test_files(), splits.test())?;
    Ok((train, test))
}

/// Reads the published `.tar.gz` directly (no extraction to disk).
pub(crate) fn read_tarball(
    kind: CifarKind,
    tarball: &Path,
    splits: Splits,
) -> Result<(CifarSplit, CifarSplit), DatasetError> {
    let file = File::open(tarball).map_err(|e| DatasetError::io(tarball, e))?;
    let gz = flate2::read::GzDecoder::new(std::io::BufReader::with_capacity(1 << 18, file));
    let mut archive = tar::Archive::new(gz);
    let tar_err = |e: std::io::Error| {
        DatasetError::format(
            tarball,
            0,
            format!("a readable gzip-compressed tar archive ({e})"),
        )
    };
    // Batch contents by file name; BTreeMap keeps a deterministic order.
    let mut found: std::collections::BTreeMap<String, (PathBuf, Vec<u8>)> = Default::default();
    let wanted = kind.files_for(splits);
    for entry in archive.entries().map_err(tar_err)? {
        let mut entry = entry.map_err(tar_err)?;
        let path = entry.path().map_err(tar_err)?.into_owned();
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        if !wanted.contains(&name) || !entry.header().entry_type().is_file() {
            continue;
        }
        let name = name.to_string();
        let member = PathBuf::from(format!("{}!{}", tarball.display(), path.display()));
        let size = entry.size();
        // Cap the up-front allocation: the header size may be corrupt (CIFAR-100 train.bin,
        // the largest member, is 154 MB).
        let mut v = Vec::with_capacity(size.min(1 << 28) as usize);
        entry.read_to_end(&mut v).map_err(|e| {
            DatasetError::format(
                &member,
                v.len() as u64,
                format!("{size} bytes of tar member data ({e})"),
            )
        })?;
        found.insert(name, (member, v));
    }
    let missing: Vec<&str> = wanted
        .iter()
        .filter(|w| !found.contains_key(**w))
        .copied()
        .collect();
    if !missing.is_empty() {
        return Err(DatasetError::Inconsistent {
            file: tarball.to_path_buf(),
            message: format!("archive lacks {}", missing.join(", ")),
        });
    }
    let mut build = |names: &[&str]| -> Result<CifarSplit, DatasetError> {
        let mut split = CifarSplit::default();
        for name in names {
            if let Some((member, bytes)) = found.remove(*name) {
                parse_records(kind, &member, &bytes, &mut split)?;
            }
        }
        Ok(split)
    };
    let train = build(kind.train_files())?;
    let test = build(kind.test_files())?;
    Ok((train, test))
}

/// Encodes CIFAR records (used by tests and tools to make small data sets).
///
/// `images` holds `labels.len()` images of 3072 bytes each; for CIFAR-100 the coarse label
/// written is `fine / 5`.
pub fn encode_cifar_records(hundred: bool, images: &[u8], labels: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    for (img, &l) in images.chunks_exact(CIFAR_PIXELS).zip(labels) {
        if hundred {
            out.push(l / 5);
        }
        out.push(l);
        out.extend_from_slice(img);
    }
    out
}
