//! Every Job that ever exists in a test namespace, seen through a watch: a Job created and deleted
//! again between two looks (a refusal that created and then cleaned up) is still seen, which a
//! list after the fact cannot tell from "never created".

use crate::TestNamespace;
use futures::StreamExt;
use k8s_openapi::api::batch::v1::Job;
use kube::runtime::{WatchStreamExt, watcher};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

/// Job name -> its labels, for every Job seen since the watch started.
type Seen = Arc<Mutex<BTreeMap<String, BTreeMap<String, String>>>>;

pub struct JobsSeen {
    seen: Seen,
    task: tokio::task::JoinHandle<()>,
}

impl TestNamespace {
    /// Starts watching the namespace's Jobs; returns once the watch has listed what exists, so
    /// nothing created afterwards is missed.
    pub async fn watch_jobs(&self) -> anyhow::Result<JobsSeen> {
        let seen = Seen::default();
        let (listed, listed_rx) = tokio::sync::oneshot::channel();
        let mut stream = watcher(self.api::<Job>(), watcher::Config::default())
            .default_backoff()
            .boxed();
        let record = seen.clone();
        let task = tokio::spawn(async move {
            let mut listed = Some(listed);
            while let Some(event) = stream.next().await {
                match event {
                    Ok(watcher::Event::Apply(job) | watcher::Event::InitApply(job))
                    | Ok(watcher::Event::Delete(job)) => {
                        let name = job.metadata.name.unwrap_or_default();
                        let labels = job.metadata.labels.unwrap_or_default();
                        record
                            .lock()
                            .unwrap_or_else(|poisoned| poisoned.into_inner())
                            .insert(name, labels);
                    }
                    Ok(watcher::Event::InitDone) => {
                        if let Some(listed) = listed.take() {
                            let _ = listed.send(());
                        }
                    }
                    Ok(watcher::Event::Init) | Err(_) => {}
                }
            }
        });
        tokio::time::timeout(std::time::Duration::from_secs(30), listed_rx)
            .await
            .map_err(|_| anyhow::anyhow!("the Job watch did not list in 30s"))??;
        Ok(JobsSeen { seen, task })
    }
}

impl JobsSeen {
    /// The names of every Job seen, sorted.
    pub fn names(&self) -> Vec<String> {
        self.matching(|_| true)
    }

    /// The names of the Jobs seen whose label `key` was `value`.
    pub fn labelled(&self, key: &str, value: &str) -> Vec<String> {
        self.matching(|labels| labels.get(key).is_some_and(|v| v == value))
    }

    /// Jobs of the work, that is: a repository's sync Jobs (the repository's own, every few
    /// minutes) are not counted.
    fn matching(&self, keep: impl Fn(&BTreeMap<String, String>) -> bool) -> Vec<String> {
        self.seen
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .iter()
            .filter(|(_, labels)| labels.get(crate::ROLE).is_none_or(|r| r != "sync"))
            .filter(|(_, labels)| keep(labels))
            .map(|(name, _)| name.clone())
            .collect()
    }
}

impl Drop for JobsSeen {
    fn drop(&mut self) {
        self.task.abort();
    }
}
