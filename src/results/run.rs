//! `gdflow run`'s results: `summary.json`, `trajectory.csv` and `config.toml`, written and read
//! here.

use std::path::Path;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::table::{Cell, Table};
use super::{json_bytes, not_ours, read, toml_text, Provenance};
use crate::analysis::record::Header;
use crate::analysis::Record;
use crate::config::Config;
use crate::dynamics::flow::SolverStats;
use crate::dynamics::Status;
use crate::error::{Error, Result};
use crate::operator::OperatorCounts;
use crate::problem::{Problem, ProblemSource};

/// Where a problem came from and what it is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProblemInfo {
    /// "generated" or the path of the `.npz` file.
    pub source: String,
    pub operator: String,
    pub n1: usize,
    pub n2: usize,
    pub rank: usize,
    pub width: usize,
    pub measurements: usize,
    pub target_singular_values: Vec<f64>,
    pub target_norm: f64,
    /// The scale α of the start (measured from a file's `u0`, `v0`).
    #[serde(default)]
    pub start_scale: f64,
    /// For an f64 problem file run with `--sensing-precision f32`: the relative change of
    /// 𝒜(X*) that rounding the entries made.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub f32_change_of_y: Option<f64>,
}

impl ProblemInfo {
    /// "gaussian operator, n1=30 n2=25 r=3 k=6 m=600": the first line of every report.
    pub fn headline(&self) -> String {
        format!(
            "{} operator, n1={} n2={} r={} k={} m={}",
            self.operator, self.n1, self.n2, self.rank, self.width, self.measurements
        )
    }

    pub fn new(problem: &Problem) -> Self {
        Self {
            source: match &problem.source {
                ProblemSource::Generated => "generated".to_string(),
                ProblemSource::File { path, .. } => path.display().to_string(),
            },
            operator: problem.op.name().to_string(),
            n1: problem.n1(),
            n2: problem.n2(),
            rank: problem.target_sv.len(),
            width: problem.width(),
            measurements: problem.m(),
            target_singular_values: problem.target_sv.clone(),
            target_norm: problem.x_star.norm(),
            start_scale: problem.start_scale(),
            f32_change_of_y: problem.f32_change_of_y,
        }
    }
}

/// The end of one dynamics.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DynamicsSummary {
    #[serde(flatten)]
    pub status: Status,
    /// The last recorded time and its quantities.
    pub final_t: f64,
    pub final_loss: f64,
    pub final_rel_error: f64,
    pub final_balance_drift: f64,
    /// Over every step (or every output time jη of the flow), recorded or not.
    pub max_balance_drift: f64,
}

/// max_j ‖U_jV_jᵀ − U(jη)V(jη)ᵀ‖_F over every step both dynamics reached, recorded or not.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Distance {
    pub max: f64,
    /// `max` divided by ‖X*‖_F.
    pub max_relative: f64,
    pub step: usize,
    pub t: f64,
    pub final_distance: f64,
}

/// Wall-clock seconds (and what rode on the flow's passes), kept apart from the results so that
/// those are reproducible byte for byte.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Timings {
    pub problem_seconds: f64,
    /// The method's steps and records (the records reuse its own evaluations). Beside a flow
    /// of the method's own field (the gradient flow of GD, alternating GD or SGD) the method's
    /// evaluations and the flow's records ride on the flow's passes over the sensing matrix
    /// where they can (`method_evaluations_riding`, `records_riding`), and those passes are
    /// in `flow_seconds`. Otherwise GD, heavy ball, ScaledGD, alternating GD and Nesterov share
    /// their pass at x_j with the flow's record there (which adds its residual's dot
    /// products, or its G where the record has spectral columns or a user's quantity), in
    /// this time; the stochastic methods' records' passes are in `record_seconds`.
    pub gd_seconds: f64,
    /// The flow solver, without the recording done at its output times (with the
    /// evaluations that ride on its passes).
    pub flow_seconds: f64,
    /// The flow's recorded quantities, past what they share of the method's or the flow's
    /// passes.
    #[serde(default)]
    pub record_seconds: f64,
    pub total_seconds: f64,
    /// Of the method's evaluations, those that rode on the flow's passes.
    #[serde(default)]
    pub method_evaluations_riding: usize,
    /// Of the flow's records, those whose evaluation rode on the flow's passes.
    #[serde(default)]
    pub records_riding: usize,
}

/// What computing the sharpness column cost.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct SharpnessCost {
    pub computations: usize,
    /// Hessian–vector products (each one pass over the sensing matrix).
    pub hvps: usize,
    /// Computations whose estimate missed its tolerance (their cells are empty).
    pub unconverged: usize,
    pub seconds: f64,
}

impl SharpnessCost {
    pub fn absorb(&mut self, other: &SharpnessCost) {
        self.computations += other.computations;
        self.hvps += other.hvps;
        self.unconverged += other.unconverged;
        self.seconds += other.seconds;
    }
}

/// GD against the central flow at the edge of stability (MATH §8), averaged over the steps of
/// the run's second half where the flow holds eigenvalues at 2/η.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EdgeOfStability {
    pub t_from: f64,
    pub t_to: f64,
    pub steps: usize,
    /// mean_j ‖Qᵀ(x_j − x(t_j))‖², GD's oscillation along the active eigenvectors Q of the
    /// central flow ...
    pub oscillation_second_moment: f64,
    /// ... against the mean tr Σ it predicts.
    pub sigma_trace: f64,
    /// mean_j f(x_j), GD's averaged loss ...
    pub gd_mean_loss: f64,
    /// ... against the mean of f(x(t_j)) + tr Σ/η.
    pub predicted_loss: f64,
}

/// The central flow's part of a run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CentralSummary {
    #[serde(flatten)]
    pub report: crate::dynamics::flow::CentralReport,
    /// max and final of ‖X̄_j − X((j + ½)η)‖_F, GD's two-step average against the flow.
    pub distance_mean: Option<Distance>,
    pub edge_of_stability: Option<EdgeOfStability>,
    /// The same iterates against the plain gradient flow (a second comparison run beside the
    /// central one): what the central flow is measured against in the verdict.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub distance_plain: Option<Distance>,
}

impl CentralSummary {
    /// Whether GD's average ends nearer the central flow than its iterates end to the
    /// gradient flow (both relative to ‖X*‖): `None` without both distances.
    pub fn follows_central(&self) -> Option<bool> {
        let (mean, plain) = (self.distance_mean.as_ref()?, self.distance_plain.as_ref()?);
        Some(mean.final_distance < plain.final_distance)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunSummary {
    #[serde(flatten)]
    pub provenance: Provenance<Config>,
    /// Allowed but suspicious settings (also printed on stderr).
    pub warnings: Vec<String>,
    pub problem: ProblemInfo,
    pub gd: DynamicsSummary,
    pub flow: DynamicsSummary,
    pub distance: Option<Distance>,
    /// 2/η: GD is stable near a minimum only while the sharpness is below it (MATH §2, §8).
    #[serde(default)]
    pub two_over_eta: f64,
    /// The discrete method and its limit (MATH §9). The method's rows and its entry above
    /// (`gd`) are this optimiser's.
    #[serde(default)]
    pub optimizer: OptimizerSummary,
    /// What the `sharpness` column cost.
    #[serde(default)]
    pub sharpness_cost: SharpnessCost,
    /// With `--flow central`: its events, GD's average against it, the predictions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub central: Option<CentralSummary>,
    /// With `--replicas N` (N ≥ 2): the ensemble's final statistics.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ensemble: Option<super::ensemble::EnsembleSummary>,
    /// In one shard of an ensemble (`--shard i/N`): what `gdflow merge` needs beside the
    /// shard's ensemble_blocks.csv; `ensemble` is then absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ensemble_part: Option<super::ensemble::EnsemblePart>,
    pub solver: SolverStats,
    /// Operator applications over the whole run (GD, flow, recording).
    pub operator_counts: OperatorCounts,
    pub timings: Timings,
}

impl RunSummary {
    pub fn config(&self) -> &Config {
        &self.provenance.config
    }
}

/// The optimiser a run compared with its limit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OptimizerSummary {
    /// Its registry name: the `dynamics` of its rows in trajectory.csv.
    pub name: String,
    /// Its parameters (damping, momentum, friction), η aside.
    pub parameters: crate::dynamics::optimizer::Parameters,
    /// t = jη or j√η.
    pub time_scale: crate::dynamics::optimizer::TimeScale,
    /// The limit it was compared with, as an equation.
    pub limit: String,
    /// Whether UᵀU − VᵀV is conserved by the limit, in words.
    pub balance: String,
}

impl Default for OptimizerSummary {
    /// GD's, for summaries written before optimisers were recorded.
    fn default() -> Self {
        Self {
            name: "gd".into(),
            parameters: Default::default(),
            time_scale: crate::dynamics::optimizer::TimeScale::Eta,
            limit: String::new(),
            balance: String::new(),
        }
    }
}

/// Everything a run produces.
#[derive(Debug, Clone)]
pub struct RunResult {
    pub summary: RunSummary,
    /// The optimiser's rows (GD's by default; named by `summary.optimizer.name`).
    pub gd: Vec<Record>,
    pub flow: Vec<Record>,
    /// With the central flow: GD's two-step average x̄_j = ½(x_j + x_{j+1}) at t = (j + ½)η,
    /// the rows `gd_mean` (MATH §8).
    pub gd_mean: Vec<Record>,
    /// Columns of the user's recorded quantities ([`crate::analysis::Quantity`]), after the
    /// built-in ones; each record's `extra` holds their values.
    pub extra_columns: Vec<String>,
    /// The states at the recorded steps of each dynamics, by name, when `save_states` asked
    /// for them (`states.npz`); empty otherwise.
    pub states: Vec<(String, States)>,
    /// With `--replicas N` (N ≥ 2): `ensemble.csv`'s rows; empty otherwise.
    pub ensemble: Vec<super::ensemble::EnsembleRow>,
    /// A shard's accumulators (`ensemble_blocks.csv`).
    pub ensemble_blocks: Vec<super::ensemble::BlockRow>,
}

/// One dynamics' states (U, V stacked as the field's state vector) at its recorded steps.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct States {
    pub steps: Vec<usize>,
    pub t: Vec<f64>,
    pub states: Vec<Vec<f64>>,
}

impl States {
    pub fn push(&mut self, step: usize, t: f64, state: &[f64]) {
        self.steps.push(step);
        self.t.push(t);
        self.states.push(state.to_vec());
    }
}

/// `states.npz`: for each dynamics `<name>`, the arrays `<name>_U` (records × n1 × k),
/// `<name>_V` (records × n2 × k; V = U in the symmetric case), `<name>_step` and `<name>_t`.
pub fn states_arrays(result: &RunResult) -> Vec<(String, Vec<u64>, Vec<f64>)> {
    let p = &result.summary.problem;
    let (n1, n2, k) = (p.n1, p.n2, p.width);
    let mut arrays = Vec::new();
    for (name, s) in &result.states {
        let n = s.steps.len() as u64;
        let (mut u, mut v) = (Vec::new(), Vec::new());
        for x in &s.states {
            // the state holds U then V column-major (V absent in the symmetric case)
            let (us, vs) = x.split_at(n1 * k);
            let vs = if vs.is_empty() { us } else { vs };
            u.extend((0..n1).flat_map(|a| (0..k).map(move |c| us[a + c * n1])));
            v.extend((0..n2).flat_map(|b| (0..k).map(move |c| vs[b + c * n2])));
        }
        arrays.push((format!("{name}_U"), vec![n, n1 as u64, k as u64], u));
        arrays.push((format!("{name}_V"), vec![n, n2 as u64, k as u64], v));
        arrays.push((
            format!("{name}_step"),
            vec![n],
            s.steps.iter().map(|&j| j as f64).collect(),
        ));
        arrays.push((format!("{name}_t"), vec![n], s.t.clone()));
    }
    arrays
}

/// The columns of `trajectory.csv` before the records' own: which dynamics, j and t.
pub const LEADING_COLUMNS: [&str; 3] = ["dynamics", "step", "t"];

/// The header of `trajectory.csv` for width `k` and the user's extra columns.
pub fn trajectory_header(k: usize, extra: &[String]) -> Vec<String> {
    let mut header: Vec<String> = LEADING_COLUMNS.iter().map(|s| s.to_string()).collect();
    header.extend(Header::standard(k, extra).names);
    header
}

impl RunResult {
    /// Every record with the name of its dynamics: the method's rows (named after the
    /// optimiser), then its limit's (`flow`), then GD's two-step average's (`gd_mean`).
    pub fn named_records(&self) -> impl Iterator<Item = (&str, &Record)> {
        let method = self.summary.optimizer.name.as_str();
        (self.gd.iter().map(move |r| (method, r)))
            .chain(self.flow.iter().map(|r| ("flow", r)))
            .chain(self.gd_mean.iter().map(|r| ("gd_mean", r)))
    }

    /// The records as one table of named columns (what `trajectory.csv` holds).
    pub fn table(&self) -> Table {
        let header = self.named_records().next().map_or_else(
            || Header::standard(self.summary.problem.width, &self.extra_columns),
            |(_, r)| r.header().clone(),
        );
        let mut columns: Vec<String> = LEADING_COLUMNS.iter().map(|s| s.to_string()).collect();
        columns.extend(header.names.iter().cloned());
        let rows =
            self.named_records()
                .map(|(name, r)| {
                    let mut row = vec![
                        Cell::Text(name.into()),
                        Cell::Int(r.step as u64),
                        Cell::Num(r.t),
                    ];
                    row.extend(r.values().iter().zip(&r.header().integer).map(
                        |(v, int)| match v {
                            Some(v) if *int => Cell::Int(*v as u64),
                            v => Cell::from(*v),
                        },
                    ));
                    row
                })
                .collect();
        Table { columns, rows }
    }
}

/// `trajectory.csv`: one row per output time and dynamics.
pub fn trajectory_csv(result: &RunResult) -> Result<Vec<u8>> {
    result.table().to_csv("trajectory.csv")
}

/// The records of `trajectory.csv` by dynamics, read by column name: the method's (named
/// `method`), the limit's and GD's two-step average's. A column whose cells are all integers
/// is read back as one.
fn read_trajectory(bytes: &[u8], path: &Path, method: &str) -> Result<[Vec<Record>; 3]> {
    let table = Table::from_csv(bytes, path)?;
    let [dynamics, step, t] = LEADING_COLUMNS.map(|c| table.require(c));
    let (dynamics, step, t) = (dynamics?, step?, t?);
    let value_cols: Vec<usize> = (0..table.columns.len())
        .filter(|&c| c != dynamics && c != step && c != t)
        .collect();
    let integer = value_cols
        .iter()
        .map(|&c| {
            let cells = table
                .rows
                .iter()
                .map(|r| r[c].as_str())
                .filter(|v| !v.is_empty());
            let mut cells = cells.peekable();
            cells.peek().is_some() && cells.all(|v| v.bytes().all(|b| b.is_ascii_digit()))
        })
        .collect();
    let header = Arc::new(Header {
        names: value_cols
            .iter()
            .map(|&c| table.columns[c].clone())
            .collect(),
        integer,
    });
    let mut out: [Vec<Record>; 3] = Default::default();
    for row in 0..table.rows.len() {
        let values = value_cols
            .iter()
            .map(|&c| table.number(row, c))
            .collect::<Result<Vec<_>>>()?;
        let (j, time) = (table.count(row, step)?, table.required(row, t)?);
        let which = match table.text(row, dynamics) {
            "flow" => 1,
            "gd_mean" => 2,
            name if name == method => 0,
            other => return Err(table.error(format!("unknown dynamics {other:?}"))),
        };
        out[which].push(Record::new(j, time, header.clone(), values));
    }
    Ok(out)
}

/// `config.toml` of a run: the resolved configuration without the output paths (a re-run
/// must not overwrite these outputs) and without what a problem file fixed (a re-run takes
/// it from the file again).
pub fn config_toml(summary: &RunSummary) -> Result<String> {
    let mut leave_out = vec!["out", "save_problem"];
    leave_out.extend(summary.provenance.from_file.iter().map(String::as_str));
    toml_text("config.toml", &summary.config().table_without(&leave_out)?)
}

/// Write `summary.json`, `trajectory.csv` and the resolved `config.toml` into `dir`.
pub fn write_run(result: &RunResult, dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let csv = trajectory_csv(result)?;
    let json = json_bytes("summary.json", &result.summary)?;
    let toml = config_toml(&result.summary)?;
    crate::output::write_bytes(&dir.join("trajectory.csv"), &csv)?;
    crate::output::write_bytes(&dir.join("config.toml"), toml.as_bytes())?;
    if !result.ensemble.is_empty() {
        let csv = super::ensemble::ensemble_csv(&result.ensemble)?;
        crate::output::write_bytes(&dir.join("ensemble.csv"), &csv)?;
    }
    if !result.ensemble_blocks.is_empty() {
        let csv = super::ensemble::blocks_csv(&result.ensemble_blocks)?;
        crate::output::write_bytes(&dir.join("ensemble_blocks.csv"), &csv)?;
    }
    if !result.states.is_empty() {
        let arrays = states_arrays(result);
        let path = dir.join("states.npz");
        crate::output::write_atomically(&path, |file| {
            crate::problem::write_npz(std::io::BufWriter::new(file), &arrays)
        })?;
    }
    crate::output::write_bytes(&dir.join("summary.json"), &json)?;
    Ok(())
}

/// Write a merged run (`gdflow merge` of a sharded ensemble) into `dir`: the files every part
/// holds alike as they are, then ensemble.csv, config.toml and summary.json (last, as
/// [`write_run`] does: a directory with a summary is complete).
pub fn write_merged_run(
    summary: &RunSummary,
    ensemble: &[super::ensemble::EnsembleRow],
    copied: &[(&str, Vec<u8>)],
    dir: &Path,
) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    for (name, bytes) in copied {
        crate::output::write_bytes(&dir.join(name), bytes)?;
    }
    let csv = super::ensemble::ensemble_csv(ensemble)?;
    crate::output::write_bytes(&dir.join("ensemble.csv"), &csv)?;
    let toml = config_toml(summary)?;
    crate::output::write_bytes(&dir.join("config.toml"), toml.as_bytes())?;
    let json = json_bytes("summary.json", summary)?;
    crate::output::write_bytes(&dir.join("summary.json"), &json)?;
    Ok(())
}

/// Read a `gdflow run` output directory (summary.json and trajectory.csv).
pub fn load_run(dir: &Path) -> Result<RunResult> {
    let path = dir.join("summary.json");
    let bytes = read(&path)?;
    let summary: RunSummary =
        serde_json::from_slice(&bytes).map_err(|e| super::wrong_kind(&path, &bytes, "run", e))?;
    let path = dir.join("trajectory.csv");
    let [gd, flow, gd_mean] = read_trajectory(&read(&path)?, &path, &summary.optimizer.name)?;
    // the rows summary.json describes are there: a trajectory.csv without its rows, or with
    // another run's, is refused rather than drawn empty or mixed
    for (name, records, summary) in [
        ("the method's", &gd, &summary.gd),
        ("the flow's", &flow, &summary.flow),
    ] {
        let last_t = records.last().map(|r| r.t);
        // a dynamics that recorded nothing (diverged at its start) has final_t = 0
        let agrees = match last_t {
            Some(t) => (t - summary.final_t).abs() <= 1e-9 * summary.final_t.abs().max(1.0),
            None => summary.final_t == 0.0,
        };
        if !agrees {
            return Err(not_ours(
                &path,
                format!(
                    "{name} rows end at t = {} where summary.json says {}: not this run's \
                     trajectory, or an incomplete one",
                    last_t.map_or("(no rows)".into(), |t| t.to_string()),
                    summary.final_t
                ),
            ));
        }
    }
    let standard = Header::standard(summary.problem.width, &[]).names;
    let extra_columns = gd
        .iter()
        .chain(&flow)
        .next()
        .map(|r| {
            r.header()
                .names
                .iter()
                .filter(|n| !standard.contains(n))
                .cloned()
                .collect()
        })
        .unwrap_or_default();
    let path = dir.join("ensemble.csv");
    let ensemble = if summary.ensemble.is_some() && path.exists() {
        super::ensemble::read_ensemble_csv(&read(&path)?, &path)?
    } else {
        Vec::new()
    };
    let path = dir.join("ensemble_blocks.csv");
    let ensemble_blocks = if summary.ensemble_part.is_some() {
        super::ensemble::read_blocks_csv(&read(&path)?, &path)?
    } else {
        Vec::new()
    };
    Ok(RunResult {
        summary,
        gd,
        flow,
        gd_mean,
        extra_columns,
        states: Vec::new(),
        ensemble,
        ensemble_blocks,
    })
}
