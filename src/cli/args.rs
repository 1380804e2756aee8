//! What the command line adds to the configuration's own flags ([`crate::config::ConfigArgs`],
//! [`crate::config::SweepArgs`], [`crate::config::CheckArgs`] derive theirs): how the library's
//! choice enums show as clap values, and the flags of the command itself.

use std::path::PathBuf;

use clap::builder::PossibleValue;
use clap::{Args, ValueEnum};

use crate::config::{
    ErrorScale, FlowVariant, Method, OperatorKind, PerturbationModel, Precision, Profile, Vary,
};

/// The library's choice enums as clap value enums: their names and descriptions are theirs.
macro_rules! value_enum {
    ($t:ty, $all:expr) => {
        impl ValueEnum for $t {
            fn value_variants<'a>() -> &'a [Self] {
                &$all
            }
            fn to_possible_value(&self) -> Option<PossibleValue> {
                Some(PossibleValue::new(self.name()).help(self.description()))
            }
        }
    };
}

value_enum!(OperatorKind, OperatorKind::CHOICES);
value_enum!(Profile, Profile::ALL);
value_enum!(Precision, Precision::ALL);
value_enum!(Method, Method::ALL);
value_enum!(ErrorScale, ErrorScale::ALL);
value_enum!(FlowVariant, FlowVariant::ALL);
value_enum!(PerturbationModel, PerturbationModel::ALL);
value_enum!(Vary, Vary::ALL);

/// Where results go and how the command behaves.
#[derive(Debug, Clone, Default, Args)]
pub struct OutputFlags {
    /// Also draw the figures into OUT/figures (needs --out)
    #[arg(long)]
    pub figures: bool,
    /// TOML file with any of the options (snake_case keys); flags win over it
    #[arg(long, value_name = "FILE.toml")]
    pub config: Option<PathBuf>,
    /// No progress bars (they are never drawn when stderr is not a terminal)
    #[arg(long)]
    pub quiet: bool,
    /// Write into an --out directory that already holds files (the files gdflow writes are
    /// replaced; nothing else is touched)
    #[arg(long)]
    pub force: bool,
}
