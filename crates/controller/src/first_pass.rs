//! Whether a reconciler has looked at every object of its copy once since it started.
//!
//! At start every policy is reconciled once to show its next run, and once the Backups are listed
//! every policy is looked at again (runs due, retention, figures). That second pass is paced, and
//! before this it began as soon as the listing was in, while thousands of policies still waited
//! for their first status: its writes (one per policy) took a third of what the API server wrote
//! (controller bench at 10x). So the second pass waits for the first one to be `over`.

use crate::latch::Latch;
use kube::runtime::reflector::ObjectRef;
use std::collections::HashSet;
use std::sync::Mutex;

pub struct FirstPass<K: kube::Resource<DynamicType = ()>> {
    /// The objects reconciled so far; dropped once the pass is over.
    seen: Mutex<HashSet<ObjectRef<K>>>,
    over: Latch,
}

impl<K: kube::Resource<DynamicType = ()>> Default for FirstPass<K> {
    fn default() -> Self {
        Self {
            seen: Mutex::new(HashSet::new()),
            over: Latch::default(),
        }
    }
}

impl<K: kube::Resource<DynamicType = ()>> FirstPass<K> {
    /// `obj` was reconciled, and the copy holds `total` objects now: the pass is over once as
    /// many different ones were (an object deleted meanwhile shrinks `total`, one created is
    /// reconciled like the others).
    pub fn reconciled(&self, obj: ObjectRef<K>, total: usize) {
        if self.is_over() {
            return;
        }
        let mut seen = crate::lock(&self.seen);
        seen.insert(obj);
        if seen.len() >= total {
            *seen = HashSet::new();
            self.over.set();
        }
    }

    pub fn is_over(&self) -> bool {
        self.over.is_set()
    }

    /// Resolves once every object was reconciled once.
    pub async fn over(&self) {
        self.over.wait().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use backstop_api::BackupPolicy;

    fn policy(name: &str) -> ObjectRef<BackupPolicy> {
        ObjectRef::new(name).within("ns")
    }

    #[tokio::test]
    async fn the_pass_is_over_once_every_object_was_reconciled_once() {
        let pass = std::sync::Arc::new(FirstPass::<BackupPolicy>::default());
        let waiting = tokio::spawn({
            let pass = pass.clone();
            async move { pass.over().await }
        });
        pass.reconciled(policy("a"), 3);
        // The same object again is not another one.
        pass.reconciled(policy("a"), 3);
        pass.reconciled(policy("b"), 3);
        tokio::task::yield_now().await;
        assert!(!pass.is_over() && !waiting.is_finished());
        pass.reconciled(policy("c"), 3);
        assert!(pass.is_over());
        waiting.await.unwrap();
        // Once over, for good, and what it remembered is dropped.
        pass.reconciled(policy("d"), 10);
        assert!(pass.is_over() && crate::lock(&pass.seen).is_empty());
        pass.over().await;
    }

    #[test]
    fn an_object_deleted_during_the_pass_does_not_hold_it_open() {
        let pass = FirstPass::<BackupPolicy>::default();
        pass.reconciled(policy("a"), 3);
        pass.reconciled(policy("b"), 3);
        // "c" was deleted before its turn: the copy holds two.
        pass.reconciled(policy("b"), 2);
        assert!(pass.is_over());
    }
}
