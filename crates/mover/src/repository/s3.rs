//! An S3-compatible repository (AWS S3, MinIO, Ceph RGW, Garage...). Artifacts are streamed as
//! multipart uploads: a few parts are in memory at once whatever the volume's size, and an upload
//! that fails or is abandoned is aborted, so no object appears under its key. Transient errors
//! (connection failures, 5xx, 429) are retried with exponential backoff.

use super::{Listed, Reason, Repository, RepositoryError, StoreFailure, Upload, check_key};
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path;
use object_store::{
    BackoffConfig, Certificate, ClientOptions, MultipartUpload, ObjectStore, ObjectStoreExt,
    PutPayload, RetryConfig,
};
use std::io::{self, Read, Write};
use std::sync::Arc;
use std::time::Duration;
use tokio::runtime::{Handle, Runtime};
use tokio::task::JoinSet;

/// Parts uploaded at once; with the part being filled, `PARTS_IN_FLIGHT + 1` parts are in memory.
const PARTS_IN_FLIGHT: usize = 2;
/// The first parts' size. S3 allows 10,000 parts of at least 5 MiB (but the last); the size
/// doubles every 1,000 parts so that any volume fits (80 GiB in 8 MiB parts, then 16 MiB...).
const FIRST_PART_SIZE: usize = 8 << 20;
const PARTS_PER_SIZE: usize = 1000;

/// Where the repository is and how to reach it.
#[derive(Debug, Clone, Default)]
pub struct S3Config {
    /// e.g. `https://minio.example:9000`; AWS when empty.
    pub endpoint: Option<String>,
    pub bucket: String,
    /// Keys are stored under this prefix (no leading or trailing `/` needed).
    pub prefix: String,
    pub region: Option<String>,
    /// `https://endpoint/bucket/key` instead of `https://bucket.endpoint/key`.
    pub force_path_style: bool,
    pub access_key_id: String,
    pub secret_access_key: String,
    pub session_token: Option<String>,
    /// PEM file with the CA certificate(s) that sign the endpoint's certificate.
    pub ca_file: Option<std::path::PathBuf>,
    pub insecure_skip_tls_verify: bool,
    /// How long one request is retried for before the operation fails.
    pub retry_timeout: Duration,
}

pub struct S3Repository {
    store: Arc<AmazonS3>,
    prefix: String,
    location: Location,
    runtime: Runtime,
}

/// Which bucket at which endpoint: what every error message names.
#[derive(Clone)]
struct Location {
    bucket: String,
    endpoint: String,
}

impl Location {
    /// Turns an object store error into one that says what to do about it.
    fn failure(&self, err: object_store::Error) -> io::Error {
        classify(err, &self.bucket, &self.endpoint).into_io()
    }
}

impl S3Repository {
    pub fn new(config: &S3Config) -> Result<Self, StoreFailure> {
        let invalid = |message: String| StoreFailure {
            reason: Reason::InvalidSpec,
            message,
        };
        if config.access_key_id.is_empty() || config.secret_access_key.is_empty() {
            return Err(StoreFailure {
                reason: Reason::CredentialsMissing,
                message: "no S3 credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (the keys of the Secret named in credentialsSecretRef)".into(),
            });
        }
        // One TLS provider for the process (kube's too); an error only says one is installed.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let endpoint = config.endpoint.clone().unwrap_or_default();
        let mut options = ClientOptions::new()
            .with_allow_http(endpoint.starts_with("http://"))
            .with_connect_timeout(Duration::from_secs(10))
            .with_timeout(Duration::from_secs(120))
            .with_allow_invalid_certificates(config.insecure_skip_tls_verify);
        if let Some(ca) = &config.ca_file {
            let pem = std::fs::read(ca)
                .map_err(|e| invalid(format!("reading the CA bundle {}: {e}", ca.display())))?;
            let certs = Certificate::from_pem_bundle(&pem)
                .map_err(|e| invalid(format!("the CA bundle {}: {e}", ca.display())))?;
            if certs.is_empty() {
                return Err(invalid(format!(
                    "the CA bundle {} holds no PEM certificate",
                    ca.display()
                )));
            }
            for cert in certs {
                options = options.with_root_certificate(cert);
            }
        }
        let mut builder = AmazonS3Builder::new()
            .with_bucket_name(&config.bucket)
            .with_region(config.region.as_deref().unwrap_or("us-east-1"))
            .with_access_key_id(&config.access_key_id)
            .with_secret_access_key(&config.secret_access_key)
            .with_virtual_hosted_style_request(!config.force_path_style)
            .with_client_options(options)
            .with_retry(RetryConfig {
                backoff: BackoffConfig {
                    init_backoff: Duration::from_millis(200),
                    max_backoff: Duration::from_secs(10),
                    base: 2.0,
                },
                max_retries: 10,
                retry_timeout: config.retry_timeout,
            });
        if !endpoint.is_empty() {
            builder = builder.with_endpoint(&endpoint);
        }
        if let Some(token) = &config.session_token {
            builder = builder.with_token(token);
        }
        let store = builder
            .build()
            .map_err(|e| invalid(format!("the S3 settings: {e}")))?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("s3")
            .enable_all()
            .build()
            .map_err(|e| invalid(format!("starting the S3 client: {e}")))?;
        Ok(Self {
            store: Arc::new(store),
            prefix: config.prefix.trim_matches('/').to_string(),
            location: Location {
                bucket: config.bucket.clone(),
                endpoint: if endpoint.is_empty() {
                    "AWS S3".into()
                } else {
                    endpoint
                },
            },
            runtime,
        })
    }

    fn path(&self, key: &str) -> Result<Path, RepositoryError> {
        check_key(key)?;
        Ok(if self.prefix.is_empty() {
            Path::from(key)
        } else {
            Path::from(format!("{}/{key}", self.prefix))
        })
    }
}

impl Repository for S3Repository {
    fn create(&self, key: &str) -> Result<Box<dyn Upload>, RepositoryError> {
        let path = self.path(key)?;
        let upload = self
            .runtime
            .block_on(self.store.put_multipart(&path))
            .map_err(|e| RepositoryError::Write {
                key: key.to_string(),
                source: self.location.failure(e),
            })?;
        Ok(Box::new(MultipartWriter {
            upload: Some(upload),
            runtime: self.runtime.handle().clone(),
            part: Vec::with_capacity(FIRST_PART_SIZE),
            parts: 0,
            in_flight: JoinSet::new(),
            key: key.to_string(),
            location: self.location.clone(),
        }))
    }

    fn put(&self, key: &str, data: &[u8]) -> Result<(), RepositoryError> {
        let path = self.path(key)?;
        let payload = PutPayload::from(Bytes::copy_from_slice(data));
        self.runtime
            .block_on(self.store.put(&path, payload))
            .map(|_| ())
            .map_err(|e| RepositoryError::Write {
                key: key.to_string(),
                source: self.location.failure(e),
            })
    }

    fn open(&self, key: &str) -> Result<Box<dyn Read + Send>, RepositoryError> {
        let path = self.path(key)?;
        let got =
            self.runtime
                .block_on(self.store.get(&path))
                .map_err(|e| RepositoryError::Read {
                    key: key.to_string(),
                    source: self.location.failure(e),
                })?;
        Ok(Box::new(StreamReader {
            stream: got.into_stream(),
            runtime: self.runtime.handle().clone(),
            chunk: Bytes::new(),
            location: self.location.clone(),
        }))
    }

    fn remove(&self, key: &str) -> Result<(), RepositoryError> {
        let path = self.path(key)?;
        match self.runtime.block_on(self.store.delete(&path)) {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(RepositoryError::Remove {
                key: key.to_string(),
                source: self.location.failure(e),
            }),
        }
    }

    fn remove_prefix(&self, prefix: &str) -> Result<(), RepositoryError> {
        let path = self.path(prefix)?;
        let store = self.store.clone();
        let removed = self.runtime.block_on(async move {
            let locations = store.list(Some(&path)).map_ok(|m| m.location).boxed();
            store
                .delete_stream(locations)
                .try_for_each(|_| futures::future::ready(Ok(())))
                .await
        });
        match removed {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(RepositoryError::Remove {
                key: prefix.to_string(),
                source: self.location.failure(e),
            }),
        }
    }

    fn list_in_order<'a>(&'a self, prefix: &str) -> Result<Listed<'a>, RepositoryError> {
        let path = self.path(prefix)?;
        let root = if self.prefix.is_empty() {
            String::new()
        } else {
            format!("{}/", self.prefix)
        };
        let prefix = prefix.to_string();
        // Page by page as the iterator is read (each page a request of up to 1,000 keys).
        let mut pages = self.store.list(Some(&path));
        Ok(Box::new(std::iter::from_fn(move || {
            loop {
                let meta = match self.runtime.block_on(pages.next())? {
                    Ok(meta) => meta,
                    Err(e) => {
                        return Some(Err(RepositoryError::Read {
                            key: prefix.clone(),
                            source: self.location.failure(e),
                        }));
                    }
                };
                if let Some(key) = meta.location.as_ref().strip_prefix(&root) {
                    return Some(Ok((key.to_string(), meta.size)));
                }
            }
        })))
    }

    fn read_range(&self, key: &str, offset: u64, length: u64) -> Result<Vec<u8>, RepositoryError> {
        let path = self.path(key)?;
        let read_error = |source| RepositoryError::Read {
            key: key.to_string(),
            source,
        };
        self.runtime
            .block_on(
                self.store
                    .get_range(&path, offset..offset.saturating_add(length)),
            )
            .map(|bytes| bytes.to_vec())
            .map_err(|e| read_error(self.location.failure(e)))
    }
}

/// What went wrong, in terms of what the user can fix.
pub fn classify(err: object_store::Error, bucket: &str, endpoint: &str) -> StoreFailure {
    // The S3 error code is only in the text (the XML body the server sent), and the TLS or
    // connection failure deep in the source chain.
    let mut text = err.to_string();
    let mut source = std::error::Error::source(&err);
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text = format!("{text}: {cause_text}");
        }
        source = cause.source();
    }
    let has = |needle: &str| text.contains(needle);
    let (reason, advice) = if has("NoSuchBucket") {
        (
            Reason::BucketNotFound,
            format!(
                "bucket {bucket:?} does not exist at {endpoint}: create it or fix spec.s3.bucket"
            ),
        )
    } else if matches!(
        err,
        object_store::Error::Unauthenticated { .. } | object_store::Error::PermissionDenied { .. }
    ) || has("InvalidAccessKeyId")
        || has("SignatureDoesNotMatch")
        || has("AccessDenied")
    {
        (
            Reason::AccessDenied,
            format!(
                "{endpoint} refused the credentials for bucket {bucket:?}: check the keys in the Secret named in spec.s3.credentialsSecretRef and their permissions"
            ),
        )
    } else if has("certificate") || has("Certificate") || has("UnknownIssuer") {
        (
            Reason::TlsHandshakeFailed,
            format!(
                "the TLS certificate of {endpoint} is not trusted: put its CA in the Secret named in spec.s3.caSecretRef"
            ),
        )
    } else if matches!(err, object_store::Error::NotFound { .. }) {
        (
            Reason::ArtifactMissing,
            format!("the object is not in bucket {bucket:?} at {endpoint}"),
        )
    } else if has("error sending request") || has("connect") || has("dns error") || has("timed out")
    {
        (
            Reason::EndpointUnreachable,
            format!("cannot reach {endpoint}: check spec.s3.endpoint and the network"),
        )
    } else {
        (
            Reason::StorageRequestFailed,
            format!("the request to {endpoint} failed"),
        )
    };
    StoreFailure {
        reason,
        message: format!("{advice} ({})", one_line(&without_body(&text))),
    }
}

/// `text` with any HTTP error body the server sent reduced to its S3 error code and message,
/// each bounded: the endpoint is of the repository owner's choosing, and what it answers ends up
/// in the repository's status, which others may read.
fn without_body(text: &str) -> String {
    const STATUS: &str = "Server returned non-2xx status code: ";
    const RESPONSE: &str = "Server returned error response: ";
    let (head, body) = if let Some(at) = text.find(STATUS) {
        let rest = &text[at + STATUS.len()..];
        // "<code> <reason phrase>: <body>"
        let status_end = rest.find(": ").unwrap_or(rest.len());
        (
            &text[..at + STATUS.len() + status_end],
            &rest[status_end.min(rest.len())..],
        )
    } else if let Some(at) = text.find(RESPONSE) {
        (
            &text[..at + RESPONSE.len() - 2],
            &text[at + RESPONSE.len()..],
        )
    } else {
        return text.to_string();
    };
    let element = |name: &str| {
        let open = format!("<{name}>");
        let start = body.find(&open)? + open.len();
        let end = body[start..].find("</")? + start;
        let value: String = body[start..end]
            .chars()
            .filter(|c| !c.is_control())
            .take(160)
            .collect();
        Some(format!("{name} {value:?}"))
    };
    let parts: Vec<String> = ["Code", "Message"]
        .into_iter()
        .filter_map(element)
        .collect();
    if parts.is_empty() {
        format!("{head} (the response body is not shown)")
    } else {
        format!("{head}: {}", parts.join(", "))
    }
}

fn one_line(text: &str) -> String {
    let flat: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if flat.len() > 600 {
        let mut end = 600;
        while !flat.is_char_boundary(end) {
            end -= 1;
        }
        format!("{}...", &flat[..end])
    } else {
        flat
    }
}

/// A streaming multipart upload behind `Write`: full parts are sent in the background while the
/// next one fills; at most `PARTS_IN_FLIGHT` are sent at once.
struct MultipartWriter {
    upload: Option<Box<dyn MultipartUpload>>,
    runtime: Handle,
    part: Vec<u8>,
    parts: usize,
    in_flight: JoinSet<object_store::Result<()>>,
    key: String,
    location: Location,
}

impl MultipartWriter {
    fn part_size(&self) -> usize {
        FIRST_PART_SIZE << (self.parts / PARTS_PER_SIZE).min(9)
    }

    /// Waits until fewer than `limit` parts are being sent; the first failure ends the upload.
    fn wait_for(&mut self, limit: usize) -> io::Result<()> {
        while self.in_flight.len() > limit {
            match self.runtime.block_on(self.in_flight.join_next()) {
                Some(Ok(Ok(()))) | None => {}
                Some(Ok(Err(e))) => return Err(self.location.failure(e)),
                Some(Err(e)) => return Err(io::Error::other(format!("uploading a part: {e}"))),
            }
        }
        Ok(())
    }

    fn send_part(&mut self) -> io::Result<()> {
        self.wait_for(PARTS_IN_FLIGHT - 1)?;
        self.parts += 1;
        let next = Vec::with_capacity(self.part_size());
        let part = PutPayload::from(Bytes::from(std::mem::replace(&mut self.part, next)));
        let upload = self
            .upload
            .as_mut()
            .ok_or_else(|| io::Error::other("the upload was already finished"))?;
        let sending = upload.put_part(part);
        self.in_flight.spawn_on(sending, &self.runtime);
        Ok(())
    }
}

impl Write for MultipartWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let room = self.part_size() - self.part.len();
        let n = buf.len().min(room);
        self.part.extend_from_slice(&buf[..n]);
        if self.part.len() == self.part_size() {
            self.send_part()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl MultipartWriter {
    /// Sends the last part, waits for every part, and completes the upload.
    fn finish(&mut self) -> io::Result<()> {
        if !self.part.is_empty() || self.parts == 0 {
            self.send_part()?;
        }
        self.wait_for(0)?;
        let Some(upload) = self.upload.as_mut() else {
            return Err(io::Error::other("the upload was already finished"));
        };
        match self.runtime.block_on(upload.complete()) {
            Ok(_) => {
                self.upload = None;
                Ok(())
            }
            Err(e) => Err(self.location.failure(e)),
        }
    }
}

impl Upload for MultipartWriter {
    fn commit(mut self: Box<Self>) -> Result<(), RepositoryError> {
        // On failure the upload is dropped, which aborts it.
        self.finish().map_err(|source| RepositoryError::Write {
            key: self.key.clone(),
            source,
        })
    }

    fn abort(self: Box<Self>) {
        // Dropping aborts.
    }
}

impl Drop for MultipartWriter {
    /// An upload that is not completed is aborted: no object appears under its key.
    fn drop(&mut self) {
        let Some(mut upload) = self.upload.take() else {
            return;
        };
        let runtime = self.runtime.clone();
        runtime.block_on(self.in_flight.shutdown());
        if let Err(e) = runtime.block_on(upload.abort()) {
            // The parts stay on the server until a lifecycle rule removes them; no object
            // appears under the key either way.
            eprintln!(
                "backstop: aborting the multipart upload of {}: {}",
                self.key,
                one_line(&e.to_string())
            );
        }
    }
}

/// An object's body as `Read`, pulled chunk by chunk from the HTTP response.
struct StreamReader {
    stream: futures::stream::BoxStream<'static, object_store::Result<Bytes>>,
    runtime: Handle,
    chunk: Bytes,
    location: Location,
}

impl Read for StreamReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.chunk.is_empty() {
            match self.runtime.block_on(self.stream.next()) {
                Some(Ok(chunk)) => self.chunk = chunk,
                Some(Err(e)) => return Err(self.location.failure(e)),
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.chunk.len());
        buf[..n].copy_from_slice(&self.chunk.split_to(n));
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_servers_error_body_is_reduced_to_its_code_and_message() {
        let text = "Error performing PUT http://127.0.0.1:9/b/k in 3ms - Server returned non-2xx status code: 403 Forbidden: <?xml version=\"1.0\"?><Error><Code>AccessDenied</Code><Message>Access Denied</Message><Echo>Credential=AKIAVICTIMSECRET/20261126</Echo></Error>";
        let shown = without_body(text);
        assert_eq!(
            shown,
            "Error performing PUT http://127.0.0.1:9/b/k in 3ms - Server returned non-2xx status code: 403 Forbidden: Code \"AccessDenied\", Message \"Access Denied\""
        );
        let plain =
            "Server returned non-2xx status code: 400 Bad Request: here is your key: AKIAVICTIM";
        assert!(
            !without_body(plain).contains("AKIAVICTIM"),
            "{}",
            without_body(plain)
        );
        assert!(without_body(plain).ends_with("(the response body is not shown)"));
        let long = format!(
            "Server returned error response: <Error><Message>{}</Message></Error>",
            "x".repeat(5000)
        );
        assert!(without_body(&long).len() < 250);
        assert_eq!(
            without_body("error sending request: connection refused"),
            "error sending request: connection refused"
        );
    }

    /// An error with a chain of causes, as the HTTP and TLS stacks make them.
    #[derive(Debug)]
    struct Chain(&'static str, Option<Box<Chain>>);

    impl std::fmt::Display for Chain {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(self.0)
        }
    }

    impl std::error::Error for Chain {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            self.1.as_deref().map(|c| c as _)
        }
    }

    fn reason_for(text: &'static str) -> Reason {
        let err = object_store::Error::Generic {
            store: "S3",
            source: Box::new(Chain(text, None)),
        };
        classify(err, "b", "http://s3").reason
    }

    #[test]
    fn every_sign_of_each_failure_is_recognised_on_its_own() {
        assert_eq!(reason_for("NoSuchBucket"), Reason::BucketNotFound);
        let missing = object_store::Error::NotFound {
            path: "ns/b/data.tar.zst".into(),
            source: Box::new(Chain("404", None)),
        };
        assert_eq!(
            classify(missing, "b", "http://s3").reason,
            Reason::ArtifactMissing
        );
        for text in [
            "InvalidAccessKeyId",
            "SignatureDoesNotMatch",
            "AccessDenied",
        ] {
            assert_eq!(reason_for(text), Reason::AccessDenied, "{text}");
        }
        for text in ["bad certificate", "Certificate expired", "UnknownIssuer"] {
            assert_eq!(reason_for(text), Reason::TlsHandshakeFailed, "{text}");
        }
        for text in [
            "error sending request",
            "tcp connect",
            "dns error",
            "timed out",
        ] {
            assert_eq!(reason_for(text), Reason::EndpointUnreachable, "{text}");
        }
        assert_eq!(reason_for("teapot"), Reason::StorageRequestFailed);
        let denied = object_store::Error::PermissionDenied {
            path: "k".into(),
            source: Box::new(Chain("no", None)),
        };
        assert_eq!(classify(denied, "b", "e").reason, Reason::AccessDenied);
        let unauthenticated = object_store::Error::Unauthenticated {
            path: "k".into(),
            source: Box::new(Chain("no", None)),
        };
        assert_eq!(
            classify(unauthenticated, "b", "e").reason,
            Reason::AccessDenied
        );
    }

    #[test]
    fn a_cause_deep_in_the_chain_is_seen_and_told() {
        let deep = Chain(
            "error sending request",
            Some(Box::new(Chain(
                "client error",
                Some(Box::new(Chain(
                    "invalid peer certificate: UnknownIssuer",
                    None,
                ))),
            ))),
        );
        let err = object_store::Error::Generic {
            store: "S3",
            source: Box::new(deep),
        };
        let failure = classify(err, "b", "https://s3");
        assert_eq!(failure.reason, Reason::TlsHandshakeFailed);
        assert!(
            failure.message.contains("client error: invalid peer"),
            "{}",
            failure.message
        );
        assert_eq!(failure.message.matches("error sending request").count(), 1);
    }

    #[test]
    fn an_error_response_keeps_its_head_and_its_code() {
        let text =
            "PUT failed - Server returned error response: <Error><Code>SlowDown</Code></Error>";
        assert_eq!(
            without_body(text),
            "PUT failed - Server returned error response: Code \"SlowDown\""
        );
    }

    #[test]
    fn one_line_collapses_whitespace_and_cuts_long_text_on_a_character() {
        assert_eq!(one_line("a\n  b\tc"), "a b c");
        let fits = "x".repeat(600);
        assert_eq!(one_line(&fits), fits);
        // 1 + 2n bytes: byte 600 falls inside an 'é', so the cut is at 599.
        let long = format!("a{}", "é".repeat(400));
        let cut = one_line(&long);
        assert_eq!(cut.len(), 599 + 3, "{cut}");
        assert!(cut.ends_with("é..."));
    }
}
