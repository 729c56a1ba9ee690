//! Backstop's reconcilers. Decisions are plain functions (`scheduling`, `retention`, `jobs`);
//! the reconcilers (`policy`, `backup`, `repository`) read, call them, and apply the answer.

pub mod admission;
pub mod backup;
pub mod command;
pub mod due;
pub mod events;
pub mod first_pass;
#[cfg(test)]
mod fixtures;
pub mod history;
pub mod index;
pub mod jobs;
mod latch;
mod listing;
pub mod maintenance;
pub mod metrics;
pub mod outcome;
pub mod policy;
pub mod quiesce;
pub mod repository;
pub mod restore;
pub mod retention;
pub mod scheduling;
pub mod secrets;
pub mod snapshot;
pub mod stores;
pub mod sync;
pub mod verification;
pub mod waiting;
pub mod written;

use kube::Client;
use kube::runtime::events::Recorder;
use std::sync::Arc;

/// Where a set of reconcilers acts: every namespace (the cluster-wide install, a ClusterRole), or
/// one namespace of a namespaced install (Roles there). A namespaced install over several
/// namespaces runs one set of reconcilers, with its own watches, per namespace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Scope {
    Cluster,
    Namespace(String),
}

impl Scope {
    /// The API of every `K` in this scope.
    pub fn api<K>(&self, client: &Client) -> kube::Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
    {
        match self {
            Scope::Cluster => kube::Api::all(client.clone()),
            Scope::Namespace(namespace) => kube::Api::namespaced(client.clone(), namespace),
        }
    }
}

/// The reconcilers' only shared state.
pub struct Context {
    pub client: Client,
    pub recorder: Recorder,
    pub mover: jobs::MoverConfig,
    pub metrics: Arc<metrics::Metrics>,
    pub stores: stores::Stores,
    /// Policy statuses written that the policy copy may not show yet.
    pub policy_writes: written::Written<backstop_api::BackupPolicy>,
    /// The scheduled runs due now: other writes wait until their Backups are made.
    pub due_runs: due::DueRuns,
    /// When these reconcilers started (this replica became the leader).
    pub started: jiff::Timestamp,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("building a Job: {0}")]
    Json(#[from] serde_json::Error),
    #[error("finalizer: {0}")]
    Finalizer(String),
    /// Work that must finish before this step can complete (e.g. removing artifacts before the
    /// finalizer goes): not a failure, look again after `after`. The finalizer helper only keeps
    /// its finalizer when cleanup returns an error, which is why waiting is one.
    #[error("waiting: {why}")]
    NotYet {
        after: std::time::Duration,
        why: String,
    },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Runs every reconciler until `shutdown` resolves.
pub async fn run(
    ctx: Arc<Context>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) {
    let shutdown = futures::future::FutureExt::shared(Box::pin(shutdown));
    tokio::join!(
        repository::run(ctx.clone(), shutdown.clone()),
        policy::run(ctx.clone(), shutdown.clone()),
        backup::run(ctx.clone(), shutdown.clone()),
        restore::run(ctx.clone(), shutdown),
    );
}

/// A merge patch for `/status` that also clears `clearable` fields the status no longer has
/// (a merge patch leaves absent fields alone; only `null` removes them).
pub(crate) fn status_patch<T: serde::Serialize>(
    status: &T,
    clearable: &[&str],
) -> Result<serde_json::Value, serde_json::Error> {
    let mut value = serde_json::to_value(status)?;
    if let Some(map) = value.as_object_mut() {
        for key in clearable {
            map.entry(key.to_string())
                .or_insert(serde_json::Value::Null);
        }
    }
    Ok(serde_json::json!({ "status": value }))
}

/// Whether writing `new` would change `current` as the API server holds it. Compared as written,
/// not as held in memory: a time kept to the nanosecond here is written to the second, so a status
/// computed from a Backup whose `completionTime` has a fraction (written by another tool) never
/// equals its own round trip, and every reconcile wrote it again (controller bench: two status
/// writes per policy at start).
pub(crate) fn status_differs<S: serde::Serialize>(current: Option<&S>, new: &S) -> bool {
    match (current.map(serde_json::to_value), serde_json::to_value(new)) {
        (Some(Ok(current)), Ok(new)) => current != new,
        // Nothing yet, or not comparable: write, and let the write say what is wrong.
        _ => true,
    }
}

/// Writes `status` to the object's `/status` with a merge patch (see `status_patch`); the object's
/// resourceVersion after the write.
pub(crate) async fn patch_status<K, S>(
    client: &Client,
    obj: &K,
    status: &S,
    clearable: &[&str],
) -> Result<Option<String>>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
    S: serde::Serialize,
{
    use kube::ResourceExt;
    let api: kube::Api<K> =
        kube::Api::namespaced(client.clone(), &obj.namespace().unwrap_or_default());
    let written = api
        .patch_status(
            &obj.name_any(),
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(status_patch(status, clearable)?),
        )
        .await?;
    Ok(written.meta().resource_version.clone())
}

/// Whether `obj`, as the reconciler got it from its cache, is still the object the API server
/// holds. A reconcile woken by an event of a child (its Job deleted after the status was written)
/// can start before the cache has the parent's newest status: checked before acting on a missing
/// Job, so that a finished Backup or Restore is neither failed nor started again from its own past.
pub(crate) async fn cache_is_current<K>(client: &Client, obj: &K) -> Result<bool>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    use kube::ResourceExt;
    let api: kube::Api<K> =
        kube::Api::namespaced(client.clone(), &obj.namespace().unwrap_or_default());
    Ok(api
        .get_opt(&obj.name_any())
        .await?
        .is_some_and(|latest| latest.resource_version() == obj.resource_version()))
}

/// The wait of a reconcile whose cache is behind the API server: the newer object's own event
/// runs it again; the delay is only a safety net.
pub(crate) fn cache_behind() -> Error {
    Error::NotYet {
        after: std::time::Duration::from_secs(2),
        why: "the cache is behind the API server".into(),
    }
}

/// `mutex`'s guard, also after a panic while it was held: the maps guarded here are changed by a
/// few map operations that cannot leave them half-changed.
pub(crate) fn lock<T>(mutex: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// What every reconciler does with an error: a wait (`Error::NotYet`) looks again when it said,
/// and is no failure; anything else is logged, counted in `backstop_reconcile_errors_total` and
/// retried soon.
pub(crate) fn retry_after_error(
    ctx: &Context,
    controller: &str,
    err: &Error,
) -> kube::runtime::controller::Action {
    after_error(&ctx.metrics, controller, err)
}

fn after_error(
    metrics: &metrics::Metrics,
    controller: &str,
    err: &Error,
) -> kube::runtime::controller::Action {
    if let Error::NotYet { after, why } = err {
        tracing::debug!(controller, why, "waiting");
        return kube::runtime::controller::Action::requeue(*after);
    }
    tracing::warn!(%err, controller, "reconcile failed");
    metrics
        .reconcile_errors
        .get_or_create(&metrics::ControllerLabels {
            controller: controller.into(),
        })
        .inc();
    kube::runtime::controller::Action::requeue(std::time::Duration::from_secs(5))
}

/// Creates `obj` unless an object of its name exists (deterministic names: another replica or an
/// earlier pass made it). Whether this call created it.
pub(crate) async fn create_once<K>(api: &kube::Api<K>, obj: &K) -> Result<bool>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + serde::Serialize + std::fmt::Debug,
{
    match api.create(&kube::api::PostParams::default(), obj).await {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// Deletes `name` (in the background: dependents go after it) unless it is already gone.
/// Whether this call deleted it.
pub(crate) async fn delete_if_present<K>(api: &kube::Api<K>, name: &str) -> Result<bool>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    match api
        .delete(name, &kube::api::DeleteParams::background())
        .await
    {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// List parameters for reads served from the API server's watch cache instead of etcd. A LIST
/// without a resourceVersion reads every object of the kind from etcd and filters afterwards: with
/// thousands of Backups, one such list per policy reconcile kept the API server at 180% CPU and
/// 7 GiB (controller scale benchmark). Decisions here tolerate a cache a few milliseconds old:
/// names are deterministic and creation answers AlreadyExists.
pub(crate) fn cached() -> kube::api::ListParams {
    kube::api::ListParams::default().match_any()
}

/// What the operator watches: namespaced objects it can deserialize and share between tasks.
pub trait Watched:
    kube::Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
    + Clone
    + serde::de::DeserializeOwned
    + std::fmt::Debug
    + Send
    + Sync
    + 'static
{
    /// Whether the watched copy keeps this object (see `stores::cached_only`).
    fn cached(&self) -> bool {
        true
    }
}

impl Watched for backstop_api::BackupPolicy {}
impl Watched for backstop_api::BackupRepository {}
impl Watched for backstop_api::Restore {}
impl Watched for k8s_openapi::api::core::v1::PersistentVolumeClaim {}
impl Watched for k8s_openapi::api::batch::v1::Job {}
/// A finished Backup that is not being deleted or verified is remembered as a summary
/// (`history`), not cached: nothing reconciles it until it is deleted or asked to be verified,
/// and that change brings it back whole.
impl Watched for backstop_api::Backup {
    fn cached(&self) -> bool {
        !self.phase().is_terminal()
            || self.metadata.deletion_timestamp.is_some()
            || self.verification_request().is_some()
    }
}

/// What a watched object is cached as: without `managedFields` and the last-applied annotation
/// (the API server's bookkeeping, which no decision here reads; with 10,000 Backups they were
/// most of the operator's memory, controller scale benchmark: 115 -> 54 MiB).
pub fn lean<K: Watched>(obj: &mut K) {
    let meta = obj.meta_mut();
    meta.managed_fields = None;
    if let Some(annotations) = meta.annotations.as_mut() {
        annotations.remove("kubectl.kubernetes.io/last-applied-configuration");
        if annotations.is_empty() {
            meta.annotations = None;
        }
    }
}

/// A watch of `api` whose objects come `lean`. Watch errors are retried with backoff.
pub(crate) fn lean_watch_stream<K>(
    api: kube::Api<K>,
    config: kube::runtime::watcher::Config,
) -> impl futures::Stream<Item = kube::runtime::watcher::Result<kube::runtime::watcher::Event<K>>>
+ Send
+ 'static
where
    K: Watched,
{
    use kube::runtime::{WatchStreamExt, watcher};
    watcher(api, config).default_backoff().modify(lean)
}

/// A lean watch of `api` (see `lean_watch_stream`) kept in a store: the store and the stream of
/// applied objects that fills it.
pub(crate) fn lean_watch<K>(
    api: kube::Api<K>,
    config: kube::runtime::watcher::Config,
) -> (
    kube::runtime::reflector::Store<K>,
    impl futures::Stream<Item = Result<K, kube::runtime::watcher::Error>> + Send + 'static,
)
where
    K: Watched,
{
    use kube::runtime::{WatchStreamExt, reflector};
    let (reader, writer) = reflector::store();
    let stream = reflector(writer, lean_watch_stream(api, config)).applied_objects();
    (reader, stream)
}

/// The controller every reconciler of `K` runs in: like `Controller::new`, except that objects
/// are cached lean (see `lean_watch`) and at most 8 reconciles run at once; unbounded (kube's
/// default), a start with 10,000 Backups launched them all together and the operator was
/// OOM-killed even with 512 MiB.
pub(crate) fn controller<K>(api: kube::Api<K>) -> kube::runtime::Controller<K>
where
    K: Watched,
{
    let (reader, lean) = lean_watch(api, kube::runtime::watcher::Config::default());
    kube::runtime::Controller::for_stream(lean, reader).with_config(controller_config())
}

pub(crate) fn controller_config() -> kube::runtime::controller::Config {
    kube::runtime::controller::Config::default().concurrency(8)
}

/// Seconds since the epoch as a Kubernetes time.
pub(crate) fn now() -> jiff::Timestamp {
    jiff::Timestamp::now()
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::runtime::controller::Action;
    use std::time::Duration;

    #[test]
    fn a_status_differs_only_in_what_is_written() {
        use backstop_api::BackupPolicyStatus;
        use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
        let at = |t: &str| Some(Time(t.parse().expect("a time")));
        let held = BackupPolicyStatus {
            last_successful_backup_time: at("2026-11-07T18:45:17Z"),
            ..Default::default()
        };
        // Computed from a Backup whose completionTime has a fraction: written to the second.
        let computed = BackupPolicyStatus {
            last_successful_backup_time: at("2026-11-07T18:45:17.123456789Z"),
            ..Default::default()
        };
        assert_ne!(held, computed, "in memory they differ");
        assert!(!status_differs(Some(&held), &computed));
        let later = BackupPolicyStatus {
            last_successful_backup_time: at("2026-11-07T18:45:18Z"),
            ..Default::default()
        };
        assert!(status_differs(Some(&held), &later));
        assert!(status_differs(None, &held));
    }

    fn errors_counted(metrics: &metrics::Metrics) -> u64 {
        metrics
            .reconcile_errors
            .get_or_create(&metrics::ControllerLabels {
                controller: "backup".into(),
            })
            .get()
    }

    #[test]
    fn a_wait_looks_again_when_it_said_and_is_not_counted_as_an_error() {
        let metrics = metrics::Metrics::new();
        let wait = Error::NotYet {
            after: Duration::from_secs(30),
            why: "the artifacts are being removed".into(),
        };
        assert_eq!(
            after_error(&metrics, "backup", &wait),
            Action::requeue(Duration::from_secs(30))
        );
        assert_eq!(errors_counted(&metrics), 0);
    }

    #[test]
    fn a_real_error_is_counted_and_retried_soon() {
        let metrics = metrics::Metrics::new();
        let failed = Error::Finalizer("no name".into());
        assert_eq!(
            after_error(&metrics, "backup", &failed),
            Action::requeue(Duration::from_secs(5))
        );
        assert_eq!(errors_counted(&metrics), 1);
    }
}
