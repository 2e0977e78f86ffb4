//! `ferryctl`: see `ferryctl --help`.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use ferry_coordination::Coordination;
use ferry_coordinator::security::ControlSecurity;
use ferry_ctl::client_security::{ClientSecurity, ClientSecurityArgs};
use ferry_ctl::cluster::{self, ChunkStateArg, RecopyTarget};
use ferry_ctl::demo::create_demo;
use ferry_ctl::exit_code;
use ferry_ctl::local::{LocalJob, LocalRunOptions, default_state_path, load_spec};
use ferry_ctl::progress::{ProgressMode, show};
use ferry_ctl::remote::{
    OutputFormat, ThrottleArgs, history, parse_instant, pause_or_resume, status,
};
use ferry_ctl::report::JobReport;
use tokio_util::sync::CancellationToken;

/// ferry: table-data migration in verified chunks.
#[derive(Parser)]
#[command(name = "ferryctl", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Log format on stderr: text, or json (one object per line) for collectors.
    #[arg(
        long,
        global = true,
        value_enum,
        env = "FERRY_LOG_FORMAT",
        default_value = "text"
    )]
    log_format: ferry_server::process::LogFormat,
}

#[derive(Subcommand)]
enum Command {
    /// Run a job spec in this process: plan, copy in chunks with a pool of workers,
    /// verify every chunk. Interrupt with Ctrl-C; the same command resumes.
    Local(LocalArgs),
    /// Compare a copied job's source and target without writing anything: the spec's
    /// job planned again as a verify-only job `<name>-verify`, each chunk counted and
    /// checksummed on both sides by the same runtime and workers as `local`; differing
    /// chunks are bisected to ranges and compared row by row. Exit 0: both sides agree;
    /// 4: differences found (listed, and in --output).
    Verify(VerifyArgs),
    /// Catch the target up with a live source after a copy: each pass copies the rows
    /// whose watermark (spec `watermark:`) moved, newer-wins, and deletes rows deleted at
    /// the source (keyed diff); tables without the watermark column are checksummed and
    /// repaired. With --until-quiet D, passes repeat until they found nothing for D and a
    /// full verify agrees: exit 0 "ready to cut over".
    Sync(SyncArgs),
    /// Print a job's evidence record from its state file: every chunk with its table,
    /// partition, range, rows and checksum on each side, attempts, worker, start, end
    /// and verification time.
    Report(ReportArgs),
    /// Make a sample SQLite database and a spec for it, then run it like `local`.
    Demo(DemoArgs),
    /// Validate a job spec and print every problem found.
    Validate {
        /// The job spec (YAML).
        spec: PathBuf,
    },
    /// Show or change a running job's throttle: concurrency cap, rate limits, load
    /// thresholds, schedule. Changes are validated, stored and applied within 2 s.
    Throttle(ThrottleCommand),
    /// Pause a running job: no chunk starts, running chunks stop reading.
    Pause(JobArgs),
    /// Resume a paused job.
    Resume(JobArgs),
    /// Show a running job's progress.
    Status(JobArgs),
    /// Submit a job spec to a ferry coordinator (or plan it only, with --dry-run).
    Submit(SubmitArgs),
    /// List the jobs a ferry coordinator knows.
    Jobs(ListArgs),
    /// Follow a job on a ferry coordinator until it ends: exit 0 when DONE, 1 when
    /// FAILED or CANCELLED. Reconnects for up to 60 s when the coordinator fails over.
    Watch(JobArgs),
    /// List a job's chunks, with their state, attempts, worker and last error.
    Chunks(ChunksArgs),
    /// Cancel a job: no chunk starts any more, running attempts roll back.
    Cancel(JobArgs),
    /// Copy chunks of a job again with overwrite: by id, by table or by state.
    Recopy(RecopyArgs),
    /// List the live workers of a ferry cluster.
    Workers(ListArgs),
    /// Drain a worker: it takes no new chunk, finishes or releases its chunks, then exits.
    Drain(DrainArgs),
    /// A job's history: every throttle change, pause, resume, submit, cancel, re-copy and
    /// drain, with when, who (token:NAME, cert:SUBJECT or anonymous) and what.
    History(JobArgs),
}

impl Command {
    /// The Control API flags of a remote command.
    fn remote(&self) -> Option<&RemoteArgs> {
        match self {
            Command::Local(_)
            | Command::Verify(_)
            | Command::Sync(_)
            | Command::Report(_)
            | Command::Demo(_)
            | Command::Validate { .. } => None,
            Command::Throttle(command) => Some(&command.remote),
            Command::Pause(args)
            | Command::Resume(args)
            | Command::Status(args)
            | Command::Watch(args)
            | Command::Cancel(args)
            | Command::History(args) => Some(&args.remote),
            Command::Submit(args) => Some(&args.remote),
            Command::Jobs(args) | Command::Workers(args) => Some(&args.remote),
            Command::Chunks(args) => Some(&args.remote),
            Command::Recopy(args) => Some(&args.remote),
            Command::Drain(args) => Some(&args.remote),
        }
    }
}

#[derive(clap::Args)]
struct RemoteArgs {
    /// The Control API of a running ferry (`ferryctl local` prints it at start), or a
    /// comma-separated list of coordinators, tried in turn until one answers (a standby
    /// passes writes on to the next).
    #[arg(long, env = "FERRY_ENDPOINT", default_value = "http://127.0.0.1:7878")]
    endpoint: String,
    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, default_value = "table")]
    output: OutputFormat,
    #[command(flatten)]
    client: ClientArgs,
}

/// How a remote command reaches the Control API: TLS and the bearer token.
#[derive(clap::Args)]
struct ClientArgs {
    /// The CA (PEM) that signed the server's certificate: connect over TLS.
    #[arg(long, env = "FERRY_CA", value_name = "PATH")]
    ca: Option<PathBuf>,
    /// This client's certificate (PEM), for a server that requires mutual TLS.
    #[arg(long, env = "FERRY_CERT", value_name = "PATH", requires = "key")]
    cert: Option<PathBuf>,
    /// This client's private key (PEM).
    #[arg(long, env = "FERRY_KEY", value_name = "PATH", requires = "cert")]
    key: Option<PathBuf>,
    /// The name the server's certificate must carry, when not the endpoint's host.
    #[arg(long, env = "FERRY_TLS_SERVER_NAME", value_name = "NAME")]
    tls_server_name: Option<String>,
    /// A file holding the bearer token (the token alone, e.g. a mounted Secret).
    #[arg(long, env = "FERRY_TOKEN_FILE", value_name = "PATH")]
    token_file: Option<PathBuf>,
}

impl RemoteArgs {
    fn security(&self) -> ClientSecurityArgs {
        self.client.security()
    }
}

impl ClientArgs {
    fn security(&self) -> ClientSecurityArgs {
        ClientSecurityArgs {
            ca: self.ca.clone(),
            cert: self.cert.clone(),
            key: self.key.clone(),
            server_name: self.tls_server_name.clone(),
            token_file: self.token_file.clone(),
        }
    }
}

#[derive(clap::Args)]
struct JobArgs {
    /// The job's name (the spec's `name`).
    job: String,
    #[command(flatten)]
    remote: RemoteArgs,
}

#[derive(clap::Args)]
struct ListArgs {
    #[command(flatten)]
    remote: RemoteArgs,
}

#[derive(clap::Args)]
struct SubmitArgs {
    /// The job spec (YAML). It is sent as text: `url_env` names variables of the
    /// coordinator's and the workers' environment, and paths must make sense there.
    spec: PathBuf,
    /// Plan only: print the tables, chunks, estimated rows and warnings; store nothing.
    #[arg(long, conflicts_with = "wait")]
    dry_run: bool,
    /// Submit the spec as a verify-only job `<name>-verify-<time>`: every chunk counted
    /// and checksummed on both sides, nothing written to the target. `--wait` exits 4
    /// when source and target differ.
    #[arg(long)]
    verify_only: bool,
    /// After submitting, follow the job like `ferryctl watch` (and exit as it does).
    #[arg(long)]
    wait: bool,
    #[command(flatten)]
    remote: RemoteArgs,
}

#[derive(clap::Args)]
struct ChunksArgs {
    /// The job's name (the spec's `name`).
    job: String,
    /// Only chunks in this state.
    #[arg(long, value_enum, ignore_case = true)]
    state: Option<ChunkStateArg>,
    /// Only chunks of this source table (e.g. public.orders).
    #[arg(long)]
    table: Option<String>,
    #[command(flatten)]
    remote: RemoteArgs,
}

#[derive(clap::Args)]
#[command(group(clap::ArgGroup::new("selector").required(true).args(["chunk", "table", "state"])))]
struct RecopyArgs {
    /// The job's name (the spec's `name`).
    job: String,
    /// This chunk (repeat for several); ids as `ferryctl chunks` lists them.
    #[arg(long, allow_negative_numbers = true, value_name = "ID")]
    chunk: Vec<u32>,
    /// Every chunk of this source table.
    #[arg(long)]
    table: Option<String>,
    /// Every chunk in this state (usually failed).
    #[arg(long, value_enum, ignore_case = true)]
    state: Option<ChunkStateArg>,
    #[command(flatten)]
    remote: RemoteArgs,
}

#[derive(clap::Args)]
struct DrainArgs {
    /// The worker's id, as `ferryctl workers` lists it.
    worker: String,
    #[command(flatten)]
    remote: RemoteArgs,
}

#[derive(clap::Args)]
#[command(group(clap::ArgGroup::new("concurrency").args(["max_concurrency", "clear_override"])))]
struct ThrottleCommand {
    /// The job's name (the spec's `name`).
    job: String,
    #[command(flatten)]
    remote: RemoteArgs,
    /// Cap chunks in flight (an operator override, on top of schedule and load).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=1024))]
    max_concurrency: Option<u32>,
    /// Remove the operator's concurrency cap.
    #[arg(long)]
    clear_override: bool,
    /// Job-wide rows per second (0 removes the limit).
    #[arg(long, allow_negative_numbers = true)]
    rows_per_sec: Option<u64>,
    /// Job-wide bytes per second (0 removes the limit).
    #[arg(long, allow_negative_numbers = true)]
    bytes_per_sec: Option<u64>,
    /// Load above which concurrency halves.
    #[arg(long, requires = "load_critical")]
    load_max: Option<f64>,
    /// Load above which the job pauses.
    #[arg(long, requires = "load_max")]
    load_critical: Option<f64>,
    /// Replace the schedule with the windows in this YAML file (a list, as in the spec's
    /// throttle.schedule).
    #[arg(long)]
    schedule: Option<PathBuf>,
    /// The job's weight when it shares the cluster's worker slots with other jobs (as the
    /// spec's `priority`): each running job's share of busy slots tends to its weight over
    /// the sum of the running jobs' weights.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=1000))]
    priority: Option<u32>,
    /// Show the effective policy and why (the default when nothing is changed).
    #[arg(long, conflicts_with_all = ["max_concurrency", "clear_override", "rows_per_sec", "bytes_per_sec", "load_max", "schedule", "priority", "history"])]
    show: bool,
    /// With --show: what the schedule gives at this instant (RFC 3339, or
    /// 2026-11-21T23:00[Asia/Shanghai]).
    #[arg(long, requires = "show", value_parser = parse_instant)]
    at: Option<jiff::Timestamp>,
    /// Every change of the policy, with time, origin and old → new.
    #[arg(long, conflicts_with_all = ["max_concurrency", "clear_override", "rows_per_sec", "bytes_per_sec", "load_max", "schedule", "priority"])]
    history: bool,
}

#[derive(clap::Args)]
struct LocalArgs {
    /// The job spec (YAML).
    spec: PathBuf,
    /// Workers in the pool (chunks in flight are also capped by throttle.default_concurrency).
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=1024))]
    workers: u16,
    /// State file recording the plan and every chunk's state [default: <spec folder>/<job name>.ferry-state.db].
    #[arg(long)]
    state: Option<PathBuf>,
    /// Print the final report as one JSON object on stdout.
    #[arg(long)]
    json: bool,
    /// Where to serve the Control API (`ferryctl throttle`, `pause`, `resume`, `status`);
    /// port 0 picks a free one. The address is printed at start.
    #[arg(long, default_value = DEFAULT_CONTROL_ADDR, value_parser = parse_listen_address)]
    control_addr: String,
    /// The Control API's TLS certificate (PEM): serve TLS.
    #[arg(long, value_name = "PATH", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The Control API's TLS private key (PEM).
    #[arg(long, value_name = "PATH", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Require client certificates signed by this CA (PEM): mutual TLS.
    #[arg(long, value_name = "PATH", requires = "tls_cert")]
    client_ca: Option<PathBuf>,
    /// Bearer tokens, one `NAME ROLE TOKEN` line each (ROLE viewer or operator).
    #[arg(long, value_name = "PATH")]
    tokens_file: Option<PathBuf>,
    /// Serve the Control API without authentication on a non-loopback --control-addr.
    #[arg(long)]
    insecure: bool,
    /// Serve Prometheus metrics at http://HOST:PORT/metrics (port 0: any free port; the
    /// address is printed at start).
    #[arg(long, value_name = "HOST:PORT")]
    metrics_addr: Option<String>,
    /// Serve the web console at http://HOST:PORT (port 0: any free port; the address is
    /// printed at start). Same tokens and roles as the Control API (--tokens-file).
    #[arg(long, value_name = "HOST:PORT", value_parser = parse_listen_address)]
    console_addr: Option<String>,
    /// Keep the console open after the job ends, until Ctrl-C.
    #[arg(long, requires = "console_addr")]
    console_stay: bool,
    /// At most N chunks in flight on the database HOST:PORT/DB, summed over the jobs this
    /// process runs (repeatable; as the coordinator's `[[endpoints]]`). Without it, jobs
    /// sharing a database share the smallest concurrency among them.
    #[arg(long, value_name = "HOST:PORT/DB=N", value_parser = parse_endpoint_cap)]
    endpoint_cap: Vec<(String, u32)>,
    /// MiB of rows the readers of every slot may hold in flight together; a reader waits
    /// while its next batch would pass it (a batch bigger than all of it travels alone).
    #[arg(long, value_name = "MIB", default_value_t = ferry_model::memory::DEFAULT_BUDGET_BYTES >> 20,
          value_parser = clap::value_parser!(u64).range(16..))]
    memory_budget_mb: u64,
}

impl LocalArgs {
    fn security(&self) -> ControlSecurity {
        ControlSecurity {
            tls_cert: self.tls_cert.clone(),
            tls_key: self.tls_key.clone(),
            client_ca: self.client_ca.clone(),
            client_cert_role: None,
            tokens_file: self.tokens_file.clone(),
            insecure: self.insecure,
        }
    }
}

#[derive(clap::Args)]
struct VerifyArgs {
    #[command(flatten)]
    local: LocalArgs,
    /// Bisect a differing chunk down to ranges of at most this many rows, then compare
    /// them row by row.
    #[arg(long, default_value_t = ferry_ctl::verify::DEFAULT_LEAF_ROWS, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    leaf_rows: u64,
    /// Write one JSON line per differing key to this file.
    #[arg(long, value_name = "PATH")]
    output: Option<PathBuf>,
    /// Show column values in the diff and --output (they may be personal data).
    #[arg(long)]
    show_values: bool,
    /// Re-copy only the differing ranges (overwrite in one transaction each, then
    /// verified); target rows outside them are not touched.
    #[arg(long)]
    repair: bool,
    /// With --repair: list the ranges that would be re-copied, change nothing.
    #[arg(long, requires = "repair")]
    dry_run: bool,
    /// Check a differing chunk again after this long before reporting or repairing it
    /// (a live source settles), e.g. 30s, 2m, 0s.
    #[arg(long, default_value = "30s", value_parser = parse_recheck_after)]
    recheck_after: std::time::Duration,
}

#[derive(clap::Args)]
struct SyncArgs {
    /// The job spec (YAML) of the copy to keep in sync.
    spec: PathBuf,
    /// Repeat passes until they have found nothing to change for this long, then run a
    /// full verify; exit 0 with "ready to cut over" when it agrees (e.g. 10m). Without
    /// it, one pass.
    #[arg(long, value_parser = parse_recheck_after)]
    until_quiet: Option<std::time::Duration>,
    /// Pause between passes.
    #[arg(long, default_value = "5s", value_parser = parse_recheck_after)]
    pass_interval: std::time::Duration,
    /// Sync state file (high-water marks, pass history) [default: <spec folder>/<job name>.ferry-sync.json].
    #[arg(long)]
    state: Option<PathBuf>,
    /// Run each pass (and the final verify) as a job of the cluster whose Control API is
    /// here (a coordinator, or a comma-separated list), instead of in this process; this
    /// process still reads the source's high-water marks, so it needs the spec's
    /// database variables too.
    #[arg(long, value_name = "ADDR")]
    endpoint: Option<String>,
    #[command(flatten)]
    client: ClientArgs,
    /// Worker agents of a pass run in this process (without --endpoint).
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=1024))]
    workers: u16,
    /// One JSON object per pass on stdout (and a final verdict object).
    #[arg(long)]
    json: bool,
    /// Sync the other way, new → old (the spec's target into its source), after the
    /// switch: the old database stays a fallback. A job of its own, `<name>-reverse`,
    /// with its own state file [default: <spec folder>/<name>-reverse.ferry-sync.json].
    #[arg(long)]
    reverse: bool,
}

#[derive(clap::Args)]
struct ReportArgs {
    /// The job's name (the spec's `name`; `<name>-verify` for `ferryctl verify`).
    job: String,
    /// The job's state file (`ferryctl local` or `ferryctl verify` printed it).
    #[arg(long)]
    state: PathBuf,
    /// json (one object per chunk, one per line) or csv.
    #[arg(long, value_enum, default_value = "json")]
    format: ferry_ctl::evidence::EvidenceFormat,
}

fn parse_recheck_after(text: &str) -> Result<std::time::Duration, String> {
    ferry_model::duration::parse_duration(text)
        .map_err(|error| format!("{text:?} is not a duration ({error}); give e.g. 30s, 2m or 0s"))
}

#[derive(clap::Args)]
struct DemoArgs {
    /// Rows in the largest sample table.
    #[arg(long, default_value_t = 1_000_000, value_parser = clap::value_parser!(u64).range(1..))]
    rows: u64,
    /// Folder for the sample source, the target, the spec and the state file.
    #[arg(long, default_value = "demo")]
    dir: PathBuf,
    /// Workers in the pool.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=1024))]
    workers: u16,
    /// Only make the sample database and the spec (e.g. to `ferryctl submit` it to a cluster).
    #[arg(long)]
    prepare_only: bool,
}

/// Checks `--control-addr` before anything runs: `HOST:PORT` (a name or an IP, IPv6 in
/// brackets), port 0 to 65535.
fn parse_listen_address(text: &str) -> Result<String, String> {
    let well_formed = text.rsplit_once(':').is_some_and(|(host, port)| {
        !host.is_empty() && !host.contains(char::is_whitespace) && port.parse::<u16>().is_ok()
    });
    if well_formed {
        Ok(text.to_owned())
    } else {
        Err(format!(
            "{text:?} is not HOST:PORT; give e.g. {DEFAULT_CONTROL_ADDR} (port 0 picks a free one)"
        ))
    }
}

/// Parses `--endpoint-cap HOST:PORT/DB=N` into the database's identity and its cap.
fn parse_endpoint_cap(text: &str) -> Result<(String, u32), String> {
    let (database, cap_text) = text.rsplit_once('=').ok_or_else(|| {
        format!("{text:?} is not HOST:PORT/DB=N; give e.g. db.example.com:5432/orders=8")
    })?;
    let identity = ferry_model::spec::normalize_database_identity(database).ok_or_else(|| {
        format!("{database:?} is not HOST:PORT/DB (the port written out) nor file:/path")
    })?;
    match cap_text.parse::<u32>() {
        Ok(cap) if (1..=1024).contains(&cap) => Ok((identity, cap)),
        _ => Err(format!(
            "{cap_text:?}: the cap must be a number from 1 to 1024"
        )),
    }
}

/// Where `ferryctl local` serves its Control API unless told otherwise.
const DEFAULT_CONTROL_ADDR: &str = "127.0.0.1:7878";

fn main() -> ExitCode {
    ferry_server::process::exec_with_memory_settings();
    let cli = Cli::parse();
    ferry_server::process::init_logging("warn", cli.log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return ExitCode::from(exit_code::RUNTIME_ERROR as u8);
        }
    };
    if let Some(remote) = cli.command.remote() {
        match ClientSecurity::load(&remote.security()) {
            Ok(security) => security.install(),
            Err(message) => {
                eprintln!("error: {message}");
                return ExitCode::from(exit_code::INVALID_INPUT as u8);
            }
        }
    }
    let code = runtime.block_on(async {
        match cli.command {
            Command::Local(args) => {
                let security = args.security();
                if let Some(addr) = &args.metrics_addr {
                    match ferry_server::metrics_http::serve_metrics(addr, CancellationToken::new())
                        .await
                    {
                        Ok(bound) => eprintln!("metrics on http://{bound}/metrics"),
                        Err(error) => {
                            eprintln!("error: {error}");
                            return exit_code::INVALID_INPUT;
                        }
                    }
                }
                let console = ConsoleArgs {
                    addr: args.console_addr,
                    stay: args.console_stay,
                };
                ferry_model::memory::configure(args.memory_budget_mb << 20);
                let database_caps = args.endpoint_cap.into_iter().collect();
                local(
                    args.spec,
                    args.workers.into(),
                    args.state,
                    args.json,
                    &args.control_addr,
                    security,
                    LocalExtras {
                        verify: None,
                        console,
                        database_caps,
                    },
                )
                .await
            }
            Command::Verify(args) => {
                let security = args.local.security();
                let options = ferry_ctl::verify::VerifyOptions {
                    leaf_rows: args.leaf_rows,
                    show_values: args.show_values,
                    output: args.output,
                    repair: args.repair,
                    dry_run: args.dry_run,
                    recheck_after: args.recheck_after,
                };
                ferry_model::memory::configure(args.local.memory_budget_mb << 20);
                local(
                    args.local.spec,
                    args.local.workers.into(),
                    args.local.state,
                    args.local.json,
                    &args.local.control_addr,
                    security,
                    LocalExtras {
                        verify: Some(options),
                        console: ConsoleArgs {
                            addr: args.local.console_addr,
                            stay: args.local.console_stay,
                        },
                        database_caps: args.local.endpoint_cap.into_iter().collect(),
                    },
                )
                .await
            }
            Command::Sync(args) => sync(args).await,
            Command::Report(args) => {
                ferry_ctl::evidence::print_report(&args.state, &args.job, args.format).await
            }
            Command::Demo(args) => demo(args).await,
            Command::Validate { spec } => validate(spec),
            Command::Throttle(command) => throttle(command).await,
            Command::Pause(args) => {
                pause_or_resume(&args.remote.endpoint, &args.job, true, args.remote.output).await
            }
            Command::Resume(args) => {
                pause_or_resume(&args.remote.endpoint, &args.job, false, args.remote.output).await
            }
            Command::Status(args) => {
                status(&args.remote.endpoint, &args.job, args.remote.output).await
            }
            Command::Submit(args) => {
                cluster::submit(
                    &args.remote.endpoint,
                    &args.spec,
                    cluster::SubmitOptions {
                        dry_run: args.dry_run,
                        wait: args.wait,
                        verify_only: args.verify_only,
                    },
                    args.remote.output,
                )
                .await
            }
            Command::Jobs(args) => cluster::jobs(&args.remote.endpoint, args.remote.output).await,
            Command::Watch(args) => {
                cluster::watch(&args.remote.endpoint, &args.job, args.remote.output).await
            }
            Command::Chunks(args) => {
                cluster::chunks(
                    &args.remote.endpoint,
                    &args.job,
                    args.state,
                    args.table.as_deref(),
                    args.remote.output,
                )
                .await
            }
            Command::Cancel(args) => {
                cluster::cancel(&args.remote.endpoint, &args.job, args.remote.output).await
            }
            Command::Recopy(args) => recopy(args).await,
            Command::Workers(args) => {
                cluster::workers(&args.remote.endpoint, args.remote.output).await
            }
            Command::Drain(args) => {
                cluster::drain(&args.remote.endpoint, &args.worker, args.remote.output).await
            }
            Command::History(args) => {
                history(&args.remote.endpoint, &args.job, args.remote.output).await
            }
        }
    });
    ExitCode::from(u8::try_from(code).unwrap_or(1))
}

async fn recopy(args: RecopyArgs) -> i32 {
    // The "selector" ArgGroup lets exactly one of the three through.
    let target = if let Some(table) = args.table {
        RecopyTarget::Table(table)
    } else if let Some(state) = args.state {
        RecopyTarget::State(state)
    } else {
        RecopyTarget::Chunks(args.chunk)
    };
    cluster::recopy(&args.remote.endpoint, &args.job, target, args.remote.output).await
}

async fn throttle(command: ThrottleCommand) -> i32 {
    let schedule_yaml = match &command.schedule {
        Some(path) => match std::fs::read_to_string(path) {
            Ok(text) => Some(text),
            Err(error) => {
                eprintln!("error: cannot read --schedule {}: {error}", path.display());
                return exit_code::INVALID_INPUT;
            }
        },
        None => None,
    };
    let args = ThrottleArgs {
        max_concurrency: command.max_concurrency,
        clear_override: command.clear_override,
        rows_per_sec: command.rows_per_sec,
        bytes_per_sec: command.bytes_per_sec,
        load_max: command.load_max,
        load_critical: command.load_critical,
        schedule_yaml,
        priority: command.priority,
        show: command.show,
        at: command.at,
        history: command.history,
    };
    ferry_ctl::remote::throttle(
        &command.remote.endpoint,
        &command.job,
        args,
        command.remote.output,
    )
    .await
}

fn environment() -> HashMap<String, String> {
    std::env::vars().collect()
}

fn validate(spec_path: PathBuf) -> i32 {
    match load_spec(&spec_path, &environment()) {
        Ok(spec) => {
            println!("{}: valid spec for job {}", spec_path.display(), spec.name);
            exit_code::OK
        }
        Err(error) => {
            eprintln!("error: {error}");
            error.exit_code()
        }
    }
}

async fn demo(args: DemoArgs) -> i32 {
    let files = match create_demo(&args.dir, args.rows) {
        Ok(files) => files,
        Err(error) => {
            eprintln!("error: {error:#}");
            return exit_code::INVALID_INPUT;
        }
    };
    if args.prepare_only {
        println!("sample source and spec ready: {}", files.spec.display());
        return exit_code::OK;
    }
    let code = local(
        files.spec.clone(),
        args.workers.into(),
        None,
        false,
        "127.0.0.1:0",
        ControlSecurity::default(),
        LocalExtras {
            verify: None,
            // The console while the demo runs (it closes with the run).
            console: ConsoleArgs {
                addr: Some("127.0.0.1:0".to_owned()),
                stay: false,
            },
            database_caps: HashMap::new(),
        },
    )
    .await;
    println!(
        "\ndemo files in {}:\n  source  {}\n  target  {}\n  spec    {}\nrun it again (resumes, nothing to copy): ferryctl local {}\n\
         compare independently: sqlite3 {} \"ATTACH '{}' AS t; SELECT count(*) FROM (SELECT * FROM orders EXCEPT SELECT * FROM t.orders);\"",
        args.dir.display(),
        files.source.display(),
        files.target.display(),
        files.spec.display(),
        files.spec.display(),
        files.source.display(),
        files.target.display(),
    );
    code
}

async fn sync(args: SyncArgs) -> i32 {
    let spec = match load_spec(&args.spec, &environment()) {
        Ok(spec) if args.reverse => ferry_ctl::sync_reverse::reverse_spec(spec),
        Ok(spec) => spec,
        Err(error) => {
            eprintln!("error: {error}");
            return error.exit_code();
        }
    };
    let spec_yaml = match ferry_ctl::local::read_spec_text(&args.spec) {
        Ok(text) => text,
        Err(error) => {
            eprintln!("error: {error}");
            return error.exit_code();
        }
    };
    let spec_yaml = if args.reverse {
        match ferry_ctl::sync_reverse::reverse_spec_yaml(&spec_yaml) {
            Ok(text) => text,
            Err(error) => {
                eprintln!("error: {error}");
                return exit_code::INVALID_INPUT;
            }
        }
    } else {
        spec_yaml
    };
    let (tables, source) = match ferry_ctl::sync::open(&spec).await {
        Ok(opened) => opened,
        Err(error) => {
            eprintln!("error: {error}");
            return exit_code::RUNTIME_ERROR;
        }
    };
    let old_side = if args.reverse {
        match ferry_connectors::registry::open_sink(&spec.target).await {
            Ok(sink) => Some(sink),
            Err(error) => {
                eprintln!(
                    "error: ferryctl sync --reverse: the old database (the spec's source): {error}"
                );
                return exit_code::RUNTIME_ERROR;
            }
        }
    } else {
        None
    };
    if let Some(old_side) = &old_side
        && let Err(error) = ferry_ctl::sync_reverse::require_old_side_tables(
            &spec,
            &tables,
            source.kind(),
            old_side.as_ref(),
        )
        .await
    {
        eprintln!("error: {error}");
        return if error.unavailable {
            exit_code::RUNTIME_ERROR
        } else {
            exit_code::INVALID_INPUT
        };
    }
    let state_path = args
        .state
        .unwrap_or_else(|| ferry_ctl::sync::default_state_path(&args.spec, &spec));
    let cancel = CancellationToken::new();
    if args.endpoint.is_some() {
        match ClientSecurity::load(&args.client.security()) {
            Ok(security) => security.install(),
            Err(message) => {
                eprintln!("error: {message}");
                return exit_code::INVALID_INPUT;
            }
        }
    }
    let jobs: Box<dyn ferry_ctl::sync_jobs::SyncJobs> = match args.endpoint {
        Some(endpoints) => Box::new(ferry_ctl::sync_jobs::ClusterJobs {
            endpoints,
            poll_interval: std::time::Duration::from_millis(250),
            cancel: cancel.clone(),
        }),
        None => Box::new(ferry_ctl::sync_jobs::LocalJobs {
            workers: args.workers.into(),
            state_path: state_path.clone(),
            cancel: cancel.clone(),
        }),
    };
    let run = ferry_ctl::sync::SyncRun {
        spec: &spec,
        spec_yaml,
        tables,
        source,
        jobs,
        state_path,
    };
    let options = ferry_ctl::sync::SyncOptions {
        until_quiet: args.until_quiet,
        pass_interval: args.pass_interval,
        json: args.json,
    };
    let signal_cancel = cancel.clone();
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            signal_cancel.cancel();
        }
    });
    run.run(&options, cancel).await
}

/// `ferryctl local`'s web console flags.
struct ConsoleArgs {
    addr: Option<String>,
    stay: bool,
}

/// What a local run does besides copying: verify only (then localise and repair), and
/// serve the console.
struct LocalExtras {
    verify: Option<ferry_ctl::verify::VerifyOptions>,
    console: ConsoleArgs,
    /// `--endpoint-cap`: chunks in flight at most per database identity.
    database_caps: HashMap<String, u32>,
}

async fn local(
    spec_path: PathBuf,
    workers: usize,
    state: Option<PathBuf>,
    json: bool,
    control_addr: &str,
    security: ControlSecurity,
    extras: LocalExtras,
) -> i32 {
    let LocalExtras {
        verify,
        console,
        database_caps,
    } = extras;
    let spec = match load_spec(&spec_path, &environment()) {
        Ok(spec) if verify.is_some() => ferry_ctl::verify::verify_spec(spec),
        Ok(spec) => spec,
        Err(error) => {
            eprintln!("error: {error}");
            return error.exit_code();
        }
    };
    let state_path = state.unwrap_or_else(|| default_state_path(&spec_path, &spec));
    if verify.is_some() {
        match ferry_ctl::verify::start_over_if_finished(&state_path, &spec.name) {
            Ok(true) => eprintln!(
                "verifying again from the start (the last verify in {} had ended)",
                state_path.display()
            ),
            Ok(false) => {}
            Err(message) => {
                eprintln!("error: {message}");
                return exit_code::RUNTIME_ERROR;
            }
        }
    }
    let mut job = match LocalJob::open(spec, &state_path).await {
        Ok(job) => job,
        Err(error) => {
            eprintln!("error: {error}");
            return error.exit_code();
        }
    };
    if let Ok(text) = std::fs::read_to_string(&spec_path)
        && verify.is_none()
    {
        job.spec_text = text;
    }
    let prepared = match job.prepare().await {
        Ok(prepared) => prepared,
        Err(error) => {
            eprintln!("error: {error}");
            return error.exit_code();
        }
    };
    if prepared.resumed {
        eprintln!(
            "resuming job {} from {}: {} chunks already verified",
            prepared.job.id,
            state_path.display(),
            prepared.chunks_verified_before
        );
    } else {
        eprintln!(
            "planned job {} (state file {})",
            prepared.job.id,
            state_path.display()
        );
    }
    let chunks = match job.store.list_chunks(&prepared.job.id).await {
        Ok(chunks) => chunks,
        Err(error) => {
            eprintln!("error: {error}");
            return exit_code::RUNTIME_ERROR;
        }
    };

    let cancel = CancellationToken::new();
    let cancel_after_report = cancel.clone();
    let signal_cancel = cancel.clone();
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            eprintln!(
                "\nstopping: running chunks roll back; run the same command to resume (Ctrl-C again quits at once)"
            );
            signal_cancel.cancel();
            if tokio::signal::ctrl_c().await.is_ok() {
                std::process::exit(exit_code::INTERRUPTED);
            }
        }
    });

    let mut options = LocalRunOptions::workers(workers);
    options.control_addr = Some(control_addr.to_owned());
    options.console_addr = console.addr.clone();
    options.console_stay = console.stay;
    options.database_caps = database_caps;
    let scheme = if security.tls_cert.is_some() {
        "https"
    } else {
        "http"
    };
    options.security = security;
    // The default port may be taken (another run): fall back to any free port.
    let started = match job.start(&prepared, &options, cancel.clone()).await {
        Err(_) if control_addr == DEFAULT_CONTROL_ADDR => {
            options.control_addr = Some("127.0.0.1:0".to_owned());
            job.start(&prepared, &options, cancel).await
        }
        other => other,
    };
    let mut run = match started {
        Ok(run) => run,
        Err(error) => {
            eprintln!("error: {error}");
            return error.exit_code();
        }
    };
    // Operator controls answer once the job runs: announce the endpoint then.
    run.runtime.wait_running(&prepared.job.id).await;
    if let Some(addr) = run.control_addr {
        eprintln!(
            "control API on {scheme}://{addr} (ferryctl jobs|status|watch|chunks|workers|throttle|pause|resume|recopy|drain|history --endpoint {scheme}://{addr})"
        );
    }
    if let Some(addr) = run.console_addr {
        eprintln!("console on http://{addr}");
    }

    let mode = if json && !std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        ProgressMode::Quiet
    } else {
        ProgressMode::detect()
    };
    let display = tokio::spawn(show(prepared.job.clone(), chunks, mode, run.take_events()));
    let outcome = run.finish().await;
    let _ = display.await;
    let outcome = match outcome {
        Ok(outcome) => outcome,
        Err(error) => {
            eprintln!("error: {error}");
            return error.exit_code();
        }
    };
    let mut report = JobReport::new(&prepared.job, &prepared, &outcome);
    report.verify_only = verify.is_some();
    if json {
        match serde_json::to_string(&report) {
            Ok(text) => println!("{text}"),
            Err(error) => eprintln!("error: cannot render the report: {error}"),
        }
    } else {
        print!("{}", report.render());
    }
    let code = match verify {
        Some(options) if report.only_differences() && !report.interrupted => {
            let connectors = ferry_ctl::verify::JobConnectors {
                source: job.source.clone(),
                sink: job.sink.clone(),
            };
            let (_, code) = ferry_ctl::verify::after_run(
                &job.spec,
                &prepared.job,
                &outcome.chunks,
                &connectors,
                &options,
            )
            .await;
            code
        }
        _ => report.exit_code(),
    };
    if console.stay && !cancel_after_report.is_cancelled() {
        eprintln!("the job ended; the console stays open until Ctrl-C");
        cancel_after_report.cancelled().await;
    }
    code
}

#[cfg(test)]
mod tests {
    use super::parse_endpoint_cap;

    #[test]
    fn an_endpoint_cap_names_a_normalised_database_and_a_cap_from_1_to_1024() {
        assert_eq!(
            parse_endpoint_cap("DB.example.com:5432/orders=8"),
            Ok(("db.example.com:5432/orders".to_owned(), 8))
        );
        assert!(parse_endpoint_cap("db.example.com:5432/orders").is_err());
        assert!(parse_endpoint_cap("db.example.com/orders=8").is_err());
        assert!(parse_endpoint_cap("db:5432/orders=0").is_err());
        assert!(parse_endpoint_cap("db:5432/orders=1025").is_err());
    }
}
