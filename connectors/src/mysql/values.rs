//! Pure conversions between MySQL's binary-protocol values and ferry's carriers, and the
//! text forms ferry writes MySQL values in.

use ferry_model::temporal::days_from_civil;

const MICROS_PER_SECOND: i64 = 1_000_000;
const MICROS_PER_DAY: i64 = 86_400 * MICROS_PER_SECOND;

/// The canonical text of a decimal (see [`ferry_model::decimal`]); `None` when `text` is
/// not a decimal.
pub fn canonical_decimal(text: &str) -> Option<String> {
    ferry_model::decimal::normalize(text).ok()
}

/// `YYYY-MM-DD` from MySQL date parts.
pub fn format_date(year: u16, month: u8, day: u8) -> String {
    format!("{year:04}-{month:02}-{day:02}")
}

/// `YYYY-MM-DD HH:MM:SS.ffffff` from MySQL datetime parts.
pub fn format_datetime(
    year: u16,
    month: u8,
    day: u8,
    hour: u8,
    minute: u8,
    second: u8,
    micros: u32,
) -> String {
    format!("{year:04}-{month:02}-{day:02} {hour:02}:{minute:02}:{second:02}.{micros:06}")
}

/// `[-]HH:MM:SS.ffffff` from MySQL time parts (hours may exceed 24).
pub fn format_time_of_day_or_span(
    negative: bool,
    days: u32,
    hours: u8,
    minutes: u8,
    seconds: u8,
    micros: u32,
) -> String {
    let total_hours = u64::from(days) * 24 + u64::from(hours);
    format!(
        "{}{total_hours:02}:{minutes:02}:{seconds:02}.{micros:06}",
        if negative { "-" } else { "" }
    )
}

/// Whether MySQL date parts are a zero date or a date with a zero part (`0000-00-00`,
/// `2024-00-10`), which no calendar holds.
/// Year 0 alone is a real (proleptic) year, so only month and day decide.
pub fn is_zero_date(month: u8, day: u8) -> bool {
    month == 0 || day == 0
}

/// Days since 1970-01-01 of a date; `None` for an impossible date.
pub fn days_of(year: u16, month: u8, day: u8) -> Option<i32> {
    let days = days_from_civil(i64::from(year), u32::from(month), u32::from(day))?;
    i32::try_from(days).ok()
}

/// Microseconds since 1970-01-01T00:00:00 of a datetime; `None` when impossible.
pub fn micros_of(
    year: u16,
    month: u8,
    day: u8,
    hour: u8,
    minute: u8,
    second: u8,
    micros: u32,
) -> Option<i64> {
    if hour > 23 || minute > 59 || second > 59 || micros > 999_999 {
        return None;
    }
    let days = days_from_civil(i64::from(year), u32::from(month), u32::from(day))?;
    let time = (i64::from(hour) * 3600 + i64::from(minute) * 60 + i64::from(second))
        * MICROS_PER_SECOND
        + i64::from(micros);
    days.checked_mul(MICROS_PER_DAY)?.checked_add(time)
}

/// Microseconds since midnight of a MySQL TIME, when it is a time of day
/// (`00:00:00` to `23:59:59.999999`); `None` for negative values or spans of a day or more.
pub fn time_of_day_micros(
    negative: bool,
    days: u32,
    hours: u8,
    minutes: u8,
    seconds: u8,
    micros: u32,
) -> Option<i64> {
    let is_zero = days == 0 && hours == 0 && minutes == 0 && seconds == 0 && micros == 0;
    if (negative && !is_zero) || days > 0 || hours > 23 || minutes > 59 || seconds > 59 {
        return None;
    }
    Some(
        (i64::from(hours) * 3600 + i64::from(minutes) * 60 + i64::from(seconds))
            * MICROS_PER_SECOND
            + i64::from(micros),
    )
}

/// A big-endian bit string (MySQL `BIT(n)`) as an integer; `None` above 64 bits.
pub fn bits_value(bytes: &[u8]) -> Option<u64> {
    let significant = bytes
        .iter()
        .position(|byte| *byte != 0)
        .map_or(&[][..], |first| &bytes[first..]);
    if significant.len() > 8 {
        return None;
    }
    let mut be = [0u8; 8];
    be[8 - significant.len()..].copy_from_slice(significant);
    Some(u64::from_be_bytes(be))
}

/// Parses a UUID in its 36-character (or 32 hex digit) text form.
pub fn parse_uuid(text: &str) -> Option<[u8; 16]> {
    let hex: Vec<u8> = text.bytes().filter(|byte| *byte != b'-').collect();
    if hex.len() != 32 || (text.len() != 32 && text.len() != 36) {
        return None;
    }
    let mut uuid = [0u8; 16];
    for (index, pair) in hex.chunks_exact(2).enumerate() {
        let high = (pair[0] as char).to_digit(16)?;
        let low = (pair[1] as char).to_digit(16)?;
        uuid[index] = (high * 16 + low) as u8;
    }
    Some(uuid)
}

/// Parses the labels of `enum('a','b''c')` or `set(...)` as `COLUMN_TYPE` shows them:
/// quotes doubled, backslash escapes as in string literals.
pub fn parse_labels(column_type: &str) -> Option<Vec<String>> {
    let open = column_type.find('(')?;
    let close = column_type.rfind(')')?;
    let inner = column_type.get(open + 1..close)?;
    let mut labels = Vec::new();
    let mut characters = inner.chars().peekable();
    loop {
        match characters.next() {
            None => break,
            Some(',') | Some(' ') => continue,
            Some('\'') => {}
            Some(_) => return None,
        }
        let mut label = String::new();
        loop {
            match characters.next()? {
                '\'' if characters.peek() == Some(&'\'') => {
                    characters.next();
                    label.push('\'');
                }
                '\'' => break,
                '\\' => label.push(match characters.next()? {
                    '0' => '\0',
                    'n' => '\n',
                    'r' => '\r',
                    't' => '\t',
                    'b' => '\u{8}',
                    'Z' => '\u{1a}',
                    other => other,
                }),
                other => label.push(other),
            }
        }
        labels.push(label);
    }
    Some(labels)
}

/// The shortest text that reads back as exactly `value` (scientific notation, which
/// MySQL parses with correct rounding); `None` for NaN and infinities, which MySQL
/// cannot store.
pub fn format_f64(value: f64) -> Option<String> {
    value.is_finite().then(|| format!("{value:e}"))
}

/// Appends the lowercase hex digits of `bytes`.
pub fn push_hex(bytes: &[u8], out: &mut Vec<u8>) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    out.reserve(bytes.len() * 2);
    for byte in bytes {
        out.push(DIGITS[usize::from(byte >> 4)]);
        out.push(DIGITS[usize::from(byte & 0x0f)]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_and_times_convert() {
        assert_eq!(days_of(1970, 1, 1), Some(0));
        assert_eq!(days_of(1969, 12, 31), Some(-1));
        assert_eq!(days_of(2024, 2, 30), None);
        assert!(is_zero_date(0, 0));
        assert!(is_zero_date(0, 10));
        assert!(!is_zero_date(1, 1));
        assert_eq!(micros_of(1970, 1, 1, 0, 0, 1, 5), Some(1_000_005));
        assert_eq!(
            time_of_day_micros(false, 0, 23, 59, 59, 999_999),
            Some(86_399_999_999)
        );
        assert_eq!(time_of_day_micros(true, 0, 1, 0, 0, 0), None);
        assert_eq!(time_of_day_micros(false, 1, 0, 0, 0, 0), None);
        assert_eq!(
            format_time_of_day_or_span(true, 1, 2, 3, 4, 5),
            "-26:03:04.000005"
        );
    }

    #[test]
    fn bits_and_uuids_parse() {
        assert_eq!(bits_value(&[0x01, 0x00]), Some(256));
        assert_eq!(bits_value(&[0xff; 8]), Some(u64::MAX));
        assert_eq!(bits_value(&[1, 0, 0, 0, 0, 0, 0, 0, 0]), None);
        assert_eq!(bits_value(&[0, 0, 0, 0, 0, 0, 0, 0, 1]), Some(1));
        let uuid = parse_uuid("123e4567-e89b-12d3-a456-426614174000").expect("valid");
        assert_eq!(uuid[0], 0x12);
        assert_eq!(uuid[15], 0x00);
        assert!(parse_uuid("123e4567").is_none());
    }

    #[test]
    fn labels_unescape_quotes_and_backslashes() {
        assert_eq!(
            parse_labels(r"enum('a','b''c','d\\e','x,y','')"),
            Some(vec![
                "a".to_string(),
                "b'c".to_string(),
                "d\\e".to_string(),
                "x,y".to_string(),
                String::new()
            ])
        );
        assert_eq!(parse_labels("set('p','q')").map(|l| l.len()), Some(2));
        assert_eq!(parse_labels("enum(a)"), None);
    }

    #[test]
    fn floats_round_trip_through_their_text() {
        for value in [
            0.0,
            -0.0,
            1.0,
            0.1,
            f64::MAX,
            f64::MIN_POSITIVE,
            5e-324,
            -1.5e-300,
            f64::from(f32::MAX),
            f64::from(0.1f32),
        ] {
            let text = format_f64(value).expect("finite");
            let parsed: f64 = text.parse().expect("parses");
            assert_eq!(parsed.to_bits(), value.to_bits(), "{text}");
        }
        assert_eq!(format_f64(f64::NAN), None);
        assert_eq!(format_f64(1e300).as_deref(), Some("1e300"));
    }
}
