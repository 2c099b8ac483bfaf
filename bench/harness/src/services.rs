//! The services a fleet shares, started by the harness for the sitting and stopped with it:
//! a PostgreSQL server (a fresh database per configuration) and NATS JetStream servers, each
//! on a free port of 127.0.0.1 with its data in a temp dir of its own.
//!
//! Both are children of the harness, killed when dropped, so an error or a panic takes them
//! down too; Ctrl-C reaches them with the harness's process group.

use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use tokio::process::{Child, Command};

use crate::server::free_port;

/// How long a service may take to listen.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// The settings PostgreSQL runs with, beside its defaults. `synchronous_commit = off` is the
/// durability berth's SQLite has (WAL, `synchronous = NORMAL`): a crash of the server can
/// lose the last commits, never corrupt; every host of every configuration holds up to 64
/// connections.
const POSTGRES_SETTINGS: [&str; 2] = ["synchronous_commit=off", "max_connections=400"];

/// Why a fleet cannot run here, with what installs what is missing; `None` if it can.
pub fn missing() -> Option<String> {
    let mut missing = Vec::new();
    if crate::tools::which("nats-server").is_none() {
        missing.push("nats-server");
    }
    if postgres_bin().is_none() {
        missing.push("postgresql");
    }
    (!missing.is_empty()).then(|| {
        format!(
            "{} not installed (`apt-get install -y {}`)",
            missing.join(" and "),
            missing.join(" ")
        )
    })
}

/// PostgreSQL's bin directory: `$BERTH_POSTGRES_BIN`, else the newest
/// `/usr/lib/postgresql/<version>/bin` (Debian's layout).
fn postgres_bin() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("BERTH_POSTGRES_BIN") {
        return Some(dir.into());
    }
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = entry.path().join("bin");
            bin.join("postgres").is_file().then_some((version, bin))
        })
        .collect();
    found.sort();
    found.pop().map(|(_, bin)| bin)
}

/// Who PostgreSQL runs as: the `postgres` user when the harness is root (initdb and the
/// server refuse root), else the harness's own user (`None`).
fn postgres_identity() -> anyhow::Result<Option<(u32, u32)>> {
    let me = std::fs::metadata("/proc/self")
        .context("cannot read /proc/self")?
        .uid();
    if me != 0 {
        return Ok(None);
    }
    let passwd = std::fs::read_to_string("/etc/passwd").context("cannot read /etc/passwd")?;
    passwd
        .lines()
        .find_map(|line| {
            let fields: Vec<&str> = line.split(':').collect();
            match fields[..] {
                ["postgres", _, uid, gid, ..] => Some((uid.parse().ok()?, gid.parse().ok()?)),
                _ => None,
            }
        })
        .map(Some)
        .context("running as root, and there is no `postgres` user to run PostgreSQL as (apt-get install -y postgresql creates it)")
}

/// A command that runs as `who`, if given, in `dir`.
fn command_as(program: PathBuf, who: Option<(u32, u32)>, dir: &Path) -> Command {
    let mut command = Command::new(program);
    command.current_dir(dir);
    if let Some((uid, gid)) = who {
        // The supplementary groups are dropped too, by the standard library.
        command.gid(gid).uid(uid);
    }
    command
}

/// Waits until something accepts connections on 127.0.0.1:`port`, while `child` lives.
async fn wait_listening(
    name: &str,
    child: &mut Child,
    port: u16,
    log: &Path,
) -> anyhow::Result<()> {
    let started = Instant::now();
    loop {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return Ok(());
        }
        if let Some(status) = child.try_wait()? {
            bail!(
                "{name} exited ({status}) before it listened; its log:\n{}",
                tail(log)
            );
        }
        if started.elapsed() > START_TIMEOUT {
            bail!(
                "{name} did not listen within {START_TIMEOUT:?}; its log:\n{}",
                tail(log)
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

/// A PostgreSQL server of the harness's own: `initdb` into a temp dir, then `postgres` on a
/// free port of 127.0.0.1 with trust authentication (only loopback can reach it).
pub struct Postgres {
    pub port: u16,
    bin: PathBuf,
    who: Option<(u32, u32)>,
    child: Child,
    /// Data directory and log; removed when dropped, after the server has stopped.
    dir: tempfile::TempDir,
}

impl Postgres {
    pub async fn start() -> anyhow::Result<Postgres> {
        let bin = postgres_bin().context(
            "PostgreSQL is not installed (`apt-get install -y postgresql`, or point BERTH_POSTGRES_BIN at its bin directory)",
        )?;
        let who = postgres_identity()?;
        let dir = tempfile::Builder::new()
            .prefix("berth-bench-postgres-")
            .tempdir()
            .context("cannot create a directory for PostgreSQL")?;
        if let Some((uid, gid)) = who {
            std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid))
                .with_context(|| format!("cannot hand {} to postgres", dir.path().display()))?;
        }
        let data = dir.path().join("data");
        let log_path = dir.path().join("postgres.log");
        let initdb = command_as(bin.join("initdb"), who, dir.path())
            .arg("-D")
            .arg(&data)
            .args(["-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync"])
            .stdin(Stdio::null())
            .output()
            .await
            .context("cannot run initdb")?;
        anyhow::ensure!(
            initdb.status.success(),
            "initdb failed ({}): {}",
            initdb.status,
            String::from_utf8_lossy(&initdb.stderr)
        );
        let port = free_port()?;
        let log = std::fs::File::create(&log_path)
            .with_context(|| format!("cannot create {}", log_path.display()))?;
        let mut command = command_as(bin.join("postgres"), who, dir.path());
        command
            .arg("-D")
            .arg(&data)
            .args(["-c", "listen_addresses=127.0.0.1", "-p", &port.to_string()])
            // The Unix socket in its own directory, not /var/run/postgresql.
            .arg("-k")
            .arg(dir.path());
        for setting in POSTGRES_SETTINGS {
            command.args(["-c", setting]);
        }
        let mut child = command
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .context("cannot start postgres")?;
        wait_listening("postgres", &mut child, port, &log_path).await?;
        let server = Postgres {
            port,
            bin,
            who,
            child,
            dir,
        };
        // It listens a moment before it takes connections.
        let started = Instant::now();
        loop {
            let ready = Command::new(server.bin.join("pg_isready"))
                .args(["-q", "-h", "127.0.0.1", "-p", &port.to_string()])
                .args(["-U", "postgres", "-d", "postgres"])
                .status()
                .await
                .context("cannot run pg_isready")?;
            if ready.success() {
                break;
            }
            if started.elapsed() > START_TIMEOUT {
                bail!(
                    "PostgreSQL did not take connections within {START_TIMEOUT:?}; its log:\n{}",
                    tail(&log_path)
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(server)
    }

    /// A new, empty database named `name`, and its URL.
    pub async fn create_database(&self, name: &str) -> anyhow::Result<String> {
        let created = Command::new(self.bin.join("createdb"))
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args(["-U", "postgres", name])
            .stdin(Stdio::null())
            .output()
            .await
            .context("cannot run createdb")?;
        anyhow::ensure!(
            created.status.success(),
            "createdb {name} failed: {}",
            String::from_utf8_lossy(&created.stderr)
        );
        Ok(format!(
            "postgres://postgres@127.0.0.1:{}/{name}",
            self.port
        ))
    }

    /// Stops the server with a fast shutdown (`pg_ctl stop -m fast`), killing it if that
    /// fails or takes longer than 20 s.
    pub async fn stop(mut self) {
        let stopped = command_as(self.bin.join("pg_ctl"), self.who, self.dir.path())
            .arg("-D")
            .arg(self.dir.path().join("data"))
            .args(["stop", "-m", "fast", "-w", "-t", "20"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .await
            .is_ok_and(|s| s.success());
        if !stopped {
            let _ = self.child.kill().await;
        }
        let _ = tokio::time::timeout(Duration::from_secs(5), self.child.wait()).await;
    }
}

impl Drop for Postgres {
    /// On an error or a panic, the server is killed and waited for (a moment), so that its
    /// directory can go after it.
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.start_kill();
            let deadline = Instant::now() + Duration::from_secs(5);
            while matches!(self.child.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

/// `nats-server -js` on a free port of 127.0.0.1, its JetStream store in a temp dir.
pub struct Nats {
    pub url: String,
    child: Child,
    /// The JetStream store; removed when dropped.
    _store: tempfile::TempDir,
}

impl Nats {
    /// Starts one, logging to `<logs>/<name>.log`.
    pub async fn start(name: &str, logs: &Path) -> anyhow::Result<Nats> {
        let program = crate::tools::which("nats-server")
            .context("nats-server is not installed (`apt-get install -y nats-server`)")?;
        let store = tempfile::Builder::new()
            .prefix("berth-bench-nats-")
            .tempdir()
            .context("cannot create a directory for NATS")?;
        let port = free_port()?;
        let log_path = logs.join(format!("{name}.log"));
        let log = std::fs::File::create(&log_path)
            .with_context(|| format!("cannot create {}", log_path.display()))?;
        let mut child = Command::new(program)
            .args(["-js", "-a", "127.0.0.1", "-p", &port.to_string(), "-sd"])
            .arg(store.path())
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .context("cannot start nats-server")?;
        wait_listening(name, &mut child, port, &log_path).await?;
        Ok(Nats {
            url: format!("nats://127.0.0.1:{port}"),
            child,
            _store: store,
        })
    }

    pub async fn stop(mut self) {
        let _ = self.child.kill().await;
    }
}
