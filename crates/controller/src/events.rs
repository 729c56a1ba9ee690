//! Events: the story `kubectl describe` tells. Every failure is a Warning with the reason and
//! the same words as the condition.

use k8s_openapi::api::core::v1::ObjectReference;
use kube::Resource;
use kube::runtime::events::{Event, EventType, Recorder};

pub async fn normal<K: Resource<DynamicType = ()>>(
    recorder: &Recorder,
    obj: &K,
    reason: &str,
    note: String,
) {
    publish(recorder, obj, None, EventType::Normal, reason, note).await;
}

/// A Normal event about `obj` that concerns `related` too (the Job it created). kube's recorder
/// folds events with one reason on one object into a series that keeps the first note; only the
/// related object keeps "Created Job a" and "Created Job b" apart.
pub async fn normal_related<K: Resource<DynamicType = ()>>(
    recorder: &Recorder,
    obj: &K,
    related: ObjectReference,
    reason: &str,
    note: String,
) {
    publish(
        recorder,
        obj,
        Some(related),
        EventType::Normal,
        reason,
        note,
    )
    .await;
}

pub async fn warning<K: Resource<DynamicType = ()>>(
    recorder: &Recorder,
    obj: &K,
    reason: &str,
    note: String,
) {
    publish(recorder, obj, None, EventType::Warning, reason, note).await;
}

async fn publish<K: Resource<DynamicType = ()>>(
    recorder: &Recorder,
    obj: &K,
    related: Option<ObjectReference>,
    type_: EventType,
    reason: &str,
    note: String,
) {
    let event = Event {
        type_,
        reason: reason.to_string(),
        note: Some(backstop_api::condition::truncate(note, 1000)),
        action: reason.to_string(),
        secondary: related,
    };
    // An event that cannot be written must not stop the reconcile that caused it.
    if let Err(err) = recorder.publish(&event, &obj.object_ref(&())).await {
        tracing::warn!(%err, reason, "could not publish event");
    }
}

pub use backstop_api::human_bytes;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_like_a_person_wrote_them() {
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(3 * 1024 * 1024), "3.0 MiB");
    }
}
