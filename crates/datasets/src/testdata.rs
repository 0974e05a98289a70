//! Finding the real data sets that tests and measurements use, kept outside the repository.
//!
//! The folder is `$DEEPCOMP_TEST_DATA` when set, else `../shared/data` beside the workspace
//! root (the first ancestor of the calling crate's `CARGO_MANIFEST_DIR` whose `Cargo.toml`
//! has a `[workspace]` table). A test asks for one file or folder in it:
//!
//! ```no_run
//! # fn t() {
//! let Some(path) = deepcomp_datasets::shared_data_file(env!("CARGO_MANIFEST_DIR"), "mnist")
//!     .unwrap() // absent under CI: the test fails with the places looked at
//! else {
//!     return; // absent elsewhere: a loud note on stderr, the test passes
//! };
//! # let _ = path; }
//! ```
//!
//! Absence is a failure under CI (`CI` set to anything but empty, `0` or `false`), and
//! otherwise a skip announced on stderr, so a developer without the data still gets a green
//! run that says what it did not test.

use std::path::{Path, PathBuf};

use crate::error::DatasetError;

fn workspace_root(manifest_dir: &Path) -> Option<PathBuf> {
    manifest_dir
        .ancestors()
        .find(|d| {
            std::fs::read_to_string(d.join("Cargo.toml"))
                .is_ok_and(|t| t.lines().any(|l| l.trim() == "[workspace]"))
        })
        .map(Path::to_path_buf)
}

/// The shared data folder for the crate at `manifest_dir` (pass `env!("CARGO_MANIFEST_DIR")`):
/// `$DEEPCOMP_TEST_DATA` when set and non-empty, else `<workspace root>/../shared/data`.
/// The folder may not exist; `None` when no workspace root is found.
pub fn shared_data_dir(manifest_dir: &str) -> Option<PathBuf> {
    if let Some(d) = std::env::var_os("DEEPCOMP_TEST_DATA").filter(|v| !v.is_empty()) {
        return Some(PathBuf::from(d));
    }
    workspace_root(Path::new(manifest_dir)).map(|r| r.join("..").join("shared").join("data"))
}

fn under_ci() -> bool {
    std::env::var("CI")
        .is_ok_and(|v| !(v.is_empty() || v == "0" || v.eq_ignore_ascii_case("false")))
}

/// `rel` (a file or folder) inside [`shared_data_dir`]: `Ok(Some(path))` when it exists;
/// when it does not, an error under CI (naming the path and how to provide it) and otherwise
/// `Ok(None)` after printing a loud note on stderr that the caller is skipped.
pub fn shared_data_file(manifest_dir: &str, rel: &str) -> Result<Option<PathBuf>, DatasetError> {
    let dir = shared_data_dir(manifest_dir);
    let path = dir.as_ref().map(|d| d.join(rel));
    if let Some(p) = &path {
        if p.exists() {
            return Ok(Some(p.clone()));
        }
    }
    let where_ = path.as_ref().map_or_else(
        || format!("no workspace root above {manifest_dir}"),
        |p| p.display().to_string(),
    );
    let why = format!(
        "real test data {rel} not found at {where_} (set DEEPCOMP_TEST_DATA to the folder holding it, or put it in ../shared/data beside the workspace)"
    );
    if under_ci() {
        return Err(DatasetError::NotFound {
            dataset: rel.to_string(),
            looked: vec![(path.unwrap_or_else(|| PathBuf::from(manifest_dir)), why)],
            hint: "CI must provide the shared test data.".into(),
        });
    }
    eprintln!("\n=== SKIPPED: {why} ===\n");
    Ok(None)
}
