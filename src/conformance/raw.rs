//! A tiny HTTP/1.1 client over a plain TCP stream, for what a full client would normalise away:
//! repeated or missing `Host`, repeated `Origin`, `HEAD`, bodies that never arrive, requests
//! that are not HTTP. Every read is bounded in size and time.
//! It must not normalise or repair the request it is given: method, target and header lines go
//! out as the check wrote them (it adds only `Content-Length` to a body that has none, and
//! `Connection: close`).

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{timeout, Instant};

use super::reply::Reply;

/// The most bytes read from one response.
const MAX_RESPONSE: usize = 1024 * 1024;

/// A request to write as given: the request line and header lines in order (nothing added but
/// `Connection: close` and, with a body, its `Content-Length`).
#[derive(Debug, Clone)]
pub(crate) struct RawRequest {
    pub(crate) method: String,
    pub(crate) target: String,
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) body: Vec<u8>,
}

impl RawRequest {
    pub(crate) fn new(method: &str, target: impl Into<String>) -> Self {
        Self {
            method: method.to_owned(),
            target: target.into(),
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    pub(crate) fn header(mut self, name: &str, value: impl Into<String>) -> Self {
        self.headers.push((name.to_owned(), value.into()));
        self
    }

    pub(crate) fn bytes(&self) -> Vec<u8> {
        let mut out = format!("{} {} HTTP/1.1\r\n", self.method, self.target);
        for (name, value) in &self.headers {
            out.push_str(&format!("{name}: {value}\r\n"));
        }
        if !self.body.is_empty()
            && !self
                .headers
                .iter()
                .any(|(n, _)| n.eq_ignore_ascii_case("content-length"))
        {
            out.push_str(&format!("content-length: {}\r\n", self.body.len()));
        }
        out.push_str("connection: close\r\n\r\n");
        let mut bytes = out.into_bytes();
        bytes.extend_from_slice(&self.body);
        bytes
    }
}

/// What came back on a raw connection.
#[derive(Debug)]
pub(crate) struct RawAnswer {
    /// The bytes read before the server closed (or the time or size limit).
    pub(crate) bytes: Vec<u8>,
    /// Whether the server closed the connection (end of stream, or a reset).
    pub(crate) closed: bool,
}

impl RawAnswer {
    /// The response, if the bytes hold one.
    pub(crate) fn reply(&self, head_request: bool) -> Option<Reply> {
        parse(&self.bytes, head_request)
    }
}

/// When [`exchange`] stops reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Until {
    /// Once a whole response came (or the server closed).
    Response,
    /// Only once the server closed the connection.
    Closed,
}

/// Connects to `authority` (`host:port`), writes `bytes`, and reads until a whole response came
/// (or, with [`Until::Closed`], until the server closes the connection), `limit` passes, or
/// [`MAX_RESPONSE`] bytes came. The write runs alongside the read, so a server that answers
/// before reading everything is still heard. `head_request` says whether the response has a
/// body.
pub(crate) async fn exchange(
    authority: &str,
    bytes: Vec<u8>,
    limit: Duration,
    until: Until,
    head_request: bool,
) -> Result<RawAnswer, String> {
    let stream = timeout(limit, TcpStream::connect(authority))
        .await
        .map_err(|_| format!("no connection to {authority} within {limit:?}"))?
        .map_err(|err| format!("cannot connect to {authority}: {err}"))?;
    let (mut read, mut write) = stream.into_split();
    let writer = tokio::spawn(async move {
        // A server may close before taking every byte (a refused oversized head): not an error
        // here, what it answered is what counts.
        let _ = write.write_all(&bytes).await;
        let _ = write.flush().await;
        // Keep the write half open: shutting it down would end a request whose body is meant
        // to be short of its Content-Length.
        write
    });
    let deadline = Instant::now() + limit;
    let mut out = Vec::new();
    let mut buf = vec![0u8; 16 * 1024];
    let mut closed = false;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() || out.len() >= MAX_RESPONSE {
            break;
        }
        match timeout(left, read.read(&mut buf)).await {
            Err(_) => break,
            Ok(Ok(0)) | Ok(Err(_)) => {
                closed = true;
                break;
            }
            Ok(Ok(n)) => {
                out.extend_from_slice(buf.get(..n).unwrap_or_default());
                if until == Until::Response && response_len(&out, head_request).is_some() {
                    break;
                }
            }
        }
    }
    writer.abort();
    Ok(RawAnswer { bytes: out, closed })
}

/// Sends `request` to `authority` and parses the response.
pub(crate) async fn send(
    authority: &str,
    request: &RawRequest,
    limit: Duration,
) -> Result<Reply, String> {
    let head = request.method.eq_ignore_ascii_case("HEAD");
    let answer = exchange(authority, request.bytes(), limit, Until::Response, head).await?;
    answer.reply(head).ok_or_else(|| {
        if answer.bytes.is_empty() {
            "no response (the connection was closed or timed out unanswered)".to_owned()
        } else {
            let start = answer.bytes.get(..80).unwrap_or(&answer.bytes);
            format!(
                "not an HTTP response: {:?}",
                super::reply::redact(&String::from_utf8_lossy(start))
            )
        }
    })
}

/// The length of the whole response at the start of `bytes`, once it is all there (`None` while
/// it is not, and for a body that ends only with the connection).
fn response_len(bytes: &[u8], head_request: bool) -> Option<usize> {
    let split = bytes.windows(4).position(|w| w == b"\r\n\r\n")?;
    let reply = parse(bytes.get(..split + 4)?, true)?;
    let start = split + 4;
    let no_body = head_request || reply.status < 200 || reply.status == 204 || reply.status == 304;
    if no_body {
        return Some(start);
    }
    if reply
        .header("transfer-encoding")
        .is_some_and(|te| te.to_ascii_lowercase().contains("chunked"))
    {
        let mut at = start;
        loop {
            let rest = bytes.get(at..)?;
            let line_end = rest.windows(2).position(|w| w == b"\r\n")?;
            let size_text = std::str::from_utf8(rest.get(..line_end)?).ok()?;
            let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
            at += line_end + 2;
            if size == 0 {
                // The trailer section ends with an empty line.
                let rest = bytes.get(at..)?;
                let end = rest.windows(2).position(|w| w == b"\r\n")?;
                if end == 0 {
                    return Some(at + 2);
                }
                let trailers_end = rest.windows(4).position(|w| w == b"\r\n\r\n")?;
                return Some(at + trailers_end + 4);
            }
            at += size + 2;
            if bytes.len() < at {
                return None;
            }
        }
    }
    let length: usize = reply.header("content-length")?.parse().ok()?;
    (bytes.len() >= start + length).then_some(start + length)
}

/// Parses one HTTP/1.1 response from `bytes` (a body delimited by `Content-Length`, chunked, or
/// the end of the connection; none for a `HEAD` request or a 1xx/204/304 status).
pub(crate) fn parse(bytes: &[u8], head_request: bool) -> Option<Reply> {
    let split = bytes.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(bytes.get(..split)?).ok()?;
    let rest = bytes.get(split + 4..).unwrap_or_default();
    let mut lines = head.split("\r\n");
    let status_line = lines.next()?;
    let mut parts = status_line.splitn(3, ' ');
    if !parts.next()?.starts_with("HTTP/1.") {
        return None;
    }
    let status: u16 = parts.next()?.parse().ok()?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let reply = Reply {
        status,
        headers,
        body: Vec::new(),
    };
    let no_body = head_request || status < 200 || status == 204 || status == 304;
    let body = if no_body {
        Vec::new()
    } else if reply
        .header("transfer-encoding")
        .is_some_and(|te| te.to_ascii_lowercase().contains("chunked"))
    {
        dechunk(rest)?
    } else if let Some(length) = reply.header("content-length") {
        let length: usize = length.parse().ok()?;
        rest.get(..length.min(rest.len()))?.to_vec()
    } else {
        rest.to_vec()
    };
    Some(Reply { body, ..reply })
}

/// Decodes a chunked body (as far as it arrived).
fn dechunk(mut rest: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line_end = rest.windows(2).position(|w| w == b"\r\n")?;
        let size_text = std::str::from_utf8(rest.get(..line_end)?).ok()?;
        let size_text = size_text.split(';').next()?.trim();
        let size = usize::from_str_radix(size_text, 16).ok()?;
        rest = rest.get(line_end + 2..)?;
        if size == 0 {
            return Some(out);
        }
        let chunk = rest.get(..size.min(rest.len()))?;
        out.extend_from_slice(chunk);
        if chunk.len() < size {
            return Some(out);
        }
        rest = rest.get(size..)?.strip_prefix(b"\r\n").unwrap_or_default();
    }
}

/// Percent-encodes `text` for a query component (everything but the unreserved characters).
pub(crate) fn query_escape(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn responses_parse_with_each_body_framing() {
        let fixed = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nVary: Origin\r\n\r\nhiXX";
        let reply = parse(fixed, false).unwrap();
        assert_eq!((reply.status, reply.body.as_slice()), (200, &b"hi"[..]));
        assert_eq!(reply.header("vary"), Some("Origin"));
        let chunked = b"HTTP/1.1 404 Not Found\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n";
        assert_eq!(parse(chunked, false).unwrap().body, b"abcde");
        let head = b"HTTP/1.1 405 Method Not Allowed\r\ncontent-length: 30\r\n\r\n";
        assert_eq!(parse(head, true).unwrap().status, 405);
        assert!(parse(b"garbage", false).is_none());
        // Whole responses are told from partial ones.
        assert_eq!(response_len(fixed, false), Some(fixed.len() - 2));
        assert_eq!(response_len(&fixed[..fixed.len() - 3], false), None);
        assert_eq!(response_len(chunked, false), Some(chunked.len()));
        assert_eq!(response_len(&chunked[..chunked.len() - 2], false), None);
        assert_eq!(response_len(head, true), Some(head.len()));
        assert_eq!(response_len(b"HTTP/1.1 200 OK\r\n\r\nbody", false), None);
        assert_eq!(query_escape("https://a.b"), "https%3A%2F%2Fa.b");
    }
}
