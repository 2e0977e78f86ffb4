//! The bearer tokens a Control API accepts: a file of `NAME ROLE TOKEN` lines (a
//! Kubernetes Secret mounted as a file), parsed once at start. A token's value is never
//! shown: not in errors, not in logs, not in `Debug`.

use std::fmt;
use std::path::{Path, PathBuf};

/// What a caller may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    /// Reads only: get, list, watch, show.
    Viewer,
    /// Everything: also submit, pause, resume, throttle, cancel, re-copy, drain.
    Operator,
}

impl Role {
    /// The role's name in token files and messages.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Operator => "operator",
        }
    }

    /// Parses `viewer` or `operator`.
    pub fn parse(text: &str) -> Option<Role> {
        match text {
            "viewer" => Some(Role::Viewer),
            "operator" => Some(Role::Operator),
            _ => None,
        }
    }

    /// Whether a caller with this role may make a call that needs `needed`.
    pub fn allows(self, needed: Role) -> bool {
        self >= needed
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The shortest token accepted: shorter ones can be guessed.
pub const MIN_TOKEN_LENGTH: usize = 16;

/// Why a tokens file was refused. The messages name the file and line, never a token.
#[derive(Debug, thiserror::Error)]
pub enum TokensError {
    /// The file could not be read.
    #[error("cannot read the tokens file {path} (server.tokens_file): {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A line is not `NAME ROLE TOKEN`.
    #[error("tokens file {path}, line {line}: {problem}")]
    Line {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong, and how to write it.
        problem: String,
    },
    /// The file holds no token.
    #[error(
        "tokens file {path} holds no token: write one `NAME ROLE TOKEN` line per caller \
         (ROLE viewer or operator; TOKEN e.g. from `openssl rand -hex 32`)"
    )]
    Empty {
        /// The file.
        path: PathBuf,
    },
}

/// One caller's token.
#[derive(Clone)]
struct TokenEntry {
    name: String,
    role: Role,
    secret: Vec<u8>,
}

/// The accepted tokens.
#[derive(Clone)]
pub struct Tokens {
    entries: Vec<TokenEntry>,
}

impl fmt::Debug for Tokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Names and roles only: the values are secrets.
        f.debug_list()
            .entries(
                self.entries
                    .iter()
                    .map(|entry| format!("{} ({})", entry.name, entry.role)),
            )
            .finish()
    }
}

impl Tokens {
    /// Reads and parses a tokens file.
    pub fn load(path: &Path) -> Result<Tokens, TokensError> {
        let text = std::fs::read_to_string(path).map_err(|source| TokensError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Tokens::parse(&text, path)
    }

    /// Parses `NAME ROLE TOKEN` lines; blank lines and `#` comments are skipped. Names
    /// and tokens must be unique.
    pub fn parse(text: &str, path: &Path) -> Result<Tokens, TokensError> {
        let mut entries: Vec<TokenEntry> = Vec::new();
        for (index, raw_line) in text.lines().enumerate() {
            let line = raw_line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let problem = |problem: String| TokensError::Line {
                path: path.to_path_buf(),
                line: index + 1,
                problem,
            };
            let fields: Vec<&str> = line.split_whitespace().collect();
            let [name, role_text, secret] = fields[..] else {
                return Err(problem(format!(
                    "expected `NAME ROLE TOKEN` (3 fields separated by spaces), found {} fields",
                    fields.len()
                )));
            };
            if name.len() > 64
                || !name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "._@-".contains(c))
            {
                return Err(problem(
                    "the name must be 1 to 64 letters, digits, `.`, `_`, `@` or `-`".to_owned(),
                ));
            }
            let role = Role::parse(role_text).ok_or_else(|| {
                problem(format!(
                    "unknown role {role_text:?} for {name}: use viewer or operator"
                ))
            })?;
            if secret.len() < MIN_TOKEN_LENGTH {
                return Err(problem(format!(
                    "the token of {name} is shorter than {MIN_TOKEN_LENGTH} characters: \
                     generate one with `openssl rand -hex 32`"
                )));
            }
            if entries.iter().any(|entry| entry.name == name) {
                return Err(problem(format!(
                    "{name} is named twice: each caller needs its own name"
                )));
            }
            if let Some(twin) = entries
                .iter()
                .find(|entry| entry.secret == secret.as_bytes())
            {
                return Err(problem(format!(
                    "{name} has the same token as {}: give each caller its own token",
                    twin.name
                )));
            }
            entries.push(TokenEntry {
                name: name.to_owned(),
                role,
                secret: secret.as_bytes().to_vec(),
            });
        }
        if entries.is_empty() {
            return Err(TokensError::Empty {
                path: path.to_path_buf(),
            });
        }
        Ok(Tokens { entries })
    }

    /// The name and role of the caller whose token is `presented`. Every entry is
    /// compared in full, so the time taken does not tell how much of a guess was right.
    pub fn find(&self, presented: &str) -> Option<(&str, Role)> {
        let mut found = None;
        for entry in &self.entries {
            if constant_time_eq(&entry.secret, presented.as_bytes()) {
                found = Some((entry.name.as_str(), entry.role));
            }
        }
        found
    }

    /// How many tokens each role has, for the start-up line.
    pub fn describe(&self) -> String {
        let count = |role| self.entries.iter().filter(|e| e.role == role).count();
        format!(
            "{} bearer tokens ({} operator, {} viewer)",
            self.entries.len(),
            count(Role::Operator),
            count(Role::Viewer)
        )
    }
}

/// Compares two byte strings in time that depends on their lengths only.
fn constant_time_eq(expected: &[u8], presented: &[u8]) -> bool {
    let mut difference = expected.len() ^ presented.len();
    for (index, byte) in expected.iter().enumerate() {
        let other = presented.get(index).copied().unwrap_or(0);
        difference |= usize::from(byte ^ other);
    }
    difference == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    const OPERATOR_TOKEN: &str = "operator-token-0123456789";
    const VIEWER_TOKEN: &str = "viewer-token-0123456789ab";

    fn parse(text: &str) -> Result<Tokens, TokensError> {
        Tokens::parse(text, Path::new("/run/secrets/tokens"))
    }

    #[test]
    fn tokens_are_found_by_value_with_their_role() {
        let tokens = parse(&format!(
            "# who may call\n\nalice operator {OPERATOR_TOKEN}\n  bob viewer {VIEWER_TOKEN}  \n"
        ))
        .expect("tokens");
        assert_eq!(tokens.find(OPERATOR_TOKEN), Some(("alice", Role::Operator)));
        assert_eq!(tokens.find(VIEWER_TOKEN), Some(("bob", Role::Viewer)));
        assert_eq!(tokens.find("operator-token-012345678"), None);
        assert_eq!(tokens.find(""), None);
        assert_eq!(tokens.describe(), "2 bearer tokens (1 operator, 1 viewer)");
        let debug = format!("{tokens:?}");
        assert!(!debug.contains(OPERATOR_TOKEN) && debug.contains("alice (operator)"));
    }

    #[test]
    fn bad_lines_name_the_line_and_the_fix_without_the_token() {
        let cases = [
            ("alice operator", "line 1: expected `NAME ROLE TOKEN`"),
            (
                "alice admin 0123456789abcdef0",
                "line 1: unknown role \"admin\" for alice: use viewer or operator",
            ),
            (
                "alice operator short",
                "the token of alice is shorter than 16 characters",
            ),
            ("al/ice operator 0123456789abcdef0", "the name must be"),
            (
                "a operator 0123456789abcdef0\na viewer 0123456789abcdef1",
                "line 2: a is named twice",
            ),
            (
                "a operator 0123456789abcdef0\nb viewer 0123456789abcdef0",
                "line 2: b has the same token as a",
            ),
            ("# nothing\n", "holds no token"),
        ];
        for (text, expected) in cases {
            let message = parse(text).expect_err(text).to_string();
            assert!(message.contains(expected), "{text:?}: {message}");
            assert!(message.contains("/run/secrets/tokens"), "{message}");
            assert!(!message.contains("0123456789abcdef"), "{message}");
        }
    }

    #[test]
    fn an_operator_may_do_what_a_viewer_may() {
        assert!(Role::Operator.allows(Role::Viewer));
        assert!(Role::Operator.allows(Role::Operator));
        assert!(Role::Viewer.allows(Role::Viewer));
        assert!(!Role::Viewer.allows(Role::Operator));
    }
}
