//! [`JobSpec::fingerprint`]: a stable hash of what shapes a job's copy plan, so that a
//! resumed job is known to be the same job.

use std::collections::BTreeMap;

use serde::Serialize;

use super::endpoints::{EndpointSpec, Location, without_password};
use super::model::JobSpec;
use crate::glob::GlobPattern;

impl JobSpec {
    /// Returns a stable 16-digit hex hash of everything that shapes the copy plan: source and
    /// target kind and location (a path, or the environment variable's name, never its
    /// value), the table patterns and the chunk size. It is FNV-1a 64 over canonical JSON, so
    /// it does not change across Rust versions or runs.
    pub fn fingerprint(&self) -> String {
        let view = PlanFingerprintView {
            format: 1,
            source: EndpointFingerprintView::of(&self.source),
            target: EndpointFingerprintView::of(&self.target),
            include: self
                .tables
                .include
                .iter()
                .map(GlobPattern::as_str)
                .collect(),
            exclude: self
                .tables
                .exclude
                .iter()
                .map(GlobPattern::as_str)
                .collect(),
            target_rows: self.chunking.target_rows,
            // Absent for a copy, so copy jobs keep the fingerprints they always had.
            mode: (self.mode != super::model::JobMode::Copy).then(|| self.mode.as_str()),
            split: self
                .tables
                .split
                .iter()
                .map(|(table, split)| (table.as_str(), (split.column.as_str(), split.buckets)))
                .collect(),
        };
        // Cannot fail: the view holds only strings, integers, options and lists of strings,
        // which serde_json always serializes.
        let canonical_json =
            serde_json::to_vec(&view).expect("a fingerprint view always serializes to json");
        format!("{:016x}", fnv1a_64(&canonical_json))
    }
}

/// The part of a spec that [`JobSpec::fingerprint`] hashes. Field order is part of the
/// format: changing it changes every fingerprint, so bump `format` along with it.
#[derive(Serialize)]
struct PlanFingerprintView<'a> {
    format: u32,
    source: EndpointFingerprintView<'a>,
    target: EndpointFingerprintView<'a>,
    include: Vec<&'a str>,
    exclude: Vec<&'a str>,
    target_rows: u64,
    /// The job's mode when it is not `copy` (a verify-only job is another job).
    #[serde(skip_serializing_if = "Option::is_none")]
    mode: Option<&'a str>,
    /// `tables.split`: table → (column, buckets); absent when empty, so the fingerprints
    /// of jobs planned before it existed stay the same.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    split: BTreeMap<&'a str, (&'a str, u32)>,
}

#[derive(Serialize)]
struct EndpointFingerprintView<'a> {
    kind: &'a str,
    path: Option<String>,
    url_env: Option<&'a str>,
    /// Where the variable points, without any password: pointing the variable at another
    /// database between runs makes a different job, not a resumed one.
    #[serde(skip_serializing_if = "Option::is_none")]
    url_target: Option<String>,
}

impl<'a> EndpointFingerprintView<'a> {
    fn of(endpoint: &'a EndpointSpec) -> Self {
        let (path, url_env, url_target) = match &endpoint.location {
            Location::Path(path) => (Some(path.to_string_lossy().into_owned()), None, None),
            Location::Env { var, value } => (
                None,
                Some(var.as_str()),
                Some(without_password(value.expose())),
            ),
        };
        EndpointFingerprintView {
            kind: &endpoint.kind,
            path,
            url_env,
            url_target,
        }
    }
}

fn fnv1a_64(bytes: &[u8]) -> u64 {
    const FNV_OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
    const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;
    bytes.iter().fold(FNV_OFFSET_BASIS, |hash, byte| {
        (hash ^ u64::from(*byte)).wrapping_mul(FNV_PRIME)
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "a test fails loudly on any error")]
mod tests {
    use crate::spec::test_support::*;

    #[test]
    fn fingerprint_is_stable_and_tracks_only_the_plan() {
        let base = parse(&spec_with("", "")).unwrap();
        let fingerprint = base.fingerprint();
        assert_eq!(fingerprint.len(), 16);
        assert!(fingerprint.chars().all(|c| c.is_ascii_hexdigit()));
        assert_eq!(
            fingerprint,
            parse(&spec_with("", "")).unwrap().fingerprint()
        );
        // Pinned: a change here breaks resuming jobs planned by an earlier build.
        assert_eq!(fingerprint, "a50128172aa57f49");

        let renamed = parse(&spec_with("name:", "name: other\nverify: {mode: none}")).unwrap();
        assert_eq!(renamed.fingerprint(), fingerprint);

        let rechunked = parse(&spec_with("", "chunking: {target_rows: 1000}\n")).unwrap();
        assert_ne!(rechunked.fingerprint(), fingerprint);
        let retabled = parse(&spec_with("  include: [orders]", "  include: [items]")).unwrap();
        assert_ne!(retabled.fingerprint(), fingerprint);
    }

    #[test]
    fn fingerprint_follows_where_the_env_var_points_but_not_its_password() {
        let yaml = spec_with("  path: src.db", "  url_env: SRC_URL");
        let first = parse(&yaml).unwrap();
        let mut env = test_env();
        let original = env["SRC_URL"].clone();
        // Another password for the same database: the same job.
        let at = original.rfind('@').unwrap();
        let scheme_end = original.find("://").unwrap() + 3;
        let user = original[scheme_end..at]
            .split(':')
            .next()
            .unwrap()
            .to_owned();
        let same_database = format!(
            "{}{user}:another@{}",
            &original[..scheme_end],
            &original[at + 1..]
        );
        env.insert("SRC_URL".to_owned(), same_database);
        assert_eq!(
            first.fingerprint(),
            parse_with_env(&yaml, &env).unwrap().fingerprint()
        );
        // Another database: another job, and the state file refuses to resume it.
        env.insert(
            "SRC_URL".to_owned(),
            "postgres://bob:other@db/src".to_owned(),
        );
        assert_ne!(
            first.fingerprint(),
            parse_with_env(&yaml, &env).unwrap().fingerprint()
        );
        assert!(!format!("{:?}", first.fingerprint()).contains("other"));
    }
}
