//! Harness for Backstop's end-to-end tests: a real cluster reached through `KUBECONFIG`, one fresh
//! namespace per test, hostPath volumes whose data the test reads and writes on the host, and Jobs
//! whose results come back through termination messages.
//!
//! The tests are `#[ignore]`d in a plain `cargo test` (they need a cluster); the README's test
//! command brings the local cluster up and runs them with `--ignored`. Asked to run without a
//! reachable cluster, they fail with a message that says how to get one.

use anyhow::{Context, bail};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Namespace, PersistentVolumeClaim, Pod};
use kube::Client;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

pub const STORAGE_CLASS: &str = "backstop-hostpath";

/// The image `hack/image` builds and imports into the cluster.
pub fn backstop_image() -> String {
    std::env::var("BACKSTOP_IMAGE").unwrap_or_else(|_| "backstop:dev".to_string())
}

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A client for the cluster in `KUBECONFIG`, checked to answer.
pub async fn cluster() -> anyhow::Result<Client> {
    let help = "the e2e tests need a running cluster: run `make test` (which brings one up), or \
                `hack/cluster up` and `KUBECONFIG=$(hack/cluster kubeconfig)`";
    if std::env::var_os("KUBECONFIG").is_none() {
        bail!("KUBECONFIG is not set; {help}");
    }
    let client = Client::try_default()
        .await
        .with_context(|| format!("cannot load KUBECONFIG; {help}"))?;
    tokio::time::timeout(Duration::from_secs(10), client.apiserver_version())
        .await
        .map_err(|_| anyhow::anyhow!("the API server did not answer in 10s; {help}"))?
        .with_context(|| format!("the API server is not reachable; {help}"))?;
    Ok(client)
}

/// A namespace that lives as long as one test; deleted (without waiting) when dropped.
pub struct TestNamespace {
    pub name: String,
    pub client: Client,
}

impl TestNamespace {
    pub async fn create(client: &Client, prefix: &str) -> anyhow::Result<Self> {
        let name = format!("{prefix}-{}", unique_suffix());
        let ns: Namespace = serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "labels": {"backstop.dev/e2e": "true"}}
        }))?;
        Api::<Namespace>::all(client.clone())
            .create(&PostParams::default(), &ns)
            .await
            .with_context(|| format!("creating namespace {name}"))?;
        // Pods are only admitted once the ServiceAccount controller made the default account.
        let accounts: Api<k8s_openapi::api::core::v1::ServiceAccount> =
            Api::namespaced(client.clone(), &name);
        wait_until(
            Duration::from_secs(30),
            "the default ServiceAccount",
            || async { Ok(accounts.get_opt("default").await?.is_some()) },
        )
        .await?;
        Ok(Self {
            name,
            client: client.clone(),
        })
    }

    pub fn api<K>(&self) -> Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>,
        <K as kube::Resource>::DynamicType: Default,
    {
        Api::namespaced(self.client.clone(), &self.name)
    }

    /// A PVC bound to a fresh hostPath volume; returns the host directory that holds its data.
    pub async fn volume(&self, claim: &str, labels: &[(&str, &str)]) -> anyhow::Result<PathBuf> {
        let pv_name = format!("{}-{claim}", self.name);
        let dir = host_volume(&pv_name, "1Gi")?;
        let pvc: PersistentVolumeClaim = serde_json::from_value(serde_json::json!({
            "metadata": {"name": claim, "labels": labels.iter().cloned().collect::<std::collections::BTreeMap<_, _>>()},
            "spec": {
                "accessModes": ["ReadWriteOnce"],
                "storageClassName": STORAGE_CLASS,
                "volumeName": pv_name,
                "resources": {"requests": {"storage": "1Gi"}}
            }
        }))?;
        let claims: Api<PersistentVolumeClaim> = self.api();
        claims.create(&PostParams::default(), &pvc).await?;
        wait_until(
            Duration::from_secs(60),
            &format!("PVC {claim} to bind"),
            || async {
                let pvc = claims.get(claim).await?;
                Ok(pvc.status.and_then(|s| s.phase).as_deref() == Some("Bound"))
            },
        )
        .await?;
        Ok(dir)
    }
}

impl Drop for TestNamespace {
    fn drop(&mut self) {
        if std::env::var_os("BACKSTOP_E2E_KEEP").is_some() {
            eprintln!("keeping namespace {} (BACKSTOP_E2E_KEEP)", self.name);
            return;
        }
        let _ = Command::new("kubectl")
            .args(["delete", "namespace", &self.name, "--wait=false"])
            .output();
    }
}

/// A hostPath PersistentVolume made by `hack/cluster volume`; returns its host directory.
pub fn host_volume(name: &str, size: &str) -> anyhow::Result<PathBuf> {
    let out = Command::new(repo_root().join("hack/cluster"))
        .args(["volume", name, size])
        .output()
        .context("running hack/cluster volume")?;
    if !out.status.success() {
        bail!(
            "hack/cluster volume {name} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(PathBuf::from(String::from_utf8(out.stdout)?.trim()))
}

/// Polls `check` until it returns true, failing after `timeout` with what was awaited.
pub async fn wait_until<F, Fut>(timeout: Duration, what: &str, mut check: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<bool>>,
{
    let start = Instant::now();
    loop {
        if check().await? {
            return Ok(());
        }
        if start.elapsed() > timeout {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Waits for a Job to finish and returns its pod's termination message. Fails if the Job failed,
/// saying what the pod reported.
pub async fn job_result(
    ns: &TestNamespace,
    job: &str,
    timeout: Duration,
) -> anyhow::Result<String> {
    let jobs: Api<Job> = ns.api();
    let pods: Api<Pod> = ns.api();
    let start = Instant::now();
    let succeeded = loop {
        let status = jobs.get(job).await?.status.unwrap_or_default();
        if status.succeeded.unwrap_or(0) > 0 {
            break true;
        }
        if status.failed.unwrap_or(0) > 0 {
            break false;
        }
        if start.elapsed() > timeout {
            bail!("timed out after {timeout:?} waiting for Job {job} to finish");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let list = pods
        .list(&ListParams::default().labels(&format!("job-name={job}")))
        .await?;
    let terminated = list
        .items
        .iter()
        .filter_map(|p| p.status.as_ref()?.container_statuses.as_ref()?.first())
        .filter_map(|c| c.state.as_ref()?.terminated.as_ref())
        .next_back()
        .with_context(|| {
            format!("Job {job} finished but none of its pods has a terminated container")
        })?;
    let message = terminated.message.clone().unwrap_or_default();
    if !succeeded {
        bail!(
            "Job {job} failed (exit {}, {}): {message}",
            terminated.exit_code,
            terminated.reason.clone().unwrap_or_default()
        );
    }
    Ok(message)
}

pub async fn delete_job(ns: &TestNamespace, job: &str) -> anyhow::Result<()> {
    let jobs: Api<Job> = ns.api();
    jobs.delete(job, &DeleteParams::background()).await?;
    Ok(())
}

fn unique_suffix() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("{:x}{:x}", std::process::id() % 4096, nanos % 0xffff_ffff)
}
