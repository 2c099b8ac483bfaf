//! A server under test: a child process on a free loopback port, its output in a log file,
//! ready once it answers, killed when dropped.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use tokio::process::{Child, Command};

/// How long any server may take to become ready (a cold berth compiles every component).
const READY_TIMEOUT: Duration = Duration::from_secs(180);

pub struct Server {
    pub name: String,
    /// `http://127.0.0.1:<port>`
    pub url: String,
    child: Child,
    log: PathBuf,
}

/// What "ready" means for a server.
pub enum Ready {
    /// This URL answers 200.
    Ok(String),
    /// The server answers anything at all on its own URL.
    Answers,
}

impl Server {
    /// Starts `command` (which must listen on `port`) and waits until it is ready; the
    /// returned duration is from spawn to ready.
    pub async fn start(
        name: &str,
        mut command: Command,
        port: u16,
        ready: Ready,
        logs: &Path,
    ) -> anyhow::Result<(Server, Duration)> {
        let log = logs.join(format!("{name}.log"));
        let file = std::fs::File::create(&log)
            .with_context(|| format!("cannot create {}", log.display()))?;
        let started = Instant::now();
        let child = command
            .stdin(Stdio::null())
            .stdout(file.try_clone()?)
            .stderr(file)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("cannot start {name}"))?;
        let mut server = Server {
            name: name.to_owned(),
            url: format!("http://127.0.0.1:{port}"),
            child,
            log,
        };
        let probe = match ready {
            Ready::Ok(url) => Some(url),
            Ready::Answers => None,
        };
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(2))
            .build()?;
        loop {
            if let Some(status) = server.child.try_wait()? {
                bail!(
                    "{name} exited ({status}) before it was ready; its log:\n{}",
                    server.log_tail()
                );
            }
            let answered = match &probe {
                Some(url) => client
                    .get(url)
                    .send()
                    .await
                    .is_ok_and(|r| r.status().is_success()),
                None => client.get(&server.url).send().await.is_ok(),
            };
            if answered {
                return Ok((server, started.elapsed()));
            }
            if started.elapsed() > READY_TIMEOUT {
                bail!(
                    "{name} was not ready after {READY_TIMEOUT:?}; its log:\n{}",
                    server.log_tail()
                );
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Resident memory, from /proc.
    pub fn rss_bytes(&self) -> anyhow::Result<u64> {
        let pid = self.child.id().context("the server has exited")?;
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
        let kb = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .context("no VmRSS in /proc/<pid>/status")?;
        Ok(kb * 1024)
    }

    /// Fails if the server died during a run: its numbers would mean nothing.
    pub fn check_alive(&mut self) -> anyhow::Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!(
                "{} exited ({status}) during the run; its log:\n{}",
                self.name,
                self.log_tail()
            );
        }
        Ok(())
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    pub async fn stop(mut self) {
        let _ = self.child.kill().await;
    }
}

/// A port free right now on 127.0.0.1.
pub fn free_port() -> anyhow::Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").context("no free port")?;
    Ok(listener.local_addr()?.port())
}

/// A berth host: `berth up` on `manifest` with its own data dir and `cache` as the compiled
/// component cache. `admin` is the admin API's URL.
pub struct Berth {
    pub server: Server,
    pub admin: String,
    pub data_dir: PathBuf,
}

/// A host's set-up beyond its manifest and directories, for hosts of a fleet.
#[derive(Default)]
pub struct Setup {
    /// `--runtime-config`.
    pub runtime_config: Option<PathBuf>,
    /// Environment variables (a database URL, the fleet's JWT key and admin token).
    pub env: Vec<(String, String)>,
    /// Variables of the harness's own environment the host must not inherit (removed
    /// before `env` is set).
    pub env_remove: Vec<String>,
}

impl Berth {
    pub async fn start(
        checkout: &crate::tools::Checkout,
        name: &str,
        manifest: &Path,
        data_dir: PathBuf,
        cache: &Path,
        logs: &Path,
    ) -> anyhow::Result<(Berth, Duration)> {
        let setup = Setup::default();
        Berth::start_with(checkout, name, manifest, data_dir, cache, logs, &setup).await
    }

    /// [`Berth::start`] with `setup`.
    pub async fn start_with(
        checkout: &crate::tools::Checkout,
        name: &str,
        manifest: &Path,
        data_dir: PathBuf,
        cache: &Path,
        logs: &Path,
        setup: &Setup,
    ) -> anyhow::Result<(Berth, Duration)> {
        let port = free_port()?;
        let admin_port = free_port()?;
        let mut command = Command::new(&checkout.berth);
        command
            .current_dir(&checkout.root)
            .arg("up")
            .arg("--manifest")
            .arg(manifest)
            .arg("--data-dir")
            .arg(&data_dir)
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(["--admin-listen", &format!("127.0.0.1:{admin_port}")])
            .env("BERTH_CACHE_DIR", cache)
            .env_remove("RUST_LOG");
        for name in &setup.env_remove {
            command.env_remove(name);
        }
        command.envs(setup.env.iter().map(|(k, v)| (k, v)));
        if let Some(config) = &setup.runtime_config {
            command.arg("--runtime-config").arg(config);
        }
        let admin = format!("http://127.0.0.1:{admin_port}");
        let (server, took) = Server::start(
            name,
            command,
            port,
            Ready::Ok(format!("{admin}/readyz")),
            logs,
        )
        .await?;
        Ok((
            Berth {
                server,
                admin,
                data_dir,
            },
            took,
        ))
    }

    pub fn admin_token(&self) -> anyhow::Result<String> {
        let path = self.data_dir.join("admin-token");
        Ok(std::fs::read_to_string(&path)
            .with_context(|| format!("cannot read {}", path.display()))?
            .trim()
            .to_owned())
    }
}
