//! `gdflow merge`: the parts of a sharded sweep combined into the unsharded sweep's result.

use super::sweep::fits;
use crate::dynamics::Status;
use crate::error::{Error, Result};
use crate::operator::OperatorCounts;
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
    let bad = |d: &std::path::Path, why: String| Error::invalid("merge", d.display(), why);
    let (first_dir, first) = parts
        .first()
        .ok_or_else(|| Error::invalid("merge", "[]", "needs the parts' directories"))?;
    let count = first
        .summary
        .sweep
        .shard
        .ok_or_else(|| {
            bad(
                first_dir,
                "is not a part of a sharded sweep (no `shard`)".into(),
            )
        })?
        .count;
    let mut seen = vec![false; count];
    let unsharded = |s: &SweepSettings| SweepSettings {
        shard: None,
        ..s.clone()
    };
    for (d, p) in parts {
        let shard = p
            .summary
            .sweep
            .shard
            .ok_or_else(|| bad(d, "is not a part of a sharded sweep".into()))?;
        let differs = if shard.count != count {
            Some(format!(
                "shard count ({}/{} against N = {count})",
                shard.index, shard.count
            ))
        } else if p.summary.provenance.config != first.summary.provenance.config {
            Some(first_difference(
                &p.summary.provenance.config,
                &first.summary.provenance.config,
            ))
        } else if unsharded(&p.summary.sweep) != unsharded(&first.summary.sweep) {
            let table = |s: &SweepSettings| toml::Table::try_from(unsharded(s)).unwrap_or_default();
            Some(format!(
                "sweep.{}",
                first_difference(&table(&p.summary.sweep), &table(&first.summary.sweep))
            ))
        } else {
            None
        };
        if let Some(key) = differs {
            return Err(bad(
                d,
                format!(
                    "belongs to a different sweep than {}: its `{key}` differs",
                    first_dir.display()
                ),
            ));
        }
        if std::mem::replace(&mut seen[shard.index - 1], true) {
            return Err(bad(d, format!("repeats part {}/{count}", shard.index)));
        }
    }
    if let Some(missing) = seen.iter().position(|s| !s) {
        return Err(Error::invalid(
            "merge",
            format!("{} parts", parts.len()),
            format!("part {}/{count} is missing", missing + 1),
        ));
    }
    Ok(first)
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
