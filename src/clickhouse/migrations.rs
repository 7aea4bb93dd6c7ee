//! ClickHouse schema migrations (`clickhouse/migrations/V*__*.sql`), run by refinery.
//!
//! refinery has no ClickHouse driver; this file is the adapter. ClickHouse has no
//! transactional DDL, so every statement in the files is idempotent (`IF NOT EXISTS`) and a
//! migration cut off half-way is completed by running it again. Callers serialise concurrent
//! runs (see `crate::migrate`); ClickHouse offers no lock of its own.

use clickhouse::Row;
use refinery::Migration;
use refinery::error::Error as RefineryError;
use refinery_core::traits::r#async::{AsyncMigrate, AsyncQuery, AsyncTransaction};
use serde::Deserialize;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

mod embedded {
    refinery::embed_migrations!("clickhouse/migrations");
}

/// The table recording applied migrations in the target database.
pub const HISTORY_TABLE: &str = "schema_migrations";

/// The migrations compiled into this binary.
#[must_use]
pub fn runner() -> refinery::Runner {
    let mut runner = embedded::migrations::runner()
        .set_abort_divergent(true)
        .set_abort_missing(true);
    runner.set_migration_table_name(HISTORY_TABLE);
    runner
}

/// Applies the pending migrations through `client` (bound to the target database).
///
/// # Errors
/// refinery's error: a failing statement, or an applied migration whose file has changed
/// since (its checksum differs), which is refused.
pub async fn run(client: &clickhouse::Client) -> Result<Vec<Migration>, RefineryError> {
    let mut adapter = Adapter(client.clone());
    let report = runner().run_async(&mut adapter).await?;
    Ok(report.applied_migrations().clone())
}

struct Adapter(clickhouse::Client);

#[derive(Debug, thiserror::Error)]
enum AdapterError {
    #[error(transparent)]
    ClickHouse(#[from] clickhouse::error::Error),
    #[error("corrupt migration history row {version}: {reason}")]
    History { version: i32, reason: String },
}

impl AsyncTransaction for Adapter {
    type Error = AdapterError;

    async fn execute<'a, T: Iterator<Item = &'a str> + Send + 'a>(
        &'a mut self,
        queries: T,
    ) -> Result<usize, Self::Error> {
        let mut count = 0;
        for query in queries {
            // The HTTP interface takes one statement per request.
            for statement in split_statements(query) {
                self.0.query(&escape_binds(&statement)).execute().await?;
                count += 1;
            }
        }
        Ok(count)
    }
}

#[derive(Row, Deserialize)]
struct HistoryRow {
    version: i32,
    name: String,
    applied_on: String,
    checksum: String,
}

impl AsyncQuery<Vec<Migration>> for Adapter {
    async fn query<'a>(&'a mut self, query: &'a str) -> Result<Vec<Migration>, Self::Error> {
        let rows = self
            .0
            .query(query.trim_end().trim_end_matches(';'))
            .fetch_all::<HistoryRow>()
            .await?;
        rows.into_iter()
            .map(|row| {
                let corrupt = |reason: String| AdapterError::History {
                    version: row.version,
                    reason,
                };
                let applied_on = OffsetDateTime::parse(&row.applied_on, &Rfc3339)
                    .map_err(|e| corrupt(format!("applied_on: {e}")))?;
                let checksum = row
                    .checksum
                    .parse::<u64>()
                    .map_err(|e| corrupt(format!("checksum: {e}")))?;
                Ok(Migration::applied(
                    row.version,
                    row.name.clone(),
                    applied_on,
                    checksum,
                ))
            })
            .collect()
    }
}

impl AsyncMigrate for Adapter {
    fn assert_migrations_table_query(migration_table_name: &str) -> String {
        format!(
            "CREATE TABLE IF NOT EXISTS {migration_table_name} \
             (version Int32, name String, applied_on String, checksum String) \
             ENGINE = MergeTree ORDER BY version"
        )
    }
}

/// The `clickhouse` crate treats `?` as a bind placeholder; `??` is a literal `?`.
fn escape_binds(statement: &str) -> String {
    statement.replace('?', "??")
}

/// Splits a SQL script into statements at `;`, ignoring `;` inside quotes and comments, and
/// dropping statements that hold nothing but comments and whitespace.
#[must_use]
pub fn split_statements(script: &str) -> Vec<String> {
    let mut statements = Vec::new();
    let mut current = String::new();
    let mut has_code = false;
    let mut chars = script.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '-' if chars.peek() == Some(&'-') => {
                // A line comment runs to the end of the line; keep it out of the statement.
                for c in chars.by_ref() {
                    if c == '\n' {
                        current.push('\n');
                        break;
                    }
                }
            }
            '\'' | '"' | '`' => {
                has_code = true;
                current.push(c);
                while let Some(inner) = chars.next() {
                    current.push(inner);
                    if inner == '\\' {
                        if let Some(escaped) = chars.next() {
                            current.push(escaped);
                        }
                    } else if inner == c {
                        break;
                    }
                }
            }
            ';' => {
                if has_code {
                    statements.push(current.trim().to_owned());
                }
                current.clear();
                has_code = false;
            }
            c => {
                has_code |= !c.is_whitespace();
                current.push(c);
            }
        }
    }
    if has_code {
        statements.push(current.trim().to_owned());
    }
    statements
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_on_semicolons_outside_quotes_and_comments() {
        let script = "-- intro; not a statement\nCREATE TABLE a (x String DEFAULT ';');\n\n\
                      -- trailing comment;\nSELECT 'it''s'; SELECT \"q;\" -- end\n;  \n-- only a comment\n";
        assert_eq!(
            split_statements(script),
            vec![
                "CREATE TABLE a (x String DEFAULT ';')",
                "SELECT 'it''s'",
                "SELECT \"q;\"",
            ]
        );
    }

    #[test]
    fn embedded_migrations_are_numbered_and_non_empty() {
        let runner = runner();
        let migrations = runner.get_migrations();
        assert!(migrations.len() >= 2);
        for migration in migrations {
            let statements = split_statements(migration.sql().unwrap_or_default());
            assert!(!statements.is_empty(), "{migration} has no statements");
        }
    }
}
