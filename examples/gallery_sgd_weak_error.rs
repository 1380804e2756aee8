//! Gallery: mini-batch SGD against its four limits, in distribution (MATH §10).
//! figures/sgd_weak_error.{png,svg,csv} and figures/sgd_weak_error.txt.
//!
//! MATH §10's tiny problem: 4×3, r = 1, k = 2, m = 12 Gaussian measurements, α = 0.5, seed 1;
//! SGD with batches of b = 3 drawn with replacement, T = 1, η ∈ {0.025, 0.05, 0.1, 0.2}.
//! At each η, 10⁵ replicas of SGD against the gradient flow, the modified flow (both
//! deterministic), SME-1 and SME-2 (10⁵ Euler–Maruyama paths each, on the substeps the
//! scheme's own error calls for — from 8 a step, doubled while E_h − E_{h/2} is resolved and
//! not below half the weak error; SME-2 takes 32 at η = 0.025 — and again on half the substep
//! for that error): the weak error of the loss at T with its 95% interval, and each SME's
//! variance against SGD's. The fitted weak orders are read only where every difference is
//! resolved (its interval excludes 0).
//!
//! `cargo run --release --example gallery_sgd_weak_error` (about 3½ minutes on 2 cores)

use gdflow::config::{ConfigArgs, SweepArgs};
use gdflow::experiments::sweep_config;
use gdflow::plot::figures::weak_error;
use gdflow::plot::write_figure;

const REPLICAS: usize = 100_000;

fn main() -> anyhow::Result<()> {
    let args = ConfigArgs {
        n1: Some(4),
        n2: Some(3),
        rank: Some(1),
        width: Some(2),
        measurements: Some(12),
        alpha: Some(0.5),
        seed: Some(1),
        optimizer: Some("sgd".into()),
        batch: Some(3),
        with_replacement: Some(true),
        replicas: Some(REPLICAS),
        ..Default::default()
    };
    let sweep = SweepArgs {
        etas: Some(vec![0.025, 0.05, 0.1, 0.2]),
        horizon: Some(1.0),
        stability_steps: Some(0),
        ..Default::default()
    };
    let s = sweep_config(&args, &sweep)?;
    let w = s.summary.weak.as_ref().expect("a sweep with replicas");
    let limits = ["plain", "modified", "sme1", "sme2"];
    let mut table = format!(
        "SGD (b = 3 with replacement) against its limits: weak error of the loss at T = 1,\n\
         E f(SGD) − E f(limit) ± 95% ({REPLICAS} replicas each; ? = unresolved)\n\
         η        {:>20} {:>20} {:>20} {:>20}   var ratio sme1  sme2\n",
        limits[0], limits[1], limits[2], limits[3]
    );
    for p in &w.points {
        table.push_str(&format!("{:<7}", p.eta));
        for l in limits {
            let cell = p.weak_error.get(l).map_or("-".into(), |e| {
                let mark = if e.resolved { "" } else { "?" };
                format!("{:+.2e}±{:.1e}{mark}", e.difference, e.ci95)
            });
            table.push_str(&format!("  {cell:>19}"));
        }
        let ratio = |l: &str| p.variance_ratio.get(l).map_or(f64::NAN, |r| *r);
        table.push_str(&format!(
            "   {:>13.3} {:>5.3}\n",
            ratio("sme1"),
            ratio("sme2")
        ));
    }
    for l in limits {
        let o = &w.orders[l];
        table.push_str(&match (o.order, &o.unresolved) {
            (Some(v), _) => format!("weak order vs {l}: {v:.3} ± {:.3}\n", o.ci95),
            (None, why) => format!(
                "weak order vs {l}: unresolved — {}\n",
                why.as_deref().unwrap_or("")
            ),
        });
    }
    for p in &w.points {
        for (l, e) in &p.scheme_error {
            table.push_str(&format!(
                "Euler–Maruyama's own weak error at η = {} for {l} (h − h/2): {:+.2e} ± {:.1e}\n",
                p.eta, e.difference, e.ci95
            ));
        }
    }
    print!("{table}");
    let mut fig = weak_error(w);
    fig.name = "sgd_weak_error".into();
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("figures");
    write_figure(&fig, &dir)?;
    std::fs::write(dir.join("sgd_weak_error.txt"), &table)?;
    println!("wrote {}/sgd_weak_error.{{png,svg,csv,txt}}", dir.display());
    Ok(())
}
