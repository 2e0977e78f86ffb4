//! Checking a target table that exists already against the table a job writes: the same
//! columns in the same order, each of an acceptable type (the engine decides), and the
//! same primary key. Every difference is collected, so the user fixes them in one go.

use ferry_model::schema::TableName;

use crate::error::{ConnectorError, Result};

/// The differences found so far, in words.
#[derive(Debug, Default)]
pub(crate) struct Differences(Vec<String>);

impl Differences {
    /// Compares column names in order (`note` is appended to the message when they
    /// differ); when they match, `column` is asked about each position and returns the
    /// difference at that position, if any.
    pub(crate) fn columns(
        &mut self,
        wanted: &[&str],
        existing: &[&str],
        note: &str,
        mut column: impl FnMut(usize) -> Option<String>,
    ) {
        if wanted != existing {
            self.0.push(format!(
                "columns are [{}] in the source but [{}] in the target{note}",
                wanted.join(", "),
                existing.join(", ")
            ));
            return;
        }
        self.0.extend((0..wanted.len()).filter_map(&mut column));
    }

    /// Compares the primary keys.
    pub(crate) fn primary_key(&mut self, wanted: &[String], existing: &[String]) {
        if wanted != existing {
            self.0.push(format!(
                "primary key is ({}) in the source but ({}) in the target",
                wanted.join(", "),
                existing.join(", ")
            ));
        }
    }

    /// Adds a difference of the engine's own.
    pub(crate) fn push(&mut self, difference: impl Into<String>) {
        self.0.push(difference.into());
    }

    /// Ok when nothing differs; otherwise one error naming `table` and every difference.
    pub(crate) fn into_result(self, table: &TableName) -> Result<()> {
        if self.0.is_empty() {
            return Ok(());
        }
        Err(ConnectorError::SchemaMismatch {
            table: table.clone(),
            detail: format!(
                "{}; fix the target table or set `schema: recreate`",
                self.0.join("; ")
            ),
        })
    }
}

/// "column NAME is SOURCE-TYPE in the source but TARGET-TYPE in the target".
pub(crate) fn column_type_difference(name: &str, source_type: &str, target_type: &str) -> String {
    format!("column {name} is {source_type} in the source but {target_type} in the target")
}
