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

use std::path::PathBuf;

use deepcomp_sparsity::lsq::{
    descend, lab_problem, lab_row, lab_runs, trajectory_csv, LAB_LR, LAB_STEPS, LAB_TABLE_HEADER,
};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out = std::env::args()
        .nth(1)
        .map_or_else(|| PathBuf::from("target/lsq"), PathBuf::from);
    std::fs::create_dir_all(&out)?;
    let p = lab_problem()?;
    let truth = p.truth.flatten_all()?.to_vec1::<f64>()?;
    let mut table = String::from(LAB_TABLE_HEADER);
    for (i, run) in lab_runs().iter().enumerate() {
        let t = descend(&p, run.method, LAB_LR, LAB_STEPS)?;
        let file = format!("run{i:02}.csv");
        std::fs::write(out.join(&file), trajectory_csv(&t))?;
        table.push_str(&lab_row(run, &t, &truth, &file));
    }
    print!("{table}");
    std::fs::write(out.join("table.md"), &table)?;
    eprintln!("trajectories and table in {}", out.display());
    Ok(())
}
