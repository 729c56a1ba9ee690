//! `strategy.quiesce`: an application without a dump tool is stopped for the copy of its
//! volumes. Its Deployment or StatefulSet is scaled to zero, the copy starts once its pods are
//! gone, and it is scaled back to the replicas it had when every volume was read (with the
//! snapshot strategy: as soon as every snapshot is ready).
//!
//! The replicas it had are written into the Backup's status before it is scaled down, and the
//! workload is annotated with the Backup holding it: an operator that restarts in between finds
//! both and scales it back; a second backup never takes the zero it sees for the original count
//! (it waits while another backup holds the workload). Only a workload still at zero and still
//! held by this backup is scaled back: one that someone scaled meanwhile is left as they made it.

use crate::{Context, Error, events, now};
use backstop_api::backup::QuiesceRecord;
use backstop_api::condition::Invalid;
use backstop_api::strategy::{Quiesce, Workload, WorkloadKind};
use backstop_api::{Backup, BackupStatus, naming};
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use kube::ResourceExt;
use kube::api::{Api, ListParams, Patch, PatchParams};
use serde_json::json;

/// The annotation on a held workload: the Backup holding it.
pub const HELD_BY: &str = "backstop.dev/quiesced-by";
/// The annotation on a held workload: the replicas it had.
pub const HELD_REPLICAS: &str = "backstop.dev/quiesced-replicas";
/// The label a workload needs before a backup may scale it down (value `true`), set by its
/// owner: whoever may create a Backup or a policy could otherwise stop any application of the
/// namespace.
pub const OPT_IN_LABEL: &str = "backstop.dev/quiesce";
/// How often a quiescing backup looks at the application's pods.
pub const POLL: std::time::Duration = std::time::Duration::from_secs(2);

/// A workload as the decisions need it.
#[derive(Debug, Clone, PartialEq)]
pub struct Seen {
    /// `spec.replicas` (1 when unset, as Kubernetes defaults it).
    pub replicas: i32,
    /// The Backup that holds it (its annotation), if any.
    pub held_by: Option<String>,
    /// Its pods, terminating ones included (they may still write).
    pub pods: usize,
    /// It carries `OPT_IN_LABEL=true`.
    pub opted_in: bool,
}

/// What to do on this pass while the application is being stopped.
#[derive(Debug, PartialEq)]
pub enum Hold {
    /// Scale it to zero (and annotate it as held by this backup).
    ScaleDown,
    Wait(String),
    /// Its pods are gone: the copy may start.
    Stopped,
    Fail(Invalid),
}

/// Decides the next step of stopping the application of `record`, `seen` now (`None`: it does
/// not exist), for the backup `me` that started at `started`.
pub fn hold(
    record: &QuiesceRecord,
    seen: Option<&Seen>,
    me: &str,
    elapsed_seconds: i64,
    timeout_seconds: i64,
) -> Hold {
    let what = format!("{} {:?}", record.kind.as_str(), record.name);
    let Some(seen) = seen else {
        return Hold::Fail(Invalid::new(
            "QuiesceTargetNotFound",
            format!("{what} (strategy.quiesce.scaleDown) does not exist in the backup's namespace"),
        ));
    };
    let waiting = match &seen.held_by {
        Some(other) if other != me => format!("{what} is held by Backup {other:?}"),
        Some(_) if seen.replicas == 0 && seen.pods == 0 => return Hold::Stopped,
        Some(_) if seen.replicas == 0 => {
            format!("{} pod(s) of {what} are still stopping", seen.pods)
        }
        _ if !seen.opted_in => {
            return Hold::Fail(Invalid::new(
                "QuiesceNotAllowed",
                format!(
                    "{what} (strategy.quiesce.scaleDown) is not labelled {OPT_IN_LABEL}=true: Backstop scales down only workloads their owners opted in (kubectl label {} {} {OPT_IN_LABEL}=true); nothing was stopped",
                    record.kind.as_str().to_lowercase(),
                    record.name
                ),
            ));
        }
        _ => return Hold::ScaleDown,
    };
    if elapsed_seconds >= timeout_seconds {
        return Hold::Fail(Invalid::new(
            "QuiesceTimeout",
            format!(
                "{waiting} {elapsed_seconds} s after the backup started (strategy.quiesce.timeoutSeconds {timeout_seconds}); nothing was read"
            ),
        ));
    }
    Hold::Wait(waiting)
}

/// What becomes of a held workload when the backup is done with it.
#[derive(Debug, PartialEq)]
pub enum Release {
    /// Scale it back to the replicas it had, and drop the annotations.
    ScaleTo(i32),
    /// Drop this backup's annotations only, and say why it is left as it is.
    Unhold(String),
    /// Nothing to do, for this reason.
    Nothing(String),
}

pub fn release(record: &QuiesceRecord, seen: Option<&Seen>, me: &str) -> Release {
    let what = format!("{} {:?}", record.kind.as_str(), record.name);
    let Some(seen) = seen else {
        return Release::Nothing(format!("{what} no longer exists"));
    };
    match &seen.held_by {
        Some(holder) if holder == me && seen.replicas == 0 => Release::ScaleTo(record.replicas),
        Some(holder) if holder == me => Release::Unhold(format!(
            "{what} was scaled to {} by someone else during the backup: left so",
            seen.replicas
        )),
        _ => Release::Nothing(format!(
            "{what} was not scaled down by this backup: left as it is"
        )),
    }
}

/// What `look` reads of a workload.
struct Looked {
    replicas: i32,
    selector: Option<LabelSelector>,
    meta: ObjectMeta,
}

/// The workload's `spec.replicas`, selector and metadata, if it exists.
async fn look(
    ctx: &Context,
    namespace: &str,
    workload: &Workload,
) -> Result<Option<Looked>, Error> {
    Ok(match workload.kind {
        WorkloadKind::Deployment => {
            let api: Api<Deployment> = Api::namespaced(ctx.client.clone(), namespace);
            api.get_opt(&workload.name).await?.map(|d| {
                let spec = d.spec.unwrap_or_default();
                Looked {
                    replicas: spec.replicas.unwrap_or(1),
                    selector: Some(spec.selector),
                    meta: d.metadata,
                }
            })
        }
        WorkloadKind::StatefulSet => {
            let api: Api<StatefulSet> = Api::namespaced(ctx.client.clone(), namespace);
            api.get_opt(&workload.name).await?.map(|s| {
                let spec = s.spec.unwrap_or_default();
                Looked {
                    replicas: spec.replicas.unwrap_or(1),
                    selector: Some(spec.selector),
                    meta: s.metadata,
                }
            })
        }
    })
}

/// The workload now, with its pods counted (fresh from the API server, not a cache: "gone"
/// must be true).
async fn seen(ctx: &Context, namespace: &str, workload: &Workload) -> Result<Option<Seen>, Error> {
    let Some(looked) = look(ctx, namespace, workload).await? else {
        return Ok(None);
    };
    let pods = match looked.selector.as_ref().map(naming::selector_string) {
        Some(Ok(selector)) if !selector.is_empty() => {
            let api: Api<Pod> = Api::namespaced(ctx.client.clone(), namespace);
            api.list(&ListParams::default().labels(&selector))
                .await?
                .items
                .len()
        }
        // A workload without a usable selector has no pods Backstop can count: none.
        _ => 0,
    };
    let labels = looked.meta.labels.unwrap_or_default();
    Ok(Some(Seen {
        replicas: looked.replicas,
        held_by: looked
            .meta
            .annotations
            .unwrap_or_default()
            .get(HELD_BY)
            .cloned(),
        pods,
        opted_in: labels.get(OPT_IN_LABEL).map(String::as_str) == Some("true"),
    }))
}

async fn patch(
    ctx: &Context,
    namespace: &str,
    workload: &Workload,
    patch: serde_json::Value,
) -> Result<(), Error> {
    let params = PatchParams::default();
    match workload.kind {
        WorkloadKind::Deployment => {
            let api: Api<Deployment> = Api::namespaced(ctx.client.clone(), namespace);
            api.patch(&workload.name, &params, &Patch::Merge(patch))
                .await?;
        }
        WorkloadKind::StatefulSet => {
            let api: Api<StatefulSet> = Api::namespaced(ctx.client.clone(), namespace);
            api.patch(&workload.name, &params, &Patch::Merge(patch))
                .await?;
        }
    }
    Ok(())
}

/// Where stopping the application stands after this pass.
pub enum Held {
    Stopped,
    Waiting,
    Failed(Invalid),
}

/// Moves the stopping of the application on: records its replicas (written to the Backup's
/// status before anything is scaled), scales it down, waits for its pods to go.
pub async fn hold_on(
    ctx: &Context,
    backup: &Backup,
    status: &mut BackupStatus,
    quiesce: &Quiesce,
) -> Result<Held, Error> {
    let namespace = backup.namespace().unwrap_or_default();
    let me = backup.name_any();
    let workload = &quiesce.scale_down;
    let seen = seen(ctx, &namespace, workload).await?;
    let elapsed = status
        .start_time
        .as_ref()
        .map_or(0, |t| now().duration_since(t.0).as_secs());
    if status.quiesce.is_none() {
        let fresh = QuiesceRecord {
            kind: workload.kind,
            name: workload.name.clone(),
            replicas: seen.as_ref().map_or(0, |s| s.replicas),
            ..QuiesceRecord::default()
        };
        if seen
            .as_ref()
            .is_none_or(|s| s.held_by.is_some() || !s.opted_in)
        {
            // Absent, held by another backup (whose zero is not the original count), or not
            // to be stopped by Backstop at all.
            let timeout = quiesce.timeout_seconds();
            return Ok(match hold(&fresh, seen.as_ref(), &me, elapsed, timeout) {
                Hold::Fail(why) => Held::Failed(why),
                _ => Held::Waiting,
            });
        }
        // The count is safe before anything is scaled.
        status.quiesce = Some(fresh);
        crate::patch_status(&ctx.client, backup, status, &[]).await?;
    }
    let Some(record) = status.quiesce.as_mut() else {
        return Ok(Held::Waiting);
    };
    match hold(
        record,
        seen.as_ref(),
        &me,
        elapsed,
        quiesce.timeout_seconds(),
    ) {
        Hold::ScaleDown => {
            let annotations = json!({HELD_BY: me, HELD_REPLICAS: record.replicas.to_string()});
            let body = json!({"metadata": {"annotations": annotations}, "spec": {"replicas": 0}});
            patch(ctx, &namespace, workload, body).await?;
            let at = now();
            record.scaled_down_time = Some(at);
            let message = format!(
                "Scaled {} {:?} from {} to 0 replicas for the backup; it is scaled back when its volumes are read",
                workload.kind.as_str(),
                workload.name,
                record.replicas
            );
            crate::patch_status(&ctx.client, backup, status, &[]).await?;
            events::normal(&ctx.recorder, backup, "Quiesced", message).await;
            Ok(Held::Waiting)
        }
        Hold::Wait(why) => {
            if record.message.as_deref() != Some(why.as_str()) {
                record.message = Some(why);
                crate::patch_status(&ctx.client, backup, status, &[]).await?;
            }
            Ok(Held::Waiting)
        }
        Hold::Stopped => {
            record.stopped_time = Some(now());
            record.message = None;
            Ok(Held::Stopped)
        }
        Hold::Fail(why) => Ok(Held::Failed(why)),
    }
}

/// Whether the application was stopped and not given back yet.
pub fn holding(status: &BackupStatus) -> bool {
    status
        .quiesce
        .as_ref()
        .is_some_and(|r| r.restored_time.is_none())
}

/// Gives the application back (see `release`); records when and how in the status.
pub async fn give_back(
    ctx: &Context,
    backup: &Backup,
    status: &mut BackupStatus,
) -> Result<(), Error> {
    let Some(record) = status
        .quiesce
        .as_mut()
        .filter(|r| r.restored_time.is_none())
    else {
        return Ok(());
    };
    let namespace = backup.namespace().unwrap_or_default();
    let workload = Workload {
        kind: record.kind,
        name: record.name.clone(),
    };
    let seen = seen(ctx, &namespace, &workload).await?;
    let unhold = json!({HELD_BY: null, HELD_REPLICAS: null});
    let at = now();
    let down = record
        .scaled_down_time
        .map(|t| at.duration_since(t).as_secs_f64());
    match release(record, seen.as_ref(), &backup.name_any()) {
        Release::ScaleTo(replicas) => {
            let body = json!({"metadata": {"annotations": unhold}, "spec": {"replicas": replicas}});
            patch(ctx, &namespace, &workload, body).await?;
            let message = format!(
                "Scaled {} {:?} back to {replicas} replicas (down {:.0} s)",
                workload.kind.as_str(),
                workload.name,
                down.unwrap_or(0.0)
            );
            events::normal(&ctx.recorder, backup, "QuiesceReleased", message.clone()).await;
            record.message = Some(message);
        }
        Release::Unhold(why) => {
            patch(
                ctx,
                &namespace,
                &workload,
                json!({"metadata": {"annotations": unhold}}),
            )
            .await?;
            events::warning(&ctx.recorder, backup, "QuiesceReleased", why.clone()).await;
            record.message = Some(why);
        }
        Release::Nothing(why) => record.message = Some(why),
    }
    record.restored_time = Some(at);
    record.down_seconds = down;
    Ok(())
}

/// Whether every volume's snapshot is ready (the application can be given back before the data
/// is moved).
pub fn snapshots_taken(status: &BackupStatus) -> bool {
    status.volumes.iter().all(|v| {
        v.phase.is_terminal() || v.snapshot.as_ref().is_some_and(|s| s.ready_time.is_some())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use backstop_api::BackupPhase;
    use backstop_api::VolumeBackup;
    use backstop_api::backup::SnapshotRecord;

    fn record(replicas: i32) -> QuiesceRecord {
        QuiesceRecord {
            kind: WorkloadKind::StatefulSet,
            name: "db".into(),
            replicas,
            ..QuiesceRecord::default()
        }
    }

    fn seen(replicas: i32, held_by: Option<&str>, pods: usize) -> Seen {
        Seen {
            replicas,
            held_by: held_by.map(str::to_string),
            pods,
            opted_in: true,
        }
    }

    #[test]
    fn only_a_workload_its_owner_opted_in_is_scaled_down() {
        let r = record(3);
        let not_labelled = Seen {
            opted_in: false,
            ..seen(3, None, 3)
        };
        match hold(&r, Some(&not_labelled), "nightly-1", 0, 300) {
            Hold::Fail(why) => {
                assert_eq!(why.reason, "QuiesceNotAllowed");
                assert!(
                    why.message
                        .contains("kubectl label statefulset db backstop.dev/quiesce=true"),
                    "{}",
                    why.message
                );
            }
            other => panic!("scaled a workload nobody opted in: {other:?}"),
        }
    }

    #[test]
    fn stopping_scales_down_waits_for_the_pods_then_lets_the_copy_start() {
        let r = record(3);
        let me = "nightly-1";
        assert_eq!(
            hold(&r, Some(&seen(3, None, 3)), me, 0, 300),
            Hold::ScaleDown
        );
        // Recorded, then a restart before the scale: scaled down now.
        assert_eq!(
            hold(&r, Some(&seen(3, None, 3)), me, 5, 300),
            Hold::ScaleDown
        );
        // Someone scaled it up again while this backup held it: down again.
        assert_eq!(
            hold(&r, Some(&seen(1, Some(me), 1)), me, 5, 300),
            Hold::ScaleDown
        );
        assert_eq!(
            hold(&r, Some(&seen(0, Some(me), 2)), me, 5, 300),
            Hold::Wait("2 pod(s) of StatefulSet \"db\" are still stopping".into())
        );
        assert_eq!(
            hold(&r, Some(&seen(0, Some(me), 0)), me, 5, 300),
            Hold::Stopped
        );
    }

    #[test]
    fn stopping_fails_on_a_missing_workload_and_after_the_timeout() {
        let r = record(3);
        let missing = hold(&r, None, "b", 0, 300);
        assert!(
            matches!(&missing, Hold::Fail(why) if why.reason == "QuiesceTargetNotFound"),
            "{missing:?}"
        );
        let slow = hold(&r, Some(&seen(0, Some("b"), 1)), "b", 300, 300);
        match slow {
            Hold::Fail(why) => {
                assert_eq!(why.reason, "QuiesceTimeout");
                assert!(why.message.contains("1 pod(s)"), "{}", why.message);
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            hold(&r, Some(&seen(0, Some("b"), 1)), "b", 299, 300),
            Hold::Wait(_)
        ));
    }

    #[test]
    fn another_backups_hold_is_waited_for_never_taken_over() {
        let r = record(0);
        let other = hold(&r, Some(&seen(0, Some("other"), 0)), "me", 10, 300);
        assert_eq!(
            other,
            Hold::Wait("StatefulSet \"db\" is held by Backup \"other\"".into())
        );
        assert!(matches!(
            hold(&r, Some(&seen(0, Some("other"), 0)), "me", 300, 300),
            Hold::Fail(_)
        ));
    }

    #[test]
    fn only_a_workload_still_at_zero_and_held_by_this_backup_is_scaled_back() {
        let r = record(3);
        assert_eq!(
            release(&r, Some(&seen(0, Some("me"), 0)), "me"),
            Release::ScaleTo(3)
        );
        assert!(matches!(
            release(&r, Some(&seen(5, Some("me"), 5)), "me"),
            Release::Unhold(why) if why.contains("scaled to 5 by someone else")
        ));
        assert!(matches!(
            release(&r, Some(&seen(0, Some("other"), 0)), "me"),
            Release::Nothing(_)
        ));
        assert!(matches!(
            release(&r, Some(&seen(3, None, 3)), "me"),
            Release::Nothing(_)
        ));
        assert!(
            matches!(release(&r, None, "me"), Release::Nothing(why) if why.contains("no longer exists"))
        );
    }

    #[test]
    fn the_application_goes_back_once_every_snapshot_is_ready() {
        let snap = |ready: bool| SnapshotRecord {
            ready_time: ready.then(now),
            ..SnapshotRecord::default()
        };
        let volume = |ready: bool, phase: BackupPhase| VolumeBackup {
            snapshot: Some(snap(ready)),
            phase,
            ..VolumeBackup::default()
        };
        let mut status = BackupStatus {
            volumes: vec![
                volume(true, BackupPhase::Running),
                volume(false, BackupPhase::Running),
            ],
            ..BackupStatus::default()
        };
        assert!(!snapshots_taken(&status));
        status.volumes[1] = volume(false, BackupPhase::Failed);
        assert!(
            snapshots_taken(&status),
            "a failed volume waits for nothing"
        );
        status.quiesce = Some(record(1));
        assert!(holding(&status));
        status.quiesce.as_mut().unwrap().restored_time = Some(now());
        assert!(!holding(&status));
    }
}
