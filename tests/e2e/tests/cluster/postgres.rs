//! The command strategy on a real PostgreSQL 15 (Debian's binaries in an image of their own,
//! `import_postgres_image` in hack/lib.sh) running as a pod, reached by its pod IP (the cluster
//! has no DNS). `pg_dump -Fc` runs in the user's container beside Backstop's mover; the test
//! drops the database, restores it with `pg_restore` through a Restore, and compares every
//! table's rows and the large object. The artifact is read without Backstop
//! (`zstd -dc | pg_restore -l`). Faults: a wrong password, a server that is not there, a
//! command that prints nothing, a dump killed midway and an image that cannot be pulled: each
//! fails with its reason and the command's words, and nothing is committed.

use backstop_api::{Backup, BackupPhase, BackupPolicy, Restore};
use backstop_e2e::*;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::api::{Api, DeleteParams};
use serde_json::{Value, json};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};
use tokio::sync::OnceCell;

const IMAGE: &str = "backstop-e2e-postgres:15";
const PASSWORD: &str = "s3cret-e2e";
const PG_BIN: &str = "/usr/lib/postgresql/15/bin";

/// The image is built and imported once per test binary.
async fn postgres_image() -> anyhow::Result<()> {
    static IMPORTED: OnceCell<()> = OnceCell::const_new();
    IMPORTED
        .get_or_try_init(|| async {
            let status = Command::new("bash")
                .arg("-c")
                .arg(format!(". hack/lib.sh && import_postgres_image {IMAGE}"))
                .current_dir(repo_root())
                .status()?;
            anyhow::ensure!(status.success(), "building the {IMAGE} image failed");
            Ok(())
        })
        .await
        .map(|_| ())
}

/// The spec of a PostgreSQL server pod with the password from Secret `db` and its data in
/// `data` (initialised on first start), listening on its pod IP.
fn server_pod_spec(data: Value) -> Value {
    let script = format!(
        "set -e; printf '%s' \"$PGPASSWORD\" >/tmp/pw
if [ ! -f /var/lib/postgresql/data/PG_VERSION ]; then
  {PG_BIN}/initdb -D /var/lib/postgresql/data -U postgres --pwfile=/tmp/pw --auth=scram-sha-256 --locale=C -E UTF8 >/dev/null
  echo 'host all all 0.0.0.0/0 scram-sha-256' >>/var/lib/postgresql/data/pg_hba.conf
fi
exec {PG_BIN}/postgres -D /var/lib/postgresql/data -c listen_addresses='*' -k /tmp"
    );
    json!({
        "securityContext": {"runAsUser": 999, "runAsGroup": 999},
        "containers": [{
            "name": "postgres", "image": IMAGE, "imagePullPolicy": "IfNotPresent",
            "command": ["/bin/sh", "-c", script],
            "env": [password_from_secret()],
            "volumeMounts": [{"name": "data", "mountPath": "/var/lib/postgresql"}]}],
        "volumes": [data]
    })
}

/// The image, and the Secret `db` with the password (opted in: command containers get it).
async fn prerequisites(ns: &TestNamespace) -> anyhow::Result<()> {
    postgres_image().await?;
    create::<Secret>(
        ns,
        json!({"apiVersion": "v1", "kind": "Secret",
               "metadata": {"name": "db", "labels": {"backstop.dev/credentials": "true"}},
               "stringData": {"password": PASSWORD}}),
    )
    .await?;
    Ok(())
}

/// A PostgreSQL server pod (data in an emptyDir); returns its IP once it accepts connections.
async fn postgres_server(ns: &TestNamespace) -> anyhow::Result<String> {
    prerequisites(ns).await?;
    create::<Pod>(
        ns,
        json!({"apiVersion": "v1", "kind": "Pod",
               "metadata": {"name": "postgres", "labels": {"app": "postgres"}},
               "spec": server_pod_spec(json!({"name": "data", "emptyDir": {}}))}),
    )
    .await?;
    serving(ns, "app=postgres").await
}

/// The IP of a running pod labelled `selector`, once PostgreSQL accepts connections there.
async fn serving(ns: &TestNamespace, selector: &str) -> anyhow::Result<String> {
    let pods = ns.api::<Pod>();
    let ip = wait_for(
        Duration::from_secs(120),
        "a running postgres pod's IP",
        || async {
            let list = pods
                .list(&kube::api::ListParams::default().labels(selector))
                .await?;
            Ok(list.items.into_iter().find_map(|pod| {
                let status = pod.status.unwrap_or_default();
                let live = pod.metadata.deletion_timestamp.is_none()
                    && status.phase.as_deref() == Some("Running");
                live.then_some(status.pod_ip).flatten()
            }))
        },
    )
    .await?;
    wait_until(
        Duration::from_secs(60),
        "postgres to accept connections",
        || {
            let ip = ip.clone();
            async move { Ok(psql(&ip, "postgres", "SELECT 1").is_ok()) }
        },
    )
    .await?;
    Ok(ip)
}

fn password_from_secret() -> Value {
    json!({"name": "PGPASSWORD", "valueFrom": {"secretKeyRef": {"name": "db", "key": "password"}}})
}

/// Runs `sql` in `db` on the server at `ip` with the host's psql; its rows, unaligned.
fn psql(ip: &str, db: &str, sql: &str) -> anyhow::Result<String> {
    output_of(
        Command::new(format!("{PG_BIN}/psql"))
            .env("PGPASSWORD", PASSWORD)
            .env("PGCONNECT_TIMEOUT", "3")
            .args([
                "-h",
                ip,
                "-U",
                "postgres",
                "-d",
                db,
                "-v",
                "ON_ERROR_STOP=1",
            ])
            .args(["-X", "-q", "-A", "-t", "-c", sql]),
    )
}

/// A schema with a few thousand rows across several tables, a bytea column, a large object and
/// a view.
const SCHEMA: &str = "
CREATE TABLE customers (id int PRIMARY KEY, name text NOT NULL, email text, created timestamptz);
INSERT INTO customers SELECT g, 'customer ' || g, 'c' || g || '@example.com',
  timestamptz '2026-01-01 00:00+00' + g * interval '1 minute' FROM generate_series(1, 3000) g;
CREATE TABLE orders (id int PRIMARY KEY, customer_id int NOT NULL REFERENCES customers,
  amount numeric(10,2), note text);
INSERT INTO orders SELECT g, 1 + g % 3000, (g * 37 % 100000) / 100.0, repeat(md5(g::text), 1 + g % 5)
  FROM generate_series(1, 8000) g;
CREATE TABLE attachments (id int PRIMARY KEY, body bytea NOT NULL);
INSERT INTO attachments SELECT g, decode(repeat(md5(g::text), 64), 'hex') FROM generate_series(1, 400) g;
SELECT lo_from_bytea(424242, decode(repeat(md5('large object'), 4096), 'hex'));
CREATE VIEW spenders AS SELECT customer_id, sum(amount) AS total FROM orders GROUP BY 1;
";

/// Every table's row count and checksum, the large objects' and the view's.
const CHECKSUMS: &str = "
SELECT 'customers', count(*), md5(string_agg(c::text, '|' ORDER BY id)) FROM customers c
UNION ALL SELECT 'orders', count(*), md5(string_agg(o::text, '|' ORDER BY id)) FROM orders o
UNION ALL SELECT 'attachments', count(*), md5(string_agg(md5(body), '|' ORDER BY id)) FROM attachments
UNION ALL SELECT 'large objects', count(*), md5(string_agg(oid || ':' || md5(lo_get(oid)), '|' ORDER BY oid))
  FROM pg_largeobject_metadata
UNION ALL SELECT 'spenders', count(*), md5(string_agg(s::text, '|' ORDER BY customer_id)) FROM spenders s
";

/// The command strategy for the server at `host`: `pg_dump -Fc` of `shop`, restored with
/// `pg_restore --clean --if-exists`.
fn command_strategy(host: &str, dump: &[&str], env: Value) -> Value {
    json!({"command": {
        "image": IMAGE,
        "command": dump,
        "args": ["-h", host, "-U", "postgres", "-d", "shop"],
        "env": [env],
        "restore": {
            "image": IMAGE,
            "command": ["pg_restore", "--clean", "--if-exists", "--no-owner", "-h", host, "-U", "postgres", "-d", "shop"],
            "env": [password_from_secret()]
        }
    }})
}

#[tokio::test]
#[ignore = "needs a cluster: run `make test`, or hack/cluster up + KUBECONFIG + --ignored"]
async fn a_pg_dump_backup_restores_a_dropped_database_row_for_row() -> anyhow::Result<()> {
    let client = cluster().await?;
    install_operator(&client).await?;
    let ns = TestNamespace::create(&client, "e2e-pg").await?;
    let repo = ns.repository().await?;
    let ip = postgres_server(&ns).await?;
    psql(&ip, "postgres", "CREATE DATABASE shop")?;
    psql(&ip, "shop", SCHEMA)?;
    let before = psql(&ip, "shop", CHECKSUMS)?;
    assert_eq!(before.lines().count(), 5, "{before}");
    assert!(before.contains("customers|3000|"), "{before}");

    create::<BackupPolicy>(
        &ns,
        json!({"apiVersion": "backstop.dev/v1alpha1", "kind": "BackupPolicy",
               "metadata": {"name": "shop-db"},
               "spec": {"schedule": "0 0 1 1 *", "retention": {"keepLast": 3},
                        "strategy": command_strategy(&ip, &["pg_dump", "-Fc"], password_from_secret())}}),
    )
    .await?;
    let started = Instant::now();
    create::<Backup>(
        &ns,
        json!({"apiVersion": "backstop.dev/v1alpha1", "kind": "Backup",
               "metadata": {"name": "shop-now"}, "spec": {"policyRef": "shop-db"}}),
    )
    .await?;
    let backup = finished_backup(&ns, "shop-now", Duration::from_secs(180)).await?;
    let backup_seconds = started.elapsed().as_secs_f64();
    let status = backup.status.clone().unwrap_or_default();
    assert_eq!(status.phase, BackupPhase::Completed, "{status:?}");
    let stream = &status.volumes[0];
    assert!(stream.stream && stream.pvc == "dump", "{stream:?}");
    let dumped = stream.source_bytes.unwrap_or(0);
    assert!(dumped > 100_000, "a dump of the schema: {dumped} bytes");
    let artifact = repo.join(stream.artifact.as_deref().unwrap_or_default());
    assert!(artifact.ends_with("dump.zst"), "{}", artifact.display());
    // Readable without Backstop: zstd and pg_restore list the tables. (pg_restore stops
    // reading after the table of contents, so zstd's SIGPIPE is not a failure.)
    let listed = output_of(Command::new("bash").arg("-c").arg(format!(
        "zstd -dc {} | {PG_BIN}/pg_restore -l",
        artifact.display()
    )))?;
    for table in [
        "TABLE public customers",
        "TABLE public orders",
        "BLOB - 424242",
    ] {
        assert!(listed.contains(table), "{table} not in:\n{listed}");
    }
    let started_events = events(&ns, "BackupStarted").await?;
    assert!(
        started_events
            .iter()
            .any(|(on, note)| on == "shop-now" && note.contains("pg_dump -Fc")),
        "{started_events:?}"
    );

    psql(&ip, "postgres", "DROP DATABASE shop")?;
    psql(&ip, "postgres", "CREATE DATABASE shop")?;
    assert!(psql(&ip, "shop", CHECKSUMS).is_err(), "the tables are gone");
    let started = Instant::now();
    create::<Restore>(
        &ns,
        json!({"apiVersion": "backstop.dev/v1alpha1", "kind": "Restore",
               "metadata": {"name": "shop-back"}, "spec": {"backupName": "shop-now"}}),
    )
    .await?;
    let restore = finished_restore(&ns, "shop-back", Duration::from_secs(180)).await?;
    let restore_seconds = started.elapsed().as_secs_f64();
    let rstatus = restore.status.clone().unwrap_or_default();
    assert_eq!(rstatus.phase, BackupPhase::Completed, "{rstatus:?}");
    assert_eq!(rstatus.bytes_restored, Some(dumped), "{rstatus:?}");
    assert_eq!(psql(&ip, "shop", CHECKSUMS)?, before, "every row is back");
    println!(
        "pg_dump -Fc: {dumped} bytes ({} stored), backup {backup_seconds:.1} s, restore {restore_seconds:.1} s",
        stream.bytes.unwrap_or(0)
    );

    // Without a restore command anywhere (the Restore's, the policy's, the one a backup
    // recorded), a Restore of a stream is refused before any Job runs.
    let policies = ns.api::<BackupPolicy>();
    let mut policy = policies.get("shop-db").await?;
    if let Some(c) = policy
        .spec
        .strategy
        .as_mut()
        .and_then(|s| s.command.as_mut())
    {
        c.restore = None;
    }
    policies
        .replace("shop-db", &Default::default(), &policy)
        .await?;
    create::<Backup>(
        &ns,
        json!({"apiVersion": "backstop.dev/v1alpha1", "kind": "Backup",
               "metadata": {"name": "shop-later"}, "spec": {"policyRef": "shop-db"}}),
    )
    .await?;
    let later = finished_backup(&ns, "shop-later", Duration::from_secs(180)).await?;
    assert_eq!(later.phase(), BackupPhase::Completed, "{:?}", later.status);
    create::<Restore>(
        &ns,
        json!({"apiVersion": "backstop.dev/v1alpha1", "kind": "Restore",
               "metadata": {"name": "no-command"}, "spec": {"backupName": "shop-later"}}),
    )
    .await?;
    let refused = finished_restore(&ns, "no-command", Duration::from_secs(60)).await?;
    let rstatus = refused.status.clone().unwrap_or_default();
    assert_eq!(rstatus.phase, BackupPhase::Failed, "{rstatus:?}");
    assert!(rstatus.job.is_none(), "refused before any Job: {rstatus:?}");
    let failed = backstop_api::condition::find(
        &rstatus.conditions,
        backstop_api::condition::ConditionType::Failed,
    )
    .map(|c| c.reason.clone());
    assert_eq!(failed.as_deref(), Some("NoRestoreCommand"), "{rstatus:?}");
    Ok(())
}

/// What a repository holds for one backup (files, not the directory itself).
fn stored(repo: &Path, ns: &TestNamespace, backup: &str) -> Vec<String> {
    std::fs::read_dir(repo.join(&ns.name).join(backup))
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test]
#[ignore = "needs a cluster: run `make test`, or hack/cluster up + KUBECONFIG + --ignored"]
async fn failed_dumps_commit_nothing_and_say_why() -> anyhow::Result<()> {
    let client = cluster().await?;
    install_operator(&client).await?;
    let ns = TestNamespace::create(&client, "e2e-pgfault").await?;
    let repo = ns.repository().await?;
    let ip = postgres_server(&ns).await?;
    psql(&ip, "postgres", "CREATE DATABASE shop")?;
    psql(&ip, "shop", SCHEMA)?;
    let wrong_password = json!({"name": "PGPASSWORD", "value": "not-the-password"});
    // Kubernetes turns `$$` in a command into `$`.
    let killed = format!("pg_dump -Fc -h {ip} -U postgres -d shop | head -c 4096; kill -KILL $$$$");
    let cases: Vec<(&str, Value, &str, Vec<&str>)> = vec![
        (
            "wrong-password",
            command_strategy(&ip, &["pg_dump", "-Fc"], wrong_password),
            "CommandFailed",
            vec!["status 1", "password authentication failed"],
        ),
        (
            "server-down",
            command_strategy("127.0.0.1", &["pg_dump", "-Fc"], password_from_secret()),
            "CommandFailed",
            vec!["status 1", "Connection refused"],
        ),
        (
            "prints-nothing",
            json!({"command": {"image": IMAGE, "command": ["sh", "-c", "echo connected >&2"]}}),
            "EmptyDump",
            vec!["written nothing", "connected"],
        ),
        (
            "killed-midway",
            json!({"command": {"image": IMAGE, "command": ["sh", "-c", killed],
                               "env": [password_from_secret()]}}),
            "CommandFailed",
            vec!["killed by signal 9"],
        ),
        (
            "no-such-image",
            json!({"command": {"image": "backstop-e2e-no-such-image:none", "command": ["pg_dump"]}}),
            "CommandFailed",
            vec!["cannot start"],
        ),
    ];
    for (name, strategy, _, _) in &cases {
        create::<Backup>(
            &ns,
            json!({"apiVersion": "backstop.dev/v1alpha1", "kind": "Backup",
                   "metadata": {"name": name},
                   "spec": {"repository": "default", "strategy": strategy}}),
        )
        .await?;
    }
    for (name, _, reason, said) in &cases {
        let backup = backup_failed(&ns, name, reason, Duration::from_secs(180)).await?;
        let message = backup
            .status
            .as_ref()
            .and_then(|s| s.message.clone())
            .unwrap_or_default();
        for s in said {
            assert!(message.contains(s), "{name}: {s:?} not in {message:?}");
        }
        assert_eq!(
            stored(&repo, &ns, name),
            Vec::<String>::new(),
            "{name}: nothing committed"
        );
    }
    Ok(())
}

/// A Deployment `name` of `replicas` pods labelled `app=<name>` running `spec`, opted in to
/// being scaled down for a backup.
async fn deployment(
    ns: &TestNamespace,
    name: &str,
    replicas: i32,
    spec: Value,
) -> anyhow::Result<()> {
    create::<Deployment>(
        ns,
        json!({"apiVersion": "apps/v1", "kind": "Deployment",
               "metadata": {"name": name, "labels": {"backstop.dev/quiesce": "true"}},
               "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
                        "template": {"metadata": {"labels": {"app": name}}, "spec": spec}}}),
    )
    .await?;
    Ok(())
}

/// A policy for the PVCs labelled `data-of=<app>` that stops the Deployment `app` for the copy.
fn quiesced_policy(name: &str, app: &str) -> Value {
    json!({"apiVersion": "backstop.dev/v1alpha1", "kind": "BackupPolicy",
           "metadata": {"name": name},
           "spec": {"schedule": "0 0 1 1 *",
                    "target": {"pvcSelector": {"matchLabels": {"data-of": app}}},
                    "strategy": {"quiesce": {"scaleDown": {"kind": "Deployment", "name": app}}}}})
}

#[tokio::test]
#[ignore = "needs a cluster: run `make test`, or hack/cluster up + KUBECONFIG + --ignored"]
async fn a_quiesced_postgres_is_copied_shut_down_and_given_back() -> anyhow::Result<()> {
    let client = cluster().await?;
    install_operator(&client).await?;
    let ns = TestNamespace::create(&client, "e2e-quiesce").await?;
    let repo = ns.repository().await?;
    prerequisites(&ns).await?;
    let data = ns.volume("pgdata", &[("data-of", "pg")]).await?;
    std::os::unix::fs::chown(&data, Some(999), Some(999))?;
    let on_pvc = json!({"name": "data", "persistentVolumeClaim": {"claimName": "pgdata"}});
    deployment(&ns, "pg", 1, server_pod_spec(on_pvc)).await?;
    let ip = serving(&ns, "app=pg").await?;
    psql(&ip, "postgres", "CREATE DATABASE shop")?;
    psql(&ip, "shop", SCHEMA)?;
    let before = psql(&ip, "shop", CHECKSUMS)?;
    assert!(
        data.join("data/postmaster.pid").exists(),
        "a running server has its pid file"
    );

    create::<BackupPolicy>(&ns, quiesced_policy("pg-files", "pg")).await?;
    create::<Backup>(
        &ns,
        json!({"apiVersion": "backstop.dev/v1alpha1", "kind": "Backup",
               "metadata": {"name": "pg-files-now"}, "spec": {"policyRef": "pg-files"}}),
    )
    .await?;
    let backup = finished_backup(&ns, "pg-files-now", Duration::from_secs(240)).await?;
    let status = backup.status.clone().unwrap_or_default();
    assert_eq!(status.phase, BackupPhase::Completed, "{status:?}");
    let record = status.quiesce.clone().expect("the quiesce is recorded");
    assert_eq!(record.replicas, 1, "{record:?}");
    let (down, stopped, restored) = (
        record.scaled_down_time.expect("scaled down"),
        record.stopped_time.expect("stopped"),
        record.restored_time.expect("given back"),
    );
    assert!(down <= stopped && stopped <= restored, "{record:?}");
    // The copy is of a cleanly shut down server: no pid file.
    let artifact = repo.join(status.volumes[0].artifact.as_deref().unwrap_or_default());
    let copy = tempfile::tempdir()?;
    extract_with_tar(&artifact, copy.path())?;
    assert!(copy.path().join("data/PG_VERSION").exists());
    assert!(
        !copy.path().join("data/postmaster.pid").exists(),
        "the server was stopped when its files were read"
    );
    for reason in ["Quiesced", "QuiesceReleased"] {
        let seen = events(&ns, reason).await?;
        assert!(
            seen.iter().any(|(on, _)| on == "pg-files-now"),
            "{reason}: {seen:?}"
        );
    }
    // Given back: one replica again, without Backstop's annotations, serving the same data.
    let pg = ns.api::<Deployment>().get("pg").await?;
    assert_eq!(pg.spec.as_ref().and_then(|s| s.replicas), Some(1));
    let annotations = pg.metadata.annotations.unwrap_or_default();
    assert!(
        !annotations.keys().any(|k| k.starts_with("backstop.dev/")),
        "{annotations:?}"
    );
    let ip = serving(&ns, "app=pg").await?;
    assert_eq!(psql(&ip, "shop", CHECKSUMS)?, before);
    println!(
        "quiesce: the server was down {:.1} s for a copy of {} bytes",
        record.down_seconds.unwrap_or(0.0),
        status.volumes[0].source_bytes.unwrap_or(0)
    );
    Ok(())
}

/// A namespace with the Deployment `slow` of two pods that ignore SIGTERM (each takes its whole
/// 15 s grace period to stop) and its volume `files`, and Backup `backup` of it under a quiescing
/// policy, returned once the Backup has scaled the application down (it stays Running a while).
async fn slow_application_held(
    client: &kube::Client,
    prefix: &str,
    backup: &str,
) -> anyhow::Result<TestNamespace> {
    install_operator(client).await?;
    let ns = TestNamespace::create(client, prefix).await?;
    ns.repository().await?;
    postgres_image().await?;
    let data = ns.volume("files", &[("data-of", "slow")]).await?;
    write_sample_tree(&data, 3)?;
    let spec = json!({
        "terminationGracePeriodSeconds": 15,
        "containers": [{"name": "slow", "image": IMAGE, "imagePullPolicy": "IfNotPresent",
                        "command": ["/bin/sh", "-c", "trap '' TERM; while :; do sleep 1; done"]}]
    });
    deployment(&ns, "slow", 2, spec).await?;
    let pods = ns.api::<Pod>();
    wait_until(Duration::from_secs(120), "both pods to run", || async {
        let list = pods
            .list(&kube::api::ListParams::default().labels("app=slow"))
            .await?;
        let running = list
            .items
            .iter()
            .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
            .count();
        Ok(running == 2)
    })
    .await?;
    create::<BackupPolicy>(&ns, quiesced_policy("slow-files", "slow")).await?;
    create::<Backup>(
        &ns,
        json!({"apiVersion": "backstop.dev/v1alpha1", "kind": "Backup",
               "metadata": {"name": backup}, "spec": {"policyRef": "slow-files"}}),
    )
    .await?;
    let backups = ns.api::<Backup>();
    wait_until(
        Duration::from_secs(60),
        "the application to be scaled down",
        || async {
            let b = backups.get(backup).await?;
            Ok(b.status
                .and_then(|s| s.quiesce)
                .is_some_and(|q| q.scaled_down_time.is_some()))
        },
    )
    .await?;
    Ok(ns)
}

/// Asserts that `slow` is back at its two replicas and no longer held by a backup.
async fn given_back(ns: &TestNamespace, who: &str) -> anyhow::Result<()> {
    let slow = ns.api::<Deployment>().get("slow").await?;
    assert_eq!(
        slow.spec.as_ref().and_then(|s| s.replicas),
        Some(2),
        "{who}"
    );
    let annotations = slow.metadata.annotations.unwrap_or_default();
    assert!(
        !annotations.contains_key("backstop.dev/quiesced-by"),
        "{who}: still held"
    );
    Ok(())
}

#[tokio::test]
#[ignore = "needs a cluster: run `make test`, or hack/cluster up + KUBECONFIG + --ignored"]
async fn a_running_backup_edited_into_an_invalid_one_gives_the_application_back()
-> anyhow::Result<()> {
    let client = cluster().await?;
    let ns = slow_application_held(&client, "e2e-quiesce-edit", "slow-edited").await?;
    // While the pods stop, the spec is made invalid: a policy and a target at once.
    ns.api::<Backup>()
        .patch(
            "slow-edited",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(
                json!({"spec": {"target": {"pvcSelector": {"matchLabels": {"x": "y"}}}}}),
            ),
        )
        .await?;
    let backup = backup_failed(&ns, "slow-edited", "InvalidSpec", Duration::from_secs(60)).await?;
    let record = backup.status.and_then(|s| s.quiesce).unwrap_or_default();
    assert!(record.restored_time.is_some(), "{record:?}");
    given_back(&ns, "the failed backup gave both replicas back").await
}

#[tokio::test]
#[ignore = "needs a cluster: run `make test`, or hack/cluster up + KUBECONFIG + --ignored"]
async fn an_operator_killed_while_the_application_is_down_gives_it_back_after_restarting()
-> anyhow::Result<()> {
    let client = cluster().await?;
    let ns = slow_application_held(&client, "e2e-quiesce-crash", "slow-now").await?;
    let leases: Api<Lease> = Api::namespaced(client.clone(), "backstop-system");
    let leader = leases
        .get("backstop-controller")
        .await?
        .spec
        .and_then(|s| s.holder_identity)
        .unwrap_or_default();
    let operator: Api<Pod> = Api::namespaced(client.clone(), "backstop-system");
    operator
        .delete(
            &leader,
            &DeleteParams {
                grace_period_seconds: Some(0),
                ..Default::default()
            },
        )
        .await?;
    let slow = ns.api::<Deployment>().get("slow").await?;
    assert_eq!(
        slow.spec.as_ref().and_then(|s| s.replicas),
        Some(0),
        "the operator died with the application down"
    );
    let backup = finished_backup(&ns, "slow-now", Duration::from_secs(240)).await?;
    assert_eq!(
        backup.phase(),
        BackupPhase::Completed,
        "{:?}",
        backup.status
    );
    given_back(&ns, "the restarted operator gave both replicas back").await
}
