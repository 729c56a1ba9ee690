//! An emulated CSI snapshot controller and provisioner over real btrfs copy-on-write snapshots,
//! for the snapshot strategy's tests. Test fixture, not product: the local cluster has no CSI
//! driver, and the Go components that normally play these parts cannot be fetched here.
//!
//! One btrfs filesystem on a loop device (`hack/cluster btrfs`) holds three kinds of subvolumes:
//! - `vols/<ns>.<pvc>`: a test's source volume, exposed as a hostPath PersistentVolume;
//! - `snaps/<ns>.<snapshot>`: a VolumeSnapshot, taken with `btrfs subvolume snapshot -r`;
//! - `claims/<ns>.<pvc>`: a PVC whose `dataSource` is a snapshot, a writable snapshot of it,
//!   exposed as a hostPath PersistentVolume pre-bound to the claim.
//!
//! Per test namespace, `Emulator::start` polls (every 200 ms) what a snapshot controller and a
//! provisioner would watch, and removes what their objects no longer need. A class's
//! `parameters.behaviour` picks a fault: `fail` (the snapshot reports an error) or `never` (it
//! never becomes ready).

use crate::{TestNamespace, hack_cluster, kubectl, wait_until};
use anyhow::{Context, bail};
use backstop_api::strategy::VolumeSnapshot;
use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
use kube::api::{Api, ApiResource, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::core::GroupVersionKind;
use kube::{Client, ResourceExt};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

pub const DRIVER: &str = "btrfs.e2e.backstop.dev";
/// The storage class of the emulated volumes (no StorageClass object: PVs are pre-bound).
pub const CLASS: &str = "e2e-btrfs";
const EMULATED: &str = "e2e.backstop.dev/emulated-for";

/// The mounted btrfs filesystem.
pub fn btrfs_root() -> anyhow::Result<PathBuf> {
    let root = PathBuf::from(hack_cluster(&["btrfs"])?);
    for kind in ["vols", "snaps", "claims"] {
        std::fs::create_dir_all(root.join(kind))?;
    }
    Ok(root)
}

fn crds_dir() -> anyhow::Result<String> {
    hack_cluster(&["snapshot-crds"])
}

/// Installs the v1 snapshot CRDs and waits until the API server serves VolumeSnapshots.
pub async fn install_crds(client: &Client) -> anyhow::Result<()> {
    kubectl(&["apply", "-f", &crds_dir()?])?;
    wait_until(
        Duration::from_secs(60),
        "VolumeSnapshots to be served",
        || async {
            let api: Api<VolumeSnapshot> = Api::all(client.clone());
            Ok(api.list(&ListParams::default().limit(1)).await.is_ok())
        },
    )
    .await
}

/// Removes the snapshot CRDs (and every snapshot object with them) and waits until they are gone.
pub async fn remove_crds(client: &Client) -> anyhow::Result<()> {
    kubectl(&[
        "delete",
        "--ignore-not-found",
        "--wait=true",
        "-f",
        &crds_dir()?,
    ])?;
    wait_until(
        Duration::from_secs(60),
        "VolumeSnapshots to be gone",
        || async {
            Ok(client
                .list_api_group_resources("snapshot.storage.k8s.io/v1")
                .await
                .is_err())
        },
    )
    .await
}

fn gvk_resource(kind: &str, plural: &str) -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("snapshot.storage.k8s.io", "v1", kind),
        plural,
    )
}

fn classes(client: &Client) -> Api<DynamicObject> {
    Api::all_with(
        client.clone(),
        &gvk_resource("VolumeSnapshotClass", "volumesnapshotclasses"),
    )
}

fn contents(client: &Client) -> Api<DynamicObject> {
    Api::all_with(
        client.clone(),
        &gvk_resource("VolumeSnapshotContent", "volumesnapshotcontents"),
    )
}

/// A VolumeSnapshotClass of the emulated driver; `behaviour` "normal", "fail" or "never".
pub async fn snapshot_class(client: &Client, name: &str, behaviour: &str) -> anyhow::Result<()> {
    let class: DynamicObject = serde_json::from_value(serde_json::json!({
        "apiVersion": "snapshot.storage.k8s.io/v1", "kind": "VolumeSnapshotClass",
        "metadata": {"name": name, "labels": {"backstop.dev/e2e": "true"}},
        "driver": DRIVER, "deletionPolicy": "Delete",
        "parameters": {"behaviour": behaviour}
    }))?;
    match classes(client).create(&PostParams::default(), &class).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

pub async fn delete_snapshot_class(client: &Client, name: &str) -> anyhow::Result<()> {
    match classes(client).delete(name, &Default::default()).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

fn btrfs(args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new("btrfs")
        .args(args)
        .output()
        .context("running btrfs (btrfs-progs)")?;
    if !out.status.success() {
        bail!(
            "btrfs {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

fn delete_subvolume(path: &Path) -> anyhow::Result<()> {
    if path.exists() {
        btrfs(&["subvolume", "delete", &path.to_string_lossy()])?;
    }
    Ok(())
}

/// A hostPath PersistentVolume on `dir`, pre-bound to `claim` (uid `uid`, when known).
fn persistent_volume(
    name: &str,
    dir: &Path,
    size: &str,
    namespace: &str,
    claim: &str,
    uid: Option<&str>,
) -> anyhow::Result<PersistentVolume> {
    let mut claim_ref = serde_json::json!({"namespace": namespace, "name": claim});
    if let Some(uid) = uid {
        claim_ref["uid"] = uid.into();
    }
    Ok(serde_json::from_value(serde_json::json!({
        "metadata": {"name": name, "labels": {EMULATED: namespace}},
        "spec": {"capacity": {"storage": size}, "accessModes": ["ReadWriteOnce"],
                 "persistentVolumeReclaimPolicy": "Retain", "storageClassName": CLASS,
                 "claimRef": claim_ref,
                 "hostPath": {"path": dir.to_string_lossy(), "type": "Directory"}}
    }))?)
}

impl TestNamespace {
    /// A PVC `claim` of the emulated class, on a fresh btrfs subvolume; returns its directory.
    pub async fn btrfs_volume(
        &self,
        root: &Path,
        claim: &str,
        labels: &[(&str, &str)],
    ) -> anyhow::Result<PathBuf> {
        let dir = root.join("vols").join(format!("{}.{claim}", self.name));
        btrfs(&["subvolume", "create", &dir.to_string_lossy()])?;
        let pv_name = format!("{}-{claim}", self.name);
        let pv = persistent_volume(&pv_name, &dir, "1Gi", &self.name, claim, None)?;
        Api::<PersistentVolume>::all(self.client.clone())
            .create(&PostParams::default(), &pv)
            .await?;
        self.claim_of(claim, &pv_name, CLASS, labels).await?;
        Ok(dir)
    }
}

/// The emulated driver of one namespace, polling until dropped.
pub struct Emulator {
    stop: Arc<AtomicBool>,
    task: Option<std::thread::JoinHandle<()>>,
    root: PathBuf,
    namespace: String,
}

impl Emulator {
    pub fn start(namespace: &str, root: &Path) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let (ns, dir, halt) = (namespace.to_string(), root.to_path_buf(), stop.clone());
        // Its own thread, runtime and client (a client's connection task lives on the runtime
        // that made it): it keeps working while the test's runtime waits for it to stop.
        let task = std::thread::spawn(move || {
            let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            runtime.block_on(async {
                let client = match Client::try_default().await {
                    Ok(c) => c,
                    Err(e) => {
                        eprintln!("snapshot emulator ({ns}): no client: {e}");
                        return;
                    }
                };
                while !halt.load(Ordering::Relaxed) {
                    if let Err(e) = pass(&client, &ns, &dir).await {
                        eprintln!("snapshot emulator ({ns}): {e:#}");
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            });
        });
        Self {
            stop,
            task: Some(task),
            root: root.to_path_buf(),
            namespace: namespace.to_string(),
        }
    }

    /// The subvolumes of this namespace's snapshots and snapshot-made claims still on disk.
    pub fn leftovers(&self) -> Vec<String> {
        let mut left = Vec::new();
        for kind in ["snaps", "claims"] {
            for entry in std::fs::read_dir(self.root.join(kind))
                .into_iter()
                .flatten()
                .flatten()
            {
                let name = entry.file_name().to_string_lossy().into_owned();
                if name.starts_with(&format!("{}.", self.namespace)) {
                    left.push(format!("{kind}/{name}"));
                }
            }
        }
        left
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(task) = self.task.take() {
            let _ = task.join();
        }
    }
}

/// One look at everything a snapshot controller and provisioner would act on in `ns`.
async fn pass(client: &Client, ns: &str, root: &Path) -> anyhow::Result<()> {
    let snapshots: Api<VolumeSnapshot> = Api::namespaced(client.clone(), ns);
    let listed = match snapshots.list(&ListParams::default()).await {
        Ok(list) => list.items,
        // No snapshot CRDs (yet): nothing to emulate.
        Err(kube::Error::Api(e)) if e.code == 404 => return Ok(()),
        Err(e) => return Err(e.into()),
    };
    let mut alive = BTreeSet::new();
    for snapshot in &listed {
        alive.insert(snapshot.name_any());
        let status = snapshot.status.clone().unwrap_or_default();
        if snapshot.metadata.deletion_timestamp.is_some()
            || status.ready_to_use == Some(true)
            || status.error.is_some()
        {
            continue;
        }
        take_snapshot(client, ns, root, snapshot).await?;
    }
    // Snapshots deleted: their subvolume and content go (deletionPolicy Delete).
    for entry in std::fs::read_dir(root.join("snaps"))?.flatten() {
        let file = entry.file_name().to_string_lossy().into_owned();
        if let Some(name) = file.strip_prefix(&format!("{ns}."))
            && !alive.contains(name)
        {
            delete_subvolume(&entry.path())?;
            let _ = contents(client)
                .delete(&format!("{ns}.{name}"), &Default::default())
                .await;
        }
    }
    provision_claims(client, ns, root).await?;
    release_volumes(client, ns).await
}

async fn take_snapshot(
    client: &Client,
    ns: &str,
    root: &Path,
    snapshot: &VolumeSnapshot,
) -> anyhow::Result<()> {
    let name = snapshot.name_any();
    let snapshots: Api<VolumeSnapshot> = Api::namespaced(client.clone(), ns);
    let class_name = snapshot
        .spec
        .volume_snapshot_class_name
        .clone()
        .unwrap_or_default();
    let Some(class) = classes(client).get_opt(&class_name).await? else {
        return Ok(());
    };
    let behaviour = class.data["parameters"]["behaviour"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let now = k8s_openapi::jiff::Timestamp::now();
    let fail = |message: String| {
        serde_json::json!({"status": {"readyToUse": false,
            "error": {"message": message, "time": now.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()}}})
    };
    let source = snapshot
        .spec
        .source
        .persistent_volume_claim_name
        .clone()
        .unwrap_or_default();
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), ns);
    let volume_dir = match claims.get_opt(&source).await? {
        Some(claim) => match claim.spec.and_then(|s| s.volume_name) {
            Some(pv) => Api::<PersistentVolume>::all(client.clone())
                .get(&pv)
                .await?
                .spec
                .and_then(|s| s.host_path)
                .map(|h| PathBuf::from(h.path)),
            None => None,
        },
        None => None,
    };
    let status = match (behaviour.as_str(), volume_dir) {
        ("never", _) => return Ok(()),
        ("fail", _) => fail(format!(
            "emulated driver {DRIVER}: snapshot of {source:?} refused (class behaviour fail)"
        )),
        (_, Some(dir)) if dir.starts_with(root) => {
            let snap_dir = root.join("snaps").join(format!("{ns}.{name}"));
            if !snap_dir.exists() {
                btrfs(&[
                    "subvolume",
                    "snapshot",
                    "-r",
                    &dir.to_string_lossy(),
                    &snap_dir.to_string_lossy(),
                ])?;
            }
            let taken = k8s_openapi::jiff::Timestamp::now();
            let content: DynamicObject = serde_json::from_value(serde_json::json!({
                "apiVersion": "snapshot.storage.k8s.io/v1", "kind": "VolumeSnapshotContent",
                "metadata": {"name": format!("{ns}.{name}")},
                "spec": {"deletionPolicy": "Delete", "driver": DRIVER,
                         "source": {"snapshotHandle": snap_dir.to_string_lossy()},
                         "volumeSnapshotClassName": class_name,
                         "volumeSnapshotRef": {"namespace": ns, "name": name, "uid": snapshot.uid()}}
            }))?;
            match contents(client)
                .create(&PostParams::default(), &content)
                .await
            {
                Ok(_) => {}
                Err(kube::Error::Api(e)) if e.code == 409 => {}
                Err(e) => return Err(e.into()),
            }
            // Milliseconds, as some drivers write: the spread between volumes is then visible.
            serde_json::json!({"status": {"readyToUse": true, "restoreSize": "1Gi",
                "boundVolumeSnapshotContentName": format!("{ns}.{name}"),
                "creationTime": taken.strftime("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()}})
        }
        (_, _) => fail(format!(
            "emulated driver {DRIVER}: PVC {source:?} is not a volume of this driver"
        )),
    };
    snapshots
        .patch_status(&name, &PatchParams::default(), &Patch::Merge(status))
        .await?;
    Ok(())
}

/// PVCs made from a snapshot get a writable snapshot of it, as a PV pre-bound to them.
async fn provision_claims(client: &Client, ns: &str, root: &Path) -> anyhow::Result<()> {
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), ns);
    let volumes: Api<PersistentVolume> = Api::all(client.clone());
    for claim in claims.list(&ListParams::default()).await?.items {
        let Some(spec) = &claim.spec else { continue };
        let Some(source) = &spec.data_source else {
            continue;
        };
        if source.kind != "VolumeSnapshot"
            || spec.volume_name.is_some()
            || claim.metadata.deletion_timestamp.is_some()
        {
            continue;
        }
        let pv_name = format!("{ns}-{}-emulated", claim.name_any());
        if volumes.get_opt(&pv_name).await?.is_some() {
            continue;
        }
        let snap_dir = root.join("snaps").join(format!("{ns}.{}", source.name));
        if !snap_dir.exists() {
            continue;
        }
        let dir = root
            .join("claims")
            .join(format!("{ns}.{}", claim.name_any()));
        if !dir.exists() {
            btrfs(&[
                "subvolume",
                "snapshot",
                &snap_dir.to_string_lossy(),
                &dir.to_string_lossy(),
            ])?;
        }
        let size = spec
            .resources
            .as_ref()
            .and_then(|r| r.requests.as_ref())
            .and_then(|r| r.get("storage"))
            .map_or_else(|| "1Gi".to_string(), |q| q.0.clone());
        let pv = persistent_volume(
            &pv_name,
            &dir,
            &size,
            ns,
            &claim.name_any(),
            claim.metadata.uid.as_deref(),
        )?;
        volumes.create(&PostParams::default(), &pv).await?;
    }
    Ok(())
}

/// The emulated PVs of claims that are gone: PV and subvolume go.
async fn release_volumes(client: &Client, ns: &str) -> anyhow::Result<()> {
    let volumes: Api<PersistentVolume> = Api::all(client.clone());
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), ns);
    let mine = ListParams::default().labels(&format!("{EMULATED}={ns}"));
    for pv in volumes.list(&mine).await?.items {
        let spec = pv.spec.clone().unwrap_or_default();
        let Some(claim_ref) = spec.claim_ref else {
            continue;
        };
        let claim = claims
            .get_opt(claim_ref.name.as_deref().unwrap_or_default())
            .await?;
        let claim_alive =
            claim.is_some_and(|c| claim_ref.uid.is_none() || c.metadata.uid == claim_ref.uid);
        if claim_alive {
            continue;
        }
        volumes.delete(&pv.name_any(), &Default::default()).await?;
        // Only what this emulator made from a snapshot; a test's source volume stays.
        if let Some(path) = spec.host_path.map(|h| PathBuf::from(h.path))
            && path.parent().and_then(Path::file_name) == Some("claims".as_ref())
        {
            delete_subvolume(&path)?;
        }
    }
    Ok(())
}
