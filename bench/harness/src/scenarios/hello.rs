//! Hello world: the same .wasm under berth (a fresh instance per request, and with instance
//! reuse on) and under `wasmtime serve`, and a native hyper server doing the same with no
//! wasm at all. Measures the cost of the wasm path itself.

use tokio::process::Command;

use super::{Contestant, alternate, load_columns, row, summaries_json};
use crate::Settings;
use crate::load::Load;
use crate::report::{Better, Report, Table};
use crate::server::{Ready, Server, free_port};
use crate::tools::{Kit, step};

const CONNECTIONS: u32 = 32;

pub async fn run(
    kit: &Kit,
    settings: &Settings,
    work: &tempfile::TempDir,
    report: &mut Report,
) -> anyhow::Result<()> {
    step(
        "hello: berth, berth reusing instances, wasmtime serve and native hyper answering `hello`",
    );
    let logs = work.path();
    let berth = super::berth(kit, work, "berth-hello", "bench/hello.toml").await?;
    let mut berth = berth.server;
    let reusing = super::berth(kit, work, "berth-hello-reuse", "bench/hello-reuse.toml").await?;
    let mut reusing = reusing.server;
    let mut wasmtime = match &kit.wasmtime {
        Ok(path) => {
            let port = free_port()?;
            let mut command = Command::new(path);
            command
                .args(["serve", "-S", "cli", "--addr", &format!("127.0.0.1:{port}")])
                .arg(&kit.hello_wasm);
            Some(
                Server::start("wasmtime-serve", command, port, Ready::Answers, logs)
                    .await?
                    .0,
            )
        }
        Err(why) => {
            report.skip(format!("hello under wasmtime serve: {why}"));
            None
        }
    };
    let port = free_port()?;
    let mut command = Command::new(&kit.native_hello);
    command.arg(format!("127.0.0.1:{port}"));
    let (mut native, _) =
        Server::start("native-hyper", command, port, Ready::Answers, logs).await?;

    let (berth_url, native_url) = (format!("{}/", berth.url), format!("{}/", native.url));
    let reusing_url = format!("{}/", reusing.url);
    let wasmtime_url = wasmtime.as_ref().map(|w| format!("{}/", w.url));
    let load = |url| Load {
        url,
        connections: CONNECTIONS,
        duration: settings.duration,
        headers: &[],
        body: None,
    };
    let mut contestants = vec![
        Contestant {
            name: "berth",
            server: &mut berth,
            load: load(&berth_url),
        },
        Contestant {
            name: "native hyper",
            server: &mut native,
            load: load(&native_url),
        },
        Contestant {
            name: "berth, instance_reuse = 1000",
            server: &mut reusing,
            load: load(&reusing_url),
        },
    ];
    if let (Some(server), Some(url)) = (wasmtime.as_mut(), wasmtime_url.as_deref()) {
        contestants.push(Contestant {
            name: "wasmtime serve",
            server,
            load: load(url),
        });
    }
    let names: Vec<&str> = contestants.iter().map(|c| c.name).collect();
    let summaries = alternate(kit, settings, work.path(), &mut contestants).await?;
    drop(contestants);

    let [berth_s, native_s, reusing_s] = [&summaries[0], &summaries[1], &summaries[2]];
    anyhow::ensure!(
        berth_s.failures == 0 && native_s.failures == 0 && reusing_s.failures == 0,
        "hello requests failed (berth {}, native {}, berth reusing {}); see the logs in {}",
        berth_s.failures,
        native_s.failures,
        reusing_s.failures,
        logs.display()
    );
    if let Some(wasmtime_s) = summaries.get(3) {
        report.goal(
            "hello, fresh instances: berth ÷ wasmtime serve, req/s",
            berth_s.rps / wasmtime_s.rps,
            Better::Higher,
            2.5,
            "×",
        );
    }
    report.goal(
        "hello, instance reuse: berth ÷ native hyper, req/s",
        reusing_s.rps / native_s.rps,
        Better::Higher,
        0.4,
        "×",
    );
    report.tables.push(Table {
        title: format!("hello: {CONNECTIONS} connections, medians"),
        columns: load_columns(),
        rows: names
            .iter()
            .zip(&summaries)
            .map(|(n, s)| row(n, s))
            .collect(),
    });
    report
        .scenarios
        .insert("hello".into(), summaries_json(&names, &summaries));
    berth.stop().await;
    reusing.stop().await;
    native.stop().await;
    if let Some(w) = wasmtime {
        w.stop().await;
    }
    Ok(())
}
