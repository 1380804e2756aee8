use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use gdflow::config::ConfigArgs;
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
  gdflow run --config results/config.toml      # re-run a recorded configuration
  gdflow run --problem mine.npz --out results/ # arrays x_star, sensing[, y, u0, v0]
  gdflow run --save-problem problem.npz        # write the generated problem for NumPy";

#[derive(Subcommand)]
enum Command {
    /// Run GD and the gradient flow on one problem and compare them at t = jη.
    #[command(after_help = RUN_EXAMPLES, allow_negative_numbers = true)]
    Run {
        /// TOML file with any of the options below (snake_case keys); flags win over it
        #[arg(long, value_name = "FILE.toml")]
        config: Option<PathBuf>,
        #[command(flatten)]
        args: ConfigArgs,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
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

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Run { config, args } => {
            let base = match &config {
                Some(path) => {
                    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
                    ConfigArgs::from_toml(&text)?
                }
                None => ConfigArgs::default(),
            };
            let merged = base.overlaid_by(&args);
            let result = gdflow::experiment::run(&merged)?;
            print!("{}", gdflow::experiment::format_summary(&result.summary));
            if let Some(dir) = &result.summary.config.out {
                gdflow::experiment::write_outputs(&result, dir)?;
                println!(
                    "wrote {}/{{summary.json,trajectory.csv,config.toml}}",
                    dir.display()
                );
            }
            Ok(())
        }
    }
}
