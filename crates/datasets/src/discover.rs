//! Finding a data set on disk: explicit path, `DEEPCOMP_DATA`, the user cache, system folders.

use std::path::{Path, PathBuf};

use crate::cifar::CifarKind;
use crate::DatasetId;

/// Base names of the four IDX files of the MNIST family (`.gz` or raw).
pub(crate) const IDX_FILES: [&str; 4] = [
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
];

/// The roots searched when no explicit path is given, each holding one folder per data set
/// (named like [`DatasetId::name`]).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SearchRoots {
    /// `$DEEPCOMP_DATA`, when set and non-empty.
    pub data_env: Option<PathBuf>,
    /// The deepcomp cache (`$XDG_CACHE_HOME/deepcomp`, else `~/.cache/deepcomp` on Linux);
    /// downloads go here.
    pub cache: Option<PathBuf>,
    /// System-wide folders, in order (`/usr/share/datasets` is where Debian's
    /// `dataset-fashion-mnist` installs `fashion-mnist/`).
    pub system: Vec<PathBuf>,
}

impl SearchRoots {
    /// The roots this process's environment designates.
    pub fn from_env() -> Self {
        let data_env = std::env::var_os("DEEPCOMP_DATA")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from);
        let cache = dirs::cache_dir().map(|c| c.join("deepcomp"));
        SearchRoots {
            data_env,
            cache,
            system: vec![
                PathBuf::from("/usr/share/datasets"),
                PathBuf::from("/usr/local/share/datasets"),
            ],
        }
    }
}

/// The four IDX files of a split pair.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct IdxFiles {
    pub train_images: PathBuf,
    pub train_labels: PathBuf,
    pub test_images: PathBuf,
    pub test_labels: PathBuf,
}

/// What was found, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Located {
    Idx(IdxFiles),
    CifarFolder(PathBuf),
    CifarTarball(PathBuf),
}

impl Located {
    /// The folder (or archive) the data set was found in.
    pub(crate) fn source(&self) -> PathBuf {
        match self {
            Located::Idx(f) => f
                .train_images
                .parent()
                .map(Path::to_path_buf)
                .unwrap_or_default(),
            Located::CifarFolder(p) | Located::CifarTarball(p) => p.clone(),
        }
    }

    /// All files it will read (for checksum verification).
    pub(crate) fn files(&self) -> Vec<PathBuf> {
        match self {
            Located::Idx(f) => vec![
                f.train_images.clone(),
                f.train_labels.clone(),
                f.test_images.clone(),
                f.test_labels.clone(),
            ],
            Located::CifarFolder(_) => Vec::new(),
            Located::CifarTarball(p) => vec![p.clone()],
        }
    }
}

/// Finds one IDX file by base name: `<base>.gz`, `<base>`, or the `train-images.idx3-ubyte`
/// spelling some extracted copies use.
fn find_idx_file(dir: &Path, base: &str) -> Option<PathBuf> {
    let dotted = base.replacen("-idx", ".idx", 1);
    [format!("{base}.gz"), base.to_string(), dotted]
        .into_iter()
        .map(|n| dir.join(n))
        .find(|p| p.is_file())
}

/// Checks whether `dir` holds the data set; returns the reason when it does not.
pub(crate) fn probe(id: DatasetId, dir: &Path) -> Result<Located, String> {
    if !dir.exists() {
        return Err("does not exist".into());
    }
    match id {
        DatasetId::Mnist | DatasetId::FashionMnist => {
            if !dir.is_dir() {
                return Err("not a directory".into());
            }
            let found: Vec<Option<PathBuf>> =
                IDX_FILES.iter().map(|b| find_idx_file(dir, b)).collect();
            match found.as_slice() {
                [Some(a), Some(b), Some(c), Some(d)] => Ok(Located::Idx(IdxFiles {
                    train_images: a.clone(),
                    train_labels: b.clone(),
                    test_images: c.clone(),
                    test_labels: d.clone(),
                })),
                _ => {
                    let missing: Vec<String> = IDX_FILES
                        .iter()
                        .zip(&found)
                        .filter(|(_, f)| f.is_none())
                        .map(|(b, _)| format!("{b}[.gz]"))
                        .collect();
                    Err(format!("missing {}", missing.join(", ")))
                }
            }
        }
        DatasetId::Cifar10 | DatasetId::Cifar100 => {
            let kind = id.cifar_kind().unwrap_or(CifarKind::Ten);
            if dir.is_file() {
                return if dir.to_string_lossy().ends_with(".tar.gz") {
                    Ok(Located::CifarTarball(dir.to_path_buf()))
                } else {
                    Err(format!("a file, but not a {}", kind.tarball()))
                };
            }
            match crate::cifar::find_extracted(kind, dir) {
                Ok(folder) => Ok(Located::CifarFolder(folder)),
                Err(why) => {
                    let tarball = dir.join(kind.tarball());
                    if tarball.is_file() {
                        Ok(Located::CifarTarball(tarball))
                    } else {
                        Err(why)
                    }
                }
            }
        }
    }
}

/// The candidate folders, in search order, with a label for each (shown in errors).
pub(crate) fn candidates(
    id: DatasetId,
    explicit: Option<&Path>,
    roots: &SearchRoots,
) -> Vec<(PathBuf, &'static str)> {
    let name = id.name();
    if let Some(p) = explicit {
        return vec![
            (p.to_path_buf(), "explicit path"),
            (p.join(name), "explicit path"),
        ];
    }
    let mut out = Vec::new();
    if let Some(d) = &roots.data_env {
        out.push((d.join(name), "DEEPCOMP_DATA"));
    }
    if let Some(c) = &roots.cache {
        out.push((c.join(name), "user cache"));
    }
    for s in &roots.system {
        out.push((s.join(name), "system"));
    }
    out
}

/// Searches the candidates in order; on failure returns every place looked at and why.
pub(crate) fn locate(
    id: DatasetId,
    explicit: Option<&Path>,
    roots: &SearchRoots,
) -> Result<Located, Vec<(PathBuf, String)>> {
    let mut looked = Vec::new();
    for (dir, label) in candidates(id, explicit, roots) {
        match probe(id, &dir) {
            Ok(found) => return Ok(found),
            Err(why) => looked.push((dir, format!("{label}: {why}"))),
        }
    }
    Err(looked)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn candidate_order_and_explicit_override() {
        let roots = SearchRoots {
            data_env: Some("/env".into()),
            cache: Some("/cache/deepcomp".into()),
            system: vec!["/sys1".into(), "/sys2".into()],
        };
        let c: Vec<PathBuf> = candidates(DatasetId::FashionMnist, None, &roots)
            .into_iter()
            .map(|c| c.0)
            .collect();
        let want: Vec<PathBuf> = [
            "/env/fashion-mnist",
            "/cache/deepcomp/fashion-mnist",
            "/sys1/fashion-mnist",
            "/sys2/fashion-mnist",
        ]
        .iter()
        .map(PathBuf::from)
        .collect();
        assert_eq!(c, want);
        let c = candidates(DatasetId::Cifar10, Some(Path::new("/x")), &roots);
        assert_eq!(c.len(), 2);
        assert_eq!(c[1].0, PathBuf::from("/x/cifar10"));
    }

    #[test]
    fn idx_file_name_variants() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::write(d.join("train-images-idx3-ubyte.gz"), b"").unwrap();
        std::fs::write(d.join("train-labels.idx1-ubyte"), b"").unwrap();
        std::fs::write(d.join("t10k-images-idx3-ubyte"), b"").unwrap();
        let why = probe(DatasetId::Mnist, d).unwrap_err();
        assert_eq!(why, "missing t10k-labels-idx1-ubyte[.gz]");
        std::fs::write(d.join("t10k-labels-idx1-ubyte.gz"), b"").unwrap();
        match probe(DatasetId::Mnist, d).unwrap() {
            Located::Idx(f) => {
                assert!(f.train_labels.ends_with("train-labels.idx1-ubyte"));
                assert!(f.test_images.ends_with("t10k-images-idx3-ubyte"));
            }
            other => panic!("{other:?}"),
        }
    }
}
