//! Calendar arithmetic and the ISO text forms ferry uses when an engine stores dates and
//! times as text (SQLite): `YYYY-MM-DD`, `HH:MM:SS.ffffff`, `YYYY-MM-DD HH:MM:SS.ffffff`
//! and, for instants, the same followed by `Z`. Proleptic Gregorian calendar; years
//! outside 0..=9999 are written with a sign and as many digits as they need.

const MICROS_PER_SECOND: i64 = 1_000_000;
const MICROS_PER_DAY: i64 = 86_400 * MICROS_PER_SECOND;

/// Converts days since 1970-01-01 to `(year, month, day)` (H. Hinnant's algorithm).
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let shifted_month = (5 * day_of_year + 2) / 153;
    let day = (day_of_year - (153 * shifted_month + 2) / 5 + 1) as u32;
    let month = if shifted_month < 10 {
        shifted_month + 3
    } else {
        shifted_month - 9
    } as u32;
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// Converts `(year, month, day)` to days since 1970-01-01; `None` for an impossible date.
pub fn days_from_civil(year: i64, month: u32, day: u32) -> Option<i64> {
    if !(1..=12).contains(&month) || day == 0 || day > days_in_month(year, month) {
        return None;
    }
    let shifted_year = if month <= 2 { year - 1 } else { year };
    let era = shifted_year.div_euclid(400);
    let year_of_era = shifted_year.rem_euclid(400);
    let shifted_month = i64::from(if month > 2 { month - 3 } else { month + 9 });
    let day_of_year = (153 * shifted_month + 2) / 5 + i64::from(day) - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    Some(era * 146_097 + day_of_era - 719_468)
}

fn days_in_month(year: i64, month: u32) -> u32 {
    match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ if (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 => 29,
        _ => 28,
    }
}

/// Appends `value`'s last `width` decimal digits, zero-padded.
fn push_digits(out: &mut Vec<u8>, value: u64, width: usize) {
    let start = out.len();
    out.resize(start + width, b'0');
    let mut rest = value;
    for slot in out[start..].iter_mut().rev() {
        *slot = b'0' + (rest % 10) as u8;
        rest /= 10;
    }
}

/// Appends [`format_date`]`(days)` to `out`.
pub fn push_date(days: i64, out: &mut Vec<u8>) {
    let (year, month, day) = civil_from_days(days);
    if (0..=9999).contains(&year) {
        push_digits(out, year.unsigned_abs(), 4);
    } else {
        use std::io::Write as _;
        // Writing to a Vec cannot fail.
        let _ = write!(out, "{year:+05}");
    }
    out.push(b'-');
    push_digits(out, u64::from(month), 2);
    out.push(b'-');
    push_digits(out, u64::from(day), 2);
}

/// Appends [`format_time`]`(micros)` to `out`.
pub fn push_time(micros: i64, out: &mut Vec<u8>) {
    let seconds = micros.div_euclid(MICROS_PER_SECOND);
    let fraction = micros.rem_euclid(MICROS_PER_SECOND);
    if !(0..100 * 3600).contains(&seconds) {
        // Not a time of day (hours are not wrapped): as `format!` prints it.
        use std::io::Write as _;
        // Writing to a Vec cannot fail.
        let _ = write!(
            out,
            "{:02}:{:02}:{:02}",
            seconds / 3600,
            (seconds / 60) % 60,
            seconds % 60
        );
        if fraction != 0 {
            let _ = write!(out, ".{fraction:06}");
        }
        return;
    }
    let seconds = seconds.unsigned_abs();
    push_digits(out, seconds / 3600, 2);
    out.push(b':');
    push_digits(out, (seconds / 60) % 60, 2);
    out.push(b':');
    push_digits(out, seconds % 60, 2);
    if fraction != 0 {
        out.push(b'.');
        push_digits(out, fraction.unsigned_abs(), 6);
    }
}

/// Appends [`format_timestamp`]`(micros)` to `out`.
pub fn push_timestamp(micros: i64, out: &mut Vec<u8>) {
    push_date(micros.div_euclid(MICROS_PER_DAY), out);
    out.push(b' ');
    push_time(micros.rem_euclid(MICROS_PER_DAY), out);
}

/// The ASCII text a `push_*` function appends.
fn text_of(push: impl FnOnce(&mut Vec<u8>)) -> String {
    let mut out = Vec::with_capacity(26);
    push(&mut out);
    String::from_utf8(out).unwrap_or_default()
}

/// `YYYY-MM-DD` for days since 1970-01-01.
pub fn format_date(days: i64) -> String {
    text_of(|out| push_date(days, out))
}

/// `HH:MM:SS` or `HH:MM:SS.ffffff` for microseconds since midnight.
pub fn format_time(micros: i64) -> String {
    text_of(|out| push_time(micros, out))
}

/// `YYYY-MM-DD HH:MM:SS[.ffffff]` for microseconds since 1970-01-01T00:00:00.
pub fn format_timestamp(micros: i64) -> String {
    text_of(|out| push_timestamp(micros, out))
}

/// Parses `YYYY-MM-DD` (optionally signed year) into days since 1970-01-01.
pub fn parse_date(text: &str) -> Option<i64> {
    let (negative, body) = match text.as_bytes().first()? {
        b'-' => (true, &text[1..]),
        b'+' => (false, &text[1..]),
        _ => (false, text),
    };
    let mut parts = body.splitn(3, '-');
    let year: i64 = parts.next()?.parse().ok()?;
    let month: u32 = parts.next()?.parse().ok()?;
    let day: u32 = parts.next()?.parse().ok()?;
    days_from_civil(if negative { -year } else { year }, month, day)
}

/// Parses `HH:MM:SS[.f{1,6}]` into microseconds since midnight (24:00:00 allowed).
pub fn parse_time(text: &str) -> Option<i64> {
    let (clock, fraction) = text.split_once('.').unwrap_or((text, ""));
    let mut parts = clock.splitn(3, ':');
    let hours: i64 = parts.next()?.parse().ok()?;
    let minutes: i64 = parts.next()?.parse().ok()?;
    let seconds: i64 = parts.next()?.parse().ok()?;
    if fraction.len() > 6 || !fraction.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    if minutes > 59 || seconds > 59 || hours > 24 {
        return None;
    }
    let micros = if fraction.is_empty() {
        0
    } else {
        format!("{fraction:0<6}").parse::<i64>().ok()?
    };
    Some(((hours * 60 + minutes) * 60 + seconds) * MICROS_PER_SECOND + micros)
}

/// Parses `YYYY-MM-DD[ T]HH:MM:SS[.ffffff][Z]` into microseconds since the epoch.
pub fn parse_timestamp(text: &str) -> Option<i64> {
    let text = text.strip_suffix('Z').unwrap_or(text);
    let split_at = text.rfind([' ', 'T'])?;
    let days = parse_date(&text[..split_at])?;
    let time = parse_time(&text[split_at + 1..])?;
    days.checked_mul(MICROS_PER_DAY)?.checked_add(time)
}

#[cfg(test)]
mod tests {
    #[test]
    fn text_forms_match_format() {
        let date = |days: i64| {
            let (year, month, day) = civil_from_days(days);
            let year = if (0..=9999).contains(&year) {
                format!("{year:04}")
            } else {
                format!("{year:+05}")
            };
            format!("{year}-{month:02}-{day:02}")
        };
        let time = |micros: i64| {
            let seconds = micros.div_euclid(MICROS_PER_SECOND);
            let fraction = micros.rem_euclid(MICROS_PER_SECOND);
            let text = format!(
                "{:02}:{:02}:{:02}",
                seconds / 3600,
                (seconds / 60) % 60,
                seconds % 60
            );
            if fraction == 0 {
                text
            } else {
                format!("{text}.{fraction:06}")
            }
        };
        for days in [
            i64::from(i32::MIN),
            -719_529,
            -719_528,
            -1,
            0,
            1,
            18_000,
            2_932_896,
            2_932_897,
            i64::from(i32::MAX),
        ] {
            assert_eq!(format_date(days), date(days), "{days}");
        }
        for micros in [
            -1,
            0,
            1,
            999_999,
            1_000_000,
            MICROS_PER_DAY - 1,
            MICROS_PER_DAY,
            100 * 3600 * MICROS_PER_SECOND,
            i64::MAX,
            i64::MIN,
        ] {
            assert_eq!(format_time(micros), time(micros), "{micros}");
        }
        for micros in [i64::MIN / 2, -1, 0, 1_700_000_000_123_456, i64::MAX / 2] {
            let days = micros.div_euclid(MICROS_PER_DAY);
            let rest = micros.rem_euclid(MICROS_PER_DAY);
            assert_eq!(
                format_timestamp(micros),
                format!("{} {}", date(days), time(rest))
            );
        }
    }

    use super::*;

    #[test]
    fn round_trips_across_the_calendar() {
        for days in [
            -719_528, -1, 0, 1, 10_957, 24_855, 2_932_896, -800_000, 3_000_000,
        ] {
            let text = format_date(days);
            assert_eq!(parse_date(&text), Some(days), "{text}");
        }
        assert_eq!(format_date(0), "1970-01-01");
        assert_eq!(format_date(-1), "1969-12-31");
        assert_eq!(format_date(24_855), "2038-01-19");
        assert_eq!(days_from_civil(2024, 2, 30), None);
        for micros in [
            0,
            1,
            86_399_999_999,
            -1,
            -62_135_596_800_000_000,
            253_402_300_799_999_999,
        ] {
            let text = format_timestamp(micros);
            assert_eq!(parse_timestamp(&text), Some(micros), "{text}");
        }
        assert_eq!(format_timestamp(1_500_000), "1970-01-01 00:00:01.500000");
        assert_eq!(parse_time("12:34:56.5"), Some(45_296_500_000));
        assert_eq!(
            parse_timestamp("2026-03-01T12:34:56Z"),
            parse_timestamp("2026-03-01 12:34:56")
        );
    }
}
