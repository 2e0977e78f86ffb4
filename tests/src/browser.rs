//! Headless Chromium driven over WebDriver, for the console's tests: a small WebDriver
//! client over plain HTTP/1.1 on `std::net` (no HTTP crate), one chromedriver and one
//! Chromium per test binary, shared by its tests one at a time ([`browser`]).
//!
//! chromedriver runs in a process group of its own under a `sh` that holds a pipe from
//! this process: when the test binary exits, the pipe closes and the shell ends the
//! whole group (chromedriver and Chromium) and removes the profile folder, so nothing
//! outlives the tests.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::OnceLock;

use std::time::{Duration, Instant};
use tokio::sync::{Mutex, MutexGuard};

use serde_json::{Value, json};

use crate::free_port;

/// Debian's Chromium and its driver (`scripts/services.sh` installs them).
pub const CHROMIUM: &str = "/usr/bin/chromium";
/// The driver.
pub const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// Flags without which Chromium waits for the network this machine does not have.
const CHROMIUM_ARGS: &[&str] = &[
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--window-size=1280,1000",
];

/// An HTTP answer: status code and body.
#[derive(Debug)]
pub struct HttpAnswer {
    /// The status code.
    pub status: u16,
    /// The body as text.
    pub body: String,
}

/// One HTTP/1.1 request to `host:port` (`Connection: close`), with `headers` and an
/// optional body; reads the whole answer (Content-Length or chunked).
pub fn http_request(
    address: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> std::io::Result<HttpAnswer> {
    let mut stream = TcpStream::connect(address)?;
    stream.set_read_timeout(Some(Duration::from_secs(120)))?;
    let body = body.unwrap_or("");
    let mut request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    if !body.is_empty() {
        request.push_str("Content-Type: application/json\r\n");
    }
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    request.push_str(body);
    stream.write_all(request.as_bytes())?;
    // chromedriver keeps the connection open whatever the request says: read the head,
    // then as many bytes as it announces (or chunks up to the last one).
    let invalid =
        |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_owned());
    let mut raw = Vec::new();
    let mut buffer = [0u8; 16 * 1024];
    let head_end = loop {
        if let Some(at) = raw.windows(4).position(|window| window == b"\r\n\r\n") {
            break at;
        }
        let read = stream.read(&mut buffer)?;
        if read == 0 {
            return Err(invalid(
                "the connection closed before the end of the headers",
            ));
        }
        raw.extend_from_slice(&buffer[..read]);
    };
    let head = String::from_utf8_lossy(&raw[..head_end]).into_owned();
    let mut rest = raw[head_end + 4..].to_vec();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| invalid("no status code"))?;
    let lower = head.to_ascii_lowercase();
    let length_opt = lower
        .lines()
        .find_map(|line| line.strip_prefix("content-length:"))
        .and_then(|value| value.trim().parse::<usize>().ok());
    let chunked = lower.contains("transfer-encoding: chunked");
    loop {
        let complete = match length_opt {
            Some(length) => rest.len() >= length,
            None if chunked => rest.ends_with(b"0\r\n\r\n"),
            None => false,
        };
        if complete {
            break;
        }
        let read = stream.read(&mut buffer)?;
        if read == 0 {
            break;
        }
        rest.extend_from_slice(&buffer[..read]);
    }
    let text = String::from_utf8_lossy(&rest).into_owned();
    let body = if chunked { dechunk(&text) } else { text };
    Ok(HttpAnswer { status, body })
}

/// Decodes a chunked transfer encoding.
fn dechunk(mut rest: &str) -> String {
    let mut body = String::new();
    while let Some((size_line, after)) = rest.split_once("\r\n") {
        let Ok(size) = usize::from_str_radix(size_line.trim(), 16) else {
            break;
        };
        if size == 0 || after.len() < size {
            break;
        }
        body.push_str(&after[..size]);
        rest = after[size..].trim_start_matches("\r\n");
    }
    body
}

/// A chromedriver with one Chromium session.
pub struct Browser {
    driver: String,
    session: String,
    /// Holding it keeps chromedriver alive (see the module doc).
    _keeper: ChildStdin,
    _output: std::io::BufReader<std::process::ChildStdout>,
    _shell: Child,
    /// Where screenshots go: `target/console-screenshots`.
    pub screenshots: PathBuf,
}

static BROWSER: OnceLock<Mutex<Browser>> = OnceLock::new();

/// The test binary's browser, started on first use; tests take turns (a test holds it
/// until it ends, so no other test navigates its tab).
pub async fn browser() -> MutexGuard<'static, Browser> {
    BROWSER
        .get_or_init(|| Mutex::new(Browser::start()))
        .lock()
        .await
}

impl Browser {
    fn start() -> Browser {
        for binary in [CHROMIUM, CHROMEDRIVER] {
            assert!(
                Path::new(binary).exists(),
                "{binary} is missing: `bash scripts/services.sh up` (or `make deps`) installs \
                 Debian's chromium and chromium-driver"
            );
        }
        let started = Instant::now();
        let port = free_port();
        let target = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target");
        let screenshots = target.join("console-screenshots");
        std::fs::create_dir_all(&screenshots).expect("screenshot folder");
        let profile = tempfile::Builder::new()
            .prefix("ferry-chromium-")
            .tempdir()
            .expect("profile folder")
            .keep();
        let log = profile.join("chromedriver.log");
        let mut shell = {
            use std::os::unix::process::CommandExt;
            Command::new("sh")
                .arg("-c")
                // After the pipe closes: end the group (not this shell, which ignores
                // TERM from then on), then remove the profile (Chromium's processes may
                // still be writing to it for a moment while they exit).
                .arg(
                    "\"$1\" --port=\"$2\" --log-path=\"$3\" 2>&1 & read _; \
                     trap '' TERM; kill -TERM 0; wait; \
                     for _ in 1 2 3 4 5; do rm -rf \"$4\" 2>/dev/null && break; sleep 1; done",
                )
                .args([
                    "sh",
                    CHROMEDRIVER,
                    &port.to_string(),
                    &log.display().to_string(),
                    &profile.display().to_string(),
                ])
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .process_group(0)
                .spawn()
                .expect("start chromedriver")
        };
        let keeper = shell.stdin.take().expect("a pipe to the shell");
        let driver = format!("127.0.0.1:{port}");
        // chromedriver says on its standard output when it listens.
        let mut output = std::io::BufReader::new(shell.stdout.take().expect("driver output"));
        let mut said = String::new();
        loop {
            let mut line = String::new();
            let read = std::io::BufRead::read_line(&mut output, &mut line).unwrap_or(0);
            said.push_str(&line);
            if line.contains("started successfully") {
                break;
            }
            assert!(
                read > 0,
                "chromedriver ended before it listened on {driver}: {said} (log {})",
                log.display()
            );
        }
        let mut args: Vec<String> = CHROMIUM_ARGS.iter().map(|arg| (*arg).to_owned()).collect();
        args.push(format!(
            "--user-data-dir={}",
            profile.join("chromium").display()
        ));
        let capabilities = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": CHROMIUM, "args": args},
            "goog:loggingPrefs": {"browser": "ALL"},
        }}});
        let answer = http_request(
            &driver,
            "POST",
            "/session",
            &[],
            Some(&capabilities.to_string()),
        )
        .expect("new session");
        let value: Value = serde_json::from_str(&answer.body).expect("session JSON");
        let session = value["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session: {}", answer.body))
            .to_owned();
        eprintln!(
            "chromium ready in {:.1} s (chromedriver on {driver})",
            started.elapsed().as_secs_f64()
        );
        Browser {
            driver,
            session,
            _keeper: keeper,
            _output: output,
            _shell: shell,
            screenshots,
        }
    }

    /// Calls a WebDriver command of the session; returns its `value`, panicking with
    /// the driver's error.
    pub fn command(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let text = body.map(|body| body.to_string());
        let answer = http_request(
            &self.driver,
            method,
            &format!("/session/{}{path}", self.session),
            &[],
            Some(
                text.as_deref()
                    .unwrap_or(if method == "POST" { "{}" } else { "" }),
            ),
        )
        .unwrap_or_else(|error| panic!("webdriver {method} {path}: {error}"));
        let value: Value = serde_json::from_str(&answer.body)
            .unwrap_or_else(|_| panic!("webdriver {method} {path}: {}", answer.body));
        assert!(
            answer.status < 400,
            "webdriver {method} {path} failed ({}): {}",
            answer.status,
            value["value"]
        );
        value["value"].clone()
    }

    /// Leaves the last test's page (which may poll a server that is gone) for a blank
    /// one, and forgets the console messages so far.
    pub fn reset(&self) {
        self.open("about:blank");
        let _ = self.console_log();
    }

    /// Opens `url`.
    pub fn open(&self, url: &str) {
        self.command("POST", "/url", Some(json!({"url": url})));
    }

    /// Runs `script` (a function body; `arguments` are `args`) and returns its value.
    pub fn run(&self, script: &str, args: Value) -> Value {
        self.command(
            "POST",
            "/execute/sync",
            Some(json!({"script": script, "args": args})),
        )
    }

    /// The text of the element with `id`, or `None` when there is none.
    pub fn text_of(&self, id: &str) -> Option<String> {
        self.run(
            "const e = document.getElementById(arguments[0]); return e ? e.textContent : null;",
            json!([id]),
        )
        .as_str()
        .map(str::to_owned)
    }

    /// How many elements match a CSS `selector` (and are shown).
    pub fn count_visible(&self, selector: &str) -> u64 {
        self.run(
            "return [...document.querySelectorAll(arguments[0])].filter(e => e.offsetParent !== null).length;",
            json!([selector]),
        )
        .as_u64()
        .unwrap_or(0)
    }

    /// The WebDriver reference of the element with `id`.
    fn element(&self, id: &str) -> String {
        let element = self.command(
            "POST",
            "/element",
            Some(json!({"using": "css selector", "value": format!("[id=\"{id}\"]")})),
        );
        element
            .as_object()
            .and_then(|object| object.values().next())
            .and_then(Value::as_str)
            .unwrap_or_else(|| panic!("no element #{id}"))
            .to_owned()
    }

    /// Clicks the element with `id` (a real click through WebDriver).
    pub fn click(&self, id: &str) {
        let element_id = self.element(id);
        self.command("POST", &format!("/element/{element_id}/click"), None);
    }

    /// Types `text` into the element with `id`.
    pub fn type_into(&self, id: &str, text: &str) {
        let element_id = self.element(id);
        self.command(
            "POST",
            &format!("/element/{element_id}/value"),
            Some(json!({"text": text})),
        );
    }

    /// Accepts the open `confirm()` dialog.
    pub fn accept_dialog(&self) {
        self.command("POST", "/alert/accept", None);
    }

    /// Whether a dialog is open.
    pub fn dialog_open(&self) -> bool {
        let answer = http_request(
            &self.driver,
            "GET",
            &format!("/session/{}/alert/text", self.session),
            &[],
            None,
        );
        answer.is_ok_and(|answer| answer.status == 200)
    }

    /// Saves a screenshot as `target/console-screenshots/NAME.png`; returns its path.
    pub fn screenshot(&self, name: &str) -> PathBuf {
        let encoded = self.command("GET", "/screenshot", None);
        let bytes = decode_base64(encoded.as_str().expect("base64 screenshot"));
        let path = self.screenshots.join(format!("{name}.png"));
        std::fs::write(&path, bytes).expect("write screenshot");
        path
    }

    /// The browser's console messages since the last call, as `(level, message)`.
    pub fn console_log(&self) -> Vec<(String, String)> {
        let entries = self.command("POST", "/se/log", Some(json!({"type": "browser"})));
        entries
            .as_array()
            .map(|entries| {
                entries
                    .iter()
                    .map(|entry| {
                        (
                            entry["level"].as_str().unwrap_or("").to_owned(),
                            entry["message"].as_str().unwrap_or("").to_owned(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Fails on any SEVERE (error) message in the browser's console.
    pub fn assert_no_console_errors(&self) {
        let errors: Vec<_> = self
            .console_log()
            .into_iter()
            .filter(|(level, _)| level == "SEVERE")
            .collect();
        assert!(
            errors.is_empty(),
            "{} errors in the browser console, the first: {:?}",
            errors.len(),
            &errors[..errors.len().min(3)]
        );
    }
}

/// Decodes standard base64 (WebDriver screenshots).
fn decode_base64(text: &str) -> Vec<u8> {
    let value = |byte: u8| -> Option<u32> {
        Some(match byte {
            b'A'..=b'Z' => byte - b'A',
            b'a'..=b'z' => byte - b'a' + 26,
            b'0'..=b'9' => byte - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    };
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let mut buffer = 0u32;
    let mut bits = 0;
    for byte in text.bytes() {
        let Some(sextet) = value(byte) else { continue };
        buffer = (buffer << 6) | sextet;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((buffer >> bits) as u8);
            buffer &= (1 << bits) - 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_and_chunked_bodies_decode() {
        assert_eq!(decode_base64("aGVsbG8="), b"hello");
        assert_eq!(decode_base64("aGk="), b"hi");
        assert_eq!(dechunk("5\r\nhello\r\n3\r\n!!!\r\n0\r\n\r\n"), "hello!!!");
    }
}
