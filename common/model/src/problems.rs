//! Every problem found in a document a user wrote, reported at once.
//!
//! A job spec ([`crate::spec::JobSpec::parse`]), a runtime throttle change
//! ([`crate::throttle::ThrottlePolicy::validate`]) and the configuration of ferry's binaries
//! (`ferry_server::config`) are checked whole: each check records a [`Problem`] at the path
//! of the field it is about (`tables.include[1]`, `lease.ttl`, or an environment variable's
//! name) and goes on, so that one run names every mistake. [`Problems`] is that list; its
//! `Display` writes one problem per line, as `path: message`.

use std::fmt;

/// One thing wrong with a document: where, and what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Where: a field or key path such as `tables.include[1]` or `lease.ttl`, or an
    /// environment variable's name; empty when the problem is the whole document.
    pub path: String,
    /// What is wrong, lowercase, never containing a secret.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            formatter.write_str(&self.message)
        } else {
            write!(formatter, "{}: {}", self.path, self.message)
        }
    }
}

/// Every problem found in a document, in the order they were found. Returned as an error
/// only when not empty.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Problems(Vec<Problem>);

impl Problems {
    /// Returns an empty list.
    pub fn new() -> Problems {
        Problems::default()
    }

    /// Returns a list of one problem, e.g. a syntax error that stops all other checks.
    pub fn single(path: &str, message: impl Into<String>) -> Problems {
        let mut problems = Problems::new();
        problems.push(path, message);
        problems
    }

    /// Records that the field at `path` is wrong.
    pub fn push(&mut self, path: &str, message: impl Into<String>) {
        self.0.push(Problem {
            path: path.to_owned(),
            message: message.into(),
        });
    }

    /// Records the outcome of a rule about the field at `path` when it failed; returns
    /// whether it passed.
    pub fn check(&mut self, path: &str, outcome: Result<(), String>) -> bool {
        match outcome {
            Ok(()) => true,
            Err(message) => {
                self.push(path, message);
                false
            }
        }
    }

    /// Returns whether nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Returns how many problems were recorded.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Returns the problems in the order they were recorded.
    pub fn iter(&self) -> std::slice::Iter<'_, Problem> {
        self.0.iter()
    }

    /// Returns the paths of the problems, in order (for tests and summaries).
    pub fn paths(&self) -> Vec<&str> {
        self.0.iter().map(|problem| problem.path.as_str()).collect()
    }

    /// Returns each problem as one `path: message` line, for APIs that carry plain text.
    pub fn to_lines(&self) -> Vec<String> {
        self.0.iter().map(ToString::to_string).collect()
    }

    /// `Ok` when nothing was recorded, otherwise every problem as the error.
    pub fn into_result(self) -> Result<(), Problems> {
        if self.is_empty() { Ok(()) } else { Err(self) }
    }
}

impl fmt::Display for Problems {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (index, problem) in self.0.iter().enumerate() {
            if index > 0 {
                formatter.write_str("\n")?;
            }
            write!(formatter, "{problem}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Problems {}

impl IntoIterator for Problems {
    type Item = Problem;
    type IntoIter = std::vec::IntoIter<Problem>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.into_iter()
    }
}

impl<'a> IntoIterator for &'a Problems {
    type Item = &'a Problem;
    type IntoIter = std::slice::Iter<'a, Problem>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn problems_display_one_per_line_with_their_paths() {
        let mut problems = Problems::single("", "whole document");
        problems.push("name", "missing required field");
        assert_eq!(
            problems.to_string(),
            "whole document\nname: missing required field"
        );
        assert_eq!(problems.paths(), ["", "name"]);
        assert_eq!(
            problems.to_lines(),
            ["whole document", "name: missing required field"]
        );
    }

    #[test]
    fn check_records_only_failed_rules() {
        let mut problems = Problems::new();
        assert!(problems.check("slots", Ok(())));
        assert_eq!(problems.clone().into_result(), Ok(()));
        assert!(!problems.check("slots", Err("must be at least 1".to_owned())));
        assert_eq!(problems.len(), 1);
        let Err(all) = problems.into_result() else {
            panic!("a failed rule is an error");
        };
        assert_eq!(all.to_string(), "slots: must be at least 1");
    }
}
