//! A recorded quantity of your own, without touching the library: the nuclear norm ‖UVᵀ‖_*
//! and the effective rank exp(entropy of σ_i/Σσ) of UVᵀ, the quantities implicit-regularisation
//! papers follow. They become columns of `trajectory.csv`, after the built-in ones, for GD and
//! the flow alike, and `results::run::load_run` reads them back.
//!
//! `cargo run --release --example custom_quantity` (also run by `cargo test`)

use std::sync::Arc;

use gdflow::analysis::{At, Quantity};
use gdflow::config::ConfigArgs;
use gdflow::experiments::{run, Command, RunExtras, Setup};
use gdflow::results::run::{load_run, write_run};

/// ‖UVᵀ‖_* and the effective rank of UVᵀ (from the k×k core: exact and cheap).
struct Spectrum;

impl Quantity for Spectrum {
    fn columns(&self) -> Vec<String> {
        vec!["nuclear_norm".into(), "effective_rank".into()]
    }
    fn measure(&self, at: &At<'_>) -> Vec<f64> {
        let sv = gdflow::analysis::record::product_singular_values(at.field, at.state);
        let total: f64 = sv.iter().sum();
        let entropy: f64 = sv
            .iter()
            .filter(|s| **s > 0.0)
            .map(|s| {
                let p = s / total;
                -p * p.ln()
            })
            .sum();
        vec![total, entropy.exp()]
    }
}

fn example(print: bool) -> anyhow::Result<()> {
    let args = ConfigArgs {
        n1: Some(15),
        n2: Some(12),
        rank: Some(2),
        width: Some(6),
        measurements: Some(120),
        alpha: Some(1e-3),
        eta: Some(0.1),
        steps: Some(300),
        record_every: Some(30),
        ..Default::default()
    };
    let setup = Setup::new(&args, Command::Run, false)?;
    let extras = RunExtras {
        quantities: vec![Arc::new(Spectrum)],
        ..RunExtras::default()
    };
    let result = run(&setup, &extras)?;
    let dir = tempfile_dir()?;
    write_run(&result, &dir)?;
    let back = load_run(&dir)?;
    assert_eq!(back.extra_columns, ["nuclear_norm", "effective_rank"]);
    let nuclear_star: f64 = setup.problem.target_sv.iter().sum();
    if print {
        println!("{:>6} {:>14} {:>14}", "t", "‖UVᵀ‖_* (GD)", "eff. rank");
        for r in &back.gd {
            println!(
                "{:>6.1} {:>14.6} {:>14.4}",
                r.t,
                r.get("nuclear_norm").unwrap(),
                r.get("effective_rank").unwrap()
            );
        }
        println!(
            "‖X*‖_* = {nuclear_star:.6}; columns written to {}",
            dir.display()
        );
    }
    // the effective rank falls to about 1 while σ_1 alone is learned, then ends near r = 2 …
    let last = back.gd.last().expect("records");
    assert!(
        (last.get("effective_rank").unwrap() - 2.0).abs() < 0.3,
        "effective rank {}",
        last.get("effective_rank").unwrap()
    );
    // … and the nuclear norm ends near ‖X*‖_*
    assert!((last.get("nuclear_norm").unwrap() - nuclear_star).abs() < 0.05 * nuclear_star);
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}

/// A fresh directory under the system's temporary directory.
fn tempfile_dir() -> std::io::Result<std::path::PathBuf> {
    let dir = std::env::temp_dir().join(format!("gdflow-quantity-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

fn main() -> anyhow::Result<()> {
    example(true)
}

#[test]
fn custom_quantity_example_runs() {
    example(false).unwrap();
}
