//! A discrete method of your own: alternating (Gauss–Seidel) gradient descent,
//!   U_{j+1} = U_j − η G(U_j, V_j) V_j,   V_{j+1} = V_j − η G(U_{j+1}, V_j)ᵀ U_{j+1},
//! run by the library's driver beside GD. Its balance D = UᵀU − VᵀV drifts by a different
//! identity than GD's (MATH §3): each half step is a one-factor GD step, so with
//! G = G(U_j, V_j) and G' = G(U_{j+1}, V_j),
//!   D_{j+1} − D_j = η(VᵀG'ᵀU' + U'ᵀG'V − UᵀGV − VᵀGᵀU) + η²(VᵀGᵀGV − U'ᵀG'G'ᵀU'),
//! (U = U_j, V = V_j, U' = U_{j+1}), which this program checks to rounding, and GD's identity
//! η²(VᵀGᵀGV − UᵀGGᵀU) fails for it.
//!
//! `cargo run --release --example alternating_gd` (also run by `cargo test`)

use gdflow::analysis::record::balance;
use gdflow::config::ConfigArgs;
use gdflow::dynamics::{Driver, Gd, Iterate, RunOptions, SaveAt, Stepper};
use gdflow::experiments::{Command, Setup};
use gdflow::field::{Field, Workspace};
use nalgebra::DMatrix;

/// Alternating GD, and the drift its steps predict by the identity above.
#[derive(Default)]
struct Alternating {
    f: Vec<f64>,
    ws: Option<Workspace>,
    /// Σ_j of the identity's right-hand side over the steps taken.
    predicted: Option<DMatrix<f64>>,
}

impl Stepper for Alternating {
    fn name(&self) -> String {
        "alternating-gd".into()
    }
    fn evaluate(&mut self, field: &dyn Field, x: &[f64]) -> f64 {
        self.f.resize(x.len(), 0.0);
        let ws = self.ws.get_or_insert_with(|| field.workspace());
        field.rhs(x, &mut self.f, ws)
    }
    fn advance(&mut self, field: &dyn Field, x: &mut [f64], eta: f64) {
        let fac = field.factors();
        let nu = fac.n1 * fac.k;
        let ws = self.ws.as_mut().expect("evaluated first");
        let g = ws.g().clone();
        let (u, v) = {
            let (u, v) = fac.split(x);
            (u.clone_owned(), v.clone_owned())
        };
        // U step with G(U_j, V_j)
        for (xi, fi) in x[..nu].iter_mut().zip(&self.f[..nu]) {
            *xi += eta * fi;
        }
        // V step with G(U_{j+1}, V_j)
        field.rhs(x, &mut self.f, ws);
        let g2 = ws.g().clone();
        for (xi, fi) in x[nu..].iter_mut().zip(&self.f[nu..]) {
            *xi += eta * fi;
        }
        let u2 = fac.split(x).0.clone_owned();
        let step = (v.transpose() * g2.transpose() * &u2 + u2.transpose() * &g2 * &v
            - u.transpose() * &g * &v
            - v.transpose() * g.transpose() * &u)
            * eta
            + (v.transpose() * g.transpose() * &g * &v
                - u2.transpose() * &g2 * g2.transpose() * &u2)
                * (eta * eta);
        *self
            .predicted
            .get_or_insert_with(|| DMatrix::zeros(fac.k, fac.k)) += step;
    }
    fn workspace(&self) -> Option<&Workspace> {
        self.ws.as_ref()
    }
}

fn example(print: bool) -> anyhow::Result<()> {
    let args = ConfigArgs {
        n1: Some(12),
        n2: Some(10),
        rank: Some(2),
        width: Some(3),
        measurements: Some(150),
        alpha: Some(1e-2),
        ..Default::default()
    };
    let setup = Setup::new(&args, Command::Run, false)?;
    let field = setup.field();
    let x0 = setup.start();
    let (eta, steps) = (0.1, 300);
    let opts = RunOptions {
        save: SaveAt::Last,
        ..RunOptions::new(eta, steps, 1)
    };
    // GD's identity, accumulated from what each iterate's evaluation left in the workspace
    let gd_identity = |it: &Iterate<'_>, acc: &mut DMatrix<f64>| {
        if it.step < steps {
            let (u, v) = field.factors().split(it.state);
            let g = it.workspace.expect("both steppers keep theirs").g();
            let (gv, gtu) = (g * v, g.transpose() * u);
            *acc += (gv.transpose() * &gv - gtu.transpose() * &gtu) * (eta * eta);
        }
    };
    let k = field.factors().k;
    let d0 = balance(field.as_ref(), &x0);

    let mut gd_pred = DMatrix::zeros(k, k);
    let gd = Driver::new(field.as_ref(), Gd::new(), &x0, opts.clone())
        .run(&mut |it: &Iterate<'_>| gd_identity(it, &mut gd_pred))
        .pop()
        .expect("one run");
    let gd_drift = balance(field.as_ref(), gd.states.last().expect("completed")) - &d0;

    let mut alt_gd_pred = DMatrix::zeros(k, k);
    let mut alt = Driver::new(field.as_ref(), Alternating::default(), &x0, opts);
    while alt.advance(&mut |it: &Iterate<'_>| gd_identity(it, &mut alt_gd_pred)) {}
    let alt_drift = balance(field.as_ref(), alt.state(0)) - &d0;
    let alt_own = alt.stepper(0).predicted.clone().expect("stepped");

    let rel = |a: &DMatrix<f64>, b: &DMatrix<f64>| (a - b).norm() / b.norm();
    let gd_err = rel(&gd_pred, &gd_drift);
    let alt_gd_err = rel(&alt_gd_pred, &alt_drift);
    let alt_own_err = rel(&alt_own, &alt_drift);
    if print {
        println!("after {steps} steps of η = {eta}:");
        println!(
            "  GD:          drift {:.3e}, GD's identity off by {gd_err:.1e} (relative)",
            gd_drift.norm()
        );
        println!("  alternating: drift {:.3e}, GD's identity off by {alt_gd_err:.1e}, its own identity off by {alt_own_err:.1e}", alt_drift.norm());
    }
    assert!(gd_err < 1e-9, "GD's identity holds for GD: {gd_err:e}");
    assert!(
        alt_own_err < 1e-9,
        "the alternating identity holds: {alt_own_err:e}"
    );
    assert!(
        alt_gd_err > 1e-3,
        "GD's identity fails for alternating GD: {alt_gd_err:e}"
    );
    Ok(())
}

fn main() -> anyhow::Result<()> {
    example(true)
}

#[test]
fn alternating_gd_example_runs() {
    example(false).unwrap();
}
