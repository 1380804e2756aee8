//! figures/loss_error.{png,svg,csv}: loss and relative error against t on the default
//! problem, the flow against GD at three step sizes (seed 0).
//!
//! `cargo run --release --example fig_loss_error`

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
    write_figure(&figures::loss_error_runs(&runs), &dir)?;
    println!("wrote {}/loss_error.{{png,svg,csv}}", dir.display());
    Ok(())
}
