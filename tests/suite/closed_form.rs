//! MATH §4: plain factorisation with a diagonal target and an aligned balanced start, where
//! s_j(t) is known in closed form for the flow and by a scalar recursion for GD.

use gdflow::config::Method;
use gdflow::dynamics::flow::{solve_flow, FlowOptions, JacobianMode};
use gdflow::dynamics::{gradient_descent, RunOptions as GdOptions, Status};
use gdflow::field::{Field, SensingField};
use gdflow::problem::Problem;

const SIGMA: [f64; 3] = [2.0, 0.5, 0.0];
const S0: [f64; 3] = [1e-4, 3e-4, 2e-2];

fn flow_exact(sigma: f64, s0: f64, t: f64) -> f64 {
    if sigma == 0.0 {
        s0 / (1.0 + 2.0 * s0 * t)
    } else {
        sigma / (1.0 + (sigma / s0 - 1.0) * (-2.0 * sigma * t).exp())
    }
}

fn diagonal(field: &SensingField, x: &[f64]) -> Vec<f64> {
    let p = field.product(x);
    (0..S0.len()).map(|j| p[(j, j)]).collect()
}

fn closed_form_problem() -> Problem {
    Problem::aligned_factorisation(5, 4, &SIGMA, &S0)
}

/// Largest |s_j(t) − exact| over the output times and the diagonal.
fn worst_error(method: Method, rtol: f64) -> f64 {
    let p = closed_form_problem();
    let field = SensingField::from_problem(&p);
    let x0 = p.start_state();
    let steps: Vec<usize> = (0..=240).collect(); // t up to 12: every σ_j > 0 has converged
    let times: Vec<f64> = steps.iter().map(|&j| j as f64 * 0.05).collect();
    let opts = FlowOptions::new(method, rtol, rtol * 1e-4);
    let sol = solve_flow(&field, &x0, &times, &steps, &opts).unwrap();
    assert_eq!(sol.trajectory.status, Status::Completed, "{method:?}");
    assert_eq!(sol.trajectory.states.len(), times.len());
    let mut worst: f64 = 0.0;
    for (t, x) in sol.trajectory.times.iter().zip(&sol.trajectory.states) {
        let s = diagonal(&field, x);
        for j in 0..S0.len() {
            worst = worst.max((s[j] - flow_exact(SIGMA[j], S0[j], *t)).abs());
        }
    }
    // the dynamics keep the aligned structure: off-diagonal entries stay zero
    let last = field.product(sol.trajectory.states.last().unwrap());
    let mut off = last.clone();
    for j in 0..S0.len() {
        off[(j, j)] = 0.0;
    }
    assert!(
        off.norm() < 1e-12,
        "{method:?}: off-diagonal mass {}",
        off.norm()
    );
    worst
}

/// Each method's global error is a small multiple of rtol·σ_1 and shrinks with the
/// tolerance. The multiple depends on the order: per-step error control gives a global error
/// ∝ tol^{p/(p+1)}, so the low-order SDIRKs (TR-BDF2: p = 2, ESDIRK3(4): p = 3) take more,
/// error-accumulating steps than Tsit45 and BDF.
#[test]
fn every_method_matches_the_closed_form_flow() {
    let scale = SIGMA[0];
    for (method, multiple) in [
        (Method::Dop853, 10.0),
        (Method::Tsit45, 10.0),
        (Method::Bdf, 100.0),
        (Method::Esdirk34, 200.0),
        (Method::TrBdf2, 500.0),
    ] {
        let coarse = worst_error(method, 1e-8);
        assert!(
            coarse < multiple * 1e-8 * scale,
            "{method:?}: error {coarse:e} exceeds {multiple} × rtol·σ_1"
        );
        let fine = worst_error(method, 1e-10);
        assert!(
            fine < coarse / 10.0,
            "{method:?}: 100× tighter rtol only took the error from {coarse:e} to {fine:e}"
        );
    }
}

#[test]
fn gd_matches_the_scalar_recursion_to_rounding() {
    let p = closed_form_problem();
    let field = SensingField::from_problem(&p);
    let eta = 0.1;
    let opts = GdOptions::new(eta, 400, 1);
    let traj = gradient_descent(&field, &p.start_state(), &opts);
    assert_eq!(traj.status, Status::Completed);
    let mut s = S0.to_vec();
    for (j, x) in traj.states.iter().enumerate() {
        let got = diagonal(&field, x);
        for i in 0..S0.len() {
            let err = (got[i] - s[i]).abs() / s[i].abs().max(1e-300);
            assert!(
                err < 1e-12,
                "step {j}, s_{i}: {} vs recursion {}",
                got[i],
                s[i]
            );
        }
        for i in 0..S0.len() {
            s[i] *= (1.0 + eta * (SIGMA[i] - s[i])).powi(2);
        }
    }
}

#[test]
fn exact_and_assembled_jacobians_give_the_same_bdf_solution() {
    let p = closed_form_problem();
    let field = SensingField::from_problem(&p);
    let x0 = p.start_state();
    let steps: Vec<usize> = (0..=40).collect();
    let times: Vec<f64> = steps.iter().map(|&j| j as f64 * 0.25).collect();
    let solve = |jacobian| {
        let opts = FlowOptions {
            jacobian,
            ..FlowOptions::new(Method::Bdf, 1e-8, 1e-12)
        };
        solve_flow(&field, &x0, &times, &steps, &opts).unwrap()
    };
    let exact = solve(JacobianMode::Exact);
    let assembled = solve(JacobianMode::Assembled);
    // same Jacobian to rounding, so the same steps and the same states to rounding
    assert_eq!(exact.stats.steps, assembled.stats.steps);
    for (a, b) in exact
        .trajectory
        .states
        .iter()
        .zip(&assembled.trajectory.states)
    {
        let d: f64 = a
            .iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0, f64::max);
        assert!(d < 1e-10, "states differ by {d:e}");
    }
    // the exact path needs no jvp to build its Jacobians; the assembled one needs N per build
    assert_eq!(exact.stats.jvp_evals, 0);
    assert!(exact.stats.jacobian_evals > 0);
    assert_eq!(
        assembled.stats.jvp_evals,
        assembled.stats.jacobian_evals * field.state_len()
    );
}

#[test]
fn implicit_method_too_large_for_memory_is_refused_clearly() {
    use gdflow::dynamics::flow::check_implicit_memory;
    // N = 10^6 states: the dense N×N matrices alone would need terabytes
    let e = check_implicit_memory(Method::Bdf, 1_000_000, 100)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("bdf") && e.contains("tsit45") && e.contains("MiB"),
        "{e}"
    );
    // an explicit method needs no dense Jacobian, whatever the size
    assert!(check_implicit_memory(Method::Tsit45, 1_000_000, 100).is_ok());
    // and a small problem is accepted
    assert!(check_implicit_memory(Method::Esdirk34, 100, 100).is_ok());
}
