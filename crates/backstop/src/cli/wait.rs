//! Waiting for a Backup or Restore to finish, with a progress line each time what it is doing
//! changes (on standard error, so standard output stays the result).

use super::format::elapsed;
use backstop_api::BackupPhase;
use backstop_api::condition::{ConditionType, find};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::Api;
use std::time::{Duration, Instant};

/// What a person is told about an object while it runs.
pub struct Progress {
    pub phase: BackupPhase,
    pub line: String,
}

impl Progress {
    /// `line` (the phase, and what else the command tells), then why the object waits or
    /// failed; while it runs the reason would only repeat the phase.
    pub fn of(phase: BackupPhase, mut line: String, conditions: &[Condition]) -> Self {
        if matches!(phase, BackupPhase::Pending | BackupPhase::Failed)
            && let Some(why) = reason(conditions, None)
        {
            line.push_str(&format!(" ({why})"));
        }
        Progress { phase, line }
    }
}

/// Polls `name` every second until it is Completed or Failed, and returns it; gives up after
/// `timeout` (the object goes on in the cluster).
pub async fn until_finished<K>(
    api: &Api<K>,
    kind: &str,
    name: &str,
    timeout: Duration,
    progress: impl Fn(&K) -> Progress,
) -> anyhow::Result<K>
where
    K: Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let started = Instant::now();
    let mut last_line = String::new();
    loop {
        let object = api
            .get_opt(name)
            .await?
            .ok_or_else(|| anyhow::anyhow!("{kind} {name} was deleted while waiting for it"))?;
        let now = progress(&object);
        if now.line != last_line {
            eprintln!(
                "{kind} {name}: {} ({})",
                super::format::printable(&now.line),
                elapsed(started.elapsed().try_into().unwrap_or_default())
            );
            last_line = now.line;
        }
        if now.phase.is_terminal() {
            return Ok(object);
        }
        if started.elapsed() >= timeout {
            anyhow::bail!(
                "gave up waiting after {}: {kind} {name} is still {}; it goes on in the cluster",
                elapsed(timeout.try_into().unwrap_or_default()),
                now.phase.as_str()
            );
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Why a Backup or Restore is not done: its Failed condition, else the Completed condition's
/// reason while it waits, else its message.
pub fn reason(conditions: &[Condition], message: Option<&str>) -> Option<String> {
    let said = |c: &Condition| {
        if c.message.is_empty() {
            c.reason.clone()
        } else {
            format!("{}: {}", c.reason, c.message)
        }
    };
    find(conditions, ConditionType::Failed)
        .filter(|c| c.status == "True")
        .or_else(|| find(conditions, ConditionType::Completed).filter(|c| c.status != "True"))
        .map(said)
        .or_else(|| message.map(str::to_string))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn condition(type_: &str, status: &str, reason: &str, message: &str) -> Condition {
        Condition {
            type_: type_.into(),
            status: status.into(),
            reason: reason.into(),
            message: message.into(),
            last_transition_time: k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                jiff::Timestamp::UNIX_EPOCH,
            ),
            observed_generation: None,
        }
    }

    #[test]
    fn a_failure_is_told_by_its_failed_condition_first() {
        let conditions = [
            condition("Completed", "False", "MoverFailed", "see Failed"),
            condition("Failed", "True", "MoverFailed", "volume data: exit 1"),
        ];
        assert_eq!(
            reason(&conditions, Some("other")).as_deref(),
            Some("MoverFailed: volume data: exit 1")
        );
    }

    #[test]
    fn a_wait_is_told_by_the_completed_condition_and_success_by_nothing() {
        let waiting = [condition("Completed", "False", "WaitingForVolume", "")];
        assert_eq!(reason(&waiting, None).as_deref(), Some("WaitingForVolume"));
        let done = [condition("Completed", "True", "Completed", "ok")];
        assert_eq!(reason(&done, None), None);
        assert_eq!(reason(&[], Some("running")).as_deref(), Some("running"));
    }
}
