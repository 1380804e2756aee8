//! `sweep --optimizer sgd --replicas N` (MATH §10): at every step size the method's ensemble
//! against each of its limits — the gradient and modified flows (deterministic) and the two
//! SMEs (ensembles of their own) — by the weak error of the loss at the horizon, with its 95%
//! interval, and the SMEs' spread against the method's; then the weak order of each limit,
//! fitted only where every difference is resolved.

use std::collections::BTreeMap;

use crate::dynamics::FlowVariant;
use crate::error::Result;
use crate::results::ensemble::{WeakOrder, WeakPoint};
use crate::results::sweep::SweepSettings;

use super::{run, RunExtras, Setup};

/// The limits compared, in order.
const LIMITS: [FlowVariant; 4] = [
    FlowVariant::Plain,
    FlowVariant::Modified,
    FlowVariant::Sme1,
    FlowVariant::Sme2,
];

/// The weak errors at every step size of `settings`.
pub fn weak_points(setup: &Setup, settings: &SweepSettings) -> Result<Vec<WeakPoint>> {
    let mut points = Vec::new();
    for eta in settings.active_etas() {
        let mut point = WeakPoint {
            eta,
            weak_error: BTreeMap::new(),
            variance_ratio: BTreeMap::new(),
            method_loss: crate::results::ensemble::Stat::exact(f64::NAN),
            scheme_error: BTreeMap::new(),
        };
        for variant in LIMITS {
            let mut s = setup.clone();
            let steps = settings.steps_for(eta);
            s.config.eta = eta;
            s.config.steps = steps;
            s.config.record_every = steps.max(1);
            s.config.flow = variant;
            s.config.sharpness_every = 0;
            let summary = run(&s, &RunExtras::default())?.summary;
            let Some(e) = summary.ensemble else { continue };
            let method = &e.final_stats[&summary.optimizer.name];
            if let Some(w) = e.weak_error.get("loss") {
                point.weak_error.insert(variant.name().to_string(), *w);
            }
            point.method_loss = method["loss"];
            if let Some(se) = e.scheme_error.get("loss") {
                point.scheme_error.insert(variant.name().to_string(), *se);
            }
            if matches!(variant, FlowVariant::Sme1 | FlowVariant::Sme2) {
                let (a, b) = (e.final_stats["flow"]["loss"], method["loss"]);
                point
                    .variance_ratio
                    .insert(variant.name().to_string(), (a.std / b.std).powi(2));
            }
        }
        points.push(point);
    }
    Ok(points)
}

/// The fitted weak order of each limit across the step sizes.
pub fn weak_orders(points: &[WeakPoint]) -> BTreeMap<String, WeakOrder> {
    LIMITS
        .iter()
        .map(|v| {
            let name = v.name().to_string();
            let errors: Vec<_> = points
                .iter()
                .filter_map(|p| p.weak_error.get(&name).map(|e| (p.eta, *e)))
                .collect();
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
            (name, order)
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
