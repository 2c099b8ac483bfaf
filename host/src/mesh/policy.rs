//! `[component.<id>.tool.berth.calls."<host>"]`: the policy of a component's calls to one
//! destination (a host it may reach, or `<component>.spin.internal`), checked at load.
//!
//! | key | default | meaning |
//! |---|---|---|
//! | `timeout_ms` | none | the whole call, retries and waits included; then 504 |
//! | `retries` | 0 | tries after the first, for idempotent requests only |
//! | `per_try_timeout_ms` | none | one try; a try that takes longer counts as failed |
//! | `retry_on` | `["connect-failure", "5xx", "429"]` | which failures are tried again |
//! | `backoff_base_ms`, `backoff_max_ms` | 25, 1000 | exponential backoff with full jitter |
//! | `retry_budget_percent` | 20 | retries as a share of calls, past a reserve of 10 |
//! | `consecutive_failures` | none (no breaker) | 5xx or connection failures in a row that eject the destination |
//! | `base_ejection_ms`, `max_ejection_ms` | 30000, 300000 | how long an ejection lasts, growing with each |

use std::time::Duration;

use serde::Deserialize;

use super::breaker::BreakerSettings;
use super::retry::{Backoff, RetryOn};

/// As written in the manifest.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CallSettings {
    #[serde(default)]
    pub timeout_ms: Option<u64>,
    #[serde(default)]
    pub retries: Option<u32>,
    #[serde(default)]
    pub per_try_timeout_ms: Option<u64>,
    #[serde(default)]
    pub retry_on: Option<Vec<String>>,
    #[serde(default)]
    pub backoff_base_ms: Option<u64>,
    #[serde(default)]
    pub backoff_max_ms: Option<u64>,
    #[serde(default)]
    pub retry_budget_percent: Option<u32>,
    #[serde(default)]
    pub consecutive_failures: Option<u32>,
    #[serde(default)]
    pub base_ejection_ms: Option<u64>,
    #[serde(default)]
    pub max_ejection_ms: Option<u64>,
}

/// The most retries a policy may ask for: more only multiplies a failing destination's load.
pub const MAX_RETRIES: u32 = 10;

/// A checked policy.
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    pub timeout: Option<Duration>,
    pub retries: u32,
    pub per_try_timeout: Option<Duration>,
    pub retry_on: RetryOn,
    pub backoff: Backoff,
    pub budget_percent: u32,
    pub breaker: Option<BreakerSettings>,
}

impl CallSettings {
    /// Checks the settings; each problem names its key.
    pub fn policy(&self) -> Result<Policy, Vec<String>> {
        let mut problems = Vec::new();
        let millis = |key: &str, value: Option<u64>, problems: &mut Vec<String>| match value {
            Some(0) => {
                problems.push(format!("{key} = 0: use 1 or more"));
                None
            }
            other => other.map(Duration::from_millis),
        };
        let timeout = millis("timeout_ms", self.timeout_ms, &mut problems);
        let per_try_timeout = millis("per_try_timeout_ms", self.per_try_timeout_ms, &mut problems);
        let retries = self.retries.unwrap_or(0);
        if retries > MAX_RETRIES {
            problems.push(format!("retries = {retries}: use 0 to {MAX_RETRIES}"));
        }
        let retry_on = match &self.retry_on {
            None => RetryOn::all(),
            Some(names) => RetryOn::parse(names).unwrap_or_else(|e| {
                problems.push(e);
                RetryOn::default()
            }),
        };
        let base = millis("backoff_base_ms", self.backoff_base_ms, &mut problems)
            .unwrap_or(Duration::from_millis(25));
        let max = millis("backoff_max_ms", self.backoff_max_ms, &mut problems)
            .unwrap_or(Duration::from_secs(1));
        if max < base {
            problems.push(format!(
                "backoff_max_ms = {} is below backoff_base_ms = {}",
                max.as_millis(),
                base.as_millis()
            ));
        }
        let budget_percent = self.retry_budget_percent.unwrap_or(20);
        if budget_percent > 100 {
            problems.push(format!(
                "retry_budget_percent = {budget_percent}: use 0 to 100"
            ));
        }
        if let (Some(total), Some(one)) = (timeout, per_try_timeout)
            && one > total
        {
            problems.push(format!(
                "per_try_timeout_ms = {} is longer than timeout_ms = {}: one try could never take it",
                one.as_millis(),
                total.as_millis()
            ));
        }
        let breaker = match self.consecutive_failures {
            None => {
                if self.base_ejection_ms.is_some() || self.max_ejection_ms.is_some() {
                    problems.push(
                        "base_ejection_ms and max_ejection_ms need consecutive_failures, the \
                         failures in a row that eject the destination"
                            .to_owned(),
                    );
                }
                None
            }
            Some(0) => {
                problems.push("consecutive_failures = 0: use 1 or more".to_owned());
                None
            }
            Some(consecutive_failures) => {
                let base_ejection =
                    millis("base_ejection_ms", self.base_ejection_ms, &mut problems)
                        .unwrap_or(Duration::from_secs(30));
                let max_ejection = millis("max_ejection_ms", self.max_ejection_ms, &mut problems)
                    .unwrap_or(Duration::from_secs(300))
                    .max(base_ejection);
                Some(BreakerSettings {
                    consecutive_failures,
                    base_ejection,
                    max_ejection,
                })
            }
        };
        if !problems.is_empty() {
            return Err(problems);
        }
        Ok(Policy {
            timeout,
            retries,
            per_try_timeout,
            retry_on,
            backoff: Backoff { base, max },
            budget_percent,
            breaker,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(toml: &str) -> CallSettings {
        toml::from_str(toml).unwrap()
    }

    #[test]
    fn a_full_policy_reads_with_its_defaults() {
        let policy = settings(
            "timeout_ms = 2000\nretries = 3\nper_try_timeout_ms = 500\nretry_on = [\"5xx\"]\n\
             consecutive_failures = 5\nbase_ejection_ms = 1000",
        )
        .policy()
        .unwrap();
        assert_eq!(policy.timeout, Some(Duration::from_secs(2)));
        assert_eq!(policy.retries, 3);
        assert!(policy.retry_on.server_error && !policy.retry_on.connect_failure);
        assert_eq!(policy.budget_percent, 20);
        let breaker = policy.breaker.unwrap();
        assert_eq!(breaker.consecutive_failures, 5);
        assert_eq!(breaker.base_ejection, Duration::from_secs(1));
        assert_eq!(breaker.max_ejection, Duration::from_secs(300));
        let none = settings("").policy().unwrap();
        assert_eq!(none.retries, 0);
        assert_eq!(none.breaker, None);
        assert_eq!(none.retry_on, RetryOn::all());
    }

    #[test]
    fn bad_values_are_refused_each_with_its_key() {
        let problems = settings(
            "timeout_ms = 100\nper_try_timeout_ms = 500\nretries = 50\nretry_on = [\"reset\"]\n\
             retry_budget_percent = 300\nbase_ejection_ms = 10",
        )
        .policy()
        .unwrap_err()
        .join("\n");
        for expected in [
            "per_try_timeout_ms = 500 is longer than timeout_ms = 100",
            "retries = 50",
            "`reset`",
            "retry_budget_percent = 300",
            "need consecutive_failures",
        ] {
            assert!(problems.contains(expected), "{expected}: {problems}");
        }
        assert!(toml::from_str::<CallSettings>("retry = 3").is_err());
    }
}
