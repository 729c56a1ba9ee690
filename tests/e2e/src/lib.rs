//! Harness for Backstop's end-to-end tests: a real cluster reached through `KUBECONFIG`, one fresh
//! namespace per test, hostPath volumes whose data the test reads and writes on the host, and Jobs
//! whose results come back through termination messages.
//!
//! The tests are `#[ignore]`d in a plain `cargo test` (they need a cluster); the README's test
//! command brings the local cluster up and runs them with `--ignored`. Asked to run without a
//! reachable cluster, they fail with a message that says how to get one.

pub mod jobs_seen;
pub mod ports;
pub mod prometheus;
pub mod s3;
pub mod snapshots;

use anyhow::{Context, bail};
use backstop_api::condition::ConditionType;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Namespace, PersistentVolumeClaim, Pod};
use kube::Client;
use kube::api::{Api, ListParams, PostParams};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

pub const STORAGE_CLASS: &str = "backstop-hostpath";
/// The label saying what a Job Backstop made does.
pub const ROLE: &str = "backstop.dev/role";

/// The Jobs in the namespace doing work (a repository's sync Jobs, its own every few minutes, are
/// left out).
pub async fn work_jobs(ns: &TestNamespace) -> anyhow::Result<Vec<String>> {
    Ok(ns
        .api::<k8s_openapi::api::batch::v1::Job>()
        .list(&ListParams::default().labels(&format!("{ROLE}!=sync")))
        .await?
        .items
        .into_iter()
        .filter_map(|j| j.metadata.name)
        .collect())
}

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
        Self::create_named(client, &format!("{prefix}-{}", unique_suffix())).await
    }

    /// The namespace `name` exactly (e.g. one a lost cluster had).
    pub async fn create_named(client: &Client, name: &str) -> anyhow::Result<Self> {
        let name = name.to_string();
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

    /// What the namespace holds, for a failure message: Backstop's objects, Jobs, pods and PVCs
    /// with their states, and the events (or why they could not be read).
    pub fn snapshot(&self) -> String {
        let n = &self.name;
        let kinds = "backuppolicies,backups,restores,backuprepositories,jobs,pods,pvc";
        let mut out = format!("== namespace {n} ==\n");
        for args in [
            &["get", kinds, "-n", n, "-o", "wide"][..],
            &["get", "events", "-n", n, "--sort-by=.lastTimestamp"],
        ] {
            match kubectl(args) {
                Ok(text) => out.push_str(&text),
                Err(e) => out.push_str(&format!("kubectl {}: {e:#}\n", args.join(" "))),
            }
        }
        for kind in ["backups", "restores"] {
            let columns = "custom-columns=NAME:.metadata.name,STATUS:.status";
            if let Ok(text) = kubectl(&["get", kind, "-n", n, "-o", columns]) {
                out.push_str(&text);
            }
        }
        out
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
        self.claim_of(claim, &pv_name, STORAGE_CLASS, labels)
            .await?;
        Ok(dir)
    }

    /// A 1Gi PVC `claim` of `class` on the PersistentVolume `pv_name`, once it is bound.
    pub async fn claim_of(
        &self,
        claim: &str,
        pv_name: &str,
        class: &str,
        labels: &[(&str, &str)],
    ) -> anyhow::Result<()> {
        let pvc: PersistentVolumeClaim = serde_json::from_value(serde_json::json!({
            "metadata": {"name": claim, "labels": labels.iter().cloned().collect::<std::collections::BTreeMap<_, _>>()},
            "spec": {
                "accessModes": ["ReadWriteOnce"],
                "storageClassName": class,
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
        .await
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
    host_volume_of_class(name, size, STORAGE_CLASS)
}

/// Like `host_volume`, in storage class `class` (so only claims of that class can bind it).
pub fn host_volume_of_class(name: &str, size: &str, class: &str) -> anyhow::Result<PathBuf> {
    Ok(PathBuf::from(hack_cluster(&[
        "volume", name, size, "", class,
    ])?))
}

/// What `hack/cluster ARGS` printed (a path), or why it failed.
pub fn hack_cluster(args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new(repo_root().join("hack/cluster"))
        .args(args)
        .output()
        .with_context(|| format!("running hack/cluster {}", args.join(" ")))?;
    if !out.status.success() {
        bail!(
            "hack/cluster {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8(out.stdout)?.trim().to_string())
}

/// Polls `check` until it returns true, failing after `timeout` with what was awaited.
pub async fn wait_until<F, Fut>(timeout: Duration, what: &str, mut check: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<bool>>,
{
    wait_for(timeout, what, || {
        let done = check();
        async move { Ok(done.await?.then_some(())) }
    })
    .await
}

/// Polls `check` until it yields a value, failing after `timeout` with what was awaited.
pub async fn wait_for<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<Option<T>>>,
{
    let start = Instant::now();
    loop {
        if let Some(value) = check().await? {
            return Ok(value);
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
    let succeeded = wait_for(timeout, &format!("Job {job} to finish"), || async {
        let status = jobs.get(job).await?.status.unwrap_or_default();
        Ok(if status.succeeded.unwrap_or(0) > 0 {
            Some(true)
        } else if status.failed.unwrap_or(0) > 0 {
            Some(false)
        } else {
            None
        })
    })
    .await?;
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

fn unique_suffix() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("{:x}{:x}", std::process::id() % 4096, nanos % 0xffff_ffff)
}

/// Installs the operator with the test overlay (idempotent) and waits until a replica leads.
pub async fn install_operator(client: &Client) -> anyhow::Result<()> {
    // Two tests applying at once on a fresh cluster both try to create: one gets AlreadyExists.
    static APPLYING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    let applying = APPLYING.lock().await;
    let overlay = repo_root().join("tests/e2e/overlay");
    let out = Command::new("kubectl")
        .arg("apply")
        .arg("-k")
        .arg(&overlay)
        .output()
        .context("running kubectl apply -k tests/e2e/overlay")?;
    if !out.status.success() {
        bail!(
            "installing the operator failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    drop(applying);
    operator_leads(client, "backstop-system").await
}

/// Waits until the Lease `backstop-controller` in `namespace` is held by a running pod of the
/// operator's Deployment there (label component=controller: not a test's extra standby, not a pod
/// being deleted, so after a Recreate upgrade only the new pod counts).
pub async fn operator_leads(client: &Client, namespace: &str) -> anyhow::Result<()> {
    let leases: Api<k8s_openapi::api::coordination::v1::Lease> =
        Api::namespaced(client.clone(), namespace);
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let what = format!("the operator in {namespace} to lead");
    wait_until(Duration::from_secs(120), &what, || async {
        let Some(lease) = leases.get_opt("backstop-controller").await? else {
            return Ok(false);
        };
        let Some(holder) = lease.spec.and_then(|s| s.holder_identity) else {
            return Ok(false);
        };
        let pod = pods.get_opt(&holder).await?;
        Ok(pod.is_some_and(|p| {
            p.metadata.deletion_timestamp.is_none()
                && p.metadata
                    .labels
                    .as_ref()
                    .and_then(|l| l.get("app.kubernetes.io/component"))
                    .map(String::as_str)
                    == Some("controller")
                && p.status.and_then(|s| s.phase).as_deref() == Some("Running")
        }))
    })
    .await
}

/// Waits for Backup `name` to be Failed with `reason`, with a BackupFailed event naming it.
pub async fn backup_failed(
    ns: &TestNamespace,
    name: &str,
    reason: &str,
    timeout: Duration,
) -> anyhow::Result<backstop_api::Backup> {
    let backup = finished_backup(ns, name, timeout).await?;
    let status = backup.status.clone().unwrap_or_default();
    assert_eq!(
        status.phase,
        backstop_api::BackupPhase::Failed,
        "{status:?}"
    );
    let failed = backstop_api::condition::find(&status.conditions, ConditionType::Failed)
        .with_context(|| format!("backup {name} has no Failed condition: {status:?}"))?;
    assert_eq!(failed.reason, reason, "{status:?}");
    wait_until(Duration::from_secs(30), "a BackupFailed event", || async {
        Ok(events(ns, "BackupFailed")
            .await?
            .iter()
            .any(|(on, note)| on == name && note.contains(reason)))
    })
    .await?;
    Ok(backup)
}

/// Waits until Backup `name` has finished (Completed or Failed) and returns it.
pub async fn finished_backup(
    ns: &TestNamespace,
    name: &str,
    timeout: Duration,
) -> anyhow::Result<backstop_api::Backup> {
    let api = ns.api::<backstop_api::Backup>();
    let finished = wait_for(timeout, &format!("backup {name} to finish"), || async {
        let b = api.get(name).await?;
        Ok(b.phase().is_terminal().then_some(b))
    })
    .await;
    finished.with_context(|| ns.snapshot())
}

/// Waits until the Backups seen Completed in the namespace (even if deleted since, by retention)
/// are `enough`, and returns their names; any Backup that fails meanwhile fails the test.
pub async fn completed_runs(
    ns: &TestNamespace,
    timeout: Duration,
    what: &str,
    enough: impl Fn(&std::collections::BTreeSet<String>) -> bool,
) -> anyhow::Result<std::collections::BTreeSet<String>> {
    let backups = ns.api::<backstop_api::Backup>();
    let seen = std::sync::Mutex::new(std::collections::BTreeSet::new());
    wait_until(timeout, what, || async {
        let items = backups.list(&ListParams::default()).await?.items;
        let mut seen = seen.lock().map_err(|e| anyhow::anyhow!("{e}"))?;
        for b in items {
            assert_ne!(
                b.phase(),
                backstop_api::BackupPhase::Failed,
                "backup failed: {:?}",
                b.status
            );
            if b.phase() == backstop_api::BackupPhase::Completed {
                seen.insert(b.metadata.name.clone().unwrap_or_default());
            }
        }
        Ok(enough(&seen))
    })
    .await?;
    seen.into_inner().map_err(|e| anyhow::anyhow!("{e}"))
}

/// Waits until Restore `name` has finished (Completed or Failed) and returns it.
pub async fn finished_restore(
    ns: &TestNamespace,
    name: &str,
    timeout: Duration,
) -> anyhow::Result<backstop_api::Restore> {
    let api = ns.api::<backstop_api::Restore>();
    let finished = wait_for(timeout, &format!("restore {name} to finish"), || async {
        let r = api.get(name).await?;
        Ok(r.phase().is_terminal().then_some(r))
    })
    .await;
    finished.with_context(|| ns.snapshot())
}

/// Creates any object from JSON in the test namespace (the namespace is filled in).
pub async fn create<K>(ns: &TestNamespace, mut value: serde_json::Value) -> anyhow::Result<K>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + serde::Serialize
        + std::fmt::Debug,
    <K as kube::Resource>::DynamicType: Default,
{
    value["metadata"]["namespace"] = serde_json::json!(ns.name);
    let obj: K = serde_json::from_value(value)?;
    Ok(ns.api::<K>().create(&PostParams::default(), &obj).await?)
}

/// The events (events.k8s.io/v1) in the namespace whose reason is `reason`, as
/// `(regarding name, note)` pairs.
pub async fn events(ns: &TestNamespace, reason: &str) -> anyhow::Result<Vec<(String, String)>> {
    let api: Api<k8s_openapi::api::events::v1::Event> = ns.api();
    Ok(api
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .filter(|e| e.reason.as_deref() == Some(reason))
        .map(|e| {
            (
                e.regarding.and_then(|r| r.name).unwrap_or_default(),
                e.note.unwrap_or_default(),
            )
        })
        .collect())
}

/// Writes a tree with nested dirs, modes, a symlink, a hardlink and an old mtime under `dir`.
pub fn write_sample_tree(dir: &Path, seed: u8) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(dir.join("nested/deeper"))?;
    std::fs::create_dir_all(dir.join("empty"))?;
    std::fs::write(dir.join("README"), format!("sample {seed}\n"))?;
    let data: Vec<u8> = (0..300_000u32)
        .map(|i| (i.wrapping_mul(31) as u8) ^ seed)
        .collect();
    std::fs::write(dir.join("nested/data.bin"), data)?;
    std::fs::write(dir.join("nested/deeper/secret.key"), "k\n")?;
    std::fs::set_permissions(
        dir.join("nested/deeper/secret.key"),
        std::fs::Permissions::from_mode(0o600),
    )?;
    std::fs::write(dir.join("run.sh"), "#!/bin/sh\necho hi\n")?;
    std::fs::set_permissions(dir.join("run.sh"), std::fs::Permissions::from_mode(0o755))?;
    std::os::unix::fs::symlink("nested/data.bin", dir.join("latest"))?;
    std::fs::hard_link(dir.join("README"), dir.join("nested/README.link"))?;
    let status = Command::new("touch")
        .args(["-h", "-d", "2020-01-02T03:04:05.123456789Z"])
        .arg(dir.join("README"))
        .status()?;
    anyhow::ensure!(status.success(), "touch failed");
    Ok(())
}

/// Every entry below `root`: path, kind, mode, mtime (ns), and content or link target.
pub fn tree_listing(root: &Path) -> anyhow::Result<Vec<String>> {
    use std::os::unix::fs::MetadataExt;
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir)? {
            let path = entry?.path();
            let meta = std::fs::symlink_metadata(&path)?;
            let rel = path.strip_prefix(root)?.to_string_lossy().into_owned();
            let ft = meta.file_type();
            let what = if ft.is_dir() {
                stack.push(path.clone());
                "dir".to_string()
            } else if ft.is_symlink() {
                format!("link->{}", std::fs::read_link(&path)?.display())
            } else {
                format!("file:{}", fingerprint(&std::fs::read(&path)?))
            };
            let mode = if ft.is_symlink() {
                0
            } else {
                meta.mode() & 0o7777
            };
            let mtime = if ft.is_dir() {
                0
            } else {
                meta.mtime() * 1_000_000_000 + meta.mtime_nsec()
            };
            out.push(format!(
                "{rel} {what} mode={mode:o} uid={} mtime={mtime}",
                meta.uid()
            ));
        }
    }
    out.sort();
    Ok(out)
}

/// What GNU tar alone gives back of a `tree_listing`: times to the whole second (their
/// nanoseconds are in Backstop's manifest, not in the archive).
pub fn tar_view(listing: &[String]) -> Vec<String> {
    listing
        .iter()
        .map(|line| match line.rsplit_once(" mtime=") {
            Some((head, ns)) => {
                let ns: i64 = ns.parse().unwrap_or_default();
                format!("{head} mtime={}", ns - ns.rem_euclid(1_000_000_000))
            }
            None => line.clone(),
        })
        .collect()
}

fn fingerprint(data: &[u8]) -> String {
    // A content fingerprint for comparisons; std's hasher is enough here.
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    data.hash(&mut h);
    format!("{:016x}-{}", h.finish(), data.len())
}

/// Extracts an artifact with GNU tar alone (no Backstop code) into a fresh directory.
pub fn extract_with_tar(artifact: &Path, into: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(into)?;
    let flag = match artifact.extension().and_then(|e| e.to_str()) {
        Some("zst") => "--zstd",
        Some("gz") => "-z",
        _ => "--no-auto-compress",
    };
    let out = Command::new("tar")
        .arg(flag)
        .arg("-xpf")
        .arg(artifact)
        .arg("-C")
        .arg(into)
        .output()?;
    anyhow::ensure!(
        out.status.success(),
        "tar could not extract {}: {}",
        artifact.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

/// A plain HTTP GET on loopback (the operator and Prometheus run on the host's network); returns
/// the body of a 200 answer.
pub fn http_get(addr: &str, path: &str) -> anyhow::Result<String> {
    let (status, body) = http(addr, "GET", path)?;
    anyhow::ensure!(status == 200, "{addr}{path}: HTTP {status}");
    Ok(String::from_utf8_lossy(&body).into_owned())
}

/// One HTTP/1.0 request without a body on loopback: the answer's status and body.
pub fn http(addr: &str, method: &str, path: &str) -> anyhow::Result<(u16, Vec<u8>)> {
    use std::io::{Read, Write};
    let mut stream =
        std::net::TcpStream::connect(addr).with_context(|| format!("connecting to {addr}"))?;
    stream.set_read_timeout(Some(Duration::from_secs(60)))?;
    write!(
        stream,
        "{method} {path} HTTP/1.0\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response)?;
    let split = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .with_context(|| format!("no HTTP answer from {addr}{path}"))?;
    let head = String::from_utf8_lossy(&response[..split]).into_owned();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("bad HTTP answer from {addr}{path}: {head}"))?;
    Ok((status, response[split + 4..].to_vec()))
}

/// Where the leading operator replica serves /metrics (its BACKSTOP_LISTEN on the host network).
pub async fn leader_metrics_addr(client: &Client) -> anyhow::Result<String> {
    let leases: Api<k8s_openapi::api::coordination::v1::Lease> =
        Api::namespaced(client.clone(), "backstop-system");
    let pods: Api<Pod> = Api::namespaced(client.clone(), "backstop-system");
    let holder = leases
        .get("backstop-controller")
        .await?
        .spec
        .and_then(|s| s.holder_identity)
        .context("no replica holds the Lease")?;
    let pod = pods.get(&holder).await?;
    let listen = pod
        .spec
        .into_iter()
        .flat_map(|s| s.containers)
        .flat_map(|c| c.env.unwrap_or_default())
        .find(|e| e.name == "BACKSTOP_LISTEN")
        .and_then(|e| e.value)
        .unwrap_or_else(|| "127.0.0.1:8080".into());
    Ok(listen.replace("0.0.0.0", "127.0.0.1"))
}

impl TestNamespace {
    /// A PVC `backups` and the BackupRepository `default` on it; returns the repository's host
    /// directory.
    pub async fn repository(&self) -> anyhow::Result<PathBuf> {
        let dir = self.volume("backups", &[]).await?;
        create::<backstop_api::BackupRepository>(
            self,
            serde_json::json!({"apiVersion": "backstop.dev/v1alpha1", "kind": "BackupRepository",
                   "metadata": {"name": "default"}, "spec": {"pvc": {"claimName": "backups"}}}),
        )
        .await?;
        Ok(dir)
    }

    /// A PVC `stranded` labelled `app=<app>`, bound to a volume only reachable from a node that does
    /// not exist: a pod that mounts it never starts. Returns the PersistentVolume's name (remove it
    /// at the end: volumes are cluster-wide).
    pub async fn stranded_volume(&self, app: &str) -> anyhow::Result<String> {
        let pv_name = format!("{}-stranded", self.name);
        let pv: k8s_openapi::api::core::v1::PersistentVolume = serde_json::from_value(
            serde_json::json!({
                "metadata": {"name": pv_name},
                "spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"],
                         "storageClassName": STORAGE_CLASS, "persistentVolumeReclaimPolicy": "Retain",
                         "hostPath": {"path": "/nonexistent/backstop-e2e"},
                         "nodeAffinity": {"required": {"nodeSelectorTerms": [{"matchExpressions": [
                             {"key": "kubernetes.io/hostname", "operator": "In", "values": ["elsewhere"]}]}]}}}
            }),
        )?;
        Api::<k8s_openapi::api::core::v1::PersistentVolume>::all(self.client.clone())
            .create(&PostParams::default(), &pv)
            .await?;
        create::<PersistentVolumeClaim>(
            self,
            serde_json::json!({"metadata": {"name": "stranded", "labels": {"app": app}},
                   "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": STORAGE_CLASS,
                            "volumeName": pv_name, "resources": {"requests": {"storage": "1Gi"}}}}),
        )
        .await?;
        Ok(pv_name)
    }
}

/// Waits until the Backup or Restore `name` is Pending with its `Completed` condition's reason
/// `reason` (what it waits for) and returns that condition's message; fails at once if it
/// finished instead.
pub async fn waits_with<K>(api: &Api<K>, name: &str, reason: &str) -> anyhow::Result<String>
where
    K: Clone + serde::de::DeserializeOwned + serde::Serialize + std::fmt::Debug,
{
    wait_for(
        Duration::from_secs(60),
        &format!("{name} to wait with {reason}"),
        || async {
            let status = serde_json::to_value(api.get(name).await?)?["status"].take();
            let phase = status["phase"].as_str().unwrap_or("Pending");
            anyhow::ensure!(
                phase == "Pending",
                "{name} is {phase}, expected it Pending with {reason}: {status}"
            );
            Ok(status["conditions"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|c| c["type"] == "Completed" && c["reason"] == reason)
                .and_then(|c| c["message"].as_str().map(str::to_string)))
        },
    )
    .await
}

/// Applies a multi-document YAML manifest with `kubectl apply -f -`, all at once, as a person or
/// a GitOps tool would.
pub fn kubectl_apply(manifest: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let mut child = Command::new("kubectl")
        .args(["apply", "-f", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .context("running kubectl apply")?;
    child
        .stdin
        .take()
        .context("kubectl's standard input")?
        .write_all(manifest.as_bytes())?;
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!(
            "kubectl apply failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// Waits until the repository's `Ready` condition has `status` and a reason other than Probing;
/// returns the reason.
pub async fn repository_ready(
    ns: &TestNamespace,
    name: &str,
    status: &str,
) -> anyhow::Result<String> {
    let api = ns.api::<backstop_api::BackupRepository>();
    wait_for(
        Duration::from_secs(150),
        &format!("repository {name} Ready={status}"),
        || async {
            let repo = api.get(name).await?;
            let conditions = repo.status.unwrap_or_default().conditions;
            Ok(
                backstop_api::condition::find(&conditions, ConditionType::Ready)
                    .filter(|c| c.status == status && c.reason != "Probing")
                    .map(|c| c.reason.clone()),
            )
        },
    )
    .await
}

/// A Secret `name` with the S3 keys, labelled so that the operator may hand it to mover pods.
pub async fn keys_secret(ns: &TestNamespace, name: &str, secret_key: &str) -> anyhow::Result<()> {
    create::<k8s_openapi::api::core::v1::Secret>(
        ns,
        serde_json::json!({"apiVersion": "v1", "kind": "Secret",
               "metadata": {"name": name, "labels": {"backstop.dev/credentials": "true"}},
               "stringData": {"AWS_ACCESS_KEY_ID": s3::ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": secret_key}}),
    )
    .await?;
    Ok(())
}

/// The `backstop` binary the image was built from (`hack/image` builds it in release mode), or
/// `BACKSTOP_BIN`.
pub fn backstop_bin() -> anyhow::Result<PathBuf> {
    if let Some(path) = std::env::var_os("BACKSTOP_BIN") {
        return Ok(PathBuf::from(path));
    }
    // This test runs from <target>/<profile>/deps/.
    let exe = std::env::current_exe()?;
    let target = exe
        .ancestors()
        .nth(3)
        .context("the test binary is not in <target>/<profile>/deps")?;
    let bin = target.join("release/backstop");
    anyhow::ensure!(
        bin.is_file(),
        "{} is missing: run `hack/image` (or `cargo build --release -p backstop`), or set BACKSTOP_BIN",
        bin.display()
    );
    Ok(bin)
}

/// What a CLI run gave: exit code, standard output and standard error.
#[derive(Debug)]
pub struct CliRun {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `backstop <args>` as a person would, with the tests' KUBECONFIG.
pub async fn backstop_cli(args: &[&str]) -> anyhow::Result<CliRun> {
    let mut command = Command::new(backstop_bin()?);
    command.args(args).stdin(std::process::Stdio::null());
    let out = tokio::task::spawn_blocking(move || command.output())
        .await?
        .with_context(|| format!("running backstop {}", args.join(" ")))?;
    Ok(CliRun {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    })
}

/// Runs a command to its end; its standard output, or an error with its standard error.
pub fn output_of(command: &mut Command) -> anyhow::Result<String> {
    let out = command
        .stdin(std::process::Stdio::null())
        .output()
        .with_context(|| format!("running {command:?}"))?;
    if !out.status.success() {
        bail!(
            "{command:?} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8(out.stdout)?)
}

/// `kubectl <args>` (the cluster's own kubectl, first on PATH) from the repository's root.
pub fn kubectl(args: &[&str]) -> anyhow::Result<String> {
    output_of(Command::new("kubectl").args(args).current_dir(repo_root()))
}

/// `helm <args>` from the repository's root, with the Helm `make test` installs (`BACKSTOP_HELM`).
pub fn helm(args: &[&str]) -> anyhow::Result<String> {
    let helm = std::env::var_os("BACKSTOP_HELM").context(
        "BACKSTOP_HELM is not set: run `make test` (it installs Helm 3.17.3 and sets it), or point \
         it at a helm binary",
    )?;
    output_of(Command::new(helm).args(args).current_dir(repo_root()))
}

/// The chart's directory, as helm takes it.
pub fn chart_dir() -> String {
    repo_root().join("charts/backstop").display().to_string()
}

/// Scales the operator `install_operator` installs to zero and waits until its pod is gone (on
/// the host network a second operator could not listen on its port). For a test that installs
/// another operator: alone in its test binary (cargo runs binaries one at a time), and bringing
/// it back with `restart_cluster_wide_operator` when done.
pub async fn stop_cluster_wide_operator(client: &Client) -> anyhow::Result<()> {
    install_operator(client).await?;
    kubectl(&[
        "-n",
        "backstop-system",
        "scale",
        "deployment/backstop-controller",
        "--replicas=0",
    ])?;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "backstop-system");
    let controllers = ListParams::default().labels("app.kubernetes.io/component=controller");
    wait_until(
        Duration::from_secs(90),
        "the cluster-wide operator to stop",
        || async { Ok(pods.list(&controllers).await?.items.is_empty()) },
    )
    .await
}

/// Undoes `stop_cluster_wide_operator` (for Drop: errors are ignored; the next
/// `install_operator` waits for it to lead).
pub fn restart_cluster_wide_operator() {
    let _ = kubectl(&[
        "-n",
        "backstop-system",
        "scale",
        "deployment/backstop-controller",
        "--replicas=1",
    ]);
}

/// Debian's restic 0.14 on the repository `repo` (a directory, or an `s3:` URL with the test S3
/// servers' keys): its standard output, or what it said when it failed.
pub fn restic(
    repo: impl AsRef<std::ffi::OsStr>,
    password: &str,
    args: &[&str],
) -> anyhow::Result<String> {
    let repo = repo.as_ref();
    let out = Command::new("restic")
        .arg("--repo")
        .arg(repo)
        .args(["--no-cache", "--quiet"])
        .args(args)
        .env("RESTIC_PASSWORD", password)
        .env("AWS_ACCESS_KEY_ID", s3::ACCESS_KEY)
        .env("AWS_SECRET_ACCESS_KEY", s3::SECRET_KEY)
        .output()?;
    anyhow::ensure!(
        out.status.success(),
        "restic {args:?} on {}: {}{}",
        repo.to_string_lossy(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8(out.stdout)?)
}
