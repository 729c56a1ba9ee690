//! Deterministic names and label values: the same inputs always give the same name, so a second
//! controller or a restart finds `AlreadyExists` instead of making a duplicate.

use crate::condition::Invalid;
use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

/// Kubernetes' limit for label values and for names that become label values (Jobs).
pub const LABEL_MAX: usize = 63;

/// `name` itself when it fits in `max` bytes, otherwise a prefix plus a hash of the whole name,
/// so different long names stay different.
pub fn fit(name: &str, max: usize) -> String {
    if name.len() <= max {
        return name.to_string();
    }
    let hash = format!("{:08x}", fnv1a(name.as_bytes()) as u32);
    let mut prefix: String = name.chars().take(max - hash.len() - 1).collect();
    while prefix.ends_with(['-', '.']) {
        prefix.pop();
    }
    format!("{prefix}-{hash}")
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// The Backup a policy makes for the run scheduled at `at`: `<policy>-<yyyymmddhhmm>` (UTC).
pub fn scheduled_backup(policy: &str, at: Timestamp) -> String {
    let stamp = at.strftime("%Y%m%d%H%M").to_string();
    fit(&format!("{policy}-{stamp}"), 253)
}

/// A Job name: readable `parts` joined by `-`, shortened to leave room for a hash of the purpose
/// and every part taken apart, so that no two (object, volume, purpose) share a name: without it,
/// Backup `a-b` of PVC `c` and Backup `a` of PVC `b-c` were both `a-b-c`.
fn job_name(purpose: &str, parts: &[&str]) -> String {
    let mut key = purpose.as_bytes().to_vec();
    for part in parts {
        key.push(0);
        key.extend_from_slice(part.as_bytes());
    }
    let hash = format!("{:08x}", fnv1a(&key) as u32);
    let readable = parts.join("-");
    let mut prefix: String = readable.chars().take(LABEL_MAX - hash.len() - 1).collect();
    while prefix.ends_with(['-', '.']) {
        prefix.pop();
    }
    format!("{prefix}-{hash}")
}

/// The Job that backs up `pvc` for `backup`.
pub fn backup_job(backup: &str, pvc: &str) -> String {
    job_name("backup", &[backup, pvc])
}

/// The Job that verifies `pvc`'s artifact of `backup` for the verification request `request`
/// (each request has its own Jobs: a new one never meets the last one's). The request is any
/// text a person or a policy wrote: it goes into the hash only, never into the name.
pub fn verify_job(backup: &str, pvc: &str, request: &str) -> String {
    job_name(&format!("verify\0{request}"), &[backup, pvc, "verify"])
}

/// The Job that keeps the conclusion of the verification `request` of `backup` in the repository.
pub fn record_verification_job(backup: &str, request: &str) -> String {
    job_name(&format!("record\0{request}"), &[backup, "verified"])
}

/// The VolumeSnapshot of `pvc` for `backup`, and the temporary PVC made from it.
pub fn snapshot(backup: &str, pvc: &str) -> String {
    job_name("snapshot", &[backup, pvc, "snap"])
}

/// The Job that removes `backup`'s artifacts from its repository.
pub fn delete_job(backup: &str) -> String {
    job_name("delete", &[backup, "delete"])
}

/// The Job that performs `restore`.
pub fn restore_job(restore: &str) -> String {
    job_name("restore", &[restore, "restore"])
}

/// A probe Job of repository `repo`, started at `at` (unix seconds): each probe has its own name, so a
/// new one never waits for the previous one to be garbage collected.
pub fn probe_job(repo: &str, at: i64) -> String {
    let stamp = format!("-probe-{at}");
    format!("{}{stamp}", fit(repo, LABEL_MAX - stamp.len()))
}

/// The prune Job of repository `repo` for its run scheduled at `at` (Unix seconds).
pub fn prune_job(repo: &str, at: i64) -> String {
    let stamp = format!("-prune-{at}");
    format!("{}{stamp}", fit(repo, LABEL_MAX - stamp.len()))
}

/// The sync Job of repository `repo` started at `at` (Unix seconds).
pub fn sync_job(repo: &str, at: i64) -> String {
    let stamp = format!("-sync-{at}");
    format!("{}{stamp}", fit(repo, LABEL_MAX - stamp.len()))
}

/// The ServiceAccount, Role and RoleBinding a sync Job of repository `repo` runs as: it may
/// list and create Backups in the repository's namespace, and nothing else.
pub fn sync_identity(repo: &str) -> String {
    fit(&format!("backstop-sync-{repo}"), 253)
}

/// A label value standing for `name`.
pub fn label_value(name: &str) -> String {
    fit(name, LABEL_MAX)
}

/// The selector in the list-parameter syntax the API server understands
/// (`app=db,tier in (a,b),!legacy`). Unknown operators are an error, not a silent match-all.
pub fn selector_string(selector: &LabelSelector) -> Result<String, Invalid> {
    let mut parts: Vec<String> = selector
        .match_labels
        .iter()
        .flatten()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    for expr in selector.match_expressions.iter().flatten() {
        let values = expr.values.clone().unwrap_or_default().join(",");
        parts.push(match expr.operator.as_str() {
            "In" => format!("{} in ({values})", expr.key),
            "NotIn" => format!("{} notin ({values})", expr.key),
            "Exists" => expr.key.clone(),
            "DoesNotExist" => format!("!{}", expr.key),
            other => {
                return Err(Invalid::new(
                    "InvalidSelector",
                    format!(
                        "target.pvcSelector operator {other:?} on key {:?} is not one of In, NotIn, Exists, DoesNotExist",
                        expr.key
                    ),
                ));
            }
        });
    }
    Ok(parts.join(","))
}

/// Whether `name` is a DNS label (RFC 1123): 1-63 of `a-z`, `0-9` and `-`, alphanumeric at
/// both ends. Such a name is safe in a repository key, a Job name and a label.
pub fn is_dns_label(name: &str) -> bool {
    let alnum = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
    (1..=63).contains(&name.len())
        && name.chars().all(|c| alnum(c) || c == '-')
        && name.starts_with(alnum)
        && name.ends_with(alnum)
}

/// Whether `name` is a DNS subdomain (RFC 1123): DNS labels joined by dots, at most 253 long,
/// as the names of most Kubernetes objects are.
pub fn is_dns_subdomain(name: &str) -> bool {
    name.len() <= 253 && name.split('.').all(is_dns_label)
}

pub fn validate_selector(selector: &LabelSelector) -> Result<(), Invalid> {
    selector_string(selector).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;

    #[test]
    fn scheduled_backup_names_are_deterministic_and_sortable() {
        let at: Timestamp = "2026-11-21T02:00:00Z".parse().unwrap();
        assert_eq!(scheduled_backup("nightly", at), "nightly-202611210200");
        assert_eq!(
            scheduled_backup("nightly", at),
            scheduled_backup("nightly", at)
        );
    }

    #[test]
    fn long_names_are_shortened_but_stay_distinct() {
        let a = backup_job(&"b".repeat(80), "data-a");
        let b = backup_job(&"b".repeat(80), "data-b");
        assert!(a.len() <= LABEL_MAX && b.len() <= LABEL_MAX);
        assert_ne!(a, b);
        assert!(backup_job("short", "pvc").starts_with("short-pvc-"));
    }

    #[test]
    fn job_names_are_unique_per_object_volume_and_purpose() {
        assert_ne!(backup_job("a-b", "c"), backup_job("a", "b-c"));
        // A Backup named like another's delete Job, or a PVC called "delete".
        assert_ne!(backup_job("x", "delete"), delete_job("x"));
        assert_ne!(restore_job("x"), backup_job("x", "restore"));
        for name in [
            backup_job(&"b".repeat(80), &"p".repeat(80)),
            delete_job(&"d".repeat(300)),
            restore_job("r"),
        ] {
            assert!(name.len() <= LABEL_MAX, "{name}");
            assert!(!name.contains("--"), "{name}");
        }
        assert_eq!(backup_job("a", "b"), backup_job("a", "b"), "deterministic");
    }

    #[test]
    fn dns_labels_and_subdomains() {
        for good in ["dump", "a", "pg-15", &"a".repeat(63)] {
            assert!(is_dns_label(good), "{good}");
        }
        for bad in ["", "-a", "a-", "A", "a_b", "a.b", "../x", &"a".repeat(64)] {
            assert!(!is_dns_label(bad), "{bad}");
        }
        assert!(is_dns_subdomain("shop.db-1"));
        for bad in ["a..b", ".a", "a/b", "A.b", &"a.".repeat(127)] {
            assert!(!is_dns_subdomain(bad), "{bad}");
        }
    }

    #[test]
    fn a_verification_request_changes_the_job_name_but_never_appears_in_it() {
        let first = verify_job("b", "db", "2026-11-27T14:38:00Z");
        let again = verify_job("b", "db", "Again, by hand!");
        assert_ne!(first, again);
        assert_ne!(first, backup_job("b", "db"));
        for name in [first, again, verify_job(&"b".repeat(80), "db", "x")] {
            assert!(name.len() <= LABEL_MAX, "{name}");
            assert!(
                name.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'),
                "{name}"
            );
        }
        assert!(verify_job("b", "db", "x").starts_with("b-db-verify-"));
    }

    #[test]
    fn selector_renders_every_operator() {
        let selector = LabelSelector {
            match_labels: Some([("app".to_string(), "postgres".to_string())].into()),
            match_expressions: Some(vec![
                LabelSelectorRequirement {
                    key: "tier".into(),
                    operator: "In".into(),
                    values: Some(vec!["a".into(), "b".into()]),
                },
                LabelSelectorRequirement {
                    key: "legacy".into(),
                    operator: "DoesNotExist".into(),
                    values: None,
                },
                LabelSelectorRequirement {
                    key: "env".into(),
                    operator: "NotIn".into(),
                    values: Some(vec!["test".into()]),
                },
                LabelSelectorRequirement {
                    key: "backup".into(),
                    operator: "Exists".into(),
                    values: None,
                },
            ]),
        };
        assert_eq!(
            selector_string(&selector).unwrap(),
            "app=postgres,tier in (a,b),!legacy,env notin (test),backup"
        );
        let bad = LabelSelector {
            match_expressions: Some(vec![LabelSelectorRequirement {
                key: "x".into(),
                operator: "Like".into(),
                values: None,
            }]),
            ..Default::default()
        };
        assert_eq!(selector_string(&bad).unwrap_err().reason, "InvalidSelector");
    }

    #[test]
    fn a_long_name_is_cut_to_exactly_the_limit_with_its_hash() {
        let long = "x".repeat(300);
        let fitted = fit(&long, LABEL_MAX);
        assert_eq!(fitted.len(), LABEL_MAX);
        assert!(fitted.starts_with(&"x".repeat(LABEL_MAX - 9)), "{fitted}");
        assert_eq!(label_value(&long), fitted);
        assert_eq!(label_value("db"), "db");
    }

    /// Names must not change between versions: an upgraded operator looks for the Jobs of
    /// running backups and restores by these names.
    #[test]
    fn job_names_are_stable_across_versions() {
        assert_eq!(
            backup_job("nightly-202611210200", "db"),
            "nightly-202611210200-db-475aa4d4"
        );
        assert_eq!(
            delete_job("nightly-202611210200"),
            "nightly-202611210200-delete-4fdb6df0"
        );
        assert_eq!(restore_job("back"), "back-restore-0e95ec8e");
        assert_eq!(probe_job("s3", 1_795_300_000), "s3-probe-1795300000");
        assert_eq!(
            fit(&"y".repeat(70), LABEL_MAX),
            "yyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyy-a909bd8b"
        );
        let long_repo = "r".repeat(70);
        let probe = probe_job(&long_repo, 1_795_300_000);
        assert_eq!(probe.len(), LABEL_MAX, "{probe}");
        assert!(probe.ends_with("-probe-1795300000"), "{probe}");
    }

    #[test]
    fn an_unknown_selector_operator_is_invalid() {
        let selector = LabelSelector {
            match_expressions: Some(vec![LabelSelectorRequirement {
                key: "app".into(),
                operator: "Matches".into(),
                values: None,
            }]),
            ..Default::default()
        };
        assert_eq!(
            validate_selector(&selector).unwrap_err().reason,
            "InvalidSelector"
        );
        assert!(validate_selector(&LabelSelector::default()).is_ok());
    }
}
