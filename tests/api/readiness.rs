//! Honest readiness: a corrupt database makes `/readyz` answer 503 naming the component and
//! the file (and the log names the file); a database file the data dir held that is now
//! empty or missing stops the start with what happened, unless a fresh one is asked for.

use crate::helpers::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_database_makes_readyz_name_the_component_and_the_file() {
    let app = spawn_shop().await;
    let user = app.user().await;
    for _ in 0..150 {
        assert_eq!(app.create_order(&user, 1).await.status, 201);
    }
    let data = app.stop().await;
    let file = data.path().join("sqlite/orders.db");
    let mut bytes = std::fs::read(&file).unwrap();
    assert!(
        bytes.len() > 64 * 1024,
        "orders.db is {} bytes",
        bytes.len()
    );
    // Pages in the second half hold the orders; the schema and migrations stay readable.
    let half = bytes.len() / 2;
    for b in &mut bytes[half..] {
        *b = 0x5A;
    }
    std::fs::write(&file, &bytes).unwrap();

    let (port, admin) = (free_port(), free_port());
    let child = Process::new(
        berth_up(SHOP, data.path(), port, admin)
            .spawn()
            .expect("start berth up"),
    );
    let ready = readyz_answer(admin, false).await;
    assert_eq!(ready.status, 503, "{}", ready.text);
    let reasons = ready.json["reasons"].to_string();
    assert!(
        reasons.contains("component `order`") && reasons.contains(&file.display().to_string()),
        "{reasons}"
    );
    assert!(reasons.contains("corrupt"), "{reasons}");
    assert!(
        !reasons.contains("`user`"),
        "a healthy database is named: {reasons}"
    );
    let log = child.stop();
    assert!(
        log.contains("corrupt") && log.contains(&file.display().to_string()),
        "the log does not name the corrupt file:\n{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_file_that_went_empty_or_missing_stops_the_start() {
    let app = spawn_shop().await;
    let user = app.user().await;
    let data = app.stop().await;
    let file = data.path().join("sqlite/users.db");
    for suffix in ["-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", file.display()));
    }
    for (what, damage) in [
        (
            "empty",
            Box::new(|f: &std::path::Path| std::fs::write(f, b"").unwrap())
                as Box<dyn Fn(&std::path::Path)>,
        ),
        (
            "missing",
            Box::new(|f: &std::path::Path| std::fs::remove_file(f).unwrap()),
        ),
    ] {
        damage(&file);
        let options = berth::host::Options {
            manifest: repo(SHOP),
            runtime_config: None,
            data_dir: Some(data.path().to_owned()),
            cache_dir: Some(cache_dir()),
            fresh_databases: Vec::new(),
        };
        let error = match berth::host::Host::load(&options).await {
            Ok(_) => panic!("started on an {what} users.db"),
            Err(e) => format!("{e:#}"),
        };
        for expected in [
            "database `users`",
            &format!("is {what}"),
            &file.display().to_string(),
            "--fresh-database users",
        ] {
            assert!(error.contains(expected), "missing `{expected}` in: {error}");
        }
        assert!(
            std::fs::metadata(&file).map_or(true, |m| m.len() == 0),
            "berth wrote a new database over the {what} one"
        );
    }
    // Asked for, a fresh database starts empty: the old account is gone.
    let fresh = spawn_fresh(data, &["users"]).await;
    let login = fresh.login(&user.email, "correct horse battery").await;
    assert_eq!(login.status, 401, "{}", login.text);
    let registered = fresh.register(&user.email, "correct horse battery").await;
    assert_eq!(registered.status, 201, "{}", registered.text);
}

async fn spawn_fresh(data: tempfile::TempDir, labels: &[&str]) -> TestApp {
    let options = berth::host::Options {
        manifest: repo(SHOP),
        runtime_config: None,
        data_dir: Some(data.path().to_owned()),
        cache_dir: Some(cache_dir()),
        fresh_databases: labels.iter().map(|l| (*l).to_owned()).collect(),
    };
    serve_loaded(
        berth::host::Host::load(&options)
            .await
            .expect("loads fresh"),
        data,
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fresh_database_must_name_a_label_of_the_app() {
    let options = berth::host::Options {
        manifest: repo(SHOP),
        runtime_config: None,
        data_dir: Some(tempfile::tempdir().unwrap().keep()),
        cache_dir: Some(cache_dir()),
        fresh_databases: vec!["nope".into()],
    };
    let error = match berth::host::Host::load(&options).await {
        Ok(_) => panic!("accepted an unknown label"),
        Err(e) => e.to_string(),
    };
    assert!(error.contains("--fresh-database nope"), "{error}");
}
