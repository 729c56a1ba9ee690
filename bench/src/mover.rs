//! The mover benchmark: every tool on the same dataset in the same run, page cache warm for all
//! (the dataset was just written), one repository/target directory per tool on the same disk.

use crate::dataset;
use anyhow::{Context, bail};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

struct Measured {
    wall: f64,
    cpu: f64,
    max_rss_mib: f64,
}

/// Runs `cmd` to completion and reads its (and its reaped children's) resource usage.
fn measure(cmd: &mut Command) -> anyhow::Result<Measured> {
    let start = Instant::now();
    let child = cmd.spawn().with_context(|| format!("starting {cmd:?}"))?;
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    // SAFETY: an all-zero rusage is a valid value for the kernel to overwrite.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `pid` is our child; `status` and `usage` are valid for writes.
    let rc = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    let wall = start.elapsed().as_secs_f64();
    if rc != pid {
        bail!("waiting for {cmd:?}: {}", std::io::Error::last_os_error());
    }
    if !(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0) {
        bail!("{cmd:?} failed (status {status})");
    }
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    Ok(Measured {
        wall,
        cpu: secs(usage.ru_utime) + secs(usage.ru_stime),
        max_rss_mib: usage.ru_maxrss as f64 / 1024.0,
    })
}

fn sh(script: &str) -> Command {
    let mut c = Command::new("sh");
    c.arg("-c").arg(script);
    c
}

fn du(path: &Path) -> anyhow::Result<u64> {
    let out = Command::new("du").arg("-sb").arg(path).output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    Ok(text.split_whitespace().next().unwrap_or("0").parse()?)
}

fn fresh(path: &Path) -> anyhow::Result<PathBuf> {
    let _ = fs::remove_dir_all(path);
    fs::create_dir_all(path)?;
    Ok(path.to_path_buf())
}

/// s3s-fs on loopback, when it is installed (`make test` builds it into ~/.cache/backstop).
struct S3sFs {
    child: std::process::Child,
    port: u16,
    root: PathBuf,
}

impl S3sFs {
    fn start(work: &Path) -> anyhow::Result<Option<Self>> {
        let binary = std::env::var_os("BACKSTOP_S3S_FS")
            .map(PathBuf::from)
            .or_else(|| {
                std::env::var_os("HOME")
                    .map(|h| PathBuf::from(h).join(".cache/backstop/s3s-fs/bin/s3s-fs"))
            });
        let Some(binary) = binary.filter(|b| b.exists()) else {
            println!("(s3s-fs not installed: no S3 rows; `make test` builds it)");
            return Ok(None);
        };
        let root = fresh(&work.join("s3"))?;
        fs::create_dir_all(root.join("bench"))?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let child = Command::new(binary)
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .args(["--access-key", "bench", "--secret-key", "bench-secret"])
            .arg(&root)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()?;
        let server = Self { child, port, root };
        let deadline = Instant::now() + std::time::Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if Instant::now() > deadline {
                bail!("s3s-fs did not listen on 127.0.0.1:{port}");
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        Ok(Some(server))
    }

    fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

impl Drop for S3sFs {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Row {
    tool: &'static str,
    op: &'static str,
    m: Measured,
    artifact: Option<u64>,
}

fn backstop_binary() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let candidate = exe.with_file_name("backstop");
    if candidate.exists() {
        return Ok(candidate);
    }
    bail!(
        "build the backstop binary next to this one: cargo build --release -p backstop -p backstop-bench"
    )
}

fn bench_dataset(name: &str, data: &Path, work: &Path) -> anyhow::Result<()> {
    let bytes = dataset::size(data)?;
    let backstop = backstop_binary()?;
    let mut rows = Vec::new();
    for (tool, compression, ext) in [
        ("backstop zstd", "zstd", "tar.zst"),
        ("backstop gzip", "gzip", "tar.gz"),
    ] {
        let repo = fresh(&work.join(format!("repo-{compression}")))?;
        let m = measure(
            Command::new(&backstop)
                .args(["mover", "backup", "--source"])
                .arg(data)
                .arg("--repository")
                .arg(&repo)
                .args(["--pvc", "data", "--dir", "b", "--compression", compression])
                .stdout(std::process::Stdio::null()),
        )?;
        let artifact = repo.join(format!("b/data.{ext}"));
        rows.push(Row {
            tool,
            op: "backup",
            m,
            artifact: Some(fs::metadata(&artifact)?.len()),
        });
        let target = fresh(&work.join("target"))?;
        let m = measure(
            Command::new(&backstop)
                .args(["mover", "restore", "--repository"])
                .arg(&repo)
                .args(["--manifest", "b/data.manifest.json", "--target"])
                .arg(&target)
                .stdout(std::process::Stdio::null()),
        )?;
        rows.push(Row {
            tool,
            op: "restore+verify",
            m,
            artifact: None,
        });
        if compression == "zstd" {
            let target = fresh(&work.join("target"))?;
            let m = measure(
                Command::new("tar")
                    .arg("--zstd")
                    .arg("-xf")
                    .arg(&artifact)
                    .arg("-C")
                    .arg(&target),
            )?;
            rows.push(Row {
                tool: "tar -x of backstop's .tar.zst",
                op: "restore",
                m,
                artifact: None,
            });
        }
    }
    if let Some(server) = S3sFs::start(work)? {
        let s3 = |cmd: &mut Command| {
            cmd.args(["--s3-bucket", "bench", "--s3-endpoint", &server.endpoint()])
                .arg("--s3-force-path-style")
                .env("AWS_ACCESS_KEY_ID", "bench")
                .env("AWS_SECRET_ACCESS_KEY", "bench-secret")
                .stdout(std::process::Stdio::null());
        };
        let mut backup = Command::new(&backstop);
        backup
            .args(["mover", "backup", "--source"])
            .arg(data)
            .args(["--pvc", "data", "--dir", "b", "--compression", "zstd"]);
        s3(&mut backup);
        let m = measure(&mut backup)?;
        rows.push(Row {
            tool: "backstop zstd to S3 (s3s-fs)",
            op: "backup",
            m,
            artifact: Some(fs::metadata(server.root.join("bench/b/data.tar.zst"))?.len()),
        });
        let target = fresh(&work.join("target"))?;
        let mut restore = Command::new(&backstop);
        restore
            .args([
                "mover",
                "restore",
                "--manifest",
                "b/data.manifest.json",
                "--target",
            ])
            .arg(&target);
        s3(&mut restore);
        let m = measure(&mut restore)?;
        rows.push(Row {
            tool: "backstop zstd to S3 (s3s-fs)",
            op: "restore+verify",
            m,
            artifact: None,
        });
    }

    let gz = work.join("peer.tar.gz");
    let m = measure(
        Command::new("tar")
            .arg("-C")
            .arg(data)
            .arg("-czf")
            .arg(&gz)
            .arg("."),
    )?;
    rows.push(Row {
        tool: "tar -czf",
        op: "backup",
        m,
        artifact: Some(fs::metadata(&gz)?.len()),
    });
    let target = fresh(&work.join("target"))?;
    let m = measure(
        Command::new("tar")
            .arg("-C")
            .arg(&target)
            .arg("-xzf")
            .arg(&gz),
    )?;
    rows.push(Row {
        tool: "tar -czf",
        op: "restore",
        m,
        artifact: None,
    });

    let zst = work.join("peer.tar.zst");
    let m = measure(&mut sh(&format!(
        "tar -C '{}' -cf - . | zstd -T0 -3 -q -f -o '{}'",
        data.display(),
        zst.display()
    )))?;
    rows.push(Row {
        tool: "tar | zstd -T0 -3",
        op: "backup",
        m,
        artifact: Some(fs::metadata(&zst)?.len()),
    });
    let target = fresh(&work.join("target"))?;
    let m = measure(&mut sh(&format!(
        "zstd -dcq '{}' | tar -C '{}' -xf -",
        zst.display(),
        target.display()
    )))?;
    rows.push(Row {
        tool: "tar | zstd -T0 -3",
        op: "restore",
        m,
        artifact: None,
    });

    let restic_repo = fresh(&work.join("restic"))?;
    let restic = |args: &[&str]| {
        let mut c = Command::new("restic");
        c.env("RESTIC_PASSWORD", "bench")
            .arg("-q")
            .arg("-r")
            .arg(&restic_repo)
            .args(args);
        c.stdout(std::process::Stdio::null());
        c
    };
    measure(&mut restic(&["init"]))?;
    let m = measure(restic(&["backup", "--no-cache"]).arg(data))?;
    rows.push(Row {
        tool: "restic 0.14",
        op: "backup",
        m,
        artifact: Some(du(&restic_repo)?),
    });
    let target = fresh(&work.join("target"))?;
    let m = measure(restic(&["restore", "latest", "--no-cache", "--target"]).arg(&target))?;
    rows.push(Row {
        tool: "restic 0.14",
        op: "restore",
        m,
        artifact: None,
    });
    let _ = fs::remove_dir_all(work);

    print_table(name, bytes, &rows);
    Ok(())
}

fn print_table(name: &str, bytes: u64, rows: &[Row]) {
    let mb = bytes as f64 / 1e6;
    println!("\n### {name}: {:.0} MB of file content\n", mb);
    println!("| tool | operation | MB/s | wall s | CPU s | peak RSS MiB | artifact MB |");
    println!("|---|---|---:|---:|---:|---:|---:|");
    for r in rows {
        println!(
            "| {} | {} | {:.0} | {:.2} | {:.2} | {:.0} | {} |",
            r.tool,
            r.op,
            mb / r.m.wall,
            r.m.wall,
            r.m.cpu,
            r.m.max_rss_mib,
            r.artifact
                .map(|a| format!("{:.1}", a as f64 / 1e6))
                .unwrap_or_default()
        );
    }
    let speed = |tool: &str, op: &str| {
        rows.iter()
            .find(|r| r.tool == tool && r.op == op)
            .map(|r| mb / r.m.wall)
            .unwrap_or(f64::NAN)
    };
    let ours = speed("backstop zstd", "backup");
    println!(
        "\nBackstop zstd backup: {:.2}x `tar | zstd -T0` (goal >= 0.9), {:.2}x `tar -czf` (goal >= 4), {:.2}x restic",
        ours / speed("tar | zstd -T0 -3", "backup"),
        ours / speed("tar -czf", "backup"),
        ours / speed("restic 0.14", "backup"),
    );
    println!(
        "Backstop restore (with digest verification): {:.2}x `tar -x` of the same artifact (goal >= 1), {:.2}x restic restore",
        speed("backstop zstd", "restore+verify")
            / speed("tar -x of backstop's .tar.zst", "restore"),
        speed("backstop zstd", "restore+verify") / speed("restic 0.14", "restore"),
    );
}

/// Writes a dataset into the directory it is given.
type Generator = Box<dyn Fn(&Path) -> std::io::Result<()>>;

/// `only`: the datasets to run, by letter (`a`, `b`, `c`); all when empty.
pub fn run(quick: bool, only: &str) -> anyhow::Result<()> {
    for tool in ["tar", "zstd", "restic", "du"] {
        if Command::new("sh")
            .arg("-c")
            .arg(format!("command -v {tool}"))
            .output()?
            .stdout
            .is_empty()
        {
            bail!("{tool} is not installed (apt-get install tar zstd restic coreutils)");
        }
    }
    let base = PathBuf::from(
        std::env::var("BACKSTOP_BENCH_DIR").unwrap_or_else(|_| "/var/tmp/backstop-bench".into()),
    );
    let (small, large, large_size, mixed_scale) = if quick {
        (2_000, 4, 64 << 20, 1)
    } else {
        (20_000, 4, 512 << 20, 4)
    };
    let sets: [(&str, Generator); 3] = [
        (
            "(a) small files, 1-64 KiB",
            Box::new(move |p| dataset::small_files(p, small)),
        ),
        (
            "(b) large files",
            Box::new(move |p| dataset::large_files(p, large, large_size)),
        ),
        (
            "(c) mixed tree",
            Box::new(move |p| dataset::mixed(p, mixed_scale)),
        ),
    ];
    println!(
        "Mover benchmark ({}), {} cores; page cache warm for every tool.",
        if quick { "quick" } else { "full" },
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    for (i, (name, generate)) in sets.iter().enumerate() {
        let letter = (b'a' + i as u8) as char;
        if !only.is_empty() && !only.contains(letter) {
            continue;
        }
        let data = fresh(&base.join(format!("data{i}")))?;
        generate(&data)?;
        let label = if i == 0 {
            format!("{name}, {small} files")
        } else if i == 1 {
            format!("{name}, {large} x {} MiB", large_size >> 20)
        } else {
            name.to_string()
        };
        bench_dataset(&label, &data, &base.join("work"))?;
        fs::remove_dir_all(&data)?;
    }
    Ok(())
}
