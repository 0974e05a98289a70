//! Embeds the git commit this crate is built from as `DEEPCOMP_GIT_COMMIT` (`unknown` when the
//! sources are not a git checkout or git is not installed; never an error).

use std::path::Path;
use std::process::Command;

fn git(dir: &Path, args: &[&str]) -> Option<String> {
    let out = Command::new("git")
        .args(args)
        .current_dir(dir)
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let s = String::from_utf8(out.stdout).ok()?.trim().to_string();
    (!s.is_empty()).then_some(s)
}

fn main() {
    let dir = std::env::var_os("CARGO_MANIFEST_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| ".".into());
    let commit = git(&dir, &["rev-parse", "HEAD"])
        .filter(|c| c.len() >= 7 && c.chars().all(|ch| ch.is_ascii_hexdigit()))
        .unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=DEEPCOMP_GIT_COMMIT={commit}");
    // Re-run when HEAD moves: the worktree's HEAD and its reflog (written on every commit and checkout).
    for p in ["HEAD", "logs/HEAD"] {
        if let Some(path) = git(&dir, &["rev-parse", "--git-path", p]) {
            let path = dir.join(path);
            if path.exists() {
                println!("cargo:rerun-if-changed={}", path.display());
            }
        }
    }
    println!("cargo:rerun-if-changed=build.rs");
}
