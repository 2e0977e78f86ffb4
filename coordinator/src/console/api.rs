//! The console's HTTP routes: the embedded page and the JSON endpoints it polls. Each
//! handler authorizes the caller, calls one domain method (or a few reads), and turns
//! the answer into JSON; errors map to status codes in [`error_status`].
//!
//! | method and path | role | domain call |
//! |---|---|---|
//! | `GET /`, `/console.js`, `/console.css` | none | the embedded page |
//! | `GET /api/session` | none | who the bearer token names (200 with `ok: false` when none) |
//! | `GET /api/jobs` | viewer | `list_jobs`, `job_status`, `history` (who submitted) |
//! | `GET /api/jobs/{job}?since=MS` | viewer | `job_status`, `list_chunks` (aggregated), `throttle` (with the schedule windows since `since`), `history` |
//! | `GET /api/jobs/{job}/chunks?offset=&limit=` | viewer | `list_chunks` |
//! | `GET /api/workers` | viewer | `list_workers`, the running jobs' in-flight chunks |
//! | `POST /api/jobs/{job}/pause`, `/resume` | operator | `pause`, `resume` |
//! | `POST /api/jobs/{job}/throttle` `{max_concurrency?, clear_override?, rows_per_sec?}` | operator | `update_throttle` |
//! | `POST /api/jobs/{job}/recopy` `{chunk_ids}` or `{table}` | operator | `recopy` |
//! | `POST /api/workers/{worker}/drain` | operator | `drain` |

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::header::{AUTHORIZATION, CACHE_CONTROL, CONTENT_TYPE, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use serde::Deserialize;
use serde_json::{Value, json};

use super::Console;
use super::assets;
use super::view::schedule_spans;
use crate::control::{ChunkFilter, ControlError, RecopySelector, ThrottleUpdate};
use crate::security::{AccessDenied, Caller, Role};
use ferry_model::throttle::ThrottlePolicy;

/// The largest request body accepted (an action's few fields).
const MAX_BODY_BYTES: usize = 64 * 1024;

/// The most chunks one `/chunks` request lists.
const MAX_CHUNK_PAGE: usize = 1000;

/// The history entries the job page gets (the newest).
const MAX_HISTORY_ENTRIES: usize = 200;

/// An answer that is not a success: its status and message.
struct Refusal {
    status: StatusCode,
    message: String,
    leader: Option<String>,
}

impl Refusal {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Refusal {
            status,
            message: message.into(),
            leader: None,
        }
    }
}

impl From<ControlError> for Refusal {
    fn from(error: ControlError) -> Self {
        let leader = match &error {
            ControlError::NotLeader(leader_opt) => leader_opt.clone(),
            _ => None,
        };
        Refusal {
            status: error_status(&error),
            message: error.to_string(),
            leader,
        }
    }
}

impl From<AccessDenied> for Refusal {
    fn from(denied: AccessDenied) -> Self {
        let status = match denied {
            AccessDenied::Unauthenticated(_) => StatusCode::UNAUTHORIZED,
            AccessDenied::PermissionDenied(_) => StatusCode::FORBIDDEN,
        };
        Refusal::new(status, denied.to_string())
    }
}

/// The HTTP status of a domain error (the gRPC adapter's codes, in HTTP).
pub fn error_status(error: &ControlError) -> StatusCode {
    match error {
        ControlError::UnknownJob(_) | ControlError::UnknownWorker(_) => StatusCode::NOT_FOUND,
        ControlError::InvalidSpec(_)
        | ControlError::InvalidThrottle(_)
        | ControlError::InvalidArgument(_)
        | ControlError::BadPageToken(_) => StatusCode::BAD_REQUEST,
        ControlError::CorruptRecord(_) | ControlError::Internal(_) => {
            tracing::error!(%error, "console request failed");
            StatusCode::INTERNAL_SERVER_ERROR
        }
        // A standby answers reads; a change goes to the leader, named in the answer.
        ControlError::NotLeader(_) => StatusCode::MISDIRECTED_REQUEST,
        ControlError::Unsupported(_) => StatusCode::NOT_IMPLEMENTED,
        ControlError::AlreadyExists(_) => StatusCode::CONFLICT,
        ControlError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
    }
}

type Answer = Result<Value, Refusal>;

/// Answers one request.
pub async fn answer(console: &Console, request: Request<Incoming>) -> Response<Full<Bytes>> {
    let path = request.uri().path().to_owned();
    if request.method() == Method::GET
        && let Some((body, content_type)) = assets::asset(&path)
    {
        return respond(StatusCode::OK, content_type, Bytes::from_static(body));
    }
    let Some(api_path) = path.strip_prefix("/api/") else {
        return respond(
            StatusCode::NOT_FOUND,
            "text/plain; charset=utf-8",
            Bytes::from(format!("no page {path}: the console is at /\n")),
        );
    };
    let segments: Vec<String> = api_path
        .split('/')
        .map(ferry_model::text::percent_decode)
        .collect();
    let query = request.uri().query().unwrap_or("").to_owned();
    let authorization = request
        .headers()
        .get(AUTHORIZATION)
        .map(|value| value.to_str().unwrap_or("").to_owned());
    let method = request.method().clone();
    let body = if method == Method::POST {
        match Limited::new(request.into_body(), MAX_BODY_BYTES)
            .collect()
            .await
        {
            Ok(collected) => collected.to_bytes(),
            Err(_) => {
                return json_response(Err(Refusal::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    format!("a console request body has at most {MAX_BODY_BYTES} bytes"),
                )));
            }
        }
    } else {
        Bytes::new()
    };
    let call = Call {
        console,
        authorization: authorization.as_deref(),
    };
    let segments: Vec<&str> = segments.iter().map(String::as_str).collect();
    let result = match (&method, segments.as_slice()) {
        (&Method::GET, ["session"]) => Ok(call.session()),
        (&Method::GET, ["jobs"]) => call.jobs().await,
        (&Method::GET, ["jobs", job]) => call.job(job, &query).await,
        (&Method::GET, ["jobs", job, "chunks"]) => call.chunks(job, &query).await,
        (&Method::GET, ["workers"]) => call.workers().await,
        (&Method::POST, ["jobs", job, action]) => call.act_on_job(job, action, &body).await,
        (&Method::POST, ["workers", worker, "drain"]) => call.drain(worker).await,
        _ => Err(Refusal::new(
            StatusCode::NOT_FOUND,
            format!("no console endpoint {method} /api/{api_path}"),
        )),
    };
    json_response(result)
}

/// One request's caller and the console it calls.
struct Call<'a> {
    console: &'a Console,
    authorization: Option<&'a str>,
}

impl Call<'_> {
    fn authorize(&self, what: &str, needed: Role) -> Result<Caller, Refusal> {
        let caller = self
            .console
            .access
            .authorize_header(self.authorization, what, needed)?;
        if needed == Role::Operator {
            tracing::info!(action = what, caller = %caller.identity, "console change");
        }
        Ok(caller)
    }

    /// Who the token names; answered 200 either way, so the page can ask for a token
    /// without an error in the browser's console.
    fn session(&self) -> Value {
        match self
            .console
            .access
            .authorize_header(self.authorization, "the console", Role::Viewer)
        {
            Ok(caller) => json!({
                "ok": true,
                "identity": caller.identity,
                "role": caller.role.as_str(),
                "authenticates": self.console.access.authenticates(),
            }),
            Err(denied) => json!({"ok": false, "message": denied.to_string()}),
        }
    }

    async fn jobs(&self) -> Answer {
        self.authorize("ListJobs", Role::Viewer)?;
        let domain = &self.console;
        let mut listed = Vec::new();
        for job in domain.cluster.list_jobs().await? {
            let status = domain.jobs.job_status(&job.job).await.ok();
            let history = domain.jobs.history(&job.job).await.unwrap_or_default();
            let submitted_by = history
                .iter()
                .find(|change| change.action == "submit")
                .map(|change| change.actor.clone());
            listed.push(json!({
                "job": job.job,
                "state": job_state(job.state),
                "reason": job.reason,
                "submitted_at_unix_ms": job.submitted_at_unix_ms,
                "submitted_by": submitted_by,
                "status": status.map(status_json),
            }));
        }
        Ok(json!({ "jobs": listed }))
    }

    async fn job(&self, job: &str, query: &str) -> Answer {
        self.authorize("GetJob", Role::Viewer)?;
        let now_ms = jiff::Timestamp::now().as_millisecond();
        // The chart's start, for the schedule windows shaded on it.
        let since_ms = query_value(query, "since")
            .and_then(|text| text.parse::<i64>().ok())
            .unwrap_or(now_ms);
        let domain = &self.console;
        let status = domain.jobs.job_status(job).await?;
        let summary = domain.chunk_summary(job).await?;
        // A job that no longer runs here has no pacer: its throttle is not shown.
        let throttle = domain
            .jobs
            .throttle(job, None)
            .await
            .ok()
            .map(|(policy, effective)| {
                let spans = serde_json::from_str::<ThrottlePolicy>(&policy)
                    .map(|policy| schedule_spans(&policy, since_ms, now_ms))
                    .unwrap_or_default();
                json!({
                    "schedule_spans": spans,
                    "policy": serde_json::from_str::<Value>(&policy).unwrap_or(Value::Null),
                    "effective": {
                        "concurrency": effective.concurrency,
                        "paused": effective.paused,
                        "reasons": effective.reasons,
                        "load": effective.load,
                        "in_flight": effective.in_flight,
                        "rows_per_sec": effective.rows_per_sec,
                        "bytes_per_sec": effective.bytes_per_sec,
                    },
                })
            });
        let history = domain.jobs.history(job).await.unwrap_or_default();
        let skip = history.len().saturating_sub(MAX_HISTORY_ENTRIES);
        let history: Vec<Value> = history
            .iter()
            .skip(skip)
            .map(|change| {
                json!({
                    "at_unix_ms": change.at_unix_ms,
                    "origin": change.origin,
                    "action": change.action,
                    "actor": change.actor,
                    "summary": change.summary,
                })
            })
            .collect();
        Ok(json!({
            "job": job,
            "status": status_json(status),
            "tables": summary.tables,
            "map": summary.map,
            "failures": summary.failures,
            "throttle": throttle,
            "history": history,
        }))
    }

    async fn chunks(&self, job: &str, query: &str) -> Answer {
        self.authorize("ListChunks", Role::Viewer)?;
        let number = |name: &str, default: usize| -> Result<usize, Refusal> {
            match query_value(query, name) {
                None => Ok(default),
                Some(text) => text.parse().map_err(|_| {
                    Refusal::new(
                        StatusCode::BAD_REQUEST,
                        format!("{name}={text} is not a number"),
                    )
                }),
            }
        };
        let offset = number("offset", 0)?;
        let limit = number("limit", 50)?.min(MAX_CHUNK_PAGE);
        let (chunks, more) = self
            .console
            .cluster
            .list_chunks(job, &ChunkFilter::default(), offset, limit)
            .await?;
        let chunks: Vec<Value> = chunks.into_iter().map(chunk_json).collect();
        Ok(json!({ "chunks": chunks, "more": more }))
    }

    async fn workers(&self) -> Answer {
        self.authorize("ListWorkers", Role::Viewer)?;
        let domain = &self.console;
        let workers = domain.cluster.list_workers().await?;
        // The chunks each worker holds, from the running jobs.
        let mut held: Vec<(String, Value)> = Vec::new();
        for job in domain.cluster.list_jobs().await? {
            if job_state(job.state) != "RUNNING" {
                continue;
            }
            let Ok((chunks, _)) = domain
                .cluster
                .list_chunks(&job.job, &ChunkFilter::default(), 0, u32::MAX as usize)
                .await
            else {
                continue;
            };
            for chunk in chunks {
                if chunk.worker.is_empty()
                    || !matches!(chunk.state.as_str(), "ASSIGNED" | "COPYING" | "VERIFYING")
                {
                    continue;
                }
                held.push((
                    chunk.worker.clone(),
                    json!({
                        "job": job.job,
                        "chunk": chunk.id,
                        "table": chunk.table,
                        "state": chunk.state,
                        "attempt": chunk.attempt,
                    }),
                ));
            }
        }
        let workers: Vec<Value> = workers
            .into_iter()
            .map(|worker| {
                let chunks: Vec<&Value> = held
                    .iter()
                    .filter(|(holder, _)| holder == &worker.id)
                    .map(|(_, chunk)| chunk)
                    .collect();
                json!({
                    "id": worker.id,
                    "slots": worker.slots,
                    "busy": worker.busy,
                    "draining": worker.draining,
                    "host": worker.host,
                    "pid": worker.pid,
                    "registered_at_unix_ms": worker.registered_at_unix_ms,
                    "chunks": chunks,
                })
            })
            .collect();
        Ok(json!({ "workers": workers }))
    }

    async fn act_on_job(&self, job: &str, action: &str, body: &[u8]) -> Answer {
        let domain = &self.console;
        match action {
            "pause" => {
                let caller = self.authorize("PauseJob", Role::Operator)?;
                let effective = domain.jobs.pause(job, &caller.identity).await?;
                Ok(json!({ "paused": effective.paused }))
            }
            "resume" => {
                let caller = self.authorize("ResumeJob", Role::Operator)?;
                let effective = domain.jobs.resume(job, &caller.identity).await?;
                Ok(json!({ "paused": effective.paused }))
            }
            "throttle" => {
                let caller = self.authorize("UpdateThrottle", Role::Operator)?;
                let request: ThrottleRequest = parse_body(body)?;
                let update = ThrottleUpdate {
                    max_concurrency: request.max_concurrency,
                    clear_override: request.clear_override,
                    rows_per_sec: request.rows_per_sec,
                    ..ThrottleUpdate::default()
                };
                let (policy, _) = domain
                    .jobs
                    .update_throttle(job, update, &caller.identity)
                    .await?;
                Ok(
                    json!({ "policy": serde_json::from_str::<Value>(&policy).unwrap_or(Value::Null) }),
                )
            }
            "recopy" => {
                let caller = self.authorize("RecopyChunks", Role::Operator)?;
                let request: RecopyRequest = parse_body(body)?;
                let selector = match (request.chunk_ids, request.table) {
                    (Some(ids), None) if !ids.is_empty() => RecopySelector::Ids(ids),
                    (None, Some(table)) => RecopySelector::Table(table),
                    _ => {
                        return Err(Refusal::new(
                            StatusCode::BAD_REQUEST,
                            "a re-copy names either chunk_ids (a non-empty list) or a table",
                        ));
                    }
                };
                let ids = domain
                    .cluster
                    .recopy(job, selector, &caller.identity)
                    .await?;
                Ok(json!({ "chunk_ids": ids }))
            }
            other => Err(Refusal::new(
                StatusCode::NOT_FOUND,
                format!("no job action {other:?}: pause, resume, throttle or recopy"),
            )),
        }
    }

    async fn drain(&self, worker: &str) -> Answer {
        let caller = self.authorize("DrainWorker", Role::Operator)?;
        self.console.cluster.drain(worker, &caller.identity).await?;
        Ok(json!({ "draining": worker }))
    }
}

/// A throttle change from the page.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ThrottleRequest {
    max_concurrency: Option<u32>,
    #[serde(default)]
    clear_override: bool,
    rows_per_sec: Option<u64>,
}

/// A re-copy from the page.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RecopyRequest {
    chunk_ids: Option<Vec<u32>>,
    table: Option<String>,
}

fn parse_body<T: for<'de> Deserialize<'de>>(body: &[u8]) -> Result<T, Refusal> {
    serde_json::from_slice(body).map_err(|error| {
        Refusal::new(
            StatusCode::BAD_REQUEST,
            format!("the request body is not the JSON this action takes: {error}"),
        )
    })
}

fn job_state(state: crate::control::JobStateView) -> &'static str {
    use crate::control::JobStateView;
    match state {
        JobStateView::Running => "RUNNING",
        JobStateView::Paused => "PAUSED",
        JobStateView::Done => "DONE",
        JobStateView::Failed => "FAILED",
        JobStateView::Cancelled => "CANCELLED",
    }
}

fn status_json(status: crate::control::JobStatusView) -> Value {
    json!({
        "state": job_state(status.state),
        "rows_verified": status.rows_verified,
        "rows_streamed": status.rows_streamed,
        "chunks_total": status.chunks_total,
        "chunks_verified": status.chunks_verified,
        "chunks_failed": status.chunks_failed,
        "chunks_running": status.chunks_running,
        "waiting": status.waiting,
        "eta_seconds": status.eta.map(|eta| eta.as_secs_f64()),
    })
}

fn chunk_json(chunk: crate::control::ChunkView) -> Value {
    json!({
        "id": chunk.id,
        "table": chunk.table,
        "partition": chunk.partition,
        "range": chunk.range,
        "state": chunk.state,
        "attempt": chunk.attempt,
        "failures": chunk.failures,
        "estimated_rows": chunk.estimated_rows,
        "rows": chunk.rows,
        "worker": chunk.worker,
        "last_error": chunk.last_error,
        "checksum": chunk.checksum,
    })
}

fn json_response(result: Answer) -> Response<Full<Bytes>> {
    let (status, value) = match result {
        Ok(value) => (StatusCode::OK, value),
        Err(refusal) => (
            refusal.status,
            json!({"error": refusal.message, "leader": refusal.leader}),
        ),
    };
    respond(status, "application/json", Bytes::from(value.to_string()))
}

fn respond(status: StatusCode, content_type: &'static str, body: Bytes) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(
        "content-security-policy",
        HeaderValue::from_static(
            "default-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:",
        ),
    );
    headers.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    response
}

/// The value of `name` in a query string (`a=1&b=2`), not decoded (numbers only).
fn query_value<'q>(query: &'q str, name: &str) -> Option<&'q str> {
    query
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_values_are_found_by_name() {
        assert_eq!(query_value("offset=10&limit=5", "limit"), Some("5"));
        assert_eq!(query_value("offset=10", "limit"), None);
    }

    #[test]
    fn domain_errors_map_to_http_statuses() {
        assert_eq!(
            error_status(&ControlError::UnknownJob("x".into())),
            StatusCode::NOT_FOUND
        );
        assert_eq!(
            error_status(&ControlError::InvalidThrottle(vec!["x".into()])),
            StatusCode::BAD_REQUEST
        );
        assert_eq!(
            error_status(&ControlError::NotLeader(Some("10.0.0.1:7979".into()))),
            StatusCode::MISDIRECTED_REQUEST
        );
    }
}
