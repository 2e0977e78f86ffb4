//! A small JSON reader that keeps numbers as their text, so that a `numeric[]` carried as
//! a JSON array goes back into PostgreSQL digit for digit (a general JSON library would
//! round 40-digit numbers through `f64`), and a JSON string writer.

use std::borrow::Cow;

/// A parsed JSON value; numbers and objects keep their source text.
#[derive(Clone, Debug, PartialEq)]
pub enum JsonValue<'a> {
    /// `null`.
    Null,
    /// `true` or `false`.
    Bool(bool),
    /// A number, as written.
    Number(&'a str),
    /// A string, unescaped.
    String(Cow<'a, str>),
    /// An array.
    Array(Vec<JsonValue<'a>>),
    /// An object, as written (ferry never looks inside).
    Object(&'a str),
}

/// Parses one JSON document; surrounding whitespace is allowed, anything else is not.
pub fn parse(text: &str) -> Result<JsonValue<'_>, String> {
    let mut parser = Parser { text, at: 0 };
    let value = parser.value(0)?;
    parser.skip_whitespace();
    if parser.at != text.len() {
        return Err(parser.error("trailing characters"));
    }
    Ok(value)
}

/// Arrays and objects nest at most this deep (PostgreSQL arrays have at most 6
/// dimensions; objects inside `json[]` elements are kept as text).
const MAX_DEPTH: usize = 512;

struct Parser<'a> {
    text: &'a str,
    at: usize,
}

impl<'a> Parser<'a> {
    fn error(&self, what: &str) -> String {
        format!("invalid JSON at byte {}: {what}", self.at)
    }

    fn peek(&self) -> Option<u8> {
        self.text.as_bytes().get(self.at).copied()
    }

    fn skip_whitespace(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.at += 1;
        }
    }

    fn expect_literal(&mut self, literal: &str) -> Result<(), String> {
        if self.text[self.at..].starts_with(literal) {
            self.at += literal.len();
            Ok(())
        } else {
            Err(self.error("unexpected character"))
        }
    }

    fn value(&mut self, depth: usize) -> Result<JsonValue<'a>, String> {
        if depth > MAX_DEPTH {
            return Err(self.error("nested too deeply"));
        }
        self.skip_whitespace();
        match self.peek() {
            None => Err(self.error("unexpected end")),
            Some(b'n') => self.expect_literal("null").map(|()| JsonValue::Null),
            Some(b't') => self.expect_literal("true").map(|()| JsonValue::Bool(true)),
            Some(b'f') => self
                .expect_literal("false")
                .map(|()| JsonValue::Bool(false)),
            Some(b'"') => self.string().map(JsonValue::String),
            Some(b'[') => {
                self.at += 1;
                let mut items = Vec::new();
                self.skip_whitespace();
                if self.peek() == Some(b']') {
                    self.at += 1;
                    return Ok(JsonValue::Array(items));
                }
                loop {
                    items.push(self.value(depth + 1)?);
                    self.skip_whitespace();
                    match self.peek() {
                        Some(b',') => self.at += 1,
                        Some(b']') => {
                            self.at += 1;
                            return Ok(JsonValue::Array(items));
                        }
                        _ => return Err(self.error("expected , or ]")),
                    }
                }
            }
            Some(b'{') => {
                let start = self.at;
                self.at += 1;
                self.skip_whitespace();
                if self.peek() == Some(b'}') {
                    self.at += 1;
                    return Ok(JsonValue::Object(&self.text[start..self.at]));
                }
                loop {
                    self.skip_whitespace();
                    if self.peek() != Some(b'"') {
                        return Err(self.error("expected a key"));
                    }
                    self.string()?;
                    self.skip_whitespace();
                    if self.peek() != Some(b':') {
                        return Err(self.error("expected :"));
                    }
                    self.at += 1;
                    self.value(depth + 1)?;
                    self.skip_whitespace();
                    match self.peek() {
                        Some(b',') => self.at += 1,
                        Some(b'}') => {
                            self.at += 1;
                            return Ok(JsonValue::Object(&self.text[start..self.at]));
                        }
                        _ => return Err(self.error("expected , or }")),
                    }
                }
            }
            Some(b'-' | b'0'..=b'9') => self.number().map(JsonValue::Number),
            Some(_) => Err(self.error("unexpected character")),
        }
    }

    fn digits(&mut self) -> usize {
        let start = self.at;
        while matches!(self.peek(), Some(b'0'..=b'9')) {
            self.at += 1;
        }
        self.at - start
    }

    fn number(&mut self) -> Result<&'a str, String> {
        let start = self.at;
        if self.peek() == Some(b'-') {
            self.at += 1;
        }
        let integer_start = self.at;
        let integer_digits = self.digits();
        if integer_digits == 0
            || (integer_digits > 1 && self.text.as_bytes()[integer_start] == b'0')
        {
            return Err(self.error("invalid number"));
        }
        if self.peek() == Some(b'.') {
            self.at += 1;
            if self.digits() == 0 {
                return Err(self.error("invalid number"));
            }
        }
        if matches!(self.peek(), Some(b'e' | b'E')) {
            self.at += 1;
            if matches!(self.peek(), Some(b'+' | b'-')) {
                self.at += 1;
            }
            if self.digits() == 0 {
                return Err(self.error("invalid number"));
            }
        }
        Ok(&self.text[start..self.at])
    }

    fn hex4(&mut self) -> Result<u32, String> {
        let digits = self
            .text
            .get(self.at..self.at + 4)
            .ok_or_else(|| self.error("short \\u escape"))?;
        let value =
            u32::from_str_radix(digits, 16).map_err(|_| self.error("invalid \\u escape"))?;
        self.at += 4;
        Ok(value)
    }

    fn string(&mut self) -> Result<Cow<'a, str>, String> {
        self.at += 1; // the opening quote
        let start = self.at;
        // Fast path: no escapes.
        loop {
            match self.peek() {
                None => return Err(self.error("unterminated string")),
                Some(b'"') => {
                    let text = &self.text[start..self.at];
                    self.at += 1;
                    return Ok(Cow::Borrowed(text));
                }
                Some(b'\\') => break,
                Some(byte) if byte < 0x20 => return Err(self.error("control character")),
                Some(_) => self.at += 1,
            }
        }
        let mut owned = String::from(&self.text[start..self.at]);
        loop {
            let rest = &self.text[self.at..];
            let Some(character) = rest.chars().next() else {
                return Err(self.error("unterminated string"));
            };
            match character {
                '"' => {
                    self.at += 1;
                    return Ok(Cow::Owned(owned));
                }
                '\\' => {
                    self.at += 1;
                    let escape = self
                        .peek()
                        .ok_or_else(|| self.error("unterminated string"))?;
                    self.at += 1;
                    match escape {
                        b'"' => owned.push('"'),
                        b'\\' => owned.push('\\'),
                        b'/' => owned.push('/'),
                        b'b' => owned.push('\u{8}'),
                        b'f' => owned.push('\u{c}'),
                        b'n' => owned.push('\n'),
                        b'r' => owned.push('\r'),
                        b't' => owned.push('\t'),
                        b'u' => {
                            let first = self.hex4()?;
                            let code = if (0xD800..0xDC00).contains(&first) {
                                if !self.text[self.at..].starts_with("\\u") {
                                    return Err(self.error("lone surrogate"));
                                }
                                self.at += 2;
                                let second = self.hex4()?;
                                if !(0xDC00..0xE000).contains(&second) {
                                    return Err(self.error("lone surrogate"));
                                }
                                0x10000 + ((first - 0xD800) << 10) + (second - 0xDC00)
                            } else {
                                first
                            };
                            let decoded = char::from_u32(code)
                                .ok_or_else(|| self.error("invalid code point"))?;
                            owned.push(decoded);
                        }
                        _ => return Err(self.error("invalid escape")),
                    }
                }
                c if (c as u32) < 0x20 => return Err(self.error("control character")),
                c => {
                    owned.push(c);
                    self.at += c.len_utf8();
                }
            }
        }
    }
}

/// Appends `text` as a JSON string literal.
pub fn push_string(out: &mut String, text: &str) {
    out.push('"');
    for character in text.chars() {
        match character {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                out.push_str(&format!("\\u{:04x}", c as u32));
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_keep_their_text_and_strings_unescape() {
        let value =
            parse(r#" [1.50, -0.0, 123456789012345678901234567890, "a\"\u00e9\ud83e\udd80", null, true, {"k": [1]}] "#)
                .unwrap();
        let JsonValue::Array(items) = value else {
            panic!("array")
        };
        assert_eq!(items[0], JsonValue::Number("1.50"));
        assert_eq!(items[1], JsonValue::Number("-0.0"));
        assert_eq!(
            items[2],
            JsonValue::Number("123456789012345678901234567890")
        );
        assert_eq!(items[3], JsonValue::String(Cow::Borrowed("a\"é🦀")));
        assert_eq!(items[4], JsonValue::Null);
        assert_eq!(items[5], JsonValue::Bool(true));
        assert_eq!(items[6], JsonValue::Object(r#"{"k": [1]}"#));
    }

    #[test]
    fn invalid_documents_are_refused() {
        for text in [
            "",
            "[1,]",
            "01",
            "[1] x",
            "\"\u{1}\"",
            "{1: 2}",
            "[\"\\ud800\"]",
        ] {
            assert!(parse(text).is_err(), "{text:?}");
        }
    }

    #[test]
    fn strings_round_trip_through_the_writer() {
        let text = "quote\" backslash\\ newline\n bell\u{7} é 🦀";
        let mut out = String::new();
        push_string(&mut out, text);
        assert_eq!(
            parse(&out).unwrap(),
            JsonValue::String(Cow::Owned(text.into()))
        );
    }
}
