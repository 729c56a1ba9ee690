//! A watch whose lists come from the API server's watch cache, decoded while they arrive.
//!
//! kube's watcher lists in pages of 500, and a page with a limit is read from etcd: at 100,000
//! Backups that took the API server 35 s alone and 55-60 s while 10,000 policy statuses were
//! being written (controller bench at 10x), and the catch-up runs and every policy's retention
//! waited for it. A list at resourceVersion 0 is answered from the watch cache, which has the
//! objects decoded already; it comes in one response, since the cache does not page (Kubernetes
//! 1.20), so it is decoded as it arrives, one object at a time, each made lean before the next:
//! a whole response buffered and decoded at once would be ~100 MB of JSON and 350 MB of objects.
//! Like kube's watcher, a list is followed by a watch from its resourceVersion, the watch is
//! resumed from the last version seen, and a version the API server no longer has (410 Gone)
//! means a new list.

use futures::{AsyncReadExt, StreamExt};
use kube::Api;
use kube::api::{ListParams, WatchEvent, WatchParams};
use kube::runtime::watcher::{Error, Event, Result};
use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use std::time::Duration;
use tokio::sync::mpsc;

/// Objects decoded and not yet taken by the watch's followers.
const DECODED_BUFFER: usize = 256;
/// Chunks of the response read and not yet decoded.
const CHUNKS_BUFFER: usize = 16;
const CHUNK_BYTES: usize = 64 * 1024;
const FIRST_BACKOFF: Duration = Duration::from_millis(500);
const MOST_BACKOFF: Duration = Duration::from_secs(30);
/// The API server ends each watch after this long, as kube's watcher asks: a quiet watch is
/// renewed from its version instead of lasting until the server's own limit (30-60 minutes).
const WATCH_SECONDS: u32 = 290;

/// Every `K` that `api` sees (with `labels`, a label selector, if any), as kube's watcher gives
/// them, lean (`crate::lean`). Runs until the stream is dropped; errors are told and retried
/// with backoff.
pub(crate) fn watch<K: crate::Watched>(
    api: Api<K>,
    labels: Option<String>,
) -> impl futures::Stream<Item = Result<Event<K>>> + Send + 'static {
    let (events, taken) = mpsc::channel(DECODED_BUFFER);
    // Ends when the stream is dropped, even in a quiet watch with nothing to send.
    let dropped = events.clone();
    tokio::spawn(async move {
        tokio::select! {
            () = follow(api, labels, events) => {}
            () = dropped.closed() => {}
        }
    });
    futures::stream::unfold(taken, |mut taken| async move {
        let event = taken.recv().await?;
        Some((event, taken))
    })
}

type Events<K> = mpsc::Sender<Result<Event<K>>>;

/// Lists and watches until nobody takes the events any more.
async fn follow<K: crate::Watched>(api: Api<K>, labels: Option<String>, events: Events<K>) {
    let mut watch_params = WatchParams::default().timeout(WATCH_SECONDS);
    if let Some(labels) = &labels {
        watch_params = watch_params.labels(labels);
    }
    let mut backoff = FIRST_BACKOFF;
    'list: loop {
        if events.send(Ok(Event::Init)).await.is_err() {
            return;
        }
        let mut version = match list(&api, labels.as_deref(), &events).await {
            Ok(Some(version)) => version,
            // Nobody takes the events any more.
            Ok(None) => return,
            Err(e) => {
                if !failed(&api, &events, e, &mut backoff).await {
                    return;
                }
                continue 'list;
            }
        };
        if events.send(Ok(Event::InitDone)).await.is_err() {
            return;
        }
        backoff = FIRST_BACKOFF;
        loop {
            let stream = match api.watch(&watch_params, &version).await {
                Ok(stream) => stream,
                Err(e) => {
                    if !failed(&api, &events, Error::WatchStartFailed(e), &mut backoff).await {
                        return;
                    }
                    continue;
                }
            };
            futures::pin_mut!(stream);
            while let Some(event) = stream.next().await {
                let event = match event {
                    Ok(WatchEvent::Added(obj) | WatchEvent::Modified(obj)) => {
                        Ok(seen(obj, Event::Apply))
                    }
                    Ok(WatchEvent::Deleted(obj)) => Ok(seen(obj, Event::Delete)),
                    Ok(WatchEvent::Bookmark(mark)) => {
                        version = mark.metadata.resource_version;
                        continue;
                    }
                    Ok(WatchEvent::Error(e)) if e.code == 410 => {
                        // The version is gone from the API server's history: list again.
                        tracing::debug!(resource = %api.resource_url(), "watch expired; listing again");
                        continue 'list;
                    }
                    Ok(WatchEvent::Error(e)) => Err(Error::WatchError(e)),
                    Err(e) => Err(Error::WatchFailed(e)),
                };
                let (event, at) = match event {
                    Ok(seen) => seen,
                    Err(e) => {
                        if !failed(&api, &events, e, &mut backoff).await {
                            return;
                        }
                        break;
                    }
                };
                if events.send(Ok(event)).await.is_err() {
                    return;
                }
                if let Some(at) = at {
                    version = at;
                }
                backoff = FIRST_BACKOFF;
            }
        }
    }
}

/// The event for `obj` as the watch saw it, lean, with its resourceVersion.
fn seen<K: crate::Watched>(mut obj: K, event: fn(K) -> Event<K>) -> (Event<K>, Option<String>) {
    crate::lean(&mut obj);
    let at = obj.meta().resource_version.clone();
    (event(obj), at)
}

/// Logs `error` and tells it to `events`, then sleeps `backoff`, doubling it for the next time
/// (up to `MOST_BACKOFF`): false when nobody takes the events any more.
async fn failed<K: crate::Watched>(
    api: &Api<K>,
    events: &Events<K>,
    error: Error,
    backoff: &mut Duration,
) -> bool {
    tracing::warn!(resource = %api.resource_url(), %error, "watch: again after {backoff:?}");
    if events.send(Err(error)).await.is_err() {
        return false;
    }
    tokio::time::sleep(*backoff).await;
    *backoff = (*backoff * 2).min(MOST_BACKOFF);
    true
}

/// Lists every `K` from the watch cache, telling each one (lean) to `events` as it is decoded:
/// the list's resourceVersion, or None when nobody takes the events any more.
async fn list<K: crate::Watched>(
    api: &Api<K>,
    labels: Option<&str>,
    events: &Events<K>,
) -> Result<Option<String>> {
    let mut params = ListParams::default().match_any();
    if let Some(labels) = labels {
        params = params.labels(labels);
    }
    let request = kube::core::Request::new(api.resource_url())
        .list(&params)
        .map_err(|e| Error::InitialListFailed(kube::Error::BuildRequest(e)))?;
    let mut body = api
        .clone()
        .into_client()
        .request_stream(request)
        .await
        .map_err(Error::InitialListFailed)?;
    let (chunks, received) = mpsc::channel::<std::io::Result<Vec<u8>>>(CHUNKS_BUFFER);
    let decoded = events.clone();
    let decoding = tokio::task::spawn_blocking(move || {
        let reader = std::io::BufReader::new(Chunks {
            received,
            current: std::io::Cursor::new(Vec::new()),
        });
        decode_list(reader, |mut obj: K| {
            crate::lean(&mut obj);
            decoded.blocking_send(Ok(Event::InitApply(obj))).is_ok()
        })
    });
    loop {
        let mut chunk = vec![0; CHUNK_BYTES];
        let read = body.read(&mut chunk).await;
        let end = matches!(read, Ok(0) | Err(_));
        if let Ok(n) = read {
            chunk.truncate(n);
        }
        // The decoder stopped early (a malformed response, or nobody takes the objects).
        if chunks.send(read.map(|_| chunk)).await.is_err() || end {
            break;
        }
    }
    drop(chunks);
    let decoded = decoding
        .await
        .map_err(|e| Error::InitialListFailed(kube::Error::Service(e.into())))?;
    match decoded {
        Ok(Listed::Complete(Some(version))) => Ok(Some(version)),
        Ok(Listed::Complete(None)) => Err(Error::NoResourceVersion),
        Ok(Listed::Stopped) => Ok(None),
        Err(e) => Err(Error::InitialListFailed(kube::Error::SerdeError(e))),
    }
}

/// The response's bytes, as the async side reads them, for the blocking decoder.
struct Chunks {
    received: mpsc::Receiver<std::io::Result<Vec<u8>>>,
    current: std::io::Cursor<Vec<u8>>,
}

impl std::io::Read for Chunks {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        loop {
            let n = self.current.read(buf)?;
            if n > 0 || buf.is_empty() {
                return Ok(n);
            }
            match self.received.blocking_recv() {
                Some(chunk) => self.current = std::io::Cursor::new(chunk?),
                None => return Ok(0),
            }
        }
    }
}

/// How a list's decoding ended.
#[derive(Debug, PartialEq)]
enum Listed {
    /// Every item was told; the list's resourceVersion.
    Complete(Option<String>),
    /// `each` asked to stop.
    Stopped,
}

/// Decodes a Kubernetes list (`{"items": [...], "metadata": {"resourceVersion": ...}, ...}`, keys
/// in any order) from `reader`, telling each item to `each` as soon as it is decoded; `each`
/// returns false to stop.
fn decode_list<K, R>(
    reader: R,
    each: impl FnMut(K) -> bool,
) -> std::result::Result<Listed, serde_json::Error>
where
    K: serde::de::DeserializeOwned,
    R: std::io::Read,
{
    let mut deserializer = serde_json::Deserializer::from_reader(reader);
    let mut list = ListSeed {
        each,
        stopped: false,
        version: None,
        _item: std::marker::PhantomData,
    };
    let decoded = (&mut list).deserialize(&mut deserializer);
    if list.stopped {
        return Ok(Listed::Stopped);
    }
    decoded?;
    deserializer.end()?;
    Ok(Listed::Complete(list.version))
}

struct ListSeed<K, F> {
    each: F,
    stopped: bool,
    version: Option<String>,
    _item: std::marker::PhantomData<fn() -> K>,
}

#[derive(serde::Deserialize)]
struct ListMeta {
    #[serde(rename = "resourceVersion")]
    resource_version: Option<String>,
}

impl<'de, K, F> DeserializeSeed<'de> for &mut ListSeed<K, F>
where
    K: serde::de::DeserializeOwned,
    F: FnMut(K) -> bool,
{
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de, K, F> Visitor<'de> for &mut ListSeed<K, F>
where
    K: serde::de::DeserializeOwned,
    F: FnMut(K) -> bool,
{
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a Kubernetes list")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(key) = map.next_key::<String>()? {
            match key.as_str() {
                "items" => map.next_value_seed(Items(&mut *self))?,
                "metadata" => self.version = map.next_value::<ListMeta>()?.resource_version,
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(())
    }
}

struct Items<'a, K, F>(&'a mut ListSeed<K, F>);

impl<'de, K, F> DeserializeSeed<'de> for Items<'_, K, F>
where
    K: serde::de::DeserializeOwned,
    F: FnMut(K) -> bool,
{
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_seq(self)
    }
}

impl<'de, K, F> Visitor<'de> for Items<'_, K, F>
where
    K: serde::de::DeserializeOwned,
    F: FnMut(K) -> bool,
{
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a list's items")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while let Some(item) = seq.next_element::<K>()? {
            if !(self.0.each)(item) {
                self.0.stopped = true;
                return Err(serde::de::Error::custom(
                    "stopped: nobody takes the objects",
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::ConfigMap;

    fn names(json: &str) -> (std::result::Result<Listed, String>, Vec<String>) {
        let mut seen = Vec::new();
        let listed = decode_list(json.as_bytes(), |c: ConfigMap| {
            seen.push(c.metadata.name.unwrap_or_default());
            true
        })
        .map_err(|e| e.to_string());
        (listed, seen)
    }

    #[test]
    fn items_are_told_in_order_with_the_lists_version_wherever_it_is() {
        let items = r#"[{"metadata":{"name":"a"}},{"metadata":{"name":"b"},"data":{"k":"v"}}]"#;
        for json in [
            format!(
                r#"{{"apiVersion":"v1","kind":"ConfigMapList","metadata":{{"resourceVersion":"42"}},"items":{items}}}"#
            ),
            format!(
                r#"{{"items":{items},"kind":"ConfigMapList","metadata":{{"continue":"","resourceVersion":"42"}},"apiVersion":"v1"}}"#
            ),
        ] {
            let (listed, seen) = names(&json);
            assert_eq!(listed, Ok(Listed::Complete(Some("42".into()))));
            assert_eq!(seen, ["a", "b"]);
        }
    }

    #[test]
    fn an_empty_list_and_one_without_a_version() {
        assert_eq!(
            names(r#"{"items":[],"metadata":{"resourceVersion":"7"}}"#),
            (Ok(Listed::Complete(Some("7".into()))), vec![])
        );
        assert_eq!(
            names(r#"{"items":null,"metadata":{}}"#).0,
            Err("invalid type: null, expected a list's items at line 1 column 13".into())
        );
        assert_eq!(
            names(r#"{"items":[],"metadata":{}}"#),
            (Ok(Listed::Complete(None)), vec![])
        );
    }

    #[test]
    fn a_torn_or_malformed_response_is_an_error_after_the_items_before_it() {
        let (listed, seen) = names(r#"{"items":[{"metadata":{"name":"a"}},{"metadata":{"na"#);
        assert!(listed.is_err(), "{listed:?}");
        assert_eq!(seen, ["a"]);
        let (listed, seen) = names(r#"{"items":[{"metadata":{"name":"a"}},7]}"#);
        assert!(listed.is_err(), "{listed:?}");
        assert_eq!(seen, ["a"]);
        assert!(names(r#"{"items":[]} trailing"#).0.is_err());
    }

    #[test]
    fn decoding_stops_when_asked() {
        let json = r#"{"items":[{"metadata":{"name":"a"}},{"metadata":{"name":"b"}},{"metadata":{"name":"c"}}],"metadata":{"resourceVersion":"1"}}"#;
        let mut seen = Vec::new();
        let listed = decode_list(json.as_bytes(), |c: ConfigMap| {
            seen.push(c.metadata.name.unwrap_or_default());
            seen.len() < 2
        });
        assert_eq!(listed.map_err(|e| e.to_string()), Ok(Listed::Stopped));
        assert_eq!(seen, ["a", "b"]);
    }

    /// A PVC as the API server sends it, at `version`, with the field bookkeeping a lean copy
    /// drops.
    fn claim(name: &str, version: u32) -> String {
        format!(
            r#"{{"metadata":{{"name":"{name}","namespace":"ns","resourceVersion":"{version}","managedFields":[{{"manager":"kubectl"}}]}}}}"#
        )
    }

    fn told(event: &Event<PersistentVolumeClaim>) -> String {
        let name = |c: &PersistentVolumeClaim| {
            assert_eq!(c.metadata.managed_fields, None, "not lean");
            c.metadata.name.clone().unwrap_or_default()
        };
        match event {
            Event::Init => "init".into(),
            Event::InitApply(c) => format!("list {}", name(c)),
            Event::InitDone => "listed".into(),
            Event::Apply(c) => format!("apply {}", name(c)),
            Event::Delete(c) => format!("delete {}", name(c)),
        }
    }

    use k8s_openapi::api::core::v1::PersistentVolumeClaim;

    #[tokio::test]
    async fn lists_from_the_cache_watches_from_its_version_resumes_and_lists_again_when_gone() {
        let (ctx, mut server) = crate::fixtures::mocked();
        let api: Api<PersistentVolumeClaim> = Api::namespaced(ctx.client.clone(), "ns");
        let mut events = Box::pin(watch(api, Some("app=db".into())));
        let path = "/api/v1/namespaces/ns/persistentvolumeclaims";
        let list = |items: &[String], version: u32| {
            format!(
                r#"{{"kind":"PersistentVolumeClaimList","metadata":{{"resourceVersion":"{version}"}},"items":[{}]}}"#,
                items.join(",")
            )
        };
        let api_server = tokio::spawn(async move {
            let mut asked = Vec::new();
            asked.push(
                server
                    .answer_raw(200, &list(&[claim("a", 5), claim("b", 6)], 10))
                    .await,
            );
            let added = format!(r#"{{"type":"ADDED","object":{}}}"#, claim("c", 11));
            let deleted = format!(r#"{{"type":"DELETED","object":{}}}"#, claim("a", 12));
            asked.push(
                server
                    .answer_raw(200, &format!("{added}\n{deleted}\n"))
                    .await,
            );
            // The API server ended the watch: it is resumed from the last version seen.
            let gone = r#"{"type":"ERROR","object":{"kind":"Status","apiVersion":"v1","status":"Failure","reason":"Expired","code":410,"message":"too old"}}"#;
            asked.push(server.answer_raw(200, gone).await);
            asked.push(server.answer_raw(200, &list(&[claim("c", 11)], 20)).await);
            asked.push(server.answer_raw(200, "").await);
            asked
        });
        let mut seen = Vec::new();
        while seen.len() < 9 {
            let event = events.next().await.expect("an event").expect("no error");
            seen.push(told(&event));
        }
        assert_eq!(
            seen,
            [
                "init", "list a", "list b", "listed", "apply c", "delete a", "init", "list c",
                "listed"
            ]
        );
        drop(events);
        let asked = api_server.await.expect("the API server's side");
        let has = |asked: &str, pair: &str| asked.split(['?', '&']).any(|p| p == pair);
        let listed_from_cache = |asked: &str| {
            asked.starts_with(&format!("GET {path}?"))
                && has(asked, "resourceVersion=0")
                && has(asked, "labelSelector=app%3Ddb")
                && !asked.contains("limit=")
                && !asked.contains("watch=")
        };
        let watched_from = |asked: &str, version: &str| {
            has(asked, "watch=true")
                && has(asked, &format!("resourceVersion={version}"))
                && has(asked, "labelSelector=app%3Ddb")
                && has(asked, "timeoutSeconds=290")
        };
        assert!(listed_from_cache(&asked[0]), "{}", asked[0]);
        assert!(watched_from(&asked[1], "10"), "{}", asked[1]);
        assert!(watched_from(&asked[2], "12"), "resumed: {}", asked[2]);
        assert!(listed_from_cache(&asked[3]), "listed again: {}", asked[3]);
        assert!(watched_from(&asked[4], "20"), "{}", asked[4]);
    }

    #[test]
    fn chunks_read_across_boundaries_and_end() {
        use std::io::Read;
        let (sender, received) = mpsc::channel(4);
        for part in ["ab", "", "cde"] {
            sender.try_send(Ok(part.as_bytes().to_vec())).unwrap();
        }
        drop(sender);
        let mut chunks = Chunks {
            received,
            current: std::io::Cursor::new(Vec::new()),
        };
        let mut all = String::new();
        chunks.read_to_string(&mut all).unwrap();
        assert_eq!(all, "abcde");
    }
}
