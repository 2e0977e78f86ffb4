//! `consistency: job_snapshot`: the run of a job's lifecycle (the leader's run in a
//! cluster, the same code under `ferryctl local`) holds one exported snapshot of the
//! source for as long as it runs, and hands its id to every attempt it assigns
//! ([`crate::scheduler::SchedulerOptions::source_snapshot`], carried by the assignment),
//! so every chunk read of the job sees one point in time.
//!
//! The snapshot lives only as long as its holder. When the holder ends (a leader fails
//! over or steps down, `ferryctl local` is stopped or killed) it is gone for good, and a
//! new one would be another point in time: a later run must not silently mix the two.
//! So a run exports a snapshot only while no chunk of the job has been attempted yet;
//! a run that finds chunks attempted by an earlier run and chunks still to copy refuses
//! to go on ([`SnapshotPlan::Refuse`]) and the job FAILS with the fix: start over (every
//! chunk again from a new snapshot) or switch to `consistency: chunk` to finish.
//! Chunk reads that find the snapshot gone while the run still goes on (its connection
//! broke) fail with a permanent error saying the same
//! (`ferry_connectors` PostgreSQL `snapshot::gone`).

use ferry_model::spec::Consistency;

/// What a run of a job does about its source snapshot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SnapshotPlan {
    /// Chunks read at their own times (`consistency: chunk`), or nothing is left to read.
    NotNeeded,
    /// Export a snapshot and read every chunk in it.
    Export,
    /// An earlier run read chunks in a snapshot that is gone: the job cannot finish at
    /// one point in time. The message names the fix.
    Refuse(String),
}

/// Decides what a run does about its snapshot, from the chunks it resumes: `open`
/// chunks are still to be read (neither VERIFIED nor FAILED), `started` chunks have been
/// attempted (assigned at least once) by an earlier run.
pub fn plan_snapshot(
    job: &str,
    consistency: Consistency,
    open: usize,
    started: usize,
) -> SnapshotPlan {
    if consistency == Consistency::Chunk || open == 0 {
        return SnapshotPlan::NotNeeded;
    }
    if started == 0 {
        return SnapshotPlan::Export;
    }
    SnapshotPlan::Refuse(format!(
        "job {job} reads its source in one snapshot (consistency: job_snapshot), but the \
         run that held it ended (a coordinator failover, or ferryctl stopped) after {started} \
         chunk(s) were read in it, and a new snapshot is another point in time: \
         {open} chunk(s) cannot be read at the same point any more. Start the job over to \
         copy every chunk from a new snapshot (another --state or job name, with the target \
         tables dropped or `schema: recreate`), or set consistency: chunk in the spec to \
         finish the remaining chunks each at its own time"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_snapshot_is_exported_only_before_any_chunk_was_read() {
        assert_eq!(
            plan_snapshot("j", Consistency::JobSnapshot, 10, 0),
            SnapshotPlan::Export
        );
        assert_eq!(
            plan_snapshot("j", Consistency::Chunk, 10, 3),
            SnapshotPlan::NotNeeded
        );
        // Everything read already: nothing to mix, nothing to hold.
        assert_eq!(
            plan_snapshot("j", Consistency::JobSnapshot, 0, 10),
            SnapshotPlan::NotNeeded
        );
        let SnapshotPlan::Refuse(message) = plan_snapshot("orders", Consistency::JobSnapshot, 4, 6)
        else {
            panic!("a resumed job_snapshot job must be refused");
        };
        for part in [
            "job orders",
            "6 chunk(s)",
            "4 chunk(s)",
            "schema: recreate",
            "consistency: chunk",
        ] {
            assert!(message.contains(part), "{part}: {message}");
        }
    }
}
