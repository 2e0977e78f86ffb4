//! `consistency: job_snapshot`: one snapshot of the source for a whole job.
//!
//! [`export`] opens a connection of its own (never pooled), starts a `REPEATABLE READ`
//! transaction and exports its snapshot with `pg_export_snapshot()`; the transaction is
//! held open, idle, by a keeper task until the [`ExportedSnapshot`] is dropped. The
//! keeper runs `SELECT 1` in it every [`KEEPALIVE`] (so no firewall takes the idle
//! connection for dead) and logs an error when that fails (the connection broke, the
//! server restarted, an administrator ended the session): the snapshot is then gone, and
//! the chunk reads that follow fail with the error [`gone`] describes.
//! `idle_in_transaction_session_timeout` is switched off for that session only.
//!
//! Every chunk read of the job then runs on a pooled session inside
//! `BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY; SET TRANSACTION SNAPSHOT '<id>'`
//! ([`begin_in_snapshot`]). The session is marked as holding a transaction, so that
//! [`Session::release`] ends it before the connection goes back to the pool: a pooled
//! connection never carries a snapshot to the next operation.
//!
//! A snapshot can be imported only while its exporting transaction is open: a read that
//! starts after the holder ended fails with "invalid snapshot identifier", which
//! [`begin_in_snapshot`] turns into a permanent error naming the fix. Reads that had
//! imported it before keep it to their end.

use std::time::Duration;

use ferry_model::schema::TableName;
use tokio_util::sync::CancellationToken;

use super::connect::{Endpoint, describe_error, query_error};
use super::pool::Session;
use super::sql::quote_literal;
use crate::error::{ConnectorError, Result};
use crate::traits::ExportedSnapshot;

/// How often the holder checks that its transaction is still there.
pub const KEEPALIVE: Duration = Duration::from_secs(5);

/// The first PostgreSQL version that exports snapshots on a standby (hot standby).
const STANDBY_EXPORT_VERSION: i32 = 100_000;

fn subject() -> TableName {
    TableName::bare("(job snapshot)")
}

/// Exports one snapshot of the database behind `endpoint` and holds it.
pub async fn export(endpoint: &Endpoint) -> Result<ExportedSnapshot> {
    let client = endpoint.connect().await?;
    let row = client
        .query_one(
            "SELECT pg_catalog.pg_is_in_recovery(), \
             pg_catalog.current_setting('server_version_num')::int",
            &[],
        )
        .await
        .map_err(query_error("check the source for a snapshot", &subject()))?;
    let (standby, version): (bool, i32) = (
        row.try_get(0)
            .map_err(query_error("check the source for a snapshot", &subject()))?,
        row.try_get(1)
            .map_err(query_error("check the source for a snapshot", &subject()))?,
    );
    if standby && version < STANDBY_EXPORT_VERSION {
        return Err(ConnectorError::Unsupported {
            table: subject(),
            detail: format!(
                "consistency: job_snapshot cannot be used with this source: it is a standby \
                 of PostgreSQL {version}, which cannot export snapshots (PostgreSQL 10 and \
                 later can); point source at the primary, or use consistency: chunk"
            ),
        });
    }
    client
        .batch_execute(
            "SET idle_in_transaction_session_timeout = 0; \
             BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY",
        )
        .await
        .map_err(query_error(
            "start the job's snapshot transaction",
            &subject(),
        ))?;
    let id: String = client
        .query_one("SELECT pg_catalog.pg_export_snapshot()", &[])
        .await
        .and_then(|row| row.try_get(0))
        .map_err(query_error("export the job's snapshot", &subject()))?;
    let stop = CancellationToken::new();
    let holder = stop.clone().drop_guard();
    let held_id = id.clone();
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(KEEPALIVE);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                // Dropping the client closes the connection: the transaction ends.
                () = stop.cancelled() => return,
                _ = ticker.tick() => {}
            }
            if let Err(error) = client.simple_query("SELECT 1").await {
                let reason = format!(
                    "the transaction holding snapshot {held_id} ended: {}",
                    describe_error(&error)
                );
                tracing::error!(%reason, "job snapshot lost: the job's remaining chunks will fail");
                return;
            }
        }
    });
    tracing::info!(snapshot = %id, "exported the job's source snapshot");
    Ok(ExportedSnapshot {
        id,
        _holder: holder,
    })
}

/// Starts the read transaction of `session` in the exported snapshot `snapshot_id`;
/// `table` names the chunk's table in errors.
pub async fn begin_in_snapshot(
    session: &mut Session,
    snapshot_id: &str,
    table: &TableName,
) -> Result<()> {
    session.mark_transaction_open();
    let begin = format!(
        "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY; SET TRANSACTION SNAPSHOT {}",
        quote_literal(snapshot_id)
    );
    match session.batch_execute(&begin).await {
        Ok(()) => Ok(()),
        Err(error) if is_gone(&error) => Err(gone(snapshot_id, table)),
        Err(error) => Err(query_error("import the job's snapshot", table)(error)),
    }
}

/// Whether the server refused the import because no open transaction exports it.
fn is_gone(error: &tokio_postgres::Error) -> bool {
    error.as_db_error().is_some_and(|db_error| {
        db_error.code() == &tokio_postgres::error::SqlState::INVALID_PARAMETER_VALUE
            && db_error.message().contains("snapshot")
    })
}

/// The error of a read whose job snapshot is gone.
pub fn gone(snapshot_id: &str, table: &TableName) -> ConnectorError {
    ConnectorError::Unsupported {
        table: table.clone(),
        detail: format!(
            "the job's source snapshot {snapshot_id} is gone: the process that held it (the \
             coordinator leading the job, or ferryctl local) stopped, so the rest of the job \
             cannot read the point in time its other chunks were read at; start the job over \
             (another --state or job name, with the target tables dropped or `schema: \
             recreate`) to copy everything from a new snapshot, or set consistency: chunk to \
             finish it with each remaining chunk read at its own time"
        ),
    }
}
