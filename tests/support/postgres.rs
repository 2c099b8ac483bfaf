//! A real PostgreSQL server for tests, one per test process, on 127.0.0.1 at a free port,
//! with its data in a temp dir; every test takes a database of its own from it. A test that
//! needs a server to itself (to restart it) starts one with [`PostgresServer::start_owned`].
//!
//! A server is started from a thread that lives as long as the server, with
//! `PR_SET_PDEATHSIG`: when that thread ends, and so when the test process ends however it
//! ends, the kernel tells the server to shut down. Needs PostgreSQL's binaries (`apt-get
//! install postgresql`, found in `/usr/lib/postgresql/<version>/bin`, or
//! `$BERTH_POSTGRES_BIN`). As root, the server runs as the `postgres` user, since initdb
//! refuses root.

use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

pub struct PostgresServer {
    pub port: u16,
    next: AtomicU32,
    /// Where its data and log live; removed when an owned server is dropped.
    dir: PathBuf,
    /// Asks the thread that owns the server process to restart it; dropped, to stop it.
    keeper: Option<mpsc::Sender<tokio::sync::oneshot::Sender<()>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// The process's server, started on first use, shared by every test; never stopped before
/// the process ends.
pub fn postgres() -> &'static PostgresServer {
    static SERVER: OnceLock<PostgresServer> = OnceLock::new();
    SERVER.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("berth-postgres-{}", std::process::id()));
        start(dir)
    })
}

impl PostgresServer {
    /// A server of the calling test's own, with a data dir and a port of its own: stopped,
    /// and its data removed, when dropped.
    // Only some of the crates that include this file start one.
    #[allow(dead_code)]
    pub fn start_owned() -> PostgresServer {
        static OWNED: AtomicU32 = AtomicU32::new(0);
        let n = OWNED.fetch_add(1, Ordering::Relaxed);
        let dir =
            std::env::temp_dir().join(format!("berth-postgres-{}-owned-{n}", std::process::id()));
        start(dir)
    }

    /// Restarts the server on the same port and data dir, the way an operator's restart
    /// does: a fast shutdown, which terminates every connection and rolls back every open
    /// transaction, then a start. Returns once it listens again (it may still refuse
    /// queries for a moment while it starts up).
    #[allow(dead_code)]
    pub async fn restart(&self) {
        let keeper = self
            .keeper
            .as_ref()
            .expect("the server's keeper thread runs");
        let (done, restarted) = tokio::sync::oneshot::channel();
        keeper
            .send(done)
            .expect("the server's keeper thread takes requests");
        restarted
            .await
            .expect("the server's keeper thread restarts it");
        let started = Instant::now();
        while tokio::net::TcpStream::connect(("127.0.0.1", self.port))
            .await
            .is_err()
        {
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "PostgreSQL did not listen again within 30 s:\n{}",
                std::fs::read_to_string(self.dir.join("log")).unwrap_or_default()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The URL of the server's superuser on a database no other test uses.
    pub async fn fresh_database(&self) -> String {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let name = format!("test_{}_{n}", std::process::id());
        let mut admin = sqlx::postgres::PgConnectOptions::new()
            .host("127.0.0.1")
            .port(self.port)
            .username("postgres")
            .database("postgres");
        admin = admin.password("unused");
        use sqlx::{ConnectOptions as _, Executor as _};
        // It listens a moment before it takes queries.
        let started = Instant::now();
        let mut conn = loop {
            match admin.connect().await {
                Ok(conn) => break conn,
                Err(e) if started.elapsed() < Duration::from_secs(30) => {
                    let _ = e;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => panic!("connect to the test PostgreSQL: {e}"),
            }
        };
        conn.execute(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .await
            .expect("create a test database");
        format!("postgres://postgres:unused@127.0.0.1:{}/{name}", self.port)
    }
}

fn bin_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("BERTH_POSTGRES_BIN") {
        return dir.into();
    }
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .map(|e| e.path().join("bin"))
        .filter(|bin| bin.join("postgres").is_file())
        .collect();
    found.sort();
    found.pop().unwrap_or_else(|| {
        panic!(
            "PostgreSQL is not installed: `apt-get install postgresql`, or point BERTH_POSTGRES_BIN at its bin directory"
        )
    })
}

/// The uid and gid to run as: `postgres` when this process is root, else our own.
fn identity() -> Option<(u32, u32)> {
    // SAFETY: getuid cannot fail.
    if unsafe { libc::getuid() } != 0 {
        return None;
    }
    let id = |flag: &str| -> u32 {
        let out = Command::new("id")
            .args([flag, "postgres"])
            .output()
            .expect("run id");
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .expect("a postgres user exists (apt-get install postgresql)")
    };
    Some((id("-u"), id("-g")))
}

fn as_identity(command: &mut Command, who: Option<(u32, u32)>, die_with_parent: bool) {
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        command.pre_exec(move || {
            if let Some((uid, gid)) = who
                && (libc::setgid(gid) != 0 || libc::setuid(uid) != 0)
            {
                return Err(std::io::Error::last_os_error());
            }
            // After the change of user, which would clear it. SIGINT: a fast shutdown.
            if die_with_parent && libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGINT) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

impl Drop for PostgresServer {
    /// Stops an owned server (the shared one lives in a static, never dropped) and removes
    /// its data.
    fn drop(&mut self) {
        // Its keeper thread stops the server once no one can ask for a restart.
        drop(self.keeper.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Initialises a cluster in `dir` and starts a server on it, at a free port.
fn start(dir: PathBuf) -> PostgresServer {
    let bin = bin_dir();
    let who = identity();
    remove_stale_dirs();
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create the PostgreSQL dir");
    if let Some((uid, gid)) = who {
        std::os::unix::fs::chown(&dir, Some(uid), Some(gid)).expect("chown the PostgreSQL dir");
    }
    let data = dir.join("data");
    let mut initdb = Command::new(bin.join("initdb"));
    initdb
        .arg("-D")
        .arg(&data)
        .args(["-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync"])
        .stdout(std::process::Stdio::null());
    as_identity(&mut initdb, who, false);
    let output = initdb.output().expect("run initdb");
    assert!(
        output.status.success(),
        "initdb failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    // TLS on, as production servers have it: a client may ask for it (`sslmode=require`),
    // and sqlx's default (`prefer`) uses it.
    let mut certificate = Command::new("openssl");
    certificate
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
        ])
        .args([
            "-subj",
            "/CN=127.0.0.1",
            "-keyout",
            "server.key",
            "-out",
            "server.crt",
        ])
        .current_dir(&data)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    as_identity(&mut certificate, who, false);
    let made = certificate
        .status()
        .expect("run openssl (apt-get install openssl)");
    assert!(made.success(), "openssl could not make a test certificate");
    {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(
            data.join("server.key"),
            std::fs::Permissions::from_mode(0o600),
        )
        .expect("make the key private");
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let log = dir.join("log");
    let socket_dir = dir.clone();
    let command = move || {
        // Appended to, so that a restarted server's log follows the first one's.
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .expect("open the log");
        let mut postgres = Command::new(bin.join("postgres"));
        postgres
            .arg("-D")
            .arg(&data)
            .args(["-c", "listen_addresses=127.0.0.1", "-p", &port.to_string()])
            .arg("-k")
            .arg(&socket_dir)
            .args([
                "-c",
                "fsync=off",
                "-c",
                "max_connections=300",
                "-c",
                "ssl=on",
            ])
            .stdout(std::process::Stdio::null())
            .stderr(log);
        as_identity(&mut postgres, who, true);
        postgres
    };
    // The thread that starts the server lives as long as it should run: the server is told
    // to stop when that thread, or the process, ends.
    let (keeper, requests) = mpsc::channel::<tokio::sync::oneshot::Sender<()>>();
    let (started, result) = mpsc::channel();
    let thread = std::thread::spawn(move || {
        let mut child = match command().spawn() {
            Ok(child) => child,
            Err(e) => {
                let _ = started.send(Err(e));
                return;
            }
        };
        let _ = started.send(Ok(()));
        // Each request is a restart; once the sender is gone (an owned server dropped),
        // the server stops with this thread.
        for restarted in requests {
            fast_shutdown(&mut child);
            child = command().spawn().expect("start postgres again");
            let _ = restarted.send(());
        }
        fast_shutdown(&mut child);
    });
    result
        .recv()
        .expect("the PostgreSQL thread answers")
        .expect("start postgres");
    wait_until_listening(port, &dir.join("log"));
    PostgresServer {
        port,
        next: AtomicU32::new(0),
        dir,
        keeper: Some(keeper),
        thread: Some(thread),
    }
}

/// SIGINT, PostgreSQL's fast shutdown: every session is terminated, then it stops.
fn fast_shutdown(child: &mut std::process::Child) {
    if let Ok(pid) = libc::pid_t::try_from(child.id()) {
        // SAFETY: signals the server this thread started and has not yet waited for.
        unsafe { libc::kill(pid, libc::SIGINT) };
    }
    let _ = child.wait();
}

fn wait_until_listening(port: u16, log: &Path) {
    let started = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "PostgreSQL did not listen within 30 s:\n{}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The data dirs of test processes that are gone: their servers went with them.
fn remove_stale_dirs() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.filter_map(Result::ok) {
        let name = entry.file_name().to_string_lossy().into_owned();
        // `berth-postgres-<pid>`, or `berth-postgres-<pid>-owned-<n>`.
        let Some(pid) = name
            .strip_prefix("berth-postgres-")
            .and_then(|p| p.split('-').next())
            .and_then(|p| p.parse::<libc::pid_t>().ok())
        else {
            continue;
        };
        // SAFETY: signal 0 only asks whether the process exists.
        let alive = unsafe { libc::kill(pid, 0) } == 0
            || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM);
        if !alive {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}
