//! Gallery: the perturbed gradient flow (Wind, arXiv 2309.01796). figures/perturbed_flow.
//! {png,svg,csv} and figures/perturbed_flow.txt.
//!
//! U' = (X* − UVᵀ + E)V, V' = (X* − UVᵀ + E)ᵀU on the default problem (seed 0) with E the
//! sensing error (𝒜*𝒜 − I)(X* − UVᵀ) and with relative perturbations
//! E = ε‖X* − UVᵀ‖·W/‖W‖ of growing size ε (W a fixed Gaussian direction). Left: the ratio
//! ρ(t) = ‖E‖_op/‖X* − UVᵀ‖_op along each flow (MATH §5); right: the relative error. The
//! theory: the flow converges while ρ stays below a constant; the table lists, for each
//! perturbation, max ρ and the final error, and so where convergence is lost.
//!
//! `cargo run --release --example gallery_perturbed_flow` (about 2 s)

use gdflow::config::ConfigArgs;
use gdflow::field::PerturbationModel;
use gdflow::plot::{write_figure, Figure, Panel, Series, Style};

fn main() -> anyhow::Result<()> {
    let cases: Vec<(String, PerturbationModel, f64)> =
        std::iter::once(("sensing E".to_string(), PerturbationModel::Sensing, 0.0))
            .chain(
                [0.1, 0.3, 0.6, 0.9, 1.2, 1.5]
                    .iter()
                    .map(|&e| (format!("relative ε = {e}"), PerturbationModel::Relative, e)),
            )
            .collect();
    let mut rho = Panel {
        title: "ρ(t) = ‖E‖_op / ‖X* − UVᵀ‖_op".into(),
        x_label: "t".into(),
        y_label: "ρ".into(),
        log_y: true,
        ..Default::default()
    };
    let mut error = Panel {
        title: "relative error".into(),
        x_label: "t".into(),
        y_label: "‖UVᵀ − X*‖ / ‖X*‖".into(),
        log_y: true,
        ..Default::default()
    };
    let mut table = String::from("perturbation        max_rho_after_t1  final_rel_error\n");
    for (i, (name, model, size)) in cases.iter().enumerate() {
        let run = gdflow::experiments::run_config(&ConfigArgs {
            perturbation: Some(*model),
            perturbation_size: (*model == PerturbationModel::Relative).then_some(*size),
            eta: Some(0.05),
            steps: Some(1200),
            record_every: Some(4),
            seed: Some(0),
            spectrum_every: Some(1), // its figures and tables read every record
            ..Default::default()
        })?;
        let max_rho = run
            .flow
            .iter()
            .filter(|r| r.t >= 1.0)
            .map(|r| r.rho())
            .fold(0.0, f64::max);
        let last = run.flow.last().expect("records");
        table.push_str(&format!(
            "{name:<19} {max_rho:<17.3} {:.3e}\n",
            last.rel_error()
        ));
        let color = if i == 0 { 6 } else { i - 1 };
        rho.series.push(Series::new(
            name.clone(),
            color,
            Style::Line,
            run.flow.iter().map(|r| (r.t, r.rho())).collect(),
        ));
        error.series.push(Series::new(
            name.clone(),
            color,
            Style::Line,
            run.flow.iter().map(|r| (r.t, r.rel_error())).collect(),
        ));
    }
    print!("{table}");
    let fig = Figure {
        name: "perturbed_flow".into(),
        panels: vec![rho, error],
        columns: None,
    };
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("figures");
    write_figure(&fig, &dir)?;
    std::fs::write(dir.join("perturbed_flow.txt"), &table)?;
    println!("wrote {}/perturbed_flow.{{png,svg,csv,txt}}", dir.display());
    Ok(())
}
