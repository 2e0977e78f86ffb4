//! Distributed mode: the coordinator's side. [`runtime::ClusterRuntime`] campaigns for
//! leadership and, while it leads, runs each job with the same scheduler as
//! `ferryctl local` ([`crate::scheduler::run_job_on`]) over the etcd store, with
//! [`remote::RemoteExecutor`] handing attempts to workers and [`pool::ClusterPool`]
//! giving out the live workers' slots, shared between jobs by weight and per-database
//! caps ([`share`]); the scheduler's store is [`handoff::HandoffStore`], which writes an
//! attempt's start and its assignment in one txn.

pub mod handoff;
pub mod pool;
pub mod remote;
pub mod runtime;
pub mod share;
pub mod tally;
