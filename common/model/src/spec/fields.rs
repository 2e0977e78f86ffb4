//! Reading a YAML value tree field by field. Every reader records what is wrong at the
//! field's path in [`Problems`] and returns `None`, so the caller goes on with the next
//! field and one run reports every mistake.

use serde_yaml_ng::{Mapping, Value};

use crate::duration::{self, EXPECTED_DURATION};
use crate::problems::Problems;

fn child_path(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        key.to_owned()
    } else {
        format!("{parent}.{key}")
    }
}

pub(super) fn item_path(parent: &str, index: usize) -> String {
    format!("{parent}[{index}]")
}

/// Describes a value for "found ..." in type errors.
pub(super) fn describe(value: &Value) -> String {
    match value {
        Value::Null => "null".to_owned(),
        Value::Bool(boolean) => format!("boolean {boolean}"),
        Value::Number(number) if number.is_f64() => format!("float {number}"),
        Value::Number(number) => format!("integer {number}"),
        Value::String(string) => format!("string {string:?}"),
        Value::Sequence(_) => "a list".to_owned(),
        Value::Mapping(_) => "a mapping".to_owned(),
        Value::Tagged(tagged) => format!("a value tagged {}", tagged.tag),
    }
}

/// Describes a value like [`describe`] but without the text of a string, for places where a
/// user may have pasted a connection URL with its password.
pub(super) fn describe_without_text(value: &Value) -> String {
    match value {
        Value::String(_) => "a string".to_owned(),
        other => describe(other),
    }
}

/// A mapping whose keys have been checked against the allowed ones.
pub(super) struct Fields<'a> {
    path: String,
    mapping: &'a Mapping,
}

impl<'a> Fields<'a> {
    /// Returns the field's value, or `None` when it is absent or null.
    pub(super) fn optional(&self, key: &str) -> Option<&'a Value> {
        self.mapping.get(key).filter(|value| !value.is_null())
    }

    /// Returns the field's value, reporting it as missing when absent.
    pub(super) fn required(&self, key: &str, problems: &mut Problems) -> Option<&'a Value> {
        let value_opt = self.mapping.get(key);
        if value_opt.is_none() {
            problems.push(&self.path_of(key), "missing required field");
        }
        value_opt
    }

    pub(super) fn path_of(&self, key: &str) -> String {
        child_path(&self.path, key)
    }
}

/// Checks that `value` is a mapping whose keys are all strings among `allowed`, reporting
/// keys that are recognised but not supported yet (`unsupported`: key and why) apart from
/// unknown ones. Returns `None` only when `value` is not a mapping.
pub(super) fn read_mapping<'a>(
    value: &'a Value,
    path: &str,
    allowed: &[&str],
    unsupported: &[(&str, &str)],
    problems: &mut Problems,
) -> Option<Fields<'a>> {
    let Value::Mapping(mapping) = value else {
        problems.push(
            path,
            format!("expected a mapping, found {}", describe(value)),
        );
        return None;
    };
    for key in mapping.keys() {
        let Value::String(key_name) = key else {
            problems.push(
                path,
                format!("field names must be strings, found {}", describe(key)),
            );
            continue;
        };
        if allowed.contains(&key_name.as_str()) {
            continue;
        }
        let key_path = child_path(path, key_name);
        let unsupported_reason_opt = unsupported
            .iter()
            .find(|(unsupported_key, _)| unsupported_key == key_name)
            .map(|(_, reason)| reason);
        match unsupported_reason_opt {
            Some(reason) => problems.push(
                &key_path,
                format!("not supported yet by this version of ferry; remove it ({reason})"),
            ),
            None => problems.push(
                &key_path,
                format!("unknown field; expected one of: {}", allowed.join(", ")),
            ),
        }
    }
    Some(Fields {
        path: path.to_owned(),
        mapping,
    })
}

pub(super) fn read_string<'a>(
    value: &'a Value,
    path: &str,
    problems: &mut Problems,
) -> Option<&'a str> {
    match value {
        Value::String(string) => Some(string),
        other => {
            problems.push(
                path,
                format!("expected a string, found {}", describe(other)),
            );
            None
        }
    }
}

/// Reads an integer in `1..=max`. Strings and floats are type errors, even when they look
/// like numbers, so that `"500000"` and `5e5` do not silently mean something else.
pub(super) fn read_positive_integer(
    value: &Value,
    path: &str,
    max: u64,
    problems: &mut Problems,
) -> Option<u64> {
    debug_assert!(max >= 1);
    let Value::Number(number) = value else {
        problems.push(
            path,
            format!("expected a positive integer, found {}", describe(value)),
        );
        return None;
    };
    if number.is_f64() {
        problems.push(
            path,
            format!("expected a positive integer, found {}", describe(value)),
        );
        return None;
    }
    match number.as_u64() {
        Some(0) | None => {
            problems.push(path, "must be at least 1");
            None
        }
        Some(too_large) if too_large > max => {
            problems.push(path, format!("must be at most {max}"));
            None
        }
        Some(in_range) => Some(in_range),
    }
}

pub(super) fn read_positive_u32(
    value: &Value,
    path: &str,
    max: u32,
    problems: &mut Problems,
) -> Option<u32> {
    let in_range = read_positive_integer(value, path, u64::from(max), problems)?;
    // Cannot fail after the range check; reporting keeps it free of panics all the same.
    match u32::try_from(in_range) {
        Ok(narrowed) => Some(narrowed),
        Err(_) => {
            problems.push(path, format!("must be at most {max}"));
            None
        }
    }
}

/// Reads a string that must be one of `choices` (spelling and meaning).
pub(super) fn read_choice<T: Copy>(
    value: &Value,
    path: &str,
    choices: &[(&str, T)],
    problems: &mut Problems,
) -> Option<T> {
    let chosen = read_string(value, path, problems)?;
    let found_opt = choices
        .iter()
        .find(|(spelling, _)| *spelling == chosen)
        .map(|(_, meaning)| *meaning);
    if found_opt.is_none() {
        let spellings: Vec<&str> = choices.iter().map(|(spelling, _)| *spelling).collect();
        problems.push(
            path,
            format!(
                "unknown value {chosen:?}; expected one of: {}",
                spellings.join(", ")
            ),
        );
    }
    found_opt
}

/// Reads `true` or `false`; anything else (a string "yes", a number) is a type error.
pub(super) fn read_bool(value: &Value, path: &str, problems: &mut Problems) -> Option<bool> {
    match value {
        Value::Bool(boolean) => Some(*boolean),
        other => {
            problems.push(
                path,
                format!("expected true or false, found {}", describe(other)),
            );
            None
        }
    }
}

/// Reads an integer or a float. Strings are type errors, like in [`read_positive_integer`].
pub(super) fn read_number(value: &Value, path: &str, problems: &mut Problems) -> Option<f64> {
    match value {
        Value::Number(number) => number.as_f64(),
        other => {
            problems.push(
                path,
                format!("expected a number, found {}", describe(other)),
            );
            None
        }
    }
}

/// Reads a duration written as in [`crate::duration`], in whole milliseconds. Numbers are
/// type errors: `5` could be seconds or milliseconds.
pub(super) fn read_duration_ms(value: &Value, path: &str, problems: &mut Problems) -> Option<u64> {
    let Value::String(text) = value else {
        problems.push(
            path,
            format!("expected {EXPECTED_DURATION}, found {}", describe(value)),
        );
        return None;
    };
    match duration::parse_duration_ms(text) {
        Ok(duration_ms) => Some(duration_ms),
        Err(error) => {
            problems.push(path, error.to_string());
            None
        }
    }
}
