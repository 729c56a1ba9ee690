//! The CRDs as YAML, generated from the Rust types (`deploy/crds.yaml` is this output; a test
//! fails when the committed file is stale).

use backstop_api::{Backup, BackupPolicy, BackupRepository, Restore};
use kube::CustomResourceExt;

pub fn crds_yaml() -> anyhow::Result<String> {
    let mut out = String::new();
    for crd in [
        BackupRepository::crd(),
        BackupPolicy::crd(),
        Backup::crd(),
        Restore::crd(),
    ] {
        out.push_str("---\n");
        out.push_str(&serde_yaml::to_string(&crd)?);
    }
    Ok(out)
}

pub fn print_crds() -> anyhow::Result<()> {
    print!("{}", crds_yaml()?);
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn committed_crds_match_the_types() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../deploy/crds.yaml");
        let committed = std::fs::read_to_string(path).unwrap_or_default();
        assert!(
            committed == super::crds_yaml().unwrap(),
            "deploy/crds.yaml is stale: run `cargo run -q -p backstop -- crds > deploy/crds.yaml`"
        );
    }
}
