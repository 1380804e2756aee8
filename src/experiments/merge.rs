//! `gdflow merge`: the parts of a sharded sweep combined into the unsharded sweep's result.

use super::sweep::fits;
use crate::dynamics::{RunOptions, Status};
use crate::error::{Error, Result};
use crate::operator::OperatorCounts;
use crate::results::ensemble::EnsembleRow;
use crate::results::run::{load_run, RunResult, RunSummary};
use crate::results::shard::Shard;
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
        stability_limit: super::sweep::bisected_limit(stability.as_ref()),
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
    let (_, first) = &parts[0];
    let copied = alike_files(&parts)?;
    let cfg = first.summary.config();
    let recorded = RunOptions::new(cfg.eta, cfg.steps, cfg.record_every).saved_steps();
    check_blocks(&parts, &recorded)?;
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
        summary.operator_counts.add(&p.summary.operator_counts);
        summary.timings.total_seconds += p.summary.timings.total_seconds;
    }
    Ok(MergedRun {
        summary,
        ensemble: rows,
        copied,
    })
}

type RunPart<'a> = (&'a std::path::PathBuf, RunResult);

/// The files every part of one run holds alike (replica 0's trajectory, and its states when
/// the configuration keeps them), from the first part; a part without one, or with another,
/// is refused.
fn alike_files(parts: &[RunPart<'_>]) -> Result<Vec<(&'static str, Vec<u8>)>> {
    let read = |d: &std::path::Path, name: &str| -> Result<Option<Vec<u8>>> {
        let path = d.join(name);
        match std::fs::read(&path) {
            Ok(b) => Ok(Some(b)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io(&path, e)),
        }
    };
    let (first_dir, first) = &parts[0];
    let mut names = vec!["trajectory.csv"];
    if first.summary.config().save_states {
        names.push("states.npz");
    }
    let mut copied = Vec::new();
    for name in names {
        let mut bytes: Option<Vec<u8>> = None;
        for (d, _) in parts {
            let Some(these) = read(d, name)? else {
                return Err(Error::invalid(
                    "merge",
                    d.display(),
                    format!("has no {name}, which every part of this run writes"),
                ));
            };
            match &bytes {
                None => bytes = Some(these),
                Some(b) if *b != these => {
                    return Err(Error::invalid(
                        "merge",
                        d.display(),
                        format!(
                            "its {name} differs from {}'s: every part of one run computes \
                             replica 0 alike, so this is not a part of the same run",
                            first_dir.display()
                        ),
                    ))
                }
                Some(_) => {}
            }
        }
        copied.push((name, bytes.expect("at least one part")));
    }
    Ok(copied)
}

/// The ensembles a run's blocks may hold (see [`crate::results::ensemble::BlockRow`]).
const ENSEMBLES: [&str; 5] = ["method", "paired", "paired_difference", "sme_h", "sme_h2"];

/// Every part holds exactly its own blocks, each accumulator once, with no more replicas than
/// its block has and finite sums; every block's replicas all record their start; the parts
/// agree on what they share; the method's replicas at the end are those that did not end
/// early. A damaged or foreign ensemble_blocks.csv is refused, never folded into statistics
/// over the wrong replicas.
fn check_blocks(parts: &[RunPart<'_>], recorded: &[usize]) -> Result<()> {
    let (_, first) = &parts[0];
    let cfg = first.summary.config();
    let ranges = super::ensemble::block_ranges(cfg.replicas);
    let (start, end) = (recorded[0], *recorded.last().expect("step 0 at least"));
    let first_part = first
        .summary
        .ensemble_part
        .as_ref()
        .expect("checked: a part");
    let labels = |p: &RunResult| -> std::collections::BTreeSet<String> {
        p.ensemble_blocks
            .iter()
            .map(|r| r.ensemble.clone())
            .collect()
    };
    let (mut at_end, mut ended) = (0, 0);
    for (dir, p) in parts {
        let bad = |why: String| Err(Error::invalid("merge", dir.display(), why));
        let part = p.summary.ensemble_part.as_ref().expect("checked: a part");
        if part.replicas != cfg.replicas
            || part.blocks != ranges.len()
            || part.dt != first_part.dt
            || part.flow_final != first_part.flow_final
            || part.substeps != first_part.substeps
            || p.summary.provenance.crate_version != first.summary.provenance.crate_version
        {
            return bad(
                "its summary's ensemble_part (replicas, blocks, dt, the limit's final values, \
                 substeps) or gdflow version is not the first part's: not a part of the same run"
                    .into(),
            );
        }
        if labels(p) != labels(first) {
            return bad(
                "its ensemble_blocks.csv holds other ensembles than the first part's".into(),
            );
        }
        let mut seen = std::collections::BTreeMap::new();
        for r in &p.ensemble_blocks {
            let why = row_problem(r, part.shard, &ranges).or_else(|| {
                seen.insert(
                    (r.ensemble.as_str(), r.block, r.step, r.quantity.as_str()),
                    r.running.parts().0,
                )
                .map(|_| "the same accumulator twice".to_string())
            });
            if let Some(why) = why {
                return bad(format!(
                    "its ensemble_blocks.csv has {why} ({} block {} step {} {})",
                    r.ensemble, r.block, r.step, r.quantity
                ));
            }
        }
        for label in labels(p).iter().filter(|l| *l != "paired_difference") {
            for (b, range) in ranges
                .iter()
                .enumerate()
                .filter(|(b, _)| part.shard.owns(*b))
            {
                let size = (range.end - range.start) as usize;
                if seen.get(&(label.as_str(), b, start, "loss")) != Some(&size) {
                    return bad(format!(
                        "its ensemble_blocks.csv lacks the start of block {b}'s {size} replicas \
                         of `{label}` (a block missing or cut)"
                    ));
                }
            }
        }
        at_end += seen
            .iter()
            .filter(|((e, _, step, q), _)| *e == "method" && *step == end && *q == "loss")
            .map(|(_, n)| n)
            .sum::<usize>();
        ended += part.ended_early;
    }
    if at_end + ended != cfg.replicas {
        return Err(Error::invalid(
            "merge",
            format!("{} parts", parts.len()),
            format!(
                "their blocks hold {at_end} of the method's replicas at the end and their \
                 summaries count {ended} ended early, of {} replicas: a part is damaged",
                cfg.replicas
            ),
        ));
    }
    Ok(())
}

/// What is wrong with one accumulator of a part's ensemble_blocks.csv, if anything: an
/// ensemble no run makes, a block not the part's, a count of none or more than the block
/// holds, sums that are not finite.
fn row_problem(
    r: &crate::results::ensemble::BlockRow,
    shard: Shard,
    ranges: &[std::ops::Range<u64>],
) -> Option<String> {
    let (n, mean, m2) = r.running.parts();
    let size = ranges.get(r.block).map(|b| (b.end - b.start) as usize);
    if !ENSEMBLES.contains(&r.ensemble.as_str()) {
        Some(format!("an ensemble `{}` no run makes", r.ensemble))
    } else if !(r.block < ranges.len() && shard.owns(r.block)) {
        Some(format!("block {}, which is not this part's", r.block))
    } else if n == 0 || size.is_some_and(|s| n > s) {
        Some(format!(
            "n = {n} for block {} of {} replicas",
            r.block,
            size.unwrap_or(0)
        ))
    } else if !(mean.is_finite() && m2.is_finite() && m2 >= 0.0) {
        Some(format!("mean {mean}, m2 {m2}: not finite sums of squares"))
    } else {
        None
    }
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
            counts.add(&p.summary.operator_counts);
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
