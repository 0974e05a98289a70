//! Downloads against a loopback HTTP server serving generated files: every outcome is the
//! right one and no partial file is ever left behind.

mod common;

use common::{Behaviour, Route, Server};
use deepcomp_datasets::{
    load_with_manifest, DatasetError, DatasetId, Downloader, LoadOptions, Manifest, ManifestFile,
    SearchRoots,
};

fn entry(name: &str, urls: Vec<String>, content: &[u8]) -> ManifestFile {
    ManifestFile {
        name: name.to_string(),
        urls,
        size: Some(content.len() as u64),
        sha256: Some(common::sha256_hex(content)),
        sha256_source: None,
        md5: None,
        md5_source: None,
        known_copies: vec![],
    }
}

fn route(path: &str, body: &[u8], behaviour: Behaviour) -> Route {
    Route {
        path: path.to_string(),
        body: body.to_vec(),
        behaviour,
    }
}

#[test]
fn good_file_is_verified_and_renamed() {
    let content = common::bytes(1, 300_000);
    let server = Server::start(
        vec![route(
            "/good.bin",
            &content,
            Behaviour::Serve { ranges: true },
        )],
        4,
    );
    let dir = tempfile::tempdir().unwrap();
    let f = entry("good.bin", vec![server.url("/good.bin")], &content);
    let path = Downloader::direct(false).fetch(&f, dir.path()).unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), content);
    assert_eq!(
        common::listing(dir.path()),
        vec![dir.path().join("good.bin")]
    );
    // A second fetch finds the verified file and makes no request.
    Downloader::direct(false).fetch(&f, dir.path()).unwrap();
    assert_eq!(server.log().len(), 1);
}

#[test]
fn md5_only_entries_are_verified_with_md5() {
    let content = b"hello".to_vec();
    let server = Server::start(
        vec![route(
            "/h.txt",
            &content,
            Behaviour::Serve { ranges: false },
        )],
        4,
    );
    let dir = tempfile::tempdir().unwrap();
    let mut f = entry("h.txt", vec![server.url("/h.txt")], &content);
    f.sha256 = None;
    f.md5 = Some("5d41402abc4b2a76b9719d911017c592".into());
    Downloader::direct(false).fetch(&f, dir.path()).unwrap();
    assert_eq!(std::fs::read(dir.path().join("h.txt")).unwrap(), content);
}

#[test]
fn wrong_checksum_fails_and_leaves_nothing() {
    let content = common::bytes(2, 50_000);
    let server = Server::start(
        vec![route(
            "/bad.bin",
            &content,
            Behaviour::Serve { ranges: true },
        )],
        4,
    );
    let dir = tempfile::tempdir().unwrap();
    let f = entry("bad.bin", vec![server.url("/bad.bin")], b"something else");
    let e = Downloader::direct(false).fetch(&f, dir.path()).unwrap_err();
    match &e {
        DatasetError::Checksum {
            algorithm, actual, ..
        } => {
            assert_eq!(*algorithm, "sha256");
            assert_eq!(*actual, common::sha256_hex(&content));
        }
        other => panic!("expected a checksum error, got {other}"),
    }
    assert!(e.to_string().contains("/bad.bin"), "{e}");
    assert!(common::listing(dir.path()).is_empty());
    assert_eq!(server.log().len(), 1, "a wrong digest is not retried");
}

#[test]
fn truncated_body_fails_after_bounded_retries_and_leaves_nothing() {
    let content = common::bytes(3, 100_000);
    let server = Server::start(
        vec![route(
            "/trunc.bin",
            &content,
            Behaviour::Truncate {
                keep: 1000,
                times: usize::MAX,
                ranges: false,
            },
        )],
        20,
    );
    let dir = tempfile::tempdir().unwrap();
    let f = entry("trunc.bin", vec![server.url("/trunc.bin")], &content);
    let e = Downloader::direct(false)
        .with_attempts(3)
        .fetch(&f, dir.path())
        .unwrap_err();
    assert!(matches!(e, DatasetError::Download { .. }), "{e}");
    assert!(e.to_string().contains("3 attempts"), "{e}");
    assert!(common::listing(dir.path()).is_empty());
    assert_eq!(server.log().len(), 3);
}

#[test]
fn not_found_fails_and_leaves_nothing() {
    let server = Server::start(vec![route("/gone", b"", Behaviour::NotFound)], 4);
    let dir = tempfile::tempdir().unwrap();
    let f = entry("gone", vec![server.url("/gone")], b"x");
    let e = Downloader::direct(false).fetch(&f, dir.path()).unwrap_err();
    assert!(matches!(e, DatasetError::Download { .. }), "{e}");
    assert!(e.to_string().contains("404"), "{e}");
    assert!(common::listing(dir.path()).is_empty());
    assert_eq!(server.log().len(), 1, "a 404 is not retried");
}

#[test]
fn interrupted_body_is_resumed_with_range() {
    let content = common::bytes(4, 200_000);
    let server = Server::start(
        vec![route(
            "/flaky.bin",
            &content,
            Behaviour::Truncate {
                keep: 70_000,
                times: 2,
                ranges: true,
            },
        )],
        10,
    );
    let dir = tempfile::tempdir().unwrap();
    let f = entry("flaky.bin", vec![server.url("/flaky.bin")], &content);
    Downloader::direct(false).fetch(&f, dir.path()).unwrap();
    assert_eq!(
        std::fs::read(dir.path().join("flaky.bin")).unwrap(),
        content
    );
    let ranges: Vec<Option<String>> = server.log().into_iter().map(|l| l.range).collect();
    assert_eq!(
        ranges,
        vec![
            None,
            Some("bytes=70000-".into()),
            Some("bytes=140000-".into())
        ]
    );
    assert_eq!(
        common::listing(dir.path()),
        vec![dir.path().join("flaky.bin")]
    );
}

#[test]
fn leftover_part_is_resumed() {
    let content = common::bytes(5, 120_000);
    let server = Server::start(
        vec![route("/r.bin", &content, Behaviour::Serve { ranges: true })],
        4,
    );
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("r.bin.part"), &content[..50_000]).unwrap();
    let f = entry("r.bin", vec![server.url("/r.bin")], &content);
    Downloader::direct(false).fetch(&f, dir.path()).unwrap();
    assert_eq!(std::fs::read(dir.path().join("r.bin")).unwrap(), content);
    assert_eq!(server.log()[0].range.as_deref(), Some("bytes=50000-"));
    assert_eq!(common::listing(dir.path()), vec![dir.path().join("r.bin")]);
}

#[test]
fn stale_garbage_part_is_restarted_cleanly() {
    let content = common::bytes(6, 80_000);
    let server = Server::start(
        vec![route("/s.bin", &content, Behaviour::Serve { ranges: true })],
        4,
    );
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("s.bin.part"), vec![0xAA; 30_000]).unwrap();
    let f = entry("s.bin", vec![server.url("/s.bin")], &content);
    Downloader::direct(false).fetch(&f, dir.path()).unwrap();
    assert_eq!(std::fs::read(dir.path().join("s.bin")).unwrap(), content);
    let ranges: Vec<Option<String>> = server.log().into_iter().map(|l| l.range).collect();
    assert_eq!(ranges, vec![Some("bytes=30000-".into()), None]);
    assert_eq!(common::listing(dir.path()), vec![dir.path().join("s.bin")]);
}

#[test]
fn server_ignoring_range_restarts_from_zero() {
    let content = common::bytes(7, 60_000);
    let server = Server::start(
        vec![route(
            "/n.bin",
            &content,
            Behaviour::Serve { ranges: false },
        )],
        4,
    );
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("n.bin.part"), &content[..10_000]).unwrap();
    let f = entry("n.bin", vec![server.url("/n.bin")], &content);
    Downloader::direct(false).fetch(&f, dir.path()).unwrap();
    assert_eq!(std::fs::read(dir.path().join("n.bin")).unwrap(), content);
    assert_eq!(server.log().len(), 1);
}

#[test]
fn mirrors_are_tried_in_order() {
    let content = common::bytes(8, 10_000);
    let server = Server::start(
        vec![
            route("/a/m.bin", b"", Behaviour::NotFound),
            route("/b/m.bin", &content, Behaviour::Serve { ranges: true }),
        ],
        4,
    );
    let dir = tempfile::tempdir().unwrap();
    let f = entry(
        "m.bin",
        vec![server.url("/a/m.bin"), server.url("/b/m.bin")],
        &content,
    );
    Downloader::direct(false).fetch(&f, dir.path()).unwrap();
    let paths: Vec<String> = server.log().into_iter().map(|l| l.path).collect();
    assert_eq!(paths, vec!["/a/m.bin", "/b/m.bin"]);
    // Both failing: the error mentions both URLs.
    let dir2 = tempfile::tempdir().unwrap();
    let mut g = f.clone();
    g.urls = vec![server.url("/a/m.bin"), server.url("/a/m.bin")];
    let e = Downloader::direct(false)
        .fetch(&g, dir2.path())
        .unwrap_err();
    assert_eq!(e.to_string().matches("404").count(), 2, "{e}");
    assert!(common::listing(dir2.path()).is_empty());
}

#[test]
fn existing_file_with_wrong_digest_is_reported_not_overwritten() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("x.bin"), b"local").unwrap();
    let f = entry("x.bin", vec!["http://127.0.0.1:9/x.bin".into()], b"remote");
    let e = Downloader::direct(false).fetch(&f, dir.path()).unwrap_err();
    assert!(matches!(e, DatasetError::Checksum { .. }), "{e}");
    assert_eq!(std::fs::read(dir.path().join("x.bin")).unwrap(), b"local");
}

/// A Fashion-MNIST manifest whose files are `files` (name, content) at `/fm/<name>` on `server`.
fn fashion_manifest(server: &Server, files: &[(String, Vec<u8>)]) -> Manifest {
    let mut toml = String::from(
        "[dataset]\nid='fashion-mnist'\ntitle='t'\nhomepage='h'\nlicence='l'\ncitation='c'\n",
    );
    for (n, d) in files {
        toml.push_str(&format!(
            "[[file]]\nname='{n}'\nurls=['{}']\nsha256='{}'\n",
            server.url(&format!("/fm/{n}")),
            common::sha256_hex(d)
        ));
    }
    Manifest::parse("test.toml", &toml).unwrap()
}

#[test]
fn load_downloads_into_the_cache_only_when_allowed() {
    let files = common::idx_files(30, 10, 28, 28);
    let routes: Vec<Route> = files
        .iter()
        .map(|(n, d)| route(&format!("/fm/{n}"), d, Behaviour::Serve { ranges: true }))
        .collect();
    let server = Server::start(routes, 8);
    let manifest = fashion_manifest(&server, &files);
    let tmp = tempfile::tempdir().unwrap();
    let roots = SearchRoots {
        data_env: None,
        cache: Some(tmp.path().join("cache")),
        system: vec![tmp.path().join("sys")],
    };
    let mut opts = LoadOptions {
        roots: Some(roots),
        ..LoadOptions::default()
    };
    let dl = Downloader::direct(false);
    let e = load_with_manifest(DatasetId::FashionMnist, &manifest, &dl, &opts).unwrap_err();
    assert!(matches!(e, DatasetError::NotFound { .. }), "{e}");
    assert!(server.log().is_empty(), "no request without allow_download");

    opts.allow_download = true;
    opts.verify_checksums = true;
    let ds = load_with_manifest(DatasetId::FashionMnist, &manifest, &dl, &opts).unwrap();
    assert_eq!((ds.train.n, ds.test.n), (30, 10));
    assert_eq!(ds.source, tmp.path().join("cache/fashion-mnist"));
    assert_eq!(server.log().len(), 4);
    // Now cached: loading again makes no request.
    load_with_manifest(DatasetId::FashionMnist, &manifest, &dl, &opts).unwrap();
    assert_eq!(server.log().len(), 4);
}

#[test]
fn offline_first_run_says_what_to_do() {
    // Every URL answers 404, as a blocked network or a dead mirror would.
    let files = common::idx_files(30, 10, 28, 28);
    let routes: Vec<Route> = files
        .iter()
        .map(|(n, _)| route(&format!("/fm/{n}"), b"", Behaviour::NotFound))
        .collect();
    let server = Server::start(routes, 8);
    let manifest = fashion_manifest(&server, &files);
    let tmp = tempfile::tempdir().unwrap();
    let opts = LoadOptions {
        roots: Some(SearchRoots {
            data_env: None,
            cache: Some(tmp.path().join("cache")),
            system: vec![tmp.path().join("sys")],
        }),
        allow_download: true,
        ..LoadOptions::default()
    };
    let e = load_with_manifest(
        DatasetId::FashionMnist,
        &manifest,
        &Downloader::direct(false),
        &opts,
    )
    .unwrap_err();
    assert!(matches!(e, DatasetError::Unavailable { .. }), "{e}");
    let msg = e.to_string();
    for needle in [
        "fashion-mnist: not found on this machine",
        "404",
        "apt-get install dataset-fashion-mnist",
        "DEEPCOMP_DATA",
        "--data",
        "sys",
    ] {
        assert!(msg.contains(needle), "`{needle}` missing from: {msg}");
    }
    // No partial download is left in the cache.
    let cached = tmp.path().join("cache/fashion-mnist");
    assert!(
        !cached.exists() || common::listing(&cached).is_empty(),
        "{:?}",
        common::listing(&cached)
    );
}
