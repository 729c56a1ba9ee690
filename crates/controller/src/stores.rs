//! Watched copies of the objects the reconcilers look up on nearly every pass (policies, the
//! Backups at work, repositories, PVCs) and of Backstop's own Jobs, with the indexes over them
//! and the history of every Backup (`history`). A lookup is answered from memory; a
//! name the copy does not have (an object created a moment ago) is asked of the API server, so a
//! copy that is a few milliseconds behind never makes an object look missing.
//!
//! Why: at 1,000 policies with 50 due in the same second, every policy reconcile made two GETs
//! (repository, PVC) and a LIST that made the API server scan all 10,000 Backups of the
//! namespace, every new Backup three more GETs before its first write, and a restart one LIST of
//! Jobs per existing Backup (controller scale benchmark).

use crate::history::History;
use crate::index::{Index, Observer, keys};
use crate::scheduling::BackupSummary;
use backstop_api::{Backup, BackupPolicy, BackupRepository, labels};
use futures::StreamExt;
use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::PersistentVolumeClaim;
use kube::runtime::reflector::{self, ObjectRef, ReflectHandle, Store, store::Writer};
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
    /// Only the Backups at work or being deleted (see `history` for the finished ones).
    /// Followed by the backup reconciler.
    pub backups: Shared<Backup>,
    /// Every Backup as the policy reconciler reads it, told to the policy and restore
    /// reconcilers when one changes.
    pub history: Arc<History>,
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
    /// The Backups in `backups` that wait to start, by the policy they name ("" for none).
    waiting_backups: Arc<Index<Backup>>,
    /// The policies by the repository they write to.
    policies_by_repository: Arc<Index<BackupPolicy>>,
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
        let (jobs, jobs_writer) = reflector::store();
        let jobs_by_owner = Arc::new(Index::new(jobs.clone(), keys::owner_of));
        let watch = indexed(
            crate::lean_watch_stream(scope.api(client), ours),
            vec![jobs_by_owner.clone()],
        );
        watches.push(tokio::spawn(
            reflector::reflector(jobs_writer, watch).for_each(|_| futures::future::ready(())),
        ));

        let (policies, writer) = Shared::new(&scope, 2);
        let policies_by_repository =
            Arc::new(Index::new(policies.store.clone(), keys::repository_of));
        policies.watch(
            client,
            writer,
            vec![policies_by_repository.clone()],
            &mut watches,
        );

        let (backups, writer) = Shared::new(&scope, 1);
        let waiting_backups = Arc::new(Index::new(backups.store.clone(), keys::waiting));
        let history = Arc::new(History::default());
        backups.watch(
            client,
            writer,
            vec![waiting_backups.clone(), history.clone()],
            &mut watches,
        );

        let (repositories, writer) = Shared::new(&scope, 4);
        repositories.watch(client, writer, Vec::new(), &mut watches);
        let (claims, writer) = Shared::new(&scope, 3);
        claims.watch(client, writer, Vec::new(), &mut watches);

        let mut stores = Self {
            policies,
            backups,
            history,
            repositories,
            claims,
            jobs,
            jobs_by_owner,
            waiting_backups,
            policies_by_repository,
            scope,
            jobs_listed: false,
            watches,
        };
        // Lookups are right without the stores (they fall back to the API server), only slower:
        // a watch that cannot list (RBAC, API server trouble) delays the start, never stops it.
        // The Backups are not waited for: they can be a hundred thousand, listed in pages for
        // tens of seconds, and policies show their next run without them (the history says when
        // it is listed; the Backup reconciler waits for its own copy, as every kube controller
        // does).
        let first_lists = async {
            futures::join!(
                stores.policies.store.wait_until_ready(),
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
                "watched copies of policies, repositories, PVCs and Jobs not filled after {}s; starting anyway (check the operator's RBAC: list and watch)",
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

    /// What the policy reads of the Backups in `namespace` that name `policy` (a Backup made a
    /// moment ago may be missing).
    pub fn backups_of(&self, namespace: &str, policy: &str) -> Vec<BackupSummary> {
        self.history.of(namespace, policy)
    }

    /// The Backups in `namespace` that wait to start: those naming `policy`, or all of them.
    pub fn waiting_backups(&self, namespace: &str, policy: Option<&str>) -> Vec<ObjectRef<Backup>> {
        match policy {
            Some(policy) => self.waiting_backups.refs(namespace, policy),
            None => self.waiting_backups.refs_in(namespace),
        }
    }

    /// The policies in `namespace` that write to `repository`.
    pub fn policies_of(&self, namespace: &str, repository: &str) -> Vec<ObjectRef<BackupPolicy>> {
        self.policies_by_repository.refs(namespace, repository)
    }
}

#[cfg(test)]
impl Stores {
    /// Stores that no watch fills, for reconciler tests against a mocked API: every lookup goes
    /// to the API server, and `has_jobs_of` cannot say "none".
    pub(crate) fn unwatched() -> Self {
        fn empty<K: crate::Watched>() -> Shared<K> {
            Shared {
                store: reflector::store().0,
                scope: crate::Scope::Cluster,
                events: std::sync::Mutex::new(Vec::new()),
            }
        }
        let (policies, backups, jobs) = (empty(), empty(), reflector::store().0);
        Self {
            jobs_by_owner: Arc::new(Index::new(jobs.clone(), keys::owner_of)),
            waiting_backups: Arc::new(Index::new(backups.store.clone(), keys::waiting)),
            policies_by_repository: Arc::new(Index::new(
                policies.store.clone(),
                keys::repository_of,
            )),
            history: Arc::new(History::default()),
            policies,
            backups,
            repositories: empty(),
            claims: empty(),
            jobs,
            scope: crate::Scope::Cluster,
            jobs_listed: false,
            watches: Vec::new(),
        }
    }
}

#[cfg(test)]
impl Stores {
    /// `unwatched`, except that the Job copy (listed) holds `jobs` and the Backup copy holds
    /// `at_work`.
    pub(crate) fn holding(jobs: Vec<Job>, at_work: Vec<Backup>) -> Self {
        let mut stores = Self::unwatched();
        let (job_copy, mut writer) = reflector::store();
        let by_owner = Arc::new(Index::new(job_copy.clone(), keys::owner_of));
        for job in jobs {
            let event = watcher::Event::Apply(job);
            by_owner.apply(&event);
            writer.apply_watcher_event(&event);
        }
        let (backup_copy, mut writer) = reflector::store();
        for backup in at_work {
            writer.apply_watcher_event(&watcher::Event::Apply(backup));
        }
        stores.jobs = job_copy;
        stores.jobs_by_owner = by_owner;
        stores.jobs_listed = true;
        stores.backups.store = backup_copy;
        stores
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
    scope: crate::Scope,
    /// One event stream per controller that follows the watch; each takes one, once.
    events: std::sync::Mutex<Vec<ReflectHandle<K>>>,
}

impl<K: crate::Watched> Shared<K> {
    /// A copy not filled yet, with its writer: indexes over `store` are made before `watch`.
    fn new(scope: &crate::Scope, followers: usize) -> (Self, Writer<K>) {
        let (store, writer) = reflector::store_shared(EVENTS_BUFFER);
        // Every follower subscribes before the watch starts, so none misses an event.
        let events = (0..followers).filter_map(|_| writer.subscribe()).collect();
        let shared = Self {
            store,
            scope: scope.clone(),
            events: std::sync::Mutex::new(events),
        };
        (shared, writer)
    }

    /// Starts the watch that fills the copy through `writer`, telling `observers` each event
    /// first. Objects that are not to be cached (`Watched::cached`) leave the copy.
    fn watch(
        &self,
        client: &Client,
        writer: Writer<K>,
        observers: Vec<Arc<dyn Observer<K>>>,
        watches: &mut Vec<JoinHandle<()>>,
    ) {
        let events = crate::listing::watch(self.scope.api::<K>(client), None);
        let watch = indexed(events, observers)
            .filter_map(|event| futures::future::ready(cached_only(event)))
            .reflect_shared(writer);
        watches.push(tokio::spawn(watch.for_each(|_| futures::future::ready(()))));
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

/// `events`, each told to `observers` before it goes on to the copy (see `index`).
fn indexed<K: crate::Watched>(
    events: impl futures::Stream<Item = watcher::Result<watcher::Event<K>>>,
    observers: Vec<Arc<dyn Observer<K>>>,
) -> impl futures::Stream<Item = watcher::Result<watcher::Event<K>>> {
    events.inspect(move |event| {
        if let Ok(event) = event {
            for observer in &observers {
                observer.apply(event);
            }
        }
    })
}

/// The event the copy applies for `event`: an object that is not to be cached leaves the copy
/// (its change is a deletion there, and its listing is skipped).
pub fn cached_only<K: crate::Watched>(
    event: watcher::Result<watcher::Event<K>>,
) -> Option<watcher::Result<watcher::Event<K>>> {
    match event {
        Ok(watcher::Event::Apply(obj)) if !obj.cached() => Some(Ok(watcher::Event::Delete(obj))),
        Ok(watcher::Event::InitApply(obj)) if !obj.cached() => None,
        other => Some(other),
    }
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

    fn backup(phase: BackupPhase) -> Backup {
        fixtures::backup("nightly-0200", "nightly", phase)
    }

    fn what(event: Option<watcher::Result<watcher::Event<Backup>>>) -> &'static str {
        match event {
            None => "skipped",
            Some(Ok(watcher::Event::Apply(_))) => "apply",
            Some(Ok(watcher::Event::InitApply(_))) => "listed",
            Some(Ok(watcher::Event::Delete(_))) => "delete",
            Some(_) => "other",
        }
    }

    #[test]
    fn a_finished_backup_leaves_the_copy_until_it_is_deleted() {
        for (phase, applied, listed) in [
            (BackupPhase::Pending, "apply", "listed"),
            (BackupPhase::Running, "apply", "listed"),
            (BackupPhase::Completed, "delete", "skipped"),
            (BackupPhase::Failed, "delete", "skipped"),
        ] {
            let b = backup(phase);
            assert_eq!(
                what(cached_only(Ok(watcher::Event::Apply(b.clone())))),
                applied,
                "{phase:?}"
            );
            assert_eq!(
                what(cached_only(Ok(watcher::Event::InitApply(b)))),
                listed,
                "{phase:?}"
            );
        }
        // Being deleted, it is cached whole again: removing its artifacts reads its volumes.
        let mut deleting = backup(BackupPhase::Completed);
        deleting.metadata.deletion_timestamp = Some(Time(fixtures::at("04:00")));
        assert_eq!(
            what(cached_only(Ok(watcher::Event::Apply(deleting)))),
            "apply"
        );
    }
}
