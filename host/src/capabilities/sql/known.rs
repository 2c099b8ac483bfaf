//! The database files a data dir has held (`<data-dir>/databases.json`, label → file). SQLite
//! creates a missing file and treats an empty one as a new database, so without this record
//! a file that was deleted, truncated or left behind by a wrong mount would be replaced by an
//! empty database, and every row it held forgotten without a word. With it, such a start is
//! refused with what happened, unless the user asks for a fresh database.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Context as _;

#[derive(Debug, thiserror::Error)]
pub enum KnownError {
    #[error(
        "database `{label}` was {file} and that file is {what}: berth will not create an empty database in its place, which would lose every row it held. Restore the file (and its -wal file) from a backup, or start with `--fresh-database {label}` to begin again with an empty database"
    )]
    Lost {
        label: String,
        file: PathBuf,
        what: &'static str,
    },
}

fn record_path(data_dir: &Path) -> PathBuf {
    data_dir.join("databases.json")
}

fn read(data_dir: &Path) -> anyhow::Result<BTreeMap<String, PathBuf>> {
    let path = record_path(data_dir);
    match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .with_context(|| format!("{} is not valid; fix or remove it", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(BTreeMap::new()),
        Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
}

/// Refuses a database this data dir knew whose file is now missing or empty, unless `fresh`.
pub fn check(data_dir: &Path, label: &str, file: &Path, fresh: bool) -> anyhow::Result<()> {
    if fresh {
        return Ok(());
    }
    let known = read(data_dir)?;
    let Some(was) = known.get(label) else {
        return Ok(());
    };
    let lost = |what| KnownError::Lost {
        label: label.to_owned(),
        file: was.clone(),
        what,
    };
    if was != file {
        // The runtime config moved the database; the new file is the user's choice.
        return Ok(());
    }
    match std::fs::metadata(file) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(lost("missing").into()),
        Err(e) => Err(e).with_context(|| format!("cannot read {}", file.display())),
        Ok(meta) if meta.len() == 0 && !has_wal(file) => Err(lost("empty").into()),
        Ok(_) => Ok(()),
    }
}

/// Remembers that this data dir holds `label` in `file`.
pub fn record(data_dir: &Path, label: &str, file: &Path) -> anyhow::Result<()> {
    let mut known = read(data_dir)?;
    if known.get(label).map(PathBuf::as_path) == Some(file) {
        return Ok(());
    }
    known.insert(label.to_owned(), file.to_owned());
    let json = serde_json::to_vec_pretty(&known)?;
    crate::files::write_atomic(&record_path(data_dir), &json)
        .with_context(|| format!("cannot write {}", record_path(data_dir).display()))
}

/// A write-ahead log with frames in it still holds the database's recent pages.
fn has_wal(file: &Path) -> bool {
    let mut wal = file.as_os_str().to_owned();
    wal.push("-wal");
    std::fs::metadata(PathBuf::from(wal)).is_ok_and(|m| m.len() > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_known_database_that_vanished_or_was_emptied_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("orders.db");
        check(dir.path(), "orders", &file, false).unwrap();
        std::fs::write(&file, b"SQLite format 3\0").unwrap();
        record(dir.path(), "orders", &file).unwrap();
        check(dir.path(), "orders", &file, false).unwrap();

        std::fs::write(&file, b"").unwrap();
        let err = check(dir.path(), "orders", &file, false)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("is empty") && err.contains("--fresh-database orders"),
            "{err}"
        );
        std::fs::remove_file(&file).unwrap();
        let err = check(dir.path(), "orders", &file, false)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("is missing") && err.contains(&file.display().to_string()),
            "{err}"
        );
        check(dir.path(), "orders", &file, true).unwrap();
        check(dir.path(), "users", &dir.path().join("users.db"), false).unwrap();
    }
}
