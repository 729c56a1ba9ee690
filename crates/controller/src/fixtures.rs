//! Typed builders of the objects the reconcilers decide on, in each state, for decision tests
//! that run without a cluster.

use backstop_api::{
    Backup, BackupPhase, BackupPolicy, BackupPolicySpec, BackupSpec, BackupStatus, Retention,
    Target, labels,
};
use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, Time};
use std::sync::Arc;

pub const NAMESPACE: &str = "shop";

/// A time on 2026-11-26 (UTC), `hh:mm`.
pub fn at(hh_mm: &str) -> Timestamp {
    format!("2026-11-26T{hh_mm}:00Z")
        .parse()
        .unwrap_or_else(|e| panic!("{hh_mm}: {e}"))
}

/// Policy `name` on `schedule`, created at 00:00, keeping `keep_last`.
pub fn policy(name: &str, schedule: &str, keep_last: Option<i64>) -> BackupPolicy {
    let mut policy = BackupPolicy::new(
        name,
        BackupPolicySpec {
            schedule: schedule.into(),
            retention: Retention {
                keep_last,
                ..Retention::default()
            },
            target: Some(Target {
                pvc_selector: LabelSelector {
                    match_labels: Some([("app".to_string(), "db".to_string())].into()),
                    ..LabelSelector::default()
                },
            }),
            ..BackupPolicySpec::default()
        },
    );
    policy.metadata.namespace = Some(NAMESPACE.into());
    policy.metadata.uid = Some(format!("uid-{name}"));
    policy.metadata.generation = Some(1);
    policy.metadata.creation_timestamp = Some(Time(at("00:00")));
    policy
}

/// The Backup `policy` made for the run at `scheduled`, in `phase` (a Completed one finished
/// five minutes later).
pub fn scheduled(policy: &BackupPolicy, scheduled: &str, phase: BackupPhase) -> Arc<Backup> {
    let time = at(scheduled);
    let policy_name = policy.metadata.name.clone().unwrap_or_default();
    let mut backup = Backup::new(
        &backstop_api::naming::scheduled_backup(&policy_name, time),
        BackupSpec {
            policy_ref: Some(policy_name),
            ..BackupSpec::default()
        },
    );
    backup.metadata.namespace = Some(NAMESPACE.into());
    backup.metadata.creation_timestamp = Some(Time(time));
    backup.metadata.annotations =
        Some([(labels::SCHEDULED_TIME.to_string(), time.to_string())].into());
    let finished = phase
        .is_terminal()
        .then(|| Time(time + jiff::SignedDuration::from_mins(5)));
    backup.status = Some(BackupStatus {
        phase,
        completion_time: finished,
        total_bytes: (phase == BackupPhase::Completed).then_some(4096),
        total_files: (phase == BackupPhase::Completed).then_some(3),
        ..BackupStatus::default()
    });
    Arc::new(backup)
}

/// `scheduled` for policy `policy` at 02:00, named `name` and owned (not shared).
pub fn backup(name: &str, policy: &str, phase: BackupPhase) -> Backup {
    let policy = self::policy(policy, "0 2 * * *", None);
    let mut backup = scheduled(&policy, "02:00", phase).as_ref().clone();
    backup.metadata.name = Some(name.into());
    backup
}

/// A mocked API server and a Context whose client talks to it (see `ApiServer`).
pub fn mocked() -> (crate::Context, ApiServer) {
    let (service, handle) = tower_test::mock::pair::<
        http::Request<kube::client::Body>,
        http::Response<kube::client::Body>,
    >();
    let client = kube::Client::new(service, NAMESPACE);
    let ctx = crate::Context {
        recorder: kube::runtime::events::Recorder::new(
            client.clone(),
            kube::runtime::events::Reporter {
                controller: "backstop".into(),
                instance: None,
            },
        ),
        client,
        mover: crate::jobs::MoverConfig::default(),
        metrics: Arc::new(crate::metrics::Metrics::new()),
        stores: crate::stores::Stores::unwatched(),
        policy_writes: Default::default(),
        due_runs: Default::default(),
        started: crate::now(),
    };
    (ctx, ApiServer(handle))
}

/// The API server's side of `mocked`: each expected request in turn.
pub struct ApiServer(
    tower_test::mock::Handle<http::Request<kube::client::Body>, http::Response<kube::client::Body>>,
);

impl ApiServer {
    /// Whether the client sent nothing more (call once the client is dropped).
    pub async fn idle(mut self) -> bool {
        self.0.next_request().await.is_none()
    }

    /// The next request: checks its method and path, answers `status` with `body`, and returns
    /// the request's own body as JSON.
    pub async fn expect(
        &mut self,
        method: &str,
        path: &str,
        status: u16,
        body: serde_json::Value,
    ) -> serde_json::Value {
        let (request, respond) = self
            .0
            .next_request()
            .await
            .unwrap_or_else(|| panic!("expected {method} {path}, the client sent nothing"));
        assert_eq!(
            (request.method().as_str(), request.uri().path()),
            (method, path),
            "unexpected request"
        );
        let sent = request
            .into_body()
            .collect_bytes()
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let response = http::Response::builder()
            .status(status)
            .body(kube::client::Body::from(
                serde_json::to_vec(&body).unwrap_or_default(),
            ))
            .unwrap_or_else(|e| panic!("{e}"));
        respond.send_response(response);
        serde_json::from_slice(&sent).unwrap_or(serde_json::Value::Null)
    }
}

impl ApiServer {
    /// The next request, answered `status` with `body` as it is (a watch's events, one per
    /// line): its method, path and query.
    pub async fn answer_raw(&mut self, status: u16, body: &str) -> String {
        let (request, respond) = self
            .0
            .next_request()
            .await
            .unwrap_or_else(|| panic!("expected a request, the client sent nothing"));
        let asked = format!("{} {}", request.method(), request.uri());
        let response = http::Response::builder()
            .status(status)
            .body(kube::client::Body::from(body.as_bytes().to_vec()))
            .unwrap_or_else(|e| panic!("{e}"));
        respond.send_response(response);
        asked
    }
}

/// The API server's answer that an object of that name exists.
pub fn already_exists() -> serde_json::Value {
    serde_json::json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
        "reason": "AlreadyExists", "code": 409, "message": "already exists"})
}

/// The API server's answer that no object of that name exists.
pub fn not_found() -> serde_json::Value {
    serde_json::json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
        "reason": "NotFound", "code": 404, "message": "not found"})
}
