//! figures/phases.{png,svg,csv}: the phases of MATH §6 on the default problem with α = 1e-4
//! (seed 0): signal strength σ_r(L*ᵀU), alignment ‖sin Θ‖ and the spurious part
//! ‖(I − L*L*ᵀ)U‖ against t, with the detected ends of alignment and growth.
//!
//! `cargo run --release --example fig_phases`

use gdflow::analysis::theory::detect_phases;
use gdflow::config::ConfigArgs;
use gdflow::plot::{figures, write_figure};

fn main() -> anyhow::Result<()> {
    let run = gdflow::experiments::run_config(&ConfigArgs {
        alpha: Some(1e-4),
        eta: Some(0.05),
        steps: Some(1200),
        seed: Some(0),
        ..Default::default()
    })?;
    let sigma_r = *run
        .summary
        .problem
        .target_singular_values
        .last()
        .expect("rank >= 1");
    let phases = detect_phases(&run.flow, sigma_r, 0.1);
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("figures");
    write_figure(&figures::phases(&run, &phases), &dir)?;
    println!("wrote {}/phases.{{png,svg,csv}}", dir.display());
    Ok(())
}
