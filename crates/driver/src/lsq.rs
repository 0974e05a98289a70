//! `deepcomp lsq`: seed 003's Lab 1 (sparse least squares) with its figures.
//!
//! The arithmetic and the lab's runs are `deepcomp_sparsity::lsq`; this module runs them, writes the
//! table (`table.md`), every trajectory as CSV (`step, loss, w0 … w4`) and the figures the lab asks
//! for as SVG: per part (b)–(f) one chart of log10 L against the step with a line per setting, and
//! per run one chart of each element of w against the step.

use std::path::Path;

use deepcomp_sparsity::lsq::{
    descend, lab_problem, lab_row, lab_runs, trajectory_csv, Trajectory, LAB_LR, LAB_STEPS,
    LAB_TABLE_HEADER,
};

use crate::error::Result;
use crate::fsutil;
use crate::plot::{lines, Series};

/// What the lab wrote: the Markdown table and the files, relative to the output folder.
#[derive(Debug, Clone)]
pub struct LabOutput {
    /// One row per run: final loss, log10 L, exact support, distance to the truth, files.
    pub table: String,
    /// Every file written, relative to the output folder.
    pub files: Vec<String>,
}

/// Smallest loss drawn on the log axis: an exact zero (the projected and trimmed runs reach
/// rounding level) would be −∞.
const LOSS_FLOOR: f64 = 1e-300;

fn log_loss(t: &Trajectory) -> Vec<(f64, f64)> {
    t.losses
        .iter()
        .enumerate()
        .map(|(s, l)| (s as f64, l.max(LOSS_FLOOR).log10()))
        .collect()
}

/// Runs the lab and writes `table.md`, `runNN.csv`, `loss-<part>.svg` and `weights-runNN.svg`
/// into `out` (created if missing; each file written atomically).
pub fn run(out: &Path) -> Result<LabOutput> {
    fsutil::create_dir_all(out)?;
    let p = lab_problem()?;
    let truth = p.truth.flatten_all()?.to_vec1::<f64>()?;
    let mut table = String::from(LAB_TABLE_HEADER);
    let mut files = Vec::new();
    let mut loss_series: Vec<(char, Series)> = Vec::new();
    for (i, run) in lab_runs().iter().enumerate() {
        let t = descend(&p, run.method, LAB_LR, LAB_STEPS)?;
        let csv_name = format!("run{i:02}.csv");
        fsutil::write_atomic(&out.join(&csv_name), trajectory_csv(&t).as_bytes())?;
        let weights: Vec<Series> = (0..truth.len())
            .map(|j| Series {
                label: format!("w{j} (w* = {})", truth[j]),
                points: t
                    .weights
                    .iter()
                    .enumerate()
                    .map(|(s, w)| (s as f64, w[j]))
                    .collect(),
            })
            .collect();
        let svg_name = format!("weights-run{i:02}.svg");
        let title = format!("({}) {}: weights", run.part, run.label);
        fsutil::write_atomic(
            &out.join(&svg_name),
            lines(&title, "step", "w", &weights)?.as_bytes(),
        )?;
        loss_series.push((
            run.part,
            Series {
                label: run.label.clone(),
                points: log_loss(&t),
            },
        ));
        table.push_str(&lab_row(
            run,
            &t,
            &truth,
            &format!("{csv_name}, {svg_name}"),
        ));
        files.push(csv_name);
        files.push(svg_name);
    }
    let mut parts: Vec<char> = loss_series.iter().map(|(p, _)| *p).collect();
    parts.dedup();
    for part in parts {
        let series: Vec<Series> = loss_series
            .iter()
            .filter(|(p, _)| *p == part)
            .map(|(_, s)| s.clone())
            .collect();
        let name = format!("loss-{part}.svg");
        let title = format!("({part}) log10 L over {LAB_STEPS} steps, μ = {LAB_LR}");
        fsutil::write_atomic(
            &out.join(&name),
            lines(&title, "step", "log10 L", &series)?.as_bytes(),
        )?;
        files.push(name);
    }
    fsutil::write_atomic(&out.join("table.md"), table.as_bytes())?;
    files.push("table.md".into());
    Ok(LabOutput { table, files })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lab_writes_its_table_trajectories_and_figures() {
        let dir = tempfile::tempdir().unwrap();
        let lab = run(dir.path()).unwrap();
        let runs = lab_runs().len();
        // A CSV and a weights figure per run, a loss figure per part (b)–(f), the table.
        assert_eq!(lab.files.len(), 2 * runs + 5 + 1);
        for f in &lab.files {
            let text = std::fs::read_to_string(dir.path().join(f)).unwrap();
            if f.ends_with(".svg") {
                assert!(
                    text.starts_with("<svg") && text.trim_end().ends_with("</svg>"),
                    "{f}"
                );
            }
        }
        let csv = std::fs::read_to_string(dir.path().join("run00.csv")).unwrap();
        assert_eq!(csv.lines().count(), 1 + LAB_STEPS + 1);
        // Projection onto ‖w‖₀ ≤ 2 finds the truth's support {1, 4}; plain descent does not.
        let row = |label: &str| {
            lab.table
                .lines()
                .find(|l| l.starts_with(&format!("| {label} |")))
                .unwrap_or_else(|| panic!("no row {label}"))
                .to_string()
        };
        assert!(row("(c) projected, k = 2").contains("| [1, 4] |"));
        assert!(row("(b) plain").contains("| [0, 1, 2, 3, 4] |"));
        assert!(lab.table.contains("(f) trimmed L1 (3 smallest), λ = 10"));
        let loss_d = std::fs::read_to_string(dir.path().join("loss-d.svg")).unwrap();
        for lambda in ["0.2", "0.5", "1", "2"] {
            assert!(
                loss_d.contains(&format!("L1, λ = {lambda}")),
                "legend {lambda}"
            );
        }
    }
}
