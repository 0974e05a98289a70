//! Decompression throughput of an IDX file (best of 10): `cargo run --release -p
//! deepcomp-datasets --example gz_decode -- <file.gz>`.
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let path = std::env::args().nth(1).ok_or("usage: gz_decode <file>")?;
    let mut best = f64::INFINITY;
    let mut bytes = 0;
    for _ in 0..10 {
        let t = std::time::Instant::now();
        let a = deepcomp_datasets::read_idx(std::path::Path::new(&path))?;
        best = best.min(t.elapsed().as_secs_f64());
        bytes = a.data.len();
    }
    println!(
        "{path}: {bytes} bytes in {best:.3} s = {:.0} MB/s",
        bytes as f64 / best / 1e6
    );
    Ok(())
}
