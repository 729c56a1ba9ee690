//! `backstop mover sync`: the mover side of a repository's sync. It reads what the repository
//! holds of one namespace (only `<namespace>/`), lists the namespace's Backups, and creates a
//! Backup for each whole backup that has none, labelled imported and carrying its record. Its
//! pod's identity may create and list Backups in that namespace and nothing else; the operator
//! checks each record before it writes the Backup's status from it.

use backstop_api::contract::{self, Reason, Synced};
use backstop_api::record::ImportRecord;
use backstop_api::{Backup, BackupSpec, labels, naming};
use backstop_mover::catalog;
use backstop_mover::repository::Repository;
use backstop_mover::restic::Restic;
use futures::StreamExt;
use kube::api::{Api, ListParams, ObjectMeta, PostParams};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Instant;

/// How many skipped objects the report names (the rest are counted).
const NAMED: usize = 8;
/// Backups created at once.
const CREATING: usize = 8;

/// What the sync was asked to do.
pub struct SyncRequest<'a> {
    pub namespace: &'a str,
    /// The BackupRepository the imported Backups belong to.
    pub repository: &'a str,
    /// A restic repository's root, when the repository has format restic.
    pub restic: Option<&'a str>,
    pub password: &'a str,
}

/// What the repository holds, gathered as it is read: how many backups have their Backup
/// object, the Backups to create for those that have none (at most `MAX_IMPORTS`; the rest are
/// counted, not read), and what was skipped (counted; the first `NAMED` named with why). Nothing
/// here grows with the number of objects listed.
#[derive(Default)]
struct Found {
    present: u64,
    create: Vec<Backup>,
    deferred: u64,
    skipped: u64,
    named: Vec<String>,
}

impl Found {
    fn skip(&mut self, what: &str, why: &str) {
        self.skipped += 1;
        if self.named.len() < NAMED {
            let line = format!("{what}: {why}");
            self.named
                .push(backstop_api::condition::truncate(line, 240));
        }
    }

    /// A backup with no Backup object: read (`read`, or why it is no whole backup) and made a
    /// Backup while fewer than `MAX_IMPORTS` are, else left for the next sync unread.
    fn missing(
        &mut self,
        req: &SyncRequest<'_>,
        name: &str,
        read: impl FnOnce() -> Result<ImportRecord, (String, String)>,
        now: jiff::Timestamp,
    ) {
        if self.create.len() >= contract::MAX_IMPORTS {
            self.deferred += 1;
            return;
        }
        match read() {
            Ok(record) => match imported(req, name, &record, now) {
                Ok(backup) => self.create.push(backup),
                Err(why) => self.skip(&format!("backup {name:?}"), &why),
            },
            Err((what, why)) => self.skip(&what, &why),
        }
    }
}

pub fn sync(store: Arc<dyn Repository>, req: &SyncRequest<'_>) -> Result<Synced, (Reason, String)> {
    let started = Instant::now();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| {
            (
                Reason::MoverFailed,
                format!("starting the async runtime: {e}"),
            )
        })?;
    let client = runtime.block_on(kube::Client::try_default()).map_err(|e| {
        (
            Reason::ImportRefused,
            format!("connecting to the Kubernetes API with the pod's identity: {e}"),
        )
    })?;
    let api: Api<Backup> = Api::namespaced(client, req.namespace);
    let unusable = |e: backstop_mover::repository::RepositoryError| {
        (
            e.reason().unwrap_or(Reason::RepositoryUnusable),
            e.to_string(),
        )
    };
    let owner = backstop_mover::owner::read(store.as_ref(), req.namespace).map_err(unusable)?;
    // The Backups are listed before the repository is read: a Backup's object goes only after
    // its data (removing a Backup removes its records and snapshots first), so data read after
    // the listing whose Backup is not in it has none to go with (deleted with Retain, or a new
    // cluster) and is imported; a Backup made since is answered AlreadyExists (counted present).
    let present = runtime.block_on(present(&api)).map_err(|e| {
        (
            Reason::ImportRefused,
            format!("listing the Backups of namespace {:?}: {e}", req.namespace),
        )
    })?;
    let now = jiff::Timestamp::now();
    let mut found = Found::default();
    match req.restic {
        Some(root) => {
            let (restic, _) = Restic::open(store.clone(), root, req.password, false)
                .map_err(|e| (e.reason, e.message))?;
            let backups = catalog::restic_backups(&restic, req.namespace)
                .map_err(|e| (e.reason, e.message))?;
            for (name, backup) in backups {
                match backup {
                    // An incomplete backup that has its Backup object is one still running.
                    _ if present.contains(&name) => found.present += 1,
                    Ok(mut record) => found.missing(
                        req,
                        &name,
                        || {
                            record.verification =
                                catalog::verification(store.as_ref(), req.namespace, &name);
                            Ok(record)
                        },
                        now,
                    ),
                    Err(why) => found.skip(&format!("backup {name:?}"), &why),
                }
            }
        }
        None => catalog::scan(store.as_ref(), req.namespace, |entry| match entry {
            catalog::Entry::Foreign(key) => {
                found.skip(&key, "not in a backup's directory: not Backstop's")
            }
            catalog::Entry::Backup(name, _) if present.contains(&name) => found.present += 1,
            catalog::Entry::Backup(name, dir) => found.missing(
                req,
                &name,
                || {
                    catalog::read(store.as_ref(), req.namespace, &name, &dir)
                        .map_err(|why| (format!("{}/{name}/", req.namespace), why))
                },
                now,
            ),
        })
        .map_err(unusable)?,
    }
    let Found {
        present: already,
        create,
        deferred,
        skipped,
        named,
    } = found;
    let mut synced = Synced {
        backups: already + create.len() as u64 + deferred,
        deferred,
        present: already,
        skipped,
        skipped_objects: named,
        owner: owner.owner().map(str::to_string),
        ..Synced::default()
    };
    let created: Vec<(String, Result<Created, kube::Error>)> = runtime.block_on(
        futures::stream::iter(create)
            .map(|backup| {
                let api = api.clone();
                async move {
                    let name = backup.metadata.name.clone().unwrap_or_default();
                    let outcome = match api.create(&PostParams::default(), &backup).await {
                        Ok(_) => Ok(Created::Imported),
                        Err(kube::Error::Api(s)) if s.code == 409 => Ok(Created::Present),
                        // The API server refused this object (invalid, too large): skip it.
                        Err(kube::Error::Api(s)) if matches!(s.code, 400 | 413 | 422) => {
                            Ok(Created::Refused(s.message))
                        }
                        Err(e) => Err(e),
                    };
                    (name, outcome)
                }
            })
            .buffer_unordered(CREATING)
            .collect(),
    );
    for (name, outcome) in created {
        match outcome {
            Ok(Created::Imported) => synced.imported += 1,
            Ok(Created::Present) => synced.present += 1,
            Ok(Created::Refused(why)) => {
                synced.skipped += 1;
                if synced.skipped_objects.len() < NAMED {
                    let what = format!("backup {name:?}: the API server refused it: {why}");
                    let what = backstop_api::condition::truncate(what, 240);
                    synced.skipped_objects.push(what);
                }
            }
            Err(e) => {
                return Err((
                    Reason::ImportRefused,
                    format!(
                        "creating a Backup in namespace {:?}: {e} ({} imported before)",
                        req.namespace, synced.imported
                    ),
                ));
            }
        }
    }
    synced.seconds = started.elapsed().as_secs_f64();
    Ok(synced)
}

/// The names of the Backups in `api`'s namespace, from the API server's watch cache
/// (resourceVersion 0). A list without a version is read from etcd and decoded there: with
/// 100,000 Backups that took the API server 44 s and about 10 s of its CPU, at the moment a new
/// operator starts (its first sync) and every policy's status is being written (controller
/// bench at 10x). The cache may be a moment behind: a Backup made since is created again and
/// answered AlreadyExists (counted present), and one deleted since is imported at the next sync.
async fn present(api: &Api<Backup>) -> Result<BTreeSet<String>, kube::Error> {
    Ok(api
        .list_metadata(&ListParams::default().match_any())
        .await?
        .items
        .into_iter()
        .filter_map(|b| b.metadata.name)
        .collect())
}

/// What became of one Backup the sync created.
enum Created {
    Imported,
    /// It existed already (made since the listing).
    Present,
    /// The API server refused it, saying why.
    Refused(String),
}

/// The most a record may take as annotation text (the API server refuses an object whose
/// annotations together pass 256 KiB; a genuine record of a few volumes is a few KiB).
const MAX_RECORD_TEXT: usize = 64 * 1024;

/// The Backup that stands for `record`, or why there can be none: its name, its policy's name,
/// its times (see `ImportRecord::check_times`) or its size. Refused here, a bad record is
/// skipped and named; it never fails the sync nor the creation of the others.
fn imported(
    req: &SyncRequest<'_>,
    name: &str,
    record: &ImportRecord,
    now: jiff::Timestamp,
) -> Result<Backup, String> {
    if !naming::is_dns_subdomain(name) {
        return Err("not a valid Backup name".into());
    }
    if let Some(policy) = record.policy.as_deref()
        && !naming::is_dns_subdomain(policy)
    {
        return Err(format!(
            "policy {policy:?} is not a valid BackupPolicy name"
        ));
    }
    record.check_times(now)?;
    let text = serde_json::to_string(record).map_err(|e| format!("record not writable: {e}"))?;
    if text.len() > MAX_RECORD_TEXT {
        return Err(format!(
            "record of {} KiB: a Backup carries at most {} KiB",
            text.len() / 1024,
            MAX_RECORD_TEXT / 1024
        ));
    }
    let mut object_labels = BTreeMap::from([
        (labels::IMPORTED.to_string(), "true".to_string()),
        (labels::MANAGED_BY.to_string(), labels::MANAGER.to_string()),
        (
            labels::REPOSITORY.to_string(),
            naming::label_value(req.repository),
        ),
    ]);
    if let Some(policy) = &record.policy {
        object_labels.insert(labels::POLICY.to_string(), naming::label_value(policy));
    }
    let mut annotations = BTreeMap::from([(labels::IMPORT_RECORD.to_string(), text)]);
    if let Some(at) = record.scheduled_time {
        annotations.insert(labels::SCHEDULED_TIME.to_string(), at.to_string());
    }
    Ok(Backup {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            namespace: Some(req.namespace.to_string()),
            labels: Some(object_labels),
            annotations: Some(annotations),
            ..ObjectMeta::default()
        },
        spec: BackupSpec {
            policy_ref: record.policy.clone(),
            repository: Some(req.repository.to_string()),
            ..BackupSpec::default()
        },
        status: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use backstop_api::contract::BackupResult;
    use kube::ResourceExt;

    fn shop() -> SyncRequest<'static> {
        SyncRequest {
            namespace: "shop",
            repository: "nfs",
            restic: None,
            password: "",
        }
    }

    fn record(policy: Option<&str>, started: &str) -> ImportRecord {
        let start_time: jiff::Timestamp = started.parse().unwrap();
        ImportRecord {
            version: backstop_api::record::RECORD_VERSION,
            backup: "nightly-1".into(),
            policy: policy.map(str::to_string),
            scheduled_time: None,
            start_time,
            completion_time: start_time,
            strategy: None,
            volumes: vec![backstop_api::record::ImportedVolume {
                capacity: None,
                storage_class_name: None,
                stream: false,
                result: BackupResult {
                    pvc: "db".into(),
                    artifact: "shop/nightly-1/db.tar.zst".into(),
                    bytes: 1,
                    digest: "0".repeat(64),
                    files: 1,
                    source_bytes: 1,
                    changed_while_reading: 0,
                    changed_files: Vec::new(),
                    restic: None,
                },
            }],
            verification: None,
        }
    }

    #[test]
    fn a_record_that_cannot_make_a_sound_backup_is_skipped_with_its_reason() {
        let req = shop();
        let now: jiff::Timestamp = "2026-12-07T12:00:00Z".parse().unwrap();
        let good = imported(
            &req,
            "nightly-1",
            &record(Some("nightly"), "2026-12-07T02:00:00Z"),
            now,
        )
        .expect("a sound record is imported");
        assert_eq!(
            good.labels().get(labels::POLICY).map(String::as_str),
            Some("nightly")
        );
        assert_eq!(
            good.labels().get(labels::IMPORTED).map(String::as_str),
            Some("true")
        );
        let refused =
            |name: &str, record: &ImportRecord| imported(&req, name, record, now).unwrap_err();
        assert!(
            refused("Nightly 1", &record(None, "2026-12-07T02:00:00Z")).contains("Backup name")
        );
        // A policy name that is no label value made every later sync fail.
        let bad_policy = record(Some("nightly/../../x"), "2026-12-07T02:00:00Z");
        assert!(refused("nightly-1", &bad_policy).contains("not a valid BackupPolicy name"));
        assert!(
            refused("nightly-1", &record(None, "2099-01-01T00:00:00Z")).contains("in the future")
        );
        // A record too large for an annotation (the API server refuses past 256 KiB).
        let mut huge = record(None, "2026-12-07T02:00:00Z");
        huge.volumes[0].result.changed_files = vec!["x".repeat(1024); 100];
        assert!(refused("nightly-1", &huge).contains("at most 64 KiB"));
    }

    #[test]
    fn a_sync_reads_no_more_backups_than_it_imports_and_names_only_a_few_skipped() {
        let req = shop();
        let now: jiff::Timestamp = "2026-12-07T12:00:00Z".parse().unwrap();
        let mut found = Found::default();
        let mut read = 0;
        for i in 0..contract::MAX_IMPORTS + 500 {
            found.missing(
                &req,
                &format!("nightly-{i}"),
                || {
                    read += 1;
                    Ok(record(None, "2026-12-07T02:00:00Z"))
                },
                now,
            );
        }
        assert_eq!(found.create.len(), contract::MAX_IMPORTS);
        assert_eq!(found.deferred, 500);
        assert_eq!(read, contract::MAX_IMPORTS, "the rest are left unread");
        for i in 0..100_000 {
            found.skip(&format!("shop/stray-{i}"), "not Backstop's");
        }
        assert_eq!(found.skipped, 100_000);
        assert_eq!(found.named.len(), NAMED);
        assert_eq!(found.named[0], "shop/stray-0: not Backstop's");
    }

    #[tokio::test]
    async fn present_backups_are_listed_once_from_the_watch_cache() {
        let (service, mut server) = tower_test::mock::pair::<
            http::Request<kube::client::Body>,
            http::Response<kube::client::Body>,
        >();
        let api: Api<Backup> = Api::namespaced(kube::Client::new(service, "ns"), "ns");
        let listing = tokio::spawn(async move { present(&api).await });
        let (request, respond) = server
            .next_request()
            .await
            .expect("the client sent nothing");
        let list = r#"{"apiVersion":"meta.k8s.io/v1","kind":"PartialObjectMetadataList",
            "metadata":{"resourceVersion":"9"},
            "items":[{"metadata":{"name":"b-1"}},{"metadata":{"name":"b-2"}}]}"#;
        respond.send_response(
            http::Response::builder()
                .status(200)
                .body(kube::client::Body::from(list.as_bytes().to_vec()))
                .expect("a response"),
        );
        let names = listing.await.expect("the listing ran").expect("listed");
        assert_eq!(
            names,
            BTreeSet::from(["b-1".to_string(), "b-2".to_string()])
        );
        assert_eq!(
            request.uri().path(),
            "/apis/backstop.dev/v1alpha1/namespaces/ns/backups"
        );
        let query = request.uri().query().unwrap_or_default();
        assert!(
            query.contains("resourceVersion=0") && !query.contains("limit="),
            "not a whole list from the watch cache: {query}"
        );
        assert!(server.next_request().await.is_none(), "one request only");
    }
}
