//! The closed-form case of MATH §4 through the library API: GD and the flow against
//! s(t) = σ / (1 + (σ/s_0 − 1) e^{−2σt}).
//!
//! `cargo run --release --example closed_form`

use gdflow::config::Method;
use gdflow::dynamics::flow::{solve_flow, FlowOptions};
use gdflow::dynamics::{gradient_descent, RunOptions as GdOptions};
use gdflow::field::{Field, SensingField};
use gdflow::problem::Problem;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let (sigma, s0) = ([1.0, 0.25], [1e-6, 1e-6]);
    let problem = Problem::aligned_factorisation(4, 3, &sigma, &s0);
    let field = SensingField::from_problem(&problem);
    let x0 = problem.start_state();
    let eta = 0.1;
    let opts = GdOptions::new(eta, 800, 80);
    let gd = gradient_descent(&field, &x0, &opts);
    let flow = solve_flow(
        &field,
        &x0,
        &gd.times,
        &gd.steps,
        &FlowOptions::new(Method::Tsit45, 1e-10, 1e-16),
    )?;
    println!(
        "{:>6} {:>12} {:>12} {:>12}",
        "t", "s_1 exact", "s_1 flow", "s_1 GD"
    );
    for ((t, xf), xg) in gd.times.iter().zip(&flow.trajectory.states).zip(&gd.states) {
        let exact = sigma[0] / (1.0 + (sigma[0] / s0[0] - 1.0) * (-2.0 * sigma[0] * t).exp());
        let sf = field.product(xf)[(0, 0)];
        let sg = field.product(xg)[(0, 0)];
        println!("{t:>6.1} {exact:>12.6e} {sf:>12.6e} {sg:>12.6e}");
    }
    println!("solver: {:?}", flow.stats);
    Ok(())
}
