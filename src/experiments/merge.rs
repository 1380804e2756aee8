//! `gdflow merge`: the parts of a sharded sweep combined into the unsharded sweep's result.

use super::sweep::fits;
use crate::dynamics::{RunOptions, Status};
use crate::error::{Error, Result};
use crate::operator::OperatorCounts;
use crate::results::ensemble::EnsembleRow;
use crate::results::run::{load_run, RunSummary};
use crate::results::sweep::Shard;
use crate::results::sweep::{
    load_sweep, ReferenceSolves, StabilityReport, SweepResult, SweepSettings, SweepSummary,
    SweepTimings, WeakSweep,
};

/// Combine the output directories of the parts `--shard 1/N` … `--shard N/N` of one sweep into
/// the result the unsharded sweep gives: the same points and deviation rows (so the same CSVs,
/// byte for byte), the fits recomputed over all step sizes, the stability report of part 1.
pub fn merge(dirs: &[std::path::PathBuf]) -> Result<SweepResult> {
    let parts = dirs
        .iter()
        .map(|d| load_sweep(d).map(|r| (d, r)))
        .collect::<Result<Vec<_>>>()?;
    let first = check_parts(&parts)?;
    let unsharded = |s: &SweepSettings| SweepSettings {
        shard: None,
        ..s.clone()
    };
    let settings = unsharded(&first.summary.sweep);
    let mut points = Vec::new();
    let mut deviations = Vec::new();
    for &eta in &settings.etas {
        for (_, p) in &parts {
            if let Some(q) = p.summary.points.iter().find(|q| q.eta == eta) {
                points.push(q.clone());
                deviations.extend(p.deviations.iter().filter(|r| r.eta == eta).cloned());
            }
        }
    }
    let status = parts
        .iter()
        .map(|(_, p)| p.summary.reference.status.clone())
        .find(|s| *s != Status::Completed)
        .unwrap_or(Status::Completed);
    let (fit_plain, fit_modified) = fits(&points, &status);
    let stability = parts.iter().find_map(|(_, p)| p.summary.stability.clone());
    let (counts, timings) = work(&parts);
    let s = &first.summary;
    let summary = SweepSummary {
        provenance: s.provenance.clone(),
        sweep: settings,
        warnings: s.warnings.clone(),
        problem: s.problem.clone(),
        order_plain: fit_plain.order,
        order_modified: fit_modified.order,
        stability_limit: stability
            .as_ref()
            .and_then(|st| st.bisection.as_ref())
            .and_then(|b| b.limit),
        two_over_lambda_max: stability
            .as_ref()
            .and_then(StabilityReport::two_over_lambda_max),
        fit_plain,
        fit_modified,
        stability,
        reference: ReferenceSolves {
            status,
            ..s.reference.clone()
        },
        points,
        target_deviation: None,
        weak: merge_weak(&parts, &first.summary.sweep.etas),
        operator_counts: counts,
        timings,
    };
    Ok(SweepResult {
        summary,
        deviations,
    })
}

type Part<'a> = (&'a std::path::PathBuf, SweepResult);

/// The parts' weak errors (`--replicas`) in the order of the full list of step sizes, the
/// orders fitted over all of them. Each step size's ensembles depend on nothing but it (the
/// replicas' streams are keyed by seed, replica and step), so they are the unsharded sweep's.
fn merge_weak(parts: &[Part<'_>], etas: &[f64]) -> Option<WeakSweep> {
    let weak: Vec<&WeakSweep> = parts
        .iter()
        .filter_map(|(_, p)| p.summary.weak.as_ref())
        .collect();
    let first = weak.first()?;
    let points: Vec<_> = etas
        .iter()
        .filter_map(|&eta| {
            weak.iter()
                .find_map(|w| w.points.iter().find(|q| q.eta == eta))
                .cloned()
        })
        .collect();
    Some(WeakSweep {
        replicas: first.replicas,
        orders: super::weak::weak_orders(&points),
        points,
    })
}

/// Every part belongs to one sharded sweep, each part once, none missing; the first part.
fn check_parts<'p>(parts: &'p [Part<'_>]) -> Result<&'p SweepResult> {
    let (_, first) = parts
        .first()
        .ok_or_else(|| Error::invalid("merge", "[]", "needs the parts' directories"))?;
    let unsharded = |s: &SweepSettings| SweepSettings {
        shard: None,
        ..s.clone()
    };
    let ids = parts
        .iter()
        .map(|(d, p)| PartId {
            dir: d,
            shard: p.summary.sweep.shard,
            config: p.summary.provenance.config.clone(),
            settings: toml::Table::try_from(unsharded(&p.summary.sweep)).unwrap_or_default(),
        })
        .collect::<Vec<_>>();
    check_ids(&ids, "sweep", "sweep.")?;
    Ok(first)
}

/// A part as the checks see it.
struct PartId<'a> {
    dir: &'a std::path::Path,
    shard: Option<Shard>,
    config: toml::Table,
    /// The command's settings beyond the configuration (the `[sweep]` table), unsharded.
    settings: toml::Table,
}

/// The parts belong to one sharded `what` (same configuration and settings, the same count
/// N), each part once, none missing. `prefix` names the settings' keys in messages.
fn check_ids(ids: &[PartId<'_>], what: &str, prefix: &str) -> Result<()> {
    let bad = |d: &std::path::Path, why: String| Error::invalid("merge", d.display(), why);
    let first = ids
        .first()
        .ok_or_else(|| Error::invalid("merge", "[]", "needs the parts' directories"))?;
    let count = first
        .shard
        .ok_or_else(|| {
            bad(
                first.dir,
                format!("is not a part of a sharded {what} (no `shard`)"),
            )
        })?
        .count;
    let mut seen = vec![false; count];
    for p in ids {
        let shard = p
            .shard
            .ok_or_else(|| bad(p.dir, format!("is not a part of a sharded {what}")))?;
        let differs = if shard.count != count {
            Some(format!(
                "shard count ({}/{} against N = {count})",
                shard.index, shard.count
            ))
        } else if p.config != first.config {
            Some(first_difference(&p.config, &first.config))
        } else if p.settings != first.settings {
            Some(format!(
                "{prefix}{}",
                first_difference(&p.settings, &first.settings)
            ))
        } else {
            None
        };
        if let Some(key) = differs {
            return Err(bad(
                p.dir,
                format!(
                    "belongs to a different {what} than {}: its `{key}` differs",
                    first.dir.display()
                ),
            ));
        }
        if std::mem::replace(&mut seen[shard.index - 1], true) {
            return Err(bad(p.dir, format!("repeats part {}/{count}", shard.index)));
        }
    }
    if let Some(missing) = seen.iter().position(|s| !s) {
        return Err(Error::invalid(
            "merge",
            format!("{} parts", ids.len()),
            format!("part {}/{count} is missing", missing + 1),
        ));
    }
    Ok(())
}

/// The parts of one run's sharded ensemble merged: the unsharded run's summary and
/// ensemble.csv rows, and the files every part holds alike (trajectory.csv, states.npz:
/// replica 0), copied from the first part.
pub struct MergedRun {
    pub summary: RunSummary,
    pub ensemble: Vec<EnsembleRow>,
    /// (file name, bytes), written as they are.
    pub copied: Vec<(&'static str, Vec<u8>)>,
}

/// Combine the output directories of `run --replicas N --shard 1/K … K/K` into the unsharded
/// run's result: the parts' blocks folded in block order, as the unsharded run folds them, so
/// ensemble.csv is the unsharded run's byte for byte.
pub fn merge_runs(dirs: &[std::path::PathBuf]) -> Result<MergedRun> {
    let parts = dirs
        .iter()
        .map(|d| load_run(d).map(|r| (d, r)))
        .collect::<Result<Vec<_>>>()?;
    let ids = parts
        .iter()
        .map(|(d, p)| {
            Ok(PartId {
                dir: d,
                shard: p.summary.ensemble_part.as_ref().map(|e| e.shard),
                config: p.summary.config().table_without(&["out", "save_problem"])?,
                settings: toml::Table::new(),
            })
        })
        .collect::<Result<Vec<_>>>()?;
    check_ids(&ids, "ensemble (`gdflow run --replicas N --shard i/N`)", "")?;
    let (first_dir, first) = &parts[0];
    let read = |d: &std::path::Path, name: &str| -> Result<Option<Vec<u8>>> {
        let path = d.join(name);
        match std::fs::read(&path) {
            Ok(b) => Ok(Some(b)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io(&path, e)),
        }
    };
    let mut copied = Vec::new();
    for name in ["trajectory.csv", "states.npz"] {
        let Some(bytes) = read(first_dir, name)? else {
            continue;
        };
        for (d, _) in &parts[1..] {
            if read(d, name)?.as_deref() != Some(&bytes[..]) {
                return Err(Error::invalid(
                    "merge",
                    d.display(),
                    format!(
                        "its {name} differs from {}'s: every part of one run computes replica \
                         0 alike, so this is not a part of the same run",
                        first_dir.display()
                    ),
                ));
            }
        }
        copied.push((name, bytes));
    }
    let cfg = first.summary.config();
    let part = first
        .summary
        .ensemble_part
        .as_ref()
        .expect("checked: a part");
    let ended = parts.iter().fold([0, 0], |[m, l], (_, p)| {
        let e = p.summary.ensemble_part.as_ref().expect("checked: a part");
        [m + e.ended_early, l + e.ended_early_limit]
    });
    let blocks: Vec<_> = parts
        .iter()
        .flat_map(|(_, p)| p.ensemble_blocks.iter().cloned())
        .collect();
    let recorded = RunOptions::new(cfg.eta, cfg.steps, cfg.record_every).saved_steps();
    let ens = super::ensemble::from_shards(&blocks, part, ended, recorded)?;
    let (rows, ensemble) = super::ensemble::summarise(
        &ens,
        &first.summary.optimizer.name,
        cfg.replicas,
        cfg.talay_tubaro,
    )?;
    let mut summary = first.summary.clone();
    summary
        .warnings
        .extend(super::ensemble::warnings(&ensemble));
    summary.ensemble = Some(ensemble);
    summary.ensemble_part = None;
    for (_, p) in &parts[1..] {
        let (c, t) = (&p.summary.operator_counts, &p.summary.timings);
        summary.operator_counts.apply += c.apply;
        summary.operator_counts.adjoint += c.adjoint;
        summary.operator_counts.fused += c.fused;
        summary.operator_counts.rows += c.rows;
        summary.timings.total_seconds += t.total_seconds;
    }
    Ok(MergedRun {
        summary,
        ensemble: rows,
        copied,
    })
}

/// The first key (in order) whose value differs between two configurations, or is in one only.
fn first_difference(a: &toml::Table, b: &toml::Table) -> String {
    a.keys()
        .chain(b.keys())
        .find(|k| a.get(*k) != b.get(*k))
        .cloned()
        .unwrap_or_else(|| "configuration".into())
}

/// The operator counts and timings of all parts together.
fn work(parts: &[Part<'_>]) -> (OperatorCounts, SweepTimings) {
    let first = &parts[0].1;
    let mut counts = first.summary.operator_counts;
    let mut timings = SweepTimings::default();
    for (i, (_, p)) in parts.iter().enumerate() {
        if i > 0 {
            counts.apply += p.summary.operator_counts.apply;
            counts.adjoint += p.summary.operator_counts.adjoint;
            counts.fused += p.summary.operator_counts.fused;
            counts.rows += p.summary.operator_counts.rows;
        }
        let t = &p.summary.timings;
        timings.problem_seconds += t.problem_seconds;
        timings.reference_seconds += t.reference_seconds;
        timings.points_seconds += t.points_seconds;
        timings.stability_seconds += t.stability_seconds;
        timings.total_seconds += t.total_seconds;
    }
    (counts, timings)
}
