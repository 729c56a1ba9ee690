//! Indexes over the watched copies: which objects of a namespace are filed under a key (the
//! Backups waiting for a policy, the policies of a repository, the Jobs of an owner), kept up to
//! date from the same watch events that fill the copy, so that a reconcile looks up its own
//! objects instead of scanning every object of the kind.
//!
//! Why: the policy reconciler filtered the whole Backup copy on every pass, and every change to a
//! policy made the backup reconciler scan it again for Backups waiting on it; with 10,000 policies
//! and 100,000 Backups that work was policies x Backups (controller benchmark at 10x: 233 s until
//! every policy had its next run).
//!
//! An index holds names only; the objects stay in the copy (`Store`). It is told each event just
//! before the copy is: the copy then still has the object's previous version, which says where
//! the index had filed it, so no second map from object to key is kept. A reconcile woken by the
//! event runs after both have it.

use kube::ResourceExt;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

/// Names, by namespace, then by key.
type Entries = HashMap<String, HashMap<String, HashSet<String>>>;

pub struct Index<K: crate::Watched> {
    /// The key an object is filed under, if any.
    key: fn(&K) -> Option<String>,
    /// The copy the index is over (read for objects' previous versions and for lookups).
    store: Store<K>,
    state: Mutex<Listed<Entries>>,
}

/// What a watch's events file: the live maps, and those of a relist until it is done
/// (`InitDone` swaps them in, as the copy does: objects not listed again were deleted while the
/// watch was down).
#[derive(Default)]
pub(crate) struct Listed<T> {
    pub(crate) live: T,
    relist: Option<T>,
}

impl<T: Default> Listed<T> {
    /// A relist starts (`Init`).
    pub(crate) fn begin(&mut self) {
        self.relist = Some(T::default());
    }

    /// Where an object of the relist is filed (`InitApply`).
    pub(crate) fn relisted(&mut self) -> &mut T {
        self.relist.get_or_insert_with(T::default)
    }

    /// The relist is done (`InitDone`): its maps are the live ones.
    pub(crate) fn done(&mut self) {
        self.live = self.relist.take().unwrap_or_default();
    }
}

impl<K: crate::Watched> Index<K> {
    pub fn new(store: Store<K>, key: fn(&K) -> Option<String>) -> Self {
        Self {
            key,
            store,
            state: Mutex::default(),
        }
    }
}

/// What is told each event of a watch just before its copy is (an index, the Backup history).
pub trait Observer<K>: Send + Sync {
    fn apply(&self, event: &watcher::Event<K>);
}

impl<K: crate::Watched> Observer<K> for Index<K> {
    /// Files the object of `event`; called before the copy applies the same event.
    fn apply(&self, event: &watcher::Event<K>) {
        let mut state = crate::lock(&self.state);
        match event {
            watcher::Event::Apply(obj) => {
                let namespace = obj.namespace().unwrap_or_default();
                let name = obj.name_any();
                let before = self
                    .store
                    .get(&ObjectRef::new(&name).within(&namespace))
                    .and_then(|previous| (self.key)(&previous));
                let after = (self.key)(obj);
                if before != after {
                    if let Some(key) = before {
                        unfile(&mut state.live, &namespace, &key, &name);
                    }
                    if let Some(key) = after {
                        file(&mut state.live, namespace, key, name);
                    }
                }
            }
            watcher::Event::Delete(obj) => {
                let namespace = obj.namespace().unwrap_or_default();
                let name = obj.name_any();
                // The copy's version: the one this index filed (the deleted one may differ).
                let filed = self
                    .store
                    .get(&ObjectRef::new(&name).within(&namespace))
                    .and_then(|previous| (self.key)(&previous))
                    .or_else(|| (self.key)(obj));
                if let Some(key) = filed {
                    unfile(&mut state.live, &namespace, &key, &name);
                }
            }
            watcher::Event::Init => state.begin(),
            watcher::Event::InitApply(obj) => {
                if let Some(key) = (self.key)(obj) {
                    file(
                        state.relisted(),
                        obj.namespace().unwrap_or_default(),
                        key,
                        obj.name_any(),
                    );
                }
            }
            watcher::Event::InitDone => state.done(),
        }
    }
}

impl<K: crate::Watched> Index<K> {
    /// Whether any object of `namespace` is filed under `key`.
    pub fn any(&self, namespace: &str, key: &str) -> bool {
        crate::lock(&self.state)
            .live
            .get(namespace)
            .and_then(|keys| keys.get(key))
            .is_some_and(|names| !names.is_empty())
    }

    /// References to the objects of `namespace` filed under `key`.
    pub fn refs(&self, namespace: &str, key: &str) -> Vec<ObjectRef<K>> {
        let state = crate::lock(&self.state);
        let Some(names) = state.live.get(namespace).and_then(|keys| keys.get(key)) else {
            return Vec::new();
        };
        names
            .iter()
            .map(|name| ObjectRef::new(name).within(namespace))
            .collect()
    }

    /// References to the objects of `namespace` filed under any key.
    pub fn refs_in(&self, namespace: &str) -> Vec<ObjectRef<K>> {
        let state = crate::lock(&self.state);
        let Some(keys) = state.live.get(namespace) else {
            return Vec::new();
        };
        keys.values()
            .flatten()
            .map(|name| ObjectRef::new(name).within(namespace))
            .collect()
    }
}

fn file(entries: &mut Entries, namespace: String, key: String, name: String) {
    entries
        .entry(namespace)
        .or_default()
        .entry(key)
        .or_default()
        .insert(name);
}

fn unfile(entries: &mut Entries, namespace: &str, key: &str, name: &str) {
    let Some(keys) = entries.get_mut(namespace) else {
        return;
    };
    if let Some(names) = keys.get_mut(key) {
        names.remove(name);
        if names.is_empty() {
            keys.remove(key);
        }
    }
    if keys.is_empty() {
        entries.remove(namespace);
    }
}

/// What each index files its objects under.
pub mod keys {
    use backstop_api::{Backup, BackupPhase, BackupPolicy};
    use k8s_openapi::api::batch::v1::Job;
    use kube::ResourceExt;

    /// A Backup that waits to start (Pending, not being deleted) under the policy it names, or
    /// "" when it names none: what a change to a policy, a repository or a PVC may unblock.
    pub fn waiting(backup: &Backup) -> Option<String> {
        (backup.phase() == BackupPhase::Pending && backup.metadata.deletion_timestamp.is_none())
            .then(|| backup.spec.policy_ref.clone().unwrap_or_default())
    }

    /// A policy under the repository it writes to.
    pub fn repository_of(policy: &BackupPolicy) -> Option<String> {
        Some(policy.spec.repository_name().to_string())
    }

    /// A Job under the uid of the object that controls it (its Backup or Restore).
    pub fn owner_of(job: &Job) -> Option<String> {
        job.owner_references()
            .iter()
            .find(|o| o.controller == Some(true))
            .map(|o| o.uid.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::{self, NAMESPACE, backup};
    use backstop_api::{Backup, BackupPhase, BackupPolicy};
    use kube::runtime::reflector::{self, store::Writer};

    /// An index and its copy, told each event in the order the watch tells them.
    struct Watched<K: crate::Watched> {
        index: Index<K>,
        writer: Writer<K>,
    }

    impl<K: crate::Watched> Watched<K> {
        fn new(key: fn(&K) -> Option<String>) -> Self {
            let (store, writer) = reflector::store();
            Self {
                index: Index::new(store, key),
                writer,
            }
        }

        fn event(&mut self, event: watcher::Event<K>) {
            self.index.apply(&event);
            self.writer.apply_watcher_event(&event);
        }

        fn names(&self, namespace: &str, key: &str) -> Vec<String> {
            let mut names: Vec<String> = self
                .index
                .refs(namespace, key)
                .into_iter()
                .map(|r| r.name)
                .collect();
            names.sort();
            names
        }
    }

    /// A key that can change: the policy a Backup names.
    fn policy_ref(backup: &Backup) -> Option<String> {
        backup.spec.policy_ref.clone()
    }

    fn in_namespace(mut backup: Backup, namespace: &str) -> Backup {
        backup.metadata.namespace = Some(namespace.into());
        backup
    }

    #[test]
    fn a_backup_is_found_under_its_policy_until_it_names_another_or_is_deleted() {
        let mut w = Watched::new(policy_ref);
        w.event(watcher::Event::Apply(backup(
            "a1",
            "a",
            BackupPhase::Completed,
        )));
        w.event(watcher::Event::Apply(backup(
            "a2",
            "a",
            BackupPhase::Running,
        )));
        w.event(watcher::Event::Apply(backup(
            "b1",
            "b",
            BackupPhase::Completed,
        )));
        w.event(watcher::Event::Apply(in_namespace(
            backup("a9", "a", BackupPhase::Completed),
            "other",
        )));
        assert_eq!(w.names(NAMESPACE, "a"), ["a1", "a2"]);
        assert_eq!(w.names(NAMESPACE, "b"), ["b1"]);
        assert_eq!(w.names("other", "a"), ["a9"], "namespaces are apart");

        // An update under the same key changes nothing.
        w.event(watcher::Event::Apply(backup(
            "a2",
            "a",
            BackupPhase::Completed,
        )));
        assert_eq!(w.names(NAMESPACE, "a"), ["a1", "a2"]);

        // Moved to another policy: found there only.
        w.event(watcher::Event::Apply(backup(
            "a1",
            "b",
            BackupPhase::Completed,
        )));
        assert_eq!(w.names(NAMESPACE, "a"), ["a2"]);
        assert_eq!(w.names(NAMESPACE, "b"), ["a1", "b1"]);

        // Deleted: gone, even when the deleted version names another policy than the filed one.
        w.event(watcher::Event::Delete(backup(
            "a2",
            "zzz",
            BackupPhase::Completed,
        )));
        assert!(w.names(NAMESPACE, "a").is_empty());
        assert!(!w.index.any(NAMESPACE, "a"));
        assert!(
            !crate::lock(&w.index.state).live[NAMESPACE].contains_key("a"),
            "no empty sets kept"
        );
        w.event(watcher::Event::Delete(backup(
            "a1",
            "b",
            BackupPhase::Completed,
        )));
        w.event(watcher::Event::Delete(backup(
            "b1",
            "b",
            BackupPhase::Completed,
        )));
        assert!(!crate::lock(&w.index.state).live.contains_key(NAMESPACE));
    }

    #[test]
    fn a_relist_replaces_the_index_when_it_is_done() {
        let mut w = Watched::new(policy_ref);
        w.event(watcher::Event::Apply(backup(
            "a1",
            "a",
            BackupPhase::Completed,
        )));
        w.event(watcher::Event::Apply(backup(
            "a2",
            "a",
            BackupPhase::Completed,
        )));
        w.event(watcher::Event::Init);
        w.event(watcher::Event::InitApply(backup(
            "a2",
            "a",
            BackupPhase::Completed,
        )));
        w.event(watcher::Event::InitApply(backup(
            "b1",
            "b",
            BackupPhase::Completed,
        )));
        // Until the relist is done, lookups answer from the last complete one.
        assert_eq!(w.names(NAMESPACE, "a"), ["a1", "a2"]);
        w.event(watcher::Event::InitDone);
        // a1 was deleted while the watch was down.
        assert_eq!(w.names(NAMESPACE, "a"), ["a2"]);
        assert_eq!(w.names(NAMESPACE, "b"), ["b1"]);
    }

    /// A list cut short (the watch failed mid-list) starts again from nothing: what the first
    /// try filed is not kept.
    #[test]
    fn a_relist_that_starts_again_keeps_only_the_last_listing() {
        let mut w = Watched::new(policy_ref);
        w.event(watcher::Event::Init);
        w.event(watcher::Event::InitApply(backup(
            "a1",
            "a",
            BackupPhase::Completed,
        )));
        w.event(watcher::Event::Init);
        w.event(watcher::Event::InitApply(backup(
            "a2",
            "a",
            BackupPhase::Completed,
        )));
        w.event(watcher::Event::InitDone);
        assert_eq!(w.names(NAMESPACE, "a"), ["a2"]);
    }

    #[test]
    fn a_backup_waits_only_while_it_is_pending_and_not_being_deleted() {
        let mut w = Watched::new(keys::waiting);
        w.event(watcher::Event::Apply(backup(
            "a1",
            "a",
            BackupPhase::Pending,
        )));
        w.event(watcher::Event::Apply(backup(
            "a2",
            "a",
            BackupPhase::Completed,
        )));
        let mut by_hand = backup("manual", "a", BackupPhase::Pending);
        by_hand.spec.policy_ref = None;
        w.event(watcher::Event::Apply(by_hand));
        assert_eq!(w.names(NAMESPACE, "a"), ["a1"]);
        assert_eq!(w.names(NAMESPACE, ""), ["manual"]);
        assert_eq!(w.index.refs_in(NAMESPACE).len(), 2);

        w.event(watcher::Event::Apply(backup(
            "a1",
            "a",
            BackupPhase::Running,
        )));
        assert!(w.names(NAMESPACE, "a").is_empty(), "started: waits no more");
        let mut going = backup("manual", "a", BackupPhase::Pending);
        going.spec.policy_ref = None;
        going.metadata.deletion_timestamp = Some(
            k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(fixtures::at("03:00")),
        );
        w.event(watcher::Event::Apply(going));
        assert!(w.index.refs_in(NAMESPACE).is_empty());
    }

    #[test]
    fn a_policy_is_found_under_its_repository_until_it_is_deleted() {
        let mut w = Watched::<BackupPolicy>::new(keys::repository_of);
        let nightly = fixtures::policy("nightly", "0 2 * * *", None);
        let mut offsite = fixtures::policy("offsite", "0 3 * * *", None);
        offsite.spec.repository = Some("s3".into());
        w.event(watcher::Event::Apply(nightly.clone()));
        w.event(watcher::Event::Apply(offsite.clone()));
        assert_eq!(w.names(NAMESPACE, "default"), ["nightly"]);
        assert_eq!(w.names(NAMESPACE, "s3"), ["offsite"]);
        offsite.spec.repository = None;
        w.event(watcher::Event::Apply(offsite.clone()));
        assert_eq!(w.names(NAMESPACE, "default"), ["nightly", "offsite"]);
        w.event(watcher::Event::Delete(nightly));
        assert_eq!(w.names(NAMESPACE, "default"), ["offsite"]);
        assert!(w.names(NAMESPACE, "s3").is_empty());
    }

    #[test]
    fn a_job_is_found_under_the_uid_of_its_controller_until_it_is_deleted() {
        let mut w = Watched::<k8s_openapi::api::batch::v1::Job>::new(keys::owner_of);
        let job = |name: &str, uid: &str, controller: bool| {
            serde_json::from_value(serde_json::json!({
                "metadata": {"name": name, "namespace": NAMESPACE, "ownerReferences": [{
                    "apiVersion": "backstop.dev/v1alpha1", "kind": "Backup", "name": "b",
                    "uid": uid, "controller": controller}]}}))
            .unwrap()
        };
        w.event(watcher::Event::Apply(job("b-db", "uid-b", true)));
        w.event(watcher::Event::Apply(job("b-logs", "uid-b", true)));
        w.event(watcher::Event::Apply(job("adopted", "uid-c", false)));
        assert!(w.index.any(NAMESPACE, "uid-b"));
        assert!(!w.index.any(NAMESPACE, "uid-c"), "only the controller owns");
        assert!(!w.index.any("other", "uid-b"));
        w.event(watcher::Event::Delete(job("b-db", "uid-b", true)));
        assert!(w.index.any(NAMESPACE, "uid-b"));
        w.event(watcher::Event::Delete(job("b-logs", "uid-b", true)));
        assert!(!w.index.any(NAMESPACE, "uid-b"));
    }
}
