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
    if !not_portable.is_empty() {
        bail!(
            "{} would not run on Spin: change or remove what is listed above (berth serves it; Spin does not)",
            not_portable.join(", ")
        );
    }
    Ok(())
}
