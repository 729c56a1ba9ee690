//! The controller at scale, on the local cluster with the operator in-cluster: many policies
//! (mixed schedules) and a long backup history are created while the operator is stopped; then it
//! starts and we measure its memory, how long until every policy shows its next run, how late
//! per-minute Backups appear after their scheduled time, and the API request rate it adds at rest.
//! Last, with the operator stopped, what the API server alone takes for one first status write
//! per policy: the floor under "every policy shows its next run".

use anyhow::{Context, bail};
use backstop_api::{ARTIFACTS_FINALIZER, Backup, BackupPolicy, labels, naming};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Namespace, PersistentVolumeClaim};
use kube::api::{
    Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams,
};
use kube::runtime::{WatchStreamExt, reflector, watcher};
use kube::{Client, ResourceExt};
use serde_json::json;
use std::collections::HashSet;
use std::time::{Duration, Instant};

const NS: &str = "bench-scale";
/// Where the API server alone is measured (`first_writes_alone`).
const FLOOR_NS: &str = "bench-floor";
const OPERATOR_NS: &str = "backstop-system";

pub struct Options {
    pub policies: usize,
    pub backups: usize,
    pub per_minute: usize,
    pub observe: Duration,
}

/// The /proc directory of a process on this host that `is` picks (given its /proc directory).
fn find_process(is: impl Fn(&std::path::Path) -> bool) -> Option<std::path::PathBuf> {
    std::fs::read_dir("/proc")
        .ok()?
        .flatten()
        .map(|entry| entry.path())
        .find(|dir| is(dir))
}

/// The operator's resident memory (KiB): current and peak, read from /proc on this host.
fn operator_rss() -> Option<(u64, u64)> {
    let dir = find_process(|dir| {
        std::fs::read(dir.join("cmdline")).is_ok_and(|cmdline| {
            let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
            args.len() >= 2 && args[0].ends_with(b"/backstop") && args[1] == b"controller"
        })
    })?;
    let status = std::fs::read_to_string(dir.join("status")).ok()?;
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
    };
    Some((field("VmRSS:")?, field("VmHWM:")?))
}

/// CPU seconds (user + system) the API server on this host has used so far.
fn apiserver_cpu_seconds() -> Option<f64> {
    let dir = find_process(|dir| {
        std::fs::read_to_string(dir.join("comm")).is_ok_and(|c| c.trim() == "kube-apiserver")
    })?;
    let stat = std::fs::read_to_string(dir.join("stat")).ok()?;
    // After the command in parentheses: state is field 3, utime and stime 14 and 15.
    let fields: Vec<&str> = stat
        .get(stat.rfind(')')? + 2..)?
        .split_whitespace()
        .collect();
    let ticks = |i: usize| fields.get(i)?.parse::<f64>().ok();
    // SAFETY: sysconf has no preconditions.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    Some((ticks(11)? + ticks(12)?) / per_second)
}

/// The API server's CPU seconds since `start` (an `apiserver_cpu_seconds` reading).
fn apiserver_cpu_since(start: Option<f64>) -> Option<f64> {
    Some(apiserver_cpu_seconds()? - start?)
}

/// The API server's own metrics, as text.
async fn api_metrics(client: &Client) -> anyhow::Result<String> {
    let request = http::Request::get("/metrics").body(Vec::new())?;
    Ok(client.request_text(request).await?)
}

async fn api_requests_total(client: &Client) -> anyhow::Result<f64> {
    Ok(api_metrics(client)
        .await?
        .lines()
        .filter(|l| l.starts_with("apiserver_request_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum())
}

/// The API server's requests so far, by verb, resource and subresource: (count, seconds spent).
async fn api_request_times(
    client: &Client,
) -> anyhow::Result<std::collections::BTreeMap<String, (f64, f64)>> {
    let text = api_metrics(client).await?;
    // A label's value; `resource` is not the end of `subresource`.
    let label = |line: &str, name: &str| {
        let start = [format!("{{{name}=\""), format!(",{name}=\"")]
            .iter()
            .find_map(|at| Some(line.find(at.as_str())? + at.len()))?;
        let end = line[start..].find('"')? + start;
        Some(line[start..end].to_string())
    };
    let mut times = std::collections::BTreeMap::new();
    for line in text.lines() {
        let sum = if line.starts_with("apiserver_request_duration_seconds_count{") {
            false
        } else if line.starts_with("apiserver_request_duration_seconds_sum{") {
            true
        } else {
            continue;
        };
        let (Some(verb), Some(resource), Some(value)) = (
            label(line, "verb"),
            label(line, "resource"),
            line.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()),
        ) else {
            continue;
        };
        let subresource = label(line, "subresource").unwrap_or_default();
        let key = format!(
            "{verb} {resource}{}{subresource}",
            if subresource.is_empty() { "" } else { "/" }
        );
        let entry: &mut (f64, f64) = times.entry(key).or_default();
        if sum {
            entry.1 += value;
        } else {
            entry.0 += value;
        }
    }
    Ok(times)
}

/// The requests the API server served between `before` and `after` (`when`), the most frequent
/// first.
fn print_request_times(
    when: &str,
    before: &std::collections::BTreeMap<String, (f64, f64)>,
    after: &std::collections::BTreeMap<String, (f64, f64)>,
) {
    let mut served: Vec<(String, f64, f64)> = after
        .iter()
        .map(|(key, (count, seconds))| {
            let (count0, seconds0) = before.get(key).copied().unwrap_or_default();
            (key.clone(), count - count0, seconds - seconds0)
        })
        .filter(|(_, count, _)| *count >= 1.0)
        .collect();
    served.sort_by(|a, b| b.1.total_cmp(&a.1));
    println!("\nAPI server, {when} (whole cluster): requests, mean latency");
    for (key, count, seconds) in served.iter().take(10) {
        println!("  {key}: {count:.0}, {:.1} ms", 1000.0 * seconds / count);
    }
}

async fn request_rate(client: &Client, over: Duration) -> anyhow::Result<f64> {
    let before = api_requests_total(client).await?;
    tokio::time::sleep(over).await;
    let after = api_requests_total(client).await?;
    // Our own two scrapes count too; they are negligible over the window.
    Ok((after - before) / over.as_secs_f64())
}

async fn scale_operator(client: &Client, replicas: i32) -> anyhow::Result<()> {
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), OPERATOR_NS);
    deployments
        .patch(
            "backstop-controller",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": replicas}})),
        )
        .await?;
    let start = Instant::now();
    loop {
        let running = operator_rss().is_some();
        if (replicas == 0) != running {
            return Ok(());
        }
        if start.elapsed() > Duration::from_secs(120) {
            bail!("the operator did not scale to {replicas} in 2 minutes");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

fn schedule_for(i: usize, per_minute: usize) -> String {
    if i < per_minute {
        "* * * * *".into()
    } else if i.is_multiple_of(3) {
        format!("{} * * * *", i % 60)
    } else {
        format!("{} {} * * *", i % 60, i % 24)
    }
}

/// `count` policies `p0000`... with the benchmark's mixed schedules (`per_minute` every minute).
async fn create_policies(
    policies: &Api<BackupPolicy>,
    count: usize,
    per_minute: usize,
) -> anyhow::Result<()> {
    futures::stream::iter(0..count)
        .map(|i| {
            let policies = policies.clone();
            async move {
                let p: BackupPolicy = serde_json::from_value(json!({
                    "apiVersion": "backstop.dev/v1alpha1", "kind": "BackupPolicy",
                    "metadata": {"name": format!("p{i:04}")},
                    // Selecting no PVC and never waiting for one, every run fails at once: the
                    // next one is due at its time (a Backup still waiting would hold it back).
                    "spec": {"schedule": schedule_for(i, per_minute),
                             "startingDeadlineSeconds": 0,
                             "target": {"pvcSelector": {"matchLabels": {"app": format!("none-{i}")}}}}}))?;
                policies.create(&PostParams::default(), &p).await?;
                anyhow::Ok(())
            }
        })
        .buffer_unordered(16)
        .try_collect::<Vec<_>>()
        .await?;
    Ok(())
}

/// What the API server alone takes for the start-up's first writes: `count` new policies in a
/// namespace of their own (the operator stopped), each given the status the operator's first
/// write gives (the next run and the Ready condition, one merge patch on `/status`), as many at
/// a time as the operator reconciles policies. The time, and the API server's CPU seconds.
async fn first_writes_alone(
    client: &Client,
    count: usize,
    per_minute: usize,
) -> anyhow::Result<(Duration, Option<f64>)> {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    namespaces
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": FLOOR_NS}}))?,
        )
        .await?;
    let policies: Api<BackupPolicy> = Api::namespaced(client.clone(), FLOOR_NS);
    create_policies(&policies, count, per_minute).await?;
    let now = jiff::Timestamp::now();
    let next = now + jiff::SignedDuration::from_hours(1);
    let mut status = backstop_api::BackupPolicyStatus {
        next_scheduled_backup: Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(next)),
        observed_generation: Some(1),
        ..Default::default()
    };
    backstop_api::condition::set(
        &mut status.conditions,
        backstop_api::condition::ConditionType::Ready,
        true,
        "Scheduled",
        &format!("next backup at {next}"),
        Some(1),
        now,
    );
    let patch = json!({ "status": status });
    let cpu_before = apiserver_cpu_seconds();
    let t = Instant::now();
    futures::stream::iter(0..count)
        .map(|i| {
            let policies = policies.clone();
            let patch = &patch;
            async move {
                policies
                    .patch_status(
                        &format!("p{i:04}"),
                        &PatchParams::default(),
                        &Patch::Merge(patch),
                    )
                    .await?;
                anyhow::Ok(())
            }
        })
        .buffer_unordered(usize::from(backstop_controller::policy::POLICY_CONCURRENCY))
        .try_collect::<Vec<_>>()
        .await?;
    let took = t.elapsed();
    let cpu = apiserver_cpu_since(cpu_before);
    namespaces
        .delete(FLOOR_NS, &DeleteParams::default())
        .await?;
    Ok((took, cpu))
}

fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

/// A hostPath PersistentVolume made by `hack/cluster volume`; its directory on this machine.
pub fn host_volume(name: &str, size: &str) -> anyhow::Result<std::path::PathBuf> {
    let out = std::process::Command::new("hack/cluster")
        .args(["volume", name, size])
        .output()?;
    anyhow::ensure!(
        out.status.success(),
        "hack/cluster volume: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8(out.stdout)?.trim().into())
}

pub async fn run(opts: Options) -> anyhow::Result<()> {
    crate::state::print();
    let client = Client::try_default()
        .await
        .context("KUBECONFIG: run `make bench-controller`")?;
    let namespaces: Api<Namespace> = Api::all(client.clone());
    // What an earlier run on a kept cluster left.
    for ns in [NS, FLOOR_NS] {
        if namespaces.get_opt(ns).await?.is_some() {
            // The history's finalizers are removed by the operator: it must run for the
            // namespace to go.
            scale_operator(&client, 1).await?;
            namespaces.delete(ns, &DeleteParams::default()).await?;
            while namespaces.get_opt(ns).await?.is_some() {
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
    scale_operator(&client, 0).await?;
    namespaces
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": NS}}))?,
        )
        .await?;
    // A ready repository (policies select no PVC: their Backups fail at once, no Jobs).
    host_volume("bench-scale-repo", "1Gi")?;
    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), NS);
    pvcs.create(&PostParams::default(), &serde_json::from_value(json!({
        "metadata": {"name": "backups"},
        "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": "backstop-hostpath",
                 "volumeName": "bench-scale-repo", "resources": {"requests": {"storage": "1Gi"}}}}))?)
        .await?;
    let repos: Api<backstop_api::BackupRepository> = Api::namespaced(client.clone(), NS);
    repos
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({
            "metadata": {"name": "default"}, "spec": {"pvc": {"claimName": "backups"}}}))?,
        )
        .await?;

    let policies: Api<BackupPolicy> = Api::namespaced(client.clone(), NS);
    let backups: Api<Backup> = Api::namespaced(client.clone(), NS);
    let t = Instant::now();
    create_policies(&policies, opts.policies, opts.per_minute).await?;
    println!(
        "created {} policies in {:.1}s",
        opts.policies,
        t.elapsed().as_secs_f64()
    );
    let t = Instant::now();
    let history_policies = (opts.per_minute..opts.policies).collect::<Vec<_>>();
    futures::stream::iter(0..opts.backups)
        .map(|k| {
            let backups = backups.clone();
            let policy = format!("p{:04}", history_policies[k % history_policies.len()]);
            async move {
                let at = jiff::Timestamp::now() - jiff::SignedDuration::from_hours(1 + k as i64);
                let name = naming::scheduled_backup(&policy, at);
                let b: Backup = serde_json::from_value(json!({
                    "apiVersion": "backstop.dev/v1alpha1", "kind": "Backup",
                    // As the operator makes them: with the finalizer that removes artifacts.
                    "metadata": {"name": name, "labels": {labels::POLICY: policy},
                                 "finalizers": [ARTIFACTS_FINALIZER],
                                 "annotations": {labels::SCHEDULED_TIME: at.to_string()}},
                    "spec": {"policyRef": policy}}))?;
                backups.create(&PostParams::default(), &b).await?;
                backups
                    .patch_status(&name, &PatchParams::default(), &Patch::Merge(json!({"status": {
                        "phase": "Completed", "completionTime": at.to_string(), "totalBytes": 1024, "totalFiles": 1}})))
                    .await?;
                anyhow::Ok(())
            }
        })
        .buffer_unordered(32)
        .try_collect::<Vec<_>>()
        .await?;
    println!(
        "created {} Completed backups (history) in {:.1}s",
        opts.backups,
        t.elapsed().as_secs_f64()
    );

    let baseline = request_rate(&client, Duration::from_secs(30)).await?;

    // (scheduled time, delay until the Backup was seen)
    let delays = std::sync::Arc::new(std::sync::Mutex::new(Vec::<(jiff::Timestamp, f64)>::new()));
    // The Backups there are now, and the version to watch from, listed before the operator
    // starts: a watcher would list them all again while the operator lists them (at 10x, 100,000
    // Backups listed twice at once), and the listing is the benchmark's time, not the operator's.
    let t = Instant::now();
    let listed = backups.list(&ListParams::default()).await?;
    println!(
        "listed {} Backups (the benchmark's own watch starts there) in {:.1}s",
        listed.items.len(),
        t.elapsed().as_secs_f64()
    );
    let seen_at_start: HashSet<String> = listed.items.iter().map(|b| b.name_any()).collect();
    let from = listed
        .metadata
        .resource_version
        .clone()
        .context("the list of Backups has no resourceVersion")?;
    drop(listed);
    let watch = tokio::spawn(follow_new_backups(
        backups.clone(),
        from,
        seen_at_start,
        delays.clone(),
    ));
    // Policies are followed with a watch: listing 10,000 of them twice a second loaded the API
    // server more than the operator did.
    let (followed, writer) = reflector::store::<BackupPolicy>();
    let follow = tokio::spawn(
        reflector::reflector(
            writer,
            watcher::watcher(policies.clone(), watcher::Config::default()).default_backoff(),
        )
        .for_each(|_| futures::future::ready(())),
    );
    followed.wait_until_ready().await?;
    // Start the operator and watch what it does.
    let started = Instant::now();
    let started_at = jiff::Timestamp::now();
    scale_operator(&client, 1).await?;
    // Scheduling the pod and starting its container, before the operator runs at all.
    let process_up = started.elapsed();
    let mut peak_rss = 0;
    let mut next_line = Duration::ZERO;
    let requests_before = api_request_times(&client).await?;
    let apiserver_cpu_at_start = apiserver_cpu_seconds();
    // Until every followed policy's status passes `shown`: the time since `started`, and when.
    let mut until_every_policy = async |shown: fn(&backstop_api::BackupPolicyStatus) -> bool,
                                        what: &str|
           -> anyhow::Result<(Duration, jiff::Timestamp)> {
        loop {
            if let Some((rss, _)) = operator_rss() {
                peak_rss = peak_rss.max(rss);
            }
            let done = followed
                .state()
                .iter()
                .filter(|p| p.status.as_ref().is_some_and(shown))
                .count();
            // The start-up's course: where the time goes.
            if started.elapsed() >= next_line {
                let made = delays.lock().map(|d| d.len()).unwrap_or_default();
                println!(
                    "  {:5.1} s: {done} policies {what}, {made} new Backups seen",
                    started.elapsed().as_secs_f64()
                );
                next_line += Duration::from_secs(5);
            }
            if done == opts.policies {
                return Ok((started.elapsed(), jiff::Timestamp::now()));
            }
            if started.elapsed() > Duration::from_secs(900) {
                bail!(
                    "only {done} of {} policies {what} after 15 minutes",
                    opts.policies
                );
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    };
    let (ready_after, _) =
        until_every_policy(|s| s.next_scheduled_backup.is_some(), "had a next run").await?;
    let apiserver_cpu_until_ready = apiserver_cpu_since(apiserver_cpu_at_start);
    // Start-up is over once every policy was decided with its Backups listed (runs due made,
    // retention applied): the operator writes `status.retention` only then.
    let (decided_after, decided_at) =
        until_every_policy(|s| s.retention.is_some(), "were decided with their Backups").await?;
    let requests_after = api_request_times(&client).await?;
    print_request_times("start-up", &requests_before, &requests_after);
    let observe_until = Instant::now() + opts.observe;
    while Instant::now() < observe_until {
        if let Some((rss, _)) = operator_rss() {
            peak_rss = peak_rss.max(rss);
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    // Runs scheduled from here on compete with the suspension of every policy: not counted.
    let observed_until = jiff::Timestamp::now();
    // At rest: every policy suspended, so that no run falls in the measured minute (hourly
    // policies run in most minutes), once the operator has shown each as suspended.
    futures::stream::iter(0..opts.policies)
        .map(|i| {
            let policies = policies.clone();
            async move {
                policies
                    .patch(
                        &format!("p{i:04}"),
                        &PatchParams::default(),
                        &Patch::Merge(json!({"spec": {"suspend": true}})),
                    )
                    .await?;
                anyhow::Ok(())
            }
        })
        .buffer_unordered(16)
        .try_collect::<Vec<_>>()
        .await?;
    let suspending = Instant::now();
    while followed.state().iter().any(|p| {
        p.status
            .as_ref()
            .is_none_or(|s| s.next_scheduled_backup.is_some())
    }) {
        if suspending.elapsed() > Duration::from_secs(300) {
            bail!("the operator did not show every policy suspended in 5 minutes");
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    follow.abort();
    tokio::time::sleep(Duration::from_secs(10)).await;
    let rest_before = api_request_times(&client).await?;
    let at_rest = request_rate(&client, Duration::from_secs(60)).await?;
    print_request_times("at rest", &rest_before, &api_request_times(&client).await?);
    let (rss_now, hwm) = operator_rss().unwrap_or_default();
    if watch.is_finished() {
        // Ended early: the delays would be missing runs.
        watch.await??;
        bail!("the watch of new Backups ended early");
    }
    watch.abort();
    // What the API server takes for one first write per policy with nothing else to do: the
    // floor under the first row.
    scale_operator(&client, 0).await?;
    let (alone, alone_cpu) = first_writes_alone(&client, opts.policies, opts.per_minute).await?;
    // Left running, as it was found: removing the history's finalizers needs it.
    scale_operator(&client, 1).await?;
    let seen = delays.lock().map(|d| d.clone()).unwrap_or_default();
    let sorted = |from: jiff::Timestamp, to: jiff::Timestamp| {
        let mut d: Vec<f64> = seen
            .iter()
            .filter(|(at, _)| *at > from && *at <= to)
            .map(|(_, delay)| *delay)
            .collect();
        d.sort_by(|a, b| a.total_cmp(b));
        d
    };
    let ever = jiff::Timestamp::MIN;

    println!(
        "\n### Controller at scale: {} policies ({} every minute), {} backups of history\n",
        opts.policies, opts.per_minute, opts.backups
    );
    println!("| measure | value | goal |");
    println!("|---|---:|---|");
    println!(
        "| time from start until every policy has nextScheduledBackup (of which the pod took until its process ran) | {:.1} s ({:.1} s) | < 30 s at 10x |",
        ready_after.as_secs_f64(),
        process_up.as_secs_f64()
    );
    let per_write = |cpu: Option<f64>| {
        cpu.map_or("API server CPU not read".into(), |cpu| {
            format!(
                "API server {cpu:.1} CPU s, {:.1} ms a policy",
                1000.0 * cpu / opts.policies as f64
            )
        })
    };
    println!(
        "| the same, API server CPU | {} | |",
        per_write(apiserver_cpu_until_ready)
    );
    println!(
        "| the API server alone, operator stopped: as many new policies given the operator's first status write (next run, Ready), {} at a time | {:.1} s ({}) | |",
        backstop_controller::policy::POLICY_CONCURRENCY,
        alone.as_secs_f64(),
        per_write(alone_cpu)
    );
    println!(
        "| time from start until every policy was decided with its Backups listed (runs due, retention) | {:.1} s | |",
        decided_after.as_secs_f64()
    );
    println!(
        "| operator RSS: peak during the run / now / kernel high-water mark | {:.0} / {:.0} / {:.0} MiB | < 64 MiB at 1x, < 200 MiB at 10x |",
        peak_rss as f64 / 1024.0,
        rss_now as f64 / 1024.0,
        hwm as f64 / 1024.0
    );
    for (label, d, goal) in [
        (
            "runs scheduled after the operator started",
            sorted(started_at, observed_until),
            "",
        ),
        (
            "runs scheduled after start-up was over (steady state)",
            sorted(decided_at, observed_until),
            "p99 < 2 s",
        ),
        (
            "runs due while the operator was stopped, made when it started (catch-up)",
            sorted(ever, started_at),
            "",
        ),
    ] {
        println!(
            "| delay scheduled time -> Backup seen, {label}: p50 / p99 / max ({} runs) | {:.2} / {:.2} / {:.2} s | {goal} |",
            d.len(),
            quantile(&d, 0.5),
            quantile(&d, 0.99),
            d.last().copied().unwrap_or(f64::NAN)
        );
    }
    // Catch-up runs are late by the time the operator was stopped; what it controls is how soon
    // after its start it makes them.
    let mut after_start: Vec<f64> = seen
        .iter()
        .filter(|(at, _)| *at <= started_at)
        .map(|(at, delay)| {
            let seen_at = *at + jiff::SignedDuration::from_secs_f64(*delay);
            seen_at.duration_since(started_at).as_secs_f64()
        })
        .collect();
    after_start.sort_by(|a, b| a.total_cmp(b));
    println!(
        "| catch-up runs: time from the operator's start until the Backup was seen, p50 / p99 / max | {:.2} / {:.2} / {:.2} s | |",
        quantile(&after_start, 0.5),
        quantile(&after_start, 0.99),
        after_start.last().copied().unwrap_or(f64::NAN)
    );
    println!("| API requests/s, whole cluster, operator stopped | {baseline:.1} | |");
    println!("| API requests/s, whole cluster, operator at rest | {at_rest:.1} | no storm |");
    println!(
        "| API requests/s added by the operator at rest | {:.1} | |",
        at_rest - baseline
    );
    // Where the tail is: one line per scheduled time (the per-minute policies' runs come in 50s).
    let mut times: Vec<jiff::Timestamp> = seen.iter().map(|(at, _)| *at).collect();
    times.sort();
    times.dedup();
    println!("\n| scheduled at | runs | p50 | max |\n|---|---:|---:|---:|");
    let mut previous = started_at;
    for at in times
        .into_iter()
        .filter(|at| *at > started_at && *at <= observed_until)
    {
        let d = sorted(previous, at);
        previous = at;
        println!(
            "| {at} | {} | {:.2} s | {:.2} s |",
            d.len(),
            quantile(&d, 0.5),
            d.last().copied().unwrap_or(f64::NAN)
        );
    }
    Ok(())
}

/// Records when each Backup made after `from` (a resourceVersion) is first seen, with the delay
/// since its scheduled time, watching from `from` (and from the last version seen when the API
/// server ends a watch). Fails when the API server no longer has that version (410 Gone).
async fn follow_new_backups(
    backups: Api<Backup>,
    from: String,
    mut seen: HashSet<String>,
    delays: std::sync::Arc<std::sync::Mutex<Vec<(jiff::Timestamp, f64)>>>,
) -> anyhow::Result<()> {
    let mut version = from;
    loop {
        let stream = backups.watch(&WatchParams::default(), &version).await?;
        futures::pin_mut!(stream);
        while let Some(event) = stream.next().await {
            let backup = match event? {
                WatchEvent::Added(b) | WatchEvent::Modified(b) | WatchEvent::Deleted(b) => b,
                WatchEvent::Bookmark(mark) => {
                    version = mark.metadata.resource_version;
                    continue;
                }
                WatchEvent::Error(e) => bail!("watching Backups from version {version}: {e}"),
            };
            if let Some(v) = backup.resource_version() {
                version = v;
            }
            let scheduled = backup
                .annotations()
                .get(labels::SCHEDULED_TIME)
                .and_then(|t| t.parse::<jiff::Timestamp>().ok());
            if let Some(at) = scheduled
                && seen.insert(backup.name_any())
            {
                let delay = jiff::Timestamp::now().duration_since(at).as_secs_f64();
                if let Ok(mut d) = delays.lock() {
                    d.push((at, delay));
                }
            }
        }
    }
}
