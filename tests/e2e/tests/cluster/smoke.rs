//! The foundation works end to end: a PVC bound to a hostPath volume holding known files, a Job from
//! the Backstop image that mounts it read-only and counts, and the count read back from the pod's
//! termination message.

use backstop_e2e::{TestNamespace, backstop_image, cluster, job_result};
use backstop_mover::inventory::Inventory;
use k8s_openapi::api::batch::v1::Job;
use kube::api::PostParams;
use std::os::unix::fs::symlink;
use std::time::Duration;

#[tokio::test]
#[ignore = "needs a cluster: run `make test`, or hack/cluster up + KUBECONFIG + --ignored"]
async fn mover_counts_files_of_a_read_only_volume_in_a_job() -> anyhow::Result<()> {
    let client = cluster().await?;
    let ns = TestNamespace::create(&client, "e2e-smoke").await?;
    let data = ns.volume("data", &[("app", "smoke")]).await?;
    std::fs::create_dir_all(data.join("nested/deeper"))?;
    std::fs::create_dir_all(data.join("empty"))?;
    std::fs::write(data.join("a.txt"), "alpha\n")?;
    std::fs::write(data.join("nested/b.bin"), vec![1u8; 4096])?;
    std::fs::write(data.join("nested/deeper/c"), "")?;
    symlink("nested/b.bin", data.join("link"))?;

    let job: Job = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "count"},
        "spec": {
            "backoffLimit": 0,
            "template": {"spec": {
                "restartPolicy": "Never",
                "containers": [{
                    "name": "mover",
                    "image": backstop_image(),
                    "imagePullPolicy": "Never",
                    "args": ["mover", "count", "/data", "--termination-log", "/dev/termination-log"],
                    "volumeMounts": [{"name": "data", "mountPath": "/data", "readOnly": true}]
                }],
                "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": "data", "readOnly": true}}]
            }}
        }
    }))?;
    ns.api::<Job>().create(&PostParams::default(), &job).await?;

    let message = job_result(&ns, "count", Duration::from_secs(120)).await?;
    let counted: Inventory = serde_json::from_str(&message)?;

    assert_eq!(
        counted,
        Inventory {
            files: 3,
            dirs: 3,
            symlinks: 1,
            others: 0,
            bytes: 6 + 4096
        }
    );
    Ok(())
}
