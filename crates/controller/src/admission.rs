//! Whether a namespace admits mover pods. They run as root with a few capabilities (see `jobs`),
//! which Pod Security's `baseline` level allows and `restricted` does not; under `restricted` the
//! Job controller could never create the pod and the Backup would sit Running until its Job's
//! deadline. So the namespace's enforced level is read first and such work is refused at once.

use backstop_api::condition::Invalid;

/// The label Pod Security admission enforces a namespace's level from.
pub const ENFORCE_LABEL: &str = "pod-security.kubernetes.io/enforce";

/// Why mover pods would not be admitted in a namespace labelled `labels`, if they would not.
pub fn refusal<'a>(
    namespace: &str,
    mut labels: impl Iterator<Item = (&'a String, &'a String)>,
) -> Option<Invalid> {
    let level = labels.find(|(k, _)| k.as_str() == ENFORCE_LABEL)?.1;
    (level == "restricted").then(|| {
        Invalid::new(
            "PodSecurityRestricted",
            format!(
                "namespace {namespace:?} enforces Pod Security level \"restricted\", which admits no mover pod (they run as root with a few capabilities: DAC_OVERRIDE to read every file; CHOWN, FOWNER, FSETID, MKNOD to restore owners and modes): label it {ENFORCE_LABEL}=baseline"
            ),
        )
    })
}

/// The refusal for `namespace`, read from the cluster.
pub async fn check(ctx: &crate::Context, namespace: &str) -> Result<Option<Invalid>, kube::Error> {
    let namespaces: kube::Api<k8s_openapi::api::core::v1::Namespace> =
        kube::Api::all(ctx.client.clone());
    Ok(namespaces
        .get_opt(namespace)
        .await?
        .and_then(|ns| refusal(namespace, ns.metadata.labels.iter().flatten())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn labels(level: Option<&str>) -> BTreeMap<String, String> {
        level
            .map(|l| (ENFORCE_LABEL.to_string(), l.to_string()))
            .into_iter()
            .collect()
    }

    #[test]
    fn only_restricted_namespaces_refuse_mover_pods() {
        assert_eq!(refusal("a", labels(None).iter()), None);
        assert_eq!(refusal("a", labels(Some("privileged")).iter()), None);
        assert_eq!(refusal("a", labels(Some("baseline")).iter()), None);
        let why = refusal("a", labels(Some("restricted")).iter()).unwrap();
        assert_eq!(why.reason, "PodSecurityRestricted");
        assert!(why.message.contains("=baseline"), "{}", why.message);
    }
}
