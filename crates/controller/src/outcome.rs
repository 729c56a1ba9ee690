//! What mover pods report: a JSON document in the termination message, read back from the Job's
//! pod (never from logs).

use crate::Error;
use backstop_api::condition::Invalid;
use backstop_api::contract::Failure;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ContainerStatus, Pod};
use kube::api::{Api, ListParams};
use kube::{Resource, ResourceExt};

/// The termination message of the finished container of `job`'s pod, if any. Only pods the Job
/// itself owns count: anyone who may create pods in the namespace can label one `job-name=...`
/// and give it a termination message.
pub async fn termination_message(pods: &Api<Pod>, job: &Job) -> Result<Option<String>, Error> {
    Ok(job_pods(pods, job)
        .await?
        .iter()
        .filter_map(|p| {
            // The mover's, in a pod with a command beside it; else the only container's.
            let statuses = p.status.as_ref()?.container_statuses.as_ref()?;
            statuses
                .iter()
                .find(|c| c.name == crate::jobs::MOVER_CONTAINER)
                .or(statuses.first())
        })
        .find_map(message_of))
}

/// The pods `job` owns (see `termination_message`).
pub async fn job_pods(pods: &Api<Pod>, job: &Job) -> Result<Vec<Pod>, Error> {
    let list = pods
        .list(&ListParams::default().labels(&format!("job-name={}", job.name_any())))
        .await?;
    Ok(list
        .items
        .into_iter()
        .filter(|p| owned_by(p, job))
        .collect())
}

/// A finished container's termination message, if it left one.
pub fn message_of(status: &ContainerStatus) -> Option<String> {
    status
        .state
        .as_ref()?
        .terminated
        .as_ref()?
        .message
        .clone()
        .filter(|m| !m.trim().is_empty())
}

/// Whether `obj` has `owner` as its controller (by uid, never by name).
pub fn owned_by(obj: &impl Resource, owner: &impl Resource) -> bool {
    let Some(uid) = owner.meta().uid.as_deref() else {
        return false;
    };
    obj.meta()
        .owner_references
        .iter()
        .flatten()
        .any(|o| o.uid == uid && o.controller == Some(true))
}

pub const JOB_NAME_TAKEN: &str = "JobNameTaken";

/// A Job with the name Backstop gives this work exists and belongs to something else (it is
/// never read or deleted).
pub fn job_name_taken(name: &str) -> Invalid {
    Invalid::new(
        JOB_NAME_TAKEN,
        format!(
            "a Job named {name:?} exists and is not Backstop's for this object; it is left alone: delete it and retry"
        ),
    )
}

/// Whether a Job has finished: `Some(true)` succeeded, `Some(false)` failed, `None` running.
pub fn finished(job: &Job) -> Option<bool> {
    let status = job.status.as_ref()?;
    if status.succeeded.unwrap_or(0) > 0 {
        return Some(true);
    }
    let failed = status.failed.unwrap_or(0) > 0
        || status
            .conditions
            .iter()
            .flatten()
            .any(|c| c.type_ == "Failed" && c.status == "True");
    failed.then_some(false)
}

/// Why a failed mover Job failed: the mover's own report (`message`, its termination message),
/// else the Job's `Failed` condition (e.g. its deadline passed before the pod could finish).
pub fn failure(job: &Job, message: Option<String>) -> Invalid {
    if let Some(failure) = message
        .as_deref()
        .and_then(|m| serde_json::from_str::<Failure>(m).ok())
    {
        return Invalid::new(failure.reason.as_str(), failure.error);
    }
    let why = job
        .status
        .iter()
        .flat_map(|s| s.conditions.iter().flatten())
        .find(|c| c.type_ == "Failed")
        .map(|c| {
            (
                c.reason.clone().unwrap_or_default(),
                c.message.clone().unwrap_or_default(),
            )
        });
    match why {
        Some((reason, msg)) if !reason.is_empty() => Invalid::new(reason, msg),
        _ => Invalid::new(
            "MoverFailed",
            format!(
                "Job {} failed: {}",
                job.name_any(),
                message.unwrap_or_else(|| "no message".into())
            ),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;

    fn job(uid: &str) -> Job {
        let mut job = Job::default();
        job.metadata.name = Some("backup-db-1a2b3c4d".into());
        job.metadata.uid = Some(uid.into());
        job
    }

    fn pod(owner_uid: Option<&str>, controller: bool) -> Pod {
        let mut pod = Pod::default();
        pod.metadata.labels =
            Some([("job-name".to_string(), "backup-db-1a2b3c4d".to_string())].into());
        pod.metadata.owner_references = owner_uid.map(|uid| {
            vec![OwnerReference {
                api_version: "batch/v1".into(),
                kind: "Job".into(),
                name: "backup-db-1a2b3c4d".into(),
                uid: uid.into(),
                controller: Some(controller),
                ..Default::default()
            }]
        });
        pod
    }

    #[test]
    fn only_the_jobs_own_pods_count_not_lookalikes_with_its_label() {
        let ours = job("uid-1");
        assert!(owned_by(&pod(Some("uid-1"), true), &ours));
        // Labelled like the Job's pods, made by someone else.
        assert!(!owned_by(&pod(None, false), &ours));
        assert!(!owned_by(&pod(Some("uid-2"), true), &ours));
        assert!(!owned_by(&pod(Some("uid-1"), false), &ours));
        assert!(!owned_by(&pod(Some("uid-1"), true), &Job::default()));
    }
}
