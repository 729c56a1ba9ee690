//! The mover's result channel: a short JSON document in the container's termination message, which
//! the kubelet copies into `status.containerStatuses[].state.terminated.message`. It is read by the
//! controller, so nothing depends on pod logs (which may not even be reachable).

use serde::Serialize;
use std::io;
use std::path::Path;

/// The kubelet keeps at most this many bytes of a termination message.
pub const TERMINATION_MESSAGE_LIMIT: usize = 4096;

/// Serializes `result` and writes it to `path`, refusing results the kubelet would truncate
/// (a truncated document would be unreadable, which is worse than a clear error).
pub fn write_termination_message<T: Serialize>(path: &Path, result: &T) -> io::Result<()> {
    let json = serde_json::to_string(result).map_err(io::Error::other)?;
    if json.len() > TERMINATION_MESSAGE_LIMIT {
        return Err(io::Error::other(format!(
            "result is {} bytes, more than the {TERMINATION_MESSAGE_LIMIT} a termination message holds",
            json.len()
        )));
    }
    std::fs::write(path, json)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_the_result_as_json() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("termination-log");
        write_termination_message(&path, &serde_json::json!({"files": 3})).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), r#"{"files":3}"#);
    }

    #[test]
    fn refuses_results_the_kubelet_would_truncate() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("termination-log");
        let big = "x".repeat(TERMINATION_MESSAGE_LIMIT);
        assert!(write_termination_message(&path, &big).is_err());
        assert!(!path.exists());
        // Exactly the limit (two bytes of quotes) still fits.
        let fits = "x".repeat(TERMINATION_MESSAGE_LIMIT - 2);
        write_termination_message(&path, &fits).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 4096);
    }
}
