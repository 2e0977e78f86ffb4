//! Commands that drive a ferry cluster through a coordinator's Control API: submit and
//! list jobs, watch one, inspect and re-copy chunks, cancel, list and drain workers.
//! `ferryctl local` refuses them (UNIMPLEMENTED, exit 2): it runs one job in one process.
//!
//! Every command tries the endpoints of `--endpoint` in turn (see
//! [`crate::remote`]); `watch` also reconnects for up to [`RECONNECT_WINDOW`] when its
//! stream breaks, because a coordinator failover breaks it on purpose.

use std::io::IsTerminal;
use std::path::Path;
use std::time::Duration;

use ferry_proto::v1 as pb;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use tokio::time::Instant;

use crate::exit_code;
use crate::remote::{
    OutputFormat, RemoteError, job_state_name, job_status_json, job_status_line, request,
    request_at,
};

/// How long `watch` keeps reconnecting after its stream broke: an election takes a few
/// seconds (a 5 s etcd lease), a rescheduled coordinator pod somewhat longer.
pub const RECONNECT_WINDOW: Duration = Duration::from_secs(60);

/// First pause between reconnection attempts; doubles up to [`MAX_RECONNECT_BACKOFF`].
const FIRST_RECONNECT_BACKOFF: Duration = Duration::from_millis(250);

/// Longest pause between reconnection attempts.
const MAX_RECONNECT_BACKOFF: Duration = Duration::from_secs(5);

/// Chunks asked for per ListChunks page.
const CHUNK_PAGE_SIZE: u32 = 1000;

/// A chunk state, as `--state` takes it (any case).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ChunkStateArg {
    /// Waiting for a worker.
    Planned,
    /// Given to a worker.
    Assigned,
    /// Being copied.
    Copying,
    /// Being verified.
    Verifying,
    /// Copied and verified.
    Verified,
    /// Out of attempts.
    Failed,
}

impl ChunkStateArg {
    /// The state's name in the Control API.
    pub fn api_name(self) -> &'static str {
        match self {
            ChunkStateArg::Planned => "PLANNED",
            ChunkStateArg::Assigned => "ASSIGNED",
            ChunkStateArg::Copying => "COPYING",
            ChunkStateArg::Verifying => "VERIFYING",
            ChunkStateArg::Verified => "VERIFIED",
            ChunkStateArg::Failed => "FAILED",
        }
    }
}

/// Which chunks `ferryctl recopy` copies again (clap makes sure exactly one is given).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RecopyTarget {
    /// `--chunk ID` (repeatable).
    Chunks(Vec<u32>),
    /// `--table T`.
    Table(String),
    /// `--state S`.
    State(ChunkStateArg),
}

/// Prints `rows` under `headers` in aligned columns; the last column is not padded, so
/// a long error message does not widen every line.
fn print_table(headers: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = headers
        .iter()
        .map(|header| header.chars().count())
        .collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let render = |cells: &mut dyn Iterator<Item = &str>| {
        let mut line = String::new();
        for (index, cell) in cells.enumerate() {
            if index + 1 == widths.len() {
                line.push_str(cell);
            } else {
                let width = widths.get(index).copied().unwrap_or(0);
                line.push_str(&format!("{cell:<width$}  "));
            }
        }
        line.trim_end().to_string()
    };
    println!("{}", render(&mut headers.iter().copied()));
    for row in rows {
        println!("{}", render(&mut row.iter().map(String::as_str)));
    }
}

/// A Unix time in milliseconds as `2026-11-22T08:46:00Z`; `-` when unset (0).
fn format_unix_ms(unix_ms: i64) -> String {
    if unix_ms == 0 {
        return "-".to_string();
    }
    match jiff::Timestamp::from_millisecond(unix_ms) {
        Ok(instant) => instant.strftime("%Y-%m-%dT%H:%M:%SZ").to_string(),
        Err(_) => unix_ms.to_string(),
    }
}

fn print_json(value: &serde_json::Value) {
    println!("{value}");
}

/// Reports `outcome`: exit 0, or the error's line and code.
fn finish(outcome: Result<(), RemoteError>) -> i32 {
    match outcome {
        Ok(()) => exit_code::OK,
        Err(error) => error.report(),
    }
}

/// How `ferryctl submit` submits.
#[derive(Clone, Copy, Debug, Default)]
pub struct SubmitOptions {
    /// Plan only.
    pub dry_run: bool,
    /// Follow the job to its end.
    pub wait: bool,
    /// Submit the spec as a verify-only job.
    pub verify_only: bool,
}

/// `ferryctl submit SPEC [--dry-run] [--wait] [--verify-only]`.
pub async fn submit(
    endpoints: &str,
    spec_path: &Path,
    options: SubmitOptions,
    format: OutputFormat,
) -> i32 {
    let SubmitOptions {
        dry_run,
        wait,
        verify_only,
    } = options;
    let mut spec_yaml = match crate::local::read_spec_text(spec_path) {
        Ok(text) => text,
        Err(error) => {
            eprintln!("error: {error}");
            return error.exit_code();
        }
    };
    if verify_only {
        let name = match verify_job_name(&spec_yaml) {
            Ok(name) => name,
            Err(message) => {
                eprintln!("error: invalid spec {}: {message}", spec_path.display());
                return exit_code::INVALID_INPUT;
            }
        };
        spec_yaml = match crate::verify::verify_spec_yaml(&spec_yaml, &name) {
            Ok(text) => text,
            Err(message) => {
                eprintln!("error: invalid spec {}: {message}", spec_path.display());
                return exit_code::INVALID_INPUT;
            }
        };
    }
    let outcome = request(endpoints, |mut client| {
        let submission = pb::SubmitJobRequest {
            spec_yaml: spec_yaml.clone(),
            dry_run,
        };
        async move {
            client
                .submit_job(submission)
                .await
                .map(tonic::Response::into_inner)
        }
    })
    .await;
    let plan = match outcome {
        Ok(plan) => plan,
        Err(error) => return error.report(),
    };
    print_plan(&plan, format);
    if wait && plan.submitted {
        return watch(endpoints, &plan.job_id, format).await;
    }
    exit_code::OK
}

/// The name of a spec's verify-only job in a cluster: `<name>-verify-<UTC time>`, a new
/// job at each submission (the name is at most 64 characters).
fn verify_job_name(spec_yaml: &str) -> Result<String, String> {
    let document: serde_yaml_ng::Value = serde_yaml_ng::from_str(spec_yaml)
        .map_err(|error| format!("the spec is not YAML: {error}"))?;
    let name = document
        .get("name")
        .and_then(serde_yaml_ng::Value::as_str)
        .ok_or("name: missing required field")?;
    Ok(stamped_job_name(name, "verify"))
}

/// The name of a job of `kind` (`verify`, `sync`) of the job `name` in a cluster:
/// `<name>-<kind>-<UTC time>`, a new job at each submission (at most 64 characters).
pub fn stamped_job_name(name: &str, kind: &str) -> String {
    let now = jiff::Timestamp::now();
    // To the millisecond: two submissions in one second are two jobs.
    let stamp = format!(
        "{}{:03}",
        now.strftime("%Y%m%dT%H%M%S"),
        now.as_millisecond().rem_euclid(1000)
    );
    crate::verify::suffixed_name(name, &format!("-{kind}-{stamp}"))
}

fn print_plan(plan: &pb::SubmitJobResponse, format: OutputFormat) {
    if format == OutputFormat::Json {
        let tables: Vec<serde_json::Value> = plan
            .tables
            .iter()
            .map(|table| {
                serde_json::json!({
                    "source": table.source,
                    "target": table.target,
                    "chunks": table.chunks,
                    "estimated_rows": table.estimated_rows,
                    "warnings": table.warnings,
                })
            })
            .collect();
        print_json(&serde_json::json!({
            "job": plan.job_id,
            "submitted": plan.submitted,
            "chunks_total": plan.chunks_total,
            "estimated_rows": plan.estimated_rows,
            "tables": tables,
        }));
        return;
    }
    let totals = format!(
        "{} tables, {} chunks, ~{} rows",
        plan.tables.len(),
        plan.chunks_total,
        plan.estimated_rows
    );
    if !plan.submitted {
        println!(
            "plan of job {} (dry run: nothing stored or started)",
            plan.job_id
        );
        let rows: Vec<Vec<String>> = plan
            .tables
            .iter()
            .map(|table| {
                vec![
                    table.source.clone(),
                    table.target.clone(),
                    table.chunks.to_string(),
                    table.estimated_rows.to_string(),
                ]
            })
            .collect();
        print_table(&["SOURCE", "TARGET", "CHUNKS", "EST. ROWS"], &rows);
        println!("total: {totals}");
    } else {
        println!("submitted job {}: {totals}", plan.job_id);
    }
    for table in &plan.tables {
        for warning in &table.warnings {
            println!("warning: table {}: {warning}", table.source);
        }
    }
}

/// `ferryctl jobs`.
pub async fn jobs(endpoints: &str, format: OutputFormat) -> i32 {
    let outcome = request(endpoints, |mut client| async move {
        client
            .list_jobs(pb::ListJobsRequest {})
            .await
            .map(tonic::Response::into_inner)
    })
    .await
    .map(|response| {
        if format == OutputFormat::Json {
            let jobs: Vec<serde_json::Value> = response
                .jobs
                .iter()
                .map(|job| {
                    serde_json::json!({
                        "job": job.job_id,
                        "state": job_state_name(job.state),
                        "reason": job.reason,
                        "submitted_at_unix_ms": job.submitted_at_unix_ms,
                    })
                })
                .collect();
            print_json(&serde_json::Value::Array(jobs));
        } else if response.jobs.is_empty() {
            println!("no jobs (submit one with ferryctl submit SPEC)");
        } else {
            let rows: Vec<Vec<String>> = response
                .jobs
                .iter()
                .map(|job| {
                    vec![
                        job.job_id.clone(),
                        job_state_name(job.state).to_string(),
                        format_unix_ms(job.submitted_at_unix_ms),
                        job.reason.clone(),
                    ]
                })
                .collect();
            print_table(&["JOB", "STATE", "SUBMITTED", "REASON"], &rows);
        }
    });
    finish(outcome)
}

/// `ferryctl chunks JOB [--state S] [--table T]`: every page of ListChunks, read from one
/// endpoint, then printed at once (so the columns line up).
pub async fn chunks(
    endpoints: &str,
    job: &str,
    state_opt: Option<ChunkStateArg>,
    table_opt: Option<&str>,
    format: OutputFormat,
) -> i32 {
    let state = state_opt.map(ChunkStateArg::api_name).unwrap_or_default();
    let table = table_opt.unwrap_or_default();
    let outcome = list_all_chunks(endpoints, job, state, table)
        .await
        .map(|chunks| print_chunks(&chunks, format));
    finish(outcome)
}

/// Every chunk of `job` in `state` of `table` (empty: any), page after page.
pub(crate) async fn list_all_chunks(
    endpoints: &str,
    job: &str,
    state: &str,
    table: &str,
) -> Result<Vec<pb::ChunkInfo>, RemoteError> {
    request(endpoints, |mut client| {
        let job_id = job.to_string();
        async move {
            let mut chunks = Vec::new();
            let mut page_token = String::new();
            loop {
                let page = client
                    .list_chunks(pb::ListChunksRequest {
                        job_id: job_id.clone(),
                        state: state.to_string(),
                        table: table.to_string(),
                        page_size: CHUNK_PAGE_SIZE,
                        page_token,
                    })
                    .await?
                    .into_inner();
                chunks.extend(page.chunks);
                if page.next_page_token.is_empty() {
                    return Ok(chunks);
                }
                page_token = page.next_page_token;
            }
        }
    })
    .await
}

fn print_chunks(chunks: &[pb::ChunkInfo], format: OutputFormat) {
    if format == OutputFormat::Json {
        let values: Vec<serde_json::Value> = chunks
            .iter()
            .map(|chunk| {
                serde_json::json!({
                    "id": chunk.id,
                    "table": chunk.table,
                    "range": chunk.range,
                    "state": chunk.state,
                    "attempt": chunk.attempt,
                    "failures": chunk.failures,
                    "estimated_rows": chunk.estimated_rows,
                    "rows": chunk.rows,
                    "worker": chunk.worker,
                    "last_error": chunk.last_error,
                })
            })
            .collect();
        print_json(&serde_json::Value::Array(values));
        return;
    }
    if chunks.is_empty() {
        println!("no chunks match");
        return;
    }
    let rows: Vec<Vec<String>> = chunks
        .iter()
        .map(|chunk| {
            // Until a chunk is verified, the planner's estimate is all there is.
            let rows = if chunk.state == "VERIFIED" {
                chunk.rows.to_string()
            } else {
                format!("~{}", chunk.estimated_rows)
            };
            vec![
                chunk.id.to_string(),
                chunk.table.clone(),
                chunk.range.clone(),
                chunk.state.clone(),
                chunk.attempt.to_string(),
                chunk.failures.to_string(),
                rows,
                if chunk.worker.is_empty() {
                    "-".to_string()
                } else {
                    chunk.worker.clone()
                },
                chunk.last_error.replace('\n', " "),
            ]
        })
        .collect();
    print_table(
        &[
            "ID",
            "TABLE",
            "RANGE",
            "STATE",
            "ATTEMPT",
            "FAILURES",
            "ROWS",
            "WORKER",
            "LAST ERROR",
        ],
        &rows,
    );
}

/// `ferryctl cancel JOB`.
pub async fn cancel(endpoints: &str, job: &str, format: OutputFormat) -> i32 {
    let outcome = request(endpoints, |mut client| {
        let job_id = job.to_string();
        async move {
            client
                .cancel_job(pb::CancelJobRequest { job_id })
                .await
                .map(tonic::Response::into_inner)
        }
    })
    .await
    .map(|_| {
        if format == OutputFormat::Json {
            print_json(&serde_json::json!({ "job": job, "cancelled": true }));
        } else {
            println!("cancelled job {job}: no chunk starts any more, running attempts roll back");
        }
    });
    finish(outcome)
}

/// `ferryctl recopy JOB (--chunk ID ... | --table T | --state S)`.
pub async fn recopy(endpoints: &str, job: &str, target: RecopyTarget, format: OutputFormat) -> i32 {
    let outcome = request(endpoints, |mut client| {
        let mut recopy = pb::RecopyChunksRequest {
            job_id: job.to_string(),
            ..Default::default()
        };
        match &target {
            RecopyTarget::Chunks(ids) => recopy.chunk_ids = ids.clone(),
            RecopyTarget::Table(table) => recopy.table = table.clone(),
            RecopyTarget::State(state) => recopy.state = state.api_name().to_string(),
        }
        async move {
            client
                .recopy_chunks(recopy)
                .await
                .map(tonic::Response::into_inner)
        }
    })
    .await
    .map(|response| {
        if format == OutputFormat::Json {
            print_json(&serde_json::json!({ "job": job, "chunk_ids": response.chunk_ids }));
        } else if response.chunk_ids.is_empty() {
            println!("job {job}: no chunk matches, nothing to copy again");
        } else {
            let ids: Vec<String> = response.chunk_ids.iter().map(u32::to_string).collect();
            println!(
                "job {job}: copying {} chunks again with overwrite: {}",
                response.chunk_ids.len(),
                ids.join(", ")
            );
        }
    });
    finish(outcome)
}

/// `ferryctl workers`.
pub async fn workers(endpoints: &str, format: OutputFormat) -> i32 {
    let outcome = request(endpoints, |mut client| async move {
        client
            .list_workers(pb::ListWorkersRequest {})
            .await
            .map(tonic::Response::into_inner)
    })
    .await
    .map(|response| {
        if format == OutputFormat::Json {
            let workers: Vec<serde_json::Value> = response
                .workers
                .iter()
                .map(|worker| {
                    serde_json::json!({
                        "id": worker.id,
                        "slots": worker.slots,
                        "busy": worker.busy,
                        "draining": worker.draining,
                        "host": worker.host,
                        "pid": worker.pid,
                        "registered_at_unix_ms": worker.registered_at_unix_ms,
                    })
                })
                .collect();
            print_json(&serde_json::Value::Array(workers));
        } else if response.workers.is_empty() {
            println!("no live workers");
        } else {
            let rows: Vec<Vec<String>> = response
                .workers
                .iter()
                .map(|worker| {
                    vec![
                        worker.id.clone(),
                        format!("{}/{}", worker.busy, worker.slots),
                        if worker.draining { "yes" } else { "no" }.to_string(),
                        worker.host.clone(),
                        worker.pid.to_string(),
                        format_unix_ms(worker.registered_at_unix_ms),
                    ]
                })
                .collect();
            print_table(
                &["WORKER", "BUSY", "DRAINING", "HOST", "PID", "REGISTERED"],
                &rows,
            );
        }
    });
    finish(outcome)
}

/// `ferryctl drain WORKER`.
pub async fn drain(endpoints: &str, worker: &str, format: OutputFormat) -> i32 {
    let outcome = request(endpoints, |mut client| {
        let worker_id = worker.to_string();
        async move {
            client
                .drain_worker(pb::DrainWorkerRequest { worker_id })
                .await
                .map(tonic::Response::into_inner)
        }
    })
    .await
    .map(|_| {
        if format == OutputFormat::Json {
            print_json(&serde_json::json!({ "worker": worker, "draining": true }));
        } else {
            println!(
                "worker {worker} is draining: it takes no new chunk, finishes or releases its chunks, then exits"
            );
        }
    });
    finish(outcome)
}

/// `ferryctl watch JOB` (and `submit --wait`): follows the job until it ends; Ctrl-C
/// stops watching (exit 130), the job goes on.
pub async fn watch(endpoints: &str, job: &str, format: OutputFormat) -> i32 {
    tokio::select! {
        code = follow_job(endpoints, job, format) => code,
        _ = tokio::signal::ctrl_c() => {
            eprintln!("\ninterrupted: the job goes on; `ferryctl watch {job}` follows it again");
            exit_code::INTERRUPTED
        }
    }
}

/// Whether a FAILED job is a verify-only job that found differences and nothing else
/// (its stored reason says so).
pub(crate) async fn found_differences(endpoints: &str, job: &str) -> bool {
    let listed = request(endpoints, |mut client| async move {
        client
            .list_jobs(pb::ListJobsRequest {})
            .await
            .map(tonic::Response::into_inner)
    })
    .await;
    listed.is_ok_and(|listed| {
        listed.jobs.iter().any(|summary| {
            summary.job_id == job
                && summary
                    .reason
                    .starts_with(ferry_coordinator::cluster::runtime::DIFFERENCES_FOUND)
        })
    })
}

/// The exit code of a job that ended in `state`, or `None` while it runs.
fn final_exit_code(state: i32) -> Option<i32> {
    match pb::JobState::try_from(state) {
        Ok(pb::JobState::Done) => Some(exit_code::OK),
        Ok(pb::JobState::Failed | pb::JobState::Cancelled) => Some(exit_code::REMOTE_FAILED),
        _ => None,
    }
}

/// Whether a broken watch stream is worth reopening: the coordinator went away or lost
/// its leadership (a failover), rather than refusing the job.
fn is_transient(error: &RemoteError) -> bool {
    matches!(
        error,
        RemoteError::Unreachable(_) | RemoteError::Standby(_) | RemoteError::Failed(_)
    )
}

/// How `watch` shows snapshots: a bar on a terminal, else a line (or a JSON object) per
/// snapshot on stdout.
enum WatchDisplay {
    Bar(ProgressBar),
    Lines,
    Json,
}

impl WatchDisplay {
    fn new(job: &str, format: OutputFormat) -> Self {
        if format == OutputFormat::Json {
            return WatchDisplay::Json;
        }
        if !std::io::stderr().is_terminal() {
            return WatchDisplay::Lines;
        }
        let style = ProgressStyle::with_template(
            "{prefix} [{bar:30}] {pos}/{len} chunks verified  {msg}  {elapsed}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ");
        let bar = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr());
        bar.set_style(style);
        bar.set_prefix(job.to_string());
        WatchDisplay::Bar(bar)
    }

    fn show(&self, snapshot: &pb::GetJobResponse) {
        match self {
            WatchDisplay::Bar(bar) => {
                bar.set_length(u64::from(snapshot.chunks_total));
                bar.set_position(u64::from(snapshot.chunks_verified));
                let waiting = if snapshot.waiting.is_empty() {
                    String::new()
                } else {
                    format!("; {}", snapshot.waiting)
                };
                bar.set_message(format!(
                    "{} rows verified, {} running, {} failed, {}{waiting}",
                    snapshot.rows_verified,
                    snapshot.chunks_running,
                    snapshot.chunks_failed,
                    job_state_name(snapshot.state)
                ));
            }
            WatchDisplay::Lines => println!("{}", job_status_line(snapshot)),
            WatchDisplay::Json => print_json(&job_status_json(snapshot)),
        }
    }

    /// A remark on stderr that does not tear the bar.
    fn note(&self, message: &str) {
        match self {
            WatchDisplay::Bar(bar) => bar.suspend(|| eprintln!("{message}")),
            WatchDisplay::Lines | WatchDisplay::Json => eprintln!("{message}"),
        }
    }

    /// Leaves the bar where it is, and prints the final snapshot's line on stdout.
    fn finish(&self, last_opt: Option<&pb::GetJobResponse>) {
        if let WatchDisplay::Bar(bar) = self {
            bar.abandon();
            if let Some(last) = last_opt {
                println!("{}", job_status_line(last));
            }
        }
    }
}

/// Opens the watch on the first endpoint that answers.
async fn open_watch(
    endpoints: &str,
    job: &str,
) -> Result<(String, tonic::Streaming<pb::GetJobResponse>), RemoteError> {
    request_at(endpoints, |mut client| {
        let job_id = job.to_string();
        async move {
            client
                .watch_job(pb::WatchJobRequest { job_id })
                .await
                .map(tonic::Response::into_inner)
        }
    })
    .await
}

async fn follow_job(endpoints: &str, job: &str, format: OutputFormat) -> i32 {
    let display = WatchDisplay::new(job, format);
    let mut last_snapshot_opt: Option<pb::GetJobResponse> = None;
    // Set while reconnecting: when the window closes.
    let mut reconnect_deadline_opt: Option<Instant> = None;
    let mut backoff = FIRST_RECONNECT_BACKOFF;
    loop {
        let broken = match open_watch(endpoints, job).await {
            Ok((endpoint, mut stream)) => loop {
                match stream.message().await {
                    Ok(Some(snapshot)) => {
                        reconnect_deadline_opt = None;
                        backoff = FIRST_RECONNECT_BACKOFF;
                        display.show(&snapshot);
                        let ended_opt = final_exit_code(snapshot.state);
                        last_snapshot_opt = Some(snapshot);
                        if let Some(code) = ended_opt {
                            display.finish(last_snapshot_opt.as_ref());
                            report_end(job, last_snapshot_opt.as_ref());
                            if code == exit_code::REMOTE_FAILED
                                && found_differences(endpoints, job).await
                            {
                                return exit_code::DIFFERENCES;
                            }
                            return code;
                        }
                    }
                    Ok(None) => {
                        break RemoteError::Unreachable(format!(
                            "{endpoint} ended the watch before the job ended"
                        ));
                    }
                    Err(status) => break crate::remote::status_error(&endpoint, status),
                }
            },
            Err(error) => error,
        };
        // Never connected: answer at once, as every other command does. A refusal (an
        // unknown job) is final either way.
        if last_snapshot_opt.is_none() || !is_transient(&broken) {
            display.finish(None);
            return broken.report();
        }
        let now = Instant::now();
        let deadline = *reconnect_deadline_opt.get_or_insert_with(|| {
            display.note(&format!(
                "lost the watch ({}); reconnecting for up to {} s",
                message_of(&broken),
                RECONNECT_WINDOW.as_secs()
            ));
            now + RECONNECT_WINDOW
        });
        if now >= deadline {
            display.finish(None);
            return RemoteError::Unreachable(format!(
                "lost the watch of job {job} and no ferry at {endpoints} took it up again within {} s ({}); the job may still run: ferryctl status {job}",
                RECONNECT_WINDOW.as_secs(),
                message_of(&broken)
            ))
            .report();
        }
        tokio::time::sleep(backoff.min(deadline - now)).await;
        backoff = (backoff * 2).min(MAX_RECONNECT_BACKOFF);
    }
}

fn message_of(error: &RemoteError) -> &str {
    match error {
        RemoteError::Unreachable(message)
        | RemoteError::Standby(message)
        | RemoteError::Refused(message)
        | RemoteError::Failed(message) => message,
    }
}

/// Says on stderr what to do about a job that did not end DONE.
fn report_end(job: &str, last_opt: Option<&pb::GetJobResponse>) {
    let Some(last) = last_opt else { return };
    match pb::JobState::try_from(last.state) {
        Ok(pb::JobState::Failed) => eprintln!(
            "job {job} ended FAILED with {} failed chunks: `ferryctl chunks {job} --state failed` lists them, `ferryctl recopy {job} --state failed` copies them again",
            last.chunks_failed
        ),
        Ok(pb::JobState::Cancelled) => eprintln!("job {job} was cancelled"),
        _ => {}
    }
}
