//! A flag that is set once, stays set, and can be awaited: "the first listing is in", "every
//! policy was reconciled once".

use std::sync::atomic::{AtomicBool, Ordering};
use tokio::sync::Notify;

#[derive(Default)]
pub struct Latch {
    set: AtomicBool,
    on_set: Notify,
}

impl Latch {
    pub fn is_set(&self) -> bool {
        self.set.load(Ordering::Acquire)
    }

    /// Sets it and wakes every waiter, the first time only.
    pub fn set(&self) {
        if !self.set.swap(true, Ordering::AcqRel) {
            self.on_set.notify_waiters();
        }
    }

    /// Resolves once it is set.
    pub async fn wait(&self) {
        loop {
            // Made before the check: a `notify_waiters` in between still reaches it.
            let notified = self.on_set.notified();
            if self.is_set() {
                return;
            }
            notified.await;
        }
    }
}
