//! figures/balance_drift.{png,svg,csv}: ‖UᵀU − VᵀV − D₀‖ for GD at η = 0.4, 0.2, 0.1 and for
//! the flow (default problem, seed 0). GD changes D by O(η²) per step (MATH §3), so by O(η)
//! over a fixed time T = 40: halving η about halves the curve. The flow's drift is solver
//! error.
//!
//! `cargo run --release --example fig_balance_drift`

use gdflow::config::ConfigArgs;
use gdflow::plot::{figures, write_figure};

fn main() -> anyhow::Result<()> {
    let runs = [0.4, 0.2, 0.1]
        .iter()
        .map(|&eta: &f64| {
            gdflow::experiments::run_config(&ConfigArgs {
                eta: Some(eta),
                steps: Some((40.0 / eta).round() as usize),
                seed: Some(0),
                ..Default::default()
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("figures");
    write_figure(&figures::balance_drift_runs(&runs), &dir)?;
    println!("wrote {}/balance_drift.{{png,svg,csv}}", dir.display());
    Ok(())
}
