//! Gallery: ScaledGD(λ) against GD on ill-conditioned matrix sensing, each beside its flow.
//! figures/scaled_gd.{png,svg,csv} and figures/scaled_gd.txt.
//!
//! n1 = n2 = 50, r = 5, m = 5·n·r = 1250 Gaussian measurements, σ_i geometric from 1 to 1/κ,
//! κ ∈ {1, 5, 10, 20}, α = 1e-3 (the ScaledGD paper's headline, Tong, Ma, Chi 2021; from a
//! small start with λ > 0, Xu, Shen, Ma, Chi 2023). ScaledGD(λ = 0.01·σ_r) at η = 0.3, GD at
//! η = 0.3/σ_1. With k = r (top row) the iterations to a relative error of 1e-6 hardly depend
//! on κ for ScaledGD and grow like κ for GD; each method is drawn beside its plain limit (the
//! gradient flow, the preconditioned flow) at t = jη. With k = 2r (bottom right) both slow
//! down: over-parameterisation's cost is part of the answer.
//!
//! `cargo run --release --example gallery_scaled_gd` (about a minute)

use std::sync::Arc;

use gdflow::config::ConfigArgs;
use gdflow::dynamics::{Driver, Iterate, RunOptions, SaveAt};
use gdflow::experiments::{run, Command, RunExtras, Setup};
use gdflow::plot::{write_figure, Figure, Panel, Series, Style};

const KAPPAS: [f64; 4] = [1.0, 5.0, 10.0, 20.0];
const TARGET: f64 = 1e-6;
const ETA: f64 = 0.3;

fn args(kappa: f64, width: usize, optimizer: &str, steps: usize) -> ConfigArgs {
    ConfigArgs {
        n1: Some(50),
        n2: Some(50),
        rank: Some(5),
        width: Some(width),
        measurements: Some(1250),
        alpha: Some(1e-3),
        kappa: Some(kappa),
        seed: Some(0),
        eta: Some(ETA), // σ_1 = 1: GD's η = 0.3/σ_1 is ScaledGD's
        steps: Some(steps),
        optimizer: Some(optimizer.into()),
        ..Default::default()
    }
}

/// The first step at which the relative error is below [`TARGET`].
fn first_below(points: &[(f64, f64)]) -> Option<f64> {
    points.iter().find(|p| p.1 < TARGET).map(|p| p.0)
}

/// (method, flow) relative errors against the iteration index j = t/η, k = r.
fn with_flow(kappa: f64, optimizer: &str, steps: usize) -> anyhow::Result<[Vec<(f64, f64)>; 2]> {
    let setup = Setup::new(&args(kappa, 5, optimizer, steps), Command::Run, false)?;
    let r = run(&setup, &RunExtras::default())?;
    let series = |recs: &[gdflow::analysis::Record]| {
        recs.iter()
            .map(|x| (x.step as f64, x.rel_error()))
            .collect::<Vec<_>>()
    };
    Ok([series(&r.gd), series(&r.flow)])
}

/// The method alone (no flow), every `every`-th relative error, for k = 2r.
fn method_only(kappa: f64, optimizer: &str, steps: usize) -> anyhow::Result<Vec<(f64, f64)>> {
    let setup = Setup::new(&args(kappa, 10, optimizer, steps), Command::Run, false)?;
    let opt = setup.optimizer()?;
    let field: Arc<dyn gdflow::field::Field> = setup.field();
    let x_star = &setup.problem.x_star;
    let norm = x_star.norm();
    let mut out = Vec::new();
    let opts = RunOptions {
        save: SaveAt::Nothing,
        ..RunOptions::new(ETA, steps, 1)
    };
    Driver::new(field.as_ref(), opt.stepper(ETA), &setup.start(), opts).run(&mut |it: &Iterate<
        '_,
    >| {
        if it.step % 10 == 0 || it.step == steps {
            let e = (field.product(it.state) - x_star).norm() / norm;
            out.push((it.step as f64, e));
        }
    });
    Ok(out)
}

fn main() -> anyhow::Result<()> {
    let mut table = String::from(
        "kappa  k   gd_iters_to_1e-6  scaled_gd_iters_to_1e-6  gd_rel_err_end  scaled_gd_rel_err_end\n",
    );
    let mut gd_panel = Panel {
        title: "GD (η = 0.3/σ₁), k = r, beside the gradient flow".into(),
        x_label: "iteration j (flow at t = jη)".into(),
        y_label: "‖UVᵀ − X*‖ / ‖X*‖".into(),
        log_y: true,
        y_range: Some((1e-9, 3.0)),
        ..Default::default()
    };
    let mut sgd_panel = Panel {
        title: "ScaledGD(λ = 0.01σ_r), η = 0.3, k = r, beside its flow".into(),
        ..gd_panel.clone()
    };
    let mut iters = Panel {
        title: format!("iterations to relative error {TARGET:e}"),
        x_label: "condition number κ".into(),
        y_label: "iterations".into(),
        ..Default::default()
    };
    let mut wide = Panel {
        title: "k = 2r: both slow down (no flows)".into(),
        ..gd_panel.clone()
    };
    let (mut gd_iters, mut sgd_iters) = (Vec::new(), Vec::new());
    let (mut gd_iters_wide, mut sgd_iters_wide) = (Vec::new(), Vec::new());
    for (c, &kappa) in KAPPAS.iter().enumerate() {
        let [gd, gd_flow] = with_flow(kappa, "gd", 3000)?;
        let [sgd, sgd_flow] = with_flow(kappa, "scaled-gd", 600)?;
        let label = format!("κ = {kappa}");
        gd_panel
            .series
            .push(Series::new(&label, c, Style::Line, gd.clone()));
        gd_panel
            .series
            .push(Series::new("", c, Style::Dashed, gd_flow));
        sgd_panel
            .series
            .push(Series::new(&label, c, Style::Line, sgd.clone()));
        sgd_panel
            .series
            .push(Series::new("", c, Style::Dashed, sgd_flow));
        let gw = method_only(kappa, "gd", 4000)?;
        let sw = method_only(kappa, "scaled-gd", 4000)?;
        wide.series.push(Series::new(
            format!("GD, {label}"),
            c,
            Style::Line,
            gw.clone(),
        ));
        wide.series.push(Series::new(
            format!("ScaledGD, {label}"),
            c,
            Style::Dashed,
            sw.clone(),
        ));
        let fmt = |v: Option<f64>| v.map_or("> run".to_string(), |v| format!("{v:.0}"));
        let end = |s: &[(f64, f64)]| s.last().map_or(f64::NAN, |p| p.1);
        for (k, g, s) in [(5, &gd, &sgd), (10, &gw, &sw)] {
            table.push_str(&format!(
                "{kappa:<5}  {k:<2}  {:<16}  {:<23}  {:<14.3e}  {:.3e}\n",
                fmt(first_below(g)),
                fmt(first_below(s)),
                end(g),
                end(s)
            ));
        }
        if let Some(v) = first_below(&gd) {
            gd_iters.push((kappa, v));
        }
        if let Some(v) = first_below(&sgd) {
            sgd_iters.push((kappa, v));
        }
        if let Some(v) = first_below(&gw) {
            gd_iters_wide.push((kappa, v));
        }
        if let Some(v) = first_below(&sw) {
            sgd_iters_wide.push((kappa, v));
        }
    }
    gd_panel
        .texts
        .push("solid: GD; dashed: the gradient flow (under GD where they agree)".into());
    sgd_panel
        .texts
        .push("solid: ScaledGD; dashed: the preconditioned flow".into());
    for (name, color, style, pts) in [
        ("GD, k = r", 0, Style::Line, gd_iters),
        ("ScaledGD, k = r", 1, Style::Line, sgd_iters),
        ("GD, k = 2r", 0, Style::Dashed, gd_iters_wide),
        ("ScaledGD, k = 2r", 1, Style::Dashed, sgd_iters_wide),
    ] {
        iters
            .series
            .push(Series::new(name, color, style, pts.clone()));
        iters
            .series
            .push(Series::new("", color, Style::Markers, pts));
    }
    iters
        .texts
        .push("a missing point: not reached within the run".into());
    print!("{table}");
    let fig = Figure {
        name: "scaled_gd".into(),
        panels: vec![gd_panel, sgd_panel, iters, wide],
        columns: Some(2),
    };
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("figures");
    write_figure(&fig, &dir)?;
    std::fs::write(dir.join("scaled_gd.txt"), &table)?;
    println!("wrote {}/scaled_gd.{{png,svg,csv,txt}}", dir.display());
    Ok(())
}
