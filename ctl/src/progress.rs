//! Progress while a job runs: a bar per table on a terminal (rows, rate, ETA), plain
//! lines every few seconds otherwise.

use std::io::IsTerminal;
use std::time::Duration;

use ferry_coordination::{ChunkRecord, ChunkState, JobRecord};
use ferry_coordinator::scheduler::JobEvent;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use tokio::sync::mpsc::UnboundedReceiver;

struct TableProgress {
    name: String,
    total_rows: u64,
    rows: u64,
    chunks: usize,
    verified: usize,
    failed: usize,
    bar: Option<ProgressBar>,
}

/// How progress is shown.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProgressMode {
    /// Bars on stderr (a terminal).
    Bars,
    /// A line per table every few seconds on stderr.
    Lines,
    /// Nothing (`--json` on a non-terminal, tests).
    Quiet,
}

impl ProgressMode {
    /// Bars when stderr is a terminal, lines otherwise.
    pub fn detect() -> Self {
        if std::io::stderr().is_terminal() {
            ProgressMode::Bars
        } else {
            ProgressMode::Lines
        }
    }
}

/// Consumes job events until the channel closes, showing progress.
pub async fn show(
    job: JobRecord,
    chunks: Vec<ChunkRecord>,
    mode: ProgressMode,
    mut events: UnboundedReceiver<JobEvent>,
) {
    if mode == ProgressMode::Quiet {
        while events.recv().await.is_some() {}
        return;
    }
    let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr());
    let style = ProgressStyle::with_template(
        "{prefix:<24!} [{bar:30}] {human_pos:>11}/{human_len:<11} {rate:>14} ETA {eta:>4} {msg}",
    )
    .unwrap_or_else(|_| ProgressStyle::default_bar())
    .with_key(
        "rate",
        |state: &indicatif::ProgressState, out: &mut dyn std::fmt::Write| {
            let _ = write!(out, "{:.0} rows/s", state.per_sec());
        },
    )
    .progress_chars("=> ");
    let mut tables: Vec<TableProgress> = job
        .tables
        .iter()
        .map(|table| TableProgress {
            name: table.schema.name.to_string(),
            total_rows: 0,
            rows: 0,
            chunks: 0,
            verified: 0,
            failed: 0,
            bar: None,
        })
        .collect();
    for chunk in &chunks {
        let Some(table) = tables.get_mut(chunk.table_index) else {
            continue;
        };
        table.chunks += 1;
        table.total_rows += chunk.estimated_rows;
        if chunk.state == ChunkState::Verified {
            table.verified += 1;
            table.rows += chunk.rows;
        }
        if chunk.state == ChunkState::Failed {
            table.failed += 1;
        }
    }
    if mode == ProgressMode::Bars {
        for table in &mut tables {
            let bar = multi.add(ProgressBar::new(table.total_rows.max(table.rows)));
            bar.set_style(style.clone());
            bar.set_prefix(table.name.clone());
            bar.set_position(table.rows);
            bar.set_message(format!("{}/{} chunks", table.verified, table.chunks));
            table.bar = Some(bar);
        }
    }
    let mut ticker = tokio::time::interval(Duration::from_secs(5));
    ticker.tick().await;
    loop {
        tokio::select! {
            event = events.recv() => {
                let Some(event) = event else { break };
                apply(&mut tables, event);
            }
            _ = ticker.tick(), if mode == ProgressMode::Lines => {
                for table in &tables {
                    if table.verified + table.failed < table.chunks {
                        eprintln!("{}", line(table));
                    }
                }
            }
        }
    }
    for table in &tables {
        if let Some(bar) = &table.bar {
            bar.finish();
        }
    }
}

fn line(table: &TableProgress) -> String {
    let percent = if table.total_rows == 0 {
        100.0
    } else {
        table.rows as f64 * 100.0 / table.total_rows as f64
    };
    format!(
        "{}: {} of ~{} rows ({percent:.0}%), {}/{} chunks verified{}",
        table.name,
        table.rows,
        table.total_rows,
        table.verified,
        table.chunks,
        if table.failed > 0 {
            format!(", {} FAILED", table.failed)
        } else {
            String::new()
        }
    )
}

fn apply(tables: &mut [TableProgress], event: JobEvent) {
    match event {
        JobEvent::Loaded { .. } | JobEvent::ChunkStarted { .. } => {}
        JobEvent::ChunkSplit {
            table_index, added, ..
        } => {
            if let Some(table) = tables.get_mut(table_index) {
                table.chunks += added.len();
            }
        }
        JobEvent::RowsCopied { table_index, rows } => {
            if let Some(table) = tables.get_mut(table_index) {
                table.rows += rows;
                if let Some(bar) = &table.bar {
                    bar.inc(rows);
                }
            }
        }
        JobEvent::ChunkFinished {
            record,
            table_index,
            rows_streamed,
        } => {
            let Some(table) = tables.get_mut(table_index) else {
                return;
            };
            let state = record.as_ref().map(|record| record.state);
            if !matches!(state, Some(ChunkState::Verified | ChunkState::Copied)) {
                // Not committed and verified (nor committed, to be verified once its
                // table's key is built): take its rows back.
                table.rows = table.rows.saturating_sub(rows_streamed);
                if let Some(bar) = &table.bar {
                    bar.set_position(table.rows);
                }
            }
            match state {
                Some(ChunkState::Verified) => table.verified += 1,
                Some(ChunkState::Failed) => table.failed += 1,
                _ => {}
            }
            let done = table.verified + table.failed == table.chunks;
            match &table.bar {
                Some(bar) => {
                    if table.rows > bar.length().unwrap_or(0) {
                        bar.set_length(table.rows);
                    }
                    bar.set_message(format!("{}/{} chunks", table.verified, table.chunks));
                    if done {
                        bar.set_length(table.rows);
                        bar.finish();
                    }
                }
                None if done && state.is_some() => eprintln!("{}", line(table)),
                None => {}
            }
        }
    }
}
