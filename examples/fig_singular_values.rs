//! figures/singular_values.{png,svg,csv}: incremental learning. Target σ = (1, 0.3, 0.1),
//! overparameterised (k = 5), α = 1e-4: each σ_i of UVᵀ rises in turn, the larger first, near
//! ln(σ_i/α²)/(2σ_i) (MATH §4); the spurious ones stay at the start's scale (seed 0).
//!
//! `cargo run --release --example fig_singular_values`

use gdflow::config::ConfigArgs;
use gdflow::plot::{figures, write_figure};

fn main() -> anyhow::Result<()> {
    let run = gdflow::experiments::run_config(&ConfigArgs {
        singular_values: Some(vec![1.0, 0.3, 0.1]),
        rank: Some(3),
        width: Some(5),
        alpha: Some(1e-4),
        measurements: Some(700),
        eta: Some(0.1),
        steps: Some(1500),
        seed: Some(0),
        ..Default::default()
    })?;
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("figures");
    write_figure(&figures::singular_values(&run), &dir)?;
    println!("wrote {}/singular_values.{{png,svg,csv}}", dir.display());
    Ok(())
}
