//! What mover pods report: a JSON document in the termination message, read back from the Job's
//! pod (never from logs).

use crate::Error;
use backstop_api::condition::Invalid;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use kube::api::{Api, ListParams};
use serde::Deserialize;

/// What a mover pod reports when it fails.
#[derive(Debug, Deserialize)]
pub struct MoverFailure {
    pub error: String,
    #[serde(default)]
    pub reason: Option<String>,
}

/// The termination message of the finished container of `job`'s pod, if any.
pub async fn termination_message(pods: &Api<Pod>, job: &str) -> Result<Option<String>, Error> {
    let list = pods
        .list(&ListParams::default().labels(&format!("job-name={job}")))
        .await?;
    Ok(list
        .items
        .iter()
        .filter_map(|p| {
            p.status
                .as_ref()?
                .container_statuses
                .as_ref()?
                .first()
                .cloned()
        })
        .filter_map(|c| c.state?.terminated?.message)
        .find(|m| !m.trim().is_empty()))
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
        .and_then(|m| serde_json::from_str::<MoverFailure>(m).ok())
    {
        return Invalid::new(
            failure.reason.unwrap_or_else(|| "MoverFailed".into()),
            failure.error,
        );
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
