//! `ferryctl report JOB --state FILE --format json|csv`: a job's evidence record for
//! sign-off, read from its state file: every chunk with its table, partition, range,
//! rows and checksum on each side, attempts, worker, start, end and verification time.

use std::io::Write as _;
use std::path::Path;

use ferry_coordination::{ChunkRecord, ChunkState, Coordination, JobRecord, LocalStore};
use ferry_model::ids::JobId;
use serde::Serialize;

use crate::exit_code;

/// How the record is printed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum EvidenceFormat {
    /// One JSON object per chunk, one per line.
    Json,
    /// A header line, then one line per chunk.
    Csv,
}

/// One chunk of the evidence record.
#[derive(Clone, Debug, Serialize)]
pub struct ChunkEvidenceLine {
    /// The job.
    pub job: String,
    /// The chunk.
    pub chunk: u32,
    /// The source table.
    pub table: String,
    /// The leaf partition, when planned by partition.
    pub partition: Option<String>,
    /// The rows the chunk owns.
    pub range: String,
    /// Its state: VERIFIED, FAILED (a verify-only job: DIFFERS when the sides differ), ...
    pub state: String,
    /// Rows on the source side of the last comparison.
    pub source_rows: Option<u64>,
    /// The source side's checksum (32 hex digits).
    pub source_checksum: Option<String>,
    /// Rows on the target side of the last comparison.
    pub target_rows: Option<u64>,
    /// The target side's checksum.
    pub target_checksum: Option<String>,
    /// Attempts made.
    pub attempts: u32,
    /// The worker of the last attempt.
    pub worker: Option<String>,
    /// When the last attempt started (RFC 3339, UTC).
    pub started_at: Option<String>,
    /// When it ended.
    pub ended_at: Option<String>,
    /// When the chunk was verified (its last attempt's end, when VERIFIED).
    pub verified_at: Option<String>,
    /// Why the last attempt failed.
    pub last_error: Option<String>,
}

fn rfc3339(unix_ms: Option<i64>) -> Option<String> {
    let at = jiff::Timestamp::from_millisecond(unix_ms?).ok()?;
    Some(at.to_string())
}

/// The evidence lines of a job's chunks.
pub fn evidence_lines(job: &JobRecord, chunks: &[ChunkRecord]) -> Vec<ChunkEvidenceLine> {
    chunks
        .iter()
        .map(|chunk| {
            let state = if chunk.differs() {
                "DIFFERS".to_owned()
            } else {
                chunk.state.to_string()
            };
            let target = chunk.evidence.target_checksum;
            ChunkEvidenceLine {
                job: job.id.0.clone(),
                chunk: chunk.id.0,
                table: job
                    .tables
                    .get(chunk.table_index)
                    .map(|table| table.schema.name.to_string())
                    .unwrap_or_default(),
                partition: chunk.partition.clone(),
                range: chunk.range.to_string(),
                state,
                source_rows: chunk.checksum.map(|checksum| checksum.rows),
                source_checksum: chunk
                    .checksum
                    .map(|checksum| format!("{:032x}", checksum.sum)),
                target_rows: target.map(|checksum| checksum.rows),
                target_checksum: target.map(|checksum| format!("{:032x}", checksum.sum)),
                attempts: chunk.attempt.0,
                worker: chunk
                    .evidence
                    .worker
                    .as_ref()
                    .map(|worker| worker.0.clone()),
                started_at: rfc3339(chunk.evidence.started_at_unix_ms),
                ended_at: rfc3339(chunk.evidence.ended_at_unix_ms),
                verified_at: (chunk.state == ChunkState::Verified)
                    .then(|| rfc3339(chunk.evidence.ended_at_unix_ms))
                    .flatten(),
                last_error: chunk.last_error.clone(),
            }
        })
        .collect()
}

/// One CSV field: quoted when it holds a comma, a quote or a line break.
fn csv_field(text: &str) -> String {
    if text.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text.to_owned()
    }
}

/// Renders the lines as CSV (a header, then one line per chunk).
pub fn render_csv(lines: &[ChunkEvidenceLine]) -> String {
    let mut out = String::from(
        "job,chunk,table,partition,range,state,source_rows,source_checksum,target_rows,\
         target_checksum,attempts,worker,started_at,ended_at,verified_at,last_error\n",
    );
    let text = |value: &Option<String>| csv_field(value.as_deref().unwrap_or(""));
    let number = |value: Option<u64>| value.map(|value| value.to_string()).unwrap_or_default();
    for line in lines {
        let fields = [
            csv_field(&line.job),
            line.chunk.to_string(),
            csv_field(&line.table),
            text(&line.partition),
            csv_field(&line.range),
            line.state.clone(),
            number(line.source_rows),
            text(&line.source_checksum),
            number(line.target_rows),
            text(&line.target_checksum),
            line.attempts.to_string(),
            text(&line.worker),
            text(&line.started_at),
            text(&line.ended_at),
            text(&line.verified_at),
            text(&line.last_error),
        ];
        out.push_str(&fields.join(","));
        out.push('\n');
    }
    out
}

/// `ferryctl report`: prints the record; the exit code.
pub async fn print_report(state: &Path, job: &str, format: EvidenceFormat) -> i32 {
    if !state.is_file() {
        eprintln!(
            "error: state file {} does not exist: give the --state that `ferryctl local` or \
             `ferryctl verify` printed",
            state.display()
        );
        return exit_code::INVALID_INPUT;
    }
    let store = match LocalStore::open(state) {
        Ok(store) => store,
        Err(error) => {
            eprintln!("error: {error}");
            return exit_code::RUNTIME_ERROR;
        }
    };
    let (record, chunks) = match store.load_job(&JobId(job.to_owned())).await {
        Ok(Some(found)) => found,
        Ok(None) => {
            eprintln!(
                "error: state file {} holds no job {job:?}: name the job as the spec does \
                 (`<name>-verify` for `ferryctl verify`)",
                state.display()
            );
            return exit_code::INVALID_INPUT;
        }
        Err(error) => {
            eprintln!("error: {error}");
            return exit_code::RUNTIME_ERROR;
        }
    };
    let lines = evidence_lines(&record, &chunks);
    let mut stdout = std::io::stdout().lock();
    let written = match format {
        EvidenceFormat::Csv => stdout.write_all(render_csv(&lines).as_bytes()),
        EvidenceFormat::Json => lines.iter().try_for_each(|line| {
            serde_json::to_writer(&mut stdout, line)?;
            stdout.write_all(b"\n")
        }),
    };
    match written {
        Ok(()) => exit_code::OK,
        Err(error) => {
            eprintln!("error: cannot write the report: {error}");
            exit_code::RUNTIME_ERROR
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_fields_with_commas_or_quotes_are_quoted() {
        assert_eq!(csv_field("plain"), "plain");
        assert_eq!(csv_field("[1, 5)"), "\"[1, 5)\"");
        assert_eq!(csv_field("say \"x\""), "\"say \"\"x\"\"\"");
    }
}
