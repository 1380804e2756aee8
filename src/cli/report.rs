//! What the commands print on the terminal: short readable summaries of the results.

use crate::analysis::fit::OrderFit;
use crate::dynamics::flow::AutoReport;
use crate::dynamics::Status;
use crate::experiments::sweep::TIGHTENING;
use crate::results::check::CheckSummary;
use crate::results::run::{DynamicsSummary, RunSummary};
use crate::results::sweep::SweepSummary;

/// The auto report in a few lines for the terminal.
pub fn describe_auto(a: &AutoReport) -> String {
    let mut text = format!(
        "auto: flow time {:.4} in {e}, {:.4} in bdf; {} stiffness checks ({} Hessian–vector products); {e} stability bound h·ρ = {:.4}",
        a.time_explicit,
        a.time_implicit,
        a.checks,
        a.hvp_evals,
        a.stability_bound,
        e = a.explicit
    );
    for s in &a.switches {
        text.push_str(&format!(
            "\n  t = {:.6}: {} → {} (h = {:.4e}, ρ(∇²f) = {:.4e}, h·ρ = {:.4})",
            s.t, s.from, s.to, s.step_size, s.spectral_radius, s.h_rho
        ));
    }
    if a.declined > 0 {
        text.push_str(&format!(
            "\n  stayed on the explicit method through a stiff stretch: the rest of the horizon needs fewer than {} × {:.0} rhs (one Jacobian + LU)",
            a.payback, a.switch_cost_rhs
        ));
    }
    if let Some(note) = &a.note {
        text.push_str(&format!("\n  {note}"));
    }
    text
}

fn status_line(d: &DynamicsSummary) -> String {
    match &d.status {
        Status::Completed => "completed".to_string(),
        Status::Diverged {
            step,
            t,
            loss,
            last_loss,
        } => format!(
            "DIVERGED at step {step} (t = {t}): loss {loss:e}, last finite loss {last_loss:e}"
        ),
        Status::Failed { t, reason } => format!("FAILED at t = {t}: {reason}"),
    }
}

/// The short readable summary `gdflow run` prints.
pub fn format_summary(s: &RunSummary) -> String {
    let c = s.config();
    let p = &s.problem;
    let mut out = String::new();
    use std::fmt::Write;
    let _ = writeln!(
        out,
        "gdflow {} — {}, α={:e}, seed={}",
        s.provenance.crate_version,
        p.headline(),
        c.alpha,
        s.provenance.seed
    );
    let sv: Vec<String> = p
        .target_singular_values
        .iter()
        .map(|v| format!("{v:.4}"))
        .collect();
    let _ = writeln!(out, "target σ: [{}]   problem: {}", sv.join(", "), p.source);
    if c.sensing_precision == crate::operator::Precision::F32 {
        let _ = writeln!(
            out,
            "sensing matrix stored in f32 (products accumulated in f64){}",
            p.f32_change_of_y.map_or(String::new(), |d| format!(
                "; rounding the file's f64 entries changed 𝒜(X*) by {d:.2e} (relative)"
            ))
        );
    }
    if c.symmetric {
        let _ = writeln!(
            out,
            "symmetric PSD case: U' = −GU, f = ¼‖𝒜(UUᵀ) − y‖² (MATH §3)"
        );
    }
    if let Some(model) = c.perturbation {
        let _ = writeln!(
            out,
            "perturbed flow (MATH §5): E = {} (size {}); GD is Euler on it",
            model.name(),
            c.perturbation_size
        );
    }
    let o = &s.optimizer;
    let method = if o.name == "gd" {
        "GD".to_string()
    } else {
        o.name.clone()
    };
    let params: Vec<String> = o
        .parameters
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    let dt = o.time_scale.per_step(c.eta);
    let _ = writeln!(
        out,
        "{method}{}: η={} for {} steps (t = {}, T={});  {} flow: {} rtol={:e} atol={:.3e}",
        if params.is_empty() {
            String::new()
        } else {
            format!(" ({})", params.join(", "))
        },
        c.eta,
        c.steps,
        o.time_scale.name(),
        dt * c.steps as f64,
        c.flow.name(),
        c.method.name(),
        c.rtol,
        c.atol
    );
    if !o.limit.is_empty() && o.name != "gd" {
        let _ = writeln!(out, "limit: {}; UᵀU − VᵀV {}", o.limit, o.balance);
    }
    let _ = writeln!(
        out,
        "records: {}; spectral columns (sv_i, rho, theory): {} (--spectrum-every {})",
        match c.record_every {
            1 => "every step".to_string(),
            j => format!("every {j} steps and the last"),
        },
        match c.spectrum_every {
            0 => "none".to_string(),
            1 => "at every record".to_string(),
            j => format!("at one record in {j} and the last"),
        },
        c.spectrum_every
    );
    let _ = writeln!(out);
    let w = method.len().max(6);
    let _ = writeln!(
        out,
        "{:<w$} {:>12} {:>14} {:>14} {:>16}  status",
        "", "t_final", "rel_error", "loss", "balance_drift"
    );
    for (name, d) in [(method.as_str(), &s.gd), ("flow", &s.flow)] {
        let _ = writeln!(
            out,
            "{:<w$} {:>12.6} {:>14.3e} {:>14.3e} {:>16.3e}  {}",
            name,
            d.final_t,
            d.final_rel_error,
            d.final_loss,
            d.final_balance_drift,
            status_line(d)
        );
    }
    let _ = writeln!(out);
    match &s.distance {
        Some(d) => {
            let tj = match s.optimizer.time_scale {
                crate::dynamics::optimizer::TimeScale::Eta => "jη",
                crate::dynamics::optimizer::TimeScale::SqrtEta => "j√η",
            };
            let _ = writeln!(
                out,
                "max_j ‖U_jV_jᵀ − U({tj})V({tj})ᵀ‖ = {:.4e} ({:.3e} of ‖X*‖) at step {} (t = {:.6}); at the end {:.3e}",
                d.max, d.max_relative, d.step, d.t, d.final_distance
            );
        }
        None => {
            let _ = writeln!(out, "GD-vs-flow distance: no common output times");
        }
    }
    if let Some(e) = &s.ensemble {
        let _ = writeln!(
            out,
            "ensemble of {} replicas{}: at the end, mean ± 95% interval",
            e.replicas,
            match e.ended_early {
                0 => String::new(),
                n => format!(" ({n} diverged or failed before the end)"),
            }
        );
        for (dynamics, stats) in &e.final_stats {
            let cells: Vec<String> = stats
                .iter()
                .map(|(q, st)| {
                    if st.n > 1 {
                        format!("{q} {:.4e} ± {:.1e}", st.mean, st.ci95)
                    } else {
                        format!("{q} {:.4e}", st.mean)
                    }
                })
                .collect();
            let _ = writeln!(out, "  {dynamics:<6} {}", cells.join(", "));
        }
        if !e.weak_error.is_empty() {
            let cells: Vec<String> = e
                .weak_error
                .iter()
                .map(|(q, w)| {
                    format!(
                        "{q} {:+.3e} ± {:.1e} ({})",
                        w.difference,
                        w.ci95,
                        if w.resolved {
                            "resolved"
                        } else {
                            "unresolved: the interval covers 0"
                        }
                    )
                })
                .collect();
            let _ = writeln!(out, "  weak error (method − limit): {}", cells.join(", "));
        }
        if !e.scheme_error.is_empty() {
            let cells: Vec<String> = e
                .scheme_error
                .iter()
                .map(|(q, w)| {
                    format!(
                        "{q} {:+.3e} ± {:.1e}{}",
                        w.difference,
                        w.ci95,
                        if w.resolved { "" } else { " (unresolved)" }
                    )
                })
                .collect();
            let _ = writeln!(
                out,
                "  the scheme's own weak error (SME on h − on h/2): {}",
                cells.join(", ")
            );
        }
        if let Some(c) = &e.substeps {
            let _ = writeln!(
                out,
                "  Euler–Maruyama substeps per step: {} ({}; tried {:?}){}",
                c.substeps,
                c.reason,
                c.tried,
                if e.talay_tubaro {
                    "; the limit's statistics are the Talay–Tubaro extrapolation 2E_{h/2} − E_h"
                } else {
                    ""
                }
            );
        }
    }
    if let Some(c) = &s.central {
        let r = &c.report;
        match r.first_reached {
            Some(t) => {
                let _ = writeln!(
                    out,
                    "central flow: the sharpness reached 2/η = {:.6} at t = {t:.4}; at most {} held there; events: {}",
                    r.threshold,
                    match r.max_active {
                        1 => "1 eigenvalue".to_string(),
                        p => format!("{p} eigenvalues"),
                    },
                    r.events
                        .iter()
                        .map(|e| format!("{} at t = {:.4} (p = {})", e.kind, e.t, e.active))
                        .collect::<Vec<_>>()
                        .join(", ")
                );
            }
            None => {
                let _ = writeln!(
                    out,
                    "central flow: the sharpness never reached 2/η = {:.6}: it was the gradient flow throughout",
                    r.threshold
                );
            }
        }
        if let Some(d) = &c.distance_mean {
            let _ = writeln!(
                out,
                "GD's two-step average against the central flow at (j + ½)η: max {:.4e} ({:.3e} of ‖X*‖) at t = {:.4}; at the end {:.3e}",
                d.max, d.max_relative, d.t, d.final_distance
            );
        }
        if let (Some(mean), Some(plain)) = (&c.distance_mean, &c.distance_plain) {
            let diverged = match s.gd.status {
                Status::Diverged { step, .. } => Some(step),
                _ => None,
            };
            let verdict = match (diverged, r.first_reached, c.follows_central()) {
                // distances to a diverging iterate compare nothing: neither flow describes it
                (Some(step), _, _) => format!(
                    "GD diverged at step {step}: the distances cover its steps before, and \
                     neither flow describes the divergence"
                ),
                (None, None, _) => "below the stability limit throughout: the central flow is the \
                              gradient flow, and GD follows it"
                    .to_string(),
                (None, Some(_), Some(true)) => {
                    "GD follows the central flow on average, not the gradient flow".into()
                }
                _ => "GD's average is not nearer the central flow than its iterates are to the \
                      gradient flow: the central flow does not describe this run"
                    .into(),
            };
            let _ = writeln!(
                out,
                "verdict: {verdict} — at the end GD's two-step average is {:.3e} of ‖X*‖ from the \
                 central flow, its iterates {:.3e} of ‖X*‖ from the gradient flow (max {:.3e})",
                mean.final_distance / s.problem.target_norm,
                plain.final_distance / s.problem.target_norm,
                plain.max_relative
            );
        }
        if let Some(e) = &c.edge_of_stability {
            let _ = writeln!(
                out,
                "edge of stability, t in [{:.3}, {:.3}] ({} steps): GD's oscillation along the active eigenvectors {:.4e} against tr Σ {:.4e}; GD's mean loss {:.4e} against f + tr Σ/η {:.4e}",
                e.t_from,
                e.t_to,
                e.steps,
                e.oscillation_second_moment,
                e.sigma_trace,
                e.gd_mean_loss,
                e.predicted_loss
            );
        }
        let w = &r.work;
        let _ = writeln!(
            out,
            "central flow's work: {} evaluations, {} Hessian–vector products in {} eigen-solves, {} second derivatives, {} SDP iterations (worst residual {:.1e})",
            w.evaluations, w.hvps, w.eigen_solves, w.second_derivatives, w.sdp_iterations, w.worst_sdp_residual
        );
    }
    let sc = &s.sharpness_cost;
    if sc.computations > 0 {
        let _ = writeln!(
            out,
            "sharpness column: {} computations, {} Hessian–vector products, {:.3} s{}",
            sc.computations,
            sc.hvps,
            sc.seconds,
            if sc.unconverged > 0 {
                format!(" ({} unconverged, left empty)", sc.unconverged)
            } else {
                String::new()
            }
        );
    }
    let st = &s.solver;
    let _ = writeln!(
        out,
        "solver {}: {} steps ({} rejected), {} rhs, {} jvp, {} Jacobians, {} LU factorisations",
        st.method,
        st.steps,
        st.rejected_steps,
        st.rhs_evals,
        st.jvp_evals,
        st.jacobian_evals,
        st.lu_factorisations
    );
    if let Some(a) = &st.auto {
        let _ = writeln!(out, "{}", describe_auto(a));
    }
    let tm = &s.timings;
    let _ = writeln!(
        out,
        "wall time: {:.3} s (problem {:.3} s, {method} {:.3} s, flow {:.3} s, flow records {:.3} s)",
        tm.total_seconds, tm.problem_seconds, tm.gd_seconds, tm.flow_seconds, tm.record_seconds
    );
    if let Some(passes) = s.operator_counts.passes {
        let riding = match (tm.method_evaluations_riding, tm.records_riding) {
            // a field that reads no sensing operator (a perturbation's factorisation) makes
            // its right-hand sides without passes: nothing rides on them
            _ if passes < st.rhs_evals as u64 => {
                " (the flow's field reads no sensing operator)".to_string()
            }
            (0, 0) => String::new(),
            (m, r) => format!(
                " ({} of them the flow's right-hand sides, which carried {m} of {method}'s \
                 evaluations and the evaluations of {r} of the flow's records)",
                st.rhs_evals
            ),
        };
        let _ = writeln!(out, "passes over the sensing matrix: {passes}{riding}");
    }
    out
}
fn opt(v: Option<f64>, prec: usize) -> String {
    v.map_or_else(|| "—".to_string(), |x| format!("{x:.prec$}"))
}

fn describe_fit(name: &str, f: &OrderFit) -> String {
    let mut s = format!("order vs {name}: {}", opt(f.order, 3));
    if let Some(se) = f.order_stderr {
        s += &format!(" ± {se:.3} (std. error)");
    }
    if let Some(r) = f.residual_std {
        s += &format!(", residual spread {r:.3} in ln dev");
    }
    s += &format!(", {} points", f.etas_used.len());
    for e in &f.excluded {
        s += &format!("\n    left out η = {}: {}", e.eta, e.reason);
    }
    s
}

/// The table `gdflow sweep` prints.
/// The weak errors of a stochastic sweep: per η and limit, E f(method) − E f(limit) at T with
/// its interval; then each limit's fitted order, or why there is none.
fn weak_table(w: &crate::results::sweep::WeakSweep) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "\nweak error of the loss at T, E f(method) − E f(limit) ± 95% ({} replicas each):",
        w.replicas
    );
    let limits = ["plain", "modified", "sme1", "sme2"];
    let _ = writeln!(
        out,
        "{:>10} {}   var ratio sme1 sme2",
        "η",
        limits.map(|l| format!("{l:>24}")).join("")
    );
    for p in &w.points {
        let cells: String = limits
            .iter()
            .map(|l| match p.weak_error.get(*l) {
                Some(e) => format!(
                    "{:>24}",
                    format!(
                        "{:+.2e}±{:.1e}{}",
                        e.difference,
                        e.ci95,
                        if e.resolved { "" } else { "?" }
                    )
                ),
                None => format!("{:>24}", "—"),
            })
            .collect();
        let ratio = |k: &str| {
            p.variance_ratio
                .get(k)
                .map_or("—".into(), |r| format!("{r:.3}"))
        };
        let _ = writeln!(
            out,
            "{:>10.4e} {cells}   {} {}",
            p.eta,
            ratio("sme1"),
            ratio("sme2")
        );
    }
    let _ = writeln!(
        out,
        "(? marks a difference whose interval covers 0: unresolved)"
    );
    for p in &w.points {
        let cells: Vec<String> = p
            .scheme_error
            .iter()
            .map(|(l, e)| {
                let substeps = p
                    .substeps
                    .get(l)
                    .map_or(String::new(), |s| format!(" ({s} substeps)"));
                format!("{l} {:+.2e}±{:.1e}{substeps}", e.difference, e.ci95)
            })
            .collect();
        if !cells.is_empty() {
            let _ = writeln!(
                out,
                "Euler–Maruyama's own weak error at η = {:.4e} (SME on h − on h/2): {}",
                p.eta,
                cells.join(", ")
            );
        }
    }
    for l in limits {
        if let Some(o) = w.orders.get(l) {
            let _ = match (o.order, &o.unresolved) {
                (Some(v), _) => writeln!(out, "weak order vs {l}: {v:.3} ± {:.3}", o.ci95),
                (None, Some(why)) => writeln!(out, "weak order vs {l}: unresolved — {why}"),
                (None, None) => writeln!(out, "weak order vs {l}: —"),
            };
        }
    }
    out
}

/// The answer to `--target-deviation`, in words, with its bracket.
fn target_line(t: &crate::results::sweep::TargetDeviation, label: &str) -> String {
    let pct = |d: Option<f64>| d.map_or("diverged".into(), |d| format!("{:.3}%", 100.0 * d));
    let what = format!(
        "largest η with max_j ‖X_j − X(jη)‖ ≤ {}% of ‖X*‖ ({label} against the plain flow)",
        100.0 * t.target
    );
    match t.bracket {
        [Some(lo), Some(hi)] => format!(
            "{what}: η = {lo:.6} (bracket [{lo:.6}, {hi:.6}], deviations {} and {}; bisection in \
             log η to {}%, {} extra step sizes run in {:.1} s)",
            pct(t.deviation[0]),
            pct(t.deviation[1]),
            100.0 * t.tolerance,
            t.evaluations,
            t.seconds
        ),
        [None, Some(hi)] => format!(
            "{what}: none found — every η down to {hi:.3e} deviates more ({})",
            pct(t.deviation[1])
        ),
        [Some(lo), None] => format!(
            "{what}: at least {lo:.6} — every η up to it stays within ({}), and none above it \
             was found to leave",
            pct(t.deviation[0])
        ),
        [None, None] => format!("{what}: not determined"),
    }
}

pub fn format_sweep(s: &SweepSummary) -> String {
    use std::fmt::Write;
    let p = &s.problem;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "gdflow {} sweep — {}, seed={}, T={:.4}",
        s.provenance.crate_version,
        p.headline(),
        s.provenance.seed,
        s.sweep.horizon
    );
    let rs = &s.reference.solver;
    let _ = writeln!(
        out,
        "reference flow: {} at rtol {} and {}× tighter ({} and {} steps); ‖X*‖ = {:.4}",
        rs.method,
        s.provenance
            .config
            .get("rtol")
            .and_then(|v| v.as_float())
            .map_or("?".into(), |v| format!("{v:e}")),
        TIGHTENING,
        rs.steps,
        s.reference.solver_tight.steps,
        p.target_norm
    );
    if s.reference.status != Status::Completed {
        let _ = writeln!(out, "REFERENCE FLOW {:?}", s.reference.status);
    }
    let method = s.optimizer();
    let label = if method == "gd" { "GD" } else { "opt" };
    if method != "gd" {
        let _ = writeln!(
            out,
            "optimizer (opt) {method}: `dev plain` and `dev modif.` against its plain and modified \
             limits"
        );
    }
    let (err_m, teps_m) = (format!("err {label}"), format!("t_ε {label}"));
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "{:>10} {:>7} {:>11} {:>9} {:>11} {:>11} {:>9} {:>10} {:>10} {:>9} {:>9}  status",
        "η",
        "steps",
        "dev plain",
        "at t",
        "dev modif.",
        "ref error",
        "rel dev",
        err_m,
        "err flow",
        teps_m,
        "t_ε flow"
    );
    for q in &s.points {
        let flag = |below: bool| if below { "*" } else { " " };
        let _ = writeln!(
            out,
            "{:>10.4e} {:>7} {:>10.3e}{} {:>9.3} {:>10.3e}{} {:>11.2e} {:>9.2e} {:>10.2e} {:>10.2e} {:>9} {:>9}  {}",
            q.eta,
            q.steps,
            q.max_dev.value,
            flag(q.below_ref),
            q.max_dev.t,
            q.max_dev_modified.value,
            flag(q.below_ref_modified),
            q.ref_error.max(q.ref_error_modified),
            q.max_dev_rel,
            q.final_rel_error_gd,
            q.final_rel_error_flow,
            opt(q.t_eps_gd, 3),
            opt(q.t_eps_flow, 3),
            q.gd_status.label()
        );
    }
    if s.points.iter().any(|q| q.below_ref || q.below_ref_modified) {
        let _ = writeln!(
            out,
            "  * deviation not above the reference's own error: not resolved"
        );
    }
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "{}",
        describe_fit("plain flow (expect 1)", &s.fit_plain)
    );
    let _ = writeln!(
        out,
        "{}",
        describe_fit("modified flow (expect 2)", &s.fit_modified)
    );
    match &s.stability {
        Some(st) => {
            let sh = &st.sharpness;
            let (value, residual) = (
                sh.values.first().copied().unwrap_or(f64::NAN),
                sh.residuals.first().copied().unwrap_or(f64::NAN),
            );
            if sh.converged {
                let _ = writeln!(
                    out,
                    "sharpness λ_max = {value:.6} at t = {:.3} (rel. error there {:.2e}; block Lanczos, {} Hessian–vector products, residual {residual:.1e}) → 2/λ_max = {}",
                    st.sharpness_t,
                    st.sharpness_rel_error,
                    sh.hvps,
                    opt(s.two_over_lambda_max, 6)
                );
            } else {
                let _ = writeln!(
                    out,
                    "sharpness λ_max at t = {:.3}: NOT CONVERGED after {} Hessian–vector products (best estimate {value:.3e}, residual {residual:.1e}); 2/λ_max not reported, bisection started at 1/σ_1",
                    st.sharpness_t, sh.hvps
                );
            }
            match &st.bisection {
                Some(b) => {
                    let _ = writeln!(
                        out,
                        "stability limit: GD converges at η = {} and not at η = {} ({} GD runs of ≥ {} steps)",
                        opt(b.limit, 6),
                        opt(b.upper, 6),
                        b.trials.len(),
                        st.steps_per_trial
                    );
                }
                None => {
                    let _ = writeln!(out, "stability limit: not searched");
                }
            }
        }
        None if method != "gd" => {
            let _ = writeln!(
                out,
                "stability limit: GD's (bisection, 2/λ_max), not computed for {method}"
            );
        }
        None => {
            let _ = writeln!(
                out,
                "sharpness and stability limit: in shard 1 of this sweep"
            );
        }
    }
    if let Some(t) = &s.target_deviation {
        let _ = writeln!(out, "{}", target_line(t, label));
    }
    if let Some(w) = &s.weak {
        out.push_str(&weak_table(w));
    }
    let tm = &s.timings;
    let _ = writeln!(
        out,
        "wall time: {:.3} s (reference {:.3} s, step sizes {:.3} s, stability {:.3} s)",
        tm.total_seconds, tm.reference_seconds, tm.points_seconds, tm.stability_seconds
    );
    out
}

/// The table `gdflow check` prints.
pub fn format_checks(s: &CheckSummary) -> String {
    use std::fmt::Write;
    let p = &s.problem;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "gdflow {} check — {}, α={:e}, η={}, seed={}\n",
        s.provenance.crate_version,
        p.headline(),
        s.provenance.config.alpha,
        s.provenance.config.eta,
        s.provenance.seed
    );
    let _ = writeln!(
        out,
        "{:<26} {:>13}  {:<28} {:<6} prediction",
        "check", "measured", "predicted", "result"
    );
    for r in &s.rows {
        let verdict = match r.pass {
            Some(true) => "pass",
            Some(false) => "FAIL",
            None => "—",
        };
        let _ = writeln!(
            out,
            "{:<26} {:>13.5e}  {:<28} {:<6} {}",
            r.name, r.measured, r.predicted, verdict, r.prediction
        );
    }
    let failed = s.rows.iter().filter(|r| r.pass == Some(false)).count();
    let verdicts = s.rows.iter().filter(|r| r.pass.is_some()).count();
    let _ = writeln!(
        out,
        "\n{} — {} checks with a verdict, {} failed ({:.1} s)",
        match (s.passed, verdicts) {
            (true, 0) => "NOTHING TESTED: no prediction applies here",
            (true, _) => "ALL PASSED",
            (false, _) => "SOME CHECKS FAILED",
        },
        verdicts,
        failed,
        s.total_seconds
    );
    out
}
