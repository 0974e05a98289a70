//! Data-set manifests: where each file is published, its digests, licence and citation.
//!
//! The manifests live in the repository's top-level `datasets/` folder (one TOML file per
//! data set) and are embedded in the binary with `include_str!`, so discovery and download
//! work from any working directory.

use std::fs::File;
use std::io::Read;
use std::path::Path;

use serde::Deserialize;
use sha2::Digest as _;

use crate::error::DatasetError;
use crate::DatasetId;

/// A parsed manifest (`datasets/<name>.toml`).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Descriptive information.
    pub dataset: DatasetInfo,
    /// The files that make up the data set, as published.
    #[serde(rename = "file")]
    pub files: Vec<ManifestFile>,
    /// Other forms of the data set that are recognized locally but never downloaded
    /// (`[[alternative]]` tables), e.g. an image-folder archive of CIFAR-10.
    #[serde(default, rename = "alternative")]
    pub alternatives: Vec<Alternative>,
}

/// A local-only form of a data set (`[[alternative]]` in a manifest): discovery looks for a
/// file of this name in each candidate folder, and with [`crate::LoadOptions::verify_checksums`]
/// a file of this name must have this SHA-256.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Alternative {
    /// File name (no directory part).
    pub name: String,
    /// What it is and how it relates to the published data set.
    pub description: String,
    /// Its layout; only `"image-folder"` (see [`crate::read_image_folder`]) exists.
    pub layout: String,
    /// Size in bytes, when known.
    #[serde(default)]
    pub size: Option<u64>,
    /// Its SHA-256 (lowercase hex).
    pub sha256: String,
}

impl Alternative {
    /// Checks `path` against [`Alternative::sha256`].
    pub fn verify(&self, path: &Path) -> Result<(), DatasetError> {
        let d = digest_file(path)?;
        if d.sha256 == self.sha256 {
            return Ok(());
        }
        Err(DatasetError::Checksum {
            file: path.to_path_buf(),
            algorithm: "sha256",
            expected: self.sha256.clone(),
            actual: d.sha256,
            actual_sha256: None,
            accepted: Box::default(),
        })
    }
}

/// Descriptive part of a manifest.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DatasetInfo {
    /// Short name, the same as [`DatasetId::name`].
    pub id: String,
    /// Human-readable title.
    pub title: String,
    /// Project page.
    pub homepage: String,
    /// Licence or terms of use.
    pub licence: String,
    /// Where the licence text is published, if anywhere.
    #[serde(default)]
    pub licence_url: Option<String>,
    /// How to cite the data set (BibTeX).
    pub citation: String,
    /// Free-form remarks (provenance of the digests, mirrors, ...).
    #[serde(default)]
    pub notes: Option<String>,
}

/// One published file.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ManifestFile {
    /// File name (no directory part); also the name it is stored under locally.
    pub name: String,
    /// Download locations, tried in order.
    pub urls: Vec<String>,
    /// Size in bytes of the published file, when known.
    #[serde(default)]
    pub size: Option<u64>,
    /// SHA-256 of the published file (lowercase hex), when known.
    #[serde(default)]
    pub sha256: Option<String>,
    /// Who publishes or how we obtained `sha256`.
    #[serde(default)]
    pub sha256_source: Option<String>,
    /// MD5 of the published file (lowercase hex), when known.
    #[serde(default)]
    pub md5: Option<String>,
    /// Who publishes `md5`.
    #[serde(default)]
    pub md5_source: Option<String>,
    /// Other byte-level copies known to hold the same data (e.g. a distribution's
    /// re-compressed file); a local file matching one of them is accepted too.
    #[serde(default)]
    pub known_copies: Vec<KnownCopy>,
}

/// A known-good copy of a file that differs byte-wise from the published one.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct KnownCopy {
    /// Where this copy comes from.
    pub description: String,
    /// Its SHA-256 (lowercase hex).
    pub sha256: String,
}

/// Which digest matched in [`ManifestFile::verify`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verified {
    /// The published SHA-256.
    Sha256,
    /// The published MD5 (used only when no SHA-256 is published).
    Md5,
    /// The SHA-256 of the known copy with this description.
    KnownCopy(String),
    /// The SHA-256 of the [`Alternative`] with this description.
    Alternative(String),
}

const FASHION_MNIST: &str = include_str!("../../../datasets/fashion-mnist.toml");
const MNIST: &str = include_str!("../../../datasets/mnist.toml");
const CIFAR10: &str = include_str!("../../../datasets/cifar10.toml");
const CIFAR100: &str = include_str!("../../../datasets/cifar100.toml");

fn is_hex(s: &str, len: usize) -> bool {
    s.len() == len
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

impl Manifest {
    /// The manifest shipped with this crate for `id`.
    pub fn embedded(id: DatasetId) -> Result<Manifest, DatasetError> {
        let text = match id {
            DatasetId::Mnist => MNIST,
            DatasetId::FashionMnist => FASHION_MNIST,
            DatasetId::Cifar10 => CIFAR10,
            DatasetId::Cifar100 => CIFAR100,
        };
        Manifest::parse(&format!("datasets/{}.toml", id.name()), text)
    }

    /// Parses and validates manifest text; `name` is used in error messages.
    ///
    /// Checks: at least one file; each file has a plain name, at least one `http(s)` URL and
    /// at least one digest; digests are lowercase hex of the right length.
    pub fn parse(name: &str, text: &str) -> Result<Manifest, DatasetError> {
        let err = |message: String| DatasetError::Manifest {
            name: name.to_string(),
            message,
        };
        let m: Manifest = toml::from_str(text).map_err(|e| err(e.to_string()))?;
        if m.files.is_empty() {
            return Err(err("no [[file]] entries".into()));
        }
        for f in &m.files {
            if f.name.is_empty() || f.name.contains(['/', '\\']) || f.name.starts_with('.') {
                return Err(err(format!(
                    "file name {:?} must be a plain file name",
                    f.name
                )));
            }
            if f.urls.is_empty() {
                return Err(err(format!("file {}: no urls", f.name)));
            }
            if let Some(u) = f
                .urls
                .iter()
                .find(|u| !(u.starts_with("http://") || u.starts_with("https://")))
            {
                return Err(err(format!("file {}: url {u:?} is not http(s)", f.name)));
            }
            if let Some(s) = &f.sha256 {
                if !is_hex(s, 64) {
                    return Err(err(format!(
                        "file {}: sha256 {s:?} is not 64 lowercase hex digits",
                        f.name
                    )));
                }
            }
            if let Some(s) = &f.md5 {
                if !is_hex(s, 32) {
                    return Err(err(format!(
                        "file {}: md5 {s:?} is not 32 lowercase hex digits",
                        f.name
                    )));
                }
            }
            for c in &f.known_copies {
                if !is_hex(&c.sha256, 64) {
                    return Err(err(format!(
                        "file {}: known copy sha256 {:?} is not 64 lowercase hex digits",
                        f.name, c.sha256
                    )));
                }
            }
            if f.sha256.is_none() && f.md5.is_none() {
                return Err(err(format!("file {}: neither sha256 nor md5", f.name)));
            }
        }
        for a in &m.alternatives {
            if a.name.is_empty() || a.name.contains(['/', '\\']) || a.name.starts_with('.') {
                return Err(err(format!(
                    "alternative name {:?} must be a plain file name",
                    a.name
                )));
            }
            if a.layout != "image-folder" {
                return Err(err(format!(
                    "alternative {}: layout {:?} is not \"image-folder\"",
                    a.name, a.layout
                )));
            }
            if !is_hex(&a.sha256, 64) {
                return Err(err(format!(
                    "alternative {}: sha256 {:?} is not 64 lowercase hex digits",
                    a.name, a.sha256
                )));
            }
        }
        Ok(m)
    }

    /// The entry for the file called `name`, if listed.
    pub fn file(&self, name: &str) -> Option<&ManifestFile> {
        self.files.iter().find(|f| f.name == name)
    }

    /// The alternative called `name`, if listed.
    pub fn alternative(&self, name: &str) -> Option<&Alternative> {
        self.alternatives.iter().find(|a| a.name == name)
    }

    /// Checks a local file against the manifest entry of the same file name (published file
    /// or alternative). Returns `Ok(None)` when the manifest lists no such name.
    pub fn verify_local(&self, path: &Path) -> Result<Option<Verified>, DatasetError> {
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        if let Some(f) = self.file(name) {
            return f.verify(path).map(Some);
        }
        if let Some(a) = self.alternative(name) {
            a.verify(path)?;
            return Ok(Some(Verified::Alternative(a.description.clone())));
        }
        Ok(None)
    }
}

/// SHA-256 and MD5 of a file, both lowercase hex.
pub(crate) struct FileDigests {
    pub sha256: String,
    pub md5: String,
}

/// Hashes a file with both SHA-256 and MD5 in one pass.
pub(crate) fn digest_file(path: &Path) -> Result<FileDigests, DatasetError> {
    let mut f = File::open(path).map_err(|e| DatasetError::io(path, e))?;
    let mut sha = sha2::Sha256::new();
    let mut md5 = md5::Md5::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = match f.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(DatasetError::io(path, e)),
        };
        sha.update(&buf[..n]);
        md5.update(&buf[..n]);
    }
    Ok(FileDigests {
        sha256: hex::encode(sha.finalize()),
        md5: hex::encode(md5.finalize()),
    })
}

impl ManifestFile {
    /// Checks `path` against this entry: the published SHA-256 when there is one, else the
    /// published MD5; a match with any known copy's SHA-256 is accepted as well. A mismatch is
    /// a [`DatasetError::Checksum`] naming the file, its digest and every accepted digest.
    pub fn verify(&self, path: &Path) -> Result<Verified, DatasetError> {
        let d = digest_file(path)?;
        if let Some(c) = self.known_copies.iter().find(|c| c.sha256 == d.sha256) {
            return Ok(Verified::KnownCopy(c.description.clone()));
        }
        let accepted: Vec<String> = self
            .known_copies
            .iter()
            .map(|c| format!("sha256 {} ({})", c.sha256, c.description))
            .collect();
        let mismatch =
            |algorithm: &'static str, expected: &str, actual: String| DatasetError::Checksum {
                file: path.to_path_buf(),
                algorithm,
                expected: expected.to_string(),
                actual,
                actual_sha256: (algorithm != "sha256" && !accepted.is_empty())
                    .then(|| d.sha256.as_str().into()),
                accepted: accepted.clone().into(),
            };
        match (&self.sha256, &self.md5) {
            (Some(want), _) if *want == d.sha256 => Ok(Verified::Sha256),
            (Some(want), _) => Err(mismatch("sha256", want, d.sha256.clone())),
            (None, Some(want)) if *want == d.md5 => Ok(Verified::Md5),
            (None, Some(want)) => Err(mismatch("md5", want, d.md5.clone())),
            (None, None) => Err(DatasetError::Manifest {
                name: self.name.clone(),
                message: "neither sha256 nor md5".into(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_embedded_manifests_parse_and_match_their_id() {
        for id in DatasetId::ALL {
            let m = Manifest::embedded(id).unwrap();
            assert_eq!(m.dataset.id, id.name());
            assert!(!m.dataset.citation.trim().is_empty());
            assert!(!m.dataset.licence.trim().is_empty());
            for f in &m.files {
                assert!(f.urls.iter().all(|u| u.ends_with(&f.name)), "{}", f.name);
            }
        }
    }

    #[test]
    fn embedded_manifests_list_the_files_the_reader_needs() {
        for id in [DatasetId::Mnist, DatasetId::FashionMnist] {
            let m = Manifest::embedded(id).unwrap();
            for base in crate::discover::IDX_FILES {
                assert!(m.file(&format!("{base}.gz")).is_some(), "{id}: {base}");
            }
        }
        assert!(Manifest::embedded(DatasetId::Cifar10)
            .unwrap()
            .file("cifar-10-binary.tar.gz")
            .is_some());
        assert!(Manifest::embedded(DatasetId::Cifar100)
            .unwrap()
            .file("cifar-100-binary.tar.gz")
            .is_some());
    }

    #[test]
    fn invalid_manifests_are_rejected_with_reasons() {
        let head = "[dataset]\nid='x'\ntitle='x'\nhomepage='x'\nlicence='x'\ncitation='x'\n";
        let cases = [
            ("", "missing field"),
            (head, "missing field `file`"),
            ("[[file]]\nname='a'\nurls=['http://h/a']\n", "neither sha256 nor md5"),
            ("[[file]]\nname='a'\nurls=['ftp://h/a']\nmd5='00000000000000000000000000000000'\n", "not http"),
            ("[[file]]\nname='a/b'\nurls=['http://h/a']\nmd5='00000000000000000000000000000000'\n", "plain file name"),
            ("[[file]]\nname='a'\nurls=['http://h/a']\nmd5='0000'\n", "32 lowercase"),
            ("[[file]]\nname='a'\nurls=['http://h/a']\nsha256='ABCD'\n", "64 lowercase"),
            ("[[file]]\nname='a'\nurls=[]\nmd5='00000000000000000000000000000000'\n", "no urls"),
            ("[[file]]\nname='a'\nurls=['http://h/a']\nmd5='00000000000000000000000000000000'\nbogus=1\n", "unknown field"),
        ];
        for (i, (body, why)) in cases.iter().enumerate() {
            let text = if i == 0 {
                String::new()
            } else if i == 1 {
                head.to_string()
            } else {
                format!("{head}{body}")
            };
            let e = Manifest::parse("t.toml", &text).unwrap_err().to_string();
            assert!(e.contains("t.toml") && e.contains(why), "case {i}: {e}");
        }
    }

    #[test]
    fn verify_prefers_sha256_then_md5_then_known_copies() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        std::fs::write(&p, b"hello").unwrap();
        let sha = "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824";
        let md5 = "5d41402abc4b2a76b9719d911017c592";
        let other = "0".repeat(64);
        let mut f = ManifestFile {
            name: "f".into(),
            urls: vec!["http://h/f".into()],
            size: None,
            sha256: Some(sha.into()),
            sha256_source: None,
            md5: Some("f".repeat(32)),
            md5_source: None,
            known_copies: vec![],
        };
        // SHA-256 present: it decides (the wrong MD5 is not consulted).
        assert_eq!(f.verify(&p).unwrap(), Verified::Sha256);
        f.sha256 = Some(other.clone());
        assert!(matches!(
            f.verify(&p).unwrap_err(),
            DatasetError::Checksum {
                algorithm: "sha256",
                ..
            }
        ));
        f.sha256 = None;
        assert!(matches!(
            f.verify(&p).unwrap_err(),
            DatasetError::Checksum {
                algorithm: "md5",
                ..
            }
        ));
        f.md5 = Some(md5.into());
        assert_eq!(f.verify(&p).unwrap(), Verified::Md5);
        f.md5 = Some("0".repeat(32));
        f.known_copies.push(KnownCopy {
            description: "copy".into(),
            sha256: sha.into(),
        });
        assert_eq!(f.verify(&p).unwrap(), Verified::KnownCopy("copy".into()));
    }
}
