//! What the operator remembers of every Backup without caching the Backup: the summary the policy
//! reconciler reads (`BackupSummary`), filed by namespace and policy, kept from the Backup watch.
//! Finished Backups are most of a cluster's Backups and nothing else reads them from memory, so
//! the watched copy (`Stores::backups`) holds only the Backups at work or being deleted, and this
//! history holds the rest as summaries.
//!
//! Why: the copy cost about 2,000 bytes per finished Backup even compacted (the object, its
//! labels and annotations, the store's key), the summary a tenth of that; with 100,000 Backups the
//! copy alone was 200 MB (controller benchmark at 10x, `backstop-bench state`).
//!
//! A finished Backup leaving the copy no longer wakes its policy or a Restore through the copy's
//! events: the history tells its listeners of every change instead (`subscribe`).

use crate::index::Listed;
use crate::latch::Latch;
use crate::scheduling::BackupSummary;
use backstop_api::Backup;
use futures::channel::mpsc;
use kube::ResourceExt;
use kube::runtime::watcher;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// A Backup that changed (appeared, changed, or went), and the policies it was and is filed under.
#[derive(Clone, Debug, PartialEq)]
pub struct Change {
    pub namespace: String,
    pub backup: String,
    pub policies: Vec<String>,
}

#[derive(Default)]
pub struct History {
    state: Mutex<Listed<Book>>,
    listeners: Mutex<Vec<mpsc::UnboundedSender<Change>>>,
    /// Set once the first listing of every Backup is in (and never unset: a relist keeps the
    /// previous listing until the new one is complete).
    listed: Latch,
}

/// Summaries by namespace.
#[derive(Default)]
struct Book(HashMap<String, Shelf>);

#[derive(Default)]
struct Shelf {
    by_policy: HashMap<Arc<str>, Vec<BackupSummary>>,
    /// The policy each Backup is filed under, by Backup name.
    policy_of: HashMap<String, Arc<str>>,
}

impl Book {
    /// Files `summary` under `policy` (or nowhere); the policy it was filed under before, if any.
    fn file(
        &mut self,
        namespace: &str,
        summary: BackupSummary,
        policy: Option<&str>,
    ) -> Option<Arc<str>> {
        let before = self.unfile(namespace, &summary.name);
        if let Some(policy) = policy {
            let shelf = self.0.entry(namespace.to_string()).or_default();
            let policy: Arc<str> = match shelf.by_policy.get_key_value(policy) {
                Some((key, _)) => key.clone(),
                None => Arc::from(policy),
            };
            shelf.policy_of.insert(summary.name.clone(), policy.clone());
            shelf.by_policy.entry(policy).or_default().push(summary);
        }
        before
    }

    /// Removes the Backup `name`; the policy it was filed under, if any.
    fn unfile(&mut self, namespace: &str, name: &str) -> Option<Arc<str>> {
        let shelf = self.0.get_mut(namespace)?;
        let policy = shelf.policy_of.remove(name)?;
        if let Some(summaries) = shelf.by_policy.get_mut(&policy) {
            summaries.retain(|s| s.name != name);
            if summaries.is_empty() {
                shelf.by_policy.remove(&policy);
            }
        }
        if shelf.policy_of.is_empty() {
            self.0.remove(namespace);
        }
        Some(policy)
    }
}

impl History {
    /// A stream of every change from now on.
    pub fn subscribe(&self) -> mpsc::UnboundedReceiver<Change> {
        let (sender, receiver) = mpsc::unbounded();
        crate::lock(&self.listeners).push(sender);
        receiver
    }

    fn tell(&self, changes: Vec<Change>) {
        let mut listeners = crate::lock(&self.listeners);
        // A listener that went away (its controller stopped) is forgotten.
        listeners.retain(|l| changes.iter().all(|c| l.unbounded_send(c.clone()).is_ok()));
    }

    /// Whether the first listing of every Backup is in: until then, what `of` answers may miss
    /// Backups.
    pub fn is_listed(&self) -> bool {
        self.listed.is_set()
    }

    /// Resolves once the first listing of every Backup is in.
    pub async fn listed(&self) {
        self.listed.wait().await
    }

    /// The summaries of the Backups in `namespace` that name `policy`.
    pub fn of(&self, namespace: &str, policy: &str) -> Vec<BackupSummary> {
        crate::lock(&self.state)
            .live
            .0
            .get(namespace)
            .and_then(|shelf| shelf.by_policy.get(policy))
            .cloned()
            .unwrap_or_default()
    }
}

impl crate::index::Observer<Backup> for History {
    fn apply(&self, event: &watcher::Event<Backup>) {
        let changes = {
            let mut state = crate::lock(&self.state);
            match event {
                watcher::Event::Apply(backup) => {
                    let namespace = backup.namespace().unwrap_or_default();
                    let now = backup.spec.policy_ref.clone();
                    let summary = crate::policy::summarize(backup);
                    let before = state.live.file(&namespace, summary, now.as_deref());
                    let mut policies: Vec<String> = before
                        .map(|p| p.to_string())
                        .into_iter()
                        .chain(now)
                        .collect();
                    policies.dedup();
                    vec![Change {
                        namespace,
                        backup: backup.name_any(),
                        policies,
                    }]
                }
                watcher::Event::Delete(backup) => {
                    let namespace = backup.namespace().unwrap_or_default();
                    let name = backup.name_any();
                    let before = state.live.unfile(&namespace, &name);
                    vec![Change {
                        namespace,
                        backup: name,
                        policies: before.map(|p| p.to_string()).into_iter().collect(),
                    }]
                }
                watcher::Event::Init => {
                    state.begin();
                    Vec::new()
                }
                watcher::Event::InitApply(backup) => {
                    state.relisted().file(
                        &backup.namespace().unwrap_or_default(),
                        crate::policy::summarize(backup),
                        backup.spec.policy_ref.as_deref(),
                    );
                    Vec::new()
                }
                // The first listing is told through `listed`; a relist after a broken watch
                // here: what changed while the watch was down is not known, so every policy
                // with Backups looks again.
                watcher::Event::InitDone if !self.is_listed() => {
                    state.done();
                    Vec::new()
                }
                watcher::Event::InitDone => {
                    state.done();
                    state
                        .live
                        .0
                        .iter()
                        .flat_map(|(namespace, shelf)| {
                            shelf.by_policy.keys().map(|policy| Change {
                                namespace: namespace.clone(),
                                backup: String::new(),
                                policies: vec![policy.to_string()],
                            })
                        })
                        .collect()
                }
            }
        };
        if matches!(event, watcher::Event::InitDone) {
            self.listed.set();
        }
        if !changes.is_empty() {
            self.tell(changes);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::{NAMESPACE, backup};
    use crate::index::Observer;
    use backstop_api::BackupPhase;

    fn names(history: &History, namespace: &str, policy: &str) -> Vec<String> {
        let mut names: Vec<String> = history
            .of(namespace, policy)
            .into_iter()
            .map(|s| s.name)
            .collect();
        names.sort();
        names
    }

    fn told(changes: &mut mpsc::UnboundedReceiver<Change>) -> Vec<(String, Vec<String>)> {
        let mut told = Vec::new();
        while let Ok(change) = changes.try_recv() {
            told.push((change.backup, change.policies));
        }
        told
    }

    #[test]
    fn a_backup_is_summarized_under_its_policy_until_it_names_another_or_is_deleted() {
        let history = History::default();
        let mut changes = history.subscribe();
        history.apply(&watcher::Event::Apply(backup(
            "a1",
            "a",
            BackupPhase::Running,
        )));
        history.apply(&watcher::Event::Apply(backup(
            "a2",
            "a",
            BackupPhase::Completed,
        )));
        history.apply(&watcher::Event::Apply(backup(
            "b1",
            "b",
            BackupPhase::Completed,
        )));
        let mut elsewhere = backup("a9", "a", BackupPhase::Completed);
        elsewhere.metadata.namespace = Some("other".into());
        history.apply(&watcher::Event::Apply(elsewhere));
        assert_eq!(names(&history, NAMESPACE, "a"), ["a1", "a2"]);
        assert_eq!(
            names(&history, "other", "a"),
            ["a9"],
            "namespaces are apart"
        );
        told(&mut changes);

        // An update replaces the summary, and says so to the policy.
        history.apply(&watcher::Event::Apply(backup(
            "a1",
            "a",
            BackupPhase::Completed,
        )));
        let a1 = history.of(NAMESPACE, "a");
        assert_eq!(a1.len(), 2);
        assert!(a1.iter().all(|s| s.phase == BackupPhase::Completed));
        assert_eq!(a1[0].total_files, Some(3), "totals are kept");
        assert_eq!(told(&mut changes), [("a1".into(), vec!["a".to_string()])]);

        // Moved to another policy: found there only; both policies are told.
        history.apply(&watcher::Event::Apply(backup(
            "a1",
            "b",
            BackupPhase::Completed,
        )));
        assert_eq!(names(&history, NAMESPACE, "a"), ["a2"]);
        assert_eq!(names(&history, NAMESPACE, "b"), ["a1", "b1"]);
        assert_eq!(
            told(&mut changes),
            [("a1".into(), vec!["a".to_string(), "b".to_string()])]
        );

        // Deleted: gone, and its policy told, whatever the deleted version names.
        history.apply(&watcher::Event::Delete(backup(
            "a2",
            "zzz",
            BackupPhase::Completed,
        )));
        assert!(names(&history, NAMESPACE, "a").is_empty());
        assert_eq!(told(&mut changes), [("a2".into(), vec!["a".to_string()])]);
        history.apply(&watcher::Event::Delete(backup(
            "a1",
            "b",
            BackupPhase::Completed,
        )));
        history.apply(&watcher::Event::Delete(backup(
            "b1",
            "b",
            BackupPhase::Completed,
        )));
        assert!(
            !crate::lock(&history.state).live.0.contains_key(NAMESPACE),
            "nothing kept for an empty namespace"
        );
    }

    #[test]
    fn a_backup_made_by_hand_without_a_policy_is_told_but_not_filed() {
        let history = History::default();
        let mut changes = history.subscribe();
        let mut by_hand = backup("manual", "a", BackupPhase::Completed);
        by_hand.spec.policy_ref = None;
        history.apply(&watcher::Event::Apply(by_hand.clone()));
        assert!(crate::lock(&history.state).live.0.is_empty());
        assert_eq!(told(&mut changes), [("manual".into(), vec![])]);
        // Adopted by a policy later: filed there.
        by_hand.spec.policy_ref = Some("a".into());
        history.apply(&watcher::Event::Apply(by_hand));
        assert_eq!(names(&history, NAMESPACE, "a"), ["manual"]);
    }

    #[test]
    fn a_relist_replaces_the_history_when_it_is_done_and_wakes_every_policy() {
        let history = History::default();
        let mut first = history.subscribe();
        history.apply(&watcher::Event::Init);
        history.apply(&watcher::Event::InitDone);
        assert!(
            told(&mut first).is_empty(),
            "the first listing is told by `listed`"
        );
        history.apply(&watcher::Event::Apply(backup(
            "a1",
            "a",
            BackupPhase::Completed,
        )));
        history.apply(&watcher::Event::Apply(backup(
            "a2",
            "a",
            BackupPhase::Completed,
        )));
        let mut changes = history.subscribe();
        history.apply(&watcher::Event::Init);
        history.apply(&watcher::Event::InitApply(backup(
            "a2",
            "a",
            BackupPhase::Completed,
        )));
        history.apply(&watcher::Event::InitApply(backup(
            "b1",
            "b",
            BackupPhase::Completed,
        )));
        assert_eq!(names(&history, NAMESPACE, "a"), ["a1", "a2"], "until done");
        assert!(told(&mut changes).is_empty());
        history.apply(&watcher::Event::InitDone);
        assert_eq!(names(&history, NAMESPACE, "a"), ["a2"], "a1 went meanwhile");
        assert_eq!(names(&history, NAMESPACE, "b"), ["b1"]);
        let mut woken: Vec<Vec<String>> = told(&mut changes).into_iter().map(|c| c.1).collect();
        woken.sort();
        assert_eq!(woken, [vec!["a".to_string()], vec!["b".to_string()]]);
    }

    #[tokio::test]
    async fn listed_once_the_first_listing_is_done_and_for_good() {
        let history = Arc::new(History::default());
        let waiting = tokio::spawn({
            let history = history.clone();
            async move { history.listed().await }
        });
        history.apply(&watcher::Event::Init);
        history.apply(&watcher::Event::InitApply(backup(
            "a1",
            "a",
            BackupPhase::Completed,
        )));
        tokio::task::yield_now().await;
        assert!(!history.is_listed() && !waiting.is_finished());
        history.apply(&watcher::Event::InitDone);
        tokio::time::timeout(std::time::Duration::from_secs(5), waiting)
            .await
            .expect("woken when the listing is done")
            .expect("the waiting task");
        // A relist after a broken watch keeps the previous listing until it is done.
        history.apply(&watcher::Event::Init);
        assert!(history.is_listed());
        history.listed().await;
    }

    #[test]
    fn a_listener_that_went_away_is_forgotten() {
        let history = History::default();
        drop(history.subscribe());
        let mut kept = history.subscribe();
        history.apply(&watcher::Event::Apply(backup(
            "a1",
            "a",
            BackupPhase::Completed,
        )));
        assert_eq!(told(&mut kept).len(), 1);
        assert_eq!(history.listeners.lock().unwrap().len(), 1);
    }
}
