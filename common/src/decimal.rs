//! Decimal values as text: the carrier of [`crate::schema::ColumnType::Decimal`].
//!
//! Engines disagree on decimal widths (MySQL `DECIMAL(65,30)`, PostgreSQL's unbounded
//! `numeric` with `NaN` and infinities), so ferry carries decimals as text and compares
//! them in one canonical form: an optional `-`, the integer digits without leading zeros
//! (`0` when there are none), and, when the fraction is not zero, `.` and the fraction
//! digits without trailing zeros. Zero is `0` (never `-0`); `NaN`, `Infinity` and
//! `-Infinity` stand for themselves. Exponents are expanded.

/// A text that is not a decimal number.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{text:?} is not a decimal number: {reason}")]
pub struct DecimalError {
    /// The offending text (cut to 64 characters).
    pub text: String,
    /// What is wrong.
    pub reason: &'static str,
}

/// Exponents beyond this are refused (PostgreSQL allows 131072 integer digits).
const MAX_EXPONENT: i64 = 140_000;

fn error(text: &str, reason: &'static str) -> DecimalError {
    DecimalError {
        text: text.chars().take(64).collect(),
        reason,
    }
}

/// Returns the canonical form of a decimal text (`"001.50"` → `"1.5"`, `"-0.0"` → `"0"`,
/// `"1.2e3"` → `"1200"`, `"nan"` → `"NaN"`).
pub fn normalize(text: &str) -> Result<String, DecimalError> {
    let trimmed = text.trim();
    match trimmed.to_ascii_lowercase().as_str() {
        "nan" => return Ok("NaN".to_string()),
        "infinity" | "+infinity" | "inf" | "+inf" => return Ok("Infinity".to_string()),
        "-infinity" | "-inf" => return Ok("-Infinity".to_string()),
        _ => {}
    }
    let (negative, unsigned) = match trimmed.as_bytes().first() {
        Some(b'-') => (true, &trimmed[1..]),
        Some(b'+') => (false, &trimmed[1..]),
        _ => (false, trimmed),
    };
    let (mantissa, exponent) = match unsigned.find(['e', 'E']) {
        Some(at) => {
            let exponent: i64 = unsigned[at + 1..]
                .parse()
                .map_err(|_| error(text, "invalid exponent"))?;
            if exponent.abs() > MAX_EXPONENT {
                return Err(error(text, "exponent out of range"));
            }
            (&unsigned[..at], exponent)
        }
        None => (unsigned, 0),
    };
    let (integer_part, fraction_part) = match mantissa.split_once('.') {
        Some((integer, fraction)) => (integer, fraction),
        None => (mantissa, ""),
    };
    if integer_part.is_empty() && fraction_part.is_empty() {
        return Err(error(text, "no digits"));
    }
    if !integer_part
        .bytes()
        .chain(fraction_part.bytes())
        .all(|b| b.is_ascii_digit())
    {
        return Err(error(text, "unexpected character"));
    }
    // All digits, and where the point sits among them.
    let digits: Vec<u8> = integer_part.bytes().chain(fraction_part.bytes()).collect();
    let point = integer_part.len() as i64 + exponent;
    let (integer_digits, fraction_digits): (String, String) = if point <= 0 {
        let zeros = "0".repeat(point.unsigned_abs() as usize);
        (
            String::new(),
            format!("{zeros}{}", String::from_utf8_lossy(&digits)),
        )
    } else if point as usize >= digits.len() {
        let zeros = "0".repeat(point as usize - digits.len());
        (
            format!("{}{zeros}", String::from_utf8_lossy(&digits)),
            String::new(),
        )
    } else {
        let (integer, fraction) = digits.split_at(point as usize);
        (
            String::from_utf8_lossy(integer).into_owned(),
            String::from_utf8_lossy(fraction).into_owned(),
        )
    };
    let integer_digits = integer_digits.trim_start_matches('0');
    let fraction_digits = fraction_digits.trim_end_matches('0');
    if integer_digits.is_empty() && fraction_digits.is_empty() {
        return Ok("0".to_string());
    }
    let mut canonical = String::with_capacity(integer_digits.len() + fraction_digits.len() + 2);
    if negative {
        canonical.push('-');
    }
    canonical.push_str(if integer_digits.is_empty() {
        "0"
    } else {
        integer_digits
    });
    if !fraction_digits.is_empty() {
        canonical.push('.');
        canonical.push_str(fraction_digits);
    }
    Ok(canonical)
}

/// Splits a canonical decimal into `(coefficient, scale)` (value = coefficient × 10^-scale)
/// when the coefficient fits in `i128`; `None` for larger values and for NaN/infinities.
pub fn to_coefficient_scale(canonical: &str) -> Option<(i128, i32)> {
    let (integer, fraction) = canonical.split_once('.').unwrap_or((canonical, ""));
    let digits = format!("{integer}{fraction}");
    let coefficient: i128 = digits.parse().ok()?;
    Some((coefficient, i32::try_from(fraction.len()).ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_forms() {
        for (input, expected) in [
            ("001.50", "1.5"),
            ("-0.000", "0"),
            ("0", "0"),
            (".5", "0.5"),
            ("5.", "5"),
            ("1200", "1200"),
            ("1.2e3", "1200"),
            ("-12.5E-3", "-0.0125"),
            ("+7", "7"),
            ("NaN", "NaN"),
            ("-Infinity", "-Infinity"),
            (
                "99999999999999999999999999999999999.999999999999999999999999999999",
                "99999999999999999999999999999999999.999999999999999999999999999999",
            ),
        ] {
            assert_eq!(normalize(input).as_deref(), Ok(expected), "{input}");
        }
    }

    #[test]
    fn garbage_is_refused() {
        for input in ["", "-", ".", "1.2.3", "12a", "1e", "1e999999999", "--1"] {
            assert!(normalize(input).is_err(), "{input}");
        }
    }

    #[test]
    fn coefficient_and_scale() {
        assert_eq!(to_coefficient_scale("-1.25"), Some((-125, 2)));
        assert_eq!(to_coefficient_scale("1200"), Some((1200, 0)));
        assert_eq!(to_coefficient_scale(&"9".repeat(60)), None);
        assert_eq!(to_coefficient_scale("NaN"), None);
    }
}
