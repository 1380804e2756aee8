//! figures/work_precision.{png,svg,csv}: error against work for the flow solvers on the
//! issue-13 protocol problem (n1 = n2 = 50, r = 3, k = 10, m = 1500, α = 1e-8, seed 0; the flow
//! to t = 100 with outputs at t_j = 0.25·j, pure relative tolerance, atol = 1e-20). The error is
//! max_j ‖X(t_j) − X_ref(t_j)‖/‖X*‖ against DOP853 at rtol 1e-13; one curve per method, one
//! point per rtol; the work is seconds (left) and right-hand sides (right).
//!
//! `cargo run --release --example fig_work_precision` (about a minute)

use std::time::Instant;

use gdflow::config::{ConfigArgs, ErrorScale, Method};
use gdflow::dynamics::flow::{solve_flow_with, FlowOptions, Times};
use gdflow::experiments::{Command, Setup};
use gdflow::plot::{write_figure, Figure, Panel, Series, Style};

fn main() -> anyhow::Result<()> {
    let args = ConfigArgs {
        n1: Some(50),
        n2: Some(50),
        rank: Some(3),
        width: Some(10),
        measurements: Some(1500),
        alpha: Some(1e-8),
        ..Default::default()
    };
    let setup = Setup::new(&args, Command::Run, false)?;
    let field = setup.field();
    let x0 = setup.start();
    let norm = setup.problem.x_star.norm();
    let times = Times::Grid {
        dt: 0.25,
        count: 401,
    };
    let solve = |opts: &FlowOptions| -> anyhow::Result<(Vec<nalgebra::DMatrix<f64>>, f64, usize)> {
        let mut xs = Vec::new();
        let start = Instant::now();
        let (status, stats) = solve_flow_with(
            field.as_ref(),
            &x0,
            times,
            opts,
            &mut |_, _, y| xs.push(field.product(y)),
            &mut |_| {},
        )?;
        let secs = start.elapsed().as_secs_f64();
        anyhow::ensure!(status == gdflow::dynamics::Status::Completed, "{status:?}");
        Ok((xs, secs, stats.rhs_evals))
    };
    let reference = |rtol: f64| FlowOptions {
        scale: ErrorScale::State,
        ..FlowOptions::new(Method::Dop853, rtol, 1e-30)
    };
    let (xref, _, _) = solve(&reference(1e-13))?;
    let (xcheck, _, _) = solve(&reference(1e-12))?;
    let error = |xs: &[nalgebra::DMatrix<f64>]| -> f64 {
        xs.iter()
            .zip(&xref)
            .map(|(a, b)| (a - b).norm() / norm)
            .fold(0.0, f64::max)
    };
    println!(
        "reference (DOP853, rtol 1e-13) against rtol 1e-12: {:.2e}",
        error(&xcheck)
    );
    let curves: [(&str, Method, ErrorScale, &[f64]); 4] = [
        (
            "tsit45",
            Method::Tsit45,
            ErrorScale::Componentwise,
            &[1e-5, 1e-6, 1e-7, 1e-8, 1e-9],
        ),
        (
            "dop853 (state scale)",
            Method::Dop853,
            ErrorScale::State,
            &[1e-5, 1e-6, 1e-7, 1e-8, 1e-9, 1e-10],
        ),
        (
            "dop853 (componentwise)",
            Method::Dop853,
            ErrorScale::Componentwise,
            &[1e-5, 1e-6, 1e-7, 1e-8, 1e-9, 1e-10],
        ),
        (
            "bdf",
            Method::Bdf,
            ErrorScale::Componentwise,
            &[1e-5, 1e-6, 1e-7, 1e-8],
        ),
    ];
    let mut by_seconds = Vec::new();
    let mut by_rhs = Vec::new();
    println!(
        "{:<24} {:>8} {:>10} {:>8} {:>10}",
        "method", "rtol", "error", "rhs", "seconds"
    );
    for (i, (name, method, scale, rtols)) in curves.iter().enumerate() {
        let (mut s, mut r) = (Vec::new(), Vec::new());
        for &rtol in rtols.iter() {
            let opts = FlowOptions {
                scale: *scale,
                ..FlowOptions::new(*method, rtol, 1e-20)
            };
            let (xs, secs, rhs) = solve(&opts)?;
            let e = error(&xs);
            println!("{name:<24} {rtol:>8.0e} {e:>10.2e} {rhs:>8} {secs:>10.3}");
            s.push((secs, e));
            r.push((rhs as f64, e));
        }
        by_seconds.push(Series::new(*name, i, Style::Line, s));
        by_rhs.push(Series::new(*name, i, Style::Line, r));
    }
    let panel = |x_label: &str, series: Vec<Series>| Panel {
        title: "flow to t = 100, (50, 3, 10, 1500), α = 1e-8".into(),
        x_label: x_label.into(),
        y_label: "max_j ‖X(t_j) − X_ref(t_j)‖/‖X*‖".into(),
        log_x: true,
        log_y: true,
        series,
        texts: vec!["one point per rtol (1e-5 … 1e-10)".into()],
        ..Default::default()
    };
    let fig = Figure {
        columns: None,
        name: "work_precision".into(),
        panels: vec![
            panel("seconds", by_seconds),
            panel("right-hand sides", by_rhs),
        ],
    };
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("figures");
    write_figure(&fig, &dir)?;
    println!("wrote {}/work_precision.{{png,svg,csv}}", dir.display());
    Ok(())
}
