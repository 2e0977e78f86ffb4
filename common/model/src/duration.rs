//! The one way durations are written, in job specs (`throttle.load.interval: 5s`) and in
//! the configuration of ferry's binaries (`ttl = "10s"`, `FERRY_WORKER__LEASE__TTL=10s`).
//!
//! A duration is one or more parts, each a number and a unit, optionally separated by
//! spaces: `500ms`, `10s`, `1m30s`, `1m 30s`, `1 min 30 secs`, `1.5h`. Units:
//!
//! | unit | also written |
//! |---|---|
//! | `ns` | `nsec`, `nanos` |
//! | `us` | `µs`, `usec` |
//! | `ms` | `msec`, `msecs`, `millis` |
//! | `s` | `sec`, `secs`, `second`, `seconds` |
//! | `m` | `min`, `mins`, `minute`, `minutes` |
//! | `h` | `hr`, `hrs`, `hour`, `hours` |
//! | `d` | `day`, `days` |
//! | `w` | `wk`, `wks`, `week`, `weeks` |
//! | `M` (30.44 days) | `month`, `months` |
//! | `y` (365.25 days) | `yr`, `yrs`, `year`, `years` |
//!
//! A number may have a fraction (`1.5h`, `0.25s`) as long as the result is a whole number
//! of nanoseconds. A bare `0` is zero; any other number without a unit is refused, since
//! its unit would be a guess. This is the union of what specs (ferry's own parser) and
//! configuration files (humantime) accepted before they shared this parser, so no file
//! that was valid then is refused now.

use std::time::Duration;

/// What a type error says is expected, in specs and configuration alike.
pub const EXPECTED_DURATION: &str = "a duration such as \"5s\" or \"500ms\"";

/// The accepted forms, appended to every syntax error.
const ACCEPTED_FORMS: &str = "write a number and a unit (ns, us, ms, s, m, h, d, w or their \
                              long names), such as 500ms, 10s, 1.5h or 1m 30s";

const NANOS_PER_SECOND: u128 = 1_000_000_000;
const NANOS_PER_MILLI: u32 = 1_000_000;

/// A duration could not be read: the text as given and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid duration {text:?}: {reason}")]
pub struct DurationError {
    /// The value as given.
    pub text: String,
    /// What is wrong with it, with the accepted forms when the syntax is at fault.
    pub reason: String,
}

/// Reads a duration written as described in the [module documentation](self).
///
/// # Errors
/// [`DurationError`] when the text is empty, a number lacks its unit, a unit is unknown,
/// a fraction is finer than a nanosecond, or the total does not fit in a [`Duration`].
pub fn parse_duration(text: &str) -> Result<Duration, DurationError> {
    let invalid = |reason: String| DurationError {
        text: text.to_owned(),
        reason,
    };
    let mut rest = text.trim();
    if rest.is_empty() {
        return Err(invalid(format!("empty; {ACCEPTED_FORMS}")));
    }
    // Zero is zero in every unit: the one number that needs none.
    if rest == "0" {
        return Ok(Duration::ZERO);
    }
    let mut total_nanos: u128 = 0;
    while !rest.is_empty() {
        let Some(amount) = Amount::split_from(rest) else {
            return Err(invalid(format!(
                "expected a number at {rest:?}; {ACCEPTED_FORMS}"
            )));
        };
        let after_amount = rest[amount.text.len()..].trim_start();
        let unit_len: usize = after_amount
            .chars()
            .take_while(|c| c.is_ascii_alphabetic() || *c == 'µ')
            .map(char::len_utf8)
            .sum();
        let (unit, after_unit) = after_amount.split_at(unit_len);
        if unit.is_empty() {
            return Err(invalid(format!(
                "missing unit after {}; {ACCEPTED_FORMS}",
                amount.text
            )));
        }
        let Some(unit_nanos) = nanos_per_unit(unit) else {
            return Err(invalid(format!("unknown unit {unit:?}; {ACCEPTED_FORMS}")));
        };
        let part_nanos = amount.times(unit_nanos).map_err(invalid)?;
        total_nanos = total_nanos
            .checked_add(part_nanos)
            .ok_or_else(|| invalid("too large".to_owned()))?;
        rest = after_unit.trim_start();
    }
    let seconds = u64::try_from(total_nanos / NANOS_PER_SECOND)
        .map_err(|_| invalid("too large".to_owned()))?;
    // Below one second: always fits.
    let subsec_nanos = (total_nanos % NANOS_PER_SECOND) as u32;
    Ok(Duration::new(seconds, subsec_nanos))
}

/// Reads a duration like [`parse_duration`] into whole milliseconds, for the spec's
/// fields, which are stored as milliseconds.
///
/// # Errors
/// [`DurationError`] as [`parse_duration`], and when the duration is finer than a
/// millisecond (`1500us`) or does not fit in a `u64` of milliseconds.
pub fn parse_duration_ms(text: &str) -> Result<u64, DurationError> {
    let duration = parse_duration(text)?;
    let invalid = |reason: &str| DurationError {
        text: text.to_owned(),
        reason: reason.to_owned(),
    };
    if duration.subsec_nanos() % NANOS_PER_MILLI != 0 {
        return Err(invalid(
            "finer than a millisecond, the finest this field takes",
        ));
    }
    u64::try_from(duration.as_millis()).map_err(|_| invalid("too large"))
}

/// Writes a duration in the shortest form [`parse_duration`] reads back, largest unit
/// first, parts separated by a space: `10m`, `1m 30s`, `2s 500ms`, `0s`. Hours are the
/// largest unit (`48h`), so every unit written is exact.
pub fn format_duration(duration: Duration) -> String {
    if duration.is_zero() {
        return "0s".to_owned();
    }
    let seconds = duration.as_secs();
    let nanos = duration.subsec_nanos();
    let parts = [
        (seconds / 3_600, "h"),
        (seconds / 60 % 60, "m"),
        (seconds % 60, "s"),
        (u64::from(nanos / 1_000_000), "ms"),
        (u64::from(nanos / 1_000 % 1_000), "us"),
        (u64::from(nanos % 1_000), "ns"),
    ];
    parts
        .iter()
        .filter(|(amount, _)| *amount > 0)
        .map(|(amount, unit)| format!("{amount}{unit}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// [`format_duration`] of a number of milliseconds, as the spec stores them.
pub fn format_duration_ms(duration_ms: u64) -> String {
    format_duration(Duration::from_millis(duration_ms))
}

fn nanos_per_unit(unit: &str) -> Option<u128> {
    let nanos = match unit {
        "ns" | "nsec" | "nanos" => 1,
        "us" | "µs" | "usec" => 1_000,
        "ms" | "msec" | "msecs" | "millis" => 1_000_000,
        "s" | "sec" | "secs" | "second" | "seconds" => NANOS_PER_SECOND,
        "m" | "min" | "mins" | "minute" | "minutes" => 60 * NANOS_PER_SECOND,
        "h" | "hr" | "hrs" | "hour" | "hours" => 3_600 * NANOS_PER_SECOND,
        "d" | "day" | "days" => 86_400 * NANOS_PER_SECOND,
        "w" | "wk" | "wks" | "week" | "weeks" => 7 * 86_400 * NANOS_PER_SECOND,
        // humantime's lengths, kept so that configuration files written for it still mean
        // the same: 30.44 days and 365.25 days.
        "M" | "month" | "months" => 2_630_016 * NANOS_PER_SECOND,
        "y" | "yr" | "yrs" | "year" | "years" => 31_557_600 * NANOS_PER_SECOND,
        _ => return None,
    };
    Some(nanos)
}

/// The number of one part: digits, optionally a `.` and more digits.
struct Amount<'a> {
    /// The number as written.
    text: &'a str,
    whole_digits: &'a str,
    fraction_digits: &'a str,
}

impl<'a> Amount<'a> {
    /// Splits the number off the start of `text`; `None` when it does not start with a
    /// digit, or a `.` is not followed by one.
    fn split_from(text: &'a str) -> Option<Amount<'a>> {
        let whole_len = text.bytes().take_while(u8::is_ascii_digit).count();
        if whole_len == 0 {
            return None;
        }
        let whole_digits = &text[..whole_len];
        let Some(after_point) = text[whole_len..].strip_prefix('.') else {
            return Some(Amount {
                text: whole_digits,
                whole_digits,
                fraction_digits: "",
            });
        };
        let fraction_len = after_point.bytes().take_while(u8::is_ascii_digit).count();
        if fraction_len == 0 {
            return None;
        }
        Some(Amount {
            text: &text[..whole_len + 1 + fraction_len],
            whole_digits,
            fraction_digits: &after_point[..fraction_len],
        })
    }

    /// Returns this amount of a unit of `unit_nanos`, in nanoseconds; the error is the
    /// reason to report.
    fn times(&self, unit_nanos: u128) -> Result<u128, String> {
        let too_large = || "too large".to_owned();
        let whole: u128 = self.whole_digits.parse().map_err(|_| too_large())?;
        let whole_nanos = whole.checked_mul(unit_nanos).ok_or_else(too_large)?;
        if self.fraction_digits.is_empty() {
            return Ok(whole_nanos);
        }
        let numerator: u128 = self.fraction_digits.parse().map_err(|_| too_large())?;
        let exponent = u32::try_from(self.fraction_digits.len()).map_err(|_| too_large())?;
        let denominator = 10_u128.checked_pow(exponent).ok_or_else(too_large)?;
        let scaled = numerator.checked_mul(unit_nanos).ok_or_else(too_large)?;
        if scaled % denominator != 0 {
            return Err(format!("{} is finer than a nanosecond", self.text));
        }
        whole_nanos
            .checked_add(scaled / denominator)
            .ok_or_else(too_large)
    }
}

/// Serde for a [`Duration`] written as text in the syntax of this module:
/// `#[serde(with = "ferry_model::duration::as_text")]`. Numbers are refused, like any
/// other value that is not a string.
pub mod as_text {
    use std::time::Duration;

    use serde::{Deserializer, Serializer, de};

    /// Writes the duration as [`super::format_duration`] does: `10s`, `1m 30s`.
    pub fn serialize<S: Serializer>(value: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&super::format_duration(*value))
    }

    /// Reads a duration string with [`super::parse_duration`].
    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
        deserializer.deserialize_str(DurationVisitor)
    }

    struct DurationVisitor;

    impl de::Visitor<'_> for DurationVisitor {
        type Value = Duration;

        fn expecting(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            formatter.write_str(super::EXPECTED_DURATION)
        }

        fn visit_str<E: de::Error>(self, text: &str) -> Result<Duration, E> {
            super::parse_duration(text).map_err(E::custom)
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "a test fails loudly on any error")]
mod tests {
    use super::*;

    fn reason_of(text: &str) -> String {
        match parse_duration(text) {
            Err(DurationError { reason, .. }) => reason,
            other => panic!("expected an invalid duration for {text:?}, got {other:?}"),
        }
    }

    #[test]
    fn the_spec_forms_parse() {
        let cases = [
            ("500ms", 500),
            ("5s", 5_000),
            ("2m", 120_000),
            ("1h", 3_600_000),
            ("1m30s", 90_000),
            ("1m 30s", 90_000),
            ("1s500ms", 1_500),
            ("5 seconds", 5_000),
            ("1 min 30 secs", 90_000),
            ("2 hours", 7_200_000),
            ("3 msecs", 3),
            ("0s", 0),
        ];
        for (text, millis) in cases {
            assert_eq!(parse_duration_ms(text).unwrap(), millis, "{text}");
        }
    }

    #[test]
    fn the_humantime_forms_of_configuration_files_parse() {
        let spaces_and_fractions = [
            (" 1h 30m ", Duration::from_secs(5_400)),
            ("2h 37min", Duration::from_secs(9_420)),
            ("4.2s", Duration::from_millis(4_200)),
            ("1.5h", Duration::from_secs(5_400)),
        ];
        let below_a_millisecond = [
            ("7us", Duration::from_micros(7)),
            ("7µs", Duration::from_micros(7)),
            ("15ns", Duration::from_nanos(15)),
        ];
        let above_an_hour = [
            ("2 days", Duration::from_secs(172_800)),
            ("1w", Duration::from_secs(604_800)),
            ("1M", Duration::from_secs(2_630_016)),
            ("1y", Duration::from_secs(31_557_600)),
        ];
        let cases = spaces_and_fractions
            .into_iter()
            .chain(below_a_millisecond)
            .chain(above_an_hour)
            .chain([("0", Duration::ZERO)]);
        for (text, expected) in cases {
            assert_eq!(parse_duration(text), Ok(expected), "{text}");
        }
    }

    #[test]
    fn durations_format_and_parse_back() {
        for duration in [
            Duration::ZERO,
            Duration::from_millis(500),
            Duration::from_secs(90),
            Duration::from_secs(600),
            Duration::from_millis(3_723_004),
            Duration::new(172_800, 1_002_003),
        ] {
            assert_eq!(parse_duration(&format_duration(duration)), Ok(duration));
        }
        assert_eq!(format_duration(Duration::from_secs(600)), "10m");
        assert_eq!(format_duration(Duration::from_secs(60)), "1m");
        assert_eq!(format_duration_ms(1_500), "1s 500ms");
        assert_eq!(format_duration(Duration::from_secs(172_800)), "48h");
    }

    #[test]
    fn bad_durations_name_the_problem_and_the_accepted_forms() {
        assert_eq!(
            reason_of("5"),
            format!("missing unit after 5; {ACCEPTED_FORMS}")
        );
        assert_eq!(
            reason_of("5 parsecs"),
            format!("unknown unit \"parsecs\"; {ACCEPTED_FORMS}")
        );
        assert!(reason_of("").starts_with("empty; write a number and a unit"));
        assert!(reason_of("s").starts_with("expected a number at \"s\""));
        assert!(reason_of("-5s").starts_with("expected a number"));
        assert!(reason_of("1.s").starts_with("expected a number"));
        assert!(reason_of("1 0s").starts_with("missing unit after 1"));
        assert_eq!(reason_of("0.5ns"), "0.5 is finer than a nanosecond");
        assert_eq!(
            reason_of("99999999999999999999999999999999999999999h"),
            "too large"
        );
        assert_eq!(reason_of("9999999999999999999h"), "too large");
        let error = parse_duration("ten seconds").unwrap_err();
        assert!(
            error
                .to_string()
                .starts_with("invalid duration \"ten seconds\": expected a number"),
            "{error}"
        );
    }

    #[test]
    fn spec_fields_take_whole_milliseconds() {
        assert_eq!(parse_duration_ms("1.5s"), Ok(1_500));
        assert_eq!(
            parse_duration_ms("1500us").unwrap_err().reason,
            "finer than a millisecond, the finest this field takes"
        );
        assert_eq!(
            parse_duration_ms("9999999999999999h").unwrap_err().reason,
            "too large"
        );
    }

    #[test]
    fn serde_reads_text_and_refuses_numbers() {
        #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
        struct Timing {
            #[serde(with = "as_text")]
            ttl: Duration,
        }
        let read: Timing = serde_json::from_str("{\"ttl\": \"1m 30s\"}").unwrap();
        assert_eq!(read.ttl, Duration::from_secs(90));
        assert_eq!(
            serde_json::to_string(&read).unwrap(),
            "{\"ttl\":\"1m 30s\"}"
        );
        let number = serde_json::from_str::<Timing>("{\"ttl\": 10}").unwrap_err();
        assert!(number.to_string().contains(EXPECTED_DURATION), "{number}");
        let unit = serde_json::from_str::<Timing>("{\"ttl\": \"10 parsecs\"}").unwrap_err();
        assert!(
            unit.to_string().contains("invalid duration \"10 parsecs\""),
            "{unit}"
        );
    }
}
