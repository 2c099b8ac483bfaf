//! Load from wrk: a fixed number of keep-alive connections for a fixed time, its results
//! reported by a Lua `done` hook as one JSON line (no scraping of wrk's text).

use std::path::Path;
use std::time::Duration;

use anyhow::{Context as _, bail};
use tokio::process::Command;

/// Reports a run as `BENCH {...}`, and sends `BENCH_BODY` as a JSON POST when set.
const SCRIPT: &str = r#"
local body = os.getenv("BENCH_BODY")
if body ~= nil and body ~= "" then
  wrk.method = "POST"
  wrk.body = body
  wrk.headers["Content-Type"] = "application/json"
end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH {"requests":%d,"duration_us":%d,"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d,"p50_us":%d,"p90_us":%d,"p99_us":%d,"max_us":%d}\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    math.floor(latency:percentile(50)), math.floor(latency:percentile(90)),
    math.floor(latency:percentile(99)), math.floor(latency.max)))
end
"#;

/// One load run's outcome.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct Stats {
    pub requests: u64,
    pub duration_us: u64,
    pub connect: u64,
    pub read: u64,
    pub write: u64,
    /// Responses with a status of 400 or more.
    pub status: u64,
    pub timeout: u64,
    pub p50_us: u64,
    pub p90_us: u64,
    pub p99_us: u64,
    pub max_us: u64,
}

impl Stats {
    pub fn rps(&self) -> f64 {
        self.requests as f64 / (self.duration_us.max(1) as f64 / 1e6)
    }

    /// Requests that did not get a good answer: socket errors, timeouts and 4xx/5xx.
    pub fn failures(&self) -> u64 {
        self.connect + self.read + self.write + self.status + self.timeout
    }
}

/// What to send.
#[derive(Clone)]
pub struct Load<'a> {
    pub url: &'a str,
    pub connections: u32,
    pub duration: Duration,
    pub headers: &'a [(&'a str, &'a str)],
    /// A JSON body, sent as a POST.
    pub body: Option<&'a str>,
}

pub async fn wrk(wrk: &Path, scratch: &Path, load: &Load<'_>) -> anyhow::Result<Stats> {
    let script = scratch.join("report.lua");
    if !script.exists() {
        std::fs::write(&script, SCRIPT).context("cannot write the wrk script")?;
    }
    let mut command = Command::new(wrk);
    command
        .args(["-t1", "--timeout", "5s"])
        .arg(format!("-c{}", load.connections))
        // wrk takes whole seconds.
        .arg(format!(
            "-d{}s",
            load.duration.as_secs_f64().ceil().max(1.0)
        ))
        .arg("-s")
        .arg(&script)
        .env("BENCH_BODY", load.body.unwrap_or_default());
    for (name, value) in load.headers {
        command.arg("-H").arg(format!("{name}: {value}"));
    }
    let output = command
        .arg(load.url)
        .output()
        .await
        .context("cannot run wrk")?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        bail!(
            "wrk failed on {}: {}{}",
            load.url,
            stdout,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix("BENCH "))
        .with_context(|| format!("wrk printed no result for {}:\n{stdout}", load.url))?;
    serde_json::from_str(line).with_context(|| format!("wrk's result is not JSON: {line}"))
}

/// Several runs of one server, summarised by medians.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Summary {
    pub rps: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    /// Summed over the runs.
    pub failures: u64,
    pub runs: Vec<Stats>,
}

impl Summary {
    pub fn of(runs: Vec<Stats>) -> Summary {
        let median = |f: &dyn Fn(&Stats) -> f64| {
            let mut values: Vec<f64> = runs.iter().map(f).collect();
            values.sort_by(f64::total_cmp);
            values.get(values.len() / 2).copied().unwrap_or(0.0)
        };
        Summary {
            rps: median(&Stats::rps),
            p50_ms: median(&|s| s.p50_us as f64 / 1e3),
            p99_ms: median(&|s| s.p99_us as f64 / 1e3),
            failures: runs.iter().map(Stats::failures).sum(),
            runs,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stats(requests: u64, p99_us: u64) -> Stats {
        Stats {
            requests,
            duration_us: 1_000_000,
            connect: 0,
            read: 0,
            write: 0,
            status: 1,
            timeout: 0,
            p50_us: p99_us / 2,
            p90_us: p99_us,
            p99_us,
            max_us: p99_us,
        }
    }

    #[test]
    fn medians_are_taken_per_measure() {
        let summary = Summary::of(vec![stats(100, 9000), stats(300, 1000), stats(200, 5000)]);
        assert_eq!(summary.rps, 200.0);
        assert_eq!(summary.p99_ms, 5.0);
        assert_eq!(summary.failures, 3);
    }
}
