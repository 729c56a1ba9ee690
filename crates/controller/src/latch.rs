//! A one-way flag tasks can wait for: closed until it is opened, then open for good.

use std::sync::atomic::{AtomicBool, Ordering};
use tokio::sync::Notify;

#[derive(Default)]
pub struct Latch {
    open: AtomicBool,
    on_open: Notify,
}

impl Latch {
    pub fn is_open(&self) -> bool {
        self.open.load(Ordering::Acquire)
    }

    /// Opens the latch (again: no effect) and wakes everyone waiting for it.
    pub fn open(&self) {
        if !self.open.swap(true, Ordering::AcqRel) {
            self.on_open.notify_waiters();
        }
    }

    /// Resolves once the latch is open.
    pub async fn opened(&self) {
        loop {
            // Made before the check: an `open` in between still reaches it.
            let notified = self.on_open.notified();
            if self.is_open() {
                return;
            }
            notified.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[tokio::test]
    async fn waiters_are_woken_once_it_opens_and_later_ones_pass_at_once() {
        let latch = Arc::new(Latch::default());
        let waiting = tokio::spawn({
            let latch = latch.clone();
            async move { latch.opened().await }
        });
        tokio::task::yield_now().await;
        assert!(!latch.is_open() && !waiting.is_finished());
        latch.open();
        waiting.await.expect("woken");
        latch.open();
        assert!(latch.is_open());
        latch.opened().await;
    }
}
