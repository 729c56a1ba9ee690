//! `BackupRepository`: where artifacts go, defined once and shared by policies.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "backstop.dev",
    version = "v1alpha1",
    kind = "BackupRepository",
    namespaced,
    status = "BackupRepositoryStatus",
    shortname = "brepo",
    category = "backstop",
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Reason","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].reason"}"#,
    printcolumn = r#"{"name":"Compression","type":"string","jsonPath":".spec.compression"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct BackupRepositorySpec {
    /// Shared storage: a PVC in the repository's namespace, mounted by mover pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pvc: Option<PvcRepository>,
    /// How artifacts are compressed.
    #[serde(default)]
    pub compression: Compression,
}

#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PvcRepository {
    /// The PVC that holds the repository.
    #[schemars(length(min = 1))]
    pub claim_name: String,
    /// A directory inside that volume (default: its root).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub_path: Option<String>,
}

#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    /// zstd level 3, multithreaded: `.tar.zst`.
    #[default]
    Zstd,
    /// gzip level 6: `.tar.gz`, readable by `tar xzf`.
    Gzip,
    /// A plain `.tar`.
    None,
}

impl Compression {
    pub fn as_str(self) -> &'static str {
        match self {
            Compression::Zstd => "zstd",
            Compression::Gzip => "gzip",
            Compression::None => "none",
        }
    }

    /// The artifact's file name extension.
    pub fn extension(self) -> &'static str {
        match self {
            Compression::Zstd => "tar.zst",
            Compression::Gzip => "tar.gz",
            Compression::None => "tar",
        }
    }
}

impl std::str::FromStr for Compression {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "zstd" => Ok(Compression::Zstd),
            "gzip" => Ok(Compression::Gzip),
            "none" => Ok(Compression::None),
            other => Err(format!(
                "unknown compression {other:?}: use zstd, gzip or none"
            )),
        }
    }
}

#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackupRepositoryStatus {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

impl BackupRepositorySpec {
    /// What is wrong with this spec, in words a user can act on (the API server may not enforce
    /// the schema: old servers do not).
    pub fn validate(&self) -> Result<(), crate::condition::Invalid> {
        match &self.pvc {
            None => Err(crate::condition::Invalid::new(
                "NoBackend",
                "spec.pvc is required: name the PVC that holds the repository (spec.pvc.claimName)",
            )),
            Some(pvc) if pvc.claim_name.is_empty() => Err(crate::condition::Invalid::new(
                "InvalidSpec",
                "spec.pvc.claimName must name a PVC",
            )),
            Some(pvc) => match pvc.sub_path.as_deref() {
                Some(sub) if sub.starts_with('/') || sub.split('/').any(|c| c == "..") => {
                    Err(crate::condition::Invalid::new(
                        "InvalidSpec",
                        format!("spec.pvc.subPath {sub:?} must be a relative path without '..'"),
                    ))
                }
                _ => Ok(()),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compression_defaults_to_zstd() {
        let spec: BackupRepositorySpec =
            serde_json::from_value(serde_json::json!({"pvc": {"claimName": "backups"}})).unwrap();
        assert_eq!(spec.compression, Compression::Zstd);
        assert!(spec.validate().is_ok());
    }

    #[test]
    fn a_repository_without_backend_or_with_an_escaping_sub_path_is_invalid() {
        let none = BackupRepositorySpec::default();
        assert_eq!(none.validate().unwrap_err().reason, "NoBackend");
        let escaping = BackupRepositorySpec {
            pvc: Some(PvcRepository {
                claim_name: "b".into(),
                sub_path: Some("../etc".into()),
            }),
            ..Default::default()
        };
        assert_eq!(escaping.validate().unwrap_err().reason, "InvalidSpec");
    }
}
