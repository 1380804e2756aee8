//! Gallery: label-noise SGD against GD from the same imbalanced start (MATH §10).
//! figures/label_noise.{png,svg,csv} and figures/label_noise.txt.
//!
//! n1 = n2 = 8, r = k = 2, m = 100 Gaussian measurements, seed 3; the random start of scale
//! α = 0.5 with U_0 doubled and V_0 halved, so that U_0V_0ᵀ is the random start's and
//! UᵀU − VᵀV is not small. GD at η = 0.05 fits the target and keeps its imbalance (the gradient
//! flow conserves UᵀU − VᵀV; GD changes it by O(η²) per step). Label-noise SGD (labels
//! y_i + σε_i, fresh every step, σ = 0.5), 256 replicas from the same start: on the set of
//! minima it drifts towards smaller tr ∇²f ≈ n1‖V‖² + n2‖U‖², that is to balanced factors,
//! ‖UᵀU − VᵀV‖ → 0 and ‖U‖² + ‖V‖² → 2‖X*‖_*, over times of order 1/(ησ²) = 80.
//! Left: the imbalance; right: the factors' norms over the balanced ones; SGD's mean with its
//! 95% band, GD's one path.
//!
//! `cargo run --release --example gallery_label_noise` (about half a minute)

use gdflow::config::ConfigArgs;
use gdflow::experiments::{run, Command, RunExtras, Setup};
use gdflow::plot::{write_figure, Figure, Panel, Series, Style};

const ETA: f64 = 0.05;
const STEPS: usize = 2000;
const SIGMA: f64 = 0.5;
const REPLICAS: usize = 256;

fn main() -> anyhow::Result<()> {
    let args = ConfigArgs {
        n1: Some(8),
        n2: Some(8),
        rank: Some(2),
        width: Some(2),
        measurements: Some(100),
        alpha: Some(0.5),
        seed: Some(3),
        eta: Some(ETA),
        steps: Some(STEPS),
        record_every: Some(10),
        optimizer: Some("label-noise".into()),
        label_noise: Some(SIGMA),
        replicas: Some(REPLICAS),
        ..Default::default()
    };
    let mut sgd_setup = Setup::new(&args, Command::Run, false)?;
    sgd_setup.problem.u0 *= 2.0;
    sgd_setup.problem.v0 *= 0.5;
    let sgd = run(&sgd_setup, &RunExtras::default())?;

    let mut gd_setup = sgd_setup.clone();
    gd_setup.config.optimizer = "gd".into();
    gd_setup.config.label_noise = None;
    gd_setup.config.replicas = 1;
    gd_setup.config.save_states = true;
    let gd = run(&gd_setup, &RunExtras::default())?;
    let (_, gd_states) = gd
        .states
        .iter()
        .find(|(name, _)| name == "gd")
        .expect("GD's states are kept");
    let x_star = &gd_setup.problem.x_star;
    let nuclear: f64 = x_star.singular_values().sum();
    let field = gd_setup.field();
    let gd_values = |f: &dyn Fn(&nalgebra::DMatrix<f64>, &nalgebra::DMatrix<f64>) -> f64| {
        gd_states
            .t
            .iter()
            .zip(&gd_states.states)
            .map(|(t, x)| {
                let (u, v) = field.factors().split(x);
                (*t, f(&u.clone_owned(), &v.clone_owned()))
            })
            .collect::<Vec<_>>()
    };
    let gd_imbalance = gd_values(&|u, v| (u.tr_mul(u) - v.tr_mul(v)).norm());
    let gd_excess = gd_values(&|u, v| u.norm_squared() + v.norm_squared() - 2.0 * nuclear);

    let band = |quantity: &str| {
        sgd.ensemble
            .iter()
            .filter(|r| r.dynamics == "label-noise" && r.quantity == quantity)
            .map(|r| (r.t, r.stat.mean, r.stat.ci95))
            .collect::<Vec<_>>()
    };
    let mut table = format!(
        "label-noise SGD (σ = {SIGMA}, {REPLICAS} replicas) and GD, η = {ETA}, from U_0·2, V_0/2\n\
         t          imbalance SGD (±95%)     imbalance GD   norm excess SGD (±95%)   norm excess GD\n"
    );
    let (imb, exc) = (band("imbalance"), band("norm_excess"));
    let every = (imb.len() / 10).max(1);
    for (i, ((t, m, c), (_, me, ce))) in imb.iter().zip(&exc).enumerate() {
        if i % every == 0 || i + 1 == imb.len() {
            let g = gd_imbalance
                .iter()
                .find(|p| p.0 == *t)
                .map_or(f64::NAN, |p| p.1);
            let ge = gd_excess
                .iter()
                .find(|p| p.0 == *t)
                .map_or(f64::NAN, |p| p.1);
            table.push_str(&format!(
                "{t:<9.1}  {m:.3e} ± {c:.1e}      {g:.3e}      {me:+.3e} ± {ce:.1e}       {ge:+.3e}\n"
            ));
        }
    }
    let loss = sgd
        .summary
        .ensemble
        .as_ref()
        .map(|e| e.final_stats["label-noise"]["loss"])
        .expect("an ensemble");
    table.push_str(&format!(
        "final loss: label-noise SGD {:.3e} ± {:.1e} (the label noise's own floor), GD {:.3e}\n",
        loss.mean,
        loss.ci95,
        gd.gd.last().map_or(f64::NAN, |r| r.loss())
    ));
    print!("{table}");

    let panel = |title: &str, y_label: &str, quantity: &str, gd_points: Vec<(f64, f64)>| {
        let rows = band(quantity);
        Panel {
            title: title.into(),
            x_label: "t = jη".into(),
            y_label: y_label.into(),
            series: vec![
                Series::spanning(
                    "",
                    0,
                    Style::Tint,
                    rows.iter().map(|(t, m, c)| (*t, m - c, m + c)).collect(),
                ),
                Series::new(
                    format!("label-noise SGD σ = {SIGMA}: mean ± 95% ({REPLICAS} replicas)"),
                    0,
                    Style::Line,
                    rows.iter().map(|(t, m, _)| (*t, *m)).collect(),
                ),
                Series::new("GD", 6, Style::Dashed, gd_points),
            ],
            ..Default::default()
        }
    };
    let fig = Figure {
        name: "label_noise".into(),
        panels: vec![
            panel(
                "imbalance",
                "‖UᵀU − VᵀV‖",
                "imbalance",
                gd_imbalance.clone(),
            ),
            panel(
                "factor norms over the balanced factorisation's",
                "‖U‖² + ‖V‖² − 2Σσᵢ(X*)",
                "norm_excess",
                gd_excess.clone(),
            ),
        ],
        columns: None,
    };
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("figures");
    write_figure(&fig, &dir)?;
    std::fs::write(dir.join("label_noise.txt"), &table)?;
    println!("wrote {}/label_noise.{{png,svg,csv,txt}}", dir.display());
    Ok(())
}
