//! The figures users put in papers, built from results (in memory, or loaded from an output
//! directory by [`load_run`] and [`load_sweep`]).

use super::{ColorBar, Figure, Panel, Series, Style};

use crate::analysis::Record;
use crate::dynamics::Status;
use crate::results::run::RunResult;
use crate::results::sweep::{DeviationRow, SweepResult, SweepSummary};

/// Colour index of the flow: black in the palette.
const FLOW: usize = 6;

fn ended_at(status: &Status) -> Option<f64> {
    match status {
        Status::Completed => None,
        Status::Diverged { t, .. } | Status::Failed { t, .. } => Some(*t),
    }
}

/// How a figure names an optimiser: GD as GD, the others by their registry names.
fn method_label(name: &str) -> String {
    if name == "gd" {
        "GD".into()
    } else {
        name.into()
    }
}

fn eta_label(method: &str, eta: f64) -> String {
    format!("{} η = {}", method_label(method), super::short(eta))
}

/// Each run's legend name: its method and η, and where two runs would share that name, the
/// first configuration key in which it differs from another run of that name, with its own
/// value (", batch 60" and ", batch 120").
fn run_labels(runs: &[RunResult]) -> Vec<String> {
    let base: Vec<String> = runs
        .iter()
        .map(|r| eta_label(&r.summary.optimizer.name, r.summary.config().eta))
        .collect();
    let table = |r: &RunResult| {
        r.summary
            .config()
            .table_without(&["out", "save_problem"])
            .unwrap_or_default()
    };
    base.iter()
        .enumerate()
        .map(|(i, label)| {
            let Some(other) = (0..base.len()).find(|&j| j != i && base[j] == *label) else {
                return label.clone();
            };
            let (a, b) = (table(&runs[i]), table(&runs[other]));
            match a.iter().find(|(k, v)| b.get(*k) != Some(*v)) {
                Some((k, v)) => format!("{label}, {k} {}", v.to_string().trim_matches('"')),
                None => format!("{label} (run {})", i + 1),
            }
        })
        .collect()
}

/// The plain limit's name in a legend.
fn limit_label(method: &str) -> String {
    if method == "gd" {
        "gradient flow".into()
    } else {
        format!("{method}'s plain limit")
    }
}

/// What the balance drift figure says of the drifts.
fn drift_text(method: &str) -> String {
    if method == "gd" {
        "GD: O(η²) per step; flow: solver error".into()
    } else {
        format!("UᵀU − VᵀV is conserved by neither {method} nor its limits")
    }
}

fn panel(title: &str, y_label: &str, log_y: bool) -> Panel {
    Panel {
        title: title.into(),
        x_label: "t".into(),
        y_label: y_label.into(),
        log_x: false,
        log_y,
        series: vec![],
        texts: vec![],
        ..Default::default()
    }
}

fn gd_series(label: String, color: usize, points: Vec<(f64, f64)>, status: &Status) -> Series {
    Series {
        diverged_at: ended_at(status),
        ..Series::new(label, color, Style::Dashed, points)
    }
}

/// Beyond this many step sizes a legend entry each would cover the data: the η are told
/// apart by a sequential colour scale with a colour bar instead.
pub const MAX_LEGEND_ETAS: usize = 6;

/// How the series of each η are coloured and labelled: palette colours and one legend entry
/// each for a few; shades of one colour scale, a colour bar and one proxy entry for many.
struct EtaColors {
    bar: Option<ColorBar>,
    method: String,
}

impl EtaColors {
    fn new(etas: &[f64], method: &str) -> Self {
        let method = method_label(method);
        let bar = (etas.len() > MAX_LEGEND_ETAS).then(|| ColorBar {
            label: format!("{method} step size η ({} values)", etas.len()),
            min: etas.iter().copied().fold(f64::INFINITY, f64::min),
            max: etas.iter().copied().fold(0.0, f64::max),
            log: true,
        });
        Self { bar, method }
    }

    /// `series` (coloured by `index`) recoloured and relabelled for `eta`.
    fn apply(&self, mut series: Series, eta: f64) -> Series {
        if let Some(bar) = &self.bar {
            series.shade = Some(bar.position(eta));
            // off the legend (the colour bar tells η), still named in the CSV
            series.name = Some(std::mem::take(&mut series.label));
        }
        series
    }

    /// The proxy legend entry and the colour bar, when shades are used.
    fn finish(self, p: &mut Panel, style: Style) {
        if let Some(bar) = self.bar {
            let what = if style == Style::Dashed {
                "dashed"
            } else {
                "solid"
            };
            p.series.push(Series::new(
                format!("{} ({what}; colour: η)", self.method),
                FLOW,
                style,
                vec![],
            ));
            p.color_bar = Some(bar);
        }
    }
}

/// Whether the runs' flows differ with η (a modified or central flow): then each run's flow
/// is drawn, not one gradient flow for all.
fn per_run_flows(runs: &[RunResult]) -> bool {
    runs.iter()
        .any(|r| r.summary.config().flow != crate::dynamics::FlowVariant::Plain)
}

/// The run with the longest horizon: its flow is drawn once for all.
fn longest(runs: &[RunResult]) -> &RunResult {
    runs.iter()
        .max_by(|a, b| a.summary.flow.final_t.total_cmp(&b.summary.flow.final_t))
        .expect("at least one run")
}

fn records_panel(
    runs: &[RunResult],
    title: &str,
    y_label: &str,
    value: impl Fn(&Record) -> f64,
) -> Panel {
    let mut p = panel(title, y_label, true);
    let etas: Vec<f64> = runs.iter().map(|r| r.summary.config().eta).collect();
    let method = runs[0].summary.optimizer.name.clone();
    let colors = EtaColors::new(&etas, &method);
    if per_run_flows(runs) {
        // a modified or central flow depends on η: each run's own, in its GD's colour
        for (i, run) in runs.iter().enumerate() {
            let variant = run.summary.config().flow;
            let series = Series {
                diverged_at: ended_at(&run.summary.flow.status),
                ..Series::new(
                    format!("{} flow, η = {}", variant.name(), super::short(etas[i])),
                    i,
                    Style::Line,
                    run.flow.iter().map(|r| (r.t, value(r))).collect(),
                )
            };
            p.series.push(colors.apply(series, etas[i]));
        }
    } else {
        let flow = longest(runs);
        p.series.push(Series {
            diverged_at: ended_at(&flow.summary.flow.status),
            ..Series::new(
                limit_label(&flow.summary.optimizer.name),
                FLOW,
                Style::Line,
                flow.flow.iter().map(|r| (r.t, value(r))).collect(),
            )
        });
    }
    let labels = run_labels(runs);
    for (i, run) in runs.iter().enumerate() {
        let series = gd_series(
            labels[i].clone(),
            i,
            run.gd.iter().map(|r| (r.t, value(r))).collect(),
            &run.summary.gd.status,
        );
        p.series.push(colors.apply(series, etas[i]));
    }
    colors.finish(&mut p, Style::Dashed);
    p
}

/// (a) Loss and relative error against t: the flow as a line, GD for each η dashed.
pub fn loss_error_runs(runs: &[RunResult]) -> Figure {
    Figure {
        columns: None,
        name: "loss_error".into(),
        panels: vec![
            records_panel(runs, "loss", "f(U, V)", |r| r.loss()),
            records_panel(
                runs,
                "relative error",
                "‖UVᵀ − X*‖ / ‖X*‖",
                |r| r.rel_error(),
            ),
        ],
    }
}

/// (b) Singular values of UVᵀ against t: the top `shown` (default: the target's rank) in
/// colour, flow solid and GD dashed, with their targets dotted; the rest as one grey band
/// (their min–max over flow and GD). The y axis spans the coloured values and the targets:
/// the band below is clipped (the CSV keeps it), so that the values being learned are not
/// squeezed into a corner by the ones that stay near the start.
pub fn singular_values(run: &RunResult, shown: Option<usize>) -> Figure {
    let mut p = panel("singular values of UVᵀ", "σ_i(UVᵀ)", true);
    let k = run.flow.first().map_or(0, |r| r.sv().len());
    let targets = &run.summary.problem.target_singular_values;
    let shown = shown.unwrap_or(targets.len()).clamp(1, k.max(1)).min(k);
    let t_end = run
        .flow
        .last()
        .map_or(0.0, |r| r.t)
        .max(run.gd.last().map_or(0.0, |r| r.t));
    let t_start = run.flow.first().map_or(0.0, |r| r.t);
    let (mut lo, mut hi) = (f64::INFINITY, 0.0f64);
    let mut see = |v: f64| {
        if v > 0.0 && v.is_finite() {
            lo = lo.min(v);
            hi = hi.max(v);
        }
    };
    let many = shown > MAX_LEGEND_ETAS;
    let variant = run.summary.config().flow;
    // with many coloured, σ_i's place on the colour bar of the indices
    let shade = |i: usize| many.then(|| i as f64 / (shown - 1).max(1) as f64);
    for i in 0..shown {
        let flow: Vec<(f64, f64)> = spectral(&run.flow).map(|r| (r.t, r.sv()[i])).collect();
        let gd: Vec<(f64, f64)> = spectral(&run.gd).map(|r| (r.t, r.sv()[i])).collect();
        flow.iter().chain(&gd).for_each(|q| see(q.1));
        let name = |what: &str| {
            if variant == crate::dynamics::FlowVariant::Plain {
                format!("σ_{} {what}", i + 1)
            } else {
                format!("σ_{} {} {what}", i + 1, variant.name())
            }
        };
        // in the legend only when few are drawn; in the CSV always
        let label = |what: &str| if many { String::new() } else { name(what) };
        p.series.push(Series {
            diverged_at: ended_at(&run.summary.flow.status),
            shade: shade(i),
            name: Some(name("flow")),
            ..Series::new(label("flow"), i, Style::Line, flow)
        });
        let method = method_label(&run.summary.optimizer.name);
        p.series.push(Series {
            shade: shade(i),
            name: Some(format!("σ_{} {method}", i + 1)),
            ..gd_series(String::new(), i, gd, &run.summary.gd.status)
        });
    }
    for (i, &s) in targets.iter().enumerate().take(shown) {
        see(s);
        p.series.push(Series {
            shade: shade(i),
            ..Series::new(
                if i == 0 { "targets (dotted)" } else { "" },
                i,
                Style::Guide,
                vec![(t_start, s), (t_end, s)],
            )
        });
    }
    p.series.push(Series::new(
        format!(
            "{} (dashed)",
            eta_label(&run.summary.optimizer.name, run.summary.config().eta)
        ),
        FLOW,
        Style::Dashed,
        vec![],
    ));
    if k > shown {
        let band: Vec<(f64, f64, f64)> = spectral(&run.flow)
            .zip(spectral(&run.gd))
            .map(|(f, g)| {
                let (fs, gs) = (f.sv(), g.sv());
                let rest = fs[shown..].iter().chain(&gs[shown..]);
                let min = rest.clone().copied().fold(f64::INFINITY, f64::min);
                let max = rest.copied().fold(f64::NEG_INFINITY, f64::max);
                (f.t, min, max)
            })
            .collect();
        p.series.insert(
            0,
            Series::band(
                format!(
                    "σ_{}…σ_{k}: {} values, flow and GD (min–max)",
                    shown + 1,
                    k - shown
                ),
                band,
            ),
        );
        if lo.is_finite() {
            p.y_range = Some((lo / 1.5, hi * 1.5));
        }
    }
    if many {
        p.color_bar = Some(ColorBar {
            label: "index i of σ_i".into(),
            min: 1.0,
            max: shown as f64,
            log: false,
        });
    }
    Figure {
        columns: None,
        name: "singular_values".into(),
        panels: vec![p],
    }
}

/// (c) Balance drift ‖UᵀU − VᵀV − D_0‖ against t.
pub fn balance_drift_runs(runs: &[RunResult]) -> Figure {
    let mut p = records_panel(
        runs,
        "balance drift",
        "‖UᵀU − VᵀV − D₀‖",
        |r| r.balance_drift(),
    );
    if !per_run_flows(runs) {
        for s in p.series.iter_mut().skip(1) {
            s.style = Style::Line;
        }
    }
    p.texts.push(drift_text(&runs[0].summary.optimizer.name));
    Figure {
        columns: None,
        name: "balance_drift".into(),
        panels: vec![p],
    }
}

/// The records that carry the spectral columns (all of them unless `--spectrum-every` left
/// some empty): a missing value is not drawn as a divergence.
fn spectral(records: &[Record]) -> impl Iterator<Item = &Record> {
    records.iter().filter(|r| r.get("rho").is_some())
}

/// Whether a run recorded the spectral columns anywhere (not with `--spectrum-every 0`): the
/// singular values' figure would be empty but for the targets.
pub fn has_spectrum(run: &RunResult) -> bool {
    spectral(&run.flow).next().is_some() || spectral(&run.gd).next().is_some()
}

/// A recorded quantity and its legend label.
type Quantity = (&'static str, fn(&Record) -> f64);

/// (e) Phases: signal strength, alignment and spurious part against t for the flow (solid)
/// and GD (dashed), with the detected phase boundaries as vertical lines.
pub fn phases(run: &RunResult, phases: &crate::analysis::theory::Phases) -> Figure {
    let mut p = panel("phases (MATH §6)", "", true);
    let quantities: [Quantity; 3] = [
        ("signal σ_r(L*ᵀU)", |r| r.signal_u()),
        ("alignment ‖sin Θ‖", |r| r.sin_theta_u()),
        ("spurious ‖(I − L*L*ᵀ)U‖", |r| r.spurious_u()),
    ];
    let mut lo = f64::INFINITY;
    let mut hi: f64 = 0.0;
    for (i, (name, f)) in quantities.iter().enumerate() {
        let flow: Vec<(f64, f64)> = spectral(&run.flow).map(|r| (r.t, f(r))).collect();
        for &(_, v) in &flow {
            if v > 0.0 && v.is_finite() {
                lo = lo.min(v);
                hi = hi.max(v);
            }
        }
        p.series.push(Series::new(*name, i, Style::Line, flow));
        p.series.push(gd_series(
            String::new(),
            i,
            spectral(&run.gd).map(|r| (r.t, f(r))).collect(),
            &run.summary.gd.status,
        ));
    }
    if lo.is_finite() {
        for (name, t, color) in [
            ("end of alignment", phases.end_of_alignment, 1),
            ("end of growth", phases.end_of_growth, 0),
        ] {
            if let Some(t) = t {
                p.series.push(Series::new(
                    name,
                    color,
                    Style::Guide,
                    vec![(t, lo), (t, hi)],
                ));
                p.texts.push(format!("{name}: t = {}", super::short(t)));
            }
        }
    }
    p.texts.push("flow solid, GD dashed".into());
    Figure {
        columns: None,
        name: "phases".into(),
        panels: vec![p],
    }
}

/// Every figure a set of runs supports (b for the first run, with `shown` singular values in
/// colour; the ensemble's bands for each run that has replicas).
pub fn run_figures(runs: &[RunResult], shown: Option<usize>) -> Vec<Figure> {
    if runs.is_empty() {
        return vec![];
    }
    let mut figures = vec![loss_error_runs(runs)];
    if has_spectrum(&runs[0]) {
        figures.push(singular_values(&runs[0], shown));
    }
    figures.push(balance_drift_runs(runs));
    let labels = run_labels(runs);
    let with_replicas: Vec<(&RunResult, &String)> = runs
        .iter()
        .zip(&labels)
        .filter(|(r, _)| !r.ensemble.is_empty())
        .collect();
    for (i, (run, label)) in with_replicas.iter().enumerate() {
        let mut f = ensemble_bands(run);
        if with_replicas.len() > 1 {
            // ensemble_1, ensemble_2, … in the order the runs were given, each saying whose
            f.name = format!("{}_{}", f.name, i + 1);
            if let Some(p) = f.panels.first_mut() {
                p.texts.insert(0, format!("run: {label}"));
            }
        }
        figures.push(f);
    }
    figures
}

/// The ensemble's quantities (ensemble.csv's `quantity`) as they are drawn: name, title, axis
/// label, log axis.
const ENSEMBLE_PANELS: [(&str, &str, &str, bool); 6] = [
    ("loss", "loss", "f(U, V)", true),
    ("rel_error", "relative error", "‖UVᵀ − X*‖ / ‖X*‖", true),
    ("balance_drift", "balance drift", "‖D(t) − D(0)‖", true),
    (
        "distance",
        "distance to the limit",
        "‖U_jV_jᵀ − U(t)V(t)ᵀ‖",
        true,
    ),
    ("imbalance", "imbalance", "‖UᵀU − VᵀV‖", true),
    (
        "norm_excess",
        "factor norms over the balanced ones",
        "‖U‖² + ‖V‖² − 2Σσᵢ(X*)",
        false,
    ),
];

/// `--replicas N`: for every recorded quantity, the mean over time of the method's replicas
/// and (when the limit is stochastic) of the limit's, each with its 95% interval as a band of
/// its colour; a deterministic limit is its one path. Replica 0 is not drawn (trajectory.csv
/// has it).
pub fn ensemble_bands(run: &RunResult) -> Figure {
    let method = run.summary.optimizer.name.clone();
    let replicas = run.summary.ensemble.as_ref().map_or(0, |e| e.replicas);
    let extrapolated = run
        .summary
        .ensemble
        .as_ref()
        .is_some_and(|e| e.talay_tubaro);
    let flow = if extrapolated {
        format!("{}, Talay–Tubaro", run.summary.config().flow.name())
    } else {
        run.summary.config().flow.name().to_string()
    };
    let mut panels = Vec::new();
    for (quantity, title, y_label, log_y) in ENSEMBLE_PANELS {
        let mut p = panel(title, y_label, log_y);
        for (dynamics, color, label) in [
            (method.as_str(), 0, method_label(&method)),
            ("flow", FLOW, format!("limit ({flow})")),
        ] {
            let rows: Vec<_> = run
                .ensemble
                .iter()
                .filter(|r| r.dynamics == dynamics && r.quantity == quantity)
                .collect();
            if rows.is_empty() {
                // a deterministic limit: its one path, where trajectory.csv records the column
                if dynamics == "flow" && quantity != "distance" {
                    let pts = points(&run.flow, |r| r.get(quantity));
                    if pts.is_empty() {
                        p.texts.push(format!(
                            "the limit ({flow}) is one path, and trajectory.csv has no {quantity}"
                        ));
                    } else {
                        p.series.push(Series::new(label, color, Style::Line, pts));
                    }
                }
                continue;
            }
            p.series.push(Series {
                name: Some(format!("{label} 95% band")),
                ..Series::spanning(
                    "",
                    color,
                    Style::Tint,
                    rows.iter()
                        .map(|r| (r.t, r.stat.mean - r.stat.ci95, r.stat.mean + r.stat.ci95))
                        .collect(),
                )
            });
            p.series.push(Series::new(
                format!("{label}: mean ± 95%"),
                color,
                Style::Line,
                rows.iter().map(|r| (r.t, r.stat.mean)).collect(),
            ));
        }
        if !p.series.is_empty() {
            p.texts.push(format!(
                "{replicas} replicas; bands: 95% interval of the mean"
            ));
            panels.push(p);
        }
    }
    Figure {
        name: "ensemble".into(),
        panels,
        columns: Some(2),
    }
}

fn by_eta(rows: &[DeviationRow]) -> Vec<(f64, Vec<&DeviationRow>)> {
    let mut out: Vec<(f64, Vec<&DeviationRow>)> = Vec::new();
    for r in rows {
        match out.last_mut() {
            Some((eta, v)) if *eta == r.eta => v.push(r),
            _ => out.push((r.eta, vec![r])),
        }
    }
    out
}

fn sweep_panel(
    s: &SweepResult,
    title: &str,
    y_label: &str,
    gd: impl Fn(&DeviationRow) -> f64,
    flow: impl Fn(&DeviationRow) -> f64,
    style: Style,
) -> Panel {
    let mut p = panel(title, y_label, true);
    let groups = by_eta(&s.deviations);
    let method = s.summary.optimizer().to_string();
    // The finest grid (smallest η) shows the flow best.
    if let Some((_, rows)) = groups.first() {
        p.series.push(Series {
            diverged_at: ended_at(&s.summary.reference.status),
            ..Series::new(
                limit_label(&method),
                FLOW,
                Style::Line,
                rows.iter().map(|r| (r.t, flow(r))).collect(),
            )
        });
    }
    let etas: Vec<f64> = groups.iter().map(|g| g.0).collect();
    let colors = EtaColors::new(&etas, &method);
    for (i, (eta, rows)) in groups.iter().enumerate() {
        let status = s
            .summary
            .points
            .iter()
            .find(|q| q.eta == *eta)
            .map_or(Status::Completed, |q| q.gd_status.clone());
        let series = Series {
            style,
            ..gd_series(
                eta_label(&method, *eta),
                i,
                rows.iter().map(|r| (r.t, gd(r))).collect(),
                &status,
            )
        };
        p.series.push(colors.apply(series, *eta));
    }
    colors.finish(&mut p, style);
    p
}

/// (a) from a sweep: loss and relative error for every η.
pub fn loss_error_sweep(s: &SweepResult) -> Figure {
    Figure {
        columns: None,
        name: "loss_error".into(),
        panels: vec![
            sweep_panel(
                s,
                "loss",
                "f(U, V)",
                |r| r.loss_gd,
                |r| r.loss_flow,
                Style::Dashed,
            ),
            sweep_panel(
                s,
                "relative error",
                "‖UVᵀ − X*‖ / ‖X*‖",
                |r| r.rel_error_gd,
                |r| r.rel_error_flow,
                Style::Dashed,
            ),
        ],
    }
}

/// (c) from a sweep: GD's balance drift for every η, growing like η², and the flow's.
pub fn balance_drift_sweep(s: &SweepResult) -> Figure {
    let mut p = sweep_panel(
        s,
        "balance drift",
        "‖UᵀU − VᵀV − D₀‖",
        |r| r.drift_gd,
        |r| r.drift_flow,
        Style::Line,
    );
    p.texts.push(drift_text(s.summary.optimizer()));
    Figure {
        columns: None,
        name: "balance_drift".into(),
        panels: vec![p],
    }
}

fn fit_text(name: &str, order: Option<f64>, stderr: Option<f64>) -> String {
    match (order, stderr) {
        (Some(o), Some(e)) => format!("fitted slope vs {name}: {o:.3} ± {e:.3}"),
        (Some(o), None) => format!("fitted slope vs {name}: {o:.3}"),
        _ => format!("fitted slope vs {name}: not determined"),
    }
}

/// A line of slope `order` in log–log through the geometric centre of `points` moved down by
/// a factor 3 (so that it does not hide them), spanning them.
fn reference_line(points: &[(f64, f64)], order: f64) -> Vec<(f64, f64)> {
    let pts: Vec<&(f64, f64)> = points.iter().filter(|p| p.0 > 0.0 && p.1 > 0.0).collect();
    if pts.is_empty() {
        return vec![];
    }
    let n = pts.len() as f64;
    let cx = pts.iter().map(|p| p.0.ln()).sum::<f64>() / n;
    let cy = pts.iter().map(|p| p.1.ln()).sum::<f64>() / n;
    let lo = pts.iter().map(|p| p.0).fold(f64::INFINITY, f64::min);
    let hi = pts.iter().map(|p| p.0).fold(0.0, f64::max);
    [lo, hi]
        .iter()
        .map(|&x| (x, (cy + order * (x.ln() - cx)).exp() / 3.0))
        .collect()
}

/// (d) Deviation against η, log–log, with the fitted slopes and reference slopes 1 and 2.
pub fn deviation_vs_eta(s: &SweepSummary) -> Figure {
    let plain: Vec<(f64, f64)> = s.points.iter().map(|p| (p.eta, p.max_dev.value)).collect();
    let modified: Vec<(f64, f64)> = s
        .points
        .iter()
        .map(|p| (p.eta, p.max_dev_modified.value))
        .collect();
    let reference: Vec<(f64, f64)> = s
        .points
        .iter()
        .map(|p| (p.eta, p.ref_error.max(p.ref_error_modified)))
        .collect();
    let mut p = Panel {
        title: "GD against the flows".into(),
        x_label: "step size η".into(),
        y_label: "max_j ‖X_j − X(jη)‖".into(),
        log_x: true,
        log_y: true,
        series: vec![],
        texts: vec![
            fit_text("plain flow", s.fit_plain.order, s.fit_plain.order_stderr),
            fit_text(
                "modified flow",
                s.fit_modified.order,
                s.fit_modified.order_stderr,
            ),
        ],
        ..Default::default()
    };
    p.series
        .push(Series::new("plain flow", 0, Style::Line, plain.clone()));
    p.series
        .push(Series::new("", 0, Style::Markers, plain.clone()));
    p.series.push(Series::new(
        "modified flow",
        1,
        Style::Line,
        modified.clone(),
    ));
    p.series
        .push(Series::new("", 1, Style::Markers, modified.clone()));
    p.series.push(Series::new(
        "slope 1",
        0,
        Style::Guide,
        reference_line(&plain, 1.0),
    ));
    p.series.push(Series::new(
        "slope 2",
        1,
        Style::Guide,
        reference_line(&modified, 2.0),
    ));
    p.series.push(Series::new(
        "reference error",
        FLOW,
        Style::Markers,
        reference,
    ));
    Figure {
        columns: None,
        name: "deviation_vs_eta".into(),
        panels: vec![p],
    }
}

/// Every figure a sweep supports (the weak errors with `--replicas`).
pub fn sweep_figures(s: &SweepResult) -> Vec<Figure> {
    let mut figures = vec![
        loss_error_sweep(s),
        balance_drift_sweep(s),
        deviation_vs_eta(&s.summary),
    ];
    figures.extend(s.summary.weak.as_ref().map(weak_error));
    figures
}

/// `sweep --replicas N` (MATH §10): |E f(method) − E f(limit)| at T against η for each limit,
/// with 95% intervals as bars, and the SMEs' variance ratio to the method's. An unresolved
/// difference (its interval covers 0) is a hollow bar reaching the panel's floor.
pub fn weak_error(w: &crate::results::sweep::WeakSweep) -> Figure {
    let limits = ["plain", "modified", "sme1", "sme2"];
    let mut errors = Panel {
        title: format!("weak error of the loss at T ({} replicas)", w.replicas),
        x_label: "step size η".into(),
        y_label: "|E f(method) − E f(limit)|".into(),
        log_x: true,
        log_y: true,
        ..Default::default()
    };
    // an interval reaching 0 is drawn down to a decade below the smallest resolved difference
    let floor = w
        .points
        .iter()
        .flat_map(|p| p.weak_error.values())
        .filter(|e| e.resolved)
        .map(|e| e.difference.abs() - e.ci95)
        .fold(f64::INFINITY, f64::min)
        / 10.0;
    for (color, limit) in limits.iter().enumerate() {
        let values: Vec<(f64, &crate::results::ensemble::WeakError)> = w
            .points
            .iter()
            .filter_map(|p| p.weak_error.get(*limit).map(|e| (p.eta, e)))
            .collect();
        if values.is_empty() {
            continue;
        }
        let label = match w
            .orders
            .get(*limit)
            .and_then(|o| o.order.map(|v| (v, o.ci95)))
        {
            Some((v, ci)) if ci.is_finite() => format!("{limit}: order {v:.2} ± {ci:.2}"),
            Some((v, _)) => format!("{limit}: order {v:.2}"),
            None => format!("{limit}: no order (unresolved)"),
        };
        let resolved: Vec<(f64, f64)> = values
            .iter()
            .filter(|(_, e)| e.resolved)
            .map(|(eta, e)| (*eta, e.difference.abs()))
            .collect();
        errors
            .series
            .push(Series::new(label, color, Style::Dashed, resolved.clone()));
        errors.series.push(Series {
            name: Some(format!("{limit} resolved points")),
            ..Series::new("", color, Style::Markers, resolved)
        });
        errors.series.push(Series {
            name: Some(format!("{limit} 95% interval")),
            ..Series::spanning(
                "",
                color,
                Style::Bars,
                values
                    .iter()
                    .map(|(eta, e)| {
                        let d = e.difference.abs();
                        let lower = if e.resolved { d - e.ci95 } else { floor };
                        (*eta, lower, d + e.ci95)
                    })
                    .collect(),
            )
        });
    }
    errors
        .texts
        .push("bars: 95% intervals; a bar down to the floor covers 0 (unresolved)".into());
    let mut ratio = Panel {
        title: "spread: Var f(SME) / Var f(method) at T".into(),
        x_label: "step size η".into(),
        y_label: "variance ratio".into(),
        log_x: true,
        log_y: true,
        ..Default::default()
    };
    for (color, limit) in limits.iter().enumerate().skip(2) {
        let pts: Vec<(f64, f64)> = w
            .points
            .iter()
            .filter_map(|p| p.variance_ratio.get(*limit).map(|r| (p.eta, *r)))
            .collect();
        if !pts.is_empty() {
            ratio
                .series
                .push(Series::new(*limit, color, Style::Line, pts.clone()));
            ratio.series.push(Series {
                name: Some(format!("{limit} points")),
                ..Series::new("", color, Style::Markers, pts)
            });
        }
    }
    if let (Some(a), Some(b)) = (w.points.first(), w.points.last()) {
        ratio.series.push(Series::new(
            "equal spread",
            FLOW,
            Style::Guide,
            vec![(a.eta, 1.0), (b.eta, 1.0)],
        ));
    }
    Figure {
        name: "weak_error".into(),
        panels: vec![errors, ratio],
        columns: None,
    }
}

/// The figures drawn from one kind of result given to `gdflow plot`.
pub struct FigureSet {
    /// What they were drawn from, for the user.
    pub from: String,
    /// Sub-directory of the output (when runs and sweeps, or several sweeps, were given).
    pub subdir: Option<String>,
    pub figures: Vec<Figure>,
    /// What these results cannot give, and why.
    pub cannot: Vec<String>,
}

/// Sort `dirs` into run and sweep directories and say which figures each set gives: all
/// runs together (GD for every η against the flow), each sweep on its own. A directory that
/// is neither is an error naming it, before anything is drawn.
pub fn figure_sets(
    dirs: &[std::path::PathBuf],
    shown: Option<usize>,
) -> crate::error::Result<Vec<FigureSet>> {
    use crate::error::Error;
    let mut runs = Vec::new();
    let mut run_names = Vec::new();
    let mut sweeps = Vec::new();
    for d in dirs {
        if d.join("sweep.csv").exists() {
            sweeps.push((d, crate::results::sweep::load_sweep(d)?));
        } else if d.join("summary.json").exists() {
            runs.push(crate::results::run::load_run(d)?);
            run_names.push(d.display().to_string());
        } else {
            return Err(Error::invalid(
                "results",
                d.display(),
                "neither a run directory (summary.json, trajectory.csv) nor a sweep directory \
                 (sweep.csv, deviation.csv, summary.json)",
            ));
        }
    }
    if shown.is_some() && runs.is_empty() {
        return Err(Error::invalid(
            "--top-singular-values",
            shown.unwrap_or(0),
            "colours singular values in a run's figure, and no run directory was given \
             (a sweep records no singular values)",
        ));
    }
    // runs drawn together must be of one problem (they differ in η, steps, the limit)
    if let Some(first) = runs.first() {
        for (run, name) in runs.iter().zip(&run_names).skip(1) {
            let (a, b) = (&first.summary, &run.summary);
            let same = a.problem == b.problem
                && a.config().seed == b.config().seed
                && a.config().alpha == b.config().alpha
                && a.config().perturbation == b.config().perturbation;
            if !same {
                return Err(Error::invalid(
                    "results",
                    name,
                    format!(
                        "is a run of another problem than {} (its target, operator, start or \
                         seed differ): draw runs of one problem together",
                        run_names[0]
                    ),
                ));
            }
        }
    }
    let mixed = sweeps.len() + usize::from(!runs.is_empty()) > 1;
    let mut sets = Vec::new();
    if !runs.is_empty() {
        let mut cannot =
            vec!["deviation_vs_eta needs a sweep directory (gdflow sweep)".to_string()];
        if !has_spectrum(&runs[0]) {
            cannot.push(format!(
                "singular_values: {} recorded no singular values (--spectrum-every 0)",
                run_names[0]
            ));
        } else if runs.len() > 1 {
            cannot.push(format!(
                "singular_values is drawn for the first run only ({})",
                run_names[0]
            ));
        }
        for (run, name) in runs.iter().zip(&run_names) {
            if run.summary.ensemble.is_some() && run.ensemble.is_empty() {
                cannot.push(format!(
                    "ensemble for {name}: its summary.json has an ensemble and ensemble.csv is \
                     missing"
                ));
            }
        }
        sets.push(FigureSet {
            from: format!("{} run(s): {}", runs.len(), run_names.join(", ")),
            subdir: None,
            figures: run_figures(&runs, shown),
            cannot,
        });
    }
    for (i, (d, s)) in sweeps.iter().enumerate() {
        let name = d
            .file_name()
            .map_or_else(|| format!("sweep{i}"), |n| n.to_string_lossy().into_owned());
        let clash = sweeps
            .iter()
            .filter(|(e, _)| e.file_name() == d.file_name())
            .count()
            > 1;
        sets.push(FigureSet {
            from: format!("sweep {}", d.display()),
            subdir: mixed.then(|| if clash { format!("{name}-{i}") } else { name }),
            figures: sweep_figures(s),
            cannot: vec![
                "singular_values needs a run directory (a sweep records no singular \
                          values)"
                    .to_string(),
            ],
        });
    }
    Ok(sets)
}

fn points(records: &[Record], y: impl Fn(&Record) -> Option<f64>) -> Vec<(f64, f64)> {
    records
        .iter()
        .filter_map(|r| y(r).map(|v| (r.t, v)))
        .collect()
}

/// The central flow's panels (MATH §8) for a `--flow central` run: loss, relative error and
/// sharpness against t, with GD's iterates (grey markers), GD's two-step average, the central
/// flow and each reference run's flow (`references`: label and run, the gradient flow's at
/// least) each in a colour of its own, and 2/η on the sharpness panel. `what` ends the titles.
pub fn central_flow_panels(
    central: &RunResult,
    references: &[(&str, &RunResult)],
    what: &str,
) -> Vec<Panel> {
    let eta = central.summary.config().eta;
    let t_end = central.flow.last().map_or(0.0, |r| r.t);
    let series = |y: &dyn Fn(&Record) -> Option<f64>| {
        let mut s = vec![
            Series::new("GD iterates", 6, Style::Markers, points(&central.gd, y)),
            Series::new(
                "GD two-step average",
                0,
                Style::Line,
                points(&central.gd_mean, y),
            ),
        ];
        for (i, (label, run)) in references.iter().enumerate() {
            s.push(Series::new(
                *label,
                1 + i,
                Style::Dashed,
                points(&run.flow, y),
            ));
        }
        s.push(Series::new(
            "central flow",
            1 + references.len(),
            Style::Line,
            points(&central.flow, y),
        ));
        s
    };
    let panel = |q: &str, y_label: &str, log_y: bool, series: Vec<Series>| Panel {
        title: format!("{q}, η = {eta:.4}{what}"),
        x_label: "t".into(),
        y_label: y_label.into(),
        log_y,
        series,
        ..Default::default()
    };
    let mut sharp = series(&|r| r.sharpness());
    sharp.push(Series::new(
        "2/η",
        5,
        Style::Guide,
        vec![(0.0, 2.0 / eta), (t_end, 2.0 / eta)],
    ));
    vec![
        panel("loss", "f(U, V)", true, series(&|r| Some(r.loss()))),
        panel(
            "relative error",
            "‖UVᵀ − X*‖ / ‖X*‖",
            true,
            series(&|r| Some(r.rel_error())),
        ),
        panel("sharpness", "λ_max(∇²f)", false, sharp),
    ]
}

/// `central_flow`: [`central_flow_panels`] of a `--flow central` run beside its gradient flow.
pub fn central_flow(central: &RunResult, plain: &RunResult) -> Figure {
    Figure {
        name: "central_flow".into(),
        panels: central_flow_panels(central, &[("gradient flow", plain)], ""),
        columns: Some(3),
    }
}
