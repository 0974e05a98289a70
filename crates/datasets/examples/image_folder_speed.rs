//! Measures how long reading an image folder or image-folder archive takes (read, decompress,
//! decode every image once on all cores). Run with
//! `cargo run --release -p deepcomp-datasets --example image_folder_speed -- <path> [runs]`,
//! e.g. with the CIFAR-10 JPEG archive of `../shared/data`. Set `RAYON_NUM_THREADS` to
//! change the number of decoding threads. For a `.tar.gz` it then compares the `image`
//! crate's JPEG decoding with `zune-jpeg` called directly, on one thread.

use std::time::Instant;

use deepcomp_datasets::{read_image_folder, ImageFolderOptions};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let path = std::path::PathBuf::from(
        args.next()
            .ok_or("usage: image_folder_speed <path> [runs]")?,
    );
    let runs: usize = args.next().map_or(Ok(3), |r| r.parse())?;
    let threads = rayon::current_num_threads();
    let mut times = Vec::new();
    for run in 0..runs {
        let t = Instant::now();
        let f = read_image_folder(&path, &ImageFolderOptions::default())?;
        let s = t.elapsed().as_secs_f64();
        println!(
            "run {}: {} train + {} test images of {}×{}×{}, {} classes, in {s:.2} s ({threads} threads)",
            run + 1,
            f.train.n,
            f.test.n,
            f.train.c,
            f.train.h,
            f.train.w,
            f.classes.len()
        );
        times.push(s);
    }
    let min = times.iter().copied().fold(f64::INFINITY, f64::min);
    let max = times.iter().copied().fold(0.0, f64::max);
    println!("load: min {min:.2} s, max {max:.2} s over {runs} runs");
    if path.to_string_lossy().ends_with(".tar.gz") {
        compare_decoders(&path)?;
    }
    Ok(())
}

/// Decodes every JPEG of the archive's test split on one thread, through the `image` crate
/// (what `read_image_folder` uses) and through `zune-jpeg` directly; prints both times.
fn compare_decoders(path: &std::path::Path) -> Result<(), Box<dyn std::error::Error>> {
    use std::io::Read;
    let file = std::fs::File::open(path)?;
    let mut archive =
        tar::Archive::new(flate2::read::GzDecoder::new(std::io::BufReader::new(file)));
    let mut jpegs = Vec::new();
    for entry in archive.entries()? {
        let mut entry = entry?;
        let p = entry.path()?.into_owned();
        let name = p.to_string_lossy().to_ascii_lowercase();
        if p.components().any(|c| c.as_os_str() == "test") && name.ends_with(".jpg") {
            let mut v = Vec::new();
            entry.read_to_end(&mut v)?;
            jpegs.push(v);
        }
    }
    if jpegs.is_empty() {
        return Ok(());
    }
    for round in 0..2 {
        let t = Instant::now();
        let mut sum = 0u64;
        for j in &jpegs {
            let img = image::load_from_memory(j)?.to_rgb8();
            sum += u64::from(img.as_raw()[0]);
        }
        let a = t.elapsed().as_secs_f64();
        let t = Instant::now();
        let mut sum2 = 0u64;
        for j in &jpegs {
            let mut d = zune_jpeg::JpegDecoder::new(zune_core::bytestream::ZCursor::new(&j[..]));
            let px = d.decode().map_err(|e| format!("{e:?}"))?;
            sum2 += u64::from(px[0]);
        }
        let b = t.elapsed().as_secs_f64();
        println!(
            "round {}: decode {} JPEGs on one thread: image {a:.2} s, zune-jpeg directly {b:.2} s (checksums {sum} {sum2})",
            round + 1,
            jpegs.len()
        );
    }
    Ok(())
}
