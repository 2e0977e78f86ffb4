//! The etcd key layout of the coordination store. Domain code never sees these keys:
//! only [`EtcdStore`](super::EtcdStore) does.
//!
//! ```text
//! {prefix}                                   default /ferry/{cluster}/v1
//! ├── election                               reserved: coordinator leader election
//! ├── election                               LeaderValue on the leader's lease
//! ├── workers/{worker}                       WorkerRecordValue on the worker's lease
//! ├── drain/{worker}/request                 DrainValue: an operator asked it to drain
//! ├── job_states/{job}                       JobStateValue (cluster jobs)
//! ├── assign/{worker}/{job}/{idx:08}         AssignmentValue, written by the leader with the chunk's start
//! ├── claims/{job}/{idx:08}                  the worker holding it, on the worker's lease (once the attempt ran a progress interval)
//! ├── progress/{job}/{idx:08}                ProgressValue, on the worker's lease
//! ├── pace/{job}                             PaceValue: pause and rate shares, live
//! ├── results/{job}/{idx:08}/{attempt:08}    ResultValue, guarded by the assignment
//! └── jobs/{job}/
//!     ├── record                             JobRecordValue, written LAST by create_job
//!     ├── spec                               JobSpecValue (cluster jobs)
//!     ├── chunks/{idx:08}                    ChunkRecordValue, one per chunk
//!     ├── policy                             PolicyValue (policy JSON + newest history seq)
//!     └── policy_history/{seq:08}            PolicyChangeValue, seq from 1, oldest first
//! ```
//!
//! Values are `ferry.v1` protobuf messages (`proto/ferry/v1/state.proto`).
//!
//! - Indexes are zero-padded to 8 digits so byte order equals numeric order for every
//!   index below 10^8 (a range read returns chunks in id order; larger indexes still
//!   get distinct keys, and readers sort by the decoded id anyway).
//! - `{job}` and `{worker}` are percent-encoded: every byte outside `[A-Za-z0-9._~-]`
//!   becomes `%XX`. A name holding `/` therefore cannot reach into another job's
//!   subtree (job `a/chunks` cannot read as job `a`'s chunks).
//! - A job exists only once its `record` exists: chunk keys without a record are the
//!   remains of an interrupted `create_job` and are ignored by readers and cleared by
//!   the next `create_job` of that job.

use std::fmt::Write as _;

use ferry_model::ids::{ChunkId, JobId, WorkerId};

/// Builds the keys of one coordination store under its prefix.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyLayout {
    /// The prefix without a trailing slash, e.g. `/ferry/prod/v1`.
    prefix: String,
}

impl KeyLayout {
    /// Returns the layout under `prefix` (a trailing `/` is ignored).
    pub fn new(prefix: impl Into<String>) -> Self {
        let mut prefix = prefix.into();
        while prefix.ends_with('/') {
            prefix.pop();
        }
        Self { prefix }
    }

    /// Returns the default prefix of a cluster: `/ferry/{cluster}/v1`.
    pub fn default_prefix(cluster: &str) -> String {
        format!("/ferry/{}/v1", escape_segment(cluster))
    }

    /// Returns the prefix, without a trailing slash.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Returns `{prefix}/`: every key of the store starts with it.
    pub fn root(&self) -> Vec<u8> {
        format!("{}/", self.prefix).into_bytes()
    }

    /// Returns `{prefix}/election`, reserved for the coordinators' leader election.
    pub fn election(&self) -> Vec<u8> {
        format!("{}/election", self.prefix).into_bytes()
    }

    /// Returns `{prefix}/workers/{worker}`.
    pub fn worker(&self, worker: &WorkerId) -> Vec<u8> {
        format!("{}/workers/{}", self.prefix, escape_segment(&worker.0)).into_bytes()
    }

    /// Returns `{prefix}/workers/`.
    pub fn workers_root(&self) -> Vec<u8> {
        format!("{}/workers/", self.prefix).into_bytes()
    }

    /// Returns `{prefix}/drain/{worker}/`, which a worker watches.
    pub fn drain_root(&self, worker: &WorkerId) -> Vec<u8> {
        format!("{}/drain/{}/", self.prefix, escape_segment(&worker.0)).into_bytes()
    }

    /// Returns `{prefix}/drain/{worker}/request`.
    pub fn drain(&self, worker: &WorkerId) -> Vec<u8> {
        let mut key = self.drain_root(worker);
        key.extend_from_slice(b"request");
        key
    }

    /// Returns `{prefix}/assign/{worker}/`: every assignment of the worker.
    pub fn assignments_root(&self, worker: &WorkerId) -> Vec<u8> {
        format!("{}/assign/{}/", self.prefix, escape_segment(&worker.0)).into_bytes()
    }

    /// Returns `{prefix}/assign/{worker}/{job}/{idx:08}`.
    pub fn assignment(&self, worker: &WorkerId, job: &JobId, chunk: ChunkId) -> Vec<u8> {
        let mut key = self.assignments_root(worker);
        key.extend_from_slice(format!("{}/{:08}", escape_segment(&job.0), chunk.0).as_bytes());
        key
    }

    /// Returns `{prefix}/claims/{job}/{idx:08}`.
    pub fn claim(&self, job: &JobId, chunk: ChunkId) -> Vec<u8> {
        format!(
            "{}/claims/{}/{:08}",
            self.prefix,
            escape_segment(&job.0),
            chunk.0
        )
        .into_bytes()
    }

    /// Returns `{prefix}/pace/`.
    pub fn pace_root(&self) -> Vec<u8> {
        format!("{}/pace/", self.prefix).into_bytes()
    }

    /// Returns `{prefix}/pace/{job}`: the job's live pace for running attempts.
    pub fn pace(&self, job: &JobId) -> Vec<u8> {
        format!("{}/pace/{}", self.prefix, escape_segment(&job.0)).into_bytes()
    }

    /// Returns `{prefix}/progress/`.
    pub fn progress_root(&self) -> Vec<u8> {
        format!("{}/progress/", self.prefix).into_bytes()
    }

    /// Returns `{prefix}/progress/{job}/{idx:08}`.
    pub fn progress(&self, job: &JobId, chunk: ChunkId) -> Vec<u8> {
        format!(
            "{}/progress/{}/{:08}",
            self.prefix,
            escape_segment(&job.0),
            chunk.0
        )
        .into_bytes()
    }

    /// Returns `{prefix}/results/`.
    pub fn results_root(&self) -> Vec<u8> {
        format!("{}/results/", self.prefix).into_bytes()
    }

    /// Returns `{prefix}/results/{job}/{idx:08}/{attempt:08}`.
    pub fn result(&self, job: &JobId, chunk: ChunkId, attempt: u32) -> Vec<u8> {
        format!(
            "{}/results/{}/{:08}/{attempt:08}",
            self.prefix,
            escape_segment(&job.0),
            chunk.0
        )
        .into_bytes()
    }

    /// Returns `{prefix}/job_states/`: one key per cluster job.
    pub fn job_states_root(&self) -> Vec<u8> {
        format!("{}/job_states/", self.prefix).into_bytes()
    }

    /// Returns `{prefix}/jobs/{job}/spec`.
    pub fn job_spec(&self, job: &JobId) -> Vec<u8> {
        self.job_path(job, "spec").into_bytes()
    }

    /// Returns `{prefix}/job_states/{job}`.
    pub fn job_state(&self, job: &JobId) -> Vec<u8> {
        let mut key = self.job_states_root();
        key.extend_from_slice(escape_segment(&job.0).as_bytes());
        key
    }

    /// Returns `{prefix}/jobs/{job}/`: every key of the job starts with it.
    pub fn job_root(&self, job: &JobId) -> Vec<u8> {
        self.job_path(job, "").into_bytes()
    }

    /// Returns `{prefix}/jobs/{job}/record`.
    pub fn job_record(&self, job: &JobId) -> Vec<u8> {
        self.job_path(job, "record").into_bytes()
    }

    /// Returns `{prefix}/jobs/{job}/chunks/{idx:08}`.
    pub fn chunk(&self, job: &JobId, chunk: ChunkId) -> Vec<u8> {
        self.job_path(job, &format!("chunks/{:08}", chunk.0))
            .into_bytes()
    }

    /// Returns `{prefix}/jobs/{job}/chunks/`: every chunk key of the job starts with it.
    pub fn chunks_root(&self, job: &JobId) -> Vec<u8> {
        self.job_path(job, "chunks/").into_bytes()
    }

    /// Returns `{prefix}/jobs/{job}/policy`.
    pub fn policy(&self, job: &JobId) -> Vec<u8> {
        self.job_path(job, "policy").into_bytes()
    }

    /// Returns `{prefix}/jobs/{job}/policy_history/{seq:08}`.
    pub fn policy_history_entry(&self, job: &JobId, seq: u64) -> Vec<u8> {
        self.job_path(job, &format!("policy_history/{seq:08}"))
            .into_bytes()
    }

    /// Returns `{prefix}/jobs/{job}/policy_history/`: every history key starts with it.
    pub fn policy_history_root(&self, job: &JobId) -> Vec<u8> {
        self.job_path(job, "policy_history/").into_bytes()
    }

    fn job_path(&self, job: &JobId, rest: &str) -> String {
        format!("{}/jobs/{}/{rest}", self.prefix, escape_segment(&job.0))
    }
}

/// Returns the end of the range holding every key that starts with `prefix`: the
/// prefix with its last byte below 0xff incremented (etcd's `WithPrefix`). An empty or
/// all-0xff prefix gives `[0]`, etcd's "to the end of the key space".
pub fn prefix_range_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

/// Returns the smallest key after `key` (to continue a paged range read).
pub fn key_after(key: &[u8]) -> Vec<u8> {
    let mut next = Vec::with_capacity(key.len() + 1);
    next.extend_from_slice(key);
    next.push(0);
    next
}

/// Percent-encodes one path segment: bytes outside `[A-Za-z0-9._~-]` become `%XX`.
pub fn escape_segment(segment: &str) -> String {
    let mut escaped = String::with_capacity(segment.len());
    for byte in segment.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'.' | b'_' | b'~' | b'-') {
            escaped.push(char::from(byte));
        } else {
            // Writing to a String cannot fail.
            let _ = write!(escaped, "%{byte:02X}");
        }
    }
    escaped
}

/// Reverses [`escape_segment`]; a malformed escape stays as written.
pub fn unescape_segment(segment: &str) -> String {
    ferry_model::text::percent_decode(segment)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unescape_reverses_escape() {
        for name in ["orders", "a/chunks", "100%", "émile", "%zz"] {
            assert_eq!(unescape_segment(&escape_segment(name)), name);
        }
        assert_eq!(unescape_segment("%zz"), "%zz");
    }

    #[test]
    fn keys_follow_the_documented_tree() {
        let keys = KeyLayout::new("/ferry/prod/v1/");
        let job = JobId("orders".into());
        assert_eq!(keys.root(), b"/ferry/prod/v1/");
        assert_eq!(keys.election(), b"/ferry/prod/v1/election");
        assert_eq!(
            keys.worker(&WorkerId("w-1".into())),
            b"/ferry/prod/v1/workers/w-1"
        );
        assert_eq!(keys.job_record(&job), b"/ferry/prod/v1/jobs/orders/record");
        assert_eq!(
            keys.chunk(&job, ChunkId(42)),
            b"/ferry/prod/v1/jobs/orders/chunks/00000042"
        );
        assert_eq!(keys.policy(&job), b"/ferry/prod/v1/jobs/orders/policy");
        assert_eq!(
            keys.policy_history_entry(&job, 7),
            b"/ferry/prod/v1/jobs/orders/policy_history/00000007"
        );
        assert_eq!(KeyLayout::default_prefix("prod"), "/ferry/prod/v1");
    }

    #[test]
    fn chunk_keys_sort_like_their_indexes() {
        let keys = KeyLayout::new("/p");
        let job = JobId("j".into());
        let mut sorted: Vec<Vec<u8>> = [0, 9, 10, 99, 100, 12_345_678]
            .into_iter()
            .map(|index| keys.chunk(&job, ChunkId(index)))
            .collect();
        let original = sorted.clone();
        sorted.sort();
        assert_eq!(sorted, original);
        assert!(
            keys.chunk(&job, ChunkId(5))
                .starts_with(&keys.chunks_root(&job))
        );
    }

    #[test]
    fn a_slash_in_a_name_cannot_reach_into_another_job() {
        let keys = KeyLayout::new("/p");
        let nested = JobId("a/chunks".into());
        let plain = JobId("a".into());
        assert_eq!(keys.job_record(&nested), b"/p/jobs/a%2Fchunks/record");
        assert!(!keys.job_record(&nested).starts_with(&keys.job_root(&plain)));
        assert_eq!(escape_segment("x y%"), "x%20y%25");
    }

    #[test]
    fn prefix_range_end_increments_the_last_byte() {
        assert_eq!(prefix_range_end(b"/a/"), b"/a0");
        assert_eq!(prefix_range_end(&[b'a', 0xff]), b"b");
        assert_eq!(prefix_range_end(&[0xff]), vec![0]);
        assert_eq!(key_after(b"k"), vec![b'k', 0]);
    }
}
