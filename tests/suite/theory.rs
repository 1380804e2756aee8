//! The perturbed gradient flow, the theory quantities and phases, and the check battery.

use gdflow::analysis::record::Recorder;
use gdflow::analysis::theory::detect_phases;
use gdflow::config::{CheckArgs, ConfigArgs, Method, PerturbationModel};
use gdflow::dynamics::flow::{solve_flow, FlowOptions};
use gdflow::dynamics::Stepper;
use gdflow::experiments::{check, check_with, Command, Setup};
use gdflow::field::{Field, Perturbation, Perturbed, SensingField, Workspace};
use gdflow::operator::IdentityOperator;
use gdflow::problem::Problem;
use gdflow::results::check::CheckRow;

use super::{random_state, small_gaussian, small_symmetric};

fn flow_states(field: &dyn Field, x0: &[f64], times: &[f64]) -> Vec<Vec<f64>> {
    let steps: Vec<usize> = (0..times.len()).collect();
    let opts = FlowOptions::new(Method::Tsit45, 1e-10, 1e-14);
    solve_flow(field, x0, times, &steps, &opts)
        .unwrap()
        .trajectory
        .states
}

fn max_rel_diff(a: &[Vec<f64>], b: &[Vec<f64>]) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| {
            let d: f64 = x
                .iter()
                .zip(y)
                .map(|(p, q)| (p - q).powi(2))
                .sum::<f64>()
                .sqrt();
            d / y.iter().map(|q| q * q).sum::<f64>().sqrt()
        })
        .fold(0.0, f64::max)
}

#[test]
fn sensing_perturbation_reproduces_the_sensing_flow() {
    let p = small_gaussian(21);
    let x0 = random_state(&p, 22, 0.1);
    let times: Vec<f64> = (0..=20).map(|j| 0.5 * j as f64).collect();
    let sensing = SensingField::from_problem(&p);
    let perturbed = Perturbed::new(
        SensingField::from_problem(&p),
        Perturbation::new(PerturbationModel::Sensing, 0.0, &p, 1),
    );
    let d = max_rel_diff(
        &flow_states(&perturbed, &x0, &times),
        &flow_states(&sensing, &x0, &times),
    );
    assert!(d < 1e-7, "relative difference {d:e}");
}

#[test]
fn no_perturbation_is_plain_matrix_factorisation() {
    let p = small_gaussian(23);
    let x0 = random_state(&p, 24, 0.1);
    let times: Vec<f64> = (0..=20).map(|j| 0.5 * j as f64).collect();
    let perturbed = Perturbed::new(
        SensingField::from_problem(&p),
        Perturbation::new(PerturbationModel::None, 0.0, &p, 1),
    );
    let op = std::sync::Arc::new(IdentityOperator::new(p.n1(), p.n2()));
    let plain = SensingField::new(op, p.x_star.as_slice().to_vec(), p.width());
    let d = max_rel_diff(
        &flow_states(&perturbed, &x0, &times),
        &flow_states(&plain, &x0, &times),
    );
    assert!(d < 1e-7, "relative difference {d:e}");
}

#[test]
fn perturbed_jvps_match_central_differences() {
    let p = small_gaussian(25);
    let x = random_state(&p, 26, 0.5);
    let dir = random_state(&p, 27, 1.0);
    for model in [
        PerturbationModel::Sensing,
        PerturbationModel::Noise,
        PerturbationModel::Relative,
        PerturbationModel::Absolute,
    ] {
        let f = Perturbed::new(
            SensingField::from_problem(&p),
            Perturbation::new(model, 0.3, &p, 2),
        );
        let mut ws = f.workspace();
        let n = x.len();
        let mut jv = vec![0.0; n];
        f.jvp(&x, &dir, &mut jv, &mut ws);
        let h = 1e-6;
        let (mut fp, mut fm) = (vec![0.0; n], vec![0.0; n]);
        let xp: Vec<f64> = x.iter().zip(&dir).map(|(a, d)| a + h * d).collect();
        let xm: Vec<f64> = x.iter().zip(&dir).map(|(a, d)| a - h * d).collect();
        f.rhs(&xp, &mut fp, &mut ws);
        f.rhs(&xm, &mut fm, &mut ws);
        let fd: Vec<f64> = fp
            .iter()
            .zip(&fm)
            .map(|(a, b)| (a - b) / (2.0 * h))
            .collect();
        let err: f64 = jv
            .iter()
            .zip(&fd)
            .map(|(a, b)| (a - b).powi(2))
            .sum::<f64>()
            .sqrt()
            / fd.iter().map(|b| b * b).sum::<f64>().sqrt();
        assert!(err < 1e-7, "{model:?}: jvp vs central differences {err:e}");
    }
}

/// X* = diag(1, 0) with the aligned start s = (a, b), b ≫ a: the top singular direction of UVᵀ
/// is e₂ (misaligned) until s₁(t) overtakes s₂(t) = b/(1 + 2bt), and e₁ after; s₁ = 1/2 at
/// ln(1/a − 1)/2. Both times are known in closed form.
#[test]
fn phase_detection_finds_boundaries_known_by_construction() {
    let (a, b) = (1e-6, 1e-2);
    let p = Problem::aligned_factorisation(2, 2, &[1.0, 0.0], &[a, b]);
    let field = SensingField::from_problem(&p);
    let dt = 0.01;
    let times: Vec<f64> = (0..=1200).map(|j| dt * j as f64).collect();
    let states = flow_states(&field, &p.start_state(), &times);
    let recorder = Recorder::new(&field, &p.x_star, &p.start_state());
    let mut ws = field.workspace();
    let records: Vec<_> = times
        .iter()
        .zip(&states)
        .enumerate()
        .map(|(j, (t, x))| recorder.record(j, *t, x, &mut ws))
        .collect();
    let phases = detect_phases(&records, 1.0, 0.1);
    let s1 = |t: f64| 1.0 / (1.0 + (1.0 / a - 1.0) * (-2.0 * t).exp());
    let s2 = |t: f64| b / (1.0 + 2.0 * b * t);
    let (mut lo, mut hi) = (0.0, 12.0);
    for _ in 0..100 {
        let mid = 0.5 * (lo + hi);
        if s1(mid) < s2(mid) {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    let crossing = hi;
    let half = (1.0 / a - 1.0f64).ln() / 2.0;
    let aligned = phases.end_of_alignment.unwrap();
    let grown = phases.end_of_growth.unwrap();
    assert!(
        aligned >= crossing - 1e-9 && aligned < crossing + dt + 1e-9,
        "alignment {aligned} vs crossing {crossing}"
    );
    assert!(
        grown >= half - 1e-9 && grown < half + dt + 1e-9,
        "growth {grown} vs {half}"
    );
    assert!(aligned < grown);
}

fn closed_form_args(dir: &std::path::Path) -> ConfigArgs {
    let alpha: f64 = 1e-3;
    let mut p = Problem::aligned_factorisation(3, 3, &[1.0, 0.5], &[alpha * alpha; 2]);
    // s_j(0) = α²: the file records the α its start was made with
    p.start_alpha = Some(alpha);
    let path = dir.join("closed.npz");
    p.save_npz(&path).unwrap();
    ConfigArgs {
        problem: Some(path),
        eta: Some(0.05),
        steps: Some(400),
        ..Default::default()
    }
}

fn row<'a>(rows: &'a [CheckRow], name: &str) -> &'a CheckRow {
    rows.iter().find(|r| r.name == name).unwrap()
}

#[test]
fn check_battery_passes_on_the_closed_form_problem() {
    let dir = tempfile::tempdir().unwrap();
    let setup = Setup::new(&closed_form_args(dir.path()), Command::Check, false).unwrap();
    assert_eq!(setup.config.alpha, 1e-3, "α from the file");
    let result = check(&setup, &CheckArgs::default(), false).unwrap();
    let s = &result.summary;
    for r in &s.rows {
        assert_ne!(
            r.pass,
            Some(false),
            "{}: measured {} vs {}",
            r.name,
            r.measured,
            r.predicted
        );
    }
    assert!(s.passed);
    // the slope of t_ε in ln(1/α) is 1/σ_r = 2 here, and ρ = 0 (no sensing error)
    assert!((row(&s.rows, "convergence_time").measured - 2.0).abs() < 0.1);
    assert_eq!(row(&s.rows, "max_rho").measured, 0.0);
}

/// Updating V with the new U (Gauss–Seidel) is not GD: its drift breaks the identity.
#[derive(Default)]
struct GaussSeidel {
    f: Vec<f64>,
    ws: Option<Workspace>,
}

impl Stepper for GaussSeidel {
    fn name(&self) -> String {
        "gauss-seidel".into()
    }
    fn evaluate(&mut self, field: &dyn Field, x: &[f64]) -> f64 {
        self.f.resize(x.len(), 0.0);
        let ws = self.ws.get_or_insert_with(|| field.workspace());
        field.rhs(x, &mut self.f, ws)
    }
    fn advance(&mut self, field: &dyn Field, x: &mut [f64], eta: f64) {
        let nu = field.factors().n1 * field.factors().k;
        for (xi, fi) in x[..nu].iter_mut().zip(&self.f[..nu]) {
            *xi += eta * fi;
        }
        let ws = self.ws.as_mut().unwrap();
        field.rhs(x, &mut self.f, ws);
        for (xi, fi) in x[nu..].iter_mut().zip(&self.f[nu..]) {
            *xi += eta * fi;
        }
    }
}

#[test]
fn a_wrong_stepper_fails_the_drift_identity_check() {
    let dir = tempfile::tempdir().unwrap();
    let setup = Setup::new(&closed_form_args(dir.path()), Command::Check, false).unwrap();
    let result = check_with(
        &setup,
        &CheckArgs::default(),
        Box::new(GaussSeidel::default()),
        false,
    )
    .unwrap();
    let r = row(&result.summary.rows, "gd_drift_identity");
    assert_eq!(r.pass, Some(false), "measured {}", r.measured);
    assert!(!result.summary.passed);
}

/// MATH §3: with symmetric A_i, a PSD target and U_0 = V_0 the asymmetric flow keeps U = V and
/// is the symmetric flow U' = −GU.
#[test]
fn asymmetric_flow_from_a_symmetric_start_is_the_symmetric_flow() {
    let args = ConfigArgs {
        n1: Some(7),
        n2: Some(7),
        rank: Some(2),
        width: Some(3),
        measurements: Some(60),
        alpha: Some(0.05),
        symmetric: Some(true),
        seed: Some(9),
        ..Default::default()
    };
    let p = Problem::generate(&args.resolve().unwrap().problem_spec()).unwrap();
    assert!((&p.x_star - p.x_star.transpose()).norm() < 1e-14);
    assert!(
        p.x_star.symmetric_eigenvalues().iter().all(|&l| l > -1e-12),
        "X* ⪰ 0"
    );
    let sym = SensingField::from_problem(&p);
    assert!(sym.is_symmetric());
    let mut full = p.clone();
    full.symmetric = false;
    let asym = SensingField::from_problem(&full);
    let times: Vec<f64> = (0..=30).map(|j| 0.5 * j as f64).collect();
    let s = flow_states(&sym, &p.start_state(), &times);
    let a = flow_states(&asym, &full.start_state(), &times);
    let n = p.n1() * p.width();
    let (u_of_a, v_of_a): (Vec<Vec<f64>>, Vec<Vec<f64>>) =
        a.iter().map(|x| (x[..n].to_vec(), x[n..].to_vec())).unzip();
    assert!(
        max_rel_diff(&u_of_a, &v_of_a) < 1e-12,
        "U = V along the asymmetric flow"
    );
    let d = max_rel_diff(&u_of_a, &s);
    assert!(d < 1e-7, "asymmetric U vs symmetric U: {d:e}");
    // and the flow learns the target
    let x = sym.product(s.last().unwrap());
    assert!((x - &p.x_star).norm() / p.x_star.norm() < 0.05);
}

#[test]
fn symmetric_field_is_minus_the_gradient_of_the_quarter_loss() {
    let p = small_symmetric();
    let f = SensingField::from_problem(&p);
    let mut ws = f.workspace();
    let x = random_state(&p, 3, 0.5)[..f.state_len()].to_vec();
    let mut g = vec![0.0; x.len()];
    f.rhs(&x, &mut g, &mut ws);
    let h = 1e-6;
    for i in 0..x.len() {
        let (mut xp, mut xm) = (x.clone(), x.clone());
        xp[i] += h;
        xm[i] -= h;
        let fd = -(f.loss(&xp, &mut ws) - f.loss(&xm, &mut ws)) / (2.0 * h);
        assert!(
            (fd - g[i]).abs() < 1e-7 * (1.0 + g[i].abs()),
            "component {i}: {fd} vs {}",
            g[i]
        );
    }
}

/// The recorded quantities come from small cores and a Gram matrix's largest eigenvalue, not
/// n1×n2 SVDs: they agree with the dense SVDs they replace.
#[test]
fn recorded_quantities_agree_with_dense_singular_value_decompositions() {
    let p = small_gaussian(31);
    let field = SensingField::from_problem(&p);
    let recorder = Recorder::new(&field, &p.x_star, &p.start_state());
    let mut ws = field.workspace();
    for (seed, scale) in [(1, 0.05), (2, 0.4), (3, 1.5)] {
        let x = random_state(&p, seed, scale);
        let rec = recorder.record(0, 0.0, &x, &mut ws);
        let prod = field.product(&x);
        let mut sv: Vec<f64> = prod.singular_values().iter().copied().collect();
        sv.sort_by(|a, b| b.total_cmp(a));
        for (a, b) in rec.sv().iter().zip(&sv) {
            assert!((a - b).abs() <= 1e-12 * sv[0], "σ(UVᵀ): {a} vs {b}");
        }
        let resid = &p.x_star - &prod;
        let e = -ws.g() - &resid;
        let op = |m: &nalgebra::DMatrix<f64>| m.singular_values().max();
        let rho = op(&e) / op(&resid);
        assert!(
            (rec.rho() - rho).abs() <= 1e-10 * rho,
            "ρ {} vs {rho}",
            rec.rho()
        );
        // sin Θ between the top-2 left singular space of UVᵀ and X*'s column space
        let svd = prod.clone().svd(true, false);
        let mut order: Vec<usize> = (0..svd.singular_values.len()).collect();
        order.sort_by(|&a, &b| svd.singular_values[b].total_cmp(&svd.singular_values[a]));
        let u = svd.u.unwrap();
        let top = nalgebra::DMatrix::from_fn(p.n1(), 2, |i, j| u[(i, order[j])]);
        let star = p.x_star.clone().svd(true, false);
        let mut so: Vec<usize> = (0..star.singular_values.len()).collect();
        so.sort_by(|&a, &b| star.singular_values[b].total_cmp(&star.singular_values[a]));
        let su = star.u.unwrap();
        let l = nalgebra::DMatrix::from_fn(p.n1(), 2, |i, j| su[(i, so[j])]);
        let c = (l.transpose() * &top).singular_values().min();
        let sin = (1.0 - c * c).max(0.0).sqrt();
        assert!(
            (rec.sin_theta_u() - sin).abs() <= 1e-8,
            "sin Θ {} vs {sin}",
            rec.sin_theta_u()
        );
    }
}
