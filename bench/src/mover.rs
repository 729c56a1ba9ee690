//! The mover benchmark: every tool on the same dataset in the same run, page cache warm for all
//! (the dataset was just written), one repository/target directory per tool on the same disk.

use crate::dataset;
use anyhow::{Context, bail};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

pub(crate) struct Measured {
    pub(crate) wall: f64,
    pub(crate) cpu: f64,
    pub(crate) max_rss_mib: f64,
}

/// Runs `cmd` to completion and reads its (and its reaped children's) resource usage.
/// Dirty pages left by whatever ran before (the dataset just generated, the previous tool's
/// output) are written back first, so no tool pays for another's writeback.
pub(crate) fn measure(cmd: &mut Command, settle: bool) -> anyhow::Result<Measured> {
    // SAFETY: sync(2) takes no arguments and cannot fail.
    unsafe { libc::sync() };
    if settle {
        // Millions of files: dentries and inodes are dropped too (file data stays cached), or a
        // tool pays for reclaiming the ones another left: `tar -x` of a million files measured
        // 195 s right after a restore of them was removed, 41 s on a settled machine.
        fs::write("/proc/sys/vm/drop_caches", "2").context("dropping dentries and inodes")?;
    }
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
    manifest: Option<u64>,
}

pub(crate) fn backstop_binary() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let candidate = exe.with_file_name("backstop");
    if candidate.exists() {
        return Ok(candidate);
    }
    bail!(
        "build the backstop binary next to this one: cargo build --release -p backstop -p backstop-bench"
    )
}

/// The rows of one dataset's table. Every measurement runs `runs` times (each time after its own
/// preparation: a fresh target, a fresh restic repository) and keeps the run with the median
/// wall time; a command that takes longer than `REPEAT_UNDER_S` runs once (the gzip peers).
struct Table {
    runs: usize,
    rows: Vec<Row>,
    /// Dentries and inodes dropped before every run (see `measure`).
    settle: bool,
}

const REPEAT_UNDER_S: f64 = 20.0;

/// Makes the command for one run (after preparing what it needs).
type Prepare<'a> = Box<dyn FnMut() -> anyhow::Result<Command> + 'a>;

impl Table {
    fn measure(
        &mut self,
        tool: &'static str,
        op: &'static str,
        prepare: impl FnMut() -> anyhow::Result<Command>,
    ) -> anyhow::Result<()> {
        self.measure_in_turns(vec![(tool, op, Box::new(prepare))])
    }

    /// Runs the contenders in turns (A, B, A, B, ...), not one after the other: the CPU time of
    /// one command varies by up to a third between minutes on this VM, and a ratio of two
    /// commands measured minutes apart carried that drift.
    fn measure_in_turns(
        &mut self,
        mut contenders: Vec<(&'static str, &'static str, Prepare<'_>)>,
    ) -> anyhow::Result<()> {
        let mut runs: Vec<Vec<Measured>> = contenders.iter().map(|_| Vec::new()).collect();
        for round in 0..self.runs.max(1) {
            for ((_, _, prepare), done) in contenders.iter_mut().zip(&mut runs) {
                if round == 0 || done[0].wall < REPEAT_UNDER_S {
                    done.push(measure(&mut prepare()?, self.settle)?);
                }
            }
        }
        for ((tool, op, _), mut done) in contenders.into_iter().zip(runs) {
            done.sort_by(|a, b| a.wall.total_cmp(&b.wall));
            let m = done.swap_remove(done.len() / 2);
            self.rows.push(Row {
                tool,
                op,
                m,
                artifact: None,
                manifest: None,
            });
        }
        Ok(())
    }

    /// Records the size of what `tool`'s backup wrote.
    fn artifact(&mut self, tool: &str, bytes: u64) {
        if let Some(row) = self.backup_row(tool) {
            row.artifact = Some(bytes);
        }
    }

    /// Records the size of the manifest `tool`'s backup wrote beside its artifact.
    fn manifest(&mut self, tool: &str, bytes: u64) {
        if let Some(row) = self.backup_row(tool) {
            row.manifest = Some(bytes);
        }
    }

    fn backup_row(&mut self, tool: &str) -> Option<&mut Row> {
        self.rows
            .iter_mut()
            .find(|r| r.tool == tool && r.op == "backup")
    }
}

/// A Backstop backup of `data` into a fresh directory repository.
fn backstop_backup<'a>(
    backstop: &'a Path,
    data: &'a Path,
    repo: &'a Path,
    compression: &'static str,
) -> Prepare<'a> {
    Box::new(move || {
        fresh(repo)?;
        let mut c = Command::new(backstop);
        c.args(["mover", "backup", "--source"])
            .arg(data)
            .arg("--repository")
            .arg(repo)
            .args(["--pvc", "data", "--dir", "b", "--compression", compression])
            .stdout(std::process::Stdio::null());
        Ok(c)
    })
}

/// Where the benchmark's Backstop backups keep their manifest, inside their repository.
const MANIFEST: &str = "b/data.manifest.jsonl.zst";

/// A Backstop restore (with verification) of that backup into a fresh target.
fn backstop_restore<'a>(backstop: &'a Path, repo: &'a Path, target: &'a Path) -> Prepare<'a> {
    Box::new(move || {
        fresh(target)?;
        let mut c = Command::new(backstop);
        c.args(["mover", "restore", "--repository"])
            .arg(repo)
            .args(["--manifest", MANIFEST, "--target"])
            .arg(target)
            .stdout(std::process::Stdio::null());
        Ok(c)
    })
}

/// A Backstop verification of that backup (reads it all, writes nothing).
fn backstop_verify<'a>(backstop: &'a Path, repo: &'a Path) -> Prepare<'a> {
    Box::new(move || {
        let mut c = Command::new(backstop);
        c.args(["mover", "verify", "--repository"])
            .arg(repo)
            .args(["--manifest", MANIFEST])
            .stdout(std::process::Stdio::null());
        Ok(c)
    })
}

/// The goals' two sides, in turns: Backstop's zstd backup (into `work/repo-zstd`) against
/// `tar | zstd` (into `work/peer.tar.zst`, returned with the Backstop binary), its restore
/// against `tar -x` of the same artifact.
fn goals_in_turns(
    t: &mut Table,
    data: &Path,
    work: &Path,
    target: &Path,
) -> anyhow::Result<(PathBuf, PathBuf)> {
    let backstop = backstop_binary()?;
    let repo = work.join("repo-zstd");
    let zst = work.join("peer.tar.zst");
    t.measure_in_turns(vec![
        (
            "backstop zstd",
            "backup",
            backstop_backup(&backstop, data, &repo, "zstd"),
        ),
        (
            "tar | zstd -T0 -3",
            "backup",
            Box::new(|| {
                Ok(sh(&format!(
                    "tar -C '{}' -cf - . | zstd -T0 -3 -q -f -o '{}'",
                    data.display(),
                    zst.display()
                )))
            }),
        ),
    ])?;
    let artifact = repo.join("b/data.tar.zst");
    t.artifact("backstop zstd", fs::metadata(&artifact)?.len());
    t.manifest("backstop zstd", fs::metadata(repo.join(MANIFEST))?.len());
    t.artifact("tar | zstd -T0 -3", fs::metadata(&zst)?.len());
    t.measure_in_turns(vec![
        (
            "backstop zstd",
            "restore+verify",
            backstop_restore(&backstop, &repo, target),
        ),
        (
            "tar -x of backstop's .tar.zst",
            "restore",
            Box::new(|| {
                fresh(target)?;
                let mut c = Command::new("tar");
                c.arg("--zstd")
                    .arg("-xf")
                    .arg(&artifact)
                    .arg("-C")
                    .arg(target);
                Ok(c)
            }),
        ),
    ])?;
    Ok((backstop, zst))
}

fn bench_dataset(name: &str, data: &Path, work: &Path, runs: usize) -> anyhow::Result<()> {
    let bytes = dataset::size(data)?;
    let mut t = Table {
        runs,
        rows: Vec::new(),
        settle: false,
    };
    let target = work.join("target");
    let (backstop, zst) = goals_in_turns(&mut t, data, work, &target)?;
    let repo = work.join("repo-gzip");
    t.measure(
        "backstop gzip",
        "backup",
        backstop_backup(&backstop, data, &repo, "gzip"),
    )?;
    t.artifact(
        "backstop gzip",
        fs::metadata(repo.join("b/data.tar.gz"))?.len(),
    );
    t.measure(
        "backstop gzip",
        "restore+verify",
        backstop_restore(&backstop, &repo, &target),
    )?;
    if let Some(server) = S3sFs::start(work)? {
        let s3 = |verb: &str| {
            let mut c = Command::new(&backstop);
            c.args(["mover", verb])
                .args(["--s3-bucket", "bench", "--s3-endpoint", &server.endpoint()])
                .arg("--s3-force-path-style")
                .env("AWS_ACCESS_KEY_ID", "bench")
                .env("AWS_SECRET_ACCESS_KEY", "bench-secret")
                .stdout(std::process::Stdio::null());
            c
        };
        t.measure("backstop zstd to S3 (s3s-fs)", "backup", || {
            let mut c = s3("backup");
            c.arg("--source").arg(data).args([
                "--pvc",
                "data",
                "--dir",
                "b",
                "--compression",
                "zstd",
            ]);
            Ok(c)
        })?;
        t.artifact(
            "backstop zstd to S3 (s3s-fs)",
            fs::metadata(server.root.join("bench/b/data.tar.zst"))?.len(),
        );
        t.measure("backstop zstd to S3 (s3s-fs)", "restore+verify", || {
            fresh(&target)?;
            let mut c = s3("restore");
            c.args(["--manifest", MANIFEST, "--target"]).arg(&target);
            Ok(c)
        })?;
    }

    let gz = work.join("peer.tar.gz");
    t.measure("tar -czf", "backup", || {
        let mut c = Command::new("tar");
        c.arg("-C").arg(data).arg("-czf").arg(&gz).arg(".");
        Ok(c)
    })?;
    t.artifact("tar -czf", fs::metadata(&gz)?.len());
    t.measure("tar -czf", "restore", || {
        fresh(&target)?;
        let mut c = Command::new("tar");
        c.arg("-C").arg(&target).arg("-xzf").arg(&gz);
        Ok(c)
    })?;

    t.measure("tar | zstd -T0 -3", "restore", || {
        fresh(&target)?;
        Ok(sh(&format!(
            "zstd -dcq '{}' | tar -C '{}' -xf -",
            zst.display(),
            target.display()
        )))
    })?;

    let growth = restic_format_rows(&mut t, &backstop, data, work, &target)?;
    let _ = fs::remove_dir_all(work);

    print_table(name, bytes, runs, &t.rows);
    print_summary(&t.rows, bytes);
    print_restic_summary(&t.rows, &growth);
    Ok(())
}

/// restic 0.14's backup into a fresh repository (a second backup into the same one would only
/// dedupe) and its restore.
fn restic_rows(t: &mut Table, data: &Path, work: &Path, target: &Path) -> anyhow::Result<()> {
    let restic_repo = work.join("restic");
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
    t.measure("restic 0.14", "backup", || {
        fresh(&restic_repo)?;
        if !restic(&["init"]).status()?.success() {
            bail!("restic init failed");
        }
        let mut c = restic(&["backup", "--no-cache"]);
        c.arg(data);
        Ok(c)
    })?;
    t.artifact("restic 0.14", du(&restic_repo)?);
    t.measure("restic 0.14", "restore", || {
        fresh(target)?;
        let mut c = restic(&["restore", "latest", "--no-cache", "--target"]);
        c.arg(target);
        Ok(c)
    })
}

/// Many tiny files: where memory and per-entry cost show. Backstop's backup against
/// `tar | zstd` and its restore against `tar -x` in turns, its verification, and restic.
fn bench_many_files(
    name: &str,
    data: &Path,
    files: u64,
    work: &Path,
    runs: usize,
) -> anyhow::Result<()> {
    let bytes = dataset::size(data)?;
    let mut t = Table {
        runs,
        rows: Vec::new(),
        settle: true,
    };
    let target = work.join("target");
    let (backstop, _) = goals_in_turns(&mut t, data, work, &target)?;
    let repo = work.join("repo-zstd");
    t.measure("backstop zstd", "verify", backstop_verify(&backstop, &repo))?;
    restic_rows(&mut t, data, work, &target)?;
    let _ = fs::remove_dir_all(work);

    print_table(name, bytes, runs, &t.rows);
    let row = |tool: &str, op: &str| t.rows.iter().find(|r| r.tool == tool && r.op == op);
    let (Some(ours), Some(peer)) = (
        row("backstop zstd", "backup"),
        row("tar | zstd -T0 -3", "backup"),
    ) else {
        bail!("a backup row is missing");
    };
    let manifest = ours.manifest.unwrap_or(0);
    let stored = ours.artifact.unwrap_or(0) + manifest;
    println!(
        "\nStored: {:.1} MB ({:.1} MB artifact + {:.1} MB manifest, {:.1} manifest bytes per file) = {:.2}x `tar | zstd -3` (goal <= 1.5)",
        stored as f64 / 1e6,
        ours.artifact.unwrap_or(0) as f64 / 1e6,
        manifest as f64 / 1e6,
        manifest as f64 / files as f64,
        stored as f64 / peer.artifact.unwrap_or(1) as f64,
    );
    let rss = |op: &str| row("backstop zstd", op).map_or(f64::NAN, |r| r.m.max_rss_mib);
    println!(
        "Peak RSS with {files} files: backup {:.0} MiB, restore {:.0} MiB, verify {:.0} MiB (goal < 64)",
        rss("backup"),
        rss("restore+verify"),
        rss("verify"),
    );
    print_summary(&t.rows, bytes);
    Ok(())
}

fn print_table(name: &str, bytes: u64, runs: usize, rows: &[Row]) {
    let mb = bytes as f64 / 1e6;
    println!("\n### {name}: {:.0} MB of file content\n", mb);
    if runs > 1 {
        println!(
            "(each row: the median of {runs} runs by wall time; commands over {REPEAT_UNDER_S:.0} s run once)\n"
        );
    }
    println!(
        "| tool | operation | MB/s | wall s | CPU s | peak RSS MiB | artifact MB | manifest MB |"
    );
    println!("|---|---|---:|---:|---:|---:|---:|---:|");
    let megabytes = |b: Option<u64>| {
        b.map(|b| format!("{:.1}", b as f64 / 1e6))
            .unwrap_or_default()
    };
    for r in rows {
        println!(
            "| {} | {} | {:.0} | {:.2} | {:.2} | {:.0} | {} | {} |",
            r.tool,
            r.op,
            mb / r.m.wall,
            r.m.wall,
            r.m.cpu,
            r.m.max_rss_mib,
            megabytes(r.artifact),
            megabytes(r.manifest),
        );
    }
}

/// Backstop's speed against its peers, where the table has them.
fn print_summary(rows: &[Row], bytes: u64) {
    let mb = bytes as f64 / 1e6;
    let speed = |tool: &str, op: &str| {
        rows.iter()
            .find(|r| r.tool == tool && r.op == op)
            .map(|r| mb / r.m.wall)
            .unwrap_or(f64::NAN)
    };
    let ours = speed("backstop zstd", "backup");
    let gzip = speed("tar -czf", "backup");
    println!(
        "\nBackstop zstd backup: {:.2}x `tar | zstd -T0` (goal >= 0.9){}, {:.2}x restic",
        ours / speed("tar | zstd -T0 -3", "backup"),
        if gzip.is_nan() {
            String::new()
        } else {
            format!(", {:.2}x `tar -czf` (goal >= 4)", ours / gzip)
        },
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
pub type Generator = Box<dyn Fn(&Path) -> std::io::Result<()>>;

pub struct Dataset {
    pub letter: char,
    pub label: String,
    pub generate: Generator,
    /// Many tiny files: the table of memory and per-entry cost (`bench_many_files`).
    pub files: Option<u64>,
}

/// The datasets, full size or `quick` (small enough for a smoke run).
pub fn datasets(quick: bool) -> Vec<Dataset> {
    let (small, large, large_size, mixed_scale, tiny) = if quick {
        (2_000, 4, 64 << 20, 1, 20_000)
    } else {
        (20_000, 4, 512 << 20, 4, 1_000_000)
    };
    let many = |letter, count: u64| Dataset {
        letter,
        label: format!(
            "({letter}) many tiny files, 0-200 bytes, {count} files in 1,000 directories"
        ),
        generate: Box::new(move |p| dataset::tiny_files(p, count)),
        files: Some(count),
    };
    vec![
        Dataset {
            letter: 'a',
            label: format!("(a) small files, 1-64 KiB, {small} files"),
            generate: Box::new(move |p| dataset::small_files(p, small)),
            files: None,
        },
        Dataset {
            letter: 'b',
            label: format!("(b) large files, {large} x {} MiB", large_size >> 20),
            generate: Box::new(move |p| dataset::large_files(p, large, large_size)),
            files: None,
        },
        Dataset {
            letter: 'c',
            label: "(c) mixed tree".to_string(),
            generate: Box::new(move |p| dataset::mixed(p, mixed_scale)),
            files: None,
        },
        many('d', tiny),
        // Twice as many: memory must stay flat, not just low.
        many('e', 2 * tiny),
    ]
}

/// `only`: the datasets to run, by letter (`a` to `e`); all when empty.
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
    let sets = datasets(quick);
    println!(
        "Mover benchmark ({}), {} cores; page cache warm for every tool.",
        if quick { "quick" } else { "full" },
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    for (i, set) in sets.iter().enumerate() {
        if !only.is_empty() && !only.contains(set.letter) {
            continue;
        }
        let data = fresh(&base.join(format!("data{i}")))?;
        (set.generate)(&data)?;
        let (work, runs) = (base.join("work"), if quick { 1 } else { 3 });
        match set.files {
            Some(files) => bench_many_files(&set.label, &data, files, &work, runs)?,
            None => bench_dataset(&set.label, &data, &work, runs)?,
        }
        fs::remove_dir_all(&data)?;
    }
    Ok(())
}

/// What the restic-format rows found beyond times: bytes each re-backup added.
struct Growth {
    /// An unchanged re-backup: Backstop, restic.
    unchanged: (u64, u64),
    /// 1% of the files rewritten: Backstop, restic, and the rewritten bytes zstd -3 compressed.
    changed: (u64, u64, u64),
}

/// Backstop's restic format (`backstop mover restic-backup`, a directory repository) against
/// restic 0.14, in turns: a first backup into a fresh repository, an unchanged re-backup, one
/// with 1% of the files rewritten (incompressible bytes, same sizes), and a restore of the
/// latest snapshot (found by restic itself).
fn restic_format_rows(
    t: &mut Table,
    backstop: &Path,
    data: &Path,
    work: &Path,
    target: &Path,
) -> anyhow::Result<Growth> {
    const OURS: &str = "backstop restic format";
    const THEIRS: &str = "restic 0.14";
    let ours_repo = work.join("repo-restic");
    let ours_restic = ours_repo.join("bench/_restic");
    let theirs_repo = work.join("restic");
    let restic = |repo: &Path, args: &[&str]| {
        let mut c = Command::new("restic");
        c.env("RESTIC_PASSWORD", "bench")
            .args(["-q", "--no-cache", "-r"])
            .arg(repo)
            .args(args)
            .stdout(std::process::Stdio::null());
        c
    };
    let ours = |verb: &str| {
        let mut c = Command::new(backstop);
        c.args(["mover", verb, "--repository"])
            .arg(&ours_repo)
            .env("RESTIC_PASSWORD", "bench")
            .stdout(std::process::Stdio::null());
        c
    };
    let backup_ours = || {
        let mut c = ours("restic-backup");
        c.args(["--root", "bench/_restic", "--source"])
            .arg(data)
            .args(["--pvc", "data", "--host", "bench"]);
        c
    };
    let backup_theirs = || {
        let mut c = restic(&theirs_repo, &["backup"]);
        c.arg(data);
        c
    };
    let succeed = |mut c: Command| -> anyhow::Result<()> {
        anyhow::ensure!(c.status()?.success(), "{c:?} failed");
        Ok(())
    };
    t.measure_in_turns(vec![
        (
            OURS,
            "backup",
            Box::new(|| {
                fresh(&ours_repo)?;
                let mut init = ours("probe");
                init.args(["--restic", "bench/_restic"]);
                succeed(init)?;
                Ok(backup_ours())
            }),
        ),
        (
            THEIRS,
            "backup",
            Box::new(|| {
                fresh(&theirs_repo)?;
                succeed(restic(&theirs_repo, &["init"]))?;
                Ok(backup_theirs())
            }),
        ),
    ])?;
    t.artifact(OURS, du(&ours_repo)?);
    t.artifact(THEIRS, du(&theirs_repo)?);
    t.measure_in_turns(vec![
        (OURS, "re-backup, unchanged", Box::new(|| Ok(backup_ours()))),
        (
            THEIRS,
            "re-backup, unchanged",
            Box::new(|| Ok(backup_theirs())),
        ),
    ])?;
    let added = |repo: &Path, backup: &dyn Fn() -> Command| -> anyhow::Result<u64> {
        let before = du(repo)?;
        succeed(backup())?;
        Ok(du(repo)?.saturating_sub(before))
    };
    let unchanged = (
        added(&ours_repo, &backup_ours)?,
        added(&theirs_repo, &backup_theirs)?,
    );

    // Every hundredth file, rewritten with new bytes of the same length before each run.
    let mut files = Vec::new();
    dataset::walk_files(data, &mut files)?;
    files.sort();
    let changed: Vec<PathBuf> = files.into_iter().step_by(100).collect();
    let round = std::cell::Cell::new(0u64);
    let rewrite = || -> anyhow::Result<()> {
        round.set(round.get() + 1);
        for (i, f) in changed.iter().enumerate() {
            let len = fs::metadata(f)?.len() as usize;
            fs::write(f, noise(len, round.get() * 1_000_003 + i as u64))?;
        }
        Ok(())
    };
    t.measure_in_turns(vec![
        (
            OURS,
            "re-backup, 1% of files changed",
            Box::new(|| {
                rewrite()?;
                Ok(backup_ours())
            }),
        ),
        (
            THEIRS,
            "re-backup, 1% of files changed",
            Box::new(|| {
                rewrite()?;
                Ok(backup_theirs())
            }),
        ),
    ])?;
    rewrite()?;
    let ours_added = added(&ours_repo, &backup_ours)?;
    let theirs_added = added(&theirs_repo, &backup_theirs)?;
    let list = changed
        .iter()
        .map(|p| format!("'{}'", p.display()))
        .collect::<Vec<_>>()
        .join(" ");
    let out = sh(&format!("cat {list} | zstd -3 -c | wc -c")).output()?;
    let compressed = String::from_utf8_lossy(&out.stdout).trim().parse()?;

    let latest = |repo: &Path| -> anyhow::Result<String> {
        let out = Command::new("restic")
            .env("RESTIC_PASSWORD", "bench")
            .args(["-q", "--no-cache", "-r"])
            .arg(repo)
            .args(["snapshots", "--json", "--latest", "1"])
            .output()?;
        let snapshots: serde_json::Value = serde_json::from_slice(&out.stdout)?;
        snapshots[0]["id"]
            .as_str()
            .map(str::to_string)
            .context("no snapshot")
    };
    let ours_latest = latest(&ours_restic)?;
    t.measure_in_turns(vec![
        (
            OURS,
            "restore (verifying)",
            Box::new(|| {
                fresh(target)?;
                let mut c = ours("restic-restore");
                c.args([
                    "--root",
                    "bench/_restic",
                    "--snapshot",
                    &ours_latest,
                    "--target",
                ])
                .arg(target);
                Ok(c)
            }),
        ),
        (
            THEIRS,
            "restore",
            Box::new(|| {
                fresh(target)?;
                let mut c = restic(&theirs_repo, &["restore", "latest", "--target"]);
                c.arg(target);
                Ok(c)
            }),
        ),
    ])?;
    Ok(Growth {
        unchanged,
        changed: (ours_added, theirs_added, compressed),
    })
}

/// Incompressible bytes from a seed.
fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// The restic-format figures against their goals.
fn print_restic_summary(rows: &[Row], growth: &Growth) {
    let wall = |tool: &str, op: &str| {
        rows.iter()
            .find(|r| r.tool == tool && r.op == op)
            .map_or(f64::NAN, |r| r.m.wall)
    };
    let speedup = |ours: &str, theirs: &str| {
        wall("restic 0.14", theirs) / wall("backstop restic format", ours)
    };
    println!(
        "Backstop restic format: first backup {:.2}x restic (goal >= 1.0), restore {:.2}x restic restore (goal >= 1.0), unchanged re-backup {:.2}x restic (goal >= 1.0) adding {} bytes (restic {}); 1% of files changed: {} bytes added for {} bytes changed, zstd -3 compressed ({:.2}x, goal <= 1.2; restic added {})",
        speedup("backup", "backup"),
        speedup("restore (verifying)", "restore"),
        speedup("re-backup, unchanged", "re-backup, unchanged"),
        growth.unchanged.0,
        growth.unchanged.1,
        growth.changed.0,
        growth.changed.2,
        growth.changed.0 as f64 / growth.changed.2.max(1) as f64,
        growth.changed.1,
    );
}
