//! BackupRepository reconciler: says whether a repository can be used (`Ready` with a reason),
//! so policies can refuse to start Jobs against one that cannot.

use crate::{Context, Error, events, now};
use backstop_api::BackupRepository;
use backstop_api::condition::{self, Invalid};
use futures::StreamExt;
use k8s_openapi::api::core::v1::PersistentVolumeClaim;
use kube::api::Api;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use kube::{Resource, ResourceExt};
use std::sync::Arc;
use std::time::Duration;

/// Whether `repo` can be used right now; `Err` says why not.
pub async fn readiness(client: &kube::Client, repo: &BackupRepository) -> Result<(), Invalid> {
    repo.spec.validate()?;
    let namespace = repo.namespace().unwrap_or_default();
    let Some(pvc) = &repo.spec.pvc else {
        return Ok(());
    };
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), &namespace);
    match claims.get_opt(&pvc.claim_name).await {
        Ok(Some(claim)) if claim.metadata.deletion_timestamp.is_some() => Err(Invalid::new(
            "PVCNotFound",
            format!(
                "PVC {:?} of repository {:?} is being deleted",
                pvc.claim_name,
                repo.name_any()
            ),
        )),
        Ok(Some(claim)) => match claim.status.and_then(|s| s.phase).as_deref() {
            Some("Bound") => Ok(()),
            phase => Err(Invalid::new(
                "PVCNotBound",
                format!(
                    "PVC {:?} of repository {:?} is {}; it must be Bound",
                    pvc.claim_name,
                    repo.name_any(),
                    phase.unwrap_or("not yet bound")
                ),
            )),
        },
        Ok(None) => Err(Invalid::new(
            "PVCNotFound",
            format!(
                "PVC {:?} of repository {:?} not found in namespace {namespace:?}: create it or fix spec.pvc.claimName",
                pvc.claim_name,
                repo.name_any()
            ),
        )),
        Err(err) => Err(Invalid::new(
            "CheckFailed",
            format!("checking the repository's PVC: {err}"),
        )),
    }
}

async fn reconcile(repo: Arc<BackupRepository>, ctx: Arc<Context>) -> Result<Action, Error> {
    let ready = readiness(&ctx.client, &repo).await;
    let mut status = repo.status.clone().unwrap_or_default();
    let was_ready =
        condition::find(&status.conditions, "Ready").map(|c| (c.status.clone(), c.reason.clone()));
    let generation = repo.meta().generation;
    match &ready {
        Ok(()) => condition::set(
            &mut status.conditions,
            "Ready",
            true,
            "Ready",
            "repository is usable",
            generation,
            now(),
        ),
        Err(why) => condition::set(
            &mut status.conditions,
            "Ready",
            false,
            &why.reason,
            &why.message,
            generation,
            now(),
        ),
    }
    status.observed_generation = generation;
    ctx.metrics
        .repository_ready
        .get_or_create(&crate::metrics::RepositoryLabels {
            namespace: repo.namespace().unwrap_or_default(),
            repository: repo.name_any(),
        })
        .set(i64::from(ready.is_ok()));
    let changed = was_ready
        != condition::find(&status.conditions, "Ready")
            .map(|c| (c.status.clone(), c.reason.clone()));
    if changed && let Err(why) = &ready {
        events::warning(
            &ctx.recorder,
            repo.as_ref(),
            &why.reason,
            why.message.clone(),
        )
        .await;
    }
    if Some(&status) != repo.status.as_ref() {
        crate::patch_status(&ctx.client, repo.as_ref(), &status, &[]).await?;
    }
    // The PVC is not watched; look again now and then.
    Ok(Action::requeue(Duration::from_secs(if ready.is_ok() {
        300
    } else {
        30
    })))
}

fn error_policy(_: Arc<BackupRepository>, err: &Error, ctx: Arc<Context>) -> Action {
    crate::retry_after_error(&ctx, "repository", err)
}

pub async fn run(
    ctx: Arc<Context>,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let api: Api<BackupRepository> = Api::all(ctx.client.clone());
    Controller::new(api, watcher::Config::default())
        .with_config(crate::controller_config())
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx)
        .for_each(|_| futures::future::ready(()))
        .await;
}
