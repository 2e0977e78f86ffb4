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
    let mut canonical = String::new();
    normalize_into(text, &mut canonical)?;
    Ok(canonical)
}

/// Like [`normalize`], appending the canonical form to `out` (a buffer the caller can
/// reuse for every value of a column).
pub fn normalize_into(text: &str, out: &mut String) -> Result<(), DecimalError> {
    if !push_plain(text, out) {
        out.push_str(&normalize_general(text)?);
    }
    Ok(())
}

/// [`normalize`] for any text: exponents, surrounding spaces, NaN and infinities.
fn normalize_general(text: &str) -> Result<String, DecimalError> {
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

/// The fast path of [`normalize`], for the text engines print (`[+-]digits[.digits]`,
/// digits on at least one side of the point): appends the same result to `out` without
/// allocating; `false` (and nothing appended) for any other text (exponents, spaces, NaN,
/// garbage), which the general path handles.
fn push_plain(text: &str, out: &mut String) -> bool {
    let Some((negative, integer, fraction)) = split_plain(text) else {
        return false;
    };
    let integer = integer.trim_start_matches('0');
    let fraction = fraction.trim_end_matches('0');
    if integer.is_empty() && fraction.is_empty() {
        out.push('0');
        return true;
    }
    if negative {
        out.push('-');
    }
    out.push_str(if integer.is_empty() { "0" } else { integer });
    if !fraction.is_empty() {
        out.push('.');
        out.push_str(fraction);
    }
    true
}

/// Splits a plain decimal (`[+-]digits[.digits]`, a digit on at least one side of the
/// point) into its sign, integer digits and fraction digits; `None` for any other text.
fn split_plain(text: &str) -> Option<(bool, &str, &str)> {
    let (negative, unsigned) = match text.as_bytes().first()? {
        b'-' => (true, &text[1..]),
        b'+' => (false, &text[1..]),
        _ => (false, text),
    };
    let mut point = None;
    for (at, byte) in unsigned.bytes().enumerate() {
        match byte {
            b'0'..=b'9' => {}
            b'.' if point.is_none() => point = Some(at),
            _ => return None,
        }
    }
    let (integer, fraction) = match point {
        Some(at) => (&unsigned[..at], &unsigned[at + 1..]),
        None => (unsigned, ""),
    };
    if integer.is_empty() && fraction.is_empty() {
        return None;
    }
    Some((negative, integer, fraction))
}

/// The value of a plain decimal text (`[+-]digits[.digits]`, as engines print it) as
/// `(coefficient, scale)`, not normalized, without building its canonical text; `None`
/// for any other text and when the digits overflow `i128` (then [`normalize`] decides).
pub fn plain_coefficient_scale(text: &str) -> Option<(i128, i32)> {
    let (negative, integer, fraction) = split_plain(text)?;
    // Accumulated with the value's sign, so i128::MIN fits.
    let mut coefficient: i128 = 0;
    for byte in integer.bytes().chain(fraction.bytes()) {
        let digit = i128::from(byte - b'0');
        coefficient = coefficient.checked_mul(10)?;
        coefficient = if negative {
            coefficient.checked_sub(digit)?
        } else {
            coefficient.checked_add(digit)?
        };
    }
    Some((coefficient, i32::try_from(fraction.len()).ok()?))
}

/// Splits a canonical decimal into `(coefficient, scale)` (value = coefficient × 10^-scale)
/// when the coefficient fits in `i128`; `None` for larger values and for NaN/infinities.
pub fn to_coefficient_scale(canonical: &str) -> Option<(i128, i32)> {
    plain_coefficient_scale(canonical)
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
    fn the_fast_path_agrees_with_the_general_one() {
        let inputs = [
            "0",
            "-0",
            "+0",
            "00",
            "0.0",
            "-0.000",
            ".5",
            "5.",
            "-.5",
            "001.50",
            "12.50",
            "-12.50",
            "1200",
            "+7",
            "-99999.999990",
            "0.000100",
            "1e3",
            " 1",
            "1 ",
            ".",
            "-",
            "+",
            "",
            "1.2.3",
            "12a",
            "--1",
            "+-1",
            "NaN",
            "inf",
        ];
        for input in inputs {
            let general = {
                // The general path, as it was before the fast path.
                let mut text = input.to_string();
                if split_plain(input).is_some() {
                    text = format!("{input}e0");
                }
                normalize(&text)
            };
            assert_eq!(normalize(input), general, "{input:?}");
        }
    }

    #[test]
    fn plain_text_is_read_without_normalizing() {
        assert_eq!(plain_coefficient_scale("12.50"), Some((1250, 2)));
        assert_eq!(plain_coefficient_scale("-0.0"), Some((0, 1)));
        assert_eq!(plain_coefficient_scale("+.5"), Some((5, 1)));
        assert_eq!(plain_coefficient_scale("7."), Some((7, 0)));
        for other in ["", ".", "-", "1e3", " 1", "1.2.3", "NaN", &"9".repeat(40)] {
            assert_eq!(plain_coefficient_scale(other), None, "{other:?}");
        }
    }

    #[test]
    fn coefficient_and_scale() {
        assert_eq!(to_coefficient_scale("0"), Some((0, 0)));
        assert_eq!(to_coefficient_scale("0.05"), Some((5, 2)));
        assert_eq!(to_coefficient_scale(""), None);
        assert_eq!(to_coefficient_scale("-"), None);
        assert_eq!(
            to_coefficient_scale(&i128::MIN.to_string()),
            Some((i128::MIN, 0))
        );
        assert_eq!(
            to_coefficient_scale(&format!("{}0", i128::MAX)),
            None,
            "overflows"
        );
        assert_eq!(to_coefficient_scale("-1.25"), Some((-125, 2)));
        assert_eq!(to_coefficient_scale("1200"), Some((1200, 0)));
        assert_eq!(to_coefficient_scale(&"9".repeat(60)), None);
        assert_eq!(to_coefficient_scale("NaN"), None);
    }
}
