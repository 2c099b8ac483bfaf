//! `berth check`: everything `berth up` would refuse, found without serving; with
//! `--target spin`, also whether each component would run on Spin and SpinKube.

use anyhow::bail;

use super::{CheckArgs, Platform};

pub async fn run(args: CheckArgs) -> anyhow::Result<()> {
    let checked = berth::host::Host::check(&args.app.options()).await?;
    let mut not_portable = Vec::new();
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
        for import in &c.denied {
            println!("    warning: it {import}; until then, every call through it is denied");
        }
        if let Some(Platform::Spin) = args.target {
            let problems = berth::registry::portability::spin_problems(&c.wasm)?;
            if problems.is_empty() {
                println!("    runs on Spin: yes");
            } else {
                println!("    runs on Spin: no");
                for problem in &problems {
                    println!("      - it {problem}");
                }
                not_portable.push(c.id.as_str());
            }
        }
    }
    println!(
        "{} is valid: {} component{} checked",
        args.app.manifest.display(),
        checked.len(),
        if checked.len() == 1 { "" } else { "s" }
    );
    let warnings: usize = checked.iter().map(|c| c.denied.len()).sum();
    if warnings > 0 {
        println!(
            "{warnings} ungranted import{} loaded with every call denied, as Spin does; `refuse_ungranted_imports = true` under [application.tool.berth] refuses them instead",
            if warnings == 1 { "" } else { "s" }
        );
    }
    if !not_portable.is_empty() {
        bail!(
            "{} would not run on Spin: change or remove what is listed above (berth serves it; Spin does not)",
            not_portable.join(", ")
        );
    }
    Ok(())
}
