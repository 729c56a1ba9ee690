//! Debian's Prometheus on a loopback port, scraping the operator with Backstop's shipped alert
//! rules (`deploy/monitoring/alerts.yaml`), for tests that prove an alert fires.

use crate::ports::{ReservedPort, wait_serving};
use crate::{http_get, repo_root, wait_for, wait_until};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// Debian's Prometheus on a loopback port, killed when dropped.
pub struct Prometheus {
    child: Child,
    pub addr: String,
    _port: ReservedPort,
    _dir: tempfile::TempDir,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn start_prometheus(target: &str) -> anyhow::Result<Prometheus> {
    let dir = tempfile::tempdir()?;
    let rules = repo_root().join("deploy/monitoring/alerts.yaml");
    let port = ReservedPort::new()?;
    let addr = port.addr();
    let config = format!(
        "global: {{scrape_interval: 1s, evaluation_interval: 1s}}\n\
         rule_files: [{}]\n\
         scrape_configs:\n  - job_name: backstop\n    static_configs: [{{targets: ['{target}']}}]\n",
        rules.display()
    );
    std::fs::write(dir.path().join("prometheus.yml"), config)?;
    let child = Command::new("prometheus")
        .arg(format!(
            "--config.file={}",
            dir.path().join("prometheus.yml").display()
        ))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.path().join("data").display()
        ))
        .arg(format!("--web.listen-address={addr}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| anyhow::anyhow!("starting prometheus (Debian package `prometheus`): {e}"))?;
    let mut prometheus = Prometheus {
        child,
        addr,
        _port: port,
        _dir: dir,
    };
    wait_serving(&mut prometheus.child, "prometheus", || {
        http_get(&prometheus.addr, "/-/ready").is_ok()
    })?;
    Ok(prometheus)
}

impl Prometheus {
    /// Waits until Prometheus has scraped the operator once.
    pub async fn scraping(&self) -> anyhow::Result<()> {
        wait_until(
            Duration::from_secs(60),
            "Prometheus to scrape the operator",
            || async {
                let body = http_get(
                    &self.addr,
                    "/api/v1/query?query=up%7Bjob%3D%22backstop%22%7D",
                )
                .unwrap_or_default();
                Ok(body.contains(r#""value":["#) && body.contains(r#","1"]"#))
            },
        )
        .await
    }

    /// Waits until `alert` fires for the policy `namespace/policy`; returns it.
    pub async fn firing(
        &self,
        alert: &str,
        namespace: &str,
        policy: &str,
        timeout: Duration,
    ) -> anyhow::Result<serde_json::Value> {
        wait_for(timeout, &format!("{alert} to fire"), || async {
            let body: serde_json::Value =
                serde_json::from_str(&http_get(&self.addr, "/api/v1/alerts")?)?;
            Ok(body["data"]["alerts"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|a| {
                    a["labels"]["alertname"] == alert
                        && a["labels"]["namespace"] == namespace
                        && a["labels"]["policy"] == policy
                        && a["state"] == "firing"
                })
                .cloned())
        })
        .await
    }
}
