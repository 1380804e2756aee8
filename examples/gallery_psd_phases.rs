//! Gallery: the symmetric PSD case from a small start (Stöger and Soltanolkotabi, 2021).
//! figures/psd_phases.{png,svg,csv} and figures/psd_phases.txt.
//!
//! X* = X*ᵀ ⪰ 0 (n = 20, rank 2, σ = 1, 0.5), symmetric Gaussian A_i, m = 300, width k = 20,
//! f = ¼‖𝒜(UUᵀ) − y‖², GD at η = 0.05 and the flow, from α = 1e-4 and from α = 1e-6. The
//! three phases of MATH §6: alignment (the column space of U turns towards X*'s while U stays
//! small), growth (the signal σ_r(L*ᵀU) rises to √σ_r) and refinement (the spurious part
//! (I − L*L*ᵀ)U stays at the start's scale). Near the origin UUᵀ's component along an
//! eigenvector of X* grows like e^{2σ_i t}, so the end of growth should move by
//! ln(α_1²/α_2²)/(2σ_r) when α shrinks from α_1 to α_2; the text file sets the detected
//! boundaries against that.
//!
//! `cargo run --release --example gallery_psd_phases` (about 2 s)

use gdflow::analysis::theory::detect_phases;
use gdflow::config::ConfigArgs;
use gdflow::plot::{figures, write_figure, Figure};

fn main() -> anyhow::Result<()> {
    let mut panels = Vec::new();
    let mut table = String::from("alpha   end_of_alignment  end_of_growth  (flow)\n");
    let mut growth_ends = Vec::new();
    let sigma = [1.0, 0.5];
    for alpha in [1e-4, 1e-6] {
        let run = gdflow::experiments::run_config(&ConfigArgs {
            n1: Some(20),
            n2: Some(20),
            rank: Some(2),
            width: Some(20),
            singular_values: Some(sigma.to_vec()),
            measurements: Some(300),
            symmetric: Some(true),
            alpha: Some(alpha),
            eta: Some(0.05),
            steps: Some(1000),
            seed: Some(0),
            spectrum_every: Some(1), // its figures and tables read every record
            ..Default::default()
        })?;
        let phases = detect_phases(&run.flow, sigma[1], 0.1);
        let fmt = |t: Option<f64>| t.map_or("not detected".to_string(), |t| format!("{t:.3}"));
        table.push_str(&format!(
            "{alpha:<7.0e} {:<17} {}\n",
            fmt(phases.end_of_alignment),
            fmt(phases.end_of_growth)
        ));
        growth_ends.push(phases.end_of_growth);
        let mut fig = figures::phases(&run, &phases);
        fig.panels[0].title = format!("symmetric PSD, α = {alpha:.0e}");
        panels.extend(fig.panels);
    }
    let predicted = ((1e-4f64 / 1e-6).powi(2)).ln() / (2.0 * sigma[1]);
    if let [Some(a), Some(b)] = growth_ends[..] {
        table.push_str(&format!(
            "end of growth moved by {:.3}; predicted ln(α_1²/α_2²)/(2σ_r) = {predicted:.3}\n",
            b - a
        ));
    }
    print!("{table}");
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("figures");
    let fig = Figure {
        name: "psd_phases".into(),
        panels,
        columns: None,
    };
    write_figure(&fig, &dir)?;
    std::fs::write(dir.join("psd_phases.txt"), &table)?;
    println!("wrote {}/psd_phases.{{png,svg,csv,txt}}", dir.display());
    Ok(())
}
