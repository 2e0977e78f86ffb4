//! PostgreSQL binary formats ferry decodes and encodes itself (`numeric`, dates and
//! times, `timetz`, `interval`, `uuid`), and the text forms their carriers use.
//!
//! References: `src/backend/utils/adt/numeric.c` (`numeric_send`/`numeric_recv`),
//! `date.c`, `timestamp.c` and `uuid.c` of PostgreSQL.

use std::fmt::Write as _;

/// Days from 1970-01-01 to PostgreSQL's epoch, 2000-01-01.
pub const PG_EPOCH_DAYS: i64 = 10_957;
/// Microseconds from 1970-01-01 to PostgreSQL's epoch, 2000-01-01.
pub const PG_EPOCH_MICROS: i64 = PG_EPOCH_DAYS * MICROS_PER_DAY;
/// Microseconds in a day.
pub const MICROS_PER_DAY: i64 = 86_400_000_000;

const NUMERIC_POS: u16 = 0x0000;
const NUMERIC_NEG: u16 = 0x4000;
const NUMERIC_NAN: u16 = 0xC000;
const NUMERIC_PINF: u16 = 0xD000;
const NUMERIC_NINF: u16 = 0xF000;
const NUMERIC_MAX_DSCALE: u16 = 0x3FFF;
const NBASE: u32 = 10_000;

/// Reads a big-endian i16 at `at`; the caller has checked the length.
fn be_i16(bytes: &[u8], at: usize) -> i16 {
    i16::from_be_bytes([bytes[at], bytes[at + 1]])
}

fn be_u16(bytes: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([bytes[at], bytes[at + 1]])
}

/// Returns exactly `N` bytes of a fixed-width value, or an error naming the type.
pub fn fixed<const N: usize>(bytes: &[u8], type_name: &'static str) -> Result<[u8; N], String> {
    bytes.try_into().map_err(|_| {
        format!(
            "a {type_name} value of {} bytes (expected {N})",
            bytes.len()
        )
    })
}

/// A decoded `numeric` header and its base-10000 digits.
struct NumericParts<'a> {
    weight: i16,
    sign: u16,
    dscale: u16,
    digits: &'a [u8],
}

impl NumericParts<'_> {
    fn digit(&self, index: i64) -> u32 {
        if index < 0 {
            return 0;
        }
        let at = index as usize * 2;
        if at + 2 > self.digits.len() {
            return 0;
        }
        u32::from(be_u16(self.digits, at))
    }

    fn num_digits(&self) -> i64 {
        (self.digits.len() / 2) as i64
    }
}

fn numeric_parts(bytes: &[u8]) -> Result<NumericParts<'_>, String> {
    if bytes.len() < 8 {
        return Err(format!("a numeric value of {} bytes", bytes.len()));
    }
    let num_digits = be_i16(bytes, 0);
    let weight = be_i16(bytes, 2);
    let sign = be_u16(bytes, 4);
    let dscale = be_u16(bytes, 6);
    if num_digits < 0 || bytes.len() != 8 + 2 * num_digits as usize {
        return Err("a numeric value whose digit count does not match its length".to_string());
    }
    if !matches!(
        sign,
        NUMERIC_POS | NUMERIC_NEG | NUMERIC_NAN | NUMERIC_PINF | NUMERIC_NINF
    ) {
        return Err(format!("a numeric value with invalid sign {sign:#06x}"));
    }
    let digits = &bytes[8..];
    if digits
        .chunks_exact(2)
        .any(|pair| u32::from(be_u16(pair, 0)) >= NBASE)
    {
        return Err("a numeric value with a digit above 9999".to_string());
    }
    Ok(NumericParts {
        weight,
        sign,
        dscale: dscale & NUMERIC_MAX_DSCALE,
        digits,
    })
}

/// Renders a binary `numeric` as PostgreSQL prints it: plain notation with exactly
/// `dscale` fraction digits, `NaN`, `Infinity` or `-Infinity`.
pub fn numeric_to_text(bytes: &[u8]) -> Result<String, String> {
    let parts = numeric_parts(bytes)?;
    match parts.sign {
        NUMERIC_NAN => return Ok("NaN".to_string()),
        NUMERIC_PINF => return Ok("Infinity".to_string()),
        NUMERIC_NINF => return Ok("-Infinity".to_string()),
        _ => {}
    }
    let weight = i64::from(parts.weight);
    let mut text = String::with_capacity(8 + parts.digits.len() * 2 + usize::from(parts.dscale));
    if parts.sign == NUMERIC_NEG {
        text.push('-');
    }
    if weight < 0 {
        text.push('0');
    } else {
        for index in 0..=weight {
            let group = group_digits(parts.digit(index));
            if index == 0 {
                // The first group without its leading zeros (but one digit at least).
                let first = group.iter().take(3).take_while(|&&d| d == b'0').count();
                push_ascii(&mut text, &group[first..]);
            } else {
                push_ascii(&mut text, &group);
            }
        }
    }
    if parts.dscale > 0 {
        text.push('.');
        let mut remaining = usize::from(parts.dscale);
        let mut index = weight + 1;
        while remaining > 0 {
            let take = remaining.min(4);
            push_ascii(&mut text, &group_digits(parts.digit(index))[..take]);
            remaining -= take;
            index += 1;
        }
    }
    Ok(text)
}

/// The four decimal digits of a base-10000 digit, zero-padded.
fn group_digits(digit: u32) -> [u8; 4] {
    [
        b'0' + (digit / 1000 % 10) as u8,
        b'0' + (digit / 100 % 10) as u8,
        b'0' + (digit / 10 % 10) as u8,
        b'0' + (digit % 10) as u8,
    ]
}

fn push_ascii(text: &mut String, digits: &[u8]) {
    for &digit in digits {
        text.push(char::from(digit));
    }
}

/// Converts an integral binary `numeric` to an integer; an error for fractions, NaN,
/// infinities and values beyond `i128`.
pub fn numeric_to_i128(bytes: &[u8]) -> Result<i128, String> {
    let parts = numeric_parts(bytes)?;
    if matches!(parts.sign, NUMERIC_NAN | NUMERIC_PINF | NUMERIC_NINF) {
        return Err("a numeric NaN or infinity where an integer is carried".to_string());
    }
    let weight = i64::from(parts.weight);
    let mut value: i128 = 0;
    for index in 0..parts.num_digits() {
        let digit = i128::from(parts.digit(index));
        if index > weight {
            if digit != 0 {
                return Err("a numeric with a fraction where an integer is carried".to_string());
            }
            continue;
        }
        value = value
            .checked_mul(i128::from(NBASE))
            .and_then(|shifted| shifted.checked_add(digit))
            .ok_or_else(|| "a numeric too large for an integer".to_string())?;
    }
    // Trailing groups that the digits leave out are zeros.
    let trailing_groups = weight + 1 - parts.num_digits().min(weight + 1);
    for _ in 0..trailing_groups.max(0) {
        value = value
            .checked_mul(i128::from(NBASE))
            .ok_or_else(|| "a numeric too large for an integer".to_string())?;
    }
    Ok(if parts.sign == NUMERIC_NEG {
        -value
    } else {
        value
    })
}

fn push_numeric_header(out: &mut Vec<u8>, num_digits: i16, weight: i16, sign: u16, dscale: u16) {
    out.extend_from_slice(&num_digits.to_be_bytes());
    out.extend_from_slice(&weight.to_be_bytes());
    out.extend_from_slice(&sign.to_be_bytes());
    out.extend_from_slice(&dscale.to_be_bytes());
}

/// Encodes an integer as a binary `numeric` (scale 0).
pub fn i128_to_numeric(value: i128, out: &mut Vec<u8>) {
    if value == 0 {
        push_numeric_header(out, 0, 0, NUMERIC_POS, 0);
        return;
    }
    let sign = if value < 0 { NUMERIC_NEG } else { NUMERIC_POS };
    let mut magnitude = value.unsigned_abs();
    let mut groups: Vec<u16> = Vec::with_capacity(10);
    while magnitude > 0 {
        groups.push((magnitude % u128::from(NBASE)) as u16);
        magnitude /= u128::from(NBASE);
    }
    groups.reverse();
    let weight = groups.len() as i16 - 1;
    while groups.last() == Some(&0) {
        groups.pop();
    }
    push_numeric_header(out, groups.len() as i16, weight, sign, 0);
    for group in groups {
        out.extend_from_slice(&group.to_be_bytes());
    }
}

/// Encodes decimal text (`-12.50`, `1.5e-3`, `NaN`, `Infinity`) as a binary `numeric`,
/// keeping its display scale (`12.50` keeps two fraction digits).
pub fn text_to_numeric(text: &str, out: &mut Vec<u8>) -> Result<(), String> {
    let trimmed = text.trim();
    let is = |names: &[&str]| names.iter().any(|name| trimmed.eq_ignore_ascii_case(name));
    if is(&["nan"]) {
        push_numeric_header(out, 0, 0, NUMERIC_NAN, 0);
        return Ok(());
    }
    if is(&["infinity", "+infinity", "inf", "+inf"]) {
        push_numeric_header(out, 0, 0, NUMERIC_PINF, 0);
        return Ok(());
    }
    if is(&["-infinity", "-inf"]) {
        push_numeric_header(out, 0, 0, NUMERIC_NINF, 0);
        return Ok(());
    }
    let invalid = |reason: &str| format!("{:?} is not a decimal number: {reason}", cut(text));
    let (negative, unsigned) = match trimmed.as_bytes().first() {
        Some(b'-') => (true, &trimmed[1..]),
        Some(b'+') => (false, &trimmed[1..]),
        _ => (false, trimmed),
    };
    let (mantissa, exponent) = match unsigned.bytes().position(|b| b == b'e' || b == b'E') {
        Some(at) => {
            let exponent: i64 = unsigned[at + 1..]
                .parse()
                .map_err(|_| invalid("invalid exponent"))?;
            if exponent.abs() > 200_000 {
                return Err(invalid("exponent out of range"));
            }
            (&unsigned[..at], exponent)
        }
        None => (unsigned, 0),
    };
    let (integer_part, fraction_part) = match mantissa.bytes().position(|b| b == b'.') {
        Some(at) => (&mantissa[..at], &mantissa[at + 1..]),
        None => (mantissa, ""),
    };
    if integer_part.is_empty() && fraction_part.is_empty() {
        return Err(invalid("no digits"));
    }
    if !integer_part
        .bytes()
        .chain(fraction_part.bytes())
        .all(|b| b.is_ascii_digit())
    {
        return Err(invalid("unexpected character"));
    }
    let dscale = (fraction_part.len() as i64 - exponent).max(0);
    if dscale > i64::from(NUMERIC_MAX_DSCALE) {
        return Err(invalid("more than 16383 digits after the point"));
    }
    // All the digits, integer then fraction, as values.
    let (integer_part, fraction_part) = (integer_part.as_bytes(), fraction_part.as_bytes());
    let total = integer_part.len() + fraction_part.len();
    let digit_at = |index: usize| {
        integer_part
            .get(index)
            .or_else(|| fraction_part.get(index - integer_part.len()))
            .map_or(0, |byte| byte - b'0')
    };
    // Place of the first digit: digit i has value d × 10^(point - 1 - i).
    let mut point = integer_part.len() as i64 + exponent;
    let leading_zeros = (0..total).take_while(|&index| digit_at(index) == 0).count();
    point -= leading_zeros as i64;
    let trailing_zeros = (leading_zeros..total)
        .rev()
        .take_while(|&index| digit_at(index) == 0)
        .count();
    let significant = leading_zeros..total - trailing_zeros;
    if significant.is_empty() {
        push_numeric_header(out, 0, 0, NUMERIC_POS, dscale as u16);
        return Ok(());
    }
    let first_place = point - 1;
    let last_place = point - significant.len() as i64;
    let weight = first_place.div_euclid(4);
    let last_group = last_place.div_euclid(4);
    let num_groups = weight - last_group + 1;
    let weight_i16 = i16::try_from(weight).map_err(|_| invalid("too large"))?;
    let num_groups_i16 = i16::try_from(num_groups).map_err(|_| invalid("too many digits"))?;
    let sign = if negative { NUMERIC_NEG } else { NUMERIC_POS };
    push_numeric_header(out, num_groups_i16, weight_i16, sign, dscale as u16);
    // The groups in order, from `weight` down to `last_group`; a group with no
    // significant digit in it is zero.
    let mut group_index = 0i64;
    let mut group = 0u32;
    for (offset, index) in significant.enumerate() {
        let place = first_place - offset as i64;
        let this_group = weight - place.div_euclid(4);
        while group_index < this_group {
            out.extend_from_slice(&(group as u16).to_be_bytes());
            group = 0;
            group_index += 1;
        }
        group += u32::from(digit_at(index)) * 10u32.pow(place.rem_euclid(4) as u32);
    }
    out.extend_from_slice(&(group as u16).to_be_bytes());
    Ok(())
}

fn cut(text: &str) -> String {
    text.chars().take(64).collect()
}

/// `HH:MM:SS.ffffff` (always six fraction digits) for microseconds since midnight.
fn clock_with_micros(micros: i64) -> String {
    let seconds = micros.div_euclid(1_000_000);
    let fraction = micros.rem_euclid(1_000_000);
    format!(
        "{:02}:{:02}:{:02}.{fraction:06}",
        seconds / 3600,
        (seconds / 60) % 60,
        seconds % 60
    )
}

/// The carrier text of a `timetz`: `HH:MM:SS.ffffff+HH:MM` (`+HH:MM:SS` when the offset
/// has seconds). PostgreSQL stores the zone as seconds *west* of UTC.
pub fn format_timetz(micros: i64, zone_seconds_west: i32) -> String {
    let offset = -i64::from(zone_seconds_west);
    let sign = if offset < 0 { '-' } else { '+' };
    let magnitude = offset.unsigned_abs();
    let (hours, minutes, seconds) = (magnitude / 3600, (magnitude / 60) % 60, magnitude % 60);
    let mut text = format!("{}{sign}{hours:02}:{minutes:02}", clock_with_micros(micros));
    if seconds != 0 {
        let _ = write!(text, ":{seconds:02}");
    }
    text
}

/// Parses the carrier text of a `timetz` into `(micros, zone seconds west of UTC)`.
pub fn parse_timetz(text: &str) -> Option<(i64, i32)> {
    let split_at = text.rfind(['+', '-'])?;
    let micros = ferry_model::temporal::parse_time(&text[..split_at])?;
    let negative = text.as_bytes()[split_at] == b'-';
    let mut parts = text[split_at + 1..].split(':');
    let hours: i64 = parts.next()?.parse().ok()?;
    let minutes: i64 = parts.next().map_or(Some(0), |m| m.parse().ok())?;
    let seconds: i64 = parts.next().map_or(Some(0), |s| s.parse().ok())?;
    if parts.next().is_some() || minutes > 59 || seconds > 59 || hours > 15 {
        return None;
    }
    let offset = hours * 3600 + minutes * 60 + seconds;
    let east = if negative { -offset } else { offset };
    Some((micros, i32::try_from(-east).ok()?))
}

/// The carrier text of an `interval`: `{months} months {days} days {micros} us`.
pub fn format_interval(micros: i64, days: i32, months: i32) -> String {
    format!("{months} months {days} days {micros} us")
}

/// Parses the carrier text of an `interval` into `(micros, days, months)`.
pub fn parse_interval(text: &str) -> Option<(i64, i32, i32)> {
    let words: Vec<&str> = text.split_ascii_whitespace().collect();
    match words.as_slice() {
        [months, "months", days, "days", micros, "us"] => Some((
            micros.parse().ok()?,
            days.parse().ok()?,
            months.parse().ok()?,
        )),
        _ => None,
    }
}

/// The usual text form of a UUID: lowercase, `8-4-4-4-12`.
pub fn format_uuid(bytes: &[u8]) -> String {
    let mut text = String::with_capacity(36);
    for (index, byte) in bytes.iter().enumerate() {
        if matches!(index, 4 | 6 | 8 | 10) {
            text.push('-');
        }
        let _ = write!(text, "{byte:02x}");
    }
    text
}

/// Parses a UUID in its usual text form (hyphens optional, either case).
pub fn parse_uuid(text: &str) -> Option<[u8; 16]> {
    let hex: Vec<u8> = text.bytes().filter(|b| *b != b'-').collect();
    if hex.len() != 32 {
        return None;
    }
    let mut bytes = [0u8; 16];
    for (index, pair) in hex.chunks_exact(2).enumerate() {
        let pair = std::str::from_utf8(pair).ok()?;
        bytes[index] = u8::from_str_radix(pair, 16).ok()?;
    }
    Some(bytes)
}

/// `\x` and lowercase hex, as PostgreSQL prints `bytea` (`bytea_output = hex`).
pub fn format_bytea_hex(bytes: &[u8]) -> String {
    let mut text = String::with_capacity(2 + bytes.len() * 2);
    text.push_str("\\x");
    for byte in bytes {
        let _ = write!(text, "{byte:02x}");
    }
    text
}

/// Parses `\x`-prefixed hex back into bytes.
pub fn parse_bytea_hex(text: &str) -> Option<Vec<u8>> {
    let hex = text.strip_prefix("\\x")?;
    if hex.len() % 2 != 0 {
        return None;
    }
    hex.as_bytes()
        .chunks_exact(2)
        .map(|pair| u8::from_str_radix(std::str::from_utf8(pair).ok()?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(text: &str) -> String {
        let mut encoded = Vec::new();
        text_to_numeric(text, &mut encoded).expect("encodes");
        numeric_to_text(&encoded).expect("decodes")
    }

    #[test]
    fn numeric_text_round_trips_with_its_scale() {
        for text in [
            "0",
            "0.00",
            "1",
            "-1",
            "12345.6",
            "12.50",
            "-0.000000000000000000000000000001",
            "99999999999999999999999999999999999999999.123456789",
            "10000",
            "100000000",
            "0.0001",
            "-9999.9999",
            "NaN",
            "Infinity",
            "-Infinity",
            "18446744073709551615",
        ] {
            assert_eq!(round_trip(text), text);
        }
        assert_eq!(round_trip("1.5e3"), "1500");
        assert_eq!(round_trip("1.5e-3"), "0.0015");
        assert_eq!(round_trip("-0"), "0");
        assert_eq!(round_trip("007.10"), "7.10");
        assert!(text_to_numeric("1.2.3", &mut Vec::new()).is_err());
        assert!(text_to_numeric("", &mut Vec::new()).is_err());
    }

    #[test]
    fn numeric_layout_matches_postgresql() {
        // 12345.6 is digits [1, 2345, 6000], weight 1, dscale 1 in PostgreSQL.
        let mut encoded = Vec::new();
        text_to_numeric("12345.6", &mut encoded).unwrap();
        assert_eq!(
            encoded,
            vec![0, 3, 0, 1, 0, 0, 0, 1, 0, 1, 0x09, 0x29, 0x17, 0x70]
        );
    }

    #[test]
    fn integers_convert_both_ways() {
        for value in [
            0i128,
            1,
            -1,
            10_000,
            i128::from(u64::MAX),
            i128::from(i64::MIN),
        ] {
            let mut encoded = Vec::new();
            i128_to_numeric(value, &mut encoded);
            assert_eq!(numeric_to_i128(&encoded).unwrap(), value);
            assert_eq!(numeric_to_text(&encoded).unwrap(), value.to_string());
        }
        let mut fraction = Vec::new();
        text_to_numeric("1.5", &mut fraction).unwrap();
        assert!(numeric_to_i128(&fraction).is_err());
        let mut integral_with_scale = Vec::new();
        text_to_numeric("20.000", &mut integral_with_scale).unwrap();
        assert_eq!(numeric_to_i128(&integral_with_scale).unwrap(), 20);
    }

    #[test]
    fn timetz_and_interval_texts_round_trip() {
        let text = format_timetz(45_296_000_001, -19_800);
        assert_eq!(text, "12:34:56.000001+05:30");
        assert_eq!(parse_timetz(&text), Some((45_296_000_001, -19_800)));
        assert_eq!(format_timetz(0, 3600), "00:00:00.000000-01:00");
        assert_eq!(parse_timetz("00:00:00-01:00"), Some((0, 3600)));
        assert_eq!(
            parse_timetz(&format_timetz(1, -(5 * 3600 + 30 * 60 + 15))),
            Some((1, -(5 * 3600 + 30 * 60 + 15)))
        );
        let interval = format_interval(-1, 2, -3);
        assert_eq!(interval, "-3 months 2 days -1 us");
        assert_eq!(parse_interval(&interval), Some((-1, 2, -3)));
    }

    #[test]
    fn uuid_and_bytea_texts_round_trip() {
        let bytes: Vec<u8> = (0..16).collect();
        let text = format_uuid(&bytes);
        assert_eq!(text, "00010203-0405-0607-0809-0a0b0c0d0e0f");
        assert_eq!(parse_uuid(&text).unwrap().to_vec(), bytes);
        assert_eq!(format_bytea_hex(&[0, 255]), "\\x00ff");
        assert_eq!(parse_bytea_hex("\\x00ff"), Some(vec![0, 255]));
    }
}
