//! The experiments, all entered through one [`Setup`]: [`run()`] (GD and a flow, step by step),
//! [`sweep()`] (GD against the plain and modified flows over step sizes), [`check()`] (the
//! theory's predictions), [`merge()`] (a sharded sweep's parts), [`merge_runs`] (a run's sharded ensemble).

pub mod check;
pub mod ensemble;
pub mod merge;
pub mod progress;
pub mod run;
mod setup;
pub mod sweep;
pub mod target;
pub mod weak;

pub use check::{check, check_with};
pub use merge::{merge, merge_runs, MergedRun};
pub use run::{run, RunExtras};
pub use setup::{is_output_in, Command, Setup, OUTPUT_FILES};
pub use sweep::sweep;

use crate::config::{CheckArgs, ConfigArgs, SweepArgs};
use crate::error::Result;
use crate::results::check::CheckResult;
use crate::results::run::RunResult;
use crate::results::sweep::SweepResult;

/// `gdflow run` from a partial configuration, without progress bars: [`Setup::new`], then
/// [`run()`].
pub fn run_config(args: &ConfigArgs) -> Result<RunResult> {
    run(
        &Setup::new(args, Command::Run, false)?,
        &RunExtras::default(),
    )
}

/// `gdflow sweep` from a partial configuration, without progress bars.
pub fn sweep_config(args: &ConfigArgs, sweep_args: &SweepArgs) -> Result<SweepResult> {
    sweep(&Setup::new(args, Command::Sweep, false)?, sweep_args, false)
}

/// `gdflow check` from a partial configuration, without progress bars.
pub fn check_config(args: &ConfigArgs, check_args: &CheckArgs) -> Result<CheckResult> {
    check(&Setup::new(args, Command::Check, false)?, check_args, false)
}
