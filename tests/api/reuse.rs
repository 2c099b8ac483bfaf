//! Instance reuse (tests/apps/reuse.toml): `kept` serves up to five requests from one
//! instance, `fresh` a new instance each time. The misbehave component counts the requests
//! its instance has served (`/count`), so what the host kept is visible from outside.

use crate::helpers::*;

const REUSE: &str = "tests/apps/reuse.toml";

impl TestApp {
    /// What `<component>/count` answers: the requests its instance has now served.
    async fn count(&self, component: &str) -> u64 {
        let reply = self.get(&format!("/{component}/count"), None).await;
        assert_eq!(reply.status, 200, "{}", reply.text);
        reply.text.parse().unwrap()
    }

    async fn counts(&self, component: &str, n: usize) -> Vec<u64> {
        let mut counts = Vec::new();
        for _ in 0..n {
            counts.push(self.count(component).await);
        }
        counts
    }
}

#[tokio::test]
async fn a_kept_instance_serves_its_share_while_the_default_is_a_fresh_one_each_time() {
    let app = spawn(REUSE).await;
    assert_eq!(
        app.counts("kept", 12).await,
        [1, 2, 3, 4, 5, 1, 2, 3, 4, 5, 1, 2],
        "instance_reuse = 5: five requests an instance, then a fresh one"
    );
    assert_eq!(app.counts("fresh", 4).await, [1, 1, 1, 1]);
    // A 4xx answer ends cleanly: the instance (which counted 2) serves it and stays.
    assert_eq!(app.get("/kept/nothing-here", None).await.status, 404);
    assert_eq!(app.count("kept").await, 3);
    app.stop().await;
}

#[tokio::test]
async fn an_instance_that_trapped_timed_out_or_outgrew_its_bound_never_serves_again() {
    let app = spawn(REUSE).await;
    for (failure, status) in [
        ("trap", 500),
        ("loop", 504),
        ("oom", 500),
        ("grow?mb=10", 200),
    ] {
        assert_eq!(app.counts("kept", 2).await, [1, 2], "before {failure}");
        let reply = app.get(&format!("/kept/{failure}"), None).await;
        assert_eq!(reply.status, status, "{failure}: {}", reply.text);
        assert_eq!(
            app.count("kept").await,
            1,
            "after {failure}, a fresh instance answers: nothing it held is seen again"
        );
        // Start the next case from a fresh instance too.
        app.counts("kept", 4).await;
    }
    // Growing within the bound (8 MiB, over the instance's first few) keeps the instance.
    assert_eq!(app.counts("kept", 1).await, [1]);
    assert_eq!(app.get("/kept/grow?mb=2", None).await.status, 200);
    assert_eq!(app.count("kept").await, 2);
    app.stop().await;
}

#[tokio::test]
async fn a_swap_never_serves_an_instance_kept_before_it() {
    let app = spawn(REUSE).await;
    let first = app.get("/kept/count", None).await;
    assert_eq!(first.text, "1");
    let v1 = first.header("x-berth-version").to_owned();
    assert_eq!(app.count("kept").await, 2);

    let deployed = app.deploy("kept", misbehave_variant(7), "").await;
    assert_eq!(deployed.status, 201, "{}", deployed.text);
    let reply = app.get("/kept/count", None).await;
    assert_ne!(reply.header("x-berth-version"), v1);
    assert_eq!(reply.text, "1", "the new version starts fresh");
    assert_eq!(app.count("kept").await, 2);

    let back = app.admin_post("/admin/v1/components/kept/rollback").await;
    assert_eq!(back.status, 200, "{}", back.text);
    let reply = app.get("/kept/count", None).await;
    assert_eq!(reply.header("x-berth-version"), v1);
    assert_eq!(
        reply.text, "1",
        "the old version serves again, from a fresh instance, not the one it kept"
    );

    let canary = app.deploy("kept", misbehave_variant(8), "?canary=50").await;
    assert_eq!(canary.status, 201, "{}", canary.text);
    // Each version's first request meets a fresh instance, and each then keeps its own.
    let mut seen: std::collections::HashMap<String, Vec<u64>> = Default::default();
    for _ in 0..8 {
        let reply = app.get("/kept/count", None).await;
        let version = reply.header("x-berth-version").to_owned();
        seen.entry(version)
            .or_default()
            .push(reply.text.parse().unwrap());
    }
    for (version, counts) in &seen {
        let expected: Vec<u64> = (0..counts.len() as u64).map(|i| i % 5 + 1).collect();
        assert_eq!(counts, &expected, "version {version}: {seen:?}");
    }
    app.stop().await;
}
