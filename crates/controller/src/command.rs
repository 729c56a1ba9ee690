//! Command backups and restores on the operator's side: their Jobs run two containers, the mover
//! and the user's command, and a Job only ends when both have. `judge` reads such a pod: the
//! mover's termination message is the result as soon as the mover has ended (the command has
//! exited by then, or the mover stopped it), and a command that cannot start, or that ended
//! while the mover waits on for it, fails the work instead of leaving it to the Job's deadline.

use crate::backup::{Step, backup_step};
use crate::jobs::{self, COMMAND_CONTAINER, MOVER_CONTAINER};
use crate::outcome::{job_pods, message_of};
use crate::{Context, Error, events, now};
use backstop_api::condition::Invalid;
use backstop_api::strategy::CommandStrategy;
use backstop_api::{Backup, BackupRepository};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ContainerStatus, Pod};
use kube::api::Api;
use kube::{Resource, ResourceExt};

/// How long the mover may go on once the command's container has ended (it only has to commit
/// or report; a mover that waits longer waits for a command that never opened the pipe).
pub const GRACE_SECONDS: i64 = 60;

/// How often a running command's pod is looked at.
pub const WATCH: std::time::Duration = std::time::Duration::from_secs(10);

/// Reasons a container waits with that do not pass by themselves.
const CANNOT_START: &[&str] = &[
    "ImagePullBackOff",
    "ErrImagePull",
    "InvalidImageName",
    "ErrImageNeverPull",
    "CreateContainerConfigError",
    "CreateContainerError",
    "RunContainerError",
];

/// What a command pod says.
#[derive(Debug, PartialEq)]
pub enum PodState {
    /// Both containers are at work (or starting).
    Working,
    /// The mover has ended: its exit and termination message are the result.
    MoverEnded {
        succeeded: bool,
        message: Option<String>,
    },
    /// The command cannot start, or ended long ago and the mover still waits.
    Stuck(Invalid),
}

fn container<'a>(pod: &'a Pod, name: &str) -> Option<&'a ContainerStatus> {
    pod.status
        .as_ref()?
        .container_statuses
        .as_ref()?
        .iter()
        .find(|c| c.name == name)
}

/// Reads a command pod at `now`.
pub fn judge(pod: &Pod, now: jiff::Timestamp) -> PodState {
    let mover = container(pod, MOVER_CONTAINER);
    if let Some(mover) = mover
        && let Some(ended) = mover.state.as_ref().and_then(|s| s.terminated.as_ref())
    {
        return PodState::MoverEnded {
            succeeded: ended.exit_code == 0,
            message: message_of(mover),
        };
    }
    let Some(command) = container(pod, COMMAND_CONTAINER) else {
        return PodState::Working;
    };
    let state = command.state.clone().unwrap_or_default();
    if let Some(waiting) = &state.waiting
        && let Some(reason) = waiting.reason.as_deref()
        && CANNOT_START.contains(&reason)
    {
        return PodState::Stuck(Invalid::new(
            "CommandFailed",
            format!(
                "the command's container cannot start ({reason}): {}",
                waiting.message.clone().unwrap_or_default()
            ),
        ));
    }
    if let Some(ended) = &state.terminated {
        let since = ended
            .finished_at
            .as_ref()
            .map_or(0, |t| now.duration_since(t.0).as_secs());
        if since >= GRACE_SECONDS {
            let said = ended
                .message
                .as_deref()
                .map(str::trim)
                .filter(|m| !m.is_empty())
                .map_or_else(String::new, |m| format!(": {m}"));
            return PodState::Stuck(Invalid::new(
                "CommandFailed",
                format!(
                    "the command's container ended (exit code {}{}) {since} s ago and the mover is still waiting for its stream: did the image lack /bin/sh?{said}",
                    ended.exit_code,
                    ended
                        .reason
                        .as_deref()
                        .map_or_else(String::new, |r| format!(", {r}")),
                ),
            ));
        }
    }
    PodState::Working
}

/// Whether a Job has ended for Backstop (`Some(succeeded)`), with the mover's message; or the
/// failure that ends it.
pub async fn ended(
    ctx: &Context,
    namespace: &str,
    job: &Job,
) -> Result<Result<Option<(bool, Option<String>)>, Invalid>, Error> {
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), namespace);
    let pods = job_pods(&pods, job).await?;
    let at = now();
    for pod in &pods {
        match judge(pod, at) {
            PodState::Working => {}
            PodState::MoverEnded { succeeded, message } => {
                return Ok(Ok(Some((succeeded, message))));
            }
            PodState::Stuck(why) => return Ok(Err(why)),
        }
    }
    // No pod says anything yet; a Job that failed without one (its deadline) has ended too.
    Ok(Ok(crate::outcome::finished(job).map(|s| (s, None))))
}

/// The stream's step from its Job.
pub(crate) async fn outcome(ctx: &Context, namespace: &str, job: &Job) -> Result<Step, Error> {
    Ok(match ended(ctx, namespace, job).await? {
        Err(why) => Step::Failed(why),
        Ok(None) => Step::Running,
        Ok(Some((succeeded, message))) => backup_step(job, succeeded, message),
    })
}

/// Creates the Job of a command backup.
pub async fn start(
    ctx: &Context,
    backup: &Backup,
    command: &CommandStrategy,
    repo: &BackupRepository,
    record: &backstop_api::record::RecordContext,
) -> Result<(), Error> {
    let namespace = backup.namespace().unwrap_or_default();
    let config =
        crate::backup::mover_config(ctx, &namespace, backup.spec.policy_ref.as_deref()).await?;
    let job = jobs::command_job(backup, command, repo, &config, record);
    let jobs_api: Api<Job> = Api::namespaced(ctx.client.clone(), &namespace);
    if crate::create_once(&jobs_api, &job).await? {
        let message = format!(
            "Created Job {} to store the output of the command in image {}",
            job.name_any(),
            command.container.image
        );
        let related = job.object_ref(&());
        events::normal_related(&ctx.recorder, backup, related, "JobCreated", message).await;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{
        ContainerState, ContainerStateTerminated, ContainerStateWaiting, PodStatus,
    };
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn at(second: i64) -> jiff::Timestamp {
        jiff::Timestamp::from_second(1_800_000_000 + second).unwrap()
    }

    fn status(name: &str, state: ContainerState) -> ContainerStatus {
        ContainerStatus {
            name: name.into(),
            state: Some(state),
            ..ContainerStatus::default()
        }
    }

    fn running() -> ContainerState {
        ContainerState {
            running: Some(Default::default()),
            ..ContainerState::default()
        }
    }

    fn ended(code: i32, second: i64, message: &str) -> ContainerState {
        ContainerState {
            terminated: Some(ContainerStateTerminated {
                exit_code: code,
                finished_at: Some(Time(at(second))),
                message: (!message.is_empty()).then(|| message.to_string()),
                ..ContainerStateTerminated::default()
            }),
            ..ContainerState::default()
        }
    }

    fn waiting(reason: &str) -> ContainerState {
        ContainerState {
            waiting: Some(ContainerStateWaiting {
                reason: Some(reason.into()),
                message: Some("pull access denied".into()),
            }),
            ..ContainerState::default()
        }
    }

    fn pod(mover: ContainerState, command: ContainerState) -> Pod {
        Pod {
            status: Some(PodStatus {
                // The kubelet lists them in its own order: never by position.
                container_statuses: Some(vec![
                    status(COMMAND_CONTAINER, command),
                    status(MOVER_CONTAINER, mover),
                ]),
                ..PodStatus::default()
            }),
            ..Pod::default()
        }
    }

    #[test]
    fn the_movers_end_is_the_result_whatever_the_command_does() {
        let done = pod(ended(0, 10, r#"{"pvc":"dump"}"#), running());
        assert_eq!(
            judge(&done, at(11)),
            PodState::MoverEnded {
                succeeded: true,
                message: Some(r#"{"pvc":"dump"}"#.into())
            }
        );
        let failed = pod(ended(1, 10, "x"), ended(0, 5, ""));
        assert!(matches!(
            judge(&failed, at(500)),
            PodState::MoverEnded {
                succeeded: false,
                ..
            }
        ));
    }

    #[test]
    fn a_command_that_cannot_start_fails_at_once_and_one_that_ended_after_the_grace() {
        let pulling = pod(running(), waiting("ImagePullBackOff"));
        match judge(&pulling, at(0)) {
            PodState::Stuck(why) => {
                assert_eq!(why.reason, "CommandFailed");
                assert!(why.message.contains("ImagePullBackOff"), "{}", why.message);
                assert!(
                    why.message.contains("pull access denied"),
                    "{}",
                    why.message
                );
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            judge(&pod(running(), waiting("ContainerCreating")), at(0)),
            PodState::Working
        );
        let gone = pod(running(), ended(127, 0, "sh: not found"));
        assert_eq!(judge(&gone, at(GRACE_SECONDS - 1)), PodState::Working);
        match judge(&gone, at(GRACE_SECONDS)) {
            PodState::Stuck(why) => {
                assert!(why.message.contains("exit code 127"), "{}", why.message);
                assert!(why.message.contains("sh: not found"), "{}", why.message);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(judge(&Pod::default(), at(0)), PodState::Working);
    }
}
