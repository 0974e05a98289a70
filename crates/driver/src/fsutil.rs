//! File helpers: every write goes to a temp file in the same folder and is renamed into place.

use std::path::{Path, PathBuf};

use serde::{de::DeserializeOwned, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{DriverError, Result};

/// Creates `dir` and its parents.
pub fn create_dir_all(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| DriverError::io(dir, e))
}

/// Writes `bytes` to `path` atomically with [`deepcomp_format::write_atomic`], the one implementation
/// (temp file unique per process and call in the same folder, fsync, rename, folder fsync; a target that
/// exists and is not a regular file is refused; the temp file is removed on every failure). On failure
/// the path that failed is returned with the error.
pub fn write_atomic_raw(
    path: &Path,
    bytes: &[u8],
) -> std::result::Result<(), (PathBuf, std::io::Error)> {
    use deepcomp_format::ContainerError;
    deepcomp_format::write_atomic(path, bytes).map_err(|e| match e {
        ContainerError::Io { path, source } => (path, source),
        ContainerError::NotRegularFile { path, what } => (
            path,
            std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("refusing to write: it is {what}, not a regular file"),
            ),
        ),
        other => (path.to_path_buf(), std::io::Error::other(other.to_string())),
    })
}

/// Writes `bytes` to `path` atomically; see [`write_atomic_raw`].
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    write_atomic_raw(path, bytes).map_err(|(p, e)| DriverError::io(&p, e))
}

/// Refuses an `output` that is the same file as `input` (same canonical path, or on unix the same
/// device and inode, e.g. through a hard link), with an error naming both. An `output` that does not
/// exist yet is never the input.
pub fn ensure_distinct(input: &Path, output: &Path) -> Result<()> {
    let same = |reason: &str| {
        DriverError::msg(format!(
            "output {} is the input file {} ({reason}); choose another output path",
            output.display(),
            input.display()
        ))
    };
    let (Ok(out_meta), Ok(in_meta)) = (std::fs::metadata(output), std::fs::metadata(input)) else {
        return Ok(());
    };
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        if (out_meta.dev(), out_meta.ino()) == (in_meta.dev(), in_meta.ino()) {
            return Err(same("same device and inode"));
        }
    }
    let _ = (&out_meta, &in_meta);
    match (std::fs::canonicalize(input), std::fs::canonicalize(output)) {
        (Ok(a), Ok(b)) if a == b => Err(same("same canonical path")),
        _ => Ok(()),
    }
}

/// Writes `value` as pretty JSON, atomically.
pub fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    let text = serde_json::to_string_pretty(value).map_err(|e| DriverError::Json {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    write_atomic(path, text.as_bytes())
}

/// Reads JSON from `path`; `None` when the file does not exist.
pub fn read_json<T: DeserializeOwned>(path: &Path) -> Result<Option<T>> {
    match std::fs::read_to_string(path) {
        Ok(text) => serde_json::from_str(&text)
            .map(Some)
            .map_err(|e| DriverError::Json {
                path: path.to_path_buf(),
                message: e.to_string(),
            }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(DriverError::io(path, e)),
    }
}

/// SHA-256 of a file, hex.
pub fn sha256_file(path: &Path) -> Result<String> {
    let bytes = std::fs::read(path).map_err(|e| DriverError::io(path, e))?;
    Ok(hex::encode(Sha256::digest(&bytes)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_replaces_and_leaves_no_temp() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.json");
        write_json(&p, &vec![1, 2, 3]).unwrap();
        write_json(&p, &vec![4]).unwrap();
        let v: Option<Vec<i32>> = read_json(&p).unwrap();
        assert_eq!(v, Some(vec![4]));
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 1, "no temp file left: {names:?}");
        assert_eq!(
            read_json::<Vec<i32>>(&dir.path().join("missing.json")).unwrap(),
            None
        );
    }

    #[test]
    fn special_targets_are_refused_with_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().join("a-folder");
        std::fs::create_dir(&d).unwrap();
        let e = write_atomic(&d, b"x").unwrap_err().to_string();
        assert!(e.contains("a-folder") && e.contains("directory"), "{e}");
        #[cfg(unix)]
        {
            use std::os::unix::fs::FileTypeExt;
            let fifo = dir.path().join("fifo.json");
            assert!(std::process::Command::new("mkfifo")
                .arg(&fifo)
                .status()
                .unwrap()
                .success());
            let e = write_json(&fifo, &1).unwrap_err().to_string();
            assert!(e.contains("fifo.json") && e.contains("FIFO"), "{e}");
            assert!(std::fs::symlink_metadata(&fifo)
                .unwrap()
                .file_type()
                .is_fifo());
        }
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 2);
    }

    #[test]
    fn output_equal_to_input_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a.dcz");
        std::fs::write(&a, b"x").unwrap();
        let e = ensure_distinct(&a, &a).unwrap_err().to_string();
        assert!(e.matches("a.dcz").count() == 2, "{e}");
        // The same file under another spelling.
        let other = dir.path().join(".").join("a.dcz");
        assert!(ensure_distinct(&a, &other).is_err());
        #[cfg(unix)]
        {
            let hard = dir.path().join("hard.dcz");
            std::fs::hard_link(&a, &hard).unwrap();
            let e = ensure_distinct(&a, &hard).unwrap_err().to_string();
            assert!(e.contains("hard.dcz") && e.contains("inode"), "{e}");
        }
        let b = dir.path().join("b.dcz");
        ensure_distinct(&a, &b).unwrap();
        std::fs::write(&b, b"x").unwrap();
        ensure_distinct(&a, &b).unwrap();
    }

    #[test]
    fn bad_json_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("bad.json");
        std::fs::write(&p, "{nope").unwrap();
        let e = read_json::<Vec<i32>>(&p).unwrap_err().to_string();
        assert!(e.contains("bad.json"), "{e}");
    }
}
