//! Fits and crossings of recorded series: observed orders, slopes, first-passage times.

use serde::{Deserialize, Serialize};

/// A least-squares line through (ln η, ln dev).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OrderFit {
    /// The slope: the observed order.
    pub order: Option<f64>,
    pub intercept: Option<f64>,
    /// Standard error of the slope (needs ≥ 3 points).
    pub order_stderr: Option<f64>,
    /// Root-mean-square residual of ln dev about the line (needs ≥ 3 points).
    pub residual_std: Option<f64>,
    /// Largest |residual| of ln dev.
    pub max_residual: Option<f64>,
    pub etas_used: Vec<f64>,
    pub excluded: Vec<Exclusion>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Exclusion {
    pub eta: f64,
    pub reason: String,
}

/// Fit ln dev = order·ln η + c over the points with dev above its reference error and GD
/// completed.
pub fn fit_order(points: &[(f64, f64, f64, bool)]) -> OrderFit {
    let mut excluded = Vec::new();
    let mut used = Vec::new();
    for &(eta, dev, ref_error, completed) in points {
        if !completed {
            excluded.push(Exclusion {
                eta,
                reason: "GD diverged or a flow failed".into(),
            });
        } else if dev.partial_cmp(&ref_error) != Some(std::cmp::Ordering::Greater) || dev <= 0.0 {
            excluded.push(Exclusion {
                eta,
                reason: format!("deviation {dev:e} not above the reference error {ref_error:e}"),
            });
        } else {
            used.push((eta, dev));
        }
    }
    let n = used.len();
    let mut fit = OrderFit {
        order: None,
        intercept: None,
        order_stderr: None,
        residual_std: None,
        max_residual: None,
        etas_used: used.iter().map(|p| p.0).collect(),
        excluded,
    };
    if n < 2 {
        return fit;
    }
    let xs: Vec<f64> = used.iter().map(|p| p.0.ln()).collect();
    let ys: Vec<f64> = used.iter().map(|p| p.1.ln()).collect();
    let mx = xs.iter().sum::<f64>() / n as f64;
    let my = ys.iter().sum::<f64>() / n as f64;
    let sxx: f64 = xs.iter().map(|x| (x - mx).powi(2)).sum();
    if sxx <= 0.0 {
        return fit;
    }
    let sxy: f64 = xs.iter().zip(&ys).map(|(x, y)| (x - mx) * (y - my)).sum();
    let slope = sxy / sxx;
    let c = my - slope * mx;
    let residuals: Vec<f64> = xs
        .iter()
        .zip(&ys)
        .map(|(x, y)| y - (slope * x + c))
        .collect();
    fit.order = Some(slope);
    fit.intercept = Some(c);
    fit.max_residual = Some(residuals.iter().fold(0.0, |m, r| m.max(r.abs())));
    if n >= 3 {
        let s2 = residuals.iter().map(|r| r * r).sum::<f64>() / (n - 2) as f64;
        fit.residual_std = Some(s2.sqrt());
        fit.order_stderr = Some((s2 / sxx).sqrt());
    }
    fit
}

/// First time the relative error drops below ε, interpolated in log error between samples.
pub fn first_passage(prev: Option<(f64, f64)>, t: f64, err: f64, eps: f64) -> Option<f64> {
    if err >= eps {
        return None;
    }
    match prev {
        Some((tp, ep)) if ep > eps && err > 0.0 => {
            let w = (ep.ln() - eps.ln()) / (ep.ln() - err.ln());
            Some(tp + w * (t - tp))
        }
        _ => Some(t),
    }
}

/// Least-squares slope of ys against xs.
pub fn slope(xs: &[f64], ys: &[f64]) -> f64 {
    let n = xs.len() as f64;
    let mx = xs.iter().sum::<f64>() / n;
    let my = ys.iter().sum::<f64>() / n;
    let sxy: f64 = xs.iter().zip(ys).map(|(x, y)| (x - mx) * (y - my)).sum();
    let sxx: f64 = xs.iter().map(|x| (x - mx).powi(2)).sum();
    sxy / sxx
}
