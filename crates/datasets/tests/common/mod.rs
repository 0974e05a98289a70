//! Helpers shared by the integration tests: generated data sets and a loopback HTTP server.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use deepcomp_datasets::{encode_cifar_records, encode_idx_u8, CIFAR_PIXELS};
use sha2::Digest;

/// Deterministic pseudo-random bytes.
pub fn bytes(seed: u64, n: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

pub fn gzip(data: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(data).unwrap();
    enc.finish().unwrap()
}

pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(sha2::Sha256::digest(data))
}

/// The four MNIST-style files (gzip) for `n_train`/`n_test` images of `h × w`; returns
/// `(file name, bytes)` in the canonical order. Labels are `i % 10`.
pub fn idx_files(n_train: usize, n_test: usize, h: usize, w: usize) -> Vec<(String, Vec<u8>)> {
    let mk = |prefix: &str, n: usize, seed: u64| {
        let images = encode_idx_u8(&[n, h, w], &bytes(seed, n * h * w));
        let labels: Vec<u8> = (0..n).map(|i| (i % 10) as u8).collect();
        let labels = encode_idx_u8(&[n], &labels);
        vec![
            (format!("{prefix}-images-idx3-ubyte.gz"), gzip(&images)),
            (format!("{prefix}-labels-idx1-ubyte.gz"), gzip(&labels)),
        ]
    };
    let mut v = mk("train", n_train, 1);
    v.extend(mk("t10k", n_test, 2));
    v
}

pub fn write_files(dir: &Path, files: &[(String, Vec<u8>)]) {
    std::fs::create_dir_all(dir).unwrap();
    for (name, data) in files {
        std::fs::write(dir.join(name), data).unwrap();
    }
}

/// CIFAR batch files `(name, bytes)`: for CIFAR-10 five train batches of `per_batch` records
/// and one test batch; for CIFAR-100 `train.bin` (5 × per_batch) and `test.bin`.
/// Labels are `i % classes`; pixel bytes are pseudo-random.
pub fn cifar_files(hundred: bool, per_batch: usize) -> Vec<(String, Vec<u8>)> {
    let classes = if hundred { 100 } else { 10 };
    let mk = |n: usize, seed: u64| {
        let labels: Vec<u8> = (0..n).map(|i| (i % classes) as u8).collect();
        encode_cifar_records(hundred, &bytes(seed, n * CIFAR_PIXELS), &labels)
    };
    if hundred {
        vec![
            ("train.bin".to_string(), mk(5 * per_batch, 10)),
            ("test.bin".to_string(), mk(per_batch, 20)),
        ]
    } else {
        let mut v: Vec<(String, Vec<u8>)> = (1..=5)
            .map(|i| (format!("data_batch_{i}.bin"), mk(per_batch, i as u64)))
            .collect();
        v.push(("test_batch.bin".to_string(), mk(per_batch, 99)));
        v
    }
}

/// A `.tar.gz` holding `files` under `folder/`.
pub fn tar_gz(folder: &str, files: &[(String, Vec<u8>)]) -> Vec<u8> {
    let enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let mut builder = tar::Builder::new(enc);
    let mut readme = tar::Header::new_gnu();
    readme.set_size(5);
    readme.set_mode(0o644);
    readme.set_cksum();
    builder
        .append_data(&mut readme, format!("{folder}/readme.html"), &b"hello"[..])
        .unwrap();
    for (name, data) in files {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        builder
            .append_data(&mut h, format!("{folder}/{name}"), &data[..])
            .unwrap();
    }
    builder.into_inner().unwrap().finish().unwrap()
}

/// How the test server answers one path.
#[derive(Debug, Clone)]
pub enum Behaviour {
    /// 200 with the body (206 for a `Range` request when `ranges` is true).
    Serve { ranges: bool },
    /// Announce the full length but close after `keep` bytes, for the first `times`
    /// responses; then behave like `Serve`.
    Truncate {
        keep: usize,
        times: usize,
        ranges: bool,
    },
    /// 404 Not Found.
    NotFound,
}

#[derive(Debug, Clone)]
pub struct Route {
    pub path: String,
    pub body: Vec<u8>,
    pub behaviour: Behaviour,
}

/// One request as the server saw it: path and `Range` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Logged {
    pub path: String,
    pub range: Option<String>,
}

/// A tiny HTTP/1.1 server on 127.0.0.1: one request per connection, bounded in requests and
/// lifetime (it stops by itself after `max_requests` or 20 s), stopped on drop.
pub struct Server {
    pub addr: SocketAddr,
    log: Arc<Mutex<Vec<Logged>>>,
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
}

impl Server {
    pub fn start(routes: Vec<Route>, max_requests: usize) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (log2, stop2) = (log.clone(), stop.clone());
        let handle = std::thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(20);
            let mut served = 0usize;
            let mut truncations: Vec<usize> = vec![0; routes.len()];
            while served < max_requests
                && Instant::now() < deadline
                && !stop2.load(Ordering::SeqCst)
            {
                match listener.accept() {
                    Ok((stream, _)) => {
                        served += 1;
                        let _ = handle_conn(stream, &routes, &mut truncations, &log2);
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(2));
                    }
                    Err(_) => break,
                }
            }
        });
        Server {
            addr,
            log,
            stop,
            handle: Some(handle),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub fn log(&self) -> Vec<Logged> {
        self.log.lock().unwrap().clone()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

fn handle_conn(
    stream: TcpStream,
    routes: &[Route],
    truncations: &mut [usize],
    log: &Mutex<Vec<Logged>>,
) -> std::io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    stream.set_write_timeout(Some(Duration::from_secs(5)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    let path = request_line
        .split_whitespace()
        .nth(1)
        .unwrap_or("/")
        .to_string();
    let mut range = None;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 || line == "\r\n" || line == "\n" {
            break;
        }
        if let Some((k, v)) = line.split_once(':') {
            if k.trim().eq_ignore_ascii_case("range") {
                range = Some(v.trim().to_string());
            }
        }
    }
    log.lock().unwrap().push(Logged {
        path: path.clone(),
        range: range.clone(),
    });
    let mut out = stream;
    let Some(i) = routes.iter().position(|r| r.path == path) else {
        return write_simple(&mut out, "404 Not Found");
    };
    let route = &routes[i];
    let (ranges, truncate_at) = match route.behaviour {
        Behaviour::NotFound => return write_simple(&mut out, "404 Not Found"),
        Behaviour::Serve { ranges } => (ranges, None),
        Behaviour::Truncate {
            keep,
            times,
            ranges,
        } => {
            if truncations[i] < times {
                truncations[i] += 1;
                (ranges, Some(keep))
            } else {
                (ranges, None)
            }
        }
    };
    let total = route.body.len();
    let start = match (&range, ranges) {
        (Some(r), true) => r
            .strip_prefix("bytes=")
            .and_then(|r| r.strip_suffix('-'))
            .and_then(|s| s.parse::<usize>().ok()),
        _ => None,
    };
    let (status, start) = match start {
        Some(s) if s >= total => {
            let head = format!(
                "HTTP/1.1 416 Range Not Satisfiable\r\nContent-Range: bytes */{total}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            );
            return out.write_all(head.as_bytes());
        }
        Some(s) => (206, s),
        None => (200, 0),
    };
    let body = &route.body[start..];
    let mut head = format!(
        "HTTP/1.1 {} {}\r\nContent-Length: {}\r\nContent-Type: application/octet-stream\r\nConnection: close\r\n",
        status,
        if status == 206 { "Partial Content" } else { "OK" },
        body.len()
    );
    if status == 206 {
        head.push_str(&format!(
            "Content-Range: bytes {start}-{}/{total}\r\n",
            total - 1
        ));
    }
    if ranges {
        head.push_str("Accept-Ranges: bytes\r\n");
    }
    head.push_str("\r\n");
    out.write_all(head.as_bytes())?;
    let send = truncate_at.map_or(body.len(), |k| k.min(body.len()));
    out.write_all(&body[..send])?;
    out.flush()?;
    // Drain anything left so the close is clean, then drop the connection.
    let _ = out.shutdown(std::net::Shutdown::Write);
    let mut sink = [0u8; 64];
    let _ = reader.read(&mut sink);
    Ok(())
}

fn write_simple(out: &mut TcpStream, status: &str) -> std::io::Result<()> {
    let msg =
        format!("HTTP/1.1 {status}\r\nContent-Length: 9\r\nConnection: close\r\n\r\nnot found");
    out.write_all(msg.as_bytes())
}

/// Files in `dir`, sorted (to assert that nothing partial was left).
pub fn listing(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = match std::fs::read_dir(dir) {
        Ok(rd) => rd.map(|e| e.unwrap().path()).collect(),
        Err(_) => Vec::new(),
    };
    v.sort();
    v
}
