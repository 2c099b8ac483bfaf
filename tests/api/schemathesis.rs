//! schemathesis against the running shop: requests generated from `openapi.yaml` (valid ones,
//! invalid ones, boundary values, chains of calls), every response checked by every check
//! schemathesis has, so that the schema and the services cannot drift apart.
//!
//! Needs the schemathesis CLI at the version `tests/schemathesis/requirements.txt` pins: found
//! through `$BERTH_SCHEMATHESIS`, on `PATH`, or in the venv `.ci/run` installs it into. Without
//! it the test fails and says how to install it.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use crate::helpers::*;

/// Where `.ci/run` installs schemathesis.
const CI_VENV_BINARY: &str = "/var/cache/berth-ci/venv/bin/schemathesis";

/// Test cases per operation and phase: enough to find a disagreement between the schema and
/// a service in about half a minute on two cores, few enough to run on every CI run.
/// `BERTH_SCHEMATHESIS_MAX_EXAMPLES` asks for more (or fewer), for a deeper run by hand.
const MAX_EXAMPLES: &str = "50";
/// schemathesis is killed past this, and the test fails with what it printed so far.
const HARD_TIMEOUT: Duration = Duration::from_secs(150);
/// The same cases every run unless `BERTH_SCHEMATHESIS_SEED` asks for others.
const DEFAULT_SEED: &str = "20261201";

const INSTALL_HINT: &str = "install it from the repository's root with\n  \
    python3 -m venv /var/cache/berth-ci/venv\n  \
    /var/cache/berth-ci/venv/bin/pip install -r tests/schemathesis/requirements.txt\n\
    or point BERTH_SCHEMATHESIS at a schemathesis binary of the version pinned there";

/// The version `requirements.txt` pins (`schemathesis==X.Y.Z`).
fn pinned_version() -> String {
    let path = repo("tests/schemathesis/requirements.txt");
    let text = std::fs::read_to_string(&path).expect("tests/schemathesis/requirements.txt");
    text.lines()
        .find_map(|l| l.trim().strip_prefix("schemathesis=="))
        .map(str::to_owned)
        .unwrap_or_else(|| panic!("{} pins no schemathesis==VERSION", path.display()))
}

fn on_path(name: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

/// The schemathesis binary, at the pinned version, or a panic saying how to get it.
fn schemathesis() -> PathBuf {
    let binary = match std::env::var_os("BERTH_SCHEMATHESIS") {
        Some(path) => {
            let path = PathBuf::from(path);
            assert!(
                path.is_file(),
                "BERTH_SCHEMATHESIS={} is not a file; {}",
                path.display(),
                INSTALL_HINT
            );
            path
        }
        None => on_path("schemathesis")
            .or_else(|| {
                Path::new(CI_VENV_BINARY)
                    .is_file()
                    .then(|| CI_VENV_BINARY.into())
            })
            .unwrap_or_else(|| {
                panic!(
                    "schemathesis is not installed (not on PATH, not in {CI_VENV_BINARY}); {}",
                    INSTALL_HINT
                )
            }),
    };
    let output = std::process::Command::new(&binary)
        .arg("--version")
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}; {}", binary.display(), INSTALL_HINT));
    let version = String::from_utf8_lossy(&output.stdout);
    let pinned = pinned_version();
    assert!(
        version.trim().ends_with(&format!(" {pinned}")),
        "{} is `{}`, but the test is written for schemathesis {pinned}; {}",
        binary.display(),
        version.trim(),
        INSTALL_HINT
    );
    binary
}

/// What schemathesis is told besides the command line: who it is, which ids exist, and the
/// one check it runs differently. Written into the run's temp dir with the ids of the run.
///
/// Identities: two users, each a bearer token sent in the `Authorization` header of every
/// request (the Web Fuzzing Commons auth file). Two, so that `object_level_authorization`
/// can replay one user's reads as the other and fail if the other gets the object.
///
/// Ids: half of the path ids schemathesis makes up are replaced by ids that exist (the
/// users, their orders and payments), so that the operations behind a `{id}` get past 403 and
/// 404 into their own logic; the other half stay made up.
///
/// Checks: every check is on, for every operation, with schemathesis's defaults, with one
/// narrow exception: `positive_data_acceptance` on `GET /api/v1/orders` also takes 400 (the
/// rest of the list is the default). `cursor` is opaque: only strings this API returned as
/// `nextCursor` are positions, and no schema can list them, so a well-formed cursor that
/// schemathesis makes up is rightly refused. `limit`, the other parameter, is exact in the
/// schema and checked by `negative_data_rejection` as before.
///
/// 429 needs no exception: the gateway's limits on login and registration (spin.toml) answer
/// it with `Retry-After`, as `openapi.yaml` documents, and schemathesis accepts a documented
/// 429. Past a limit schemathesis reaches those two routes less often, and says so in a
/// warning, which does not fail the run.
fn config(auth_file: &Path, users: &[String], orders: &[String], payments: &[String]) -> String {
    let list = |ids: &[String]| {
        let quoted: Vec<String> = ids.iter().map(|id| format!("{id:?}")).collect();
        quoted.join(", ")
    };
    format!(
        r#"
[auth.wfc]
path = {auth_file:?}
peers = ["ann", "bob"]

[dictionaries.users]
values = [{users}]
[dictionaries.orders]
values = [{orders}]
[dictionaries.payments]
values = [{payments}]

[[operations]]
include-path = "/api/v1/users/{{id}}"
parameters = {{ "path.id" = {{ dictionary = "users", probability = 0.5 }} }}

[[operations]]
include-path = ["/api/v1/orders/{{id}}", "/api/v1/orders/{{id}}/cancel"]
parameters = {{ "path.id" = {{ dictionary = "orders", probability = 0.5 }} }}

[[operations]]
include-path = "/api/v1/payments/{{id}}"
parameters = {{ "path.id" = {{ dictionary = "payments", probability = 0.5 }} }}

[[operations]]
include-path = "/api/v1/payments"
parameters = {{ "query.orderId" = {{ dictionary = "orders", probability = 0.5 }} }}

[[operations]]
include-path = "/api/v1/orders"
include-method = "GET"
checks.positive_data_acceptance.expected-statuses = ["2xx", "3xx", "400", "401", "403", "404", "409", "429", "5xx"]
"#,
        auth_file = auth_file.display().to_string(),
        users = list(users),
        orders = list(orders),
        payments = list(payments),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_the_shop_and_openapi_yaml_in_agreement() {
    let binary = schemathesis();
    let app = spawn_shop().await;
    let (ann, bob) = (app.user().await, app.user().await);
    let (mut orders, mut payments) = (Vec::new(), Vec::new());
    for user in [&ann, &bob] {
        let order = app.create_order(user, 1).await;
        assert_eq!(order.status, 201, "{}", order.text);
        let order_id = order.json["id"].as_str().expect("an order id").to_owned();
        payments.push(saga_payment(&app, user, &order_id).await);
        orders.push(order_id);
    }

    let work = tempfile::tempdir().expect("temp dir");
    let auth_file = work.path().join("auth.json");
    let identities: Vec<serde_json::Value> = [("ann", &ann), ("bob", &bob)]
        .iter()
        .map(|(name, user)| {
            serde_json::json!({
                "name": name,
                "fixedHeaders": [{"name": "Authorization", "value": format!("Bearer {}", user.token)}],
            })
        })
        .collect();
    let identities = serde_json::json!({ "auth": identities });
    std::fs::write(&auth_file, identities.to_string()).expect("write auth.json");
    let config_file = work.path().join("schemathesis.toml");
    std::fs::write(
        &config_file,
        config(
            &auth_file,
            &[ann.id.clone(), bob.id.clone()],
            &orders,
            &payments,
        ),
    )
    .expect("write schemathesis.toml");
    let stdout_path = work.path().join("stdout");
    let stderr_path = work.path().join("stderr");
    let seed = std::env::var("BERTH_SCHEMATHESIS_SEED").unwrap_or_else(|_| DEFAULT_SEED.into());
    let max_examples =
        std::env::var("BERTH_SCHEMATHESIS_MAX_EXAMPLES").unwrap_or_else(|_| MAX_EXAMPLES.into());
    // The host listens on 127.0.0.1 only (helpers::spawn), and --url sends every request
    // there; redirects, which could lead elsewhere, are not followed.
    assert!(app.base.starts_with("http://127.0.0.1:"), "{}", app.base);
    let mut child = tokio::process::Command::new(&binary)
        .arg("--config-file")
        .arg(&config_file)
        .arg("--no-color")
        .arg("run")
        .arg(repo("openapi.yaml"))
        .args(["--url", &app.base])
        .args(["--checks", "all"])
        .args(["--max-examples", &max_examples])
        .args(["--seed", &seed])
        .args(["--workers", "2"])
        .args(["--max-redirects", "0"])
        .args(["--request-timeout", "20"])
        .args(["--generation-database", "none"])
        .args(["--output-truncate", "false"])
        // A proxy in the environment would carry the requests off this machine.
        .env_remove("HTTP_PROXY")
        .env_remove("http_proxy")
        .env_remove("HTTPS_PROXY")
        .env_remove("https_proxy")
        .env_remove("ALL_PROXY")
        .env_remove("all_proxy")
        .env("NO_PROXY", "*")
        .env("no_proxy", "*")
        // Reports and hypothesis's files land in the temp dir, not in the repository.
        .current_dir(work.path())
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&stdout_path).expect("stdout file"))
        .stderr(std::fs::File::create(&stderr_path).expect("stderr file"))
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", binary.display()));
    let status = match tokio::time::timeout(HARD_TIMEOUT, child.wait()).await {
        Ok(status) => Some(status.expect("wait for schemathesis")),
        Err(_) => {
            let _ = child.kill().await;
            None
        }
    };
    let printed = format!(
        "{}\n{}",
        std::fs::read_to_string(&stdout_path).unwrap_or_default(),
        std::fs::read_to_string(&stderr_path).unwrap_or_default()
    );
    let status = status.unwrap_or_else(|| {
        panic!("schemathesis did not finish within {HARD_TIMEOUT:?} and was killed:\n{printed}")
    });
    assert!(
        status.success(),
        "schemathesis (seed {seed}) found disagreements between openapi.yaml and the shop, \
         {status}:\n{printed}"
    );
    // Shown with --nocapture: what was tested, and schemathesis's warnings.
    println!("{printed}");
    // A run that tested nothing would also exit 0.
    assert!(
        printed.contains("passed") && !printed.contains("No operations"),
        "schemathesis ran no tests:\n{printed}"
    );
}
