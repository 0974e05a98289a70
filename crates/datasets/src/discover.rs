//! Finding a data set on disk: explicit path, `DEEPCOMP_DATA`, the user cache, system folders.

use std::path::{Path, PathBuf};

use crate::cifar::CifarKind;
use crate::imagefolder::{is_tar_name, looks_like_image_folder, peek_archive, ArchiveKind};
use crate::{DatasetId, Manifest, Splits};

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

/// The IDX files of the splits to read (image file, label file).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct IdxFiles {
    pub train: Option<(PathBuf, PathBuf)>,
    pub test: Option<(PathBuf, PathBuf)>,
}

/// What was found, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Located {
    Idx(IdxFiles),
    CifarFolder(PathBuf),
    CifarTarball(PathBuf),
    /// An image folder, or a tar archive holding one.
    ImageFolder(PathBuf),
}

impl Located {
    /// The folder (or archive) the data set was found in.
    pub(crate) fn source(&self) -> PathBuf {
        match self {
            Located::Idx(f) => f
                .train
                .as_ref()
                .or(f.test.as_ref())
                .and_then(|p| p.0.parent())
                .map(Path::to_path_buf)
                .unwrap_or_default(),
            Located::CifarFolder(p) | Located::CifarTarball(p) | Located::ImageFolder(p) => {
                p.clone()
            }
        }
    }

    /// All single files it will read that a manifest may list (for checksum verification).
    pub(crate) fn files(&self) -> Vec<PathBuf> {
        match self {
            Located::Idx(f) => f
                .train
                .iter()
                .chain(&f.test)
                .flat_map(|(a, b)| [a.clone(), b.clone()])
                .collect(),
            Located::CifarFolder(_) => Vec::new(),
            Located::CifarTarball(p) => vec![p.clone()],
            Located::ImageFolder(p) => {
                if p.is_file() {
                    vec![p.clone()]
                } else {
                    Vec::new()
                }
            }
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

/// Checks whether `dir` holds the splits `splits` of the data set; returns the reason when it
/// does not. `manifest` supplies the names of local alternatives (image-folder archives).
pub(crate) fn probe(
    id: DatasetId,
    dir: &Path,
    splits: Splits,
    manifest: Option<&Manifest>,
) -> Result<Located, String> {
    if !dir.exists() {
        return Err("does not exist".into());
    }
    match id {
        DatasetId::Mnist | DatasetId::FashionMnist => {
            if !dir.is_dir() {
                return Err("not a directory".into());
            }
            let wanted: Vec<&str> = IDX_FILES
                .iter()
                .enumerate()
                .filter(|(i, _)| {
                    if *i < 2 {
                        splits.train()
                    } else {
                        splits.test()
                    }
                })
                .map(|(_, b)| *b)
                .collect();
            let found: Vec<Option<PathBuf>> =
                IDX_FILES.iter().map(|b| find_idx_file(dir, b)).collect();
            let missing: Vec<String> = IDX_FILES
                .iter()
                .zip(&found)
                .filter(|(b, f)| f.is_none() && wanted.contains(b))
                .map(|(b, _)| format!("{b}[.gz]"))
                .collect();
            if !missing.is_empty() {
                return Err(format!("missing {}", missing.join(", ")));
            }
            let pair = |i: usize| match (&found[i], &found[i + 1]) {
                (Some(a), Some(b)) => Some((a.clone(), b.clone())),
                _ => None,
            };
            Ok(Located::Idx(IdxFiles {
                train: if splits.train() { pair(0) } else { None },
                test: if splits.test() { pair(2) } else { None },
            }))
        }
        DatasetId::Cifar10 | DatasetId::Cifar100 => {
            let kind = id.cifar_kind().unwrap_or(CifarKind::Ten);
            if dir.is_file() {
                if !is_tar_name(dir) {
                    return Err(format!(
                        "a file, but not a .tar/.tar.gz/.tgz archive (such as {})",
                        kind.tarball()
                    ));
                }
                return match peek_archive(dir) {
                    Ok(ArchiveKind::CifarBinary) => Ok(Located::CifarTarball(dir.to_path_buf())),
                    Ok(ArchiveKind::ImageFolder) => Ok(Located::ImageFolder(dir.to_path_buf())),
                    // The published name: let the reader report exactly what is wrong.
                    Err(_) if dir.file_name().is_some_and(|n| n == kind.tarball()) => {
                        Ok(Located::CifarTarball(dir.to_path_buf()))
                    }
                    Err(why) => Err(why),
                };
            }
            let binary_why = match crate::cifar::find_extracted(kind, dir, splits) {
                Ok(folder) => return Ok(Located::CifarFolder(folder)),
                Err(why) => why,
            };
            let tarball = dir.join(kind.tarball());
            if tarball.is_file() {
                return Ok(Located::CifarTarball(tarball));
            }
            if looks_like_image_folder(dir) {
                return Ok(Located::ImageFolder(dir.to_path_buf()));
            }
            for alt in manifest.iter().flat_map(|m| &m.alternatives) {
                let p = dir.join(&alt.name);
                if p.is_file() {
                    return Ok(Located::ImageFolder(p));
                }
            }
            let alts: Vec<&str> = manifest
                .iter()
                .flat_map(|m| &m.alternatives)
                .map(|a| a.name.as_str())
                .collect();
            let alts = if alts.is_empty() {
                String::new()
            } else {
                format!(", no {}", alts.join(", no "))
            };
            Err(format!(
                "{binary_why}{alts}, and no image folder (train/, test/)"
            ))
        }
    }
}

/// Searches the candidates in order; on failure returns every place looked at and why.
pub(crate) fn locate(
    id: DatasetId,
    explicit: Option<&Path>,
    roots: &SearchRoots,
    splits: Splits,
    manifest: Option<&Manifest>,
) -> Result<Located, Vec<(PathBuf, String)>> {
    let mut looked = Vec::new();
    for (dir, label) in candidates(id, explicit, roots) {
        match probe(id, &dir, splits, manifest) {
            Ok(found) => return Ok(found),
            Err(why) => looked.push((dir, format!("{label}: {why}"))),
        }
    }
    Err(looked)
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
        let why = probe(DatasetId::Mnist, d, Splits::Both, None).unwrap_err();
        assert_eq!(why, "missing t10k-labels-idx1-ubyte[.gz]");
        // The training files alone are enough for a train-only load.
        assert!(probe(DatasetId::Mnist, d, Splits::TrainOnly, None).is_ok());
        std::fs::write(d.join("t10k-labels-idx1-ubyte.gz"), b"").unwrap();
        match probe(DatasetId::Mnist, d, Splits::Both, None).unwrap() {
            Located::Idx(f) => {
                let train = f.train.unwrap();
                assert!(train.1.ends_with("train-labels.idx1-ubyte"));
                assert!(f.test.unwrap().0.ends_with("t10k-images-idx3-ubyte"));
            }
            other => panic!("{other:?}"),
        }
    }
}
