//! `berth up`: load the app, bind both listeners, serve until Ctrl-C or SIGTERM.

use anyhow::Context as _;
use tokio::net::TcpListener;

use super::UpArgs;

pub async fn run(args: UpArgs) -> anyhow::Result<()> {
    if args.build {
        let app = berth::config::App::load(&args.app.manifest)?;
        tokio::task::spawn_blocking(move || super::build::run(&app, &[])).await??;
    }
    let options = berth::host::Options {
        fresh_databases: args.fresh_database.clone(),
        ..args.app.options()
    };
    let host = berth::host::Host::load(&options)
        .await?
        .with_host_id(args.host_id.clone());
    let public = TcpListener::bind(args.listen).await.with_context(|| {
        format!(
            "cannot listen on {}: is something else using it? choose another with --listen",
            args.listen
        )
    })?;
    let admin = TcpListener::bind(args.admin_listen).await.with_context(|| {
        format!(
            "cannot listen on {}: is something else using it? choose another with --admin-listen",
            args.admin_listen
        )
    })?;
    let public_addr = public.local_addr()?;
    let admin_addr = admin.local_addr()?;
    println!("berth is serving `{}`", host.app.name);
    println!("  public API  http://{public_addr}");
    println!(
        "  admin API   http://{admin_addr}  (token in {})",
        host.data_dir.join("admin-token").display()
    );
    for route in &host.app.routes {
        if !route.pattern.is_private() {
            println!(
                "  route       {:<28} -> {}",
                route.pattern.to_string(),
                route.component
            );
        }
    }
    for c in host.app.components.values() {
        for s in &c.messaging.subscriptions {
            let to = match &s.route {
                Some(route) => format!("{} {route}", c.id),
                None => format!("{} (wasmcloud handler)", c.id),
            };
            println!("  events      {:<28} -> {to}", s.events.join(" "));
        }
    }
    if host.bus.is_some() {
        println!(
            "  bus         {}",
            if host.nats_bus {
                "NATS JetStream"
            } else {
                "embedded"
            }
        );
    }
    if args.watch {
        tokio::spawn(super::watch::run(
            host.app.clone(),
            host.control.clone(),
            host.reloader.clone(),
        ));
    }
    host.serve(public, admin, shutdown_signal()).await
}

async fn shutdown_signal() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = terminate => {}
    }
    tracing::info!("stopping: finishing open requests");
}
