//! `sweep --optimizer sgd --replicas N` (MATH §10): at every step size the method's ensemble
//! against each of its limits — the gradient and modified flows (deterministic) and the two
//! SMEs (ensembles of their own) — by the weak error of the loss at the horizon, with its 95%
//! interval, and the SMEs' spread against the method's; then the weak order of each limit,
//! fitted only where every difference is resolved.

use std::collections::BTreeMap;

use crate::dynamics::FlowVariant;
use crate::error::Result;
use crate::results::ensemble::{WeakError, WeakOrder, WeakPoint};
use crate::results::sweep::SweepSettings;

use super::ensemble::weak_against;
use super::Setup;

/// The limits compared, in order.
const LIMITS: [FlowVariant; 4] = [
    FlowVariant::Plain,
    FlowVariant::Modified,
    FlowVariant::Sme1,
    FlowVariant::Sme2,
];

/// The weak errors at every step size of `settings`: per step size one ensemble of the
/// method, compared with each limit.
pub fn weak_points(
    setup: &Setup,
    settings: &SweepSettings,
    show_progress: bool,
) -> Result<Vec<WeakPoint>> {
    let etas = settings.active_etas();
    let cfg = &setup.config;
    // per η: the method's replicas and two SMEs' on h and h/2 (more if substeps double);
    // with --vary start the deterministic limits' too
    let ensembles = 5 + if cfg.vary.is_some() { 2 } else { 0 };
    let steps: usize = etas.iter().map(|&e| settings.steps_for(e)).sum();
    let work = super::ensemble::replica_work(
        setup,
        cfg.replicas * steps,
        Some(cfg.sde_substeps.unwrap_or(8)),
    );
    let bar = super::progress::bar(
        show_progress,
        work,
        (ensembles * cfg.replicas * etas.len()) as u64,
        "replica",
    );
    let mut points = Vec::new();
    for eta in etas {
        bar.set_message(format!("weak errors at η = {eta}"));
        let mut s = setup.clone();
        s.config.eta = eta;
        s.config.steps = settings.steps_for(eta);
        s.config.record_every = s.config.steps.max(1);
        let w = weak_against(&s, &LIMITS, &bar)?;
        let method = w.method["loss"];
        let mut point = WeakPoint {
            eta,
            weak_error: BTreeMap::new(),
            variance_ratio: BTreeMap::new(),
            method_loss: method,
            scheme_error: BTreeMap::new(),
            substeps: w
                .substeps
                .iter()
                .map(|(l, c)| (l.clone(), c.substeps))
                .collect(),
        };
        for (name, stats) in &w.limits {
            let Some(limit) = stats.get("loss") else {
                continue;
            };
            // paired by start where the limit was solved from every replica's start
            let paired = w.paired.get(name).and_then(|p| p.get("loss")).copied();
            point.weak_error.insert(
                name.clone(),
                paired.unwrap_or_else(|| WeakError::between(&method, limit)),
            );
            // the spread is compared for the SMEs, whose own noise makes one
            if w.substeps.contains_key(name) {
                point
                    .variance_ratio
                    .insert(name.clone(), (limit.std / method.std).powi(2));
            }
        }
        for (name, scheme) in &w.scheme_error {
            if let Some(se) = scheme.get("loss") {
                point.scheme_error.insert(name.clone(), *se);
            }
        }
        points.push(point);
    }
    bar.finish_and_clear();
    Ok(points)
}

/// The fitted weak order of each limit across the step sizes.
pub fn weak_orders(points: &[WeakPoint]) -> BTreeMap<String, WeakOrder> {
    LIMITS
        .iter()
        .filter_map(|v| {
            let name = v.name().to_string();
            let errors: Vec<_> = points
                .iter()
                .filter_map(|p| p.weak_error.get(&name).map(|e| (p.eta, *e)))
                .collect();
            // a limit the method does not have
            if errors.is_empty() {
                return None;
            }
            let order = if errors.len() < 2 {
                WeakOrder {
                    order: None,
                    ci95: f64::NAN,
                    unresolved: Some("fewer than two step sizes".into()),
                }
            } else if let Some((eta, _)) = errors.iter().find(|(_, e)| !e.resolved) {
                WeakOrder {
                    order: None,
                    ci95: f64::NAN,
                    unresolved: Some(format!(
                        "at η = {eta} the difference's interval covers 0: more replicas"
                    )),
                }
            } else {
                let xs: Vec<f64> = errors.iter().map(|(eta, _)| eta.ln()).collect();
                let ys: Vec<f64> = errors
                    .iter()
                    .map(|(_, e)| e.difference.abs().ln())
                    .collect();
                let slope = crate::analysis::fit::slope(&xs, &ys);
                WeakOrder {
                    order: Some(slope),
                    ci95: slope_ci95(&xs, &ys, slope),
                    unresolved: None,
                }
            };
            Some((name, order))
        })
        .collect()
}

/// 1.96 × the least-squares slope's standard error (NaN with two points: no residual).
fn slope_ci95(xs: &[f64], ys: &[f64], slope: f64) -> f64 {
    let n = xs.len() as f64;
    if xs.len() < 3 {
        return f64::NAN;
    }
    let (mx, my) = (xs.iter().sum::<f64>() / n, ys.iter().sum::<f64>() / n);
    let sxx: f64 = xs.iter().map(|x| (x - mx).powi(2)).sum();
    let ssr: f64 = xs
        .iter()
        .zip(ys)
        .map(|(x, y)| (y - my - slope * (x - mx)).powi(2))
        .sum();
    1.96 * (ssr / (n - 2.0) / sxx).sqrt()
}
