//! `backstop mover sync`: the mover side of a repository's sync. It reads what the repository
//! holds of one namespace (only `<namespace>/`), lists the namespace's Backups, and creates a
//! Backup for each whole backup that has none, labelled imported and carrying its record. Its
//! pod's identity may create and list Backups in that namespace and nothing else; the operator
//! checks each record before it writes the Backup's status from it.

use backstop_api::contract::{Reason, Synced};
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

/// What the repository holds: how many backups have their Backup object, the whole backups
/// that have none, and what was skipped, with why.
#[derive(Default)]
struct Found {
    present: u64,
    missing: Vec<(String, ImportRecord)>,
    skipped: Vec<(String, String)>,
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
    // The repository is read before the Backups are listed, and a tar backup's records after:
    // a backup deleted meanwhile lost its records first and is not brought back.
    let listing = match req.restic {
        Some(root) => {
            let (restic, _) = Restic::open(store.clone(), root, req.password, false)
                .map_err(|e| (e.reason, e.message))?;
            let backups = catalog::restic_backups(&restic, req.namespace)
                .map_err(|e| (e.reason, e.message))?;
            Listed::Restic(backups)
        }
        None => Listed::Tar(catalog::list(store.as_ref(), req.namespace).map_err(|e| {
            (
                e.reason().unwrap_or(Reason::RepositoryUnusable),
                e.to_string(),
            )
        })?),
    };
    let present = runtime.block_on(present(&api)).map_err(|e| {
        (
            Reason::ImportRefused,
            format!("listing the Backups of namespace {:?}: {e}", req.namespace),
        )
    })?;
    let mut found = Found::default();
    match listing {
        Listed::Restic(backups) => {
            for (name, backup) in backups {
                match backup {
                    // An incomplete backup that has its Backup object is one still running.
                    _ if present.contains(&name) => found.present += 1,
                    Ok(mut record) => {
                        record.verification =
                            catalog::verification(store.as_ref(), req.namespace, &name);
                        found.missing.push((name, record));
                    }
                    Err(why) => found.skipped.push((format!("backup {name:?}"), why)),
                }
            }
        }
        Listed::Tar(listing) => {
            for key in listing.foreign {
                found
                    .skipped
                    .push((key, "not in a backup's directory: not Backstop's".into()));
            }
            for (name, dir) in &listing.backups {
                if present.contains(name) {
                    found.present += 1;
                    continue;
                }
                match catalog::read(store.as_ref(), req.namespace, name, dir) {
                    Ok(record) => found.missing.push((name.clone(), record)),
                    Err(why) => found
                        .skipped
                        .push((format!("{}/{name}/", req.namespace), why)),
                }
            }
        }
    }
    let mut missing = Vec::new();
    for (name, record) in &found.missing {
        match imported(req, name, record) {
            Some(backup) => missing.push(backup),
            None => found
                .skipped
                .push((format!("backup {name:?}"), "not a valid Backup name".into())),
        }
    }
    let mut synced = Synced {
        backups: found.present + missing.len() as u64,
        present: found.present,
        skipped: found.skipped.len() as u64,
        skipped_objects: found
            .skipped
            .iter()
            .take(NAMED)
            .map(|(what, why)| backstop_api::condition::truncate(format!("{what}: {why}"), 240))
            .collect(),
        ..Synced::default()
    };
    let created: Vec<Result<bool, kube::Error>> = runtime.block_on(
        futures::stream::iter(missing)
            .map(|backup| {
                let api = api.clone();
                async move {
                    match api.create(&PostParams::default(), &backup).await {
                        Ok(_) => Ok(true),
                        Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
                        Err(e) => Err(e),
                    }
                }
            })
            .buffer_unordered(CREATING)
            .collect(),
    );
    for outcome in created {
        match outcome {
            Ok(true) => synced.imported += 1,
            Ok(false) => synced.present += 1,
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

enum Listed {
    Tar(catalog::Listing),
    Restic(BTreeMap<String, Result<ImportRecord, String>>),
}

/// The Backup that stands for `record` (`None` when its name cannot be a Backup's).
fn imported(req: &SyncRequest<'_>, name: &str, record: &ImportRecord) -> Option<Backup> {
    if !naming::is_dns_subdomain(name) {
        return None;
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
    let mut annotations = BTreeMap::from([(
        labels::IMPORT_RECORD.to_string(),
        serde_json::to_string(record).ok()?,
    )]);
    if let Some(at) = record.scheduled_time {
        annotations.insert(labels::SCHEDULED_TIME.to_string(), at.to_string());
    }
    Some(Backup {
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
