//! Gallery: heavy ball (and Nesterov) against their continuous limits (MATH §9).
//! figures/momentum.{png,svg,csv} and figures/momentum.txt.
//!
//! MATH §9's 8×7 problem (r = 2, k = 3, m = 60, α = 0.3, seed 1), every run to T = 6.
//! Left: heavy ball at fixed β = 0.5 against its plain limit x' = −∇f/(1−β) (order 1 in η)
//! and its modified limit from the shifted start (order 2), the distance at T. Middle: heavy
//! ball at the critical scaling β = 1 − γ√η (γ = 1) and Nesterov, against their second-order
//! limits, at time t = j√η (order 1 in √η). Right: one run of each second-order method
//! beside its limit, relative error against time.
//!
//! `cargo run --release --example gallery_momentum` (a few seconds)

use gdflow::config::{ConfigArgs, FlowVariant};
use gdflow::experiments::run_config;
use gdflow::plot::{write_figure, Figure, Panel, Series, Style};

const HORIZON: f64 = 6.0;

fn args(optimizer: &str, flow: FlowVariant, eta: f64, steps: usize) -> ConfigArgs {
    ConfigArgs {
        n1: Some(8),
        n2: Some(7),
        rank: Some(2),
        width: Some(3),
        measurements: Some(60),
        alpha: Some(0.3),
        seed: Some(1),
        eta: Some(eta),
        steps: Some(steps),
        flow: Some(flow),
        optimizer: Some(optimizer.into()),
        rtol: Some(1e-11),
        atol: Some(1e-14),
        ..Default::default()
    }
}

/// Least-squares slope of ln d against ln h.
fn slope(points: &[(f64, f64)]) -> f64 {
    let n = points.len() as f64;
    let (xs, ys): (Vec<f64>, Vec<f64>) = points.iter().map(|(h, d)| (h.ln(), d.ln())).unzip();
    let (mx, my) = (xs.iter().sum::<f64>() / n, ys.iter().sum::<f64>() / n);
    let sxy: f64 = xs.iter().zip(&ys).map(|(x, y)| (x - mx) * (y - my)).sum();
    let sxx: f64 = xs.iter().map(|x| (x - mx).powi(2)).sum();
    sxy / sxx
}

/// The final distance ‖X_J − X(T)‖ for each h (h = η, or √η when `root`).
fn distances(
    optimizer: &str,
    flow: FlowVariant,
    hs: &[f64],
    root: bool,
    set: impl Fn(&mut ConfigArgs),
) -> anyhow::Result<Vec<(f64, f64)>> {
    hs.iter()
        .map(|&h| {
            let eta = if root { h * h } else { h };
            let mut a = args(optimizer, flow, eta, (HORIZON / h).round() as usize);
            a.record_every = a.steps;
            set(&mut a);
            let r = run_config(&a)?;
            Ok((h, r.summary.distance.expect("common times").final_distance))
        })
        .collect()
}

fn main() -> anyhow::Result<()> {
    let etas: Vec<f64> = (0..6).map(|i| 0.08 / 2f64.powi(i)).collect();
    let roots: Vec<f64> = (0..6).map(|i| 0.4 / 2f64.powi(i)).collect();
    let beta = |a: &mut ConfigArgs| a.momentum = Some(0.5);
    let gamma = |a: &mut ConfigArgs| a.friction = Some(1.0);
    let hb_plain = distances("heavy-ball", FlowVariant::Plain, &etas, false, beta)?;
    let hb_mod = distances("heavy-ball", FlowVariant::Modified, &etas, false, beta)?;
    let hb_crit = distances("heavy-ball", FlowVariant::Plain, &roots, true, gamma)?;
    let nest = distances("nesterov", FlowVariant::Plain, &roots, true, |_| {})?;
    let fits = [
        ("heavy ball β = 0.5, plain limit (η)", slope(&hb_plain), 1.0),
        (
            "heavy ball β = 0.5, modified limit (η)",
            slope(&hb_mod),
            2.0,
        ),
        (
            "heavy ball γ = 1, Ẍ + γẊ + ∇f = 0 (√η)",
            slope(&hb_crit),
            1.0,
        ),
        ("Nesterov, Ẍ + (3/t)Ẋ + ∇f = 0 (√η)", slope(&nest), 1.0),
    ];
    let mut table =
        String::from("h        hb_plain   hb_modified  |  sqrt_eta  hb_critical  nesterov\n");
    for i in 0..etas.len() {
        table.push_str(&format!(
            "{:<7.5}  {:<9.3e}  {:<11.3e}  |  {:<8.5}  {:<11.3e}  {:.3e}\n",
            etas[i], hb_plain[i].1, hb_mod[i].1, roots[i], hb_crit[i].1, nest[i].1
        ));
    }
    for (what, p, want) in &fits {
        table.push_str(&format!("fitted order, {what}: {p:.3} (theory {want})\n"));
    }
    print!("{table}");

    let fixed = Panel {
        title: "heavy ball, fixed β = 0.5 (t = jη)".into(),
        x_label: "step size η".into(),
        y_label: "‖X_J − X(T)‖, T = 6".into(),
        log_x: true,
        log_y: true,
        series: vec![
            Series::new("plain limit", 0, Style::Line, hb_plain.clone()),
            Series::new("", 0, Style::Markers, hb_plain),
            Series::new(
                "modified limit (shifted start)",
                1,
                Style::Line,
                hb_mod.clone(),
            ),
            Series::new("", 1, Style::Markers, hb_mod),
        ],
        texts: vec![format!(
            "fitted orders {:.2} (plain) and {:.2} (modified)",
            fits[0].1, fits[1].1
        )],
        ..Default::default()
    };
    let critical = Panel {
        title: "second-order limits (t = j√η)".into(),
        x_label: "√η".into(),
        y_label: "‖X_J − X(T)‖, T = 6".into(),
        log_x: true,
        log_y: true,
        series: vec![
            Series::new("heavy ball, β = 1 − √η", 2, Style::Line, hb_crit.clone()),
            Series::new("", 2, Style::Markers, hb_crit),
            Series::new("Nesterov", 3, Style::Line, nest.clone()),
            Series::new("", 3, Style::Markers, nest),
        ],
        texts: vec![format!(
            "fitted orders in √η: {:.2} (heavy ball), {:.2} (Nesterov)",
            fits[2].1, fits[3].1
        )],
        ..Default::default()
    };
    // one run of each beside its limit, √η = 0.1
    let mut paths = Panel {
        title: "√η = 0.1: the methods beside their limits".into(),
        x_label: "time t = j√η".into(),
        y_label: "‖UVᵀ − X*‖ / ‖X*‖".into(),
        log_y: true,
        ..Default::default()
    };
    for (color, name, set) in [
        (2, "heavy ball γ = 1", gamma as fn(&mut ConfigArgs)),
        (3, "Nesterov", |_: &mut ConfigArgs| {}),
    ] {
        let optimizer = if color == 2 { "heavy-ball" } else { "nesterov" };
        let mut a = args(optimizer, FlowVariant::Plain, 0.01, 150);
        set(&mut a);
        let r = run_config(&a)?;
        let pts = |recs: &[gdflow::analysis::Record]| {
            recs.iter()
                .map(|x| (x.t, x.rel_error()))
                .collect::<Vec<_>>()
        };
        paths
            .series
            .push(Series::new(name, color, Style::Line, pts(&r.gd)));
        paths.series.push(Series::new(
            format!("{name}: limit"),
            color,
            Style::Dashed,
            pts(&r.flow),
        ));
    }
    let fig = Figure {
        name: "momentum".into(),
        panels: vec![fixed, critical, paths],
        columns: None,
    };
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("figures");
    write_figure(&fig, &dir)?;
    std::fs::write(dir.join("momentum.txt"), &table)?;
    println!("wrote {}/momentum.{{png,svg,csv,txt}}", dir.display());
    Ok(())
}
