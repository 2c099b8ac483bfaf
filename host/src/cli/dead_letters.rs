//! `berth dead-letters` and `berth redrive`: the messages a group gave up on, and sending
//! them back once their cause is fixed, through a running host's admin API.

use anyhow::Context as _;
use berth::capabilities::messaging::path_segment;
use clap::Args;
use serde_json::Value;

use super::AdminArgs;
use super::admin_client::call;

#[derive(Args)]
pub(super) struct DeadLettersArgs {
    #[command(flatten)]
    admin: AdminArgs,
    /// Print the dead letters as JSON (with their bodies) instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
pub(super) struct RedriveArgs {
    /// The consumer group the message failed in, as `berth dead-letters` lists it.
    #[arg(required_unless_present_any = ["all", "only_group"], value_name = "GROUP")]
    group: Option<String>,
    /// The message id, as `berth dead-letters` lists it.
    #[arg(required_unless_present_any = ["all", "only_group"], value_name = "ID")]
    id: Option<String>,
    /// Redrive every dead letter (with --group, only that group's).
    #[arg(long, conflicts_with_all = ["group", "id"])]
    all: bool,
    /// With --all: only the dead letters of this consumer group.
    #[arg(long = "group", value_name = "GROUP")]
    only_group: Option<String>,
    #[command(flatten)]
    admin: AdminArgs,
}

/// The host's dead letters, oldest first.
async fn list(admin: &AdminArgs) -> anyhow::Result<Vec<Value>> {
    let answer = call(
        admin,
        reqwest::Method::GET,
        "/admin/v1/dead-letters",
        reqwest::Body::default(),
    )
    .await?;
    answer["deadLetters"]
        .as_array()
        .cloned()
        .with_context(|| format!("{} answered without a deadLetters list", admin.admin))
}

pub(super) async fn show(args: DeadLettersArgs) -> anyhow::Result<()> {
    let letters = list(&args.admin).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&letters)?);
        return Ok(());
    }
    if letters.is_empty() {
        println!("no dead letters");
        return Ok(());
    }
    let text = |l: &Value, key: &str| l[key].as_str().unwrap_or_default().to_owned();
    println!(
        "{:<16} {:<36} {:<24} {:>8}  {:<20} ERROR",
        "GROUP", "ID", "SUBJECT", "ATTEMPTS", "FAILED AT"
    );
    for l in &letters {
        println!(
            "{:<16} {:<36} {:<24} {:>8}  {:<20} {}",
            text(l, "group"),
            text(l, "id"),
            text(l, "subject"),
            l["attempts"],
            whole_seconds(&text(l, "failedAt")),
            // One line per letter, whatever the handler answered.
            text(l, "error").replace(['\r', '\n'], " "),
        );
    }
    println!(
        "\n{} dead letter{}; once the cause is fixed: berth redrive <GROUP> <ID>, or berth redrive --all",
        letters.len(),
        if letters.len() == 1 { "" } else { "s" }
    );
    Ok(())
}

pub(super) async fn redrive(args: RedriveArgs) -> anyhow::Result<()> {
    let RedriveArgs {
        group,
        id,
        all,
        only_group,
        admin,
    } = args;
    if !all {
        if let Some(only) = only_group {
            anyhow::bail!(
                "--group {only} chooses the dead letters of --all: run `berth redrive --all --group {only}`, or `berth redrive {only} <ID>` for one"
            );
        }
        let (Some(group), Some(id)) = (group, id) else {
            anyhow::bail!(
                "give the group and id of a dead letter (berth dead-letters lists them), or --all"
            );
        };
        let redriven = redrive_one(&admin, &group, &id).await?;
        println!("{}", redrove(&redriven));
        return Ok(());
    }
    let letters: Vec<Value> = list(&admin)
        .await?
        .into_iter()
        .filter(|l| only_group.as_deref().is_none_or(|g| l["group"] == g))
        .collect();
    if letters.is_empty() {
        match only_group {
            Some(group) => println!("no dead letters in group {group}"),
            None => println!("no dead letters"),
        }
        return Ok(());
    }
    // Oldest first, as listed, so they are delivered again in the order they failed.
    let mut failed = 0;
    for l in &letters {
        let group = l["group"].as_str().unwrap_or_default();
        let id = l["id"].as_str().unwrap_or_default();
        match redrive_one(&admin, group, id).await {
            Ok(redriven) => println!("{}", redrove(&redriven)),
            Err(e) => {
                failed += 1;
                eprintln!("cannot redrive {group} {id}: {e:#}");
            }
        }
    }
    let done = letters.len() - failed;
    println!(
        "redrove {done} dead letter{}",
        if done == 1 { "" } else { "s" }
    );
    if failed > 0 {
        anyhow::bail!(
            "{failed} of {} dead letters could not be redriven (above); they stay listed",
            letters.len()
        );
    }
    Ok(())
}

async fn redrive_one(admin: &AdminArgs, group: &str, id: &str) -> anyhow::Result<Value> {
    let path = format!(
        "/admin/v1/dead-letters/{}/{}/redrive",
        path_segment(group),
        path_segment(id)
    );
    let answer = call(
        admin,
        reqwest::Method::POST,
        &path,
        reqwest::Body::default(),
    )
    .await?;
    Ok(answer["redriven"].clone())
}

fn redrove(redriven: &Value) -> String {
    let text = |key: &str| redriven[key].as_str().unwrap_or_default().to_owned();
    format!(
        "redrove {} ({}) to group {}: it is delivered again from its first attempt",
        text("id"),
        text("subject"),
        text("group")
    )
}

/// An RFC 3339 time without its fraction of a second, to fit the table.
fn whole_seconds(at: &str) -> String {
    match at.split_once('.') {
        Some((seconds, rest)) => {
            let zone = rest.trim_start_matches(|c: char| c.is_ascii_digit());
            format!("{seconds}{zone}")
        }
        None => at.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failure_times_are_shown_to_the_second() {
        assert_eq!(
            whole_seconds("2026-12-01T23:26:20.238191482Z"),
            "2026-12-01T23:26:20Z"
        );
        assert_eq!(
            whole_seconds("2026-12-01T23:26:20+02:00"),
            "2026-12-01T23:26:20+02:00"
        );
    }
}
