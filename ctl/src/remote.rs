//! Commands that talk to a running ferry over the Control API: the `ferryctl local`
//! process (it prints its endpoint) or, with distributed mode, the coordinator.

use ferry_proto::v1 as pb;
use ferry_proto::v1::control_client::ControlClient;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

use ferry_coordinator::service::control::LEADER_METADATA_KEY;

use crate::client_security::{BearerToken, ClientSecurity};
use crate::exit_code;
use ferry_server::error_chain;

/// A Control API client with this process's bearer token.
pub(crate) type Client = ControlClient<InterceptedService<Channel, BearerToken>>;

/// How results are printed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    /// For people.
    Table,
    /// One JSON object.
    Json,
}

/// A `ferryctl throttle` invocation.
#[derive(Clone, Debug, Default)]
pub struct ThrottleArgs {
    /// `--max-concurrency N`.
    pub max_concurrency: Option<u32>,
    /// `--clear-override`.
    pub clear_override: bool,
    /// `--rows-per-sec N`.
    pub rows_per_sec: Option<u64>,
    /// `--bytes-per-sec N`.
    pub bytes_per_sec: Option<u64>,
    /// `--load-max N`.
    pub load_max: Option<f64>,
    /// `--load-critical N`.
    pub load_critical: Option<f64>,
    /// `--schedule FILE`: its contents.
    pub schedule_yaml: Option<String>,
    /// `--priority N`.
    pub priority: Option<u32>,
    /// `--show`.
    pub show: bool,
    /// `--at TIME` (with `--show`).
    pub at: Option<jiff::Timestamp>,
    /// `--history`.
    pub history: bool,
}

impl ThrottleArgs {
    fn changes_something(&self) -> bool {
        self.max_concurrency.is_some()
            || self.clear_override
            || self.rows_per_sec.is_some()
            || self.bytes_per_sec.is_some()
            || self.load_max.is_some()
            || self.load_critical.is_some()
            || self.schedule_yaml.is_some()
            || self.priority.is_some()
    }
}

/// Parses `--at`: an RFC 3339 instant (`2026-11-21T23:00:00Z`, `…+08:00`) or a civil time
/// with a zone annotation (`2026-11-21T23:00[Asia/Shanghai]`).
pub fn parse_instant(text: &str) -> Result<jiff::Timestamp, String> {
    if let Ok(instant) = text.parse::<jiff::Timestamp>() {
        return Ok(instant);
    }
    text.parse::<jiff::Zoned>().map(|zoned| zoned.timestamp()).map_err(|error| {
        format!("--at {text:?}: {error}; use e.g. 2026-11-21T23:00:00Z or 2026-11-21T23:00[Asia/Shanghai]")
    })
}

/// Why a remote command failed. Each variant is one exit code, so the mapping from a
/// gRPC status to an exit code is written once ([`status_error`]).
#[derive(Debug)]
pub(crate) enum RemoteError {
    /// No endpoint could be reached, or the one reached could not serve now (exit 3).
    Unreachable(String),
    /// Every endpoint that answered is a standby coordinator (exit 2): writes go to the
    /// leader, and none of the endpoints given is (or leads to) it.
    Standby(String),
    /// The ferry refused the request: unknown job, invalid change, not offered (exit 2).
    Refused(String),
    /// The ferry failed while serving the request (exit 1).
    Failed(String),
}

impl std::fmt::Display for RemoteError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RemoteError::Unreachable(message)
            | RemoteError::Standby(message)
            | RemoteError::Refused(message)
            | RemoteError::Failed(message) => f.write_str(message),
        }
    }
}

impl RemoteError {
    /// Prints the one-line error on stderr and returns the exit code.
    pub(crate) fn report(self) -> i32 {
        let (message, code) = match self {
            RemoteError::Unreachable(message) => (message, exit_code::RUNTIME_ERROR),
            RemoteError::Standby(message) | RemoteError::Refused(message) => {
                (message, exit_code::INVALID_INPUT)
            }
            RemoteError::Failed(message) => (message, exit_code::REMOTE_FAILED),
        };
        eprintln!("error: {message}");
        code
    }
}

/// How long to wait for a TCP connection to an endpoint before trying the next one.
const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// How long a unary request may wait for its answer (a stream's body is not limited).
const REQUEST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// HTTP/2 pings on an idle connection: a watch on a coordinator that vanished without
/// closing its connections (a host gone) notices within about twice this.
const KEEP_ALIVE_INTERVAL: std::time::Duration = std::time::Duration::from_secs(10);

/// `--endpoint` as a URI: a bare `host:port` means plain-text HTTP/2, or TLS when
/// `--ca`/`--cert` are given (which also turn `http://` into `https://`).
fn endpoint_uri(endpoint: &str) -> String {
    let tls = ClientSecurity::current().tls().is_some();
    match endpoint.split_once("://") {
        Some(("http", rest)) if tls => format!("https://{rest}"),
        Some(_) => endpoint.to_string(),
        None if tls => format!("https://{endpoint}"),
        None => format!("http://{endpoint}"),
    }
}

/// Splits `--endpoint` (or `FERRY_ENDPOINT`) into the endpoints to try in turn: several
/// coordinators may stand behind their own addresses rather than one Service or VIP.
fn parse_endpoints(endpoints: &str) -> Result<Vec<String>, RemoteError> {
    let uris: Vec<String> = endpoints
        .split(',')
        .map(str::trim)
        .filter(|endpoint| !endpoint.is_empty())
        .map(endpoint_uri)
        .collect();
    if uris.is_empty() {
        return Err(RemoteError::Refused(
            "--endpoint (or FERRY_ENDPOINT) is empty; give the Control API address, e.g. http://127.0.0.1:7878"
                .to_string(),
        ));
    }
    if let Some(foreign) = uris
        .iter()
        .find(|uri| !uri.starts_with("http://") && !uri.starts_with("https://"))
    {
        return Err(RemoteError::Refused(format!(
            "--endpoint {foreign}: the Control API speaks gRPC over http:// (or https://); \
             give e.g. http://127.0.0.1:7878"
        )));
    }
    Ok(uris)
}

async fn connect(uri: &str) -> Result<Client, RemoteError> {
    let security = ClientSecurity::current();
    let mut endpoint = Channel::from_shared(uri.to_string())
        .map_err(|error| RemoteError::Refused(format!("invalid --endpoint {uri:?}: {error}")))?;
    match security.tls() {
        Some(tls) => {
            endpoint = endpoint.tls_config(tls.clone()).map_err(|error| {
                RemoteError::Refused(format!("TLS settings for {uri}: {}", error_chain(&error)))
            })?;
        }
        None if uri.starts_with("https://") => {
            return Err(RemoteError::Refused(format!(
                "{uri} is a TLS endpoint: give --ca FILE (the CA that signed the server's \
                 certificate; or FERRY_CA)"
            )));
        }
        None => {}
    }
    let channel = endpoint
        .connect_timeout(CONNECT_TIMEOUT)
        .timeout(REQUEST_TIMEOUT)
        .http2_keep_alive_interval(KEEP_ALIVE_INTERVAL)
        .keep_alive_timeout(KEEP_ALIVE_INTERVAL)
        .keep_alive_while_idle(true)
        .connect()
        .await
        .map_err(|error| RemoteError::Unreachable(connect_error_text(&error)))?;
    Ok(ControlClient::with_interceptor(channel, security.bearer()))
}

/// What to check when TLS refused a connection.
const TLS_HINT: &str = "(TLS: check --ca, the CA that signed the server's certificate, \
                        --tls-server-name when the certificate names another host, and \
                        --cert/--key when the server requires a client certificate)";

/// Why a connection failed, with what to check when TLS was the reason.
fn connect_error_text(error: &tonic::transport::Error) -> String {
    let text = error_chain(error);
    let lower = text.to_lowercase();
    if lower.contains("certificate") || lower.contains("handshake") || lower.contains("tls") {
        format!("{text} {TLS_HINT}")
    } else {
        text
    }
}

/// Whether `status` is a standby coordinator's refusal (`ControlError::NotLeader`).
fn is_standby_refusal(status: &tonic::Status) -> bool {
    status.code() == tonic::Code::FailedPrecondition
        && (status.metadata().contains_key(LEADER_METADATA_KEY)
            || status.message().contains("standby"))
}

/// Maps a status from the ferry to the error (and so the exit code) it means for
/// `ferryctl`. The server's message is already one precise line; it is kept as it is.
pub(crate) fn status_error(endpoint: &str, status: tonic::Status) -> RemoteError {
    use tonic::Code;
    // A server without the method (an older ferry) answers UNIMPLEMENTED with no words.
    let message = if status.message().is_empty() {
        format!(
            "ferry at {endpoint} answered {} without a message",
            status.code()
        )
    } else {
        status.message().to_string()
    };
    // A TLS refusal after the handshake (a missing client certificate under TLS 1.3)
    // arrives as a cancelled or unknown call whose source says why.
    let detail = std::error::Error::source(&status)
        .map(error_chain)
        .unwrap_or_default();
    if matches!(
        status.code(),
        Code::Cancelled | Code::Unknown | Code::Unavailable
    ) && detail.to_lowercase().contains("certificate")
    {
        return RemoteError::Unreachable(format!(
            "ferry at {endpoint} refused the TLS connection: {detail} {TLS_HINT}"
        ));
    }
    // rustls does not pass the server's alert on: a TLS connection closed under the first
    // call, by a client without a certificate, is most likely a mutual-TLS refusal.
    let security = ClientSecurity::current();
    // The failure shows as "operation was canceled", "connection closed" or a bare
    // "transport error", depending on when the server's refusal arrives.
    let transport_failure = std::error::Error::source(&status).is_some()
        || status.message().contains("transport error");
    if matches!(
        status.code(),
        Code::Cancelled | Code::Unknown | Code::Unavailable
    ) && transport_failure
        && security.tls().is_some()
        && !security.has_identity()
    {
        return RemoteError::Unreachable(format!(
            "ferry at {endpoint} closed the TLS connection at the first call: a server that \
             requires client certificates (mutual TLS) does this when none is given; pass \
             --cert and --key {TLS_HINT}"
        ));
    }
    match status.code() {
        Code::InvalidArgument
        | Code::NotFound
        | Code::AlreadyExists
        | Code::Unimplemented
        | Code::OutOfRange => RemoteError::Refused(message),
        Code::FailedPrecondition if is_standby_refusal(&status) => RemoteError::Standby(message),
        Code::FailedPrecondition | Code::PermissionDenied | Code::Unauthenticated => {
            RemoteError::Refused(message)
        }
        Code::Unavailable | Code::DeadlineExceeded => RemoteError::Unreachable(format!(
            "ferry at {endpoint} cannot serve the request now ({}): {message}",
            status.code()
        )),
        code => RemoteError::Failed(format!("ferry at {endpoint} failed ({code}): {message}")),
    }
}

/// Sends one request to the first endpoint of `endpoints` (comma-separated) that
/// answers, and returns that endpoint with the answer. An endpoint that cannot be
/// reached, or that is a standby coordinator, passes the request to the next one; a
/// standby's leader hint is tried after the listed endpoints. `call` may send several
/// requests on the client (e.g. every page of a list), and is called once per endpoint
/// tried.
pub(crate) async fn request_at<T, F, Fut>(
    endpoints: &str,
    mut call: F,
) -> Result<(String, T), RemoteError>
where
    F: FnMut(Client) -> Fut,
    Fut: std::future::Future<Output = Result<T, tonic::Status>>,
{
    let mut candidates = parse_endpoints(endpoints)?;
    let mut unreachable: Vec<(String, String)> = Vec::new();
    let mut standby_refusal_opt: Option<String> = None;
    let mut index = 0;
    while let Some(uri) = candidates.get(index).cloned() {
        index += 1;
        let client = match connect(&uri).await {
            Ok(client) => client,
            Err(RemoteError::Unreachable(reason)) => {
                unreachable.push((uri, reason));
                continue;
            }
            Err(other) => return Err(other),
        };
        match call(client).await {
            Ok(answer) => return Ok((uri, answer)),
            Err(status) if is_standby_refusal(&status) => {
                let leader_opt = status
                    .metadata()
                    .get(LEADER_METADATA_KEY)
                    .and_then(|value| value.to_str().ok())
                    .map(endpoint_uri);
                if let Some(leader) = leader_opt
                    && !candidates.contains(&leader)
                {
                    candidates.push(leader);
                }
                standby_refusal_opt = Some(format!("{uri}: {}", status.message()));
            }
            Err(status) => return Err(status_error(&uri, status)),
        }
    }
    if let Some(refusal) = standby_refusal_opt {
        let also = if unreachable.is_empty() {
            String::new()
        } else {
            let names: Vec<&str> = unreachable.iter().map(|(uri, _)| uri.as_str()).collect();
            format!(" (unreachable: {})", names.join(", "))
        };
        return Err(RemoteError::Standby(format!("{refusal}{also}")));
    }
    let hint = "is `ferryctl local` (or the coordinator) running there?";
    Err(RemoteError::Unreachable(match unreachable.as_slice() {
        [(uri, reason)] => format!("cannot reach ferry at {uri}: {reason}; {hint}"),
        _ => {
            let uris: Vec<&str> = unreachable.iter().map(|(uri, _)| uri.as_str()).collect();
            let reasons: Vec<String> = unreachable
                .iter()
                .map(|(uri, reason)| format!("{uri}: {reason}"))
                .collect();
            format!(
                "cannot reach ferry at any of {} ({}); {hint}",
                uris.join(", "),
                reasons.join("; ")
            )
        }
    }))
}

/// [`request_at`] without the endpoint that answered.
pub(crate) async fn request<T, F, Fut>(endpoints: &str, call: F) -> Result<T, RemoteError>
where
    F: FnMut(Client) -> Fut,
    Fut: std::future::Future<Output = Result<T, tonic::Status>>,
{
    request_at(endpoints, call).await.map(|(_, answer)| answer)
}

/// A job state's name as ferryctl prints it (`RUNNING`, `DONE`, ...).
pub(crate) fn job_state_name(state: i32) -> &'static str {
    pb::JobState::try_from(state)
        .unwrap_or(pb::JobState::Unspecified)
        .as_str_name()
        .trim_start_matches("JOB_STATE_")
}

/// `ferryctl status`'s line for a job snapshot (also one `ferryctl watch` line).
pub(crate) fn job_status_line(response: &pb::GetJobResponse) -> String {
    let line = format!(
        "job {}: {}, {} rows verified ({} streamed this run), chunks {}/{} verified, {} failed, {} running",
        response.job_id,
        job_state_name(response.state),
        response.rows_verified,
        response.rows_streamed,
        response.chunks_verified,
        response.chunks_total,
        response.chunks_failed,
        response.chunks_running
    );
    let line = match response.eta_seconds {
        Some(eta) if response.state == pb::JobState::Running as i32 => {
            format!("{line}, ETA {}", describe_eta(eta))
        }
        _ => line,
    };
    if response.waiting.is_empty() {
        line
    } else {
        format!("{line}; {}", response.waiting)
    }
}

/// An ETA in seconds as `1h 5m`, `3m 20s` or `12s`.
pub(crate) fn describe_eta(seconds: f64) -> String {
    let total = seconds.max(0.0).round() as u64;
    let (hours, minutes, secs) = (total / 3600, total % 3600 / 60, total % 60);
    match (hours, minutes) {
        (0, 0) => format!("{secs}s"),
        (0, _) => format!("{minutes}m {secs}s"),
        _ => format!("{hours}h {minutes}m"),
    }
}

/// `ferryctl status -o json`'s object for a job snapshot.
pub(crate) fn job_status_json(response: &pb::GetJobResponse) -> serde_json::Value {
    serde_json::json!({
        "job": response.job_id,
        "state": job_state_name(response.state),
        "rows_verified": response.rows_verified,
        "rows_streamed": response.rows_streamed,
        "chunks_total": response.chunks_total,
        "chunks_verified": response.chunks_verified,
        "chunks_failed": response.chunks_failed,
        "chunks_running": response.chunks_running,
        "waiting": response.waiting,
        "eta_seconds": response.eta_seconds,
    })
}

fn print_effective(
    effective: &pb::EffectiveThrottle,
    format: OutputFormat,
    policy_json: Option<&str>,
) {
    if format == OutputFormat::Json {
        let policy: serde_json::Value = policy_json
            .and_then(|text| serde_json::from_str(text).ok())
            .unwrap_or(serde_json::Value::Null);
        let value = serde_json::json!({
            "concurrency": effective.concurrency,
            "paused": effective.paused,
            "reasons": effective.reasons,
            "load": effective.load,
            "in_flight": effective.in_flight,
            "rows_per_sec": effective.rows_per_sec,
            "bytes_per_sec": effective.bytes_per_sec,
            "policy": policy,
        });
        println!("{value}");
        return;
    }
    println!(
        "concurrency {}{}, {} in flight{}",
        effective.concurrency,
        if effective.paused { " (PAUSED)" } else { "" },
        effective.in_flight,
        effective
            .load
            .map(|load| format!(", load {load}"))
            .unwrap_or_default()
    );
    let limit = |value: u64| {
        if value == 0 {
            "unlimited".to_string()
        } else {
            value.to_string()
        }
    };
    println!(
        "rate: rows/s {}, bytes/s {}",
        limit(effective.rows_per_sec),
        limit(effective.bytes_per_sec)
    );
    // The job's weight among the cluster's jobs, from the policy in force.
    let priority = policy_json
        .and_then(|text| serde_json::from_str::<serde_json::Value>(text).ok())
        .and_then(|policy| policy.get("priority").and_then(serde_json::Value::as_u64));
    if let Some(priority) = priority {
        println!("priority {priority} (weight among the cluster's jobs)");
    }
    for reason in &effective.reasons {
        println!("  {reason}");
    }
}

/// `ferryctl throttle JOB …`.
pub async fn throttle(endpoint: &str, job: &str, args: ThrottleArgs, format: OutputFormat) -> i32 {
    match throttle_inner(endpoint, job, args, format).await {
        Ok(()) => exit_code::OK,
        Err(error) => error.report(),
    }
}

async fn throttle_inner(
    endpoint: &str,
    job: &str,
    args: ThrottleArgs,
    format: OutputFormat,
) -> Result<(), RemoteError> {
    if args.history {
        let response = request(endpoint, |mut client| {
            let job_id = job.to_string();
            async move {
                client
                    .list_throttle_history(pb::ListThrottleHistoryRequest { job_id })
                    .await
                    .map(tonic::Response::into_inner)
            }
        })
        .await?;
        if format == OutputFormat::Json {
            let changes: Vec<serde_json::Value> = response
                .changes
                .iter()
                .map(|c| serde_json::json!({"at_unix_ms": c.at_unix_ms, "origin": c.origin, "actor": c.actor, "summary": c.summary}))
                .collect();
            println!("{}", serde_json::Value::Array(changes));
        } else {
            for change in &response.changes {
                println!(
                    "{}  {:<10}  {:<16}  {}",
                    history_time(change.at_unix_ms),
                    change.origin,
                    or_dash(&change.actor),
                    change.summary
                );
            }
        }
        return Ok(());
    }
    if args.changes_something() {
        let update = pb::UpdateThrottleRequest {
            job_id: job.to_string(),
            max_concurrency: args.max_concurrency,
            clear_override: args.clear_override,
            rows_per_sec: args.rows_per_sec,
            bytes_per_sec: args.bytes_per_sec,
            load_max: args.load_max,
            load_critical: args.load_critical,
            schedule_yaml: args.schedule_yaml,
            priority: args.priority,
        };
        let response = request(endpoint, |mut client| {
            let update = update.clone();
            async move {
                client
                    .update_throttle(update)
                    .await
                    .map(tonic::Response::into_inner)
            }
        })
        .await?;
        print_effective(
            &response.effective.unwrap_or_default(),
            format,
            Some(&response.policy_json),
        );
        return Ok(());
    }
    let response = request(endpoint, |mut client| {
        let get = pb::GetThrottleRequest {
            job_id: job.to_string(),
            at_unix_ms: args.at.map(|t| t.as_millisecond()),
        };
        async move {
            client
                .get_throttle(get)
                .await
                .map(tonic::Response::into_inner)
        }
    })
    .await?;
    print_effective(
        &response.effective.unwrap_or_default(),
        format,
        Some(&response.policy_json),
    );
    Ok(())
}

/// `ferryctl pause JOB` / `ferryctl resume JOB`.
pub async fn pause_or_resume(endpoint: &str, job: &str, pause: bool, format: OutputFormat) -> i32 {
    let outcome = request(endpoint, |mut client| {
        let job_id = job.to_string();
        async move {
            if pause {
                let response = client.pause_job(pb::PauseJobRequest { job_id }).await?;
                Ok(response.into_inner().effective)
            } else {
                let response = client.resume_job(pb::ResumeJobRequest { job_id }).await?;
                Ok(response.into_inner().effective)
            }
        }
    })
    .await;
    match outcome {
        Ok(effective) => {
            print_effective(&effective.unwrap_or_default(), format, None);
            exit_code::OK
        }
        Err(error) => error.report(),
    }
}

/// `ferryctl status JOB`.
pub async fn status(endpoint: &str, job: &str, format: OutputFormat) -> i32 {
    let outcome = request(endpoint, |mut client| {
        let job_id = job.to_string();
        async move {
            client
                .get_job(pb::GetJobRequest { job_id })
                .await
                .map(tonic::Response::into_inner)
        }
    })
    .await;
    match outcome {
        Ok(response) if format == OutputFormat::Json => {
            println!("{}", job_status_json(&response));
            exit_code::OK
        }
        Ok(response) => {
            println!("{}", job_status_line(&response));
            exit_code::OK
        }
        Err(error) => error.report(),
    }
}

/// An entry's time as ferryctl prints it.
fn history_time(at_unix_ms: i64) -> String {
    jiff::Timestamp::from_millisecond(at_unix_ms)
        .map(|instant| instant.to_string())
        .unwrap_or_else(|_| at_unix_ms.to_string())
}

/// `-` for an empty field (ferry's own changes have no actor).
fn or_dash(text: &str) -> &str {
    if text.is_empty() { "-" } else { text }
}

/// `ferryctl history JOB`: the job's history, oldest first.
pub async fn history(endpoint: &str, job: &str, format: OutputFormat) -> i32 {
    let response = request(endpoint, |mut client| {
        let job_id = job.to_string();
        async move {
            client
                .list_job_history(pb::ListJobHistoryRequest { job_id })
                .await
                .map(tonic::Response::into_inner)
        }
    })
    .await;
    let response = match response {
        Ok(response) => response,
        Err(error) => return error.report(),
    };
    if format == OutputFormat::Json {
        let entries: Vec<serde_json::Value> = response
            .entries
            .iter()
            .map(|entry| {
                serde_json::json!({
                    "at_unix_ms": entry.at_unix_ms,
                    "origin": entry.origin,
                    "actor": entry.actor,
                    "action": entry.action,
                    "summary": entry.summary,
                })
            })
            .collect();
        println!("{}", serde_json::Value::Array(entries));
    } else {
        for entry in &response.entries {
            println!(
                "{}  {:<8}  {:<10}  {:<16}  {}",
                history_time(entry.at_unix_ms),
                entry.action,
                entry.origin,
                or_dash(&entry.actor),
                entry.summary
            );
        }
    }
    exit_code::OK
}
