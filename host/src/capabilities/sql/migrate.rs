//! Forward-only migrations: `migrations/<component>/NNNN_name.sql`, applied in version order
//! when the component loads, each in its own transaction, and recorded with a checksum in
//! the database (`_sqlx_migrations`), so an applied file that was edited later is refused
//! instead of silently diverging. A file whose first line is `-- no-transaction` runs outside
//! a transaction.

use std::ops::DerefMut;
use std::path::{Path, PathBuf};

use sqlx::migrate::{Migrate, MigrateError, Migration, MigrationType, Migrator};
use sqlx::{AssertSqlSafe, SqlSafeStr};

/// File names of the migrations this run applied, in order.
#[derive(Debug, Default)]
pub struct Applied(pub Vec<String>);

#[derive(Debug, thiserror::Error)]
pub enum MigrationError {
    #[error("cannot read migrations from {dir}: {message}")]
    Source { dir: PathBuf, message: String },
    #[error("migration {file} failed: {message}")]
    Failed { file: PathBuf, message: String },
    #[error(
        "migration {file} was applied to this database and has been edited since: migrations are forward-only, so restore the file and put the change in a new migration"
    )]
    Edited { file: PathBuf },
    #[error(
        "migration version {version} was applied to this database but no file in {dir} has that version: restore the file"
    )]
    Missing { dir: PathBuf, version: i64 },
    #[error("migrations in {dir} could not run: {message}")]
    Other { dir: PathBuf, message: String },
}

struct MigrationFile {
    version: i64,
    path: PathBuf,
}

/// Reads `dir`: every `*.sql` file must be named `<version>_<name>.sql`.
fn read_dir(dir: &Path) -> Result<(Vec<MigrationFile>, Vec<Migration>), MigrationError> {
    let source = |message: String| MigrationError::Source {
        dir: dir.to_owned(),
        message,
    };
    let mut files = Vec::new();
    let entries = std::fs::read_dir(dir).map_err(|e| source(e.to_string()))?;
    for entry in entries {
        let path = entry.map_err(|e| source(e.to_string()))?.path();
        if path.extension().and_then(|e| e.to_str()) != Some("sql") {
            continue;
        }
        let name = path
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or_default();
        let (version, description) = name
            .split_once('_')
            .and_then(|(v, d)| Some((v.parse::<i64>().ok()?, d)))
            .filter(|(v, d)| *v > 0 && !d.is_empty())
            .ok_or_else(|| {
                source(format!(
                    "{} is not named <version>_<name>.sql (for example 0002_add_index.sql)",
                    path.display()
                ))
            })?;
        files.push((version, description.replace('_', " "), path));
    }
    files.sort_by_key(|(v, _, _)| *v);
    if let Some(w) = files.windows(2).find(|w| w[0].0 == w[1].0) {
        return Err(source(format!(
            "{} and {} have the same version {}",
            w[0].2.display(),
            w[1].2.display(),
            w[0].0
        )));
    }
    let mut index = Vec::new();
    let mut migrations = Vec::new();
    for (version, description, path) in files {
        let sql = std::fs::read_to_string(&path)
            .map_err(|e| source(format!("{}: {e}", path.display())))?;
        let no_tx = sql
            .lines()
            .next()
            .is_some_and(|l| l.trim() == "-- no-transaction");
        migrations.push(Migration::new(
            version,
            description.into(),
            MigrationType::Simple,
            AssertSqlSafe(sql).into_sql_str(),
            no_tx,
        ));
        index.push(MigrationFile { version, path });
    }
    Ok((index, migrations))
}

/// Applies what `dir` holds and the database has not seen yet.
pub async fn run<DB>(dir: &Path, pool: &sqlx::Pool<DB>) -> Result<Applied, MigrationError>
where
    DB: sqlx::Database,
    DB::Connection: Migrate,
{
    let (files, migrations) = read_dir(dir)?;
    let file_of = |version: i64| {
        files
            .iter()
            .find(|f| f.version == version)
            .map(|f| f.path.clone())
            .unwrap_or_else(|| dir.join(format!("{version}_?.sql")))
    };
    let other = |message: String| MigrationError::Other {
        dir: dir.to_owned(),
        message,
    };
    let before: Vec<i64> = {
        let mut conn = pool.acquire().await.map_err(|e| other(e.to_string()))?;
        let c: &mut DB::Connection = conn.deref_mut();
        c.ensure_migrations_table("_sqlx_migrations")
            .await
            .map_err(|e| other(e.to_string()))?;
        c.list_applied_migrations("_sqlx_migrations")
            .await
            .map_err(|e| other(e.to_string()))?
            .into_iter()
            .map(|m| m.version)
            .collect()
    };
    let migrator = Migrator::with_migrations(migrations);
    migrator.run(pool).await.map_err(|e| match e {
        MigrateError::ExecuteMigration(source, version) => MigrationError::Failed {
            file: file_of(version),
            message: match source {
                sqlx::Error::Database(db) => db.message().to_owned(),
                other => other.to_string(),
            },
        },
        MigrateError::VersionMismatch(version) => MigrationError::Edited {
            file: file_of(version),
        },
        MigrateError::VersionMissing(version) => MigrationError::Missing {
            dir: dir.to_owned(),
            version,
        },
        other_error => other(other_error.to_string()),
    })?;
    Ok(Applied(
        files
            .iter()
            .filter(|f| !before.contains(&f.version))
            .map(|f| {
                f.path
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default()
            })
            .collect(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capabilities::sql::{self, Value};

    async fn database(dir: &Path) -> std::sync::Arc<dyn sql::Database> {
        sql::build("db", None, dir, dir, false).await.unwrap()
    }

    fn write(dir: &Path, name: &str, sql: &str) {
        std::fs::write(dir.join(name), sql).unwrap();
    }

    #[tokio::test]
    async fn migrations_apply_once_in_version_order() {
        let data = tempfile::tempdir().unwrap();
        let migrations = tempfile::tempdir().unwrap();
        write(
            migrations.path(),
            "0002_add.sql",
            "INSERT INTO t VALUES (2);",
        );
        write(
            migrations.path(),
            "0001_init.sql",
            "CREATE TABLE t (a INTEGER);",
        );
        let db = database(data.path()).await;
        let applied = db.migrate(migrations.path()).await.unwrap();
        assert_eq!(applied.0, ["0001_init.sql", "0002_add.sql"]);
        let again = db.migrate(migrations.path()).await.unwrap();
        assert!(again.0.is_empty());
        write(
            migrations.path(),
            "0003_more.sql",
            "INSERT INTO t VALUES (3);",
        );
        assert_eq!(
            db.migrate(migrations.path()).await.unwrap().0,
            ["0003_more.sql"]
        );
        let mut c = db.connect().await.unwrap();
        let rows = c
            .execute("SELECT a FROM t ORDER BY a", vec![])
            .await
            .unwrap();
        assert_eq!(
            rows.rows,
            vec![vec![Value::Integer(2)], vec![Value::Integer(3)]]
        );
    }

    #[tokio::test]
    async fn a_failing_migration_names_its_file_and_the_sql_error() {
        let data = tempfile::tempdir().unwrap();
        let migrations = tempfile::tempdir().unwrap();
        write(
            migrations.path(),
            "0001_init.sql",
            "CREATE TABLE t (a INTEGER);",
        );
        write(
            migrations.path(),
            "0002_bad.sql",
            "INSERT INTO missing VALUES (1);",
        );
        let err = database(data.path())
            .await
            .migrate(migrations.path())
            .await
            .unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("0002_bad.sql"), "{msg}");
        assert!(msg.contains("no such table: missing"), "{msg}");
    }

    #[tokio::test]
    async fn an_edited_applied_migration_is_refused() {
        let data = tempfile::tempdir().unwrap();
        let migrations = tempfile::tempdir().unwrap();
        write(
            migrations.path(),
            "0001_init.sql",
            "CREATE TABLE t (a INTEGER);",
        );
        let db = database(data.path()).await;
        db.migrate(migrations.path()).await.unwrap();
        write(
            migrations.path(),
            "0001_init.sql",
            "CREATE TABLE t (a TEXT);",
        );
        let msg = db.migrate(migrations.path()).await.unwrap_err().to_string();
        assert!(
            msg.contains("0001_init.sql") && msg.contains("forward-only"),
            "{msg}"
        );
    }

    #[tokio::test]
    async fn badly_named_files_are_refused() {
        let data = tempfile::tempdir().unwrap();
        let migrations = tempfile::tempdir().unwrap();
        write(migrations.path(), "init.sql", "CREATE TABLE t (a INTEGER);");
        let msg = database(data.path())
            .await
            .migrate(migrations.path())
            .await
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains("init.sql") && msg.contains("<version>_<name>.sql"),
            "{msg}"
        );
    }
}
