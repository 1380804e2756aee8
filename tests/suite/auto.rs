//! `--method auto`: Tsit45 while the flow is not stiff, BDF while it is.

use gdflow::config::{ConfigArgs, Method};
use gdflow::dynamics::flow::{solve_flow, solve_flow_with, tsit45_stability_bound, FlowOptions};
use gdflow::dynamics::sharpness::sharpness;
use gdflow::dynamics::Status;
use gdflow::field::{Field, SensingField};
use gdflow::problem::Problem;

/// MATH §4 with κ = 100: the σ = 2 mode converges by t ≈ 5 and pins Tsit45's step at its
/// stability limit, while the σ = 0.02 mode still needs t ≈ 300.
const SIGMA: [f64; 3] = [2.0, 0.02, 0.0];
const S0: [f64; 3] = [1e-4, 3e-4, 2e-2];
const HORIZON: f64 = 400.0;

fn flow_exact(sigma: f64, s0: f64, t: f64) -> f64 {
    if sigma == 0.0 {
        s0 / (1.0 + 2.0 * s0 * t)
    } else {
        sigma / (1.0 + (sigma / s0 - 1.0) * (-2.0 * sigma * t).exp())
    }
}

fn outputs(horizon: f64, count: usize) -> (Vec<f64>, Vec<usize>) {
    let steps: Vec<usize> = (0..=count).collect();
    let times = steps
        .iter()
        .map(|&j| horizon * j as f64 / count as f64)
        .collect();
    (times, steps)
}

#[test]
fn auto_switches_on_a_stiff_closed_form_and_keeps_its_accuracy() {
    let p = Problem::aligned_factorisation(5, 4, &SIGMA, &S0);
    let field = SensingField::from_problem(&p);
    let x0 = p.start_state();
    let (times, steps) = outputs(HORIZON, 400);
    let rtol = 1e-8;
    let solve = |method| {
        solve_flow(
            &field,
            &x0,
            &times,
            &steps,
            &FlowOptions::new(method, rtol, rtol * 1e-4),
        )
        .unwrap()
    };
    let auto = solve(Method::Auto);
    // below rtol 1e-6 auto's explicit method is DOP853
    let explicit = Method::explicit_for(rtol);
    let tsit = solve(explicit);
    assert_eq!(auto.trajectory.status, Status::Completed);
    assert_eq!(auto.trajectory.times, times);

    let mut worst: f64 = 0.0;
    for (t, x) in auto.trajectory.times.iter().zip(&auto.trajectory.states) {
        let prod = field.product(x);
        for j in 0..S0.len() {
            worst = worst.max((prod[(j, j)] - flow_exact(SIGMA[j], S0[j], *t)).abs());
        }
    }
    // BDF's allowance in the closed-form test of every method.
    assert!(
        worst < 100.0 * rtol * SIGMA[0],
        "auto's error {worst:e} exceeds 100 × rtol·σ_1"
    );

    let report = auto.stats.auto.as_ref().expect("auto reports its monitor");
    let first = report.switches.first().expect("a stiff flow switches");
    assert_eq!(
        (first.from.as_str(), first.to.as_str()),
        (explicit.name(), "bdf")
    );
    assert!(first.h_rho >= report.to_implicit_fraction * report.stability_bound);
    assert!(
        (report.time_explicit + report.time_implicit - HORIZON).abs() < 1e-9 * HORIZON,
        "the two methods' stretches cover the horizon"
    );
    // The point of switching: fewer evaluations, each Jacobian counted at its cost.
    let auto_cost = auto.stats.rhs_evals as f64
        + report.hvp_evals as f64
        + auto.stats.jacobian_evals as f64 * report.switch_cost_rhs;
    assert!(
        auto_cost < 0.5 * tsit.stats.rhs_evals as f64,
        "auto costs {auto_cost} rhs-equivalents, {} {}",
        explicit.name(),
        tsit.stats.rhs_evals
    );
}

/// The bound the monitor compares h·ρ with is where diffsol's Tsit45 actually holds its step
/// once accuracy no longer limits it.
#[test]
fn tsit45_steps_are_pinned_at_the_stability_bound() {
    let bound = tsit45_stability_bound();
    assert!(
        (2.5..4.5).contains(&bound),
        "a 5th-order explicit RK's real stability interval is about 3 to 4, got {bound}"
    );
    let p = Problem::aligned_factorisation(5, 4, &SIGMA, &S0);
    let field = SensingField::from_problem(&p);
    let x0 = p.start_state();
    let (times, steps) = outputs(HORIZON, 4);
    let mut step_ends = vec![];
    let mut end = vec![];
    let _ = steps;
    solve_flow_with(
        &field,
        &x0,
        gdflow::dynamics::flow::Times::List(&times),
        &FlowOptions::new(Method::Tsit45, 1e-6, 1e-10),
        &mut |_, _, y| end = y.to_vec(),
        &mut |t| step_ends.push(t),
    )
    .unwrap();
    let top = sharpness(&field, &end, 0, 1e-9, 10_000);
    assert!(top.converged);
    // near the minimum the Hessian is positive semidefinite: λ_max is the spectral radius
    let rho = top.values[0];
    // Past t = 350 every mode has converged: only stability limits the step.
    let late: Vec<f64> = step_ends
        .windows(2)
        .filter(|w| w[0] > 350.0)
        .map(|w| w[1] - w[0])
        .collect();
    assert!(late.len() > 20);
    let mean_h_rho = late.iter().sum::<f64>() / late.len() as f64 * rho;
    assert!(
        (0.6 * bound..=1.02 * bound).contains(&mean_h_rho),
        "Tsit45 holds h·ρ at {mean_h_rho}, the bound is {bound}"
    );
}

/// A Gaussian sensing problem with κ = 100, solved to rtol 1e-8 by Tsit45, BDF and auto and
/// compared with a Tsit45 reference at rtol 1e-11.
#[test]
fn auto_gives_the_trajectory_of_tsit45_and_bdf_within_tolerance() {
    let args = ConfigArgs {
        n1: Some(12),
        n2: Some(10),
        rank: Some(2),
        width: Some(4),
        measurements: Some(240),
        kappa: Some(100.0),
        alpha: Some(1e-3),
        ..Default::default()
    };
    let p = Problem::generate(&args.resolve().unwrap().problem_spec()).unwrap();
    let field = SensingField::from_problem(&p);
    let x0 = p.start_state();
    let (times, steps) = outputs(1500.0, 300);
    let solve = |method, rtol: f64| {
        let sol = solve_flow(
            &field,
            &x0,
            &times,
            &steps,
            &FlowOptions::new(method, rtol, rtol * 1e-3 / 2.0),
        )
        .unwrap();
        assert_eq!(sol.trajectory.status, Status::Completed, "{method:?}");
        sol
    };
    let reference = solve(Method::Tsit45, 1e-11);
    let scale = reference
        .trajectory
        .states
        .iter()
        .map(|x| norm(x))
        .fold(0.0, f64::max);
    let distance = |a: &gdflow::dynamics::flow::FlowSolution,
                    b: &gdflow::dynamics::flow::FlowSolution| {
        a.trajectory
            .states
            .iter()
            .zip(&b.trajectory.states)
            .map(|(x, y)| norm(&x.iter().zip(y).map(|(p, q)| p - q).collect::<Vec<_>>()))
            .fold(0.0, f64::max)
    };
    let rtol = 1e-8;
    let auto = solve(Method::Auto, rtol);
    assert!(
        !auto.stats.auto.as_ref().unwrap().switches.is_empty(),
        "the ill-conditioned flow is stiff"
    );
    for other in [solve(Method::Tsit45, rtol), solve(Method::Bdf, rtol)] {
        let allowed = 100.0 * rtol * scale;
        let to_other = distance(&auto, &other);
        assert!(
            to_other < 2.0 * allowed,
            "auto is {to_other:e} from {}",
            other.stats.method
        );
    }
    let to_reference = distance(&auto, &reference);
    assert!(
        to_reference < 100.0 * rtol * scale,
        "auto is {to_reference:e} from the reference"
    );
}

/// Until it switches, auto is its explicit method (DOP853 below rtol 1e-6, Tsit45 above):
/// the checks only read the state.
#[test]
fn auto_without_a_switch_is_its_explicit_method_bit_for_bit() {
    let p = Problem::generate(&ConfigArgs::default().resolve().unwrap().problem_spec()).unwrap();
    let field = SensingField::from_problem(&p);
    let x0 = p.start_state();
    let (times, steps) = outputs(20.0, 40);
    for (rtol, explicit) in [(1e-8, Method::Dop853), (1e-5, Method::Tsit45)] {
        let opts = |m| FlowOptions::new(m, rtol, rtol * 1e-3 / 6f64.sqrt());
        let auto = solve_flow(&field, &x0, &times, &steps, &opts(Method::Auto)).unwrap();
        let alone = solve_flow(&field, &x0, &times, &steps, &opts(explicit)).unwrap();
        let report = auto.stats.auto.as_ref().unwrap();
        assert_eq!(report.explicit, explicit.name());
        assert!(report.switches.is_empty() && report.checks > 0);
        assert_eq!(auto.trajectory.states, alone.trajectory.states);
        assert_eq!(auto.stats.rhs_evals, alone.stats.rhs_evals);
    }
}

fn norm(x: &[f64]) -> f64 {
    x.iter().map(|v| v * v).sum::<f64>().sqrt()
}
