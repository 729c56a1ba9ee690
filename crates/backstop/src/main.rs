//! The one Backstop binary: the controller, the mover run inside Jobs, the commands that print
//! the install manifests, and the commands for people (backups, restores, policies).

mod cli;
mod controller;
mod manifests;
mod mover;
mod sync;

use clap::{Parser, Subcommand};
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
    /// Run the operator (reconcilers, leader election, /healthz, /readyz, /metrics).
    Controller(controller::Args),
    /// Data-path commands, run inside mover pods.
    #[command(subcommand)]
    Mover(mover::Command),
    /// Print the CustomResourceDefinitions as YAML.
    Crds,
    /// Print a namespaced install (operator acting only in the given namespaces, with Roles
    /// there) as YAML, without the CRDs.
    Install(manifests::InstallArgs),
    /// List backups; back up now from a policy.
    #[command(subcommand)]
    Backup(cli::BackupCommand),
    /// Restore a volume from its latest (or a named) backup into a PVC, and wait for it.
    Restore(cli::RestoreArgs),
    /// Show a policy's next runs and what its retention would delete.
    #[command(subcommand)]
    Policy(cli::PolicyCommand),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Controller(args) => controller::main(args),
        Command::Mover(cmd) => mover::main(cmd),
        Command::Crds => manifests::print_crds(),
        Command::Install(args) => manifests::print_install(args),
        Command::Backup(cmd) => cli::run(cmd.run()),
        Command::Restore(args) => cli::run(args.run()),
        Command::Policy(cmd) => cli::run(cmd.run()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            // Errors carry statuses and records: no terminal escapes from them.
            eprintln!("backstop: {}", cli::format::printable(&format!("{err:#}")));
            // In a pod, say why in the termination message too (pod logs may be out of reach),
            // unless the command already reported there (the mover's JSON result).
            let log = std::path::Path::new(backstop_api::contract::TERMINATION_LOG);
            if std::fs::metadata(log).is_ok_and(|m| m.len() == 0) {
                let message = backstop_api::condition::truncate(format!("backstop: {err:#}"), 4000);
                let _ = std::fs::write(log, message);
            }
            ExitCode::FAILURE
        }
    }
}
