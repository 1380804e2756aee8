//! The command line: the only layer that knows clap. It parses, overlays the flags on a
//! `--config` file, hands the result to [`crate::experiments`] through one
//! [`Setup`](crate::experiments::Setup), prints a report and writes the outputs.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::config::{parse_config_file_all, CheckArgs, ConfigArgs, FlowVariant, SweepArgs};
use crate::error::Error;
use crate::experiments::{Command as Cmd, RunExtras, Setup};
use crate::results::shard::Shard;

mod args;
mod report;

/// print! that ends quietly when stdout is closed (`gdflow run | head -1`): the run's outputs
/// are still written, the terminal report is only dropped.
macro_rules! say {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        let _ = write!(std::io::stdout().lock(), $($t)*);
    }};
}

/// println! that ends quietly when stdout is closed.
macro_rules! sayln {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout().lock(), $($t)*);
    }};
}

use args::OutputFlags;
pub use report::{describe_auto, format_checks, format_summary, format_sweep};

/// Gradient descent versus gradient flow in low-rank matrix sensing.
#[derive(Parser)]
#[command(name = "gdflow", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

const RUN_EXAMPLES: &str = "\
Examples:
  gdflow run                                   # built-in default problem
  gdflow run --eta 0.1 --steps 300 --out results/
  gdflow run --n1 50 --n2 40 --rank 2 --width 8 --measurements 1200 --kappa 10
  gdflow run --singular-values 3,2,1 --operator entries --measurements 500
  gdflow run --method bdf --rtol 1e-10
  gdflow run --kappa 100 --eta 0.5 --steps 3000 --method auto   # switches to BDF when stiff
  gdflow run --flow modified --eta 0.2         # compare GD with its modified flow
  gdflow run --flow central --n1 8 --n2 7 --rank 2 --width 3 --measurements 60 --alpha 1e-2 \\
             --seed 1 --eta 0.91 --steps 300      # past the stability limit: GD's average
  gdflow run --config results/config.toml      # re-run a recorded configuration
  gdflow run --problem mine.npz --out results/ # arrays x_star, sensing[, y, u0, v0, alpha]
  gdflow run --save-problem problem.npz        # write the generated problem for NumPy
  gdflow run --optimizer sgd --batch 32 --replicas 1000 --out ens/   # SGD ensemble, 95% bands
  gdflow run --optimizer sgd --batch 32 --replicas 4096 --shard 2/4 --out part2/
                                               # a quarter of it; `gdflow merge` joins the parts";

const SWEEP_EXAMPLES: &str = "\
Examples:
  gdflow sweep                                 # default problem, 6 step sizes below 1/σ_1
  gdflow sweep --etas 0.2,0.1,0.05,0.025 --horizon 20 --out sweep/
  gdflow sweep --eta-range 0.005:0.16:6 --alpha 1e-2 --kappa 4
  gdflow sweep --perturbation relative --perturbation-size 0.3   # GD on the perturbed flow
  gdflow sweep --problem mine.npz --eta-range 0.01:0.1:4 --out sweep/
  gdflow sweep --config sweep/config.toml      # re-run a recorded sweep
  RAYON_NUM_THREADS=1 gdflow sweep ...         # same outputs with any thread count

Outputs under --out: summary.json (order_plain, order_modified, stability_limit,
two_over_lambda_max, fits, per-η results, provenance), sweep.csv (one row per η),
deviation.csv (one row per η and time), config.toml.";

const CHECK_EXAMPLES: &str = "\
Examples:
  gdflow check                                 # the battery on the default problem
  gdflow check --kappa 4 --alpha 1e-4 --out checks/ --figures
  gdflow check --rho-bound 2 --rip-bound 0.5   # give bounds to the reported-only rows
  gdflow check --config checks/config.toml     # [check] table holds the constants

Exit status: 0 all predictions passed, 3 a prediction failed, 2 bad input, 1 runtime error.";

const MERGE_EXAMPLES: &str = "\
Examples:
  for i in 1 2 3 4; do gdflow sweep --eta-range 0.005:0.2:16 --shard $i/4 --out part$i/ & done; wait
  gdflow merge part1/ part2/ part3/ part4/ --out sweep/

  # SLURM array job (one part per task), then merge:
  #   gdflow sweep ... --shard ${SLURM_ARRAY_TASK_ID}/${SLURM_ARRAY_TASK_COUNT} --out part${SLURM_ARRAY_TASK_ID}/
  # GNU parallel:
  #   parallel gdflow sweep ... --shard {}/8 --out part{}/ ::: $(seq 8)

  # one ensemble's replicas in parts (an SME limit needs --sde-substeps), then merge:
  for i in 1 2 3 4; do gdflow run --optimizer sgd --batch 3 --steps 300 --record-every 10 --replicas 1024 --shard $i/4 --out ens$i/ & done; wait
  gdflow merge ens1/ ens2/ ens3/ ens4/ --out ensemble/ --figures";

const PLOT_EXAMPLES: &str = "\
Examples:
  gdflow plot results/                         # figures of one run into results/figures/
  gdflow plot eta0.1/ eta0.05/ eta0.025/ --out figs/   # several runs: GD for each η
  gdflow plot sweep/                           # a sweep: loss/error, drift, deviation vs η
  gdflow plot run1/ run2/ sweep/ --out figs/   # runs together into figs/, the sweep into figs/sweep/
  gdflow plot wide/ --top-singular-values 4    # k = 50: σ_1…σ_4 in colour, the rest one band
  gdflow run --out results/ --figures          # the same, straight after the run

Each figure is written as NAME.png, NAME.svg and NAME.csv (exactly the plotted points).";

#[derive(Subcommand)]
enum Command {
    /// Run GD and a gradient flow on one problem and compare them at every t = jη.
    #[command(after_help = RUN_EXAMPLES, allow_negative_numbers = true)]
    Run {
        #[command(flatten)]
        output: OutputFlags,
        #[command(flatten)]
        config: ConfigArgs,
        /// Run part i of N of an ensemble's replicas (--replicas): the part writes its blocks of
        /// accumulators to --out, and `gdflow merge` combines the N parts into the unsharded
        /// run's outputs (ensemble.csv byte-identical). `auto` / `auto/N` read the part from an
        /// array job, as `sweep --shard` does
        #[arg(long, value_name = "i/N|auto|auto/N", help_heading = "Method")]
        shard: Option<String>,
    },
    /// Compare GD with the plain and the modified gradient flow over a range of step sizes:
    /// deviations, observed orders, stability limit against 2/λ_max.
    #[command(after_help = SWEEP_EXAMPLES, allow_negative_numbers = true)]
    Sweep {
        #[command(flatten)]
        output: OutputFlags,
        #[command(flatten)]
        sweep: SweepArgs,
        #[command(flatten)]
        config: ConfigArgs,
    },
    /// Test the theory's predictions on a problem: a table of predicted against measured, with
    /// pass/fail; exits 3 when a prediction fails, so it can gate a pipeline.
    #[command(after_help = CHECK_EXAMPLES, allow_negative_numbers = true)]
    Check {
        #[command(flatten)]
        output: OutputFlags,
        #[command(flatten)]
        check: CheckArgs,
        #[command(flatten)]
        config: ConfigArgs,
    },
    /// Combine the output directories of `gdflow sweep --shard 1/N … N/N` (or of `gdflow run
    /// --replicas R --shard 1/N … N/N`) into the outputs of the unsharded sweep (run):
    /// byte-identical CSVs.
    #[command(after_help = MERGE_EXAMPLES)]
    Merge {
        /// The parts' output directories, all N of them, in any order
        #[arg(required = true, value_name = "DIR")]
        parts: Vec<PathBuf>,
        /// Where the merged outputs go
        #[arg(long, value_name = "DIR", required = true)]
        out: PathBuf,
        /// Write into an --out directory that already holds files
        #[arg(long)]
        force: bool,
        /// Also draw the merged sweep's (run's) figures into OUT/figures
        #[arg(long)]
        figures: bool,
    },
    /// Draw figures (PNG, SVG and the plotted data as CSV) from saved results of `run` or
    /// `sweep`.
    #[command(after_help = PLOT_EXAMPLES)]
    Plot {
        /// Output directories of `gdflow run` and `gdflow sweep`, in any mix: the runs are
        /// drawn together (GD for each η), each sweep on its own
        #[arg(required = true, value_name = "DIR")]
        results: Vec<PathBuf>,
        /// How many singular values of UVᵀ the run figure draws in colour (the rest: one
        /// grey band) [default: the target's rank]
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
        top_singular_values: Option<u32>,
        /// Where the figures go [default: DIR/figures of the first DIR]
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
        /// Write into an --out directory that already holds files
        #[arg(long)]
        force: bool,
    },
}

/// The command line, with the configuration keys a subcommand refuses hidden from its help
/// (they still parse, and are then refused naming what to do instead).
fn parse() -> Cli {
    use clap::{CommandFactory, FromArgMatches};
    let mut cmd = Cli::command();
    for sub in [Cmd::Run, Cmd::Sweep, Cmd::Check] {
        for key in sub.refused_keys() {
            cmd = cmd.mut_subcommand(sub.name(), |s| s.mut_arg(key, |a| a.hide(true)));
        }
    }
    let matches = cmd.get_matches();
    Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit())
}

/// Exit status of `gdflow check` when a prediction failed.
const CHECK_FAILED: u8 = 3;

/// The program: parse, run, report the error chain with its exit status.
pub fn main() -> ExitCode {
    // stopped mid-write: no half-written output, no lock left behind
    let _ = ctrlc::set_handler(|| {
        crate::output::remove_unfinished();
        eprintln!("gdflow: interrupted; nothing half-written was left behind");
        std::process::exit(130);
    });
    let cli = parse();
    if let Err(e) = check_thread_count(std::env::var_os("RAYON_NUM_THREADS")) {
        eprintln!("error: {e}");
        return ExitCode::from(e.exit_code());
    }
    // the whole command on a worker of the pool: every parallel pass then starts from inside
    // it (work split with the other worker) instead of handing the pass over from this thread
    // and sleeping until it is done
    match rayon::scope(|_| dispatch(cli)) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(CHECK_FAILED),
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(e.downcast_ref::<Error>().map_or(1, Error::exit_code))
        }
    }
}

/// `RAYON_NUM_THREADS`, which sizes the thread pool (and the helpers of every pass beside
/// it): rayon takes a value it cannot read for unset, and a hundred thousand threads on two
/// processors made a 300-step run take minutes. At most [`MAX_THREADS_PER_PROCESSOR`] per
/// processor, or 64 on a machine with fewer than 16.
fn check_thread_count(value: Option<std::ffi::OsString>) -> Result<(), Error> {
    let Some(value) = value else { return Ok(()) };
    let processors = std::thread::available_parallelism().map_or(1, |n| n.get());
    let most = (MAX_THREADS_PER_PROCESSOR * processors).max(64);
    let text = value.to_string_lossy();
    match text.trim().parse::<usize>() {
        Ok(n) if n <= most => Ok(()),
        Ok(_) => Err(Error::invalid(
            "RAYON_NUM_THREADS",
            &text,
            format!(
                "at most {most} threads on this machine's {processors} processors: more only \
                 wait for each other; 0 or unset gives one per processor"
            ),
        )),
        Err(_) => Err(Error::invalid(
            "RAYON_NUM_THREADS",
            &text,
            "must be a whole number of threads, 0 or unset for one per processor",
        )),
    }
}

/// Threads per processor that `RAYON_NUM_THREADS` may ask for (see [`check_thread_count`]).
const MAX_THREADS_PER_PROCESSOR: usize = 4;

fn write_figures(figures: &[crate::plot::Figure], dir: &Path) -> anyhow::Result<()> {
    for fig in figures {
        crate::plot::write_figure(fig, dir)?;
    }
    sayln!(
        "wrote {} figures into {}: {}",
        figures.len(),
        dir.display(),
        figures
            .iter()
            .map(|f| format!("{}.{{png,svg,csv}}", f.name))
            .collect::<Vec<_>>()
            .join(", ")
    );
    Ok(())
}

fn warn(warnings: &[String]) {
    for w in warnings {
        eprintln!("warning: {w}");
    }
}

/// The `--config` file's keys and tables (empty without one).
fn load(
    config: &Option<PathBuf>,
    command: &str,
) -> anyhow::Result<(ConfigArgs, SweepArgs, CheckArgs)> {
    match config {
        Some(path) => {
            crate::output::check_input_file("config", path)?;
            let text = std::fs::read_to_string(path).map_err(|e| {
                Error::invalid("config", path.display(), format!("cannot be read: {e}"))
            })?;
            let (mut args, sweep, check) = parse_config_file_all(&text)?;
            // paths in a config file are relative to the file, not to where gdflow runs
            if let (Some(p), Some(dir)) = (&args.problem, path.parent()) {
                if p.is_relative() {
                    args.problem = Some(dir.join(p));
                }
            }
            // a table for another command is allowed (a sweep's config.toml re-runs as a run)
            // but said, so that nobody takes its values for acting
            for (table, present) in [("sweep", sweep.is_some()), ("check", check.is_some())] {
                if present && command != table {
                    eprintln!(
                        "warning: the [{table}] table of {} is for `gdflow {table}`; `gdflow \
                         {command}` does not use it",
                        path.display()
                    );
                }
            }
            Ok((args, sweep.unwrap_or_default(), check.unwrap_or_default()))
        }
        None => Ok(Default::default()),
    }
}

/// The `--config` file overlaid by the flags, with the file's `[sweep]` and `[check]` tables.
fn gather(
    output: &OutputFlags,
    flags: &ConfigArgs,
    command: &str,
) -> anyhow::Result<(ConfigArgs, SweepArgs, CheckArgs)> {
    let (base, sweep, check) = load(&output.config, command)?;
    let merged = base.overlaid_by(flags);
    if let Some(input) = &output.config {
        refuse_writing_over("config", input, &merged)?;
    }
    if output.figures && merged.out.is_none() {
        Err(Error::invalid(
            "figures",
            "given",
            "needs --out DIR (figures go into DIR/figures)",
        ))?;
    }
    if merged.save_states == Some(true) && merged.out.is_none() {
        Err(Error::invalid(
            "save_states",
            "true",
            "needs --out DIR (the states go into DIR/states.npz)",
        ))?;
    }
    Ok((merged, sweep, check))
}

/// Refuse outputs that would replace an input file (the `--config` file as OUT/config.toml,
/// or as --save-problem), even with --force.
fn refuse_writing_over(field: &str, input: &Path, args: &ConfigArgs) -> anyhow::Result<()> {
    use crate::output::same_file;
    let in_out = args
        .out
        .as_ref()
        .is_some_and(|dir| crate::experiments::is_output_in(input, dir));
    let as_problem = args
        .save_problem
        .as_ref()
        .is_some_and(|p| same_file(p, input));
    if in_out || as_problem {
        Err(Error::invalid(
            field,
            input.display(),
            "is an input of this run and would be written over by its outputs: choose another \
             --out or --save-problem",
        ))?;
    }
    Ok(())
}

/// Ok(false): the command ran, and a prediction it checked failed.
fn dispatch(cli: Cli) -> anyhow::Result<bool> {
    match cli.command {
        Command::Run {
            output,
            config,
            shard,
        } => {
            let (args, _, _) = gather(&output, &config, "run")?;
            let shard = match &shard {
                Some(spec) => {
                    let (shard, _) = Shard::resolve(spec, &|key| std::env::var(key).ok())?;
                    crate::experiments::ensemble::check_shard(&args.resolve()?, shard, spec)?;
                    if output.figures {
                        Err(Error::invalid(
                            "figures",
                            true,
                            "a part of an ensemble has no statistics to draw: draw the merged \
                             run's (`gdflow merge PARTS… --out DIR --figures`)",
                        ))?;
                    }
                    Some(shard)
                }
                None => None,
            };
            let setup = Setup::new(&args, Cmd::Run, output.force)?;
            let extras = RunExtras {
                progress: !output.quiet,
                shard,
                ..RunExtras::default()
            };
            let result = crate::experiments::run(&setup, &extras)?;
            warn(&result.summary.warnings);
            say!("{}", format_summary(&result.summary));
            if let Some(dir) = &setup.config.out {
                crate::results::run::write_run(&result, dir)?;
                sayln!(
                    "wrote {}/{{summary.json,trajectory.csv,config.toml{}{}}}",
                    dir.display(),
                    if result.states.is_empty() {
                        ""
                    } else {
                        ",states.npz"
                    },
                    if !result.ensemble.is_empty() {
                        ",ensemble.csv"
                    } else if !result.ensemble_blocks.is_empty() {
                        ",ensemble_blocks.csv"
                    } else {
                        ""
                    }
                );
                if output.figures {
                    let mut figs =
                        crate::plot::figures::run_figures(std::slice::from_ref(&result), None);
                    if setup.config.flow == FlowVariant::Central {
                        // GD, its average, the central flow and the gradient flow in one figure
                        let plain = crate::experiments::run(
                            &setup.with_plain_flow(),
                            &RunExtras::default(),
                        )?;
                        figs.push(crate::plot::figures::central_flow(&result, &plain));
                    }
                    write_figures(&figs, &dir.join("figures"))?;
                }
            }
            Ok(true)
        }
        Command::Sweep {
            output,
            sweep,
            config,
        } => {
            let (args, base_sweep, _) = gather(&output, &config, "sweep")?;
            let setup = Setup::new(&args, Cmd::Sweep, output.force)?;
            let merged_sweep = base_sweep.overlaid_by(&sweep);
            let result = crate::experiments::sweep(&setup, &merged_sweep, !output.quiet)?;
            warn(&result.summary.warnings);
            say!("{}", format_sweep(&result.summary));
            if let Some(dir) = &setup.config.out {
                crate::results::sweep::write_sweep(&result, dir)?;
                sayln!(
                    "wrote {}/{{summary.json,sweep.csv,deviation.csv,config.toml{}}}",
                    dir.display(),
                    if result.summary.weak.is_some() {
                        ",weak_error.csv"
                    } else {
                        ""
                    }
                );
                if output.figures {
                    let figs = crate::plot::figures::sweep_figures(&result);
                    write_figures(&figs, &dir.join("figures"))?;
                }
            }
            Ok(true)
        }
        Command::Check {
            output,
            check,
            config,
        } => {
            let (args, _, base_check) = gather(&output, &config, "check")?;
            let merged_check = base_check.overlaid_by(&check);
            // Bad constants are refused before the problem is built.
            crate::results::check::CheckSettings::resolve(&merged_check)?;
            let setup = Setup::new(&args, Cmd::Check, output.force)?;
            let result = crate::experiments::check(&setup, &merged_check, !output.quiet)?;
            warn(&result.run.summary.warnings);
            say!("{}", format_checks(&result.summary));
            if let Some(dir) = &setup.config.out {
                crate::results::check::write_check(&result, dir)?;
                sayln!(
                    "wrote {}/{{summary.json,checks.csv,trajectory.csv,config.toml}}",
                    dir.display()
                );
                if output.figures {
                    let mut figs =
                        crate::plot::figures::run_figures(std::slice::from_ref(&result.run), None);
                    figs.push(crate::plot::figures::phases(
                        &result.run,
                        &result.summary.phases,
                    ));
                    write_figures(&figs, &dir.join("figures"))?;
                }
            }
            Ok(result.summary.passed)
        }
        Command::Merge {
            parts,
            out,
            force,
            figures,
        } => {
            if let Some(part) = parts.iter().find(|p| crate::output::same_file(p, &out)) {
                Err(Error::invalid(
                    "out",
                    out.display(),
                    format!(
                        "is the part {}, an input of the merge: choose another",
                        part.display()
                    ),
                ))?;
            }
            crate::output::check_out_dir(&out, force)?;
            let first_kind = parts
                .first()
                .and_then(|p| std::fs::read(p.join("summary.json")).ok())
                .and_then(|b| crate::results::summary_kind(&b));
            if first_kind == Some("run") {
                let mut merged = crate::experiments::merge_runs(&parts)?;
                merged.summary.provenance.config.out = Some(out.clone());
                let _lock = crate::output::OutLock::take(&out)?;
                warn(&merged.summary.warnings);
                say!("{}", format_summary(&merged.summary));
                crate::results::run::write_merged_run(
                    &merged.summary,
                    &merged.ensemble,
                    &merged.copied,
                    &out,
                )?;
                let copied: Vec<&str> = merged.copied.iter().map(|(n, _)| *n).collect();
                sayln!(
                    "merged {} parts of the ensemble into {}/{{summary.json,config.toml,\
                     ensemble.csv,{}}}",
                    parts.len(),
                    out.display(),
                    copied.join(",")
                );
                if figures {
                    let result = crate::results::run::load_run(&out)?;
                    let figs =
                        crate::plot::figures::run_figures(std::slice::from_ref(&result), None);
                    write_figures(&figs, &out.join("figures"))?;
                }
                return Ok(true);
            }
            let result = crate::experiments::merge(&parts)?;
            let _lock = crate::output::OutLock::take(&out)?;
            warn(&result.summary.warnings);
            say!("{}", format_sweep(&result.summary));
            crate::results::sweep::write_sweep(&result, &out)?;
            sayln!(
                "merged {} parts into {}/{{summary.json,sweep.csv,deviation.csv,config.toml{}}}",
                parts.len(),
                out.display(),
                if result.summary.weak.is_some() {
                    ",weak_error.csv"
                } else {
                    ""
                }
            );
            if figures {
                let figs = crate::plot::figures::sweep_figures(&result);
                write_figures(&figs, &out.join("figures"))?;
            }
            Ok(true)
        }
        Command::Plot {
            results,
            out,
            force,
            top_singular_values,
        } => {
            for (i, r) in results.iter().enumerate() {
                if results[..i].iter().any(|q| crate::output::same_file(q, r)) {
                    Err(Error::invalid(
                        "results",
                        r.display(),
                        "is given twice: give each directory once",
                    ))?;
                }
            }
            let sets = crate::plot::figures::figure_sets(
                &results,
                top_singular_values.map(|n| n as usize),
            )?;
            let dir = out.unwrap_or_else(|| results[0].join("figures"));
            crate::output::check_out_dir(&dir, force)?;
            let _lock = crate::output::OutLock::take(&dir)?;
            for set in &sets {
                let target = set.subdir.as_ref().map_or(dir.clone(), |s| dir.join(s));
                sayln!("from {}:", set.from);
                write_figures(&set.figures, &target)?;
                for c in &set.cannot {
                    sayln!("  not drawn: {c}");
                }
            }
            Ok(true)
        }
    }
}
