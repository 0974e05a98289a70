//! Verified downloads: HTTP(S) from a manifest's URLs into `<name>.part`, renamed to `<name>`
//! only after its digest matched.
//!
//! * A body that breaks off is resumed with an HTTP `Range` request (a bounded number of
//!   times); a server that ignores `Range` makes the download restart from byte 0.
//! * A `.part` left by a killed process is resumed the same way on the next call; if the
//!   completed file then fails verification it is deleted and downloaded once more from scratch.
//! * Whatever the failure (HTTP error, wrong digest, truncated body), the call that observes it
//!   deletes the `.part`: an error never leaves a partial file behind.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};

use crate::error::DatasetError;
use crate::manifest::{Manifest, ManifestFile};

/// Downloads manifest files with resume and verification.
#[derive(Debug, Clone)]
pub struct Downloader {
    agent: ureq::Agent,
    progress: bool,
    attempts: u32,
}

/// Outcome of one HTTP exchange.
enum Attempt {
    /// The body arrived completely (as far as the server said).
    Complete,
    /// The body broke off; resuming may help.
    Interrupted(String),
}

impl Downloader {
    /// A downloader using the environment's proxy settings (`HTTP_PROXY`, ...), with a progress
    /// bar on stderr when `progress` is true.
    pub fn new(progress: bool) -> Self {
        Self::build(progress, true)
    }

    /// A downloader that ignores proxy settings (for loopback servers in tests).
    pub fn direct(progress: bool) -> Self {
        Self::build(progress, false)
    }

    fn build(progress: bool, env_proxy: bool) -> Self {
        let mut cfg = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_connect(Some(Duration::from_secs(30)))
            .timeout_recv_response(Some(Duration::from_secs(60)))
            // A stalled connection fails after 60 s without data (then resumes); the whole
            // body has no deadline since archives are large and links may be slow.
            .timeout_per_read(Some(Duration::from_secs(60)))
            .user_agent(concat!("deepcomp-datasets/", env!("CARGO_PKG_VERSION")));
        if !env_proxy {
            cfg = cfg.proxy(None);
        }
        Downloader {
            agent: ureq::Agent::new_with_config(cfg.build()),
            progress,
            attempts: 4,
        }
    }

    /// How many HTTP requests one URL may take (resumes after an interrupted body included);
    /// at least 1. The default is 4.
    pub fn with_attempts(mut self, attempts: u32) -> Self {
        self.attempts = attempts.max(1);
        self
    }

    /// Downloads every file of `manifest` into `dir` (created if needed); files already there
    /// and verified are kept. Returns the paths in manifest order.
    pub fn fetch_all(&self, manifest: &Manifest, dir: &Path) -> Result<Vec<PathBuf>, DatasetError> {
        fs::create_dir_all(dir).map_err(|e| DatasetError::io(dir, e))?;
        manifest.files.iter().map(|f| self.fetch(f, dir)).collect()
    }

    /// Makes sure `dir/<file.name>` exists and verifies: if it is already there it is checked
    /// (an existing file that fails is reported, never overwritten); otherwise each URL is
    /// tried in order.
    pub fn fetch(&self, file: &ManifestFile, dir: &Path) -> Result<PathBuf, DatasetError> {
        let dest = dir.join(&file.name);
        if dest.exists() {
            file.verify(&dest)?;
            return Ok(dest);
        }
        let part = dir.join(format!("{}.part", file.name));
        let mut failures = Vec::new();
        for url in &file.urls {
            match self.fetch_url(url, file, &part, &dest) {
                Ok(()) => return Ok(dest),
                Err(e) => {
                    remove_if_exists(&part)?;
                    failures.push(e);
                }
            }
        }
        remove_if_exists(&part)?;
        match failures.len() {
            0 => Err(DatasetError::Manifest {
                name: file.name.clone(),
                message: "no urls".into(),
            }),
            1 => Err(failures.remove(0)),
            _ => Err(DatasetError::Download {
                url: file.urls.join(", "),
                message: failures
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("; "),
            }),
        }
    }

    fn fetch_url(
        &self,
        url: &str,
        file: &ManifestFile,
        part: &Path,
        dest: &Path,
    ) -> Result<(), DatasetError> {
        let mut fresh_retry_left = true;
        let mut resumed = false;
        let mut last = String::from("no attempt made");
        let mut attempt = 0;
        while attempt < self.attempts {
            attempt += 1;
            let have = fs::metadata(part).map(|m| m.len()).unwrap_or(0);
            resumed |= have > 0;
            match self.one_request(url, file, part, have)? {
                Attempt::Interrupted(why) => {
                    last = why;
                    continue;
                }
                Attempt::Complete => {}
            }
            match file.verify(part) {
                Ok(_) => {
                    fs::rename(part, dest).map_err(|e| DatasetError::io(dest, e))?;
                    return Ok(());
                }
                Err(e @ DatasetError::Checksum { .. }) => {
                    remove_if_exists(part)?;
                    if resumed && fresh_retry_left {
                        // The stale part may not have belonged to this file: start over once.
                        fresh_retry_left = false;
                        resumed = false;
                        attempt = attempt.min(self.attempts.saturating_sub(1));
                        continue;
                    }
                    return Err(match e {
                        DatasetError::Checksum {
                            algorithm,
                            expected,
                            actual,
                            actual_sha256,
                            accepted,
                            ..
                        } => DatasetError::Checksum {
                            file: PathBuf::from(url),
                            algorithm,
                            expected,
                            actual,
                            actual_sha256,
                            accepted,
                        },
                        other => other,
                    });
                }
                Err(e) => return Err(e),
            }
        }
        Err(DatasetError::Download {
            url: url.to_string(),
            message: format!("gave up after {} attempts: {last}", self.attempts),
        })
    }

    /// One GET (with `Range` when `have > 0`), appending to or restarting `part`.
    fn one_request(
        &self,
        url: &str,
        file: &ManifestFile,
        part: &Path,
        have: u64,
    ) -> Result<Attempt, DatasetError> {
        let dl_err = |message: String| DatasetError::Download {
            url: url.to_string(),
            message,
        };
        let mut req = self.agent.get(url).header("Accept-Encoding", "identity");
        if have > 0 {
            req = req.header("Range", format!("bytes={have}-"));
        }
        let resp = match req.call() {
            Ok(r) => r,
            Err(e) => return Ok(Attempt::Interrupted(e.to_string())),
        };
        let status = resp.status().as_u16();
        let (append, start) = match status {
            200 => (false, 0),
            206 => {
                let range_start = resp
                    .headers()
                    .get("content-range")
                    .and_then(|v| v.to_str().ok())
                    .and_then(parse_content_range_start);
                if range_start == Some(have) {
                    (true, have)
                } else {
                    // An unexpected range: throw the part away and ask for everything.
                    remove_if_exists(part)?;
                    return Ok(Attempt::Interrupted(format!(
                        "server answered range {range_start:?} to a request from byte {have}"
                    )));
                }
            }
            416 if have > 0 => {
                remove_if_exists(part)?;
                return Ok(Attempt::Interrupted(
                    "server rejected the resume range".into(),
                ));
            }
            _ => return Err(dl_err(format!("HTTP status {status}"))),
        };
        let body = resp.into_body();
        let total = body.content_length().map(|n| n + start).or(file.size);
        let mut out = if append {
            OpenOptions::new().append(true).open(part)
        } else {
            File::create(part)
        }
        .map_err(|e| DatasetError::io(part, e))?;
        let bar = self.bar(&file.name, total, start);
        let mut reader = body.into_reader();
        let mut buf = vec![0u8; 1 << 16];
        let outcome = loop {
            match reader.read(&mut buf) {
                Ok(0) => break Attempt::Complete,
                Ok(n) => {
                    out.write_all(&buf[..n])
                        .map_err(|e| DatasetError::io(part, e))?;
                    bar.inc(n as u64);
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => break Attempt::Interrupted(e.to_string()),
            }
        };
        out.flush().map_err(|e| DatasetError::io(part, e))?;
        out.sync_all().map_err(|e| DatasetError::io(part, e))?;
        bar.finish_and_clear();
        Ok(outcome)
    }

    fn bar(&self, name: &str, total: Option<u64>, start: u64) -> ProgressBar {
        if !self.progress {
            return ProgressBar::hidden();
        }
        let bar = match total {
            Some(t) => ProgressBar::new(t),
            None => ProgressBar::no_length(),
        };
        if let Ok(style) = ProgressStyle::with_template(
            "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
        ) {
            bar.set_style(style.progress_chars("=> "));
        }
        bar.set_message(name.to_string());
        bar.set_position(start);
        bar
    }
}

/// `bytes 100-199/200` → `100`.
fn parse_content_range_start(v: &str) -> Option<u64> {
    let rest = v.trim().strip_prefix("bytes")?.trim_start();
    let (range, _) = rest.split_once('/')?;
    let (start, _) = range.split_once('-')?;
    start.trim().parse().ok()
}

fn remove_if_exists(p: &Path) -> Result<(), DatasetError> {
    match fs::remove_file(p) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(DatasetError::io(p, e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_range_parsing() {
        assert_eq!(parse_content_range_start("bytes 100-199/200"), Some(100));
        assert_eq!(parse_content_range_start("bytes 0-0/*"), Some(0));
        assert_eq!(parse_content_range_start("items 1-2/3"), None);
        assert_eq!(parse_content_range_start("bytes */200"), None);
    }
}
