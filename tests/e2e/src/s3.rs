//! Real S3-compatible servers on loopback, started by the tests themselves: `moto_server` (PyPI
//! `moto[server]`) and `s3s-fs` (crates.io). `hack/test` installs both and says where they are
//! (`BACKSTOP_MOTO_SERVER`, `BACKSTOP_S3S_FS`). Buckets are made and inspected without Backstop's
//! code: moto answers unsigned requests, s3s-fs keeps buckets as directories.

use crate::ports::{ReservedPort, wait_serving};
use anyhow::Context;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub const ACCESS_KEY: &str = "backstop-e2e";
pub const SECRET_KEY: &str = "backstop-e2e-secret";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum S3Kind {
    Moto,
    S3sFs,
}

pub struct S3Server {
    pub kind: S3Kind,
    /// Held for the server's whole life, also while it is stopped (see `ports`).
    port: ReservedPort,
    /// s3s-fs's data directory (one subdirectory per bucket).
    data: tempfile::TempDir,
    child: Option<Child>,
    /// HTTPS with a certificate signed by the test CA (`ca_file`).
    tls: bool,
}

fn binary(var: &str, default: &str) -> anyhow::Result<PathBuf> {
    let path = std::env::var_os(var)
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(default)))
        .context("HOME is not set")?;
    anyhow::ensure!(
        path.exists(),
        "{} not found: run `make test` (hack/test installs it) or set {var}",
        path.display()
    );
    Ok(path)
}

impl S3Server {
    pub fn start(kind: S3Kind) -> anyhow::Result<Self> {
        Self::start_with(kind, false)
    }

    /// moto_server over HTTPS, its certificate (for 127.0.0.1) signed by a CA made here.
    pub fn start_tls() -> anyhow::Result<Self> {
        Self::start_with(S3Kind::Moto, true)
    }

    fn start_with(kind: S3Kind, tls: bool) -> anyhow::Result<Self> {
        let mut server = Self {
            kind,
            port: ReservedPort::new()?,
            data: tempfile::tempdir()?,
            child: None,
            tls,
        };
        if tls {
            server.make_certificates()?;
        }
        server.spawn()?;
        Ok(server)
    }

    /// Where s3s-fs keeps the objects: `<dir>/<bucket>/<key>`, plain files.
    pub fn data_dir(&self) -> &std::path::Path {
        self.data.path()
    }

    /// The PEM of the CA that signed the server's certificate.
    pub fn ca_file(&self) -> PathBuf {
        self.data.path().join("ca.crt")
    }

    fn make_certificates(&self) -> anyhow::Result<()> {
        let dir = self.data.path();
        std::fs::write(
            dir.join("ext"),
            "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
        )?;
        let steps: [&[&str]; 3] = [
            &[
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-keyout",
                "ca.key",
                "-out",
                "ca.crt",
                "-days",
                "2",
                "-subj",
                "/CN=backstop-e2e-ca",
            ],
            &[
                "req",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-keyout",
                "server.key",
                "-out",
                "server.csr",
                "-subj",
                "/CN=127.0.0.1",
            ],
            &[
                "x509",
                "-req",
                "-in",
                "server.csr",
                "-CA",
                "ca.crt",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                "server.crt",
                "-days",
                "2",
                "-extfile",
                "ext",
            ],
        ];
        for args in steps {
            let out = Command::new("openssl")
                .args(args)
                .current_dir(dir)
                .output()?;
            anyhow::ensure!(
                out.status.success(),
                "openssl {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(())
    }

    fn spawn(&mut self) -> anyhow::Result<()> {
        let port = self.port.port.to_string();
        let mut cmd = match self.kind {
            S3Kind::Moto => {
                let mut c = Command::new(binary(
                    "BACKSTOP_MOTO_SERVER",
                    ".cache/backstop/venv/bin/moto_server",
                )?);
                c.args(["-H", "127.0.0.1", "-p", &port]);
                if self.tls {
                    c.arg("-c").arg(self.data.path().join("server.crt"));
                    c.arg("-k").arg(self.data.path().join("server.key"));
                }
                c
            }
            S3Kind::S3sFs => {
                let mut c = Command::new(binary(
                    "BACKSTOP_S3S_FS",
                    ".cache/backstop/s3s-fs/bin/s3s-fs",
                )?);
                c.args(["--host", "127.0.0.1", "--port", &port])
                    .args(["--access-key", ACCESS_KEY, "--secret-key", SECRET_KEY])
                    .arg(self.data.path());
                c
            }
        };
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {:?}", self.kind))?;
        let what = format!("{:?} on {}", self.kind, self.endpoint());
        // Any S3 answer will do: moto lists its buckets, s3s-fs refuses an unsigned request.
        let serving = wait_serving(&mut child, &what, || {
            self.http_bytes("GET", "/").is_ok_and(|(_, body)| {
                let body = String::from_utf8_lossy(&body);
                body.contains("ListAllMyBucketsResult") || body.contains("<Code>")
            })
        });
        self.child = Some(child);
        serving
    }

    /// True while s3s-fs holds parts of a multipart upload that is not completed.
    pub fn has_partial_upload(&self) -> bool {
        std::fs::read_dir(self.data.path())
            .map(|entries| {
                entries
                    .flatten()
                    .any(|e| e.file_name().to_string_lossy().contains(".upload-"))
            })
            .unwrap_or(false)
    }

    pub fn endpoint(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{}", self.port.addr())
    }

    /// Stops the server (the bucket's data stays on disk for s3s-fs).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port with the same data.
    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.stop();
        self.spawn()
    }

    pub fn create_bucket(&self, bucket: &str) -> anyhow::Result<()> {
        match self.kind {
            S3Kind::Moto => {
                let (status, body) = self.http("PUT", &format!("/{bucket}"))?;
                anyhow::ensure!(status == 200, "creating bucket {bucket}: {status} {body}");
            }
            S3Kind::S3sFs => std::fs::create_dir_all(self.data.path().join(bucket))?,
        }
        Ok(())
    }

    /// Removes a bucket and everything in it.
    pub fn delete_bucket(&self, bucket: &str) -> anyhow::Result<()> {
        match self.kind {
            S3Kind::Moto => {
                for key in self.keys(bucket, "")? {
                    self.http("DELETE", &format!("/{bucket}/{key}"))?;
                }
                let (status, body) = self.http("DELETE", &format!("/{bucket}"))?;
                anyhow::ensure!(status == 204, "deleting bucket {bucket}: {status} {body}");
            }
            S3Kind::S3sFs => std::fs::remove_dir_all(self.data.path().join(bucket))?,
        }
        Ok(())
    }

    /// Every object key under `prefix`, sorted.
    pub fn keys(&self, bucket: &str, prefix: &str) -> anyhow::Result<Vec<String>> {
        let mut keys: Vec<String> = match self.kind {
            S3Kind::Moto => {
                let (status, body) =
                    self.http("GET", &format!("/{bucket}?list-type=2&prefix={prefix}"))?;
                anyhow::ensure!(status == 200, "listing {bucket}: {status} {body}");
                body.split("<Key>")
                    .skip(1)
                    .filter_map(|s| s.split_once("</Key>").map(|(k, _)| k.to_string()))
                    .collect()
            }
            S3Kind::S3sFs => {
                let root = self.data.path().join(bucket);
                let mut keys = Vec::new();
                let mut dirs = vec![root.clone()];
                while let Some(dir) = dirs.pop() {
                    for entry in std::fs::read_dir(&dir)? {
                        let path = entry?.path();
                        if path.is_dir() {
                            dirs.push(path);
                        } else {
                            let key = path.strip_prefix(&root)?.to_string_lossy().into_owned();
                            keys.push(key);
                        }
                    }
                }
                keys.into_iter().filter(|k| k.starts_with(prefix)).collect()
            }
        };
        keys.sort();
        Ok(keys)
    }

    /// An object's bytes, fetched without Backstop.
    pub fn object(&self, bucket: &str, key: &str) -> anyhow::Result<Vec<u8>> {
        match self.kind {
            S3Kind::Moto => {
                let (status, body) = self.http_bytes("GET", &format!("/{bucket}/{key}"))?;
                anyhow::ensure!(status == 200, "getting {bucket}/{key}: {status}");
                Ok(body)
            }
            S3Kind::S3sFs => Ok(std::fs::read(self.data.path().join(bucket).join(key))?),
        }
    }

    fn http(&self, method: &str, path: &str) -> anyhow::Result<(u16, String)> {
        let (status, body) = self.http_bytes(method, path)?;
        Ok((status, String::from_utf8_lossy(&body).into_owned()))
    }

    /// An unsigned request (moto does not check signatures unless told to); over TLS with curl,
    /// trusting the test CA.
    fn http_bytes(&self, method: &str, path: &str) -> anyhow::Result<(u16, Vec<u8>)> {
        if !self.tls {
            return crate::http(&self.port.addr(), method, path);
        }
        let out = Command::new("curl")
            .args([
                "-sS",
                "-o",
                "-",
                "-w",
                "\n%{http_code}",
                "-X",
                method,
                "--cacert",
            ])
            .arg(self.ca_file())
            .arg(format!("{}{path}", self.endpoint()))
            .output()?;
        anyhow::ensure!(
            out.status.success(),
            "curl: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let split = out.stdout.iter().rposition(|b| *b == b'\n').unwrap_or(0);
        let status = String::from_utf8_lossy(&out.stdout[split..])
            .trim()
            .parse()?;
        Ok((status, out.stdout[..split].to_vec()))
    }

    /// The mover's settings for `bucket` on this server.
    pub fn config(&self, bucket: &str, prefix: &str) -> backstop_mover::repository::S3Config {
        backstop_mover::repository::S3Config {
            endpoint: Some(self.endpoint()),
            bucket: bucket.into(),
            prefix: prefix.into(),
            force_path_style: true,
            access_key_id: ACCESS_KEY.into(),
            secret_access_key: SECRET_KEY.into(),
            retry_timeout: Duration::from_secs(5),
            ..Default::default()
        }
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        self.stop();
    }
}
