//! figures/deviation_vs_eta.{png,svg,csv}: max_j ‖X_j − X(jη)‖ against η on the default
//! problem (seed 0), against the plain flow (slope ≈ 1) and GD's modified flow (slope ≈ 2),
//! with the reference solves' own error below.
//!
//! `cargo run --release --example fig_deviation_vs_eta`

use gdflow::config::{ConfigArgs, SweepArgs};
use gdflow::plot::{figures, write_figure};

fn main() -> anyhow::Result<()> {
    let sweep = SweepArgs {
        eta_range: Some("0.01:0.2:6".into()),
        stability_steps: Some(0),
        ..Default::default()
    };
    let s = gdflow::experiments::sweep_config(&ConfigArgs::default(), &sweep)?;
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("figures");
    write_figure(&figures::deviation_vs_eta(&s.summary), &dir)?;
    println!("wrote {}/deviation_vs_eta.{{png,svg,csv}}", dir.display());
    Ok(())
}
