//! Ensembles over replicas of a stochastic method (`--replicas N`): `ensemble.csv` and the
//! summary's `ensemble`, written and read here. Every mean carries its 95% interval
//! 1.96·s/√n (s the sample standard deviation).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{csv_bytes, csv_error};
use crate::error::Result;
use crate::output::num;

/// Mean, sample standard deviation, 95% half-width and count of one quantity.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Stat {
    #[serde(deserialize_with = "super::nan_if_null")]
    pub mean: f64,
    #[serde(deserialize_with = "super::nan_if_null")]
    pub std: f64,
    #[serde(deserialize_with = "super::nan_if_null")]
    pub ci95: f64,
    pub n: usize,
}

impl Stat {
    /// The Talay–Tubaro extrapolation 2E_{h/2} − E_h of a scheme's ensembles on h (`coarse`)
    /// and h/2 (`fine`), independent: interval √(4·ci²_fine + ci²_coarse), spread and count
    /// the fine ensemble's (n = 0, nothing, where either has no values).
    pub fn talay_tubaro(coarse: &Stat, fine: &Stat) -> Self {
        if coarse.n == 0 || fine.n == 0 {
            return Stat {
                mean: f64::NAN,
                std: f64::NAN,
                ci95: f64::NAN,
                n: 0,
            };
        }
        Stat {
            mean: 2.0 * fine.mean - coarse.mean,
            std: fine.std,
            ci95: (2.0 * fine.ci95).hypot(coarse.ci95),
            n: fine.n,
        }
    }
    /// The statistics of a deterministic value: n = 1, no spread.
    pub fn exact(value: f64) -> Self {
        Self {
            mean: value,
            std: 0.0,
            ci95: 0.0,
            n: 1,
        }
    }
}

/// Welford's running mean and sum of squared deviations.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Running {
    n: usize,
    mean: f64,
    m2: f64,
}

impl Running {
    pub fn push(&mut self, x: f64) {
        self.n += 1;
        let d = x - self.mean;
        self.mean += d / self.n as f64;
        self.m2 += d * (x - self.mean);
    }
    /// The accumulation of `self`'s values followed by `other`'s (Chan et al.'s update).
    pub fn merge(&mut self, other: &Running) {
        if other.n == 0 {
            return;
        }
        if self.n == 0 {
            *self = *other;
            return;
        }
        let (na, nb) = (self.n as f64, other.n as f64);
        let n = na + nb;
        let delta = other.mean - self.mean;
        self.mean += delta * nb / n;
        self.m2 += other.m2 + delta * delta * na * nb / n;
        self.n += other.n;
    }
    /// The accumulator from the parts [`Running::parts`] gives (a shard's block, read back).
    pub fn from_parts(n: usize, mean: f64, m2: f64) -> Self {
        Self { n, mean, m2 }
    }
    /// Count, mean and sum of squared deviations: all a merge needs, exactly.
    pub fn parts(&self) -> (usize, f64, f64) {
        (self.n, self.mean, self.m2)
    }
    pub fn stat(&self) -> Stat {
        let n = self.n as f64;
        let std = if self.n > 1 {
            (self.m2 / (n - 1.0)).sqrt()
        } else {
            0.0
        };
        Stat {
            mean: if self.n > 0 { self.mean } else { f64::NAN },
            std,
            ci95: if self.n > 1 {
                1.96 * std / n.sqrt()
            } else {
                0.0
            },
            n: self.n,
        }
    }
}

/// One row of `ensemble.csv`.
#[derive(Debug, Clone, PartialEq)]
pub struct EnsembleRow {
    pub dynamics: String,
    pub step: usize,
    pub t: f64,
    pub quantity: String,
    pub stat: Stat,
}

/// The summary's `ensemble`: the replica count and, at the last recorded step, every
/// quantity's statistics by dynamics (the method's over its replicas; a deterministic
/// limit's with n = 1, std = 0).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EnsembleSummary {
    pub replicas: usize,
    #[serde(rename = "final")]
    pub final_stats: BTreeMap<String, BTreeMap<String, Stat>>,
    /// The method's replicas that diverged or failed before the end (their quantities stop
    /// there: later statistics are over the survivors).
    pub ended_early: usize,
    /// The same for the limit's replicas (an SME's, or with `--vary start` a deterministic
    /// limit's from the replicas' starts).
    #[serde(default)]
    pub ended_early_limit: usize,
    /// At the last step, E φ(method) − E φ(limit) for each quantity φ: the weak error, with its
    /// 95% interval (the two ensembles are independent; a deterministic limit adds none).
    #[serde(default)]
    pub weak_error: BTreeMap<String, WeakError>,
    /// For an SME limit: its Euler–Maruyama scheme's own weak error at the last step,
    /// E φ(SME on h) − E φ(SME on h/2), with its interval (first order in h: the error of the
    /// coarse scheme is about twice this). Smaller than the weak error being measured, or that
    /// measurement is the scheme's.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub scheme_error: BTreeMap<String, WeakError>,
    /// For an SME limit: the Euler–Maruyama substeps per step its statistics come from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub substeps: Option<SubstepChoice>,
    /// Whether the SME's statistics (its `flow` rows, final values and weak errors) are the
    /// Talay–Tubaro extrapolation 2E_{h/2} − E_h.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub talay_tubaro: bool,
}

/// How an SME's substep count was set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SubstepChoice {
    /// The substeps per step of the h ensemble (its h/2 ensemble has twice as many).
    pub substeps: usize,
    /// The counts tried, in order.
    pub tried: Vec<usize>,
    pub reason: String,
}

/// A difference of means and its 95% half-width; `resolved` when the interval excludes 0 —
/// otherwise the difference is not known to be non-zero, which is not agreement.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct WeakError {
    pub difference: f64,
    pub ci95: f64,
    pub resolved: bool,
}

impl WeakError {
    /// The mean of paired differences (method − limit from the same start) with its
    /// interval: tighter than [`WeakError::between`] where the two move together.
    pub fn of_differences(d: &Stat) -> Self {
        Self {
            difference: d.mean,
            ci95: d.ci95,
            resolved: d.mean.abs() > d.ci95,
        }
    }

    /// `a − b` of two independent estimates.
    pub fn between(a: &Stat, b: &Stat) -> Self {
        let difference = a.mean - b.mean;
        let ci95 = a.ci95.hypot(b.ci95);
        Self {
            difference,
            ci95,
            resolved: difference.abs() > ci95,
        }
    }
}

/// The columns of `ensemble.csv` (a contract).
pub const ENSEMBLE_COLUMNS: [&str; 8] = [
    "dynamics", "step", "t", "quantity", "n", "mean", "std", "ci95",
];

/// `ensemble.csv`: one row per recorded step, stochastic dynamics and quantity.
pub fn ensemble_csv(rows: &[EnsembleRow]) -> Result<Vec<u8>> {
    let mut w = csv::Writer::from_writer(Vec::new());
    let err = csv_error("ensemble.csv");
    w.write_record(ENSEMBLE_COLUMNS).map_err(&err)?;
    for r in rows {
        let s = &r.stat;
        w.write_record([
            r.dynamics.clone(),
            r.step.to_string(),
            num(r.t),
            r.quantity.clone(),
            s.n.to_string(),
            num(s.mean),
            num(s.std),
            num(s.ci95),
        ])
        .map_err(&err)?;
    }
    csv_bytes("ensemble.csv", w)
}

/// Read `ensemble.csv` (`bytes`, from `path`): its columns by name.
pub fn read_ensemble_csv(bytes: &[u8], path: &std::path::Path) -> Result<Vec<EnsembleRow>> {
    let t = super::table::Table::from_csv(bytes, path)?;
    let col = |name: &str| t.require(name);
    let [dynamics, step, time, quantity, n, mean, std, ci95] = [
        col("dynamics")?,
        col("step")?,
        col("t")?,
        col("quantity")?,
        col("n")?,
        col("mean")?,
        col("std")?,
        col("ci95")?,
    ];
    let (count, number) = (|r, c| t.count(r, c), |r, c| t.required(r, c));
    (0..t.rows.len())
        .map(|r| {
            Ok(EnsembleRow {
                dynamics: t.text(r, dynamics).to_string(),
                step: count(r, step)?,
                t: number(r, time)?,
                quantity: t.text(r, quantity).to_string(),
                stat: Stat {
                    mean: number(r, mean)?,
                    std: number(r, std)?,
                    ci95: number(r, ci95)?,
                    n: count(r, n)?,
                },
            })
        })
        .collect()
}

/// One accumulator of a shard of an ensemble (`run --replicas N --shard i/N`): one quantity
/// at one recorded step of one of the run's ensembles, over one block of replicas. `gdflow
/// merge` folds the blocks in block order, as the unsharded run does, so its statistics are
/// the unsharded run's bit for bit.
#[derive(Debug, Clone, PartialEq)]
pub struct BlockRow {
    /// `method`; with `--vary start` `paired` and `paired_difference` (method − limit from
    /// the same start); for an SME `sme_h` and `sme_h2` (its ensembles on h and h/2).
    pub ensemble: String,
    pub block: usize,
    pub step: usize,
    pub quantity: String,
    pub running: Running,
}

/// The columns of `ensemble_blocks.csv`.
pub const BLOCK_COLUMNS: [&str; 7] = ["ensemble", "block", "step", "quantity", "n", "mean", "m2"];

/// `ensemble_blocks.csv`: a shard's accumulators, exactly (shortest round-trip decimals).
pub fn blocks_csv(rows: &[BlockRow]) -> Result<Vec<u8>> {
    let mut w = csv::Writer::from_writer(Vec::new());
    let err = csv_error("ensemble_blocks.csv");
    w.write_record(BLOCK_COLUMNS).map_err(&err)?;
    for r in rows {
        let (n, mean, m2) = r.running.parts();
        w.write_record([
            r.ensemble.clone(),
            r.block.to_string(),
            r.step.to_string(),
            r.quantity.clone(),
            n.to_string(),
            num(mean),
            num(m2),
        ])
        .map_err(&err)?;
    }
    csv_bytes("ensemble_blocks.csv", w)
}

/// Read `ensemble_blocks.csv` (`bytes`, from `path`): its columns by name.
pub fn read_blocks_csv(bytes: &[u8], path: &std::path::Path) -> Result<Vec<BlockRow>> {
    let t = super::table::Table::from_csv(bytes, path)?;
    let col = |name: &str| t.require(name);
    let [ensemble, block, step, quantity, n, mean, m2] = [
        col("ensemble")?,
        col("block")?,
        col("step")?,
        col("quantity")?,
        col("n")?,
        col("mean")?,
        col("m2")?,
    ];
    let (count, number) = (|r, c| t.count(r, c), |r, c| t.required(r, c));
    (0..t.rows.len())
        .map(|r| {
            Ok(BlockRow {
                ensemble: t.text(r, ensemble).to_string(),
                block: count(r, block)?,
                step: count(r, step)?,
                quantity: t.text(r, quantity).to_string(),
                running: Running::from_parts(count(r, n)?, number(r, mean)?, number(r, m2)?),
            })
        })
        .collect()
}

/// The summary's `ensemble_part` in one shard of a run's ensemble (`run --replicas N --shard
/// i/N`): what `gdflow merge` needs beside the shard's `ensemble_blocks.csv`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EnsemblePart {
    pub shard: super::shard::Shard,
    pub replicas: usize,
    /// The blocks the whole ensemble is summed in; this part holds those b with
    /// b ≡ i − 1 (mod N), counted from 0.
    pub blocks: usize,
    /// The limit's time per step (t = step·dt in ensemble.csv).
    pub dt: f64,
    /// This part's replicas that ended early: the method's and the limit's.
    pub ended_early: usize,
    pub ended_early_limit: usize,
    /// A deterministic limit's values at the last step (n = 1), the same in every part.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flow_final: Option<BTreeMap<String, Stat>>,
    /// An SME's substeps (given: a shard cannot choose them from the whole ensemble).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub substeps: Option<SubstepChoice>,
}

/// One step size of `sweep --replicas N` for a stochastic method: the weak error of the loss
/// at T against each limit, and the spread of each SME against the method's.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WeakPoint {
    pub eta: f64,
    /// By limit (`plain`, `modified`, `sme1`, `sme2`): E f(method) − E f(limit) at T.
    pub weak_error: BTreeMap<String, WeakError>,
    /// By SME: Var f(SME) / Var f(method) at T.
    pub variance_ratio: BTreeMap<String, f64>,
    /// The method's mean loss at T with its interval.
    pub method_loss: Stat,
    /// By SME: its scheme's own weak error of the loss at T (E_h − E_{h/2}).
    #[serde(default)]
    pub scheme_error: BTreeMap<String, WeakError>,
    /// By SME: the Euler–Maruyama substeps per step of its h ensemble.
    #[serde(default)]
    pub substeps: BTreeMap<String, usize>,
}

/// The slope of ln|weak error| against ln η for one limit, with its 95% interval; `None` when
/// a step size's difference is unresolved (its interval covers 0: no order can be read) or
/// there are fewer than two step sizes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WeakOrder {
    pub order: Option<f64>,
    /// Half-width of the 95% interval of the slope (NaN with two step sizes).
    #[serde(deserialize_with = "super::nan_if_null")]
    pub ci95: f64,
    /// Why there is no order, when there is none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unresolved: Option<String>,
}

/// `weak_error.csv`: one row per step size and limit.
pub fn weak_error_csv(points: &[WeakPoint]) -> Result<Vec<u8>> {
    let mut w = csv::Writer::from_writer(Vec::new());
    let err = csv_error("weak_error.csv");
    w.write_record([
        "eta",
        "limit",
        "weak_error",
        "ci95",
        "resolved",
        "variance_ratio",
    ])
    .map_err(&err)?;
    for p in points {
        for (limit, e) in &p.weak_error {
            let ratio = p
                .variance_ratio
                .get(limit)
                .map_or(String::new(), |r| num(*r));
            w.write_record([
                num(p.eta),
                limit.clone(),
                num(e.difference),
                num(e.ci95),
                e.resolved.to_string(),
                ratio,
            ])
            .map_err(&err)?;
        }
    }
    csv_bytes("weak_error.csv", w)
}
