//! Figures with plotters: every figure as PNG and SVG, with the CSV of exactly the plotted
//! points beside it. The font is bundled (DejaVu Sans, see DejaVuSans-LICENSE.txt), so no
//! system font or fontconfig is needed.
//!
//! Log axes are drawn as linear axes over log10 of the data with ticks labelled 10^v. Values a
//! log axis cannot show (≤ 0) and non-finite values are left out, and the figure says how many;
//! a non-finite value ends its series with a divergence mark.

pub mod figures;

use std::path::Path;
use std::sync::Once;

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::FontStyle;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

static FONT: &[u8] = include_bytes!("DejaVuSans.ttf");
static REGISTER: Once = Once::new();

fn register_font() {
    REGISTER.call_once(|| {
        for style in [FontStyle::Normal, FontStyle::Bold, FontStyle::Italic] {
            plotters::style::register_font("sans-serif", style, FONT)
                .unwrap_or_else(|_| panic!("the bundled font is valid"));
        }
    });
}

/// Okabe–Ito: distinguishable with the common colour-vision deficiencies and in grey scale.
const PALETTE: [RGBColor; 8] = [
    RGBColor(0, 114, 178),
    RGBColor(213, 94, 0),
    RGBColor(0, 158, 115),
    RGBColor(204, 121, 167),
    RGBColor(230, 159, 0),
    RGBColor(86, 180, 233),
    RGBColor(0, 0, 0),
    RGBColor(240, 228, 66),
];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Style {
    Line,
    Dashed,
    Markers,
    /// A horizontal or reference line: thin and dotted.
    Guide,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Series {
    pub label: String,
    pub color: usize,
    pub style: Style,
    pub points: Vec<(f64, f64)>,
    /// The dynamics diverged at this time: the series ends there with a mark.
    pub diverged_at: Option<f64>,
}

impl Series {
    pub fn new(
        label: impl Into<String>,
        color: usize,
        style: Style,
        points: Vec<(f64, f64)>,
    ) -> Self {
        Self {
            label: label.into(),
            color,
            style,
            points,
            diverged_at: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Panel {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    pub log_x: bool,
    pub log_y: bool,
    pub series: Vec<Series>,
    /// Lines of text drawn in the panel (fitted slopes and the like).
    pub texts: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Figure {
    /// File stem: NAME.png, NAME.svg, NAME.csv.
    pub name: String,
    pub panels: Vec<Panel>,
    /// Panels per row (all in one row when `None`).
    #[serde(default)]
    pub columns: Option<usize>,
}

impl Figure {
    /// (columns, rows) of the panel grid.
    pub fn grid(&self) -> (usize, usize) {
        let n = self.panels.len().max(1);
        let columns = self.columns.unwrap_or(n).clamp(1, n);
        (columns, n.div_ceil(columns))
    }
}

type PlottedSeries = (usize, Vec<(f64, f64)>, Option<(f64, f64)>);

/// A panel's points as they are drawn, and what was left out.
struct Plotted {
    /// (index into the panel's series, kept points, where a divergence mark goes)
    series: Vec<PlottedSeries>,
    notes: Vec<String>,
}

fn plotted(panel: &Panel) -> Plotted {
    let mut series = Vec::new();
    let (mut nonpositive, mut nonfinite) = (0usize, 0usize);
    for (i, s) in panel.series.iter().enumerate() {
        let mut kept = Vec::new();
        let mut diverged = s.diverged_at;
        for &(x, y) in &s.points {
            if !x.is_finite() || !y.is_finite() {
                nonfinite += 1;
                diverged.get_or_insert(x);
                continue;
            }
            if (panel.log_x && x <= 0.0) || (panel.log_y && y <= 0.0) {
                nonpositive += 1;
                continue;
            }
            kept.push((x, y));
        }
        let mark = diverged.and_then(|_| kept.last().copied());
        series.push((i, kept, mark));
    }
    let mut notes = Vec::new();
    if nonpositive > 0 {
        notes.push(format!("{nonpositive} values ≤ 0 left out of the log axis"));
    }
    if nonfinite > 0 {
        notes.push(format!("{nonfinite} non-finite values left out"));
    }
    for s in &panel.series {
        let first_bad = s.points.iter().find(|p| !p.1.is_finite()).map(|p| p.0);
        if let Some(t) = s.diverged_at.or(first_bad) {
            notes.push(format!(
                "× {} diverged at {} = {}",
                s.label,
                panel.x_label,
                short(t)
            ));
        }
    }
    Plotted { series, notes }
}

fn short(v: f64) -> String {
    if v != 0.0 && (v.abs() < 1e-3 || v.abs() >= 1e4) {
        format!("{v:.3e}")
    } else {
        format!("{:.4}", v)
            .trim_end_matches('0')
            .trim_end_matches('.')
            .to_string()
    }
}

fn tx(log: bool, v: f64) -> f64 {
    if log {
        v.log10()
    } else {
        v
    }
}

fn tick(log: bool, v: f64) -> String {
    if log {
        let p = 10f64.powf(v);
        format!("{p:.0e}").replace("e0", "")
    } else {
        short(v)
    }
}

fn range(values: impl Iterator<Item = f64>, log: bool) -> (f64, f64) {
    let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
    for v in values {
        lo = lo.min(v);
        hi = hi.max(v);
    }
    if !lo.is_finite() {
        return (0.0, 1.0);
    }
    if hi - lo <= f64::EPSILON * lo.abs().max(1.0) {
        let pad = if log { 0.5 } else { lo.abs().max(1.0) * 0.1 };
        return (lo - pad, hi + pad);
    }
    let pad = 0.04 * (hi - lo);
    (lo - pad, hi + pad)
}

const PANEL_W: u32 = 720;
const PANEL_H: u32 = 520;

fn draw_panel<DB: DrawingBackend>(area: &DrawingArea<DB, Shift>, panel: &Panel) -> Result<()> {
    let err = |e: String| Error::invalid("figure", &panel.title, e);
    let p = plotted(panel);
    let xs = p
        .series
        .iter()
        .flat_map(|s| s.1.iter().map(|q| tx(panel.log_x, q.0)));
    let ys = p
        .series
        .iter()
        .flat_map(|s| s.1.iter().map(|q| tx(panel.log_y, q.1)));
    let (x0, x1) = range(xs, panel.log_x);
    let (y0, mut y1) = range(ys, panel.log_y);
    // Headroom for the legend and the notes, so they do not sit on the data.
    let lines = panel.texts.len() + p.notes.len();
    let legend = panel.series.iter().filter(|s| !s.label.is_empty()).count();
    y1 += (y1 - y0) * (0.06 * lines.max(legend.div_ceil(2)) as f64).min(0.6);
    let mut chart = ChartBuilder::on(area)
        .caption(&panel.title, ("sans-serif", 24))
        .margin(12)
        .x_label_area_size(56)
        .y_label_area_size(84)
        .build_cartesian_2d(x0..x1, y0..y1)
        .map_err(|e| err(e.to_string()))?;
    let (lx, ly) = (panel.log_x, panel.log_y);
    chart
        .configure_mesh()
        .x_desc(&panel.x_label)
        .y_desc(&panel.y_label)
        .axis_desc_style(("sans-serif", 20))
        .label_style(("sans-serif", 17))
        .x_labels(7)
        .y_labels(7)
        .x_label_formatter(&|v| tick(lx, *v))
        .y_label_formatter(&|v| tick(ly, *v))
        .light_line_style(RGBColor(235, 235, 235))
        .bold_line_style(RGBColor(215, 215, 215))
        .draw()
        .map_err(|e| err(e.to_string()))?;
    for (i, pts, mark) in &p.series {
        let s = &panel.series[*i];
        let color = PALETTE[s.color % PALETTE.len()];
        let data: Vec<(f64, f64)> = pts.iter().map(|q| (tx(lx, q.0), tx(ly, q.1))).collect();
        let label = s.label.clone();
        let anno = match s.style {
            Style::Line => chart
                .draw_series(LineSeries::new(data, color.stroke_width(2)))
                .map_err(|e| err(e.to_string()))?,
            Style::Dashed => chart
                .draw_series(DashedLineSeries::new(data, 9, 6, color.stroke_width(2)))
                .map_err(|e| err(e.to_string()))?,
            Style::Guide => chart
                .draw_series(DashedLineSeries::new(data, 3, 5, color.stroke_width(1)))
                .map_err(|e| err(e.to_string()))?,
            Style::Markers => chart
                .draw_series(data.into_iter().map(|q| Circle::new(q, 3, color.filled())))
                .map_err(|e| err(e.to_string()))?,
        };
        if !label.is_empty() {
            let style = s.style;
            // The legend shows each style as drawn: solid, dashed, dotted or a marker.
            anno.label(label).legend(move |(x, y)| {
                let seg = |a: i32, b: i32, w: u32| {
                    PathElement::new(vec![(a, 0), (b, 0)], color.stroke_width(w))
                };
                let dot = |r: u32| Circle::new((11, 0), r, color.filled());
                let at = EmptyElement::at((x, y));
                match style {
                    Style::Markers => {
                        at + dot(4) + seg(11, 11, 1) + seg(11, 11, 1) + seg(11, 11, 1)
                    }
                    Style::Line => at + dot(0) + seg(0, 8, 2) + seg(8, 15, 2) + seg(15, 22, 2),
                    Style::Dashed => at + dot(0) + seg(0, 8, 2) + seg(14, 22, 2) + seg(22, 22, 2),
                    Style::Guide => at + dot(0) + seg(0, 3, 1) + seg(9, 12, 1) + seg(18, 21, 1),
                }
            });
        }
        if let Some(q) = mark {
            let q = (tx(lx, q.0), tx(ly, q.1));
            chart
                .draw_series(std::iter::once(Cross::new(q, 8, color.stroke_width(3))))
                .map_err(|e| err(e.to_string()))?;
        }
    }
    if panel.series.iter().any(|s| !s.label.is_empty()) {
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .label_font(("sans-serif", 16))
            .background_style(WHITE.mix(0.85))
            .border_style(RGBColor(180, 180, 180))
            .draw()
            .map_err(|e| err(e.to_string()))?;
    }
    let mut lines: Vec<String> = panel.texts.iter().chain(&p.notes).cloned().collect();
    if p.series.iter().all(|s| s.1.is_empty()) {
        lines.push("no data to plot".to_string());
    }
    let plot_area = chart.plotting_area();
    let (px, py) = plot_area.get_pixel_range();
    for (k, line) in lines.iter().enumerate() {
        area.draw_text(
            line,
            &("sans-serif", 16).into_font().color(&BLACK),
            (
                px.start + 10 - area.get_base_pixel().0,
                py.start + 8 + 20 * k as i32 - area.get_base_pixel().1,
            ),
        )
        .map_err(|e| err(e.to_string()))?;
    }
    Ok(())
}

fn draw_figure<DB: DrawingBackend>(root: DrawingArea<DB, Shift>, fig: &Figure) -> Result<()> {
    root.fill(&WHITE)
        .map_err(|e| Error::invalid("figure", &fig.name, e.to_string()))?;
    let (columns, rows) = fig.grid();
    let areas = root.split_evenly((rows, columns));
    for (area, panel) in areas.iter().zip(&fig.panels) {
        draw_panel(area, panel)?;
    }
    root.present()
        .map_err(|e| Error::invalid("figure", &fig.name, e.to_string()))?;
    Ok(())
}

/// The CSV of exactly the plotted points: `panel,series,x,y`.
pub fn plotted_csv(fig: &Figure) -> Result<Vec<u8>> {
    let mut w = csv::Writer::from_writer(Vec::new());
    let err = |e: csv::Error| Error::invalid("figure csv", &fig.name, e.to_string());
    w.write_record(["panel", "series", "x", "y"]).map_err(err)?;
    for panel in &fig.panels {
        let p = plotted(panel);
        for (i, pts, _) in &p.series {
            for &(x, y) in pts {
                w.write_record([
                    panel.title.as_str(),
                    panel.series[*i].label.as_str(),
                    &crate::output::num(x),
                    &crate::output::num(y),
                ])
                .map_err(err)?;
            }
        }
    }
    w.into_inner()
        .map_err(|e| Error::invalid("figure csv", &fig.name, e.to_string()))
}

/// Write DIR/NAME.png, DIR/NAME.svg and DIR/NAME.csv, each appearing only once complete.
pub fn write_figure(fig: &Figure, dir: &Path) -> Result<()> {
    register_font();
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let (columns, rows) = fig.grid();
    let size = (PANEL_W * columns as u32, PANEL_H * rows as u32);
    let mut svg = String::new();
    draw_figure(
        SVGBackend::with_string(&mut svg, size).into_drawing_area(),
        fig,
    )?;
    // The bitmap backend picks its encoder from the extension, so the temporary name ends in .png.
    let png = dir.join(format!("{}.png", fig.name));
    let tmp = dir.join(format!(".{}.tmp-{}.png", fig.name, std::process::id()));
    let drawn = draw_figure(BitMapBackend::new(&tmp, size).into_drawing_area(), fig);
    if let Err(e) = drawn.and_then(|_| std::fs::rename(&tmp, &png).map_err(|e| Error::io(&png, e)))
    {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    crate::output::write_bytes(&dir.join(format!("{}.svg", fig.name)), svg.as_bytes())?;
    crate::output::write_bytes(&dir.join(format!("{}.csv", fig.name)), &plotted_csv(fig)?)?;
    Ok(())
}
