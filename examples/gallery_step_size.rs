//! Gallery: step size against the flow limit, across the stability limit.
//! figures/step_size.{png,svg,csv} and figures/step_size.txt.
//!
//! The 8×7 problem of the central-flow section (r = 2, k = 3, m = 60, α = 1e-2, seed 1),
//! where the gradient flow ends at a minimum of sharpness S* ≈ 2.44, so GD's stability limit
//! there is 2/S* ≈ 0.82. Sixteen step sizes from 0.02 to 0.8 (geometric) and 0.85 to 1.2, each run to
//! t = 150, against the plain flow, GD's modified flow and the central flow. Left: the
//! largest distance max_j ‖X_j − X(t_j)‖ (it peaks during the escape from the start); right:
//! the distance at the end, where the flows that ignore the stability limit stop tracking
//! (GD's two-step average against the central flow).
//!
//! `cargo run --release --example gallery_step_size` (about 3 s)

use gdflow::config::{ConfigArgs, SweepArgs};
use gdflow::plot::{write_figure, Figure, Panel, Series, Style};

fn main() -> anyhow::Result<()> {
    // geometric below the limit, denser past it
    let mut etas: Vec<f64> = (0..10)
        .map(|i| 0.02 * (0.8f64 / 0.02).powf(i as f64 / 9.0))
        .collect();
    etas.extend([0.85, 0.9, 0.95, 1.0, 1.1, 1.2]);
    let args = ConfigArgs {
        n1: Some(8),
        n2: Some(7),
        rank: Some(2),
        width: Some(3),
        measurements: Some(60),
        alpha: Some(1e-2),
        seed: Some(1),
        eta: None,
        steps: None,
        ..Default::default()
    };
    let sweep = SweepArgs {
        etas: Some(etas.clone()),
        horizon: Some(150.0),
        stability_steps: Some(0),
        ..Default::default()
    };
    let s = gdflow::experiments::sweep_config(&args, &sweep)?;
    let limit = s.summary.two_over_lambda_max;
    let last = |eta: f64| {
        s.deviations
            .iter()
            .rev()
            .find(|r| r.eta == eta)
            .expect("a row per η")
    };
    let mut table = String::from("eta      max_plain  max_modified  max_central  end_plain  end_modified  end_central  central_p\n");
    let (mut max_plain, mut max_mod, mut max_cen) = (vec![], vec![], vec![]);
    let (mut end_plain, mut end_mod, mut end_cen) = (vec![], vec![], vec![]);
    for p in &s.summary.points {
        let r = last(p.eta);
        let c = p.central.as_ref();
        let cen_max = c.map_or(f64::NAN, |c| c.max_dev.value);
        let cen_end = r.dev_central.unwrap_or(f64::NAN);
        max_plain.push((p.eta, p.max_dev.value));
        max_mod.push((p.eta, p.max_dev_modified.value));
        max_cen.push((p.eta, cen_max));
        end_plain.push((p.eta, r.dev));
        end_mod.push((p.eta, r.dev_modified));
        end_cen.push((p.eta, cen_end));
        table.push_str(&format!(
            "{:<7.4}  {:<9.3e}  {:<12.3e}  {:<11.3e}  {:<9.3e}  {:<12.3e}  {:<11.3e}  {}\n",
            p.eta,
            p.max_dev.value,
            p.max_dev_modified.value,
            cen_max,
            r.dev,
            r.dev_modified,
            cen_end,
            c.map_or(0, |c| c.max_active)
        ));
    }
    if let Some(l) = limit {
        table.push_str(&format!(
            "2/lambda_max at the end of the gradient flow: {l:.4}\n"
        ));
    }
    print!("{table}");
    let panel = |title: &str, y_label: &str, series: [Vec<(f64, f64)>; 3]| {
        let mut p = Panel {
            title: title.into(),
            x_label: "step size η".into(),
            y_label: y_label.into(),
            log_x: true,
            log_y: true,
            ..Default::default()
        };
        let [plain, modified, central] = series;
        let lo = plain
            .iter()
            .chain(&modified)
            .chain(&central)
            .map(|q| q.1)
            .filter(|v| *v > 0.0)
            .fold(f64::INFINITY, f64::min);
        let hi = plain
            .iter()
            .chain(&modified)
            .chain(&central)
            .map(|q| q.1)
            .filter(|v| v.is_finite())
            .fold(0.0, f64::max);
        // the central flow is the plain flow below the limit: dashed over it
        for (name, color, style, pts) in [
            ("plain flow", 0, Style::Line, plain),
            ("modified flow", 1, Style::Line, modified),
            (
                "central flow (GD's two-step average)",
                3,
                Style::Dashed,
                central,
            ),
        ] {
            let pts: Vec<(f64, f64)> = pts.into_iter().filter(|q| q.1.is_finite()).collect();
            p.series.push(Series::new(name, color, style, pts.clone()));
            p.series.push(Series::new("", color, Style::Markers, pts));
        }
        if let Some(l) = limit {
            p.series.push(Series::new(
                "stability limit 2/λ_max",
                6,
                Style::Guide,
                vec![(l, lo), (l, hi)],
            ));
        }
        p
    };
    let fig = Figure {
        name: "step_size".into(),
        panels: vec![
            panel(
                "largest distance over the run",
                "max_j ‖X_j − X(t_j)‖",
                [max_plain, max_mod, max_cen],
            ),
            panel(
                "distance at the end (t = 150)",
                "‖X_J − X(t_J)‖",
                [end_plain, end_mod, end_cen],
            ),
        ],
        columns: None,
    };
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("figures");
    write_figure(&fig, &dir)?;
    std::fs::write(dir.join("step_size.txt"), &table)?;
    println!("wrote {}/step_size.{{png,svg,csv,txt}}", dir.display());
    Ok(())
}
