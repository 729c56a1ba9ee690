//! Which Secrets mover pods may be given. Whoever may create a BackupRepository names a Secret
//! and an endpoint, and the mover sends that Secret's values to that endpoint (the access key in
//! the clear, in the Authorization header). Without an opt-in, a user allowed to create Backstop
//! resources but not to read Secrets could point `accessKeyIdKey` at any Secret's key and an
//! endpoint at their own server. So a Secret is only ever handed to a mover pod when it carries
//! the label `backstop.dev/credentials: "true"`, which its owner sets. The operator reads only
//! the Secret's metadata (a metadata-only request), never its data.
//!
//! The same holds for the command strategy: a command container (a policy's or a Backup's
//! `strategy.command`, its `restore`, a Restore's `spec.command`) runs an image of its writer's
//! choosing with open egress, so every Secret its environment names (`secretKeyRef`) must be
//! opted in, or the backup or restore is refused before any Job exists.

use backstop_api::BackupRepository;
use backstop_api::condition::Invalid;
use backstop_api::strategy::CommandContainer;
use backstop_api::waiting::{Refusal, WaitingFor};
use k8s_openapi::api::core::v1::Secret;
use kube::{Api, ResourceExt};

/// The label a Secret needs before mover pods may be given it.
pub const OPT_IN_LABEL: &str = "backstop.dev/credentials";

/// Why `repo`'s Secrets may not be given to a mover pod, if they may not.
pub async fn refusal(
    ctx: &crate::Context,
    repo: &BackupRepository,
) -> Result<Option<Invalid>, kube::Error> {
    let s3 = repo.spec.s3.iter().flat_map(|s3| {
        std::iter::once((
            "spec.s3.credentialsSecretRef",
            &s3.credentials_secret_ref.name,
        ))
        .chain(
            s3.ca_secret_ref
                .iter()
                .map(|ca| ("spec.s3.caSecretRef", &ca.name)),
        )
    });
    // A password is as much a secret: named at will, it could be tried against a repository
    // its namer controls.
    let password = repo
        .spec
        .password_secret_ref
        .iter()
        .map(|p| ("spec.passwordSecretRef", &p.name));
    let named: Vec<(String, &str)> = s3
        .chain(password)
        .map(|(field, name)| (field.to_string(), name.as_str()))
        .collect();
    check(ctx, &repo.namespace().unwrap_or_default(), named).await
}

/// The Secrets `container` (written at `field`) takes into its environment, with where each is
/// named.
pub fn named_by<'a>(container: &'a CommandContainer, field: &str) -> Vec<(String, &'a str)> {
    container
        .env
        .iter()
        .enumerate()
        .filter_map(|(i, var)| {
            let secret = var.value_from.as_ref()?.secret_key_ref.as_ref()?;
            Some((
                format!("{field}.env[{i}] {}", var.name),
                secret.name.as_str(),
            ))
        })
        .collect()
}

/// Why the command `container` (written at `field`) may not run in `namespace` with the
/// Secrets its environment names, if it may not: a Secret not there yet is waited for (applied
/// with the Backup or Restore, it comes a moment later); one there without the opt-in fails.
pub async fn command_refusal(
    ctx: &crate::Context,
    namespace: &str,
    container: &CommandContainer,
    field: &str,
) -> Result<Option<Refusal>, kube::Error> {
    let why = check(ctx, namespace, named_by(container, field)).await?;
    Ok(why.map(command_refusal_of))
}

/// A missing Secret is waited for; any other refusal fails.
fn command_refusal_of(why: Invalid) -> Refusal {
    match why.reason.as_str() {
        MISSING => Refusal::Wait {
            on: WaitingFor::Secret,
            why,
        },
        _ => Refusal::Fail(why),
    }
}

/// The reason of a refusal whose Secret does not exist.
const MISSING: &str = "CredentialsMissing";

/// The first refusal among the Secrets `named` (field, name) in `namespace`.
async fn check(
    ctx: &crate::Context,
    namespace: &str,
    named: Vec<(String, &str)>,
) -> Result<Option<Invalid>, kube::Error> {
    if named.is_empty() {
        return Ok(None);
    }
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), namespace);
    for (field, name) in named {
        let labels = match secrets.get_metadata(name).await {
            Ok(meta) => meta.metadata.labels.unwrap_or_default(),
            Err(kube::Error::Api(s)) if s.code == 404 => {
                return Ok(Some(Invalid::new(
                    MISSING,
                    format!("Secret {name:?} ({field}) not found in namespace {namespace:?}"),
                )));
            }
            Err(e) => return Err(e),
        };
        if let Some(why) = not_opted_in(name, &field, &labels) {
            return Ok(Some(why));
        }
    }
    Ok(None)
}

/// The refusal for Secret `name` (named in `field`) labelled `labels`, if any.
pub fn not_opted_in(
    name: &str,
    field: &str,
    labels: &std::collections::BTreeMap<String, String>,
) -> Option<Invalid> {
    (labels.get(OPT_IN_LABEL).map(String::as_str) != Some("true")).then(|| {
        Invalid::new(
            "SecretNotOptedIn",
            format!(
                "Secret {name:?} ({field}) is not labelled {OPT_IN_LABEL}=true: Backstop gives mover pods only Secrets their owners opted in; label it (kubectl label secret {name} {OPT_IN_LABEL}=true)"
            ),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_secret_a_command_takes_into_its_environment_is_named() {
        let container: CommandContainer = serde_json::from_value(serde_json::json!({
            "image": "pg:15", "command": ["pg_dump"],
            "env": [{"name": "PGHOST", "value": "db"},
                    {"name": "PGPASSWORD", "valueFrom": {"secretKeyRef": {"name": "db", "key": "password"}}},
                    {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                    {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "cloud", "key": "token"}}}]
        }))
        .unwrap();
        assert_eq!(
            named_by(&container, "spec.command"),
            vec![
                ("spec.command.env[1] PGPASSWORD".to_string(), "db"),
                ("spec.command.env[3] TOKEN".to_string(), "cloud"),
            ]
        );
        assert!(named_by(&CommandContainer::default(), "x").is_empty());
    }

    #[test]
    fn a_missing_secret_is_waited_for_one_not_opted_in_fails() {
        let missing = Invalid::new(MISSING, "Secret \"db\" not found");
        assert!(matches!(
            command_refusal_of(missing),
            Refusal::Wait {
                on: WaitingFor::Secret,
                ..
            }
        ));
        let labels = std::collections::BTreeMap::new();
        let not_labelled = not_opted_in("db", "spec.command.env[0] PGPASSWORD", &labels).unwrap();
        assert!(matches!(command_refusal_of(not_labelled), Refusal::Fail(_)));
    }

    #[test]
    fn only_secrets_labelled_for_backstop_may_be_used() {
        let mut labels = std::collections::BTreeMap::new();
        let why = not_opted_in("db-admin", "spec.passwordSecretRef", &labels).unwrap();
        assert_eq!(why.reason, "SecretNotOptedIn");
        assert!(
            why.message.contains("(spec.passwordSecretRef)"),
            "{}",
            why.message
        );
        assert!(
            why.message
                .contains("kubectl label secret db-admin backstop.dev/credentials=true")
        );
        labels.insert(OPT_IN_LABEL.into(), "yes".into());
        assert!(not_opted_in("k", "caSecretRef", &labels).is_some());
        labels.insert(OPT_IN_LABEL.into(), "true".into());
        assert_eq!(not_opted_in("k", "caSecretRef", &labels), None);
    }
}
