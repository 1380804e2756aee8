//! figures/central_flow.{png,svg,csv}: GD against the gradient, modified and central flows
//! (MATH §8) on the problem of MATH §8 (n1 = 8, n2 = 7, r = 2, k = 3, m = 60, α = 1e-2,
//! seed 1), to t ≈ 270, at one step size below the stability limit (η = 0.5, 2/η = 4) and one
//! past it (2/η = 0.9·S*, S* the sharpness where the gradient flow ends). Top row: below;
//! bottom row: past. Columns: loss, relative error, sharpness with 2/η drawn.
//!
//! Below the limit the three flows and GD agree to O(η). Past it GD settles into a 2-cycle:
//! its iterates (grey dots) alternate, their two-step average follows the central flow, and
//! the gradient and modified flows converge to a sharper minimum GD cannot reach. The sharpness
//! at GD's average sits at 2/η; at the iterates it alternates on either side.
//!
//! `cargo run --release --example fig_central_flow` (a few seconds)

use gdflow::config::{ConfigArgs, FlowVariant};
use gdflow::dynamics::flow::{solve_flow_with, Times};
use gdflow::dynamics::sharpness::{top_eigenpairs, EigenOptions};
use gdflow::experiments::{run, Command, RunExtras, Setup};
use gdflow::plot::{write_figure, Figure, Panel};

const HORIZON: f64 = 270.0;

fn problem(eta: f64, flow: FlowVariant) -> ConfigArgs {
    ConfigArgs {
        n1: Some(8),
        n2: Some(7),
        rank: Some(2),
        width: Some(3),
        measurements: Some(60),
        alpha: Some(1e-2),
        seed: Some(1),
        eta: Some(eta),
        steps: Some((HORIZON / eta).round() as usize),
        flow: Some(flow),
        sharpness_every: Some(1),
        ..Default::default()
    }
}

/// The sharpness where the gradient flow is at t = HORIZON.
fn flattest_sharpness() -> anyhow::Result<f64> {
    let setup = Setup::new(&problem(1.0, FlowVariant::Plain), Command::Run, false)?;
    let field = setup.field();
    let mut end = Vec::new();
    solve_flow_with(
        field.as_ref(),
        &setup.start(),
        Times::Grid {
            dt: HORIZON,
            count: 2,
        },
        &setup.config.flow_options(),
        &mut |_, _, y| end = y.to_vec(),
        &mut |_| {},
    )?;
    let top = top_eigenpairs(
        field.as_ref(),
        &end,
        &[],
        &EigenOptions {
            tol: 1e-10,
            ..EigenOptions::default()
        },
        0,
    );
    top.lambda_max()
        .ok_or_else(|| anyhow::anyhow!("the sharpness did not converge"))
}

/// One row of panels for one η.
fn row(eta: f64, what: &str) -> anyhow::Result<Vec<Panel>> {
    let go = |flow| -> anyhow::Result<_> {
        let setup = Setup::new(&problem(eta, flow), Command::Run, false)?;
        Ok(run(&setup, &RunExtras::default())?)
    };
    let plain = go(FlowVariant::Plain)?;
    let modified = go(FlowVariant::Modified)?;
    let central = go(FlowVariant::Central)?;
    let summary = central.summary.central.as_ref().expect("a central run");
    println!(
        "η = {eta:.4} ({what}): 2/η = {:.4}; final relative error: GD {:.4}, GD's average {:.4}, \
         central {:.4}, gradient flow {:.4}, modified {:.4}; 2/η first reached at {}; \
         central work {} evaluations, {} Hessian–vector products; gradient flow {} rhs",
        2.0 / eta,
        central.gd.last().unwrap().rel_error(),
        central.gd_mean.last().unwrap().rel_error(),
        central.flow.last().unwrap().rel_error(),
        plain.flow.last().unwrap().rel_error(),
        modified.flow.last().unwrap().rel_error(),
        summary
            .report
            .first_reached
            .map_or("never".to_string(), |t| format!("t = {t:.3}")),
        summary.report.work.evaluations,
        summary.report.work.hvps,
        plain.summary.solver.rhs_evals,
    );
    Ok(gdflow::plot::figures::central_flow_panels(
        &central,
        &[("gradient flow", &plain), ("modified flow", &modified)],
        &format!(" ({what})"),
    ))
}

fn main() -> anyhow::Result<()> {
    let s_star = flattest_sharpness()?;
    println!("S* = {s_star:.6} (the sharpness where the gradient flow is at t = {HORIZON})");
    let mut panels = row(0.5, "below the limit")?;
    panels.extend(row(2.0 / (0.9 * s_star), "2/η = 0.9·S*")?);
    let fig = Figure {
        name: "central_flow".into(),
        panels,
        columns: Some(3),
    };
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("figures");
    write_figure(&fig, &dir)?;
    println!("wrote {}/central_flow.{{png,svg,csv}}", dir.display());
    Ok(())
}
