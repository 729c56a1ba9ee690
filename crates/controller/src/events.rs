//! Events: the story `kubectl describe` tells. Every failure is a Warning with the reason and
//! the same words as the condition.

use kube::Resource;
use kube::runtime::events::{Event, EventType, Recorder};

pub async fn normal<K: Resource<DynamicType = ()>>(
    recorder: &Recorder,
    obj: &K,
    reason: &str,
    note: String,
) {
    publish(recorder, obj, EventType::Normal, reason, note).await;
}

pub async fn warning<K: Resource<DynamicType = ()>>(
    recorder: &Recorder,
    obj: &K,
    reason: &str,
    note: String,
) {
    publish(recorder, obj, EventType::Warning, reason, note).await;
}

async fn publish<K: Resource<DynamicType = ()>>(
    recorder: &Recorder,
    obj: &K,
    type_: EventType,
    reason: &str,
    note: String,
) {
    let event = Event {
        type_,
        reason: reason.to_string(),
        note: Some(backstop_api::condition::truncate(note, 1000)),
        action: reason.to_string(),
        secondary: None,
    };
    // An event that cannot be written must not stop the reconcile that caused it.
    if let Err(err) = recorder.publish(&event, &obj.object_ref(&())).await {
        tracing::warn!(%err, reason, "could not publish event");
    }
}

/// `1.5 MiB`-style sizes for messages.
pub fn human_bytes(bytes: i64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

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
