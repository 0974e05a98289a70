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
//! `deepcomp lsq` runs the same lab and also draws the lab's figures (log L and each weight
//! against the step) as SVG.

use std::fmt::Write as _;
use std::path::PathBuf;

use deepcomp_sparsity::lsq::{descend, lab_problem, lab_runs, LAB_LR, LAB_STEPS};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out = std::env::args()
        .nth(1)
        .map_or_else(|| PathBuf::from("target/lsq"), PathBuf::from);
    std::fs::create_dir_all(&out)?;
    let p = lab_problem()?;
    let truth = p.truth.flatten_all()?.to_vec1::<f64>()?;
    let mut table = String::from(
        "| run | final L | log10 L | exact nonzeros | max abs(w - w*) | file |\n|---|---:|---:|---|---:|---|\n",
    );
    for (i, run) in lab_runs().iter().enumerate() {
        let t = descend(&p, run.method, LAB_LR, LAB_STEPS)?;
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
            "| ({}) {} | {:.3e} | {:.2} | {:?} | {err:.3e} | {file} |",
            run.part,
            run.label,
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
