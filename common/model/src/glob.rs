//! Shell-style glob patterns for table names.
//!
//! Syntax: `*` matches any run of characters (including none), `?` matches exactly one
//! character, `[abc]` and `[a-z]` match one character of a class, `[!a-z]` one character
//! outside it, and `\x` matches `x` literally (also inside a class). Matching works on
//! `char`s, is case-sensitive, and runs in `O(pattern × text)` time: a star only ever
//! backtracks to the most recent star, so no input can make it explode.

use std::fmt;

use thiserror::Error;

/// A reason a glob pattern is rejected. Offsets count characters from the start of the
/// pattern, starting at zero.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum GlobError {
    /// The pattern is the empty string, which would only ever match an empty name.
    #[error("empty pattern")]
    Empty,
    /// A `[` opens a character class that is never closed.
    #[error("unclosed '[' at offset {offset}")]
    UnclosedClass {
        /// Offset of the opening `[`.
        offset: usize,
    },
    /// A character class contains no character, as in `[]` or `[!]`.
    #[error("empty character class at offset {offset}")]
    EmptyClass {
        /// Offset of the opening `[`.
        offset: usize,
    },
    /// A range in a class ends before it starts, as in `[z-a]`.
    #[error("reversed range '{start}-{end}' at offset {offset}")]
    ReversedRange {
        /// First character of the range.
        start: char,
        /// Last character of the range.
        end: char,
        /// Offset of the range's first character.
        offset: usize,
    },
    /// The pattern ends with a `\` that escapes nothing.
    #[error("trailing backslash at offset {offset}")]
    TrailingBackslash {
        /// Offset of the backslash.
        offset: usize,
    },
}

/// One member of a character class.
#[derive(Debug, Clone, PartialEq, Eq)]
enum ClassItem {
    Single(char),
    Range { start: char, end: char },
}

impl ClassItem {
    fn contains(&self, candidate: char) -> bool {
        match *self {
            ClassItem::Single(single) => single == candidate,
            ClassItem::Range { start, end } => (start..=end).contains(&candidate),
        }
    }
}

/// One compiled element of a pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Literal(char),
    AnyChar,
    AnyRun,
    Class {
        negated: bool,
        items: Vec<ClassItem>,
    },
}

impl Token {
    /// Returns whether this single-character token accepts `candidate`. Never called on `AnyRun`.
    fn matches_char(&self, candidate: char) -> bool {
        match self {
            Token::Literal(literal) => *literal == candidate,
            Token::AnyChar => true,
            Token::AnyRun => false,
            Token::Class { negated, items } => {
                let in_class = items.iter().any(|item| item.contains(candidate));
                in_class != *negated
            }
        }
    }
}

/// A parsed, validated glob pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GlobPattern {
    source: String,
    tokens: Vec<Token>,
}

impl GlobPattern {
    /// Parses `pattern`, rejecting empty patterns, unclosed or empty classes, reversed
    /// ranges and a trailing backslash.
    pub fn parse(pattern: &str) -> Result<GlobPattern, GlobError> {
        if pattern.is_empty() {
            return Err(GlobError::Empty);
        }
        let chars: Vec<char> = pattern.chars().collect();
        let mut tokens = Vec::new();
        let mut position = 0;
        while position < chars.len() {
            match chars[position] {
                '*' => {
                    // Consecutive stars mean the same as one; collapsing them keeps matching simple.
                    if tokens.last() != Some(&Token::AnyRun) {
                        tokens.push(Token::AnyRun);
                    }
                    position += 1;
                }
                '?' => {
                    tokens.push(Token::AnyChar);
                    position += 1;
                }
                '\\' => {
                    let escaped = *chars
                        .get(position + 1)
                        .ok_or(GlobError::TrailingBackslash { offset: position })?;
                    tokens.push(Token::Literal(escaped));
                    position += 2;
                }
                '[' => {
                    let (class, next_position) = parse_class(&chars, position)?;
                    tokens.push(class);
                    position = next_position;
                }
                literal => {
                    tokens.push(Token::Literal(literal));
                    position += 1;
                }
            }
        }
        Ok(GlobPattern {
            source: pattern.to_owned(),
            tokens,
        })
    }

    /// Returns the pattern as it was written.
    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// Returns whether the pattern has no wildcard or class, so it matches exactly one name
    /// (escapes are resolved: `a\*b` is literal and matches only `a*b`).
    pub fn is_literal(&self) -> bool {
        self.tokens
            .iter()
            .all(|token| matches!(token, Token::Literal(_)))
    }

    /// Returns whether the whole of `text` matches the pattern.
    pub fn matches(&self, text: &str) -> bool {
        let text_chars: Vec<char> = text.chars().collect();
        let tokens = &self.tokens;
        let mut token_index = 0;
        let mut text_index = 0;
        // Where to resume after the most recent star: the token after it, and the text
        // position that star is currently assumed to have consumed up to.
        let mut star_resume_opt: Option<(usize, usize)> = None;
        while text_index < text_chars.len() {
            match tokens.get(token_index) {
                Some(Token::AnyRun) => {
                    star_resume_opt = Some((token_index + 1, text_index));
                    token_index += 1;
                }
                Some(token) if token.matches_char(text_chars[text_index]) => {
                    token_index += 1;
                    text_index += 1;
                }
                _ => match star_resume_opt {
                    Some((resume_token_index, star_consumed_until)) => {
                        // Let the star swallow one more character and retry from just after it.
                        let next_consumed_until = star_consumed_until + 1;
                        star_resume_opt = Some((resume_token_index, next_consumed_until));
                        token_index = resume_token_index;
                        text_index = next_consumed_until;
                    }
                    None => return false,
                },
            }
        }
        tokens[token_index..]
            .iter()
            .all(|token| *token == Token::AnyRun)
    }
}

impl fmt::Display for GlobPattern {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(&self.source)
    }
}

impl std::str::FromStr for GlobPattern {
    type Err = GlobError;

    fn from_str(pattern: &str) -> Result<Self, Self::Err> {
        GlobPattern::parse(pattern)
    }
}

/// Parses the class opening at `open_offset` (which holds `[`); returns the token and the
/// position just after the closing `]`.
fn parse_class(chars: &[char], open_offset: usize) -> Result<(Token, usize), GlobError> {
    debug_assert_eq!(chars.get(open_offset), Some(&'['));
    let mut position = open_offset + 1;
    let negated = chars.get(position) == Some(&'!');
    if negated {
        position += 1;
    }
    let mut items = Vec::new();
    loop {
        let Some(&current) = chars.get(position) else {
            return Err(GlobError::UnclosedClass {
                offset: open_offset,
            });
        };
        if current == ']' {
            if items.is_empty() {
                return Err(GlobError::EmptyClass {
                    offset: open_offset,
                });
            }
            return Ok((Token::Class { negated, items }, position + 1));
        }
        let item_offset = position;
        let (start, after_start) = read_class_char(chars, position, open_offset)?;
        // A '-' is a range only between two characters; first or last in the class it is literal.
        let is_range = chars.get(after_start) == Some(&'-')
            && chars
                .get(after_start + 1)
                .is_some_and(|&after_dash| after_dash != ']');
        if !is_range {
            items.push(ClassItem::Single(start));
            position = after_start;
            continue;
        }
        let (end, after_end) = read_class_char(chars, after_start + 1, open_offset)?;
        if end < start {
            return Err(GlobError::ReversedRange {
                start,
                end,
                offset: item_offset,
            });
        }
        items.push(ClassItem::Range { start, end });
        position = after_end;
    }
}

/// Reads one possibly escaped character of a class at `position`; returns it and the
/// position after it.
fn read_class_char(
    chars: &[char],
    position: usize,
    open_offset: usize,
) -> Result<(char, usize), GlobError> {
    match chars.get(position) {
        Some('\\') => match chars.get(position + 1) {
            Some(&escaped) => Ok((escaped, position + 2)),
            None => Err(GlobError::TrailingBackslash { offset: position }),
        },
        Some(&current) => Ok((current, position + 1)),
        None => Err(GlobError::UnclosedClass {
            offset: open_offset,
        }),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "a test fails loudly on any error")]
mod tests {
    use super::*;

    fn glob(pattern: &str) -> GlobPattern {
        GlobPattern::parse(pattern).unwrap()
    }

    #[test]
    fn literal_pattern_matches_only_itself() {
        let pattern = glob("orders");
        assert!(pattern.is_literal());
        assert!(pattern.matches("orders"));
        assert!(!pattern.matches("order"));
        assert!(!pattern.matches("orders2"));
        assert!(!pattern.matches("Orders"));
        assert_eq!(pattern.as_str(), "orders");
    }

    #[test]
    fn star_matches_any_run_including_empty() {
        let pattern = glob("ord*");
        assert!(!pattern.is_literal());
        assert!(pattern.matches("ord"));
        assert!(pattern.matches("orders"));
        assert!(!pattern.matches("or"));
        assert!(glob("*").matches(""));
        assert!(glob("*").matches("anything"));
        assert!(glob("a*b*c").matches("abc"));
        assert!(glob("a*b*c").matches("axxbyyc"));
        assert!(glob("a*b*c").matches("abcbc"));
        assert!(!glob("a*b*c").matches("axxbyy"));
        assert!(glob("*.orders").matches("main.orders"));
        assert!(glob("**x").matches("x"));
    }

    #[test]
    fn question_mark_matches_exactly_one_char() {
        let pattern = glob("t?");
        assert!(pattern.matches("t1"));
        assert!(pattern.matches("té"));
        assert!(!pattern.matches("t"));
        assert!(!pattern.matches("t12"));
    }

    #[test]
    fn classes_ranges_and_negation() {
        assert!(glob("t[abc]").matches("tb"));
        assert!(!glob("t[abc]").matches("td"));
        assert!(glob("t[a-z]").matches("tq"));
        assert!(!glob("t[a-z]").matches("tQ"));
        assert!(glob("t[!a-z]").matches("t1"));
        assert!(!glob("t[!a-z]").matches("tq"));
        assert!(glob("t[0-9a-f]").matches("te"));
        assert!(glob("[-a]").matches("-"));
        assert!(glob("[a-]").matches("-"));
        assert!(glob("[\\]]").matches("]"));
        assert!(glob("[!!]").matches("a"));
        assert!(!glob("[!!]").matches("!"));
    }

    #[test]
    fn backslash_escapes_wildcards() {
        let pattern = glob("a\\*b");
        assert!(pattern.is_literal());
        assert!(pattern.matches("a*b"));
        assert!(!pattern.matches("axb"));
        assert!(glob("\\[x\\]").matches("[x]"));
        assert!(glob("a\\?").matches("a?"));
        assert!(!glob("a\\?").matches("ab"));
    }

    #[test]
    fn invalid_patterns_are_rejected_with_offsets() {
        assert_eq!(GlobPattern::parse(""), Err(GlobError::Empty));
        assert_eq!(
            GlobPattern::parse("ord["),
            Err(GlobError::UnclosedClass { offset: 3 })
        );
        assert_eq!(
            GlobPattern::parse("ord[").unwrap_err().to_string(),
            "unclosed '[' at offset 3"
        );
        assert_eq!(
            GlobPattern::parse("a[bc"),
            Err(GlobError::UnclosedClass { offset: 1 })
        );
        assert_eq!(
            GlobPattern::parse("x[]"),
            Err(GlobError::EmptyClass { offset: 1 })
        );
        assert_eq!(
            GlobPattern::parse("[!]"),
            Err(GlobError::EmptyClass { offset: 0 })
        );
        assert_eq!(
            GlobPattern::parse("t[z-a]"),
            Err(GlobError::ReversedRange {
                start: 'z',
                end: 'a',
                offset: 2
            })
        );
        assert_eq!(
            GlobPattern::parse("abc\\"),
            Err(GlobError::TrailingBackslash { offset: 3 })
        );
        assert_eq!(
            GlobPattern::parse("[a\\"),
            Err(GlobError::TrailingBackslash { offset: 2 })
        );
    }

    #[test]
    fn many_stars_do_not_backtrack_catastrophically() {
        let pattern = glob(&format!("{}b", "a*".repeat(40)));
        let text = "a".repeat(5_000);
        assert!(!pattern.matches(&text));
        assert!(pattern.matches(&format!("{text}b")));
    }

    #[test]
    fn display_and_from_str_round_trip() {
        let pattern: GlobPattern = "main.ord*".parse().unwrap();
        assert_eq!(pattern.to_string(), "main.ord*");
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #[test]
            fn escaped_text_matches_itself_only(text in "[a-z\\[\\]*?!\\\\-]{1,12}") {
                let escaped: String = text.chars().flat_map(|c| ['\\', c]).collect();
                let pattern = GlobPattern::parse(&escaped).unwrap();
                prop_assert!(pattern.is_literal());
                prop_assert!(pattern.matches(&text));
                let longer = format!("{text}x");
                prop_assert!(!pattern.matches(&longer));
            }

            #[test]
            fn star_surrounding_text_matches_any_superstring(
                prefix in "[a-c]{0,5}", middle in "[a-c]{1,5}", suffix in "[a-c]{0,5}"
            ) {
                let pattern = GlobPattern::parse(&format!("*{middle}*")).unwrap();
                let text = format!("{prefix}{middle}{suffix}");
                prop_assert!(pattern.matches(&text));
            }
        }
    }
}
