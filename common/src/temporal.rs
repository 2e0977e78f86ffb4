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

fn format_year(year: i64) -> String {
    if (0..=9999).contains(&year) {
        format!("{year:04}")
    } else {
        format!("{year:+05}")
    }
}

/// `YYYY-MM-DD` for days since 1970-01-01.
pub fn format_date(days: i64) -> String {
    let (year, month, day) = civil_from_days(days);
    format!("{}-{month:02}-{day:02}", format_year(year))
}

/// `HH:MM:SS` or `HH:MM:SS.ffffff` for microseconds since midnight.
pub fn format_time(micros: i64) -> String {
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
}

/// `YYYY-MM-DD HH:MM:SS[.ffffff]` for microseconds since 1970-01-01T00:00:00.
pub fn format_timestamp(micros: i64) -> String {
    let days = micros.div_euclid(MICROS_PER_DAY);
    let time = micros.rem_euclid(MICROS_PER_DAY);
    format!("{} {}", format_date(days), format_time(time))
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
