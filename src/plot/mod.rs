//! Figures with plotters: every figure as PNG and SVG, with the CSV of every plotted point
//! beside it (long series are decimated for drawing only). Legends, colour bars and notes sit
//! in a strip under each panel, so they cannot cover the data. The font is bundled (DejaVu Sans, see DejaVuSans-LICENSE.txt), so no
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
    /// A grey band between `points` (lower edge) and [`Series::upper`].
    Band,
    /// A translucent band in the series' colour between `points` and [`Series::upper`]: a
    /// confidence band about a line of the same colour.
    Tint,
    /// Vertical bars in the series' colour from each point up to [`Series::upper`]: intervals
    /// at a few x (error bars).
    Bars,
}

impl Style {
    /// Whether the series spans from `points` to [`Series::upper`].
    pub fn has_upper(self) -> bool {
        matches!(self, Style::Band | Style::Tint | Style::Bars)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Series {
    pub label: String,
    pub color: usize,
    pub style: Style,
    pub points: Vec<(f64, f64)>,
    /// The dynamics diverged at this time: the series ends there with a mark.
    pub diverged_at: Option<f64>,
    /// For [`Style::Band`]: the upper edge at each point's x.
    #[serde(default)]
    pub upper: Vec<f64>,
    /// A position in [0, 1] on the panel's colour scale (see [`Panel::color_bar`]), used
    /// instead of `color` when many series differ by one parameter.
    #[serde(default)]
    pub shade: Option<f64>,
    /// The series' name in the figure's CSV where it has no legend label (shaded series, the
    /// markers drawn over a line), so that every plotted point can be told apart.
    #[serde(default)]
    pub name: Option<String>,
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
            upper: vec![],
            shade: None,
            name: None,
        }
    }

    /// A grey band from `lower` to `upper` (one pair per x).
    pub fn band(label: impl Into<String>, points: Vec<(f64, f64, f64)>) -> Self {
        Self::spanning(label, 0, Style::Band, points)
    }

    /// A series of style `style` ([`Style::has_upper`]) from `lower` to `upper`, one
    /// (x, lower, upper) per x.
    pub fn spanning(
        label: impl Into<String>,
        color: usize,
        style: Style,
        points: Vec<(f64, f64, f64)>,
    ) -> Self {
        debug_assert!(style.has_upper());
        Self {
            upper: points.iter().map(|p| p.2).collect(),
            ..Self::new(
                label,
                color,
                style,
                points.iter().map(|p| (p.0, p.1)).collect(),
            )
        }
    }
}

/// A sequential colour scale for series that differ by one parameter (many step sizes):
/// drawn as a bar under the panel from `min` to `max`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ColorBar {
    pub label: String,
    pub min: f64,
    pub max: f64,
    pub log: bool,
}

impl ColorBar {
    /// Where `v` sits on the scale, in [0, 1].
    pub fn position(&self, v: f64) -> f64 {
        let (a, b, v) = if self.log {
            (self.min.ln(), self.max.ln(), v.ln())
        } else {
            (self.min, self.max, v)
        };
        if b > a {
            ((v - a) / (b - a)).clamp(0.0, 1.0)
        } else {
            0.5
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Panel {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    pub log_x: bool,
    pub log_y: bool,
    pub series: Vec<Series>,
    /// Lines of text drawn under the panel (fitted slopes and the like).
    pub texts: Vec<String>,
    /// The y range drawn (data units), when the extremes of the data are not what matters
    /// (a band of values stuck near the start, fourteen decades below the signal); what lies
    /// outside is clipped and said.
    #[serde(default)]
    pub y_range: Option<(f64, f64)>,
    /// The colour scale of the series that carry a `shade`.
    #[serde(default)]
    pub color_bar: Option<ColorBar>,
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

/// One series as it is drawn: the kept points (and a band's upper edge) and where a
/// divergence mark goes.
struct PlottedSeries {
    index: usize,
    points: Vec<(f64, f64)>,
    upper: Vec<f64>,
    mark: Option<(f64, f64)>,
}

/// A panel's points as they are drawn, and what was left out.
struct Plotted {
    series: Vec<PlottedSeries>,
    notes: Vec<String>,
}

fn plotted(panel: &Panel) -> Plotted {
    let mut series = Vec::new();
    let (mut nonpositive, mut nonfinite) = (0usize, 0usize);
    for (index, s) in panel.series.iter().enumerate() {
        let band = s.style.has_upper();
        let (mut points, mut upper) = (Vec::new(), Vec::new());
        let mut diverged = s.diverged_at;
        for (j, &(x, y)) in s.points.iter().enumerate() {
            let hi = if band {
                s.upper.get(j).copied().unwrap_or(f64::NAN)
            } else {
                y
            };
            if !x.is_finite() || !y.is_finite() || !hi.is_finite() {
                nonfinite += 1;
                if !band {
                    diverged.get_or_insert(x);
                }
                continue;
            }
            if (panel.log_x && x <= 0.0) || (panel.log_y && (y <= 0.0 || hi <= 0.0)) {
                nonpositive += 1;
                continue;
            }
            points.push((x, y));
            if band {
                upper.push(hi);
            }
        }
        let mark = diverged.and_then(|_| points.last().copied());
        series.push(PlottedSeries {
            index,
            points,
            upper,
            mark,
        });
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
        if s.style.has_upper() {
            continue;
        }
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

/// At most this many points per series are drawn; the CSV keeps them all.
const MAX_DRAWN: usize = 4000;

/// Fewer points that draw the same picture: per x bucket (a fraction of a pixel) the first,
/// the lowest, the highest and the last point, in order. A million-point series drawn point by
/// point is a solid smear in the PNG and a file of tens of megabytes in the SVG.
fn decimate(points: &[(f64, f64)]) -> Vec<(f64, f64)> {
    if points.len() <= MAX_DRAWN {
        return points.to_vec();
    }
    let buckets = MAX_DRAWN / 4;
    let per = points.len().div_ceil(buckets);
    let mut out = Vec::with_capacity(MAX_DRAWN);
    for chunk in points.chunks(per) {
        let lo = chunk
            .iter()
            .enumerate()
            .min_by(|a, b| a.1 .1.total_cmp(&b.1 .1));
        let hi = chunk
            .iter()
            .enumerate()
            .max_by(|a, b| a.1 .1.total_cmp(&b.1 .1));
        let (Some((il, _)), Some((ih, _))) = (lo, hi) else {
            continue;
        };
        let mut keep = vec![0, il, ih, chunk.len() - 1];
        keep.sort_unstable();
        keep.dedup();
        out.extend(keep.into_iter().map(|i| chunk[i]));
    }
    out
}

/// A band's envelope over the same buckets: per bucket its first x, the lowest lower edge
/// and the highest upper edge.
fn decimate_band(points: &[(f64, f64)], upper: &[f64]) -> (Vec<(f64, f64)>, Vec<f64>) {
    if points.len() <= MAX_DRAWN {
        return (points.to_vec(), upper.to_vec());
    }
    let per = points.len().div_ceil(MAX_DRAWN / 2);
    let mut lo_out = Vec::new();
    let mut hi_out = Vec::new();
    for (p, u) in points.chunks(per).zip(upper.chunks(per)) {
        lo_out.push((p[0].0, p.iter().map(|q| q.1).fold(f64::INFINITY, f64::min)));
        hi_out.push(u.iter().copied().fold(f64::NEG_INFINITY, f64::max));
    }
    (lo_out, hi_out)
}

const BAND_GREY: RGBColor = RGBColor(190, 190, 190);

/// A grey band is drawn nearly solid; a tinted one light enough to show the line inside it
/// and a second band crossing it.
fn band_opacity(style: Style) -> f64 {
    if style == Style::Tint {
        0.2
    } else {
        0.6
    }
}
const LEGEND_FRAME: RGBColor = RGBColor(180, 180, 180);

/// Viridis without its palest tenth, which vanishes on white.
fn shade_color(position: f64) -> RGBColor {
    use plotters::style::colors::colormaps::{ColorMap, ViridisRGB};
    ViridisRGB.get_color((0.9 * position.clamp(0.0, 1.0)) as f32)
}

fn series_color(s: &Series) -> RGBColor {
    match (s.style, s.shade) {
        (Style::Band, _) => BAND_GREY,
        (_, Some(v)) => shade_color(v),
        _ => PALETTE[s.color % PALETTE.len()],
    }
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

/// A tick label on an axis spanning `span` (in log10 units on a log axis): on a log axis
/// within a decade or two, ticks close together need a third digit to differ.
fn tick_in(log: bool, v: f64, span: f64) -> String {
    if log && span < 1.5 && (v - v.round()).abs() >= 1e-9 {
        let p = 10f64.powf(v);
        // enough digits that ticks about a tenth of the span apart read differently (a
        // relative error between 0.991 and 1.012 needs four)
        let spacing = span / 10.0 * std::f64::consts::LN_10;
        let digits = ((-spacing.log10()).ceil() as i64 + 1).clamp(3, 8) as usize;
        return format!("{p:.prec$e}", prec = digits - 1).replace("e0", "");
    }
    tick(log, v)
}

/// Text as a figure draws it: `_i`, `_j`, `_k`, `_r`, `_1`… as subscripts (plotters draws
/// text literally, so `max_j` would show its underscore); the CSV keeps the plain names.
pub fn pretty(text: &str) -> String {
    let sub = |c: char| -> Option<char> {
        Some(match c {
            '0' => '₀',
            '1' => '₁',
            '2' => '₂',
            '3' => '₃',
            '4' => '₄',
            '5' => '₅',
            '6' => '₆',
            '7' => '₇',
            '8' => '₈',
            '9' => '₉',
            'i' => 'ᵢ',
            'j' => 'ⱼ',
            'k' => 'ₖ',
            'r' => 'ᵣ',
            't' => 'ₜ',
            'n' => 'ₙ',
            'm' => 'ₘ',
            _ => return None,
        })
    };
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < chars.len() {
        // after `_`: a run of digits (`σ_50`), or one letter not followed by another
        // (`max_j`, not `final_dev`)
        let digits = chars[i + 1..]
            .iter()
            .take_while(|c| c.is_ascii_digit())
            .count();
        let letter = chars.get(i + 1).is_some_and(|c| c.is_ascii_alphabetic())
            && chars.get(i + 2).is_none_or(|a| !a.is_alphanumeric());
        let run = if digits > 0 {
            digits
        } else {
            usize::from(letter)
        };
        let subs: Option<String> = (run > 0)
            .then(|| chars[i + 1..i + 1 + run].iter().map(|&c| sub(c)).collect())
            .flatten();
        match (chars[i], subs) {
            ('_', Some(s)) => {
                out.push_str(&s);
                i += 1 + run;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    out
}

fn tick(log: bool, v: f64) -> String {
    if log {
        // Ticks sit at round values of log10: label powers of ten as such and the others with
        // two digits (10^3.4 is 2.5e3; one digit said 3e3, half a tick off).
        let p = 10f64.powf(v);
        if (v - v.round()).abs() < 1e-9 {
            format!("{p:.0e}").replace("e0", "")
        } else {
            format!("{p:.1e}").replace("e0", "")
        }
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
const PANEL_H: u32 = 600;
const LEGEND_ROW: i32 = 22;
const TEXT_ROW: i32 = 20;
const COLOR_BAR_H: i32 = 46;

/// A legend entry under the chart: its series, where it starts (x, row) and how wide its
/// sample and label are.
struct LegendEntry {
    index: usize,
    x: i32,
    row: i32,
    width: i32,
}

/// The gap between two entries of a legend row.
const LEGEND_GAP: i32 = 18;
/// The width of an entry's sample (line, marker or swatch) with the space after it.
const LEGEND_SAMPLE: i32 = 30;

/// The labelled series' legend entries, laid out in rows under the chart.
fn legend_layout<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    panel: &Panel,
) -> Vec<LegendEntry> {
    let available = area.dim_in_pixel().0 as i32 - 40;
    let font = ("sans-serif", 16).into_font().color(&BLACK);
    let (mut x, mut row) = (0, 0);
    let mut out = Vec::new();
    for (index, s) in panel.series.iter().enumerate() {
        if s.label.is_empty() {
            continue;
        }
        let width = area
            .estimate_text_size(&pretty(&s.label), &font)
            .map_or(9 * s.label.chars().count() as i32, |d| d.0 as i32)
            + LEGEND_SAMPLE;
        if x > 0 && x + width + LEGEND_GAP > available {
            x = 0;
            row += 1;
        }
        out.push(LegendEntry {
            index,
            x,
            row,
            width,
        });
        x += width + LEGEND_GAP;
    }
    out
}

/// Split a line into the runs of points inside [y0, y1] (transformed units), so a clipped
/// line is interrupted rather than drawn along the axis.
fn runs_inside(data: Vec<(f64, f64)>, y0: f64, y1: f64) -> Vec<Vec<(f64, f64)>> {
    let mut out: Vec<Vec<(f64, f64)>> = vec![vec![]];
    for q in data {
        if q.1 >= y0 && q.1 <= y1 {
            out.last_mut().expect("one run at least").push(q);
        } else if !out.last().expect("one run at least").is_empty() {
            out.push(vec![]);
        }
    }
    out.retain(|r| !r.is_empty());
    out
}

fn draw_panel<DB: DrawingBackend>(area: &DrawingArea<DB, Shift>, panel: &Panel) -> Result<()> {
    let err = |e: String| Error::invalid("figure", &panel.title, e);
    let p = plotted(panel);
    let (lx, ly) = (panel.log_x, panel.log_y);
    let xs = p
        .series
        .iter()
        .flat_map(|s| s.points.iter().map(|q| tx(lx, q.0)));
    let ys = p.series.iter().flat_map(|s| {
        s.points
            .iter()
            .map(|q| tx(ly, q.1))
            .chain(s.upper.iter().map(|u| tx(ly, *u)))
    });
    let (x0, x1) = range(xs, lx);
    let (y0, y1) = match panel.y_range {
        Some((a, b)) if !ly || (a > 0.0 && b > a) => {
            let (a, b) = (tx(ly, a), tx(ly, b));
            (a, b)
        }
        _ => range(ys, ly),
    };
    let mut lines: Vec<String> = panel.texts.iter().chain(&p.notes).cloned().collect();
    if p.series.iter().all(|s| s.points.is_empty()) {
        lines.push("no data to plot".to_string());
    }
    let clipped = p.series.iter().any(|s| {
        s.points
            .iter()
            .map(|q| tx(ly, q.1))
            .chain(s.upper.iter().map(|u| tx(ly, *u)))
            .any(|y| y < y0 || y > y1)
    });
    if clipped {
        lines.push("values outside the y range drawn are clipped (the CSV has them all)".into());
    }
    // Under the chart: the legend, the colour bar, then the lines of text, so that none of
    // them can sit on the data.
    let legend = legend_layout(area, panel);
    let legend_rows = legend.iter().map(|e| e.row + 1).max().unwrap_or(0);
    let strip = legend_rows * LEGEND_ROW
        + if panel.color_bar.is_some() {
            COLOR_BAR_H
        } else {
            0
        }
        + lines.len() as i32 * TEXT_ROW
        + 12;
    let height = area.dim_in_pixel().1 as i32;
    let (chart_area, strip_area) = area.split_vertically(height - strip);
    let mut chart = ChartBuilder::on(&chart_area)
        .caption(pretty(&panel.title), ("sans-serif", 24))
        .margin(12)
        .x_label_area_size(56)
        .y_label_area_size(84)
        .build_cartesian_2d(x0..x1, y0..y1)
        .map_err(|e| err(e.to_string()))?;
    chart
        .configure_mesh()
        .x_desc(pretty(&panel.x_label))
        .y_desc(pretty(&panel.y_label))
        .axis_desc_style(("sans-serif", 20))
        .label_style(("sans-serif", 17))
        .x_labels(7)
        .y_labels(7)
        .x_label_formatter(&|v| tick_in(lx, *v, x1 - x0))
        .y_label_formatter(&|v| tick_in(ly, *v, y1 - y0))
        .light_line_style(RGBColor(235, 235, 235))
        .bold_line_style(RGBColor(215, 215, 215))
        .draw()
        .map_err(|e| err(e.to_string()))?;
    let clamp = |y: f64| y.clamp(y0, y1);
    for ps in &p.series {
        let s = &panel.series[ps.index];
        let color = series_color(s);
        if s.style == Style::Bars {
            for (q, u) in ps.points.iter().zip(&ps.upper) {
                let (x, lo, hi) = (tx(lx, q.0), clamp(tx(ly, q.1)), clamp(tx(ly, *u)));
                chart
                    .draw_series(std::iter::once(PathElement::new(
                        vec![(x, lo), (x, hi)],
                        color.stroke_width(2),
                    )))
                    .map_err(|e| err(e.to_string()))?;
                // caps: a fixed share of the drawn x range, whatever the axis
                let w = 0.008 * (x1 - x0);
                for y in [lo, hi] {
                    chart
                        .draw_series(std::iter::once(PathElement::new(
                            vec![(x - w, y), (x + w, y)],
                            color.stroke_width(2),
                        )))
                        .map_err(|e| err(e.to_string()))?;
                }
            }
            continue;
        }
        if s.style.has_upper() {
            let (lower, upper) = decimate_band(&ps.points, &ps.upper);
            let mut outline: Vec<(f64, f64)> = lower
                .iter()
                .map(|q| (tx(lx, q.0), clamp(tx(ly, q.1))))
                .collect();
            outline.extend(
                lower
                    .iter()
                    .zip(&upper)
                    .rev()
                    .map(|(q, u)| (tx(lx, q.0), clamp(tx(ly, *u)))),
            );
            chart
                .draw_series(std::iter::once(Polygon::new(
                    outline,
                    color.mix(band_opacity(s.style)).filled(),
                )))
                .map_err(|e| err(e.to_string()))?;
            continue;
        }
        let data: Vec<(f64, f64)> = decimate(&ps.points)
            .iter()
            .map(|q| (tx(lx, q.0), tx(ly, q.1)))
            .collect();
        for run in runs_inside(data, y0, y1) {
            match s.style {
                Style::Line => chart
                    .draw_series(LineSeries::new(run, color.stroke_width(2)))
                    .map(|_| ()),
                Style::Dashed => chart
                    .draw_series(DashedLineSeries::new(run, 9, 6, color.stroke_width(2)))
                    .map(|_| ()),
                Style::Guide => chart
                    .draw_series(DashedLineSeries::new(run, 2, 4, color.stroke_width(1)))
                    .map(|_| ()),
                Style::Markers | Style::Band | Style::Tint | Style::Bars => chart
                    .draw_series(run.into_iter().map(|q| Circle::new(q, 3, color.filled())))
                    .map(|_| ()),
            }
            .map_err(|e| err(e.to_string()))?;
        }
        if let Some(q) = ps.mark {
            let q = (tx(lx, q.0), clamp(tx(ly, q.1)));
            chart
                .draw_series(std::iter::once(Cross::new(q, 8, color.stroke_width(3))))
                .map_err(|e| err(e.to_string()))?;
        }
    }
    draw_strip(&strip_area, panel, &legend, legend_rows, &lines).map_err(err)
}

/// The legend (framed), the colour bar and the text lines, top to bottom.
fn draw_strip<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    panel: &Panel,
    legend: &[LegendEntry],
    legend_rows: i32,
    lines: &[String],
) -> std::result::Result<(), String> {
    let e = |e: DrawingAreaErrorKind<DB::ErrorType>| e.to_string();
    let left = 20;
    let font = ("sans-serif", 16).into_font().color(&BLACK);
    let mut y = 4;
    if !legend.is_empty() {
        let right = legend.iter().map(|e| e.x + e.width).max().unwrap_or(0);
        area.draw(&Rectangle::new(
            [
                (left - 8, y - 2),
                (left + right + 8, y + legend_rows * LEGEND_ROW),
            ],
            LEGEND_FRAME.stroke_width(1),
        ))
        .map_err(e)?;
        for &LegendEntry { index, x, row, .. } in legend {
            let s = &panel.series[index];
            let color = series_color(s);
            let (sx, sy) = (left + x, y + row * LEGEND_ROW + LEGEND_ROW / 2);
            let seg = |a: i32, b: i32, w: u32| {
                PathElement::new(vec![(sx + a, sy), (sx + b, sy)], color.stroke_width(w))
            };
            match s.style {
                Style::Line => area.draw(&seg(0, 24, 2)),
                Style::Dashed => area.draw(&seg(0, 9, 2)).and(area.draw(&seg(15, 24, 2))),
                Style::Guide => area
                    .draw(&seg(0, 2, 1))
                    .and(area.draw(&seg(6, 8, 1)))
                    .and(area.draw(&seg(12, 14, 1)))
                    .and(area.draw(&seg(18, 20, 1))),
                Style::Markers => area.draw(&Circle::new((sx + 12, sy), 4, color.filled())),
                Style::Band | Style::Tint => area.draw(&Rectangle::new(
                    [(sx, sy - 6), (sx + 24, sy + 6)],
                    color.mix(band_opacity(s.style)).filled(),
                )),
                Style::Bars => area
                    .draw(&PathElement::new(
                        vec![(sx + 12, sy - 7), (sx + 12, sy + 7)],
                        color.stroke_width(2),
                    ))
                    .and(area.draw(&seg(8, 16, 2))),
            }
            .map_err(e)?;
            area.draw_text(&pretty(&s.label), &font, (sx + LEGEND_SAMPLE, sy - 9))
                .map_err(e)?;
        }
        y += legend_rows * LEGEND_ROW + 6;
    }
    if let Some(bar) = &panel.color_bar {
        area.draw_text(&pretty(&bar.label), &font, (left, y + 2))
            .map_err(e)?;
        let label_w = area
            .estimate_text_size(&bar.label, &font)
            .map_or(120, |d| d.0 as i32);
        let (bx, bw, by) = (left + label_w + 16, 260, y + 2);
        let cells = 64;
        for c in 0..cells {
            let x_a = bx + bw * c / cells;
            let x_b = bx + bw * (c + 1) / cells;
            area.draw(&Rectangle::new(
                [(x_a, by), (x_b, by + 14)],
                shade_color((c as f64 + 0.5) / cells as f64).filled(),
            ))
            .map_err(e)?;
        }
        let small = ("sans-serif", 14).into_font().color(&BLACK);
        let mid = if bar.log {
            (bar.min * bar.max).sqrt()
        } else {
            0.5 * (bar.min + bar.max)
        };
        for (v, frac) in [(bar.min, 0.0), (mid, 0.5), (bar.max, 1.0)] {
            let x = bx + (bw as f64 * frac) as i32 - 14;
            area.draw_text(&short(v), &small, (x, by + 18)).map_err(e)?;
        }
        y += COLOR_BAR_H;
    }
    for (k, line) in lines.iter().enumerate() {
        area.draw_text(&pretty(line), &font, (left, y + TEXT_ROW * k as i32))
            .map_err(e)?;
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

/// The CSV of every plotted point (before decimation for drawing): `panel,series,x,y`; a
/// band as two series, `LABEL (min)` and `LABEL (max)`.
pub fn plotted_csv(fig: &Figure) -> Result<Vec<u8>> {
    let mut w = csv::Writer::from_writer(Vec::new());
    let err = |e: csv::Error| Error::invalid("figure csv", &fig.name, e.to_string());
    w.write_record(["panel", "series", "x", "y"]).map_err(err)?;
    for panel in &fig.panels {
        let p = plotted(panel);
        for ps in &p.series {
            let label = csv_name(panel, ps.index);
            let label = label.as_str();
            let edges: Vec<(String, Vec<(f64, f64)>)> = if ps.upper.is_empty() {
                vec![(label.to_string(), ps.points.clone())]
            } else {
                vec![
                    (format!("{label} (min)"), ps.points.clone()),
                    (
                        format!("{label} (max)"),
                        ps.points
                            .iter()
                            .zip(&ps.upper)
                            .map(|(q, u)| (q.0, *u))
                            .collect(),
                    ),
                ]
            };
            for (name, pts) in edges {
                for (x, y) in pts {
                    w.write_record([
                        panel.title.as_str(),
                        name.as_str(),
                        &crate::output::num(x),
                        &crate::output::num(y),
                    ])
                    .map_err(err)?;
                }
            }
        }
    }
    w.into_inner()
        .map_err(|e| Error::invalid("figure csv", &fig.name, e.to_string()))
}

/// A series' name in the CSV: its label, else its `name`, else (markers over a line) the
/// label of the line of its colour before it, else its position.
fn csv_name(panel: &Panel, index: usize) -> String {
    let s = &panel.series[index];
    if !s.label.is_empty() {
        return s.label.clone();
    }
    if let Some(name) = &s.name {
        return name.clone();
    }
    panel.series[..index]
        .iter()
        .rev()
        .find(|q| {
            q.color == s.color && q.shade == s.shade && (!q.label.is_empty() || q.name.is_some())
        })
        .map(|q| {
            let base = if q.label.is_empty() {
                q.name.clone().unwrap_or_default()
            } else {
                q.label.clone()
            };
            if s.style == Style::Markers {
                format!("{base} (markers)")
            } else {
                base
            }
        })
        .unwrap_or_else(|| format!("series {}", index + 1))
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

#[cfg(test)]
mod tests {
    /// Ticks across a narrow log range read differently from each other (they printed
    /// 1.00, 1.01, 1.01 for a relative error between 0.991 and 1.012).
    #[test]
    fn narrow_log_ticks_are_distinct() {
        for (lo, hi) in [(0.991f64, 1.012f64), (0.5, 0.8), (2.0, 2.001)] {
            let (a, b) = (lo.log10(), hi.log10());
            let labels: Vec<String> = (1..10)
                .map(|i| super::tick_in(true, a + (b - a) * i as f64 / 10.0, b - a))
                .collect();
            let mut unique = labels.clone();
            unique.dedup();
            assert_eq!(unique.len(), labels.len(), "{labels:?}");
        }
    }
}
