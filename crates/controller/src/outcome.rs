//! What mover pods report: a JSON document in the termination message, read back from the Job's
//! pod (never from logs).

use crate::Error;
use k8s_openapi::api::core::v1::Pod;
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
