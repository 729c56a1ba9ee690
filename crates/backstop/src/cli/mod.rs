//! The commands for people: list backups, back up now, restore the latest backup of a volume,
//! show a policy's next runs and what retention would delete. They act with the user's
//! kubeconfig and RBAC (get/list/create on Backstop's resources in the namespace), nothing more,
//! and follow kubectl's habits: `-n`, `--context`, `-o yaml|json`. Installed as
//! `kubectl-backstop` on the PATH, the same binary is a kubectl plugin (`kubectl backstop ...`).

mod backups;
#[cfg(test)]
mod fixtures;
pub mod format;
mod policy;
mod restore;
mod wait;

use anyhow::Context as _;
use kube::config::KubeConfigOptions;

pub use backups::BackupCommand;
pub use policy::PolicyCommand;
pub use restore::RestoreArgs;

/// Where a command acts: the cluster and namespace, as kubectl chooses them.
#[derive(clap::Args, Debug, Clone)]
pub struct Target {
    /// Namespace (default: the kubeconfig context's namespace, else "default").
    #[arg(short = 'n', long, global = true)]
    namespace: Option<String>,
    /// The kubeconfig context to use (default: the current context).
    #[arg(long, global = true)]
    context: Option<String>,
}

/// How a result is printed.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Output {
    /// A table (or a few lines) for people.
    #[default]
    Table,
    Yaml,
    Json,
}

/// A client for the chosen context and the namespace to act in.
pub async fn connect(target: &Target) -> anyhow::Result<(kube::Client, String)> {
    let config = match &target.context {
        Some(context) => {
            let options = KubeConfigOptions {
                context: Some(context.clone()),
                ..KubeConfigOptions::default()
            };
            kube::Config::from_kubeconfig(&options)
                .await
                .with_context(|| format!("using kubeconfig context {context}"))?
        }
        None => kube::Config::infer()
            .await
            .context("no cluster to talk to: set KUBECONFIG or ~/.kube/config (as for kubectl)")?,
    };
    let namespace = target
        .namespace
        .clone()
        .unwrap_or_else(|| config.default_namespace.clone());
    let client = kube::Client::try_from(config).context("setting up the Kubernetes client")?;
    Ok((client, namespace))
}

/// Runs an async command on a small runtime (the CLI makes a handful of requests).
pub fn run<F: std::future::Future<Output = anyhow::Result<()>>>(future: F) -> anyhow::Result<()> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?
        .block_on(future)
}

/// Prints `value` as JSON for `-o json`, as YAML otherwise (commands print their own tables).
fn print_structured<T: serde::Serialize>(value: &T, output: Output) -> anyhow::Result<()> {
    if output == Output::Json {
        println!("{}", serde_json::to_string_pretty(value)?);
    } else {
        print!("{}", serde_yaml::to_string(value)?);
    }
    Ok(())
}

/// A 404 from the API server, turned into a message that names what is missing.
fn not_found(err: kube::Error, what: &str, namespace: &str) -> anyhow::Error {
    match err {
        kube::Error::Api(status) if status.code == 404 => {
            anyhow::anyhow!("{what} not found in namespace {namespace}")
        }
        err => anyhow::Error::new(err).context(format!("reading {what} in namespace {namespace}")),
    }
}
