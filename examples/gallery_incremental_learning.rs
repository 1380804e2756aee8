//! Gallery: incremental learning. figures/incremental_learning.{png,svg,csv} and the table
//! figures/incremental_learning.txt.
//!
//! n1 = n2 = 50, full width k = 50, X* with singular values 12, 6, 4, 3, m = 1000 Gaussian
//! measurements, α = 1e-4, GD at η = 0.01 for 600 steps (seed 0). The four singular values
//! of UVᵀ are learned one after another, the largest first, while the other 46 stay near the
//! start. For each σ_i the time t_i at which σ_i(UVᵀ) first reaches σ_i/2 (flow and GD) is
//! set against two predictions:
//! - the closed form of MATH §4, ln(σ_i/α² − 1)/(2σ_i) (identity operator, aligned start
//!   s_0 = α²);
//! - the spectral prediction for finite m (MATH §4): near the origin the flow is linear,
//!   U' = MV, V' = MᵀU with M = 𝒜*y, so the i-th mode grows at rate σ̂_i = σ_i(M) from
//!   s_0,i = ½‖(û_iᵀU_0 + v̂_iᵀV_0)‖², the start's projection on M's singular pair:
//!   ln(σ̂_i/s_0,i − 1)/(2σ̂_i).
//!
//! `cargo run --release --example gallery_incremental_learning` (about 5 s)

use gdflow::config::ConfigArgs;
use gdflow::experiments::{run, Command, RunExtras, Setup};
use gdflow::plot::{figures, write_figure, Panel, Series, Style};
use nalgebra::DMatrix;

fn main() -> anyhow::Result<()> {
    let args = ConfigArgs {
        n1: Some(50),
        n2: Some(50),
        rank: Some(4),
        width: Some(50),
        singular_values: Some(vec![12.0, 6.0, 4.0, 3.0]),
        measurements: Some(1000),
        alpha: Some(1e-4),
        eta: Some(0.01),
        steps: Some(600),
        seed: Some(0),
        spectrum_every: Some(1), // its figures and tables read every record
        ..Default::default()
    };
    let setup = Setup::new(&args, Command::Run, false)?;
    let result = run(&setup, &RunExtras::default())?;
    let problem = &setup.problem;
    let alpha = setup.config.alpha;

    // M = 𝒜*y and the start's projection on its singular pairs
    let (n1, n2) = (problem.x_star.nrows(), problem.x_star.ncols());
    let mut m = vec![0.0; n1 * n2];
    problem.op.adjoint(&problem.y, &mut m);
    let svd = DMatrix::from_column_slice(n1, n2, &m).svd(true, true);
    let (u, vt) = (svd.u.expect("asked for"), svd.v_t.expect("asked for"));

    let learned = |records: &[gdflow::analysis::Record], i: usize, target: f64| {
        records
            .iter()
            .find(|r| r.sv()[i] >= target / 2.0)
            .map(|r| r.t)
    };
    let mut closed_times = Vec::new();
    let mut table = String::from(
        "i  sigma_i  t_flow    t_gd      closed_form  sigma_hat_i  s0_i        spectral\n",
    );
    for (i, &sigma) in problem.target_sv.iter().enumerate() {
        let closed = (sigma / (alpha * alpha) - 1.0).ln() / (2.0 * sigma);
        closed_times.push(closed);
        let a = (u.column(i).transpose() * &problem.u0 + vt.row(i) * &problem.v0)
            / std::f64::consts::SQRT_2;
        let s0 = 0.5 * a.norm_squared();
        let rate = svd.singular_values[i];
        let spectral = (rate / s0 - 1.0).ln() / (2.0 * rate);
        let fmt = |t: Option<f64>| t.map_or("never".to_string(), |t| format!("{t:.3}"));
        table.push_str(&format!(
            "{}  {:<7}  {:<8}  {:<8}  {:<11.3}  {:<11.4}  {:<10.3e}  {:.3}\n",
            i + 1,
            sigma,
            fmt(learned(&result.flow, i, sigma)),
            fmt(learned(&result.gd, i, sigma)),
            closed,
            rate,
            s0,
            spectral
        ));
    }
    print!("{table}");
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("figures");
    let mut fig = figures::singular_values(&result, None);
    fig.name = "incremental_learning".into();
    fig.panels[0].title = "incremental learning: σ_i(UVᵀ), k = 50, α = 1e-4".into();
    // the staircase itself, on a linear axis, with the closed-form times as vertical lines
    let mut linear = Panel {
        title: "the staircase (linear axis)".into(),
        x_label: "t".into(),
        y_label: "σ_i(UVᵀ)".into(),
        ..Default::default()
    };
    for (i, &sigma) in problem.target_sv.iter().enumerate() {
        let label = |what: &str| format!("σ_{} {what}", i + 1);
        linear.series.push(Series::new(
            label("flow"),
            i,
            Style::Line,
            result.flow.iter().map(|r| (r.t, r.sv()[i])).collect(),
        ));
        linear.series.push(Series::new(
            "",
            i,
            Style::Dashed,
            result.gd.iter().map(|r| (r.t, r.sv()[i])).collect(),
        ));
        linear.series.push(Series::new(
            if i == 0 {
                "σ_i/2 at ln(σ_i/α² − 1)/(2σ_i)"
            } else {
                ""
            },
            i,
            Style::Guide,
            vec![(closed_times[i], 0.0), (closed_times[i], sigma / 2.0)],
        ));
    }
    linear.series.push(Series::new(
        "GD η = 0.01 (dashed)",
        6,
        Style::Dashed,
        vec![],
    ));
    fig.panels.push(linear);
    write_figure(&fig, &dir)?;
    std::fs::write(dir.join("incremental_learning.txt"), &table)?;
    println!(
        "wrote {}/incremental_learning.{{png,svg,csv,txt}}",
        dir.display()
    );
    Ok(())
}
