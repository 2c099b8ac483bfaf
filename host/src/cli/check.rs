//! `berth check`: everything `berth up` would refuse, found without serving.

use super::CheckArgs;

pub async fn run(args: CheckArgs) -> anyhow::Result<()> {
    let checked = berth::host::Host::check(&args.app.options()).await?;
    for c in &checked {
        let platform: Vec<&str> = c
            .imports
            .iter()
            .map(String::as_str)
            .filter(|i| !i.starts_with("wasi:"))
            .collect();
        println!(
            "ok  {:<12} {}  imports WASI{}{}",
            c.id,
            berth::registry::http::short(&c.digest),
            if platform.is_empty() { "" } else { ", " },
            platform.join(", ")
        );
    }
    println!(
        "{} is valid: {} component{} checked",
        args.app.manifest.display(),
        checked.len(),
        if checked.len() == 1 { "" } else { "s" }
    );
    Ok(())
}
