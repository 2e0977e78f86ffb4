//! `ferryctl sync SPEC --reverse`: the rollback path. After the switch the application
//! writes to the new database (the spec's target); the same sync passes then run the
//! other way, new → old, so the old database (the spec's source) stays a fallback until
//! the operator lets it go. Everything of a forward pass applies with the roles swapped:
//! the same watermark column and lag, newer-wins writes into the old side (an old row
//! newer than the new one is kept), deletes found by the keyed diff, checksum-and-repair
//! for tables without the column.
//!
//! The reverse sync is a job of its own, `<name>-reverse`, with its own state file
//! (`<spec folder>/<name>-reverse.ferry-sync.json`): its high-water marks are those of
//! the new side, never mixed with the forward ones. Its tables are the spec's selection
//! on the new side, and each must already exist on the old side, with compatible
//! columns: a missing one is refused before any pass ([`require_old_side_tables`]).

use ferry_connectors::{ConnectorError, Sink};
use ferry_coordination::TableRecord;
use ferry_model::spec::{Consistency, JobSpec};

/// Appended to the job's name for its reverse sync.
const REVERSE_SUFFIX: &str = "-reverse";

/// The spec of the reverse sync of `spec`: source and target swapped, named
/// `<name>-reverse` (cut to fit the 64 characters of a name).
pub fn reverse_spec(mut spec: JobSpec) -> JobSpec {
    std::mem::swap(&mut spec.source, &mut spec.target);
    let keep = spec
        .name
        .char_indices()
        .map(|(at, _)| at)
        .chain([spec.name.len()])
        .take_while(|at| *at <= ferry_model::spec::MAX_JOB_NAME_CHARS - REVERSE_SUFFIX.len())
        .last()
        .unwrap_or(0);
    spec.name = format!("{}{REVERSE_SUFFIX}", &spec.name[..keep]);
    // A sync pass reads the source as it is; the new side need not be PostgreSQL.
    spec.consistency = Consistency::Chunk;
    spec
}

/// The spec text of the reverse sync (what each pass's job is built from, and what a
/// cluster's workers read): `source:` and `target:` swapped, `consistency:` left out
/// (a sync pass reads the source as it is). Mirrors [`reverse_spec`].
pub fn reverse_spec_yaml(spec_yaml: &str) -> Result<String, String> {
    let mut document: serde_yaml_ng::Value = serde_yaml_ng::from_str(spec_yaml)
        .map_err(|error| format!("the spec is not YAML: {error}"))?;
    let Some(mapping) = document.as_mapping_mut() else {
        return Err("a job spec must be a YAML mapping".into());
    };
    let source = mapping.remove("source");
    let target = mapping.remove("target");
    if let Some(target) = target {
        mapping.insert("source".into(), target);
    }
    if let Some(source) = source {
        mapping.insert("target".into(), source);
    }
    mapping.remove("consistency");
    serde_yaml_ng::to_string(&document).map_err(|error| error.to_string())
}

/// Why a reverse sync cannot start.
#[derive(Debug, thiserror::Error)]
#[error(
    "ferryctl sync --reverse: table {table} of the new database ({new_side}, the spec's \
     target) cannot be synced back to the old one ({old_side}, the spec's source): \
     {detail}; create it there as it was before the switch, or exclude it in tables.exclude"
)]
pub struct OldSideTableError {
    /// The table, as the old side names it.
    pub table: String,
    /// The new side's kind.
    pub new_side: &'static str,
    /// The old side's kind.
    pub old_side: &'static str,
    /// What is wrong with it.
    pub detail: String,
    /// The old side did not answer (not a refusal: try again).
    pub unavailable: bool,
}

/// Checks that every planned table exists on the old side (the reverse sync's sink) with
/// columns that can take the new side's rows. `spec` is the reversed spec.
pub async fn require_old_side_tables(
    spec: &JobSpec,
    tables: &[TableRecord],
    new_side_kind: &'static str,
    old_side: &dyn Sink,
) -> Result<(), OldSideTableError> {
    for table in tables {
        let options = ferry_coordinator::job::require_existing_options(spec, table);
        if let Err(error) = old_side
            .prepare_table(&table.schema, &table.key, &options)
            .await
        {
            let unavailable = error.kind() == ferry_connectors::ErrorKind::Unavailable;
            let detail = match error {
                ConnectorError::SchemaMismatch { detail, .. }
                    if detail.starts_with("it does not exist") =>
                {
                    "it does not exist there".to_owned()
                }
                other => other.to_string(),
            };
            return Err(OldSideTableError {
                table: old_side.target_table(&table.schema).to_string(),
                new_side: new_side_kind,
                old_side: old_side.kind(),
                detail,
                unavailable,
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(name: &str) -> JobSpec {
        let env = std::collections::HashMap::from([
            ("OLD".to_owned(), "postgres://u@old/db".to_owned()),
            ("NEW".to_owned(), "postgres://u@new/db".to_owned()),
        ]);
        let yaml = format!(
            "name: {name}\nsource: {{ kind: postgres, url_env: OLD }}\n\
             target: {{ kind: postgres, url_env: NEW }}\ntables: {{ include: [items] }}\n\
             consistency: job_snapshot\nwatermark: {{ column: updated_at, lag: 2s }}\n"
        );
        let context = ferry_model::spec::SpecContext {
            base_dir: std::path::Path::new("/jobs"),
            env: &env,
            known_kinds: &["postgres"],
        };
        JobSpec::parse(&yaml, &context).expect("valid spec")
    }

    #[test]
    fn the_reverse_swaps_the_sides_and_is_a_job_of_its_own() {
        let forward = spec("orders");
        let reverse = reverse_spec(forward.clone());
        assert_eq!(reverse.source, forward.target);
        assert_eq!(reverse.target, forward.source);
        assert_eq!(reverse.name, "orders-reverse");
        assert_eq!(reverse.watermark, forward.watermark, "the same watermark");
        assert_eq!(reverse.consistency, Consistency::Chunk);
        let longest = reverse_spec(spec(&"n".repeat(64)));
        assert_eq!(longest.name.len(), 64);
        assert!(longest.name.ends_with("-reverse"));
    }
}
