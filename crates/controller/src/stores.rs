//! Watched copies of the objects the reconcilers look up on nearly every pass (policies, their
//! Backups, repositories, PVCs) and of Backstop's own Jobs. A lookup is answered from memory; a
//! name the copy does not have (an object created a moment ago) is asked of the API server, so a
//! copy that is a few milliseconds behind never makes an object look missing.
//!
//! Why: at 1,000 policies with 50 due in the same second, every policy reconcile made two GETs
//! (repository, PVC) and a LIST that made the API server scan all 10,000 Backups of the
//! namespace, every new Backup three more GETs before its first write, and a restart one LIST of
//! Jobs per existing Backup (controller scale benchmark).

use crate::index::{Index, keys};
use backstop_api::{Backup, BackupPolicy, BackupRepository, labels};
use futures::StreamExt;
use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::PersistentVolumeClaim;
use kube::runtime::reflector::{self, ObjectRef, ReflectHandle, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Resource};
use std::sync::Arc;
use tokio::task::JoinHandle;

const FIRST_LIST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// Room for events not yet taken by every controller that follows a shared watch.
const EVENTS_BUFFER: usize = 1024;

pub struct Stores {
    /// Policies, Backups and repositories each have one watch and one copy: their own reconciler
    /// runs on it and the others read it (a second copy of 10,000 Backups cost 27 MiB).
    /// Followed by the policy reconciler and the backup one (Backups waiting for their policy).
    pub policies: Shared<BackupPolicy>,
    /// Followed by the backup reconciler, the policy one (for the policies that own them) and
    /// the restore one (Restores waiting for their Backup).
    pub backups: Shared<Backup>,
    /// Followed by the repository reconciler and by the policy, backup and restore ones (whatever
    /// waits for a repository to appear or become Ready).
    pub repositories: Shared<BackupRepository>,
    /// Followed by the repository reconciler (a repository's PVC binding) and the backup and
    /// restore ones (volumes to appear or bind).
    pub claims: Shared<PersistentVolumeClaim>,
    /// Jobs labelled as Backstop's.
    pub jobs: Store<Job>,
    /// The Jobs in `jobs` by the uid of the Backup or Restore that controls them.
    jobs_by_owner: Arc<Index<Job>>,
    /// Where the watches look.
    pub scope: crate::Scope,
    /// Whether the Job store was filled at the start; if not, `has_jobs_of` cannot say "none".
    jobs_listed: bool,
    watches: Vec<JoinHandle<()>>,
}

impl Stores {
    /// Starts the watches (they stop when the `Stores` is dropped) and waits for their first lists.
    pub async fn start(client: &Client, scope: crate::Scope) -> Self {
        let mut watches = Vec::new();
        let ours = watcher::Config::default().labels(&format!(
            "{}={}",
            labels::MANAGED_BY,
            labels::MANAGER
        ));
        let (jobs, jobs_by_owner) = keep(scope.api(client), ours, keys::owner_of, &mut watches);
        let mut stores = Self {
            policies: Shared::start(client, &scope, 2, &[keys::repository_of], &mut watches),
            backups: Shared::start(
                client,
                &scope,
                3,
                &[keys::policy_of, keys::waiting],
                &mut watches,
            ),
            repositories: Shared::start(client, &scope, 4, &[], &mut watches),
            claims: Shared::start(client, &scope, 3, &[], &mut watches),
            jobs,
            jobs_by_owner,
            scope,
            jobs_listed: false,
            watches,
        };
        // Lookups are right without the stores (they fall back to the API server), only slower:
        // a watch that cannot list (RBAC, API server trouble) delays the start, never stops it.
        let first_lists = async {
            futures::join!(
                stores.policies.store.wait_until_ready(),
                stores.backups.store.wait_until_ready(),
                stores.repositories.store.wait_until_ready(),
                stores.claims.store.wait_until_ready(),
                stores.jobs.wait_until_ready(),
            )
        };
        stores.jobs_listed = tokio::time::timeout(FIRST_LIST_TIMEOUT, first_lists)
            .await
            .is_ok();
        if !stores.jobs_listed {
            tracing::warn!(
                "watched copies of policies, Backups, repositories, PVCs and Jobs not filled after {}s; starting anyway (check the operator's RBAC: list and watch)",
                FIRST_LIST_TIMEOUT.as_secs()
            );
        }
        stores
    }

    /// Whether `owner` may have Jobs: the watched copy has one it owns, or the copy was never
    /// filled. Finished Backups and Restores remove their Jobs; asking the store first means a
    /// restart with thousands of them asks nothing.
    pub fn has_jobs_of(&self, owner: &impl Resource) -> bool {
        if !self.jobs_listed {
            return true;
        }
        let Some(uid) = owner.meta().uid.as_ref() else {
            return false;
        };
        let namespace = owner.meta().namespace.as_deref().unwrap_or_default();
        self.jobs_by_owner.any(namespace, uid)
    }

    /// The Backups in `namespace` that name `policy` (a Backup made a moment ago may be missing).
    pub fn backups_of(&self, namespace: &str, policy: &str) -> Vec<Arc<Backup>> {
        self.backups.indexes[0].objects(namespace, policy)
    }

    /// The Backups in `namespace` that wait to start: those naming `policy`, or all of them.
    pub fn waiting_backups(&self, namespace: &str, policy: Option<&str>) -> Vec<ObjectRef<Backup>> {
        let waiting = &self.backups.indexes[1];
        match policy {
            Some(policy) => waiting.refs(namespace, policy),
            None => waiting.refs_in(namespace),
        }
    }

    /// The policies in `namespace` that write to `repository`.
    pub fn policies_of(&self, namespace: &str, repository: &str) -> Vec<ObjectRef<BackupPolicy>> {
        self.policies.indexes[0].refs(namespace, repository)
    }
}

#[cfg(test)]
impl Stores {
    /// Stores that no watch fills, for reconciler tests against a mocked API: every lookup goes
    /// to the API server, and `has_jobs_of` cannot say "none".
    pub(crate) fn unwatched() -> Self {
        fn empty<K: crate::Watched>(keys: &[fn(&K) -> Option<String>]) -> Shared<K> {
            let store = reflector::store().0;
            Shared {
                indexes: indexes(&store, keys),
                store,
                scope: crate::Scope::Cluster,
                events: std::sync::Mutex::new(Vec::new()),
            }
        }
        let jobs = reflector::store().0;
        Self {
            policies: empty(&[keys::repository_of]),
            backups: empty(&[keys::policy_of, keys::waiting]),
            repositories: empty(&[]),
            claims: empty(&[]),
            jobs_by_owner: Arc::new(Index::new(jobs.clone(), keys::owner_of)),
            jobs,
            scope: crate::Scope::Cluster,
            jobs_listed: false,
            watches: Vec::new(),
        }
    }
}

impl Drop for Stores {
    fn drop(&mut self) {
        for watch in &self.watches {
            watch.abort();
        }
    }
}

/// One lean watch of every `K` in a scope, kept in `store` and followed by a fixed number of
/// controllers.
pub struct Shared<K: crate::Watched> {
    pub store: Store<K>,
    /// Indexes over `store`, in the order of the keys given to `start`.
    indexes: Vec<Arc<Index<K>>>,
    scope: crate::Scope,
    /// One event stream per controller that follows the watch; each takes one, once.
    events: std::sync::Mutex<Vec<ReflectHandle<K>>>,
}

impl<K: crate::Watched> Shared<K> {
    fn start(
        client: &Client,
        scope: &crate::Scope,
        followers: usize,
        keys: &[fn(&K) -> Option<String>],
        watches: &mut Vec<JoinHandle<()>>,
    ) -> Self {
        let (store, writer) = reflector::store_shared(EVENTS_BUFFER);
        // Every follower subscribes before the watch starts, so none misses an event.
        let events = (0..followers).filter_map(|_| writer.subscribe()).collect();
        let indexes = indexes(&store, keys);
        let watch = indexed(
            crate::lean_watch_stream(scope.api::<K>(client), watcher::Config::default()),
            indexes.clone(),
        )
        .reflect_shared(writer);
        watches.push(tokio::spawn(watch.for_each(|_| futures::future::ready(()))));
        Self {
            indexes,
            store,
            scope: scope.clone(),
            events: std::sync::Mutex::new(events),
        }
    }

    /// One of the watch's event streams (`None` once all are taken). Whoever takes one must keep
    /// reading it: the watch waits for its slowest follower.
    pub fn events(&self) -> Option<ReflectHandle<K>> {
        self.events.lock().ok()?.pop()
    }

    /// A controller of `K` on this watch, run with `config`; on a watch of its own if no event
    /// stream is left.
    pub(crate) fn controller(
        &self,
        client: &Client,
        config: kube::runtime::controller::Config,
    ) -> kube::runtime::Controller<K> {
        match self.events() {
            Some(events) => {
                kube::runtime::Controller::for_shared_stream(events, self.store.clone())
            }
            None => crate::controller(self.scope.api(client)),
        }
        .with_config(config)
    }
}

impl<K: crate::Watched> Shared<K> {
    /// `controller`, also woken for the objects `mapper` names whenever a `K` changes (something
    /// they wait for may have appeared or become ready): on one of this watch's event streams, or
    /// on a watch of its own if none is left.
    pub(crate) fn wakes<R, I>(
        &self,
        client: &Client,
        controller: kube::runtime::Controller<R>,
        mapper: impl Fn(Arc<K>) -> I + Send + Sync + 'static,
    ) -> kube::runtime::Controller<R>
    where
        R: crate::Watched,
        I: IntoIterator<Item = ObjectRef<R>> + 'static,
        I::IntoIter: Send,
    {
        match self.events() {
            Some(events) => controller.watches_shared_stream(events, mapper),
            None => controller.watches(
                self.scope.api::<K>(client),
                watcher::Config::default(),
                move |obj| mapper(Arc::new(obj)),
            ),
        }
    }
}

/// A lean watch of `api` (matching `config`), kept in a store by a task, with an index by `key`.
fn keep<K: crate::Watched>(
    api: Api<K>,
    config: watcher::Config,
    key: fn(&K) -> Option<String>,
    watches: &mut Vec<JoinHandle<()>>,
) -> (Store<K>, Arc<Index<K>>) {
    let (store, writer) = reflector::store();
    let index = Arc::new(Index::new(store.clone(), key));
    let stream = indexed(crate::lean_watch_stream(api, config), vec![index.clone()]);
    watches.push(tokio::spawn(
        reflector::reflector(writer, stream).for_each(|_| futures::future::ready(())),
    ));
    (store, index)
}

fn indexes<K: crate::Watched>(
    store: &Store<K>,
    keys: &[fn(&K) -> Option<String>],
) -> Vec<Arc<Index<K>>> {
    keys.iter()
        .map(|key| Arc::new(Index::new(store.clone(), *key)))
        .collect()
}

/// `events`, each told to `indexes` before it goes on to the copy (see `index`).
fn indexed<K: crate::Watched>(
    events: impl futures::Stream<Item = watcher::Result<watcher::Event<K>>>,
    indexes: Vec<Arc<Index<K>>>,
) -> impl futures::Stream<Item = watcher::Result<watcher::Event<K>>> {
    events.inspect(move |event| {
        if let Ok(event) = event {
            for index in &indexes {
                index.apply(event);
            }
        }
    })
}

/// `name` in `namespace`: from `store`, or from the API server when the store does not have it.
async fn get<K>(
    store: &Store<K>,
    client: &Client,
    namespace: &str,
    name: &str,
) -> Result<Option<Arc<K>>, kube::Error>
where
    K: Resource<DynamicType = (), Scope = NamespaceResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    if let Some(found) = store.get(&ObjectRef::new(name).within(namespace)) {
        return Ok(Some(found));
    }
    let api: Api<K> = Api::namespaced(client.clone(), namespace);
    Ok(api.get_opt(name).await?.map(Arc::new))
}

/// What the watched copy keeps of a Backup that finished and is not being deleted: what the
/// reconcilers read there. The policy reads its phase, scheduled, creation and completion times
/// and totals; the backup reconciler its uid, finalizers and owner; the indexes its policy.
/// Labels, other annotations, the selector, conditions, messages and per-volume details go: whoever needs them
/// reads the Backup from the API server (a Restore does), and a deletion's event carries the
/// whole object again, which is what the cleanup of its artifacts reads. A reconciler that comes
/// to read more of a finished Backup from the copy must keep it here.
pub fn compact_finished_backup(backup: &mut Backup) {
    if !backup.phase().is_terminal() || backup.metadata.deletion_timestamp.is_some() {
        return;
    }
    let meta = &mut backup.metadata;
    meta.labels = None;
    meta.annotations = meta.annotations.take().and_then(|mut all| {
        let scheduled = all.remove_entry(labels::SCHEDULED_TIME)?;
        Some([scheduled].into())
    });
    backup.spec.target = None;
    if let Some(status) = backup.status.as_mut() {
        status.volumes = Vec::new();
        status.conditions = Vec::new();
        status.message = None;
        status.repository = None;
        status.duration = None;
        status.size = None;
    }
}

impl crate::Context {
    /// The BackupRepository `name` in `namespace` (see `get`).
    pub(crate) async fn repository(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Option<Arc<BackupRepository>>, kube::Error> {
        get(
            &self.stores.repositories.store,
            &self.client,
            namespace,
            name,
        )
        .await
    }

    /// The BackupPolicy `name` in `namespace` (see `get`).
    pub(crate) async fn policy(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Option<Arc<BackupPolicy>>, kube::Error> {
        get(&self.stores.policies.store, &self.client, namespace, name).await
    }

    /// The PersistentVolumeClaim `name` in `namespace` (see `get`).
    pub(crate) async fn claim(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Option<Arc<PersistentVolumeClaim>>, kube::Error> {
        get(&self.stores.claims.store, &self.client, namespace, name).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures;
    use backstop_api::BackupPhase;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn whole(phase: BackupPhase) -> Backup {
        let policy = fixtures::policy("nightly", "0 2 * * *", None);
        let mut backup = fixtures::scheduled(&policy, "02:00", phase)
            .as_ref()
            .clone();
        backup.metadata.labels = Some([(labels::POLICY.into(), "nightly".into())].into());
        backup.metadata.finalizers = Some(vec![backstop_api::ARTIFACTS_FINALIZER.into()]);
        backup.metadata.uid = Some("uid-b".into());
        if let Some(a) = backup.metadata.annotations.as_mut() {
            a.insert("team".into(), "shop".into());
        }
        let status = backup.status.get_or_insert_default();
        status.message = Some("Backed up 1 volume".into());
        status.volumes = vec![backstop_api::VolumeBackup {
            pvc: "db".into(),
            phase,
            digest: Some("b3".into()),
            ..Default::default()
        }];
        backup
    }

    #[test]
    fn a_finished_backup_is_cached_with_what_the_reconcilers_read() {
        let full = whole(BackupPhase::Completed);
        let mut cached = full.clone();
        compact_finished_backup(&mut cached);
        // Kept: identity, finalizer, policy, scheduled time, phase, times and totals.
        assert_eq!(cached.metadata.name, full.metadata.name);
        assert_eq!(cached.metadata.uid, full.metadata.uid);
        assert_eq!(cached.metadata.finalizers, full.metadata.finalizers);
        assert_eq!(cached.spec.policy_ref.as_deref(), Some("nightly"));
        let annotations = cached.metadata.annotations.clone().unwrap();
        assert_eq!(
            annotations.keys().collect::<Vec<_>>(),
            [labels::SCHEDULED_TIME]
        );
        let (kept, was) = (cached.status.unwrap(), full.status.unwrap());
        assert_eq!(
            (
                kept.phase,
                kept.completion_time,
                kept.total_bytes,
                kept.total_files
            ),
            (
                was.phase,
                was.completion_time,
                was.total_bytes,
                was.total_files
            )
        );
        // Dropped: what only people and the API server's readers need.
        assert_eq!(cached.metadata.labels, None);
        assert!(kept.volumes.is_empty() && kept.conditions.is_empty());
        assert_eq!(kept.message, None);
    }

    fn json(backup: &Backup) -> serde_json::Value {
        serde_json::to_value(backup).unwrap()
    }

    #[test]
    fn a_backup_still_at_work_or_being_deleted_is_cached_whole() {
        for phase in [BackupPhase::Pending, BackupPhase::Running] {
            let full = whole(phase);
            let mut cached = full.clone();
            compact_finished_backup(&mut cached);
            assert_eq!(json(&cached), json(&full), "{phase:?}");
        }
        // Deleting it reads its volumes (the artifacts to remove).
        let mut deleting = whole(BackupPhase::Completed);
        deleting.metadata.deletion_timestamp = Some(Time(fixtures::at("04:00")));
        let mut cached = deleting.clone();
        compact_finished_backup(&mut cached);
        assert_eq!(json(&cached), json(&deleting));
    }
}
