//! Where `ferryctl sync` runs its jobs: each pass is a sync job ([`JobMode::Sync`], its
//! marks in `sync.since`) and the final check a verify-only job, run by the same runtime
//! and worker agents as every job: in this process ([`LocalJobs`], like `ferryctl local`)
//! or on a cluster ([`ClusterJobs`]: submitted to its coordinator, waited for). What the
//! jobs did comes back per chunk ([`ChunkOutcome`]).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use async_trait::async_trait;
use ferry_coordination::ChunkState;
use ferry_model::execution::SyncChanges;
use ferry_model::spec::{JobMode, JobSpec};
use ferry_proto::v1 as pb;
use tokio_util::sync::CancellationToken;

use crate::local::{LocalJob, LocalRunOptions};
use crate::remote::request;

/// One chunk of a finished job, as `ferryctl sync` reads it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ChunkOutcome {
    /// The source table.
    pub table: String,
    /// Whether it ended VERIFIED (a sync chunk: caught up).
    pub verified: bool,
    /// A verify-only chunk whose sides differ (not an error).
    pub differs: bool,
    /// Why it failed, when it did.
    pub error: String,
    /// What a sync chunk changed.
    pub sync: Option<SyncChanges>,
}

/// Runs jobs to their end.
#[async_trait]
pub trait SyncJobs: Send + Sync {
    /// Runs the job of `spec` (whose text, for a cluster, is `spec_yaml`) to its end and
    /// returns its chunks. Errors when it could not run (not when chunks FAILED).
    async fn run_job(&self, spec: &JobSpec, spec_yaml: &str) -> Result<Vec<ChunkOutcome>, String>;

    /// The name the job of `kind` (`sync`, `verify`) of `spec` runs under.
    fn job_name(&self, spec: &JobSpec, kind: &str) -> String;
}

/// The spec of one sync pass: `spec` in mode `sync`, named `name`, reading each listed
/// table from its mark and leaving out the tables of `skip` (qualified names).
pub fn pass_spec(
    spec: &JobSpec,
    name: &str,
    since: &BTreeMap<String, i64>,
    skip: &[String],
) -> Result<JobSpec, String> {
    let mut pass = spec.clone();
    pass.name = name.to_owned();
    pass.mode = JobMode::Sync;
    pass.sync.since = since.clone();
    for table in skip {
        let pattern = ferry_model::glob::GlobPattern::parse(&literal_pattern(table))
            .map_err(|error| format!("table {table}: {error}"))?;
        pass.tables.exclude.push(pattern);
    }
    Ok(pass)
}

/// A `tables:` pattern matching exactly `table` (glob characters escaped).
fn literal_pattern(table: &str) -> String {
    let mut pattern = String::with_capacity(table.len());
    for character in table.chars() {
        if matches!(character, '\\' | '*' | '?' | '[' | ']') {
            pattern.push('\\');
        }
        pattern.push(character);
    }
    pattern
}

/// The spec text of a job of `mode` named `name` (with the pass's marks for a sync), for a
/// cluster's workers, which read the job from it.
pub fn job_spec_yaml(
    spec_yaml: &str,
    name: &str,
    mode: JobMode,
    since: &BTreeMap<String, i64>,
    skip: &[String],
) -> Result<String, String> {
    let mut document: serde_yaml_ng::Value = serde_yaml_ng::from_str(spec_yaml)
        .map_err(|error| format!("the spec is not YAML: {error}"))?;
    let Some(mapping) = document.as_mapping_mut() else {
        return Err("a job spec must be a YAML mapping".into());
    };
    mapping.insert("name".into(), name.into());
    mapping.insert("mode".into(), mode.as_str().into());
    mapping.remove("sync");
    if mode == JobMode::Sync && !since.is_empty() {
        let mut marks = serde_yaml_ng::Mapping::new();
        for (table, micros) in since {
            marks.insert(table.as_str().into(), (*micros).into());
        }
        let mut sync = serde_yaml_ng::Mapping::new();
        sync.insert("since".into(), marks.into());
        mapping.insert("sync".into(), sync.into());
    }
    if !skip.is_empty() {
        let tables = mapping
            .get_mut("tables")
            .and_then(serde_yaml_ng::Value::as_mapping_mut)
            .ok_or("tables: missing required field")?;
        let exclude = tables
            .entry("exclude".into())
            .or_insert_with(|| serde_yaml_ng::Value::Sequence(Vec::new()));
        let serde_yaml_ng::Value::Sequence(patterns) = exclude else {
            return Err("tables.exclude: expected a list of patterns".into());
        };
        patterns.extend(skip.iter().map(|table| literal_pattern(table).into()));
    }
    serde_yaml_ng::to_string(&document).map_err(|error| error.to_string())
}

/// Jobs run in this process on the in-process coordination store, each with a fresh
/// state file next to the sync state file (`<state>.<job>.db`, removed after the job).
pub struct LocalJobs {
    /// Worker agents.
    pub workers: usize,
    /// The sync state file the job state files are named after.
    pub state_path: PathBuf,
    /// Stops a running job (Ctrl-C).
    pub cancel: CancellationToken,
}

impl LocalJobs {
    fn job_state(&self, job: &str) -> PathBuf {
        let mut path = self.state_path.as_os_str().to_owned();
        path.push(format!(".{job}.db"));
        PathBuf::from(path)
    }
}

fn remove_state_file(path: &Path) {
    for suffix in ["", "-wal", "-shm"] {
        let mut file = path.as_os_str().to_owned();
        file.push(suffix);
        let _ = std::fs::remove_file(PathBuf::from(file));
    }
}

#[async_trait]
impl SyncJobs for LocalJobs {
    async fn run_job(&self, spec: &JobSpec, _spec_yaml: &str) -> Result<Vec<ChunkOutcome>, String> {
        let state = self.job_state(&spec.name);
        // Each job starts from a fresh plan: its chunks are idempotent, so a pass cut
        // short is simply run again in full by the next.
        remove_state_file(&state);
        let job = LocalJob::open(spec.clone(), &state)
            .await
            .map_err(|error| error.to_string())?;
        let prepared = job.prepare().await.map_err(|error| error.to_string())?;
        let (events, _ignored) = tokio::sync::mpsc::unbounded_channel();
        let outcome = job
            .run(
                &prepared,
                &LocalRunOptions::workers(self.workers),
                events,
                self.cancel.clone(),
            )
            .await
            .map_err(|error| error.to_string())?;
        drop(job);
        remove_state_file(&state);
        if outcome.interrupted {
            return Err("interrupted".into());
        }
        let tables = &prepared.job.tables;
        Ok(outcome
            .chunks
            .iter()
            .map(|chunk| ChunkOutcome {
                table: tables
                    .get(chunk.table_index)
                    .map(|table| table.schema.name.to_string())
                    .unwrap_or_default(),
                verified: chunk.state == ChunkState::Verified,
                differs: chunk.differs(),
                error: chunk.last_error.clone().unwrap_or_default(),
                sync: chunk.evidence.sync,
            })
            .collect())
    }

    fn job_name(&self, spec: &JobSpec, kind: &str) -> String {
        crate::verify::suffixed_name(&spec.name, &format!("-{kind}"))
    }
}

/// Jobs submitted to a cluster's coordinator (the Control API at `endpoints`) and waited
/// for; a new job (`<name>-<kind>-<time>`) each time.
pub struct ClusterJobs {
    /// The coordinators.
    pub endpoints: String,
    /// How often the job's state is asked while it runs.
    pub poll_interval: Duration,
    /// Stops waiting (Ctrl-C); the job goes on in the cluster.
    pub cancel: CancellationToken,
}

#[async_trait]
impl SyncJobs for ClusterJobs {
    async fn run_job(&self, spec: &JobSpec, spec_yaml: &str) -> Result<Vec<ChunkOutcome>, String> {
        let job = spec.name.clone();
        let submission = pb::SubmitJobRequest {
            spec_yaml: spec_yaml.to_owned(),
            dry_run: false,
        };
        request(&self.endpoints, |mut client| {
            let submission = submission.clone();
            async move { client.submit_job(submission).await }
        })
        .await
        .map_err(|error| format!("submitting job {job}: {error}"))?;
        loop {
            let answer = request(&self.endpoints, |mut client| {
                let job_id = job.clone();
                async move { client.get_job(pb::GetJobRequest { job_id }).await }
            })
            .await
            .map_err(|error| format!("following job {job}: {error}"))?
            .into_inner();
            match pb::JobState::try_from(answer.state) {
                Ok(pb::JobState::Done | pb::JobState::Failed) => break,
                Ok(pb::JobState::Cancelled) => return Err(format!("job {job} was cancelled")),
                _ => {}
            }
            tokio::select! {
                () = self.cancel.cancelled() => {
                    return Err(format!("interrupted: job {job} goes on in the cluster"));
                }
                () = tokio::time::sleep(self.poll_interval) => {}
            }
        }
        let chunks = crate::cluster::list_all_chunks(&self.endpoints, &job, "", "")
            .await
            .map_err(|error| format!("listing the chunks of job {job}: {error}"))?;
        let differences_only = crate::cluster::found_differences(&self.endpoints, &job).await;
        Ok(chunks
            .into_iter()
            .map(|chunk| {
                let verified = chunk.state == ChunkState::Verified.as_str();
                ChunkOutcome {
                    table: chunk.table,
                    verified,
                    differs: !verified && differences_only,
                    error: chunk.last_error,
                    sync: chunk.sync.map(SyncChanges::from),
                }
            })
            .collect())
    }

    fn job_name(&self, spec: &JobSpec, kind: &str) -> String {
        crate::cluster::stamped_job_name(&spec.name, kind)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pass_spec_carries_mode_name_and_marks_for_the_workers() {
        let yaml = "name: orders\nmode: copy\nsync: { since: { old: 1 } }\nsource: { kind: sqlite, path: a.db }\ntables: { include: [\"*\"] }\n";
        let since = BTreeMap::from([("public.orders".to_owned(), 1_765_045_200_000_000_i64)]);
        let skip = ["public.items".to_owned(), "public.odd*name".to_owned()];
        let text =
            job_spec_yaml(yaml, "orders-sync-1", JobMode::Sync, &since, &skip).expect("yaml");
        let document: serde_yaml_ng::Value = serde_yaml_ng::from_str(&text).expect("parsed");
        assert_eq!(document["name"].as_str(), Some("orders-sync-1"));
        assert_eq!(document["mode"].as_str(), Some("sync"));
        assert_eq!(
            document["sync"]["since"]["public.orders"].as_i64(),
            Some(1_765_045_200_000_000)
        );
        assert!(document["sync"]["since"].get("old").is_none());
        let excluded: Vec<&str> = document["tables"]["exclude"]
            .as_sequence()
            .expect("exclude")
            .iter()
            .filter_map(serde_yaml_ng::Value::as_str)
            .collect();
        assert_eq!(excluded, ["public.items", "public.odd\\*name"]);
        let pattern = ferry_model::glob::GlobPattern::parse(excluded[1]).expect("a pattern");
        assert!(pattern.matches("public.odd*name"));
        assert!(!pattern.matches("public.odd_x_name"));
        let verify =
            job_spec_yaml(yaml, "orders-verify-1", JobMode::Verify, &since, &[]).expect("yaml");
        let document: serde_yaml_ng::Value = serde_yaml_ng::from_str(&verify).expect("parsed");
        assert_eq!(document["mode"].as_str(), Some("verify"));
        assert!(document.get("sync").is_none(), "{verify}");
    }
}
