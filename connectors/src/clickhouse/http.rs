//! A small client of ClickHouse's HTTP interface: one HTTP/1.1 connection per statement
//! (hyper's client, already built for tonic), the statement in the POST body or, for an
//! insert, in the URL with the rows streamed as the body. Settings travel as URL
//! parameters, which every server version reads.

use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use futures::stream::BoxStream;
use http_body_util::{BodyExt, Full, StreamBody, combinators::UnsyncBoxBody};
use hyper::body::{Body as _, Frame};
use hyper_util::rt::TokioIo;

use crate::error::{BoxError, Failure};

/// How long connecting may take before the server counts as away.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Where a server's HTTP interface is and who we are there.
#[derive(Clone)]
pub struct Endpoint {
    /// `host:port`.
    pub address: String,
    /// The `Authorization: Basic` value, when a user is given.
    pub authorization: Option<String>,
    /// The database statements run in.
    pub database: String,
    /// Settings sent with every statement (those a server version needs).
    pub settings: Vec<(&'static str, String)>,
}

/// An error of a statement: the server's (with its code), or the connection's.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// The server refused the statement.
    #[error("ClickHouse error {code}: {message}")]
    Server {
        /// ClickHouse's error code (`Code: 60` is an unknown table).
        code: u32,
        /// The server's message.
        message: String,
    },
    /// The server could not be reached, or the connection broke.
    #[error("ClickHouse at {address}: {reason}")]
    Connection {
        /// `host:port`.
        address: String,
        /// What happened.
        reason: String,
    },
}

impl HttpError {
    /// The server's error code, when the server answered with one.
    pub fn code(&self) -> Option<u32> {
        match self {
            HttpError::Server { code, .. } => Some(*code),
            HttpError::Connection { .. } => None,
        }
    }

    /// Classifies the error for retries (see `docs/clickhouse.md`).
    pub fn failure(&self) -> Failure {
        match self {
            HttpError::Connection { .. } => Failure::Unavailable,
            HttpError::Server { code, .. } => classify_code(*code),
        }
    }
}

/// ClickHouse error codes that are not permanent, by what they mean.
pub fn classify_code(code: u32) -> Failure {
    match code {
        202 // too many simultaneous queries
        | 209 // socket timeout
        | 210 // network error
        | 225 // no ZooKeeper
        | 242 // table is in read-only mode (replica lost ZooKeeper)
        | 319 // unknown status of insert (ZooKeeper session expired)
        | 999 // ZooKeeper (Coordination) exception
        => Failure::Unavailable,
        159 // timeout exceeded (max_execution_time)
        | 160 // too slow
        | 252 // too many parts: merges are behind
        | 394 // query was cancelled
        | 473 // deadlock avoided while locking a table
        => Failure::Transient,
        _ => Failure::Permanent,
    }
}

type Body = UnsyncBoxBody<Bytes, BoxError>;

/// The response body, streamed.
pub type ByteStream = BoxStream<'static, Result<Bytes, HttpError>>;

fn connection_error(address: &str, reason: impl std::fmt::Display) -> HttpError {
    HttpError::Connection {
        address: address.to_string(),
        reason: reason.to_string(),
    }
}

/// `%`-encodes a URL query value.
fn encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for byte in value.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~') {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// Standard base64, for the Basic authorization header.
pub fn base64(input: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(input.len().div_ceil(3) * 4);
    for chunk in input.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for index in 0..4 {
            if index <= chunk.len() {
                out.push(ALPHABET[((n >> (18 - 6 * index)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

impl Endpoint {
    /// Sends `body` to the server with `query` (the statement, for an insert) and
    /// `settings` as URL parameters; returns the streamed response once its status is 200.
    async fn send(
        &self,
        query: Option<&str>,
        settings: &[(&str, String)],
        body: Body,
    ) -> Result<ByteStream, HttpError> {
        let address = self.address.clone();
        let stream =
            tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::TcpStream::connect(&address))
                .await
                .map_err(|_| connection_error(&address, "connect timed out"))?
                .map_err(|error| connection_error(&address, error))?;
        let _ = stream.set_nodelay(true);
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|error| connection_error(&address, error))?;
        tokio::spawn(async move {
            // Ends with the response body (or its drop, which cancels the statement).
            let _ = connection.await;
        });
        let mut uri = format!("/?database={}", encode(&self.database));
        if let Some(query) = query {
            uri.push_str("&query=");
            uri.push_str(&encode(query));
        }
        for (name, value) in self.settings.iter().chain(settings) {
            uri.push('&');
            uri.push_str(name);
            uri.push('=');
            uri.push_str(&encode(value));
        }
        let mut request = http::Request::post(uri).header(http::header::HOST, address.as_str());
        if let Some(authorization) = &self.authorization {
            request = request.header(http::header::AUTHORIZATION, authorization.as_str());
        }
        let request = request
            .body(body)
            .map_err(|error| connection_error(&address, error))?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|error| connection_error(&address, error))?;
        let status = response.status();
        let mut body = response.into_body();
        if status != http::StatusCode::OK {
            let bytes = body
                .collect()
                .await
                .map_err(|error| connection_error(&address, error))?
                .to_bytes();
            let text = String::from_utf8_lossy(&bytes).trim().to_string();
            return Err(server_error(status, &text));
        }
        let stream = futures::stream::poll_fn(move |context| {
            loop {
                match std::pin::Pin::new(&mut body).poll_frame(context) {
                    std::task::Poll::Ready(Some(Ok(frame))) => {
                        if let Ok(data) = frame.into_data() {
                            return std::task::Poll::Ready(Some(Ok(data)));
                        }
                    }
                    std::task::Poll::Ready(Some(Err(error))) => {
                        return std::task::Poll::Ready(Some(Err(connection_error(
                            &address, error,
                        ))));
                    }
                    std::task::Poll::Ready(None) => return std::task::Poll::Ready(None),
                    std::task::Poll::Pending => return std::task::Poll::Pending,
                }
            }
        });
        Ok(stream.boxed())
    }

    /// Runs `sql` and streams its output.
    pub async fn stream(
        &self,
        sql: &str,
        settings: &[(&str, String)],
    ) -> Result<ByteStream, HttpError> {
        self.stream_shown(sql, settings, sql).await
    }

    /// [`Endpoint::stream`], logging `shown` in place of the statement.
    async fn stream_shown(
        &self,
        sql: &str,
        settings: &[(&str, String)],
        shown: &str,
    ) -> Result<ByteStream, HttpError> {
        let body = Full::new(Bytes::from(sql.to_string()))
            .map_err(|never| match never {})
            .boxed_unsync();
        let started = std::time::Instant::now();
        let answer = self.send(None, settings, body).await;
        tracing::trace!(
            elapsed_ms = started.elapsed().as_secs_f64() * 1000.0,
            ok = answer.is_ok(),
            sql = shown,
            "ClickHouse answered"
        );
        answer
    }

    /// Runs a statement that holds `secret` (a password) to its end: the secret is cut
    /// out of the log line and of any error.
    pub async fn execute_secret(
        &self,
        sql: &str,
        settings: &[(&str, String)],
        secret: Option<&str>,
    ) -> Result<(), HttpError> {
        let secret = secret.filter(|secret| !secret.is_empty());
        let redact = |text: &str| match secret {
            Some(secret) => text.replace(secret, "<redacted>"),
            None => text.to_string(),
        };
        let hide = |error: HttpError| match error {
            HttpError::Server { code, message } => HttpError::Server {
                code,
                message: redact(&message),
            },
            other => other,
        };
        let mut stream = self
            .stream_shown(sql, settings, &redact(sql))
            .await
            .map_err(hide)?;
        let mut out = Vec::new();
        while let Some(piece) = stream.next().await {
            out.extend_from_slice(&piece.map_err(hide)?);
        }
        match trailing_error(&String::from_utf8_lossy(&out)) {
            Some(error) => Err(hide(error)),
            None => Ok(()),
        }
    }

    /// Runs `sql` and returns its whole output; an error in the middle of the output
    /// (ClickHouse reports it in the body after a 200) is recognised by its text.
    pub async fn query(&self, sql: &str) -> Result<Bytes, HttpError> {
        let mut stream = self.stream(sql, &[]).await?;
        let mut out = Vec::new();
        while let Some(piece) = stream.next().await {
            out.extend_from_slice(&piece?);
        }
        Ok(Bytes::from(out))
    }

    /// Runs `sql` and returns its output as text, one row a line, tab-separated.
    pub async fn query_text(&self, sql: &str) -> Result<String, HttpError> {
        let bytes = self.query(sql).await?;
        let text = String::from_utf8_lossy(&bytes).into_owned();
        if let Some(error) = trailing_error(&text) {
            return Err(error);
        }
        Ok(text)
    }

    /// Runs `sql` and returns its rows split into tab-separated fields (no escapes
    /// expected: for catalog reads of names and numbers, `FORMAT TSVRaw`).
    pub async fn query_rows(&self, sql: &str) -> Result<Vec<Vec<String>>, HttpError> {
        let text = self.query_text(sql).await?;
        Ok(text
            .lines()
            .filter(|line| !line.is_empty())
            .map(|line| line.split('\t').map(str::to_string).collect())
            .collect())
    }

    /// Runs `statement` (an `INSERT ... FORMAT ...`) with `rows` as its data.
    pub async fn insert(
        &self,
        statement: &str,
        settings: &[(&str, String)],
        rows: BoxStream<'static, Result<Bytes, BoxError>>,
    ) -> Result<(), HttpError> {
        let body = BodyExt::boxed_unsync(StreamBody::new(rows.map(|item| item.map(Frame::data))));
        let started = std::time::Instant::now();
        let mut stream = self.send(Some(statement), settings, body).await?;
        while let Some(piece) = stream.next().await {
            piece?;
        }
        tracing::trace!(
            elapsed_ms = started.elapsed().as_secs_f64() * 1000.0,
            statement,
            "ClickHouse insert done"
        );
        Ok(())
    }
}

/// The error ClickHouse writes into a response body whose status was already 200 (a
/// statement that failed mid-output).
pub fn trailing_error(text: &str) -> Option<HttpError> {
    let at = text.rfind("Code: ")?;
    let tail = &text[at..];
    if !tail.contains("DB::Exception") {
        return None;
    }
    Some(parse_error(tail))
}

fn parse_error(text: &str) -> HttpError {
    let code = text
        .strip_prefix("Code: ")
        .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|digits| digits.parse().ok())
        .unwrap_or(0);
    HttpError::Server {
        code,
        message: text.to_string(),
    }
}

fn server_error(status: http::StatusCode, text: &str) -> HttpError {
    if text.starts_with("Code: ") {
        return parse_error(text);
    }
    HttpError::Server {
        code: 0,
        message: format!("HTTP {status}: {text}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_pads_like_the_standard() {
        assert_eq!(base64(b"default:"), "ZGVmYXVsdDo=");
        assert_eq!(base64(b"ab"), "YWI=");
        assert_eq!(base64(b"abc"), "YWJj");
    }

    #[test]
    fn errors_are_parsed_and_classified() {
        let error = parse_error("Code: 60, e.displayText() = DB::Exception: Table x doesn't exist");
        assert_eq!(error.code(), Some(60));
        assert_eq!(error.failure(), Failure::Permanent);
        assert_eq!(classify_code(242), Failure::Unavailable);
        assert_eq!(classify_code(159), Failure::Transient);
        assert!(
            trailing_error("1\n2\nCode: 241, e.displayText() = DB::Exception: Memory limit")
                .is_some()
        );
        assert!(trailing_error("Code: plain text").is_none());
    }
}
