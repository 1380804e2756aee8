use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use gdflow::config::{parse_config_file_all, CheckArgs, ConfigArgs, SweepArgs};
use gdflow::error::Error;

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
  gdflow run --config results/config.toml      # re-run a recorded configuration
  gdflow run --problem mine.npz --out results/ # arrays x_star, sensing[, y, u0, v0]
  gdflow run --save-problem problem.npz        # write the generated problem for NumPy";

const SWEEP_EXAMPLES: &str = "\
Examples:
  gdflow sweep                                 # default problem, 6 step sizes below 1/σ_1
  gdflow sweep --etas 0.2,0.1,0.05,0.025 --horizon 20 --out sweep/
  gdflow sweep --eta-range 0.005:0.16:6 --alpha 1e-2 --kappa 4
  gdflow sweep --problem mine.npz --eta-range 0.01:0.1:4 --out sweep/
  gdflow sweep --config sweep/config.toml      # re-run a recorded sweep
  RAYON_NUM_THREADS=1 gdflow sweep ...         # same outputs with any thread count

Outputs under --out: summary.json (order_plain, order_modified, stability_limit,
two_over_lambda_max, fits, per-η results, provenance), sweep.csv (one row per η),
deviation.csv (one row per η and time), config.toml.";

#[derive(Subcommand)]
enum Command {
    /// Run GD and the gradient flow on one problem and compare them at t = jη.
    #[command(after_help = RUN_EXAMPLES, allow_negative_numbers = true)]
    Run {
        /// Also draw the figures into OUT/figures (needs --out)
        #[arg(long)]
        figures: bool,
        /// TOML file with any of the options below (snake_case keys); flags win over it
        #[arg(long, value_name = "FILE.toml")]
        config: Option<PathBuf>,
        #[command(flatten)]
        common: Common,
        #[command(flatten)]
        args: ConfigArgs,
    },
    /// Compare GD with the plain and the modified gradient flow over a range of step sizes:
    /// deviations, observed orders, stability limit against 2/λ_max.
    #[command(after_help = SWEEP_EXAMPLES, allow_negative_numbers = true)]
    Sweep {
        /// Also draw the figures into OUT/figures (needs --out)
        #[arg(long)]
        figures: bool,
        /// TOML file with problem keys and an optional [sweep] table; flags win over it
        #[arg(long, value_name = "FILE.toml")]
        config: Option<PathBuf>,
        #[command(flatten)]
        common: Common,
        #[command(flatten)]
        sweep: SweepArgs,
        #[command(flatten)]
        args: ConfigArgs,
    },
    /// Test the theory's predictions on a problem: a table of predicted against measured, with
    /// pass/fail; exits 3 when a prediction fails, so it can gate a pipeline.
    #[command(after_help = CHECK_EXAMPLES, allow_negative_numbers = true)]
    Check {
        /// Also draw the figures, phases included, into OUT/figures (needs --out)
        #[arg(long)]
        figures: bool,
        /// TOML file with problem keys and an optional [check] table; flags win over it
        #[arg(long, value_name = "FILE.toml")]
        config: Option<PathBuf>,
        #[command(flatten)]
        common: Common,
        #[command(flatten)]
        check: CheckArgs,
        #[command(flatten)]
        args: ConfigArgs,
    },
    /// Combine the output directories of `gdflow sweep --shard 1/N … N/N` into the outputs of
    /// the unsharded sweep (byte-identical CSVs).
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
        /// Also draw the sweep's figures into OUT/figures
        #[arg(long)]
        figures: bool,
    },
    /// Draw figures (PNG, SVG and the plotted data as CSV) from saved results of `run` or
    /// `sweep`.
    #[command(after_help = PLOT_EXAMPLES)]
    Plot {
        /// Output directories of `gdflow run` (one or more) or of one `gdflow sweep`
        #[arg(required = true, value_name = "DIR")]
        results: Vec<PathBuf>,
        /// Where the figures go [default: DIR/figures of the first DIR]
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
        /// Write into an --out directory that already holds files
        #[arg(long)]
        force: bool,
    },
}

fn write_figures(figures: &[gdflow::plot::Figure], dir: &std::path::Path) -> anyhow::Result<()> {
    for fig in figures {
        gdflow::plot::write_figure(fig, dir)?;
    }
    println!(
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

fn needs_out(figures: bool, out: &Option<PathBuf>) -> anyhow::Result<()> {
    if figures && out.is_none() {
        Err(Error::invalid(
            "figures",
            "given",
            "needs --out DIR (figures go into DIR/figures)",
        ))?;
    }
    Ok(())
}

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
  #   parallel gdflow sweep ... --shard {}/8 --out part{}/ ::: $(seq 8)";

const PLOT_EXAMPLES: &str = "\
Examples:
  gdflow plot results/                         # figures of one run into results/figures/
  gdflow plot eta0.1/ eta0.05/ eta0.025/ --out figs/   # several runs: GD for each η
  gdflow plot sweep/                           # a sweep: loss/error, drift, deviation vs η
  gdflow run --out results/ --figures          # the same, straight after the run

Each figure is written as NAME.png, NAME.svg and NAME.csv (exactly the plotted points).";

/// Options every command takes.
#[derive(clap::Args)]
struct Common {
    /// No progress bars (they are never drawn when stderr is not a terminal)
    #[arg(long)]
    quiet: bool,
    /// Write into an --out directory that already holds files (the files gdflow writes are
    /// replaced; nothing else is touched)
    #[arg(long)]
    force: bool,
}

impl Common {
    /// Refuse an unusable --out before any work is done.
    fn check_out(&self, args: &ConfigArgs) -> anyhow::Result<()> {
        if let Some(dir) = &args.out {
            gdflow::output::check_out_dir(dir, self.force)?;
        }
        if let Some(path) = &args.save_problem {
            gdflow::output::check_file_target("save_problem", path)?;
        }
        Ok(())
    }
}

fn warn(warnings: &[String]) {
    for w in warnings {
        eprintln!("warning: {w}");
    }
}

fn load(config: &Option<PathBuf>) -> anyhow::Result<(ConfigArgs, SweepArgs)> {
    load_all(config).map(|(a, s, _)| (a, s))
}

fn load_all(config: &Option<PathBuf>) -> anyhow::Result<(ConfigArgs, SweepArgs, CheckArgs)> {
    match config {
        Some(path) => {
            let text = std::fs::read_to_string(path).map_err(|e| {
                Error::invalid("config", path.display(), format!("cannot be read: {e}"))
            })?;
            let (args, sweep, check) = parse_config_file_all(&text)?;
            Ok((args, sweep.unwrap_or_default(), check.unwrap_or_default()))
        }
        None => Ok(Default::default()),
    }
}

/// Exit status of `gdflow check` when a prediction failed.
const CHECK_FAILED: u8 = 3;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(CHECK_FAILED),
        Err(e) => {
            eprintln!("error: {e:#}");
            let usage = matches!(
                e.downcast_ref::<Error>(),
                Some(
                    Error::InvalidConfig { .. }
                        | Error::Npz { .. }
                        | Error::TooLargeForImplicit { .. }
                )
            );
            ExitCode::from(if usage { 2 } else { 1 })
        }
    }
}

/// Ok(false): the command ran, and a prediction it checked failed.
fn run(cli: Cli) -> anyhow::Result<bool> {
    match cli.command {
        Command::Run {
            figures,
            config,
            common,
            args,
        } => {
            let (base, _) = load(&config)?;
            let merged = base.overlaid_by(&args);
            merged.resolve()?;
            needs_out(figures, &merged.out)?;
            common.check_out(&merged)?;
            let result = gdflow::experiment::run_with_progress(&merged, !common.quiet)?;
            warn(&result.summary.warnings);
            print!("{}", gdflow::experiment::format_summary(&result.summary));
            if let Some(dir) = &result.summary.config.out {
                gdflow::experiment::write_outputs(&result, dir)?;
                println!(
                    "wrote {}/{{summary.json,trajectory.csv,config.toml}}",
                    dir.display()
                );
                if figures {
                    let figs = gdflow::plot::figures::run_figures(std::slice::from_ref(&result));
                    write_figures(&figs, &dir.join("figures"))?;
                }
            }
            Ok(true)
        }
        Command::Sweep {
            figures,
            config,
            common,
            sweep,
            args,
        } => {
            let (base, base_sweep) = load(&config)?;
            let merged = base.overlaid_by(&args);
            let merged_sweep = base_sweep.overlaid_by(&sweep);
            gdflow::sweep::reject_run_only(&merged)?;
            merged.resolve()?;
            needs_out(figures, &merged.out)?;
            common.check_out(&merged)?;
            let result = gdflow::sweep::sweep(&merged, &merged_sweep, !common.quiet)?;
            warn(&result.summary.warnings);
            print!("{}", gdflow::sweep::format_sweep(&result.summary));
            if let Some(dir) = &merged.out {
                gdflow::sweep::write_sweep_outputs(&result, dir)?;
                println!(
                    "wrote {}/{{summary.json,sweep.csv,deviation.csv,config.toml}}",
                    dir.display()
                );
                if figures {
                    let figs = gdflow::plot::figures::sweep_figures(&result);
                    write_figures(&figs, &dir.join("figures"))?;
                }
            }
            Ok(true)
        }
        Command::Check {
            figures,
            config,
            common,
            check,
            args,
        } => {
            let (base, _, base_check) = load_all(&config)?;
            let merged = base.overlaid_by(&args);
            let merged_check = base_check.overlaid_by(&check);
            merged.resolve()?;
            gdflow::check::CheckSettings::resolve(&merged_check)?;
            needs_out(figures, &merged.out)?;
            common.check_out(&merged)?;
            let result = gdflow::check::check_with_progress(
                &merged,
                &merged_check,
                gdflow::check::library_gd_step,
                !common.quiet,
            )?;
            warn(&result.run.summary.warnings);
            print!("{}", gdflow::check::format_checks(&result.summary));
            if let Some(dir) = &merged.out {
                gdflow::check::write_check_outputs(&result, dir)?;
                println!(
                    "wrote {}/{{summary.json,checks.csv,trajectory.csv,config.toml}}",
                    dir.display()
                );
                if figures {
                    let mut figs =
                        gdflow::plot::figures::run_figures(std::slice::from_ref(&result.run));
                    figs.push(gdflow::plot::figures::phases(
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
            gdflow::output::check_out_dir(&out, force)?;
            let result = gdflow::sweep::merge(&parts)?;
            print!("{}", gdflow::sweep::format_sweep(&result.summary));
            gdflow::sweep::write_sweep_outputs(&result, &out)?;
            println!(
                "merged {} parts into {}/{{summary.json,sweep.csv,deviation.csv,config.toml}}",
                parts.len(),
                out.display()
            );
            if figures {
                let figs = gdflow::plot::figures::sweep_figures(&result);
                write_figures(&figs, &out.join("figures"))?;
            }
            Ok(true)
        }
        Command::Plot {
            results,
            out,
            force,
        } => {
            let dir = out.unwrap_or_else(|| results[0].join("figures"));
            gdflow::output::check_out_dir(&dir, force)?;
            let figs = if results[0].join("sweep.csv").exists() {
                if results.len() > 1 {
                    Err(Error::invalid(
                        "results",
                        results[1].display(),
                        "plot takes one sweep directory, or one or more run directories",
                    ))?;
                }
                gdflow::plot::figures::sweep_figures(&gdflow::plot::figures::load_sweep(
                    &results[0],
                )?)
            } else {
                let runs = results
                    .iter()
                    .map(|d| gdflow::plot::figures::load_run(d))
                    .collect::<Result<Vec<_>, _>>()?;
                gdflow::plot::figures::run_figures(&runs)
            };
            write_figures(&figs, &dir)?;
            Ok(true)
        }
    }
}
