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

#[test]
fn every_figure_kind_renders_for_runs_and_sweeps() {
    let dir = tempfile::tempdir().unwrap();
    let runs: Vec<_> = [0.1, 0.05]
        .iter()
        .map(|&eta| {
            gdflow::experiments::run_config(&ConfigArgs {
                eta: Some(eta),
                ..small()
            })
            .unwrap()
        })
        .collect();
    let figs = run_figures(&runs);
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
    let sweep = SweepArgs {
        etas: Some(vec![0.05, 0.1, 0.2]),
        horizon: Some(10.0),
        stability_steps: Some(0),
        ..Default::default()
    };
    let args = ConfigArgs {
        eta: None,
        steps: None,
        ..small()
    };
    let s = gdflow::experiments::sweep_config(&args, &sweep).unwrap();
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
    let figs = run_figures(std::slice::from_ref(&run));
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
    let expected: Vec<(f64, f64)> = run.gd.iter().map(|r| (r.t, r.loss)).collect();
    assert_eq!(gd_loss, expected);
}
