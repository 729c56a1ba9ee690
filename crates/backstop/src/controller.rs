//! `backstop controller`: leader election on a Lease, the reconcilers while leading, and the
//! health and metrics endpoints. SIGTERM stops gracefully and hands the Lease over.

use anyhow::Context as _;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use backstop_controller::jobs::MoverConfig;
use backstop_controller::{Context, Scope, metrics::Metrics};
use kube::runtime::events::{Recorder, Reporter};
use kube_lease_manager::{LeaseManagerBuilder, LeaseParams};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

#[derive(clap::Args)]
pub struct Args {
    /// Address for /healthz, /readyz and /metrics.
    #[arg(long, env = "BACKSTOP_LISTEN", default_value = "0.0.0.0:8080")]
    listen: SocketAddr,
    /// Image of the mover pods (Backstop's own image).
    #[arg(long, env = "BACKSTOP_MOVER_IMAGE", default_value = "backstop:dev")]
    mover_image: String,
    #[arg(
        long,
        env = "BACKSTOP_MOVER_PULL_POLICY",
        default_value = "IfNotPresent"
    )]
    mover_pull_policy: String,
    /// Run mover pods on the host's network.
    #[arg(long, env = "BACKSTOP_MOVER_HOST_NETWORK")]
    mover_host_network: bool,
    /// Requests and limits of mover pods, as a ResourceRequirements in JSON (default: requests
    /// 100m CPU and 128Mi, limit 1Gi memory); a policy's spec.moverResources overrides it.
    #[arg(long, env = "BACKSTOP_MOVER_RESOURCES", value_parser = parse_json::<k8s_openapi::api::core::v1::ResourceRequirements>)]
    mover_resources: Option<k8s_openapi::api::core::v1::ResourceRequirements>,
    /// Nodes mover pods may run on, as a nodeSelector map in JSON (e.g. `{"backup":"yes"}`).
    #[arg(long, env = "BACKSTOP_MOVER_NODE_SELECTOR", value_parser = parse_json::<std::collections::BTreeMap<String, String>>)]
    mover_node_selector: Option<std::collections::BTreeMap<String, String>>,
    /// Taints mover pods tolerate, as a list of Tolerations in JSON.
    #[arg(long, env = "BACKSTOP_MOVER_TOLERATIONS", value_parser = parse_json::<Vec<k8s_openapi::api::core::v1::Toleration>>)]
    mover_tolerations: Option<Vec<k8s_openapi::api::core::v1::Toleration>>,
    /// Namespace of the leader-election Lease (the operator's own).
    #[arg(long, env = "POD_NAMESPACE", default_value = "backstop-system")]
    namespace: String,
    /// This replica's identity in the Lease.
    #[arg(long, env = "POD_NAME")]
    identity: Option<String>,
    #[arg(long, default_value = "backstop-controller")]
    lease_name: String,
    /// A namespaced install: act only in these namespaces (comma-separated), with Roles there
    /// instead of a ClusterRole (`backstop install --namespaces` prints it). Empty: every
    /// namespace.
    #[arg(long, env = "BACKSTOP_NAMESPACES", value_delimiter = ',')]
    namespaces: Vec<String>,
    /// This cluster's identity as a repository's writer: a namespace's part of a repository is
    /// written by one cluster only (its marker `_owner.json`). Default: the uid of the
    /// `kube-system` namespace. Two operators of one cluster must agree on it.
    #[arg(long, env = "BACKSTOP_CLUSTER_ID", value_parser = parse_cluster_id)]
    cluster_id: Option<String>,
}

fn parse_cluster_id(id: &str) -> Result<String, String> {
    if backstop_api::ownership::is_cluster_id(id) {
        Ok(id.to_string())
    } else {
        Err("1-128 letters, digits and .-_:".into())
    }
}

/// This cluster's identity as a repository's writer (see `Args::cluster_id`).
async fn cluster_id(client: &kube::Client, given: Option<&str>) -> anyhow::Result<String> {
    if let Some(id) = given {
        return Ok(id.to_string());
    }
    let namespaces: kube::Api<k8s_openapi::api::core::v1::Namespace> =
        kube::Api::all(client.clone());
    let uid = namespaces
        .get("kube-system")
        .await
        .context("reading the kube-system namespace's uid (this cluster's identity as a repository writer): allow get on it, or give --cluster-id")?
        .metadata
        .uid;
    uid.filter(|u| backstop_api::ownership::is_cluster_id(u))
        .context("the kube-system namespace has no uid: give --cluster-id")
}

#[derive(Clone)]
struct Health {
    metrics: Arc<Metrics>,
    ready: Arc<AtomicBool>,
}

pub fn main(args: Args) -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,kube=warn".into()),
        )
        .init();
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?
        .block_on(run(args))
}

async fn run(args: Args) -> anyhow::Result<()> {
    let scopes = scopes(&args.namespaces)?;
    let client = kube::Client::try_default()
        .await
        .context("connecting to the Kubernetes API (in-cluster config or KUBECONFIG)")?;
    let metrics = Arc::new(Metrics::new());
    let ready = Arc::new(AtomicBool::new(false));
    serve_health(args.listen, metrics.clone(), ready.clone()).await?;

    let cluster = cluster_id(&client, args.cluster_id.as_deref()).await?;
    tracing::info!(%cluster, "this cluster's identity as a repository writer");
    let identity = args
        .identity
        .clone()
        .unwrap_or_else(|| format!("backstop-{}", std::process::id()));
    let lease = LeaseManagerBuilder::new(client.clone(), &args.lease_name)
        .with_namespace(&args.namespace)
        .with_parameters(LeaseParams::new(identity.clone(), 15, 5))
        .build()
        .await
        .with_context(|| {
            format!(
                "setting up leader election on Lease {}/{}",
                args.namespace, args.lease_name
            )
        })?;
    let (mut leading, lease_task) = lease.watch().await;
    ready.store(true, Ordering::SeqCst);
    tracing::info!(%identity, "waiting to become the leader");

    let terminated = shutdown_signal();
    tokio::pin!(terminated);
    loop {
        if *leading.borrow_and_update() {
            break;
        }
        tokio::select! {
            changed = leading.changed() => changed.context("leader election stopped")?,
            () = &mut terminated => {
                drop(leading);
                let _ = lease_task.await;
                return Ok(());
            }
        }
    }
    tracing::info!(%identity, "leading");

    // Stop when told to, or as soon as the Lease is lost (another replica may be leading).
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let context = Shared {
        recorder: Recorder::new(
            client.clone(),
            Reporter {
                controller: "backstop".into(),
                instance: Some(identity.clone()),
            },
        ),
        mover: MoverConfig {
            cluster,
            ..mover_config(&args)
        },
        metrics,
        client,
    };
    let reconcilers = futures::future::join_all(
        scopes
            .into_iter()
            .map(|scope| tokio::spawn(reconcile(context.clone(), scope, stop_rx.clone()))),
    );
    let lost = async {
        while leading.changed().await.is_ok() {
            if !*leading.borrow() {
                return;
            }
        }
    };
    let lost_lease = tokio::select! {
        () = &mut terminated => false,
        () = lost => true,
    };
    let _ = stop_tx.send(true);
    reconcilers.await;
    drop(leading);
    let _ = lease_task.await;
    if lost_lease {
        anyhow::bail!("lost the leader Lease; exiting so a fresh start can compete again");
    }
    tracing::info!("stopped");
    Ok(())
}

/// /healthz, /readyz (once leader election is set up) and /metrics on `listen`.
async fn serve_health(
    listen: SocketAddr,
    metrics: Arc<Metrics>,
    ready: Arc<AtomicBool>,
) -> anyhow::Result<()> {
    let app = Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .with_state(Health { metrics, ready });
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("listening on {listen}"))?;
    tokio::spawn(async move {
        if let Err(err) = axum::serve(listener, app).await {
            tracing::error!(%err, "health server stopped");
        }
    });
    Ok(())
}

fn mover_config(args: &Args) -> MoverConfig {
    MoverConfig {
        image: args.mover_image.clone(),
        pull_policy: args.mover_pull_policy.clone(),
        host_network: args.mover_host_network,
        resources: args
            .mover_resources
            .clone()
            .unwrap_or_else(backstop_controller::jobs::default_resources),
        // An empty map or list (what a Helm chart renders for "none") sets nothing.
        node_selector: args.mover_node_selector.clone().filter(|s| !s.is_empty()),
        tolerations: args.mover_tolerations.clone().filter(|t| !t.is_empty()),
        // On the host's network a sync pod reaches the API server the way the operator does.
        api_server: std::env::var("KUBERNETES_SERVICE_HOST")
            .ok()
            .zip(std::env::var("KUBERNETES_SERVICE_PORT").ok())
            .filter(|_| args.mover_host_network),
        ..MoverConfig::default()
    }
}

/// What every scope's reconcilers share.
#[derive(Clone)]
struct Shared {
    client: kube::Client,
    recorder: Recorder,
    mover: MoverConfig,
    metrics: Arc<Metrics>,
}

/// Watches `scope` and runs its reconcilers until `stop` turns true.
async fn reconcile(shared: Shared, scope: Scope, mut stop: tokio::sync::watch::Receiver<bool>) {
    tracing::info!(?scope, "starting the reconcilers");
    let stores = backstop_controller::stores::Stores::start(&shared.client, scope).await;
    let ctx = Arc::new(Context {
        client: shared.client,
        recorder: shared.recorder,
        mover: shared.mover,
        metrics: shared.metrics,
        stores,
        policy_writes: Default::default(),
        due_runs: Default::default(),
        started: jiff::Timestamp::now(),
    });
    backstop_controller::run(ctx, async move {
        let _ = stop.wait_for(|stopped| *stopped).await;
    })
    .await;
}

async fn readyz(State(health): State<Health>) -> (StatusCode, &'static str) {
    if health.ready.load(Ordering::SeqCst) {
        (StatusCode::OK, "ok")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "starting")
    }
}

async fn metrics_text(State(health): State<Health>) -> ([(&'static str, &'static str); 1], String) {
    (
        [(
            "content-type",
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        health.metrics.render(),
    )
}

async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => futures::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = term => {}
    }
    tracing::info!("shutdown requested");
}

/// One set of reconcilers per watched namespace, or one for the whole cluster when none is named
/// (an empty `BACKSTOP_NAMESPACES` names none).
fn scopes(namespaces: &[String]) -> anyhow::Result<Vec<Scope>> {
    let named: std::collections::BTreeSet<String> = namespaces
        .iter()
        .filter(|n| !n.trim().is_empty())
        .map(|n| parse_namespace(n))
        .collect::<Result<_, _>>()
        .map_err(|e| anyhow::anyhow!("--namespaces (BACKSTOP_NAMESPACES): {e}"))?;
    if named.is_empty() {
        return Ok(vec![Scope::Cluster]);
    }
    Ok(named.into_iter().map(Scope::Namespace).collect())
}

/// A namespace name (an RFC 1123 label), checked so that a typo fails at start.
pub fn parse_namespace(text: &str) -> Result<String, String> {
    let text = text.trim();
    let valid = !text.is_empty()
        && text.len() <= 63
        && text
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !text.starts_with('-')
        && !text.ends_with('-');
    if valid {
        Ok(text.to_string())
    } else {
        Err(format!(
            "{text:?} is not a namespace name (lowercase letters, digits and '-', at most 63)"
        ))
    }
}

/// A structured setting given as JSON (env vars carry them this way), e.g. mover resources
/// `{"limits":{"memory":"2Gi"}}`.
fn parse_json<T: serde::de::DeserializeOwned>(text: &str) -> Result<T, String> {
    serde_json::from_str(text).map_err(|e| format!("not JSON of the expected shape ({e}): {text}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|n| n.to_string()).collect()
    }

    #[test]
    fn no_namespace_named_means_the_whole_cluster() {
        assert_eq!(scopes(&[]).unwrap(), [Scope::Cluster]);
        assert_eq!(scopes(&names(&[""])).unwrap(), [Scope::Cluster]);
    }

    #[test]
    fn each_named_namespace_once() {
        assert_eq!(
            scopes(&names(&["b", " a", "b"])).unwrap(),
            [Scope::Namespace("a".into()), Scope::Namespace("b".into())]
        );
    }

    #[test]
    fn a_name_that_is_no_namespace_stops_the_start() {
        for bad in ["Team", "a_b", "-a", "a-", &"x".repeat(64)] {
            let err = scopes(&names(&["ok", bad])).unwrap_err().to_string();
            assert!(err.contains("is not a namespace name"), "{bad}: {err}");
        }
    }
}
