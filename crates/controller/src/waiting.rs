//! Backups and Restores that wait (see `backstop_api::waiting`): how the wait is recorded on the
//! object, and which waiting objects a change to another object wakes. Waiting costs no polling:
//! the reconcilers follow the watches of what they wait for (repositories, PVCs, policies,
//! Backups) and look again when one of them changes, or when the start deadline passes.

use backstop_api::condition::{self, ConditionType, Invalid};
use backstop_api::waiting::{Refusal, Verdict, WaitingFor, decide};
use k8s_openapi::api::core::v1::PersistentVolumeClaim;
use k8s_openapi::api::storage::v1::StorageClass;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::Api;
use kube::runtime::controller::Action;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Resource, ResourceExt};

/// The verdict on `refusal` for `obj`, whose start deadline is `deadline_seconds`.
pub fn verdict(obj: &impl Resource, refusal: Refusal, deadline_seconds: Option<i64>) -> Verdict {
    let created = obj.meta().creation_timestamp.as_ref().map(|t| t.0);
    decide(refusal, created, deadline_seconds, crate::now())
}

/// Keeps `obj` (a Backup or a Restore, whose current status is `current`) Pending, waiting with
/// `reason` and `message`: `status` is written when that changes it, with one Normal event when
/// the reason is new, and the object is looked at again after `recheck_in` (or on a change).
pub async fn wait<K, S>(
    ctx: &crate::Context,
    obj: &K,
    current: Option<&S>,
    mut status: S,
    reason: &'static str,
    message: String,
    recheck_in: Option<std::time::Duration>,
) -> Result<Action, crate::Error>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
    S: Status + serde::Serialize,
{
    let (conditions, text) = status.parts();
    let news = record(conditions, text, reason, &message, obj.meta().generation);
    if crate::status_differs(current, &status) {
        crate::patch_status(&ctx.client, obj, &status, &[]).await?;
    }
    if news {
        crate::events::normal(&ctx.recorder, obj, reason, message).await;
    }
    Ok(recheck_in.map_or_else(Action::await_change, Action::requeue))
}

/// The status of something that can wait: its conditions and its message.
pub trait Status {
    fn parts(&mut self) -> (&mut Vec<Condition>, &mut Option<String>);
}

impl Status for backstop_api::BackupStatus {
    fn parts(&mut self) -> (&mut Vec<Condition>, &mut Option<String>) {
        (&mut self.conditions, &mut self.message)
    }
}

impl Status for backstop_api::RestoreStatus {
    fn parts(&mut self) -> (&mut Vec<Condition>, &mut Option<String>) {
        (&mut self.conditions, &mut self.message)
    }
}

/// Records on a Pending object's conditions that it waits (`Completed=False` with the waiting
/// reason) and its message; returns whether the reason is new, so that the caller tells it with
/// one event and not one per look.
fn record(
    conditions: &mut Vec<Condition>,
    message: &mut Option<String>,
    reason: &str,
    text: &str,
    generation: Option<i64>,
) -> bool {
    let before = condition::find(conditions, ConditionType::Completed).map(|c| c.reason.clone());
    condition::set(
        conditions,
        ConditionType::Completed,
        false,
        reason,
        text,
        generation,
        crate::now(),
    );
    *message = Some(text.to_string());
    before.as_deref() != Some(reason)
}

/// The objects of `store` in `namespace` that `waits` accepts: those a change there may unblock.
pub fn in_namespace<K>(
    store: &Store<K>,
    namespace: Option<&str>,
    waits: impl Fn(&K) -> bool,
) -> Vec<ObjectRef<K>>
where
    K: crate::Watched,
{
    store
        .state()
        .iter()
        .filter(|obj| obj.namespace().as_deref() == namespace && waits(obj))
        .map(|obj| ObjectRef::from_obj(obj.as_ref()))
        .collect()
}

/// Whether a mover can use `claim`: `Ok` when it is bound, or about to be bound by the mover
/// pod itself (its class binds when a pod first uses it, `WaitForFirstConsumer`). A Pending
/// claim whose class binds at once (or that has no StorageClass object, as static PVs have) is
/// waited for: the binder is at work.
pub async fn bound(
    ctx: &crate::Context,
    claim: &PersistentVolumeClaim,
) -> Result<Result<(), Refusal>, crate::Error> {
    let name = claim.name_any();
    match claim.status.as_ref().and_then(|s| s.phase.as_deref()) {
        Some("Bound") => Ok(Ok(())),
        Some("Lost") => Ok(Err(Refusal::Fail(Invalid::new(
            "VolumeLost",
            format!("PVC {name:?} is Lost: its PersistentVolume is gone"),
        )))),
        _ if binds_on_first_use(ctx, claim).await? => Ok(Ok(())),
        phase => Ok(Err(Refusal::wait(
            WaitingFor::Volume,
            "VolumeNotBound",
            format!(
                "PVC {name:?} is {}; it must be bound",
                phase.unwrap_or("not yet bound")
            ),
        ))),
    }
}

/// Whether `claim`'s StorageClass binds volumes only when a pod first uses them.
pub async fn binds_on_first_use(
    ctx: &crate::Context,
    claim: &PersistentVolumeClaim,
) -> Result<bool, kube::Error> {
    let Some(class) = claim
        .spec
        .as_ref()
        .and_then(|s| s.storage_class_name.as_deref())
        .filter(|c| !c.is_empty())
    else {
        return Ok(false);
    };
    let classes: Api<StorageClass> = Api::all(ctx.client.clone());
    Ok(classes
        .get_opt(class)
        .await?
        .and_then(|c| c.volume_binding_mode)
        .as_deref()
        == Some("WaitForFirstConsumer"))
}
