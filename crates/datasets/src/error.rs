//! The crate's typed error.

use std::path::PathBuf;

/// Everything that can go wrong while locating, downloading, parsing or batching a data set.
///
/// Every variant that concerns a file names it; format errors also give the byte offset at
/// which the problem was found and what was expected there.
#[derive(Debug, thiserror::Error)]
pub enum DatasetError {
    /// An operating-system I/O error while touching `path`.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory involved.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },

    /// A file's contents do not match its format (IDX, CIFAR binary, gzip, tar).
    #[error("{file}: at byte {offset}: expected {expected}")]
    Format {
        /// The file (for a tar member: `archive.tar.gz!member`).
        file: PathBuf,
        /// Byte offset of the problem (in the decompressed stream for `.gz` files).
        offset: u64,
        /// What was expected at that offset, and what was found when known.
        expected: String,
    },

    /// Two files of one data set disagree (e.g. the image and label files of a split).
    #[error("{file}: {message}")]
    Inconsistent {
        /// The file reported as wrong.
        file: PathBuf,
        /// Explanation.
        message: String,
    },

    /// The data set was found nowhere; `looked` lists every place examined and why it did not fit.
    #[error("{dataset}: not found. Looked in:\n{}\n{hint}", format_looked(.looked))]
    NotFound {
        /// Data-set name (`fashion-mnist`, ...).
        dataset: String,
        /// Each candidate location with the reason it was rejected.
        looked: Vec<(PathBuf, String)>,
        /// What the user can do about it.
        hint: String,
    },

    /// The data set was found nowhere and downloading it failed (typically: no network). The message
    /// says what to do instead (a system package, `DEEPCOMP_DATA`, an explicit path).
    #[error("{dataset}: not found on this machine, and the download failed: {download}\nLooked in:\n{}\n{hint}", format_looked(.looked))]
    Unavailable {
        /// Data-set name (`fashion-mnist`, ...).
        dataset: String,
        /// Each local candidate location with the reason it was rejected.
        looked: Vec<(PathBuf, String)>,
        /// The download error.
        download: Box<DatasetError>,
        /// What the user can do about it.
        hint: String,
    },

    /// A file's digest matches none of the digests the manifest accepts for it.
    #[error("{file}: checksum mismatch: got {algorithm} {actual}{}, expected {}", format_found(.algorithm, .actual_sha256), format_accepted(.algorithm, .expected, .accepted))]
    Checksum {
        /// The checked file.
        file: PathBuf,
        /// The digest that decides for the published file: `sha256` or `md5`.
        algorithm: &'static str,
        /// The published digest (`algorithm`).
        expected: String,
        /// The file's digest (`algorithm`).
        actual: String,
        /// The file's SHA-256 when `algorithm` is `md5` and other digests (known copies) are
        /// accepted, so that the message shows the digest they are compared with.
        actual_sha256: Option<Box<str>>,
        /// Every other accepted digest, as `sha256 <hex> (<description>)`.
        accepted: Box<[String]>,
    },

    /// A download failed (HTTP status, connection, interrupted body, ...).
    #[error("download of {url} failed: {message}")]
    Download {
        /// The URL that was tried.
        url: String,
        /// What went wrong.
        message: String,
    },

    /// An embedded or user-supplied manifest is invalid.
    #[error("manifest {name}: {message}")]
    Manifest {
        /// Manifest name or path.
        name: String,
        /// What is wrong with it.
        message: String,
    },

    /// A configuration value is unusable (batch size 0, wrong number of channel means, ...).
    #[error("invalid {field}: {message}")]
    Config {
        /// The offending field.
        field: &'static str,
        /// Why it is rejected.
        message: String,
    },

    /// An image folder (or image-folder archive) is laid out wrongly, or one of its images does
    /// not decode or has the wrong size. `file` is the offending file or folder; inside an
    /// archive it is named `archive.tar.gz!path/inside`.
    #[error("{file}: {message}")]
    ImageFolder {
        /// The file or folder reported.
        file: PathBuf,
        /// What is wrong with it.
        message: String,
    },

    /// An unknown data-set name was parsed.
    #[error("unknown dataset {0:?} (expected one of: mnist, fashion-mnist, cifar10, cifar100)")]
    UnknownDataset(String),
}

fn format_looked(looked: &[(PathBuf, String)]) -> String {
    if looked.is_empty() {
        return "  (no candidate location)".to_string();
    }
    looked
        .iter()
        .map(|(p, why)| format!("  - {}: {why}", p.display()))
        .collect::<Vec<_>>()
        .join("\n")
}

fn format_found(algorithm: &str, sha256: &Option<Box<str>>) -> String {
    match sha256 {
        Some(s) if algorithm != "sha256" => format!(" (sha256 {s})"),
        _ => String::new(),
    }
}

fn format_accepted(algorithm: &str, expected: &str, accepted: &[String]) -> String {
    if accepted.is_empty() {
        return format!("{algorithm} {expected}");
    }
    format!(
        "one of: {algorithm} {expected} (published), {}",
        accepted.join(", ")
    )
}

impl DatasetError {
    /// Shorthand for [`DatasetError::Io`].
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        DatasetError::Io {
            path: path.into(),
            source,
        }
    }

    /// Shorthand for [`DatasetError::Format`].
    pub(crate) fn format(
        file: impl Into<PathBuf>,
        offset: u64,
        expected: impl Into<String>,
    ) -> Self {
        DatasetError::Format {
            file: file.into(),
            offset,
            expected: expected.into(),
        }
    }
}
