//! Measures how long reading an image folder or image-folder archive takes (read, decompress,
//! decode every image once on all cores). Run with
//! `cargo run --release -p deepcomp-datasets --example image_folder_speed -- <path> [runs]`,
//! e.g. with the CIFAR-10 JPEG archive of `../shared/data`. Set `RAYON_NUM_THREADS` to
//! change the number of decoding threads.

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
    Ok(())
}
