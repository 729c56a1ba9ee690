//! The statuses this operator wrote that its watched copy does not show yet.
//!
//! A reconcile woken again right after it wrote a status (by its own write, or by the Backups being
//! listed) reads the object from the copy, which may not have that write yet: it computes the same
//! status, sees the old one, and writes again. At 10,000 policies that was every policy written
//! twice at start (controller bench at 10x: 22,398 policy status writes, the API server the
//! bottleneck). Remembering the version each write made lets the second reconcile see that the
//! copy is only behind.
//!
//! Versions are compared as numbers, which Kubernetes does not promise; when one is not a number,
//! the status is written as if nothing were remembered.

use kube::runtime::reflector::ObjectRef;
use std::collections::HashMap;
use std::sync::Mutex;

/// Remembered writes stop being kept past this many (a copy far behind on that many objects has
/// bigger problems); forgetting them only costs writes.
const MOST_REMEMBERED: usize = 50_000;

#[derive(Debug, Clone, PartialEq)]
struct Write {
    /// The object's resourceVersion after the write.
    version: u64,
    status: serde_json::Value,
}

pub struct Written<K: kube::Resource<DynamicType = ()>> {
    writes: Mutex<HashMap<ObjectRef<K>, Write>>,
}

impl<K: kube::Resource<DynamicType = ()>> Default for Written<K> {
    fn default() -> Self {
        Self {
            writes: Mutex::new(HashMap::new()),
        }
    }
}

/// What to do with `status` given the copy's version and status of the object and the last write
/// remembered for it: whether to write, and whether to keep remembering that write.
fn decide(
    copy_version: Option<u64>,
    copy_status: Option<&serde_json::Value>,
    status: &serde_json::Value,
    last: Option<&Write>,
) -> (bool, bool) {
    let behind_our_write = |w: &Write| copy_version.is_some_and(|v| v < w.version);
    let keep = last.is_some_and(behind_our_write);
    if copy_status == Some(status) {
        return (false, keep);
    }
    match last {
        Some(w) if behind_our_write(w) && w.status == *status => (false, true),
        _ => (true, keep),
    }
}

impl<K: kube::Resource<DynamicType = ()>> Written<K> {
    /// Whether `status` must be written to `obj` (as the copy has it).
    pub fn needed(
        &self,
        obj: &K,
        copy_status: Option<&serde_json::Value>,
        status: &serde_json::Value,
    ) -> bool {
        let key = ObjectRef::from_obj(obj);
        let copy_version = version(obj.meta().resource_version.as_deref());
        let mut writes = crate::lock(&self.writes);
        let (write, keep) = decide(copy_version, copy_status, status, writes.get(&key));
        if !keep {
            writes.remove(&key);
        }
        write
    }

    /// `status` was written to `obj`, which is now at `version`.
    pub fn record(&self, obj: &K, version_after: Option<&str>, status: serde_json::Value) {
        let Some(version) = version(version_after) else {
            return;
        };
        let mut writes = crate::lock(&self.writes);
        if writes.len() >= MOST_REMEMBERED {
            writes.clear();
        }
        writes.insert(ObjectRef::from_obj(obj), Write { version, status });
    }
}

fn version(v: Option<&str>) -> Option<u64> {
    v?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn write(version: u64, status: serde_json::Value) -> Write {
        Write { version, status }
    }

    #[test]
    fn a_status_the_copy_has_is_not_written() {
        let s = json!({"next": "02:00"});
        assert_eq!(decide(Some(7), Some(&s), &s, None), (false, false));
    }

    #[test]
    fn a_copy_behind_our_own_write_of_the_same_status_is_not_written_again() {
        let old = json!({});
        let new = json!({"next": "02:00"});
        let ours = write(8, new.clone());
        assert_eq!(
            decide(Some(7), Some(&old), &new, Some(&ours)),
            (false, true)
        );
        // Caught up: the copy has it, the write is forgotten.
        assert_eq!(
            decide(Some(8), Some(&new), &new, Some(&ours)),
            (false, false)
        );
    }

    #[test]
    fn anything_else_is_written() {
        let old = json!({});
        let new = json!({"next": "02:00"});
        let newer = json!({"next": "03:00"});
        // Nothing remembered.
        assert_eq!(decide(Some(7), Some(&old), &new, None), (true, false));
        // A status other than the one we wrote, with the copy still behind: written, and our
        // earlier write still remembered until the copy passes it.
        assert_eq!(
            decide(Some(7), Some(&old), &newer, Some(&write(8, new.clone()))),
            (true, true)
        );
        // The copy moved past our write (someone else changed the object since).
        assert_eq!(
            decide(Some(9), Some(&old), &new, Some(&write(8, new.clone()))),
            (true, false)
        );
        // Versions that are not numbers: no comparison, written.
        assert_eq!(
            decide(None, Some(&old), &new, Some(&write(8, new.clone()))),
            (true, false)
        );
        // An object without a status yet.
        assert_eq!(decide(Some(7), None, &new, None), (true, false));
    }

    #[test]
    fn needed_and_record_work_on_the_object_versions() {
        let written = Written::<backstop_api::BackupPolicy>::default();
        let mut policy = crate::fixtures::policy("nightly", "0 2 * * *", None);
        policy.metadata.resource_version = Some("7".into());
        let status = json!({"nextScheduledBackup": "2026-11-27T02:00:00Z"});
        assert!(written.needed(&policy, None, &status));
        written.record(&policy, Some("8"), status.clone());
        assert!(!written.needed(&policy, None, &status), "the copy is at 7");
        policy.metadata.resource_version = Some("8".into());
        assert!(!written.needed(&policy, Some(&status), &status));
        assert!(written.writes.lock().unwrap().is_empty(), "caught up");
        written.record(&policy, Some("not-a-number"), status.clone());
        assert!(written.writes.lock().unwrap().is_empty());
    }
}
