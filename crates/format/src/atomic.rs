//! Atomic file replacement: the one implementation every deepcomp output goes through.
//!
//! [`write_atomic`] writes the bytes to a fresh temp file in the target's folder, fsyncs it, renames it
//! over the target and fsyncs the folder. A reader therefore sees the old file or the complete new one,
//! never a prefix. Before anything is written the target is checked: a path that exists must be a
//! regular file. A FIFO, a device, a socket, a folder or a symbolic link is refused with
//! [`ContainerError::NotRegularFile`] (renaming over it would silently replace the special file, or
//! the link, by a regular file; see `docs/DECISIONS.md`).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::ContainerError;

/// Temp-name counter: with the process id, no two calls (threads or processes) share a temp name.
static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// What a non-regular file is, in words (`None` for a regular file).
fn non_regular_kind(meta: &std::fs::Metadata) -> Option<String> {
    let ft = meta.file_type();
    if ft.is_file() {
        return None;
    }
    if ft.is_symlink() {
        return Some("a symbolic link".into());
    }
    if ft.is_dir() {
        return Some("a directory".into());
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if ft.is_fifo() {
            return Some("a named pipe (FIFO)".into());
        }
        if ft.is_char_device() {
            return Some("a character device".into());
        }
        if ft.is_block_device() {
            return Some("a block device".into());
        }
        if ft.is_socket() {
            return Some("a socket".into());
        }
    }
    Some("not a regular file".into())
}

/// Refuses a target that exists and is not a regular file (symbolic links are not followed).
fn check_target(path: &Path) -> Result<(), ContainerError> {
    match std::fs::symlink_metadata(path) {
        Ok(meta) => match non_regular_kind(&meta) {
            None => Ok(()),
            Some(mut what) => {
                if meta.file_type().is_symlink() {
                    if let Ok(to) = std::fs::read_link(path) {
                        what = format!("{what} to {}", to.display());
                    }
                }
                Err(ContainerError::NotRegularFile {
                    path: path.to_path_buf(),
                    what,
                })
            }
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(ContainerError::Io {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// Creates a new temp file next to `path`, named `.<name>.<pid>.<counter>.tmp`.
fn create_temp(dir: &Path, path: &Path) -> Result<(PathBuf, std::fs::File), ContainerError> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let pid = std::process::id();
    let mut last = None;
    // A stale temp file of a killed process with the same pid is skipped, not overwritten.
    for _ in 0..16 {
        let n = TEMP_COUNTER.fetch_add(1, Ordering::Relaxed);
        let tmp = dir.join(format!(".{name}.{pid}.{n}.tmp"));
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)
        {
            Ok(f) => return Ok((tmp, f)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => last = Some((tmp, e)),
            Err(source) => return Err(ContainerError::Io { path: tmp, source }),
        }
    }
    let (path, source) = last.expect("the loop ran at least once");
    Err(ContainerError::Io { path, source })
}

/// Writes `bytes` to `path` atomically: a new temp file in the same folder (unique per process and
/// per call), fsync, rename over `path`, then a best-effort fsync of the folder so the rename itself
/// persists. Missing parent folders are created.
///
/// Refuses, before writing anything, a `path` that exists and is not a regular file (FIFO, device,
/// socket, directory, symbolic link): [`ContainerError::NotRegularFile`] names the path. On every
/// failure the temp file is removed and the error names the path that failed.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), ContainerError> {
    write_atomic_with(path, bytes, || ())
}

/// [`write_atomic`] with a hook run between writing the temp file and the rename (tests use it to
/// make the last steps fail).
fn write_atomic_with(
    path: &Path,
    bytes: &[u8],
    before_rename: impl FnOnce(),
) -> Result<(), ContainerError> {
    check_target(path)?;
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|source| ContainerError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    let (tmp, mut f) = create_temp(dir, path)?;
    let res = (|| -> Result<(), ContainerError> {
        let io = |source| ContainerError::Io {
            path: tmp.clone(),
            source,
        };
        f.write_all(bytes).map_err(io)?;
        f.sync_all().map_err(io)?;
        before_rename();
        // Checked again just before the rename: the target may have appeared meanwhile.
        check_target(path)?;
        std::fs::rename(&tmp, path).map_err(|source| ContainerError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(())
    })();
    drop(f);
    if res.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn writes_replaces_and_leaves_no_temp() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("sub").join("a.bin");
        write_atomic(&p, b"one").unwrap();
        write_atomic(&p, b"two!").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"two!");
        assert_eq!(entries(&dir.path().join("sub")), vec!["a.bin"]);
    }

    #[test]
    fn temp_names_are_unique_per_call() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x");
        let (t1, _f1) = create_temp(dir.path(), &p).unwrap();
        let (t2, _f2) = create_temp(dir.path(), &p).unwrap();
        assert_ne!(t1, t2);
        let pid = std::process::id().to_string();
        assert!(t1.to_string_lossy().contains(&pid), "{}", t1.display());
    }

    #[test]
    fn concurrent_writes_to_one_path_never_collide() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("same.bin");
        std::thread::scope(|s| {
            for i in 0..8u8 {
                let p = &p;
                s.spawn(move || {
                    for _ in 0..20 {
                        write_atomic(p, &[i; 4096]).unwrap();
                    }
                });
            }
        });
        let got = std::fs::read(&p).unwrap();
        assert_eq!(got.len(), 4096);
        assert!(got.iter().all(|&b| b == got[0]), "a whole write, not a mix");
        assert_eq!(entries(dir.path()), vec!["same.bin"]);
    }

    #[test]
    fn directory_target_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().join("out");
        std::fs::create_dir(&d).unwrap();
        let e = write_atomic(&d, b"x").unwrap_err();
        assert!(matches!(e, ContainerError::NotRegularFile { .. }), "{e:?}");
        let msg = e.to_string();
        assert!(msg.contains("out") && msg.contains("directory"), "{msg}");
        assert!(d.is_dir());
        assert_eq!(entries(dir.path()), vec!["out"], "no temp file left");
    }

    #[cfg(unix)]
    #[test]
    fn fifo_target_is_refused_and_stays_a_fifo() {
        use std::os::unix::fs::FileTypeExt;
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("pipe.dcz");
        let st = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .expect("mkfifo runs");
        assert!(st.success());
        let e = write_atomic(&fifo, b"data").unwrap_err().to_string();
        assert!(e.contains("pipe.dcz") && e.contains("FIFO"), "{e}");
        let ft = std::fs::symlink_metadata(&fifo).unwrap().file_type();
        assert!(ft.is_fifo(), "still a FIFO");
        assert_eq!(entries(dir.path()), vec!["pipe.dcz"], "no temp file left");
    }

    #[cfg(unix)]
    #[test]
    fn dev_null_is_refused_and_stays_a_char_device() {
        use std::os::unix::fs::FileTypeExt;
        let null = Path::new("/dev/null");
        if !null.exists() {
            return;
        }
        let e = write_atomic(null, b"data").unwrap_err().to_string();
        assert!(
            e.contains("/dev/null") && e.contains("character device"),
            "{e}"
        );
        let ft = std::fs::symlink_metadata(null).unwrap().file_type();
        assert!(ft.is_char_device());
    }

    #[cfg(unix)]
    #[test]
    fn symlink_target_is_refused_and_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("real.dcz");
        std::fs::write(&real, b"old").unwrap();
        let link = dir.path().join("link.dcz");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        let e = write_atomic(&link, b"new").unwrap_err().to_string();
        assert!(
            e.contains("link.dcz") && e.contains("symbolic link") && e.contains("real.dcz"),
            "{e}"
        );
        assert!(std::fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink());
        assert_eq!(std::fs::read(&real).unwrap(), b"old");
        // A dangling link is refused too.
        let dangling = dir.path().join("dangling.dcz");
        std::os::unix::fs::symlink(dir.path().join("nowhere"), &dangling).unwrap();
        assert!(write_atomic(&dangling, b"x").is_err());
        assert!(!dir.path().join("nowhere").exists());
        assert_eq!(
            entries(dir.path()),
            vec!["dangling.dcz", "link.dcz", "real.dcz"]
        );
    }

    #[test]
    fn failure_removes_the_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        // A folder appears under the target's name after the temp file was written: the rename step
        // refuses it, and the temp file must be gone.
        let target = dir.path().join("late.bin");
        let e =
            write_atomic_with(&target, b"x", || std::fs::create_dir(&target).unwrap()).unwrap_err();
        assert!(matches!(e, ContainerError::NotRegularFile { .. }), "{e:?}");
        assert_eq!(entries(dir.path()), vec!["late.bin"], "temp file removed");
        // A parent that is a regular file: the folder cannot be created.
        let file = dir.path().join("f");
        std::fs::write(&file, b"").unwrap();
        let e = write_atomic(&file.join("child"), b"x").unwrap_err();
        assert!(matches!(e, ContainerError::Io { .. }), "{e:?}");
        assert_eq!(entries(dir.path()), vec!["f", "late.bin"]);
    }
}
