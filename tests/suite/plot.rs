//! Figures: every kind renders to PNG and well-formed SVG, edge cases do not panic and are
//! said on the figure, and the CSV beside a figure holds exactly the plotted points.

use std::path::Path;

use gdflow::config::{ConfigArgs, SweepArgs};
use gdflow::plot::figures::{run_figures, sweep_figures};
use gdflow::plot::{write_figure, Figure, Panel, Series, Style};

fn check_files(dir: &Path, name: &str) -> String {
    let png = std::fs::read(dir.join(format!("{name}.png"))).unwrap();
    assert!(png.len() > 2000, "{name}.png is {} bytes", png.len());
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n", "{name}.png is a PNG");
    let svg = std::fs::read_to_string(dir.join(format!("{name}.svg"))).unwrap();
    let doc = roxmltree::Document::parse(&svg).unwrap_or_else(|e| panic!("{name}.svg: {e}"));
    assert_eq!(doc.root_element().tag_name().name(), "svg");
    assert!(dir.join(format!("{name}.csv")).exists());
    svg
}

fn small() -> ConfigArgs {
    ConfigArgs {
        n1: Some(8),
        n2: Some(6),
        rank: Some(2),
        width: Some(3),
        measurements: Some(40),
        alpha: Some(1e-2),
        eta: Some(0.1),
        steps: Some(150),
        ..Default::default()
    }
}

/// `gdflow run` on `args` at each step size.
fn runs_at(etas: &[f64], args: ConfigArgs) -> Vec<gdflow::results::run::RunResult> {
    etas.iter()
        .map(|&eta| {
            gdflow::experiments::run_config(&ConfigArgs {
                eta: Some(eta),
                ..args.clone()
            })
            .unwrap()
        })
        .collect()
}

/// A sweep of the small problem at `etas` to `horizon`, without the stability bisection.
fn small_sweep(etas: Vec<f64>, horizon: f64) -> gdflow::results::sweep::SweepResult {
    let sweep = SweepArgs {
        etas: Some(etas),
        horizon: Some(horizon),
        stability_steps: Some(0),
        ..Default::default()
    };
    let args = ConfigArgs {
        eta: None,
        steps: None,
        ..small()
    };
    gdflow::experiments::sweep_config(&args, &sweep).unwrap()
}

#[test]
fn every_figure_kind_renders_for_runs_and_sweeps() {
    let dir = tempfile::tempdir().unwrap();
    let runs = runs_at(&[0.1, 0.05], small());
    let figs = run_figures(&runs, None);
    let names: Vec<&str> = figs.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(names, ["loss_error", "singular_values", "balance_drift"]);
    for f in &figs {
        write_figure(f, dir.path()).unwrap();
        let svg = check_files(dir.path(), &f.name);
        if f.name != "singular_values" {
            assert!(
                svg.contains("GD η = 0.05"),
                "{}: legend names each η",
                f.name
            );
        }
    }
    let s = small_sweep(vec![0.05, 0.1, 0.2], 10.0);
    let figs = sweep_figures(&s);
    let names: Vec<&str> = figs.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(names, ["loss_error", "balance_drift", "deviation_vs_eta"]);
    for f in &figs {
        write_figure(f, dir.path()).unwrap();
        check_files(dir.path(), &f.name);
    }
    let svg = std::fs::read_to_string(dir.path().join("deviation_vs_eta.svg")).unwrap();
    assert!(svg.contains("fitted slope vs plain flow") && svg.contains("slope 2"));
}

fn one_panel(points: Vec<(f64, f64)>, log_y: bool) -> Figure {
    Figure {
        columns: None,
        name: "edge".into(),
        panels: vec![Panel {
            title: "edge".into(),
            x_label: "t".into(),
            y_label: "y".into(),
            log_x: false,
            log_y,
            series: vec![Series::new("data", 0, Style::Line, points)],
            texts: vec![],
            ..Default::default()
        }],
    }
}

fn csv_points(dir: &Path) -> Vec<(f64, f64)> {
    let text = std::fs::read_to_string(dir.join("edge.csv")).unwrap();
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some("panel,series,x,y"));
    lines
        .map(|l| {
            let c: Vec<&str> = l.split(',').collect();
            (c[2].parse().unwrap(), c[3].parse().unwrap())
        })
        .collect()
}

#[test]
fn a_single_point_renders() {
    let dir = tempfile::tempdir().unwrap();
    write_figure(&one_panel(vec![(1.0, 2.0)], true), dir.path()).unwrap();
    check_files(dir.path(), "edge");
    assert_eq!(csv_points(dir.path()), vec![(1.0, 2.0)]);
}

#[test]
fn no_points_render_an_empty_panel_that_says_so() {
    let dir = tempfile::tempdir().unwrap();
    write_figure(&one_panel(vec![], true), dir.path()).unwrap();
    assert!(check_files(dir.path(), "edge").contains("no data to plot"));
}

#[test]
fn values_a_log_axis_cannot_show_are_left_out_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let pts = vec![(0.0, 1.0), (1.0, 0.0), (2.0, -3.0), (3.0, 1e-3), (4.0, 5.0)];
    write_figure(&one_panel(pts, true), dir.path()).unwrap();
    let svg = check_files(dir.path(), "edge");
    assert!(
        svg.contains("2 values ≤ 0 left out of the log axis"),
        "{svg}"
    );
    assert_eq!(
        csv_points(dir.path()),
        vec![(0.0, 1.0), (3.0, 1e-3), (4.0, 5.0)]
    );
}

#[test]
fn non_finite_values_mark_a_divergence() {
    let dir = tempfile::tempdir().unwrap();
    let pts = vec![
        (0.0, 1.0),
        (1.0, 10.0),
        (2.0, f64::INFINITY),
        (3.0, f64::NAN),
    ];
    write_figure(&one_panel(pts, true), dir.path()).unwrap();
    let svg = check_files(dir.path(), "edge");
    assert!(svg.contains("data diverged at t = 2"), "{svg}");
    assert!(svg.contains("2 non-finite values left out"));
    assert_eq!(csv_points(dir.path()), vec![(0.0, 1.0), (1.0, 10.0)]);
}

#[test]
fn csv_beside_a_figure_is_exactly_the_plotted_points() {
    let dir = tempfile::tempdir().unwrap();
    let run = gdflow::experiments::run_config(&small()).unwrap();
    let figs = run_figures(std::slice::from_ref(&run), None);
    write_figure(&figs[0], dir.path()).unwrap();
    let text = std::fs::read_to_string(dir.path().join("loss_error.csv")).unwrap();
    let gd_loss: Vec<(f64, f64)> = text
        .lines()
        .skip(1)
        .filter(|l| l.starts_with("loss,GD η = 0.1,"))
        .map(|l| {
            let c: Vec<&str> = l.split(',').collect();
            (c[2].parse().unwrap(), c[3].parse().unwrap())
        })
        .collect();
    let expected: Vec<(f64, f64)> = run.gd.iter().map(|r| (r.t, r.loss())).collect();
    assert_eq!(gd_loss, expected);
}

/// Every point of the elements drawn before each legend frame (data, axes, grid), and the
/// frames: (frame, points drawn before it).
type Frames = Vec<((f64, f64, f64, f64), Vec<(f64, f64)>)>;

fn legend_frames(svg: &str) -> Frames {
    let doc = roxmltree::Document::parse(svg).unwrap();
    let num = |n: &roxmltree::Node, a: &str| n.attribute(a).unwrap().parse::<f64>().unwrap();
    let mut seen = Vec::new();
    let mut frames = Vec::new();
    for n in doc.descendants().filter(|n| n.is_element()) {
        match n.tag_name().name() {
            "polyline" | "polygon" => {
                for pair in n.attribute("points").unwrap_or("").split_whitespace() {
                    let (x, y) = pair.split_once(',').unwrap();
                    seen.push((x.parse().unwrap(), y.parse().unwrap()));
                }
            }
            "circle" => seen.push((num(&n, "cx"), num(&n, "cy"))),
            "rect" if n.attribute("stroke") == Some("#B4B4B4") => frames.push((
                (
                    num(&n, "x"),
                    num(&n, "y"),
                    num(&n, "width"),
                    num(&n, "height"),
                ),
                seen.clone(),
            )),
            _ => {}
        }
    }
    frames
}

/// No point of anything drawn before a legend frame lies inside it.
fn assert_legends_clear(name: &str, svg: &str) {
    for ((x, y, w, h), before) in legend_frames(svg) {
        let inside: Vec<_> = before
            .iter()
            .filter(|p| p.0 > x && p.0 < x + w && p.1 > y && p.1 < y + h)
            .collect();
        assert!(
            inside.is_empty(),
            "{name}: the legend at ({x}, {y}, {w}×{h}) covers {} drawn points, e.g. {:?}",
            inside.len(),
            &inside[..inside.len().min(3)]
        );
    }
}

fn csv_rows(path: &Path) -> Vec<Vec<String>> {
    let mut r = csv::Reader::from_path(path).unwrap();
    r.records()
        .map(|rec| rec.unwrap().iter().map(str::to_string).collect())
        .collect()
}

/// Width k = 50 (the incremental-learning set-up, smaller m and fewer steps): the top r = 4
/// singular values in colour with their targets, the other 46 as one grey band; the CSV
/// holds every plotted point, the band as its two edges.
#[test]
fn singular_values_at_width_fifty_draw_the_rest_as_one_grey_band() {
    let dir = tempfile::tempdir().unwrap();
    let steps = 60;
    let run = gdflow::experiments::run_config(&ConfigArgs {
        n1: Some(50),
        n2: Some(50),
        rank: Some(4),
        width: Some(50),
        singular_values: Some(vec![12.0, 6.0, 4.0, 3.0]),
        measurements: Some(600),
        alpha: Some(1e-4),
        eta: Some(0.01),
        steps: Some(steps),
        ..Default::default()
    })
    .unwrap();
    let fig = gdflow::plot::figures::singular_values(&run, None);
    write_figure(&fig, dir.path()).unwrap();
    let svg = check_files(dir.path(), "singular_values");
    assert!(svg.contains(r##"fill="#BEBEBE""##), "the band is drawn");
    assert!(svg.contains("σ₅…σ₅₀: 46 values, flow and GD (min–max)"));
    let subscript = |i: u32| char::from_u32(0x2080 + i).unwrap();
    for i in 1..=4 {
        assert!(
            svg.contains(&format!("σ{} flow", subscript(i))),
            "σ_{i} has its legend entry"
        );
    }
    assert!(!svg.contains(&format!("σ{} flow", subscript(5))));
    assert_legends_clear("singular_values", &svg);
    let rows = csv_rows(&dir.path().join("singular_values.csv"));
    let count = |series: &str| rows.iter().filter(|r| r[1] == series).count();
    let band = "σ_5…σ_50: 46 values, flow and GD (min–max)";
    assert_eq!(count(&format!("{band} (min)")), steps + 1);
    assert_eq!(count(&format!("{band} (max)")), steps + 1);
    // the band's edges are the extremes of σ_5 … σ_50 over flow and GD at each t
    let min_at_end = run.flow.last().unwrap().sv()[4..]
        .iter()
        .chain(&run.gd.last().unwrap().sv()[4..])
        .copied()
        .fold(f64::INFINITY, f64::min);
    let last_min: f64 = rows
        .iter()
        .rev()
        .find(|r| r[1] == format!("{band} (min)"))
        .unwrap()[3]
        .parse()
        .unwrap();
    assert_eq!(last_min, min_at_end);
    // the band's two edges, four flow and four GD series (unlabelled), each at every
    // record; the four targets' two ends
    assert_eq!(count("σ_1 flow"), steps + 1);
    let total = 2 * (steps + 1) + 4 * (steps + 1) + 4 * (steps + 1) + 4 * 2;
    assert_eq!(rows.len(), total);
}

/// Sixteen step sizes: shades of one colour scale with a colour bar, one proxy legend entry
/// instead of sixteen, every run's points in the CSV.
#[test]
fn sixteen_step_sizes_get_a_colour_scale_not_a_legend_of_sixteen() {
    let dir = tempfile::tempdir().unwrap();
    let etas: Vec<f64> = (0..16).map(|i| 0.02 * 1.15f64.powi(i)).collect();
    let runs = runs_at(
        &etas,
        ConfigArgs {
            steps: Some(40),
            ..small()
        },
    );
    let figs = run_figures(&runs, None);
    write_figure(&figs[0], dir.path()).unwrap();
    let svg = check_files(dir.path(), "loss_error");
    assert!(
        svg.contains("GD step size η (16 values)"),
        "colour bar label"
    );
    assert!(svg.contains("GD (dashed; colour: η)"));
    assert!(!svg.contains("GD η = "), "no legend entry per η");
    let doc = roxmltree::Document::parse(&svg).unwrap();
    let strokes: std::collections::BTreeSet<&str> = doc
        .descendants()
        .filter(|n| n.has_tag_name("polyline"))
        .filter_map(|n| n.attribute("stroke"))
        .collect();
    // black (flow, axes), the greys of the grid and frame, and sixteen shades
    assert!(
        strokes.len() > 16,
        "{} stroke colours: {strokes:?}",
        strokes.len()
    );
    assert_legends_clear("loss_error", &svg);
    let rows = csv_rows(&dir.path().join("loss_error.csv"));
    // off the legend, but every GD point named by its η in the CSV
    let gd_rows = rows.iter().filter(|r| r[1].starts_with("GD η = ")).count();
    let names: std::collections::BTreeSet<&str> = rows
        .iter()
        .filter(|r| r[1].starts_with("GD η = "))
        .map(|r| r[1].as_str())
        .collect();
    assert_eq!(names.len(), etas.len(), "one name per step size: {names:?}");
    assert!(rows.iter().all(|r| !r[1].is_empty()), "every series named");
    assert_eq!(
        gd_rows,
        2 * etas.len() * 41,
        "every GD point of both panels"
    );

    // the same from a sweep of sixteen step sizes
    let s = small_sweep(etas.clone(), 2.0);
    for f in sweep_figures(&s)
        .iter()
        .filter(|f| f.name != "deviation_vs_eta")
    {
        write_figure(f, dir.path()).unwrap();
        let svg = check_files(dir.path(), &f.name);
        assert!(svg.contains("GD step size η (16 values)"), "{}", f.name);
        assert!(
            !svg.contains("GD η = "),
            "{}: no legend entry per η",
            f.name
        );
        assert_legends_clear(&f.name, &svg);
    }
}

/// A million-point series is drawn decimated (a bounded SVG) and written whole to the CSV;
/// the drawn points keep every bucket's extremes, so the envelope is the same.
#[test]
fn long_series_are_decimated_for_drawing_only() {
    let dir = tempfile::tempdir().unwrap();
    let n = 300_000;
    let pts: Vec<(f64, f64)> = (0..n)
        .map(|i| {
            let t = i as f64 * 1e-3;
            (t, 2.0 + (50.0 * t).sin() * (-t / 100.0).exp())
        })
        .collect();
    write_figure(&one_panel(pts.clone(), false), dir.path()).unwrap();
    let svg = check_files(dir.path(), "edge");
    let doc = roxmltree::Document::parse(&svg).unwrap();
    let drawn: Vec<(f64, f64)> = doc
        .descendants()
        .filter(|n| n.has_tag_name("polyline") && n.attribute("stroke") == Some("#0072B2"))
        .flat_map(|n| {
            n.attribute("points")
                .unwrap()
                .split_whitespace()
                .map(|p| {
                    let (x, y) = p.split_once(',').unwrap();
                    (x.parse::<f64>().unwrap(), y.parse::<f64>().unwrap())
                })
                .collect::<Vec<_>>()
        })
        .collect();
    assert!(
        !drawn.is_empty() && drawn.len() <= 4000,
        "{} points drawn",
        drawn.len()
    );
    assert!(svg.len() < 2_000_000, "SVG of {} bytes", svg.len());
    assert_eq!(csv_points(dir.path()), pts);
    // the extremes survive decimation: the drawn y pixels span the data's
    let (lo, hi) = drawn
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |a, p| {
            (a.0.min(p.1), a.1.max(p.1))
        });
    assert!(
        hi - lo > 300.0,
        "the oscillation's full height is drawn: {lo}..{hi}"
    );
}

/// The committed figures (the gallery included): no legend covers anything drawn.
#[test]
fn no_committed_figure_has_a_legend_over_its_data() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("figures");
    let mut checked = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "svg") {
            let svg = std::fs::read_to_string(&path).unwrap();
            assert_legends_clear(&path.display().to_string(), &svg);
            checked += 1;
        }
    }
    assert!(checked >= 7, "{checked} figures checked");
}

/// A modified flow depends on η: each run's own is drawn and named, never one curve labelled
/// "gradient flow".
#[test]
fn runs_against_their_modified_flows_draw_and_name_each_flow() {
    let dir = tempfile::tempdir().unwrap();
    let runs = runs_at(
        &[0.2, 0.1],
        ConfigArgs {
            flow: Some(gdflow::dynamics::FlowVariant::Modified),
            ..small()
        },
    );
    let figs = run_figures(&runs, None);
    write_figure(&figs[0], dir.path()).unwrap();
    let svg = check_files(dir.path(), "loss_error");
    assert!(
        !svg.contains("gradient flow"),
        "no curve is called the gradient flow"
    );
    let rows = csv_rows(&dir.path().join("loss_error.csv"));
    for (run, name) in runs
        .iter()
        .zip(["modified flow, η = 0.2", "modified flow, η = 0.1"])
    {
        let drawn: Vec<f64> = rows
            .iter()
            .filter(|r| r[0] == "loss" && r[1] == name)
            .map(|r| r[3].parse().unwrap())
            .collect();
        let recorded: Vec<f64> = run.flow.iter().map(|r| r.loss()).collect();
        assert_eq!(drawn, recorded, "{name}");
    }
    write_figure(&figs[1], dir.path()).unwrap();
    assert!(check_files(dir.path(), "singular_values").contains("σ₁ modified flow"));
}

/// Tick labels on a log axis within a decade are unique, and no label shows a literal `_i`.
#[test]
fn tick_labels_differ_and_subscripts_are_drawn() {
    let dir = tempfile::tempdir().unwrap();
    let pts: Vec<(f64, f64)> = (0..50)
        .map(|i| (i as f64, 0.5 + 0.3 * i as f64 / 49.0))
        .collect();
    let fig = Figure {
        name: "ticks".into(),
        panels: vec![Panel {
            title: "max_j ‖X_j − X(t_j)‖ of σ_1".into(),
            x_label: "j".into(),
            y_label: "σ_i".into(),
            log_y: true,
            series: vec![
                Series::new("σ_1 flow", 0, Style::Line, pts.clone()),
                Series::new("", 0, Style::Markers, pts),
            ],
            ..Default::default()
        }],
        columns: None,
    };
    write_figure(&fig, dir.path()).unwrap();
    let svg = std::fs::read_to_string(dir.path().join("ticks.svg")).unwrap();
    let doc = roxmltree::Document::parse(&svg).unwrap();
    let texts: Vec<String> = doc
        .descendants()
        .filter(|n| n.has_tag_name("text"))
        .filter_map(|n| n.text().map(str::to_string))
        .collect();
    let ticks: Vec<&String> = texts.iter().filter(|t| t.contains("e-1")).collect();
    let unique: std::collections::BTreeSet<&String> = ticks.iter().copied().collect();
    assert!(ticks.len() >= 2, "{texts:?}");
    assert_eq!(unique.len(), ticks.len(), "repeated tick labels: {ticks:?}");
    assert!(
        texts.iter().all(|t| !t.contains("_j") && !t.contains("σ_")),
        "literal underscores drawn: {texts:?}"
    );
    let rows = csv_rows(&dir.path().join("ticks.csv"));
    assert!(
        rows.iter().any(|r| r[1] == "σ_1 flow (markers)"),
        "markers named in the CSV"
    );
}

/// Two runs of one problem at one η (here two batch sizes) are told apart in every legend by
/// the key in which they differ, each with its own value; their ensemble figures say whose.
#[test]
fn runs_at_one_step_size_are_named_by_what_differs() {
    let base = ConfigArgs {
        optimizer: Some("sgd".into()),
        replicas: Some(4),
        steps: Some(20),
        ..small()
    };
    let runs: Vec<_> = [10, 20]
        .map(|b| {
            gdflow::experiments::run_config(&ConfigArgs {
                batch: Some(b),
                ..base.clone()
            })
            .unwrap()
        })
        .into();
    let figures = run_figures(&runs, None);
    let names = |f: &Figure| -> Vec<String> {
        f.panels[0]
            .series
            .iter()
            .map(|s| s.label.clone())
            .filter(|n| n.starts_with("sgd η"))
            .collect()
    };
    let loss = figures.iter().find(|f| f.name == "loss_error").unwrap();
    assert_eq!(
        names(loss),
        ["sgd η = 0.1, batch 10", "sgd η = 0.1, batch 20"]
    );
    for (i, b) in [(1, 10), (2, 20)] {
        let f = figures
            .iter()
            .find(|f| f.name == format!("ensemble_{i}"))
            .unwrap();
        assert_eq!(f.panels[0].texts[0], format!("run: sgd η = 0.1, batch {b}"));
    }
}
