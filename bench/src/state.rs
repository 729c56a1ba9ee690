//! Bytes the operator holds per watched object, counted by the allocator: objects are listed
//! through the operator's own pipeline (made lean, told to its indexes and the Backup history,
//! cached or not), and the heap still held once the temporary copies are gone is divided by the
//! count.

use backstop_api::{Backup, BackupPolicy};
use backstop_controller::history::History;
use backstop_controller::index::{Index, Observer, keys};
use backstop_controller::stores::cached_only;
use kube::runtime::reflector::{self, Store};
use kube::runtime::watcher::Event;
use serde_json::json;
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::Arc;
use std::sync::atomic::{AtomicIsize, Ordering};

/// The system allocator, counting the bytes in use.
pub struct Counting;

static IN_USE: AtomicIsize = AtomicIsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        IN_USE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        IN_USE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        IN_USE.fetch_add(
            new_size as isize - layout.size() as isize,
            Ordering::Relaxed,
        );
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

const COUNT: usize = 10_000;

/// What a watch of `K` feeds besides its copy, made over the copy.
type Observers<K> = fn(&Store<K>) -> Vec<Arc<dyn Observer<K>>>;

/// Heap bytes per object held once `COUNT` objects made by `make` are listed: whole in a store
/// (`observers` none, as the operator cached them before), or through the operator's pipeline
/// (its `observers`, then only what it caches).
fn per_object<K: backstop_controller::Watched>(
    make: impl Fn(usize) -> K,
    observers: Option<Observers<K>>,
) -> f64 {
    let before = IN_USE.load(Ordering::Relaxed);
    let (store, mut writer) = reflector::store::<K>();
    let told = observers.map(|make| make(&store)).unwrap_or_default();
    let mut apply = |event: Event<K>| {
        for observer in &told {
            observer.apply(&event);
        }
        let cached = if observers.is_some() {
            cached_only(Ok(event))
        } else {
            Some(Ok(event))
        };
        if let Some(Ok(event)) = cached {
            writer.apply_watcher_event(&event);
        }
    };
    apply(Event::Init);
    for i in 0..COUNT {
        let mut obj = make(i);
        backstop_controller::lean(&mut obj);
        apply(Event::InitApply(obj));
    }
    apply(Event::InitDone);
    let after = IN_USE.load(Ordering::Relaxed);
    drop((told, store, writer));
    (after - before) as f64 / COUNT as f64
}

fn backup_observers(store: &Store<Backup>) -> Vec<Arc<dyn Observer<Backup>>> {
    vec![
        Arc::new(Index::new(store.clone(), keys::waiting)),
        Arc::new(History::default()),
    ]
}

fn policy_observers(store: &Store<BackupPolicy>) -> Vec<Arc<dyn Observer<BackupPolicy>>> {
    vec![Arc::new(Index::new(store.clone(), keys::repository_of))]
}

fn from_json<K: serde::de::DeserializeOwned>(value: serde_json::Value) -> K {
    serde_json::from_value(value).unwrap_or_else(|e| panic!("a sample object: {e}"))
}

/// A Backup as the controller benchmark makes them (Completed, no volumes; ten per policy).
fn bench_backup(i: usize) -> Backup {
    let policy = format!("p{:04}", i % (COUNT / 10));
    from_json(json!({
        "apiVersion": "backstop.dev/v1alpha1", "kind": "Backup",
        "metadata": {"name": format!("{policy}-20261127-{:06}", i), "namespace": "bench-scale",
            "uid": format!("8d1c6b1e-5f0a-4a57-9a53-{i:012}"), "resourceVersion": format!("{}", 100_000 + i),
            "generation": 1, "creationTimestamp": "2026-11-27T07:00:00Z",
            "labels": {"backstop.dev/policy": policy},
            "annotations": {"backstop.dev/scheduled-time": "2026-11-27T06:00:00Z"},
            "finalizers": ["backstop.dev/artifacts"]},
        "spec": {"policyRef": policy},
        "status": {"phase": "Completed", "completionTime": "2026-11-27T06:01:00Z",
            "totalBytes": 1024, "totalFiles": 1}}))
}

/// A Backup as the operator leaves a scheduled one-volume backup (from a demo run).
fn finished_backup(i: usize) -> Backup {
    let name = format!("nightly-20261127-{:06}", i);
    from_json(json!({
        "apiVersion": "backstop.dev/v1alpha1", "kind": "Backup",
        "metadata": {"name": name, "namespace": "shop",
            "uid": format!("8d1c6b1e-5f0a-4a57-9a53-{i:012}"), "resourceVersion": format!("{}", 100_000 + i),
            "generation": 1, "creationTimestamp": "2026-11-27T02:00:00Z",
            "labels": {"backstop.dev/policy": "nightly", "app.kubernetes.io/managed-by": "backstop"},
            "annotations": {"backstop.dev/scheduled-time": "2026-11-27T02:00:00Z"},
            "finalizers": ["backstop.dev/artifacts"],
            "ownerReferences": [{"apiVersion": "backstop.dev/v1alpha1", "kind": "BackupPolicy",
                "name": "nightly", "uid": "0b7a4f7e-6c55-4d0e-8d55-0d2f1c0c6e11",
                "controller": true, "blockOwnerDeletion": true}]},
        "spec": {"policyRef": "nightly"},
        "status": {"phase": "Completed", "startTime": "2026-11-27T02:00:00Z",
            "completionTime": "2026-11-27T02:00:41Z", "duration": "41s", "repository": "default",
            "volumes": [{"pvc": "data", "phase": "Completed", "job": format!("{name}-data"),
                "artifact": format!("shop/{name}/data.tar.zst"), "bytes": 123_456_789,
                "sourceBytes": 456_789_012, "files": 4211, "capacity": "5Gi",
                "storageClassName": "backstop-hostpath",
                "digest": "2c4f0c8d6a4e5b1f3c2d1e0f9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c4d3e2f1a0b"}],
            "size": "117.7 MiB", "totalBytes": 123_456_789, "totalFiles": 4211,
            "message": "Backed up 1 volume (4211 files, 117.7 MiB) to repository \"default\" in 41s",
            "conditions": [
                {"type": "Completed", "status": "True", "reason": "Completed",
                 "message": "Backed up 1 volume (4211 files, 117.7 MiB) to repository \"default\" in 41s",
                 "lastTransitionTime": "2026-11-27T02:00:41Z", "observedGeneration": 1},
                {"type": "Failed", "status": "False", "reason": "Completed", "message": "",
                 "lastTransitionTime": "2026-11-27T02:00:41Z", "observedGeneration": 1}],
            "observedGeneration": 1}}))
}

/// A policy as the controller benchmark makes them, with the status the operator writes.
fn policy(i: usize) -> BackupPolicy {
    from_json(json!({
        "apiVersion": "backstop.dev/v1alpha1", "kind": "BackupPolicy",
        "metadata": {"name": format!("p{i:04}"), "namespace": "bench-scale",
            "uid": format!("0b7a4f7e-6c55-4d0e-8d55-{i:012}"), "resourceVersion": format!("{}", 10_000 + i),
            "generation": 1, "creationTimestamp": "2026-11-27T07:00:00Z"},
        "spec": {"schedule": format!("{} * * * *", i % 60),
                 "target": {"pvcSelector": {"matchLabels": {"app": format!("none-{i}")}}}},
        "status": {"lastScheduleTime": "2026-11-27T07:00:00Z", "nextScheduledBackup": "2026-11-27T08:00:00Z",
            "lastBackup": format!("p{i:04}-20261127-070000"), "lastBackupTime": "2026-11-27T07:00:01Z",
            "lastSuccessfulBackupTime": "2026-11-27T07:00:30Z", "observedGeneration": 1,
            "conditions": [{"type": "Ready", "status": "True", "reason": "Scheduled",
                "message": "next backup at 2026-11-27T08:00:00Z",
                "lastTransitionTime": "2026-11-27T07:00:01Z", "observedGeneration": 1}]}}))
}

/// Prints the table of bytes per object: as cached before (whole, without the API server's
/// bookkeeping) and as the operator keeps them now.
pub fn print() {
    let rows: [(&str, f64, f64); 3] = [
        (
            "finished Backup, as the benchmark makes them",
            per_object(bench_backup, None),
            per_object(bench_backup, Some(backup_observers)),
        ),
        (
            "finished Backup of one volume, as the operator leaves it",
            per_object(finished_backup, None),
            per_object(finished_backup, Some(backup_observers)),
        ),
        (
            "BackupPolicy with its status",
            per_object(policy, None),
            per_object(policy, Some(policy_observers)),
        ),
    ];
    println!("\n### Operator state per watched object (heap bytes, {COUNT} objects listed)\n");
    println!("| object | cached whole | kept now |");
    println!("|---|---:|---:|");
    for (label, whole, now) in rows {
        println!("| {label} | {whole:.0} | {now:.0} |");
    }
}
