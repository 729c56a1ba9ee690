//! The one Backstop binary: the controller, the mover run inside Jobs, and the install helpers.

use anyhow::Context;
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "backstop",
    version,
    about = "Kubernetes-native backup and restore for PersistentVolumeClaims"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Data-path commands, run inside mover pods.
    #[command(subcommand)]
    Mover(MoverCommand),
}

#[derive(Subcommand)]
enum MoverCommand {
    /// Count the files, directories, symlinks and bytes below a directory (never following links).
    Count {
        /// The directory to count, e.g. a mounted volume.
        path: PathBuf,
        /// Also write the result as JSON to this file (a container's termination message path).
        #[arg(long, value_name = "FILE")]
        termination_log: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("backstop: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Mover(MoverCommand::Count {
            path,
            termination_log,
        }) => {
            let inventory = backstop_mover::inventory::take(&path)?;
            println!("{}", serde_json::to_string(&inventory)?);
            if let Some(log) = termination_log {
                backstop_mover::report::write_termination_message(&log, &inventory)
                    .with_context(|| format!("writing the result to {}", log.display()))?;
            }
            Ok(())
        }
    }
}
