//! `--method auto`: a stiffness monitor that hands the solve from the explicit method (Tsit45 or
//! DOP853, by tolerance) to BDF with the exact Jacobian when the step is held by stability,
//! not accuracy, and back.

use serde::{Deserialize, Serialize};

use super::Method;
use crate::field::{Field, Workspace};

/// The stiffness monitor of `--method auto`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AutoReport {
    /// The explicit method auto starts on and returns to (chosen by tolerance).
    #[serde(default)]
    pub explicit: String,
    /// Where the explicit method's stability region meets the negative real axis: h·λ beyond
    /// it diverges.
    pub stability_bound: f64,
    /// The explicit method hands over to BDF when h·ρ(∇²f) ≥ this fraction of the bound at two checks in
    /// a row (its step is pinned by stability, not accuracy) ...
    pub to_implicit_fraction: f64,
    /// ... and BDF hands back when h·ρ ≤ this fraction at two checks in a row.
    pub to_explicit_fraction: f64,
    pub checks: usize,
    /// Hessian–vector products spent on the checks (each costs one jvp).
    pub hvp_evals: usize,
    pub switches: Vec<MethodSwitch>,
    /// Time spent in each method (flow time, not wall time).
    pub time_explicit: f64,
    pub time_implicit: f64,
    /// One Jacobian and one LU factorisation, in units of one rhs evaluation (estimated from
    /// the sizes). The explicit method keeps a stiff stretch when the rhs evaluations it still needs to
    /// reach the end, at its pinned step, are fewer than `payback` times this.
    pub switch_cost_rhs: f64,
    pub payback: f64,
    /// Stiff verdicts that did not switch because the rest of the horizon was too short.
    pub declined: usize,
    /// Why no switch to BDF was possible, when that was the case.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// One change of method by `--method auto`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MethodSwitch {
    pub t: f64,
    pub from: String,
    pub to: String,
    /// The step size the solver was taking.
    pub step_size: f64,
    /// ρ(∇²f) at the switch, from warm-started power iteration.
    pub spectral_radius: f64,
    pub h_rho: f64,
}

/// [`super::real_stability_bound`] of diffsol's Tsit45.
pub fn tsit45_stability_bound() -> f64 {
    static BOUND: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *BOUND.get_or_init(|| {
        let tab = diffsol::Tableau::<f64>::tsit45();
        super::stability_region::real_stability_bound(tab.s(), |i, j| tab.a(i, j), |i| tab.b()[i])
    })
}

/// Decides, every few accepted steps, whether the flow is stiff at the current step size:
/// h·ρ(∇²f) against the explicit method's stability bound, ρ from a few power iterations on
/// Hessian–vector products warm-started from the last check's vector.
pub(super) struct StiffnessMonitor<'f> {
    field: &'f dyn Field,
    ws: Workspace,
    v: Vec<f64>,
    hv: Vec<f64>,
    steps_since_check: usize,
    interval: usize,
    /// Consecutive checks that voted to switch.
    votes: usize,
    /// The step size at the last check: BDF restarts at order 1 with a small step after a
    /// switch, and must not be sent back while its step is still growing.
    last_h: f64,
    t_end: f64,
    explicit: Method,
    pub(super) implicit_allowed: bool,
    pub(super) report: AutoReport,
}

impl<'f> StiffnessMonitor<'f> {
    const TO_IMPLICIT: f64 = 0.7;
    const TO_EXPLICIT: f64 = 0.25;
    const MIN_INTERVAL: usize = 10;
    const MAX_INTERVAL: usize = 80;
    const POWER_ITERATIONS: usize = 3;
    const FIRST_POWER_ITERATIONS: usize = 10;
    /// Beyond this many switches the problem is left to the method it is on: a flow that
    /// keeps crossing the thresholds gains nothing from more set-up costs.
    const MAX_SWITCHES: usize = 20;
    const PAYBACK: f64 = 10.0;

    pub(super) fn new(field: &'f dyn Field, t_end: f64, explicit: Method) -> Self {
        let n = field.state_len();
        let lu_macs = (n as f64).powi(3) / 3.0;
        // A fixed, dense start vector: deterministic, and not orthogonal to any eigenvector
        // in practice (the warm start carries the estimate from there on).
        let v: Vec<f64> = (0..n)
            .map(|i| 1.0 + 0.5 * ((i as f64) * 0.618_033_988_749_895).fract())
            .collect();
        Self {
            field,
            ws: field.workspace(),
            v,
            hv: vec![0.0; n],
            steps_since_check: 0,
            interval: Self::MIN_INTERVAL,
            votes: 0,
            last_h: f64::INFINITY,
            t_end,
            explicit,
            implicit_allowed: true,
            report: AutoReport {
                explicit: explicit.name().to_string(),
                stability_bound: match explicit {
                    Method::Dop853 => super::dop853::stability_bound(),
                    _ => tsit45_stability_bound(),
                },
                to_implicit_fraction: Self::TO_IMPLICIT,
                to_explicit_fraction: Self::TO_EXPLICIT,
                switch_cost_rhs: (field.jacobian_cost_macs() + lu_macs) / field.rhs_cost_macs(),
                payback: Self::PAYBACK,
                ..AutoReport::default()
            },
        }
    }

    /// ρ(∇²f) at `y`, estimated as ‖Hv‖ for the unit power-iteration vector v (a lower bound
    /// that converges from below).
    fn spectral_radius(&mut self, y: &[f64]) -> f64 {
        let iterations = if self.report.checks == 0 {
            Self::FIRST_POWER_ITERATIONS
        } else {
            Self::POWER_ITERATIONS
        };
        self.report.checks += 1;
        let mut rho = 0.0;
        for _ in 0..iterations {
            normalise(&mut self.v);
            self.field.hvp(y, &self.v, &mut self.hv, &mut self.ws);
            self.report.hvp_evals += 1;
            rho = self.hv.iter().map(|x| x * x).sum::<f64>().sqrt();
            if rho == 0.0 || !rho.is_finite() {
                break;
            }
            self.v.copy_from_slice(&self.hv);
        }
        if !rho.is_finite() || rho == 0.0 {
            // Keep a usable start vector for the next check.
            self.v.iter_mut().for_each(|x| *x = 1.0);
        }
        rho
    }

    /// The method to switch to after an accepted step of `method` ending at (`t`, `y`) with
    /// step size `h`, if any.
    pub(super) fn after_step(
        &mut self,
        method: Method,
        y: &[f64],
        t: f64,
        h: f64,
    ) -> Option<Method> {
        self.steps_since_check += 1;
        if self.steps_since_check < self.interval
            || self.report.switches.len() >= Self::MAX_SWITCHES
            || (method != Method::Bdf && !self.implicit_allowed)
        {
            return None;
        }
        self.steps_since_check = 0;
        let rho = self.spectral_radius(y);
        let h_rho = h.abs() * rho;
        let bound = self.report.stability_bound;
        let growing = h.abs() > self.last_h;
        self.last_h = h.abs();
        let (vote, to) = match method {
            Method::Bdf => (
                h_rho <= Self::TO_EXPLICIT * bound && !growing,
                self.explicit,
            ),
            _ => (h_rho >= Self::TO_IMPLICIT * bound, Method::Bdf),
        };
        if !vote {
            self.votes = 0;
            self.interval = (2 * self.interval).min(Self::MAX_INTERVAL);
            return None;
        }
        self.votes += 1;
        self.interval = Self::MIN_INTERVAL;
        if self.votes < 2 {
            return None;
        }
        self.votes = 0;
        if to == Method::Bdf {
            // new rhs evaluations per accepted step: Tsit45 7 stages, the last reused; DOP853
            // 12, and 3 more where the dense output is asked for
            let per_step = if self.explicit == Method::Dop853 {
                15.0
            } else {
                6.0
            };
            let remaining = per_step * (self.t_end - t) / h.abs();
            if remaining < self.report.payback * self.report.switch_cost_rhs {
                // The rest of the horizon only gets shorter: stop checking.
                self.report.declined += 1;
                self.implicit_allowed = false;
                return None;
            }
        }
        self.last_h = f64::INFINITY;
        self.report.switches.push(MethodSwitch {
            t,
            from: method.name().to_string(),
            to: to.name().to_string(),
            step_size: h,
            spectral_radius: rho,
            h_rho,
        });
        Some(to)
    }
}

fn normalise(v: &mut [f64]) {
    let norm = v.iter().map(|x| x * x).sum::<f64>().sqrt();
    if norm > 0.0 {
        v.iter_mut().for_each(|x| *x /= norm);
    }
}
