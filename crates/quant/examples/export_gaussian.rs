//! Writes the benchmark's Gaussian weights as raw little-endian `f32` files so
//! that `scripts/sklearn_compare.py` can cluster exactly the same data.
//!
//! ```text
//! cargo run -p deepcomp-quant --example export_gaussian -- target/quant-sklearn
//! python3 crates/quant/scripts/sklearn_compare.py target/quant-sklearn
//! ```

use deepcomp_quant::synth::gaussian_weights;
use deepcomp_quant::{kmeans_1d, Init, KMeansConfig};
use std::io::Write;
use std::path::PathBuf;

/// `(name, n, seed)` of the two benchmark inputs (shared with the bench and
/// the parity test).
const SETS: [(&str, usize, u64); 2] = [("g235200", 235_200, 1), ("g2359296", 2_359_296, 2)];
/// Standard deviation of the synthetic weights.
const STD: f64 = 0.05;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = PathBuf::from(
        std::env::args()
            .nth(1)
            .unwrap_or_else(|| "target/quant-sklearn".to_string()),
    );
    std::fs::create_dir_all(&dir)?;
    for (name, n, seed) in SETS {
        let w = gaussian_weights(n, STD, seed);
        let path = dir.join(format!("{name}.f32"));
        let mut f = std::io::BufWriter::new(std::fs::File::create(&path)?);
        for x in &w {
            f.write_all(&x.to_le_bytes())?;
        }
        f.flush()?;
        let t = std::time::Instant::now();
        let km = kmeans_1d(&w, &KMeansConfig::new(32, Init::Linear))?;
        let dt = t.elapsed();
        println!(
            "{}: n = {n}, deepcomp linear k=32: sse = {:.9e}, iterations = {}, converged = {}, {:.1} ms (this build profile)",
            path.display(),
            km.sse,
            km.iterations,
            km.converged,
            dt.as_secs_f64() * 1e3
        );
        if n <= 300_000 {
            let ex = kmeans_1d(&w, &KMeansConfig::new(32, Init::Linear).with_exact(true))?;
            println!("    exact optimum: sse = {:.9e}", ex.sse);
        }
    }
    Ok(())
}
