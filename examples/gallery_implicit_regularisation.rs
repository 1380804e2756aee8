//! Gallery: implicit regularisation by a small start. figures/implicit_regularisation.{png,
//! svg,csv} and figures/implicit_regularisation.txt.
//!
//! Under-sampled sensing: n1 = n2 = 20, rank 2 (σ = 1, 0.5), full width k = 20, m = 200
//! Gaussian measurements (half of n1·n2 = 400, so 𝒜(X) = y has a 200-dimensional affine
//! space of solutions and the loss alone does not pick X*). GD at η = 0.05 and the flow run to
//! t = 200 from α = 1, 10⁻¹, …, 10⁻⁵; the test error ‖UVᵀ − X*‖/‖X*‖ at the end falls with α
//! (the small start picks the low-rank solution). The fitted power is the slope of
//! log(error) against log(α) over α ≤ 0.1 (α = 1 is not a small start).
//!
//! `cargo run --release --example gallery_implicit_regularisation` (about 4 s)

use gdflow::analysis::fit::slope;
use gdflow::config::ConfigArgs;
use gdflow::plot::{write_figure, Figure, Panel, Series, Style};

fn main() -> anyhow::Result<()> {
    let alphas: Vec<f64> = (0..6).map(|i| 10f64.powi(-i)).collect();
    let (mut gd, mut flow, mut loss) = (vec![], vec![], vec![]);
    let mut table = String::from("alpha   test_error_gd  test_error_flow  final_loss_flow\n");
    for &alpha in &alphas {
        let run = gdflow::experiments::run_config(&ConfigArgs {
            n1: Some(20),
            n2: Some(20),
            rank: Some(2),
            width: Some(20),
            singular_values: Some(vec![1.0, 0.5]),
            measurements: Some(200),
            alpha: Some(alpha),
            eta: Some(0.05),
            steps: Some(4000),
            record_every: Some(40),
            seed: Some(0),
            ..Default::default()
        })?;
        let (g, f) = (
            run.gd.last().expect("records"),
            run.flow.last().expect("records"),
        );
        gd.push((alpha, g.rel_error()));
        flow.push((alpha, f.rel_error()));
        loss.push(f.loss());
        table.push_str(&format!(
            "{alpha:<7.0e} {:<14.4e} {:<16.4e} {:.3e}\n",
            g.rel_error(),
            f.rel_error(),
            f.loss()
        ));
    }
    // α = 1 is the lazy regime (the start is not small): the power is fitted below it
    let converged: Vec<(f64, f64)> = flow
        .iter()
        .filter(|p| p.0 <= 0.1)
        .map(|p| (p.0.ln(), p.1.ln()))
        .collect();
    let xs: Vec<f64> = converged.iter().map(|p| p.0).collect();
    let ys: Vec<f64> = converged.iter().map(|p| p.1).collect();
    let fit = (xs.len() >= 2).then(|| slope(&xs, &ys));
    let fit_text = match fit {
        Some(s) => format!(
            "fitted power (flow, the {} α ≤ 0.1): error ∝ α^{s:.3}",
            xs.len()
        ),
        None => "fitted power: fewer than two converged α".to_string(),
    };
    table.push_str(&fit_text);
    table.push('\n');
    print!("{table}");
    let mut p = Panel {
        title: "test error against the start's scale".into(),
        x_label: "α".into(),
        y_label: "‖UVᵀ − X*‖ / ‖X*‖ at t = 200".into(),
        log_x: true,
        log_y: true,
        texts: vec![fit_text],
        ..Default::default()
    };
    p.series
        .push(Series::new("gradient flow", 6, Style::Line, flow.clone()));
    p.series.push(Series::new("", 6, Style::Markers, flow));
    p.series
        .push(Series::new("GD η = 0.05", 0, Style::Dashed, gd.clone()));
    p.series.push(Series::new("", 0, Style::Markers, gd));
    let fig = Figure {
        name: "implicit_regularisation".into(),
        panels: vec![p],
        columns: None,
    };
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("figures");
    write_figure(&fig, &dir)?;
    std::fs::write(dir.join("implicit_regularisation.txt"), &table)?;
    println!(
        "wrote {}/implicit_regularisation.{{png,svg,csv,txt}}",
        dir.display()
    );
    Ok(())
}
