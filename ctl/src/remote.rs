//! Commands that talk to a running ferry over the Control API: the `ferryctl local`
//! process (it prints its endpoint) or, with distributed mode, the coordinator.

use ferry_common::proto::v1 as pb;
use ferry_common::proto::v1::control_client::ControlClient;
use tonic::transport::Channel;

use crate::exit_code;

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

/// Why a remote command failed: the ferry could not be reached (exit 3), or it refused
/// the request (exit 2).
#[derive(Debug)]
enum RemoteError {
    Unreachable(String),
    Refused(String),
}

impl RemoteError {
    fn report(self) -> i32 {
        match self {
            RemoteError::Unreachable(message) => {
                eprintln!("error: {message}");
                exit_code::RUNTIME_ERROR
            }
            RemoteError::Refused(message) => {
                eprintln!("error: {message}");
                exit_code::INVALID_INPUT
            }
        }
    }
}

impl From<String> for RemoteError {
    fn from(message: String) -> Self {
        RemoteError::Refused(message)
    }
}

async fn connect(endpoint: &str) -> Result<ControlClient<Channel>, RemoteError> {
    let uri = if endpoint.contains("://") {
        endpoint.to_string()
    } else {
        format!("http://{endpoint}")
    };
    let channel = Channel::from_shared(uri.clone())
        .map_err(|error| RemoteError::Refused(format!("invalid --endpoint {endpoint:?}: {error}")))?
        .connect_timeout(std::time::Duration::from_secs(5))
        .timeout(std::time::Duration::from_secs(30))
        .connect()
        .await
        .map_err(|error| {
            RemoteError::Unreachable(format!(
                "cannot reach ferry at {uri}: {error}; is `ferryctl local` (or the coordinator) running there?"
            ))
        })?;
    Ok(ControlClient::new(channel))
}

fn status_error(status: tonic::Status) -> String {
    match status.code() {
        tonic::Code::InvalidArgument | tonic::Code::NotFound => status.message().to_string(),
        _ => format!("{}: {}", status.code(), status.message()),
    }
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
    let mut client = connect(endpoint).await?;
    if args.history {
        let response = client
            .list_throttle_history(pb::ListThrottleHistoryRequest {
                job_id: job.to_string(),
            })
            .await
            .map_err(status_error)?
            .into_inner();
        if format == OutputFormat::Json {
            let changes: Vec<serde_json::Value> = response
                .changes
                .iter()
                .map(|c| serde_json::json!({"at_unix_ms": c.at_unix_ms, "origin": c.origin, "summary": c.summary}))
                .collect();
            println!("{}", serde_json::Value::Array(changes));
        } else {
            for change in &response.changes {
                let at = jiff::Timestamp::from_millisecond(change.at_unix_ms)
                    .map(|t| t.to_string())
                    .unwrap_or_else(|_| change.at_unix_ms.to_string());
                println!("{at}  {:<10}  {}", change.origin, change.summary);
            }
        }
        return Ok(());
    }
    if args.changes_something() {
        let response = client
            .update_throttle(pb::UpdateThrottleRequest {
                job_id: job.to_string(),
                max_concurrency: args.max_concurrency,
                clear_override: args.clear_override,
                rows_per_sec: args.rows_per_sec,
                bytes_per_sec: args.bytes_per_sec,
                load_max: args.load_max,
                load_critical: args.load_critical,
                schedule_yaml: args.schedule_yaml,
            })
            .await
            .map_err(status_error)?
            .into_inner();
        print_effective(
            &response.effective.unwrap_or_default(),
            format,
            Some(&response.policy_json),
        );
        return Ok(());
    }
    let response = client
        .get_throttle(pb::GetThrottleRequest {
            job_id: job.to_string(),
            at_unix_ms: args.at.map(|t| t.as_millisecond()),
        })
        .await
        .map_err(status_error)?
        .into_inner();
    print_effective(
        &response.effective.unwrap_or_default(),
        format,
        Some(&response.policy_json),
    );
    Ok(())
}

/// `ferryctl pause JOB` / `ferryctl resume JOB`.
pub async fn pause_or_resume(endpoint: &str, job: &str, pause: bool, format: OutputFormat) -> i32 {
    let outcome = async {
        let mut client = connect(endpoint).await?;
        let effective = if pause {
            client
                .pause_job(pb::PauseJobRequest {
                    job_id: job.to_string(),
                })
                .await
                .map_err(status_error)?
                .into_inner()
                .effective
        } else {
            client
                .resume_job(pb::ResumeJobRequest {
                    job_id: job.to_string(),
                })
                .await
                .map_err(status_error)?
                .into_inner()
                .effective
        };
        print_effective(&effective.unwrap_or_default(), format, None);
        Ok::<(), RemoteError>(())
    }
    .await;
    match outcome {
        Ok(()) => exit_code::OK,
        Err(error) => error.report(),
    }
}

/// `ferryctl status JOB`.
pub async fn status(endpoint: &str, job: &str, format: OutputFormat) -> i32 {
    let outcome = async {
        let mut client = connect(endpoint).await?;
        let response = client.get_job(pb::GetJobRequest { job_id: job.to_string() }).await.map_err(status_error)?.into_inner();
        let state = pb::JobState::try_from(response.state).unwrap_or(pb::JobState::Unspecified);
        let state_name = state.as_str_name().trim_start_matches("JOB_STATE_");
        if format == OutputFormat::Json {
            println!(
                "{}",
                serde_json::json!({
                    "job": response.job_id, "state": state_name, "rows_verified": response.rows_verified,
                    "rows_streamed": response.rows_streamed, "chunks_total": response.chunks_total,
                    "chunks_verified": response.chunks_verified, "chunks_failed": response.chunks_failed,
                    "chunks_running": response.chunks_running,
                })
            );
        } else {
            println!(
                "job {}: {state_name}, {} rows verified ({} streamed this run), chunks {}/{} verified, {} failed, {} running",
                response.job_id, response.rows_verified, response.rows_streamed, response.chunks_verified,
                response.chunks_total, response.chunks_failed, response.chunks_running
            );
        }
        Ok::<(), RemoteError>(())
    }
    .await;
    match outcome {
        Ok(()) => exit_code::OK,
        Err(error) => error.report(),
    }
}
