//! Seed 003's Lab 1 from the command line: sparse least squares (3 points, 5 unknowns, ‖w*‖₀ = 2,
//! 200 full-batch steps at μ = 0.02) under plain gradient descent, projection onto ‖w‖₀ ≤ 2, L1 by
//! sub-gradient, proximal L1 (soft thresholding) and trimmed L1, with the seed's λ / thresholds.
//!
//! ```sh
//! cargo run --example lsq -p deepcomp-sparsity [-- OUT_DIR]
//! ```
//!
//! Prints a markdown table (final loss, exact support, distance to the ground truth) and writes every
//! run's trajectory (`step, loss, w0 … w4`) as a CSV file into `OUT_DIR` (default `target/lsq`).

use std::fmt::Write as _;
use std::path::PathBuf;

use deepcomp_sparsity::lsq::{descend, LeastSquares, Method};

const LR: f64 = 0.02;
const STEPS: usize = 200;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out = std::env::args()
        .nth(1)
        .map_or_else(|| PathBuf::from("target/lsq"), PathBuf::from);
    std::fs::create_dir_all(&out)?;
    // A small-integer instance (the seed does not reproduce its data); the truth is supported on {1, 4}.
    let p = LeastSquares::new(
        vec![
            vec![-1.0, -2.0, -1.0, 1.0, -1.0],
            vec![-1.0, 2.0, 2.0, 1.0, -2.0],
            vec![1.0, -2.0, 1.0, -1.0, 0.0],
        ],
        vec![0.0, 1.5, 0.0, 0.0, -2.0],
        vec![0.0; 5],
    )?;
    let truth = p.truth.flatten_all()?.to_vec1::<f64>()?;
    let mut runs: Vec<(String, Method)> = vec![
        ("(b) plain".into(), Method::Plain),
        ("(c) projected, k = 2".into(), Method::Projected { k: 2 }),
    ];
    for lambda in [0.2, 0.5, 1.0, 2.0] {
        runs.push((format!("(d) L1, λ = {lambda}"), Method::L1 { lambda }));
    }
    for threshold in [0.004, 0.01, 0.02, 0.04] {
        runs.push((
            format!("(e) prox L1, thr = {threshold}"),
            Method::Proximal { threshold },
        ));
    }
    for (lambda, threshold) in [(1.0, 0.02), (2.0, 0.04), (5.0, 0.1), (10.0, 0.2)] {
        runs.push((
            format!("(f) trimmed L1 (3 smallest), λ = {lambda}"),
            Method::TrimmedProximal {
                threshold,
                trimmed: 3,
            },
        ));
    }
    let mut table = String::from(
        "| run | final L | log10 L | exact nonzeros | max abs(w - w*) | file |\n|---|---:|---:|---|---:|---|\n",
    );
    for (i, (label, method)) in runs.iter().enumerate() {
        let t = descend(&p, *method, LR, STEPS)?;
        let w = t.final_weights();
        let err = w
            .iter()
            .zip(&truth)
            .fold(0.0f64, |m, (a, b)| m.max((a - b).abs()));
        let file = format!("run{i:02}.csv");
        let mut csv = String::from("step,loss,w0,w1,w2,w3,w4\n");
        for (s, (l, w)) in t.losses.iter().zip(&t.weights).enumerate() {
            let ws: Vec<String> = w.iter().map(|v| v.to_string()).collect();
            writeln!(csv, "{s},{l},{}", ws.join(","))?;
        }
        std::fs::write(out.join(&file), csv)?;
        writeln!(
            table,
            "| {label} | {:.3e} | {:.2} | {:?} | {err:.3e} | {file} |",
            t.final_loss(),
            t.final_loss().max(f64::MIN_POSITIVE).log10(),
            t.support(0.0),
        )?;
    }
    print!("{table}");
    std::fs::write(out.join("table.md"), &table)?;
    eprintln!("trajectories and table in {}", out.display());
    Ok(())
}
