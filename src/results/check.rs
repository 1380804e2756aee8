//! `gdflow check`'s results: `summary.json`, `checks.csv`, `trajectory.csv` and `config.toml`,
//! written here.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::run::{trajectory_csv, ProblemInfo, RunResult};
use super::{csv_bytes, csv_error, json_bytes, toml_text, Provenance};
use crate::analysis::theory::Phases;
use crate::config::{CheckArgs, Config};
use crate::error::{Error, Result};

/// The resolved constants of the predictions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckSettings {
    pub drift_c: f64,
    pub identity_tol: f64,
    pub order_tol: f64,
    pub slope_tol: f64,
    pub incremental_tol: f64,
    pub epsilon: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rip_bound: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rho_bound: Option<f64>,
    pub alignment_tol: f64,
    pub eos_sharpness_tol: f64,
    pub eos_loss_tol: f64,
}

impl CheckSettings {
    /// Every constant given or its default (on its field of [`CheckArgs`]), each checked there.
    pub fn resolve(a: &CheckArgs) -> Result<Self> {
        a.check_keys()?;
        Ok(Self {
            drift_c: a.drift_c(),
            identity_tol: a.identity_tol(),
            order_tol: a.order_tol(),
            slope_tol: a.slope_tol(),
            incremental_tol: a.incremental_tol(),
            epsilon: a.epsilon(),
            rip_bound: a.rip_bound,
            rho_bound: a.rho_bound,
            alignment_tol: a.alignment_tol(),
            eos_sharpness_tol: a.eos_sharpness_tol(),
            eos_loss_tol: a.eos_loss_tol(),
        })
    }
}

/// One prediction and its measurement.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckRow {
    pub name: String,
    /// What the theory predicts, in words.
    pub prediction: String,
    pub measured: f64,
    /// The predicted value or bound, in words with its number.
    pub predicted: String,
    /// `None`: reported only (no bound given, or not applicable).
    pub pass: Option<bool>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CheckSummary {
    #[serde(flatten)]
    pub provenance: Provenance<Config>,
    pub check: CheckSettings,
    pub problem: ProblemInfo,
    pub rows: Vec<CheckRow>,
    /// Every row with a verdict passed.
    pub passed: bool,
    /// Phase boundaries of the flow on the configured problem.
    pub phases: Phases,
    /// Convergence time of the `relative`-perturbed flow against ε.
    pub robustness: Vec<RobustnessPoint>,
    pub total_seconds: f64,
}

/// One size of the `relative` perturbation and the time the flow needed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RobustnessPoint {
    pub epsilon: f64,
    /// First t with relative error ≤ the robustness target, if within the budget.
    pub time: Option<f64>,
    pub budget: f64,
    pub final_rel_error: f64,
}

/// `checks.csv`: one row per prediction.
pub fn checks_csv(s: &CheckSummary) -> Result<Vec<u8>> {
    let mut w = csv::Writer::from_writer(Vec::new());
    let err = csv_error("checks.csv");
    w.write_record(["name", "prediction", "measured", "predicted", "pass"])
        .map_err(&err)?;
    for r in &s.rows {
        let pass = match r.pass {
            Some(true) => "pass",
            Some(false) => "FAIL",
            None => "",
        };
        w.write_record([
            r.name.as_str(),
            &r.prediction,
            &crate::output::num(r.measured),
            &r.predicted,
            pass,
        ])
        .map_err(&err)?;
    }
    csv_bytes("checks.csv", w)
}

/// Write summary.json, checks.csv, trajectory.csv (the configured run, theory columns
/// included) and config.toml (with a `[check]` table) into `dir`.
pub fn write_check(result: &CheckResult, dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let s = &result.summary;
    let json = json_bytes("summary.json", s)?;
    // a check computes the spectral columns at every record and refuses the key
    let mut leave_out = vec!["out", "save_problem", "spectrum_every"];
    leave_out.extend(s.provenance.from_file.iter().map(String::as_str));
    let mut table = s.provenance.config.table_without(&leave_out)?;
    let check = toml::Table::try_from(&s.check)
        .map_err(|e| Error::serialise("config.toml", e.to_string()))?;
    table.insert("check".into(), toml::Value::Table(check));
    let toml = toml_text("config.toml", &table)?;
    crate::output::write_bytes(&dir.join("checks.csv"), &checks_csv(s)?)?;
    crate::output::write_bytes(&dir.join("trajectory.csv"), &trajectory_csv(&result.run)?)?;
    crate::output::write_bytes(&dir.join("config.toml"), toml.as_bytes())?;
    crate::output::write_bytes(&dir.join("summary.json"), &json)?;
    Ok(())
}

/// What `gdflow check` produces.
pub struct CheckResult {
    pub summary: CheckSummary,
    /// GD and the flow on the configured problem (with the theory quantities).
    pub run: RunResult,
}
