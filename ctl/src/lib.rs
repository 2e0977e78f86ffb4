//! ferryctl: `ferryctl local` runs a whole migration in one process (planner, scheduler
//! and a pool of workers on the in-process coordination store); `ferryctl demo` makes a
//! sample database and runs it. The remote commands ([`remote`], [`cluster`]) drive a
//! running ferry over its Control API.

pub mod client_security;
pub mod cluster;
pub mod demo;
pub mod demo_data;
pub mod evidence;
pub mod local;
pub mod progress;
pub mod remote;
pub mod report;
pub mod sync;
pub mod sync_jobs;
pub mod sync_reverse;
pub mod verify;

/// Process exit codes, documented in the README.
pub mod exit_code {
    /// Every chunk VERIFIED.
    pub const OK: i32 = 0;
    /// The run ended with FAILED chunks (named in the report).
    pub const FAILED_CHUNKS: i32 = 1;
    /// The spec or the command line is invalid; nothing ran.
    pub const INVALID_INPUT: i32 = 2;
    /// The job could not run: a database or the state file is unreachable, planning failed.
    pub const RUNTIME_ERROR: i32 = 3;
    /// A remote command: the ferry failed while serving it, or the watched job ended
    /// FAILED or CANCELLED (same value as [`FAILED_CHUNKS`]).
    pub const REMOTE_FAILED: i32 = 1;
    /// A verify-only job (`ferryctl verify`, `watch` of a `submit --verify-only` job)
    /// found source and target different, and nothing else went wrong. Not an error:
    /// the report (and `--output`) names what differs.
    pub const DIFFERENCES: i32 = 4;
    /// Interrupted (Ctrl-C); the same command resumes.
    pub const INTERRUPTED: i32 = 130;
}
