//! A response as the checks read it, and the expectations they share.
//! It must not do I/O: the checks fetch the response, and this only reads it.

use serde_json::{Map, Value};

/// A response: status, header lines (lowercase names, in order) and body.
#[derive(Debug, Clone)]
pub(crate) struct Reply {
    pub(crate) status: u16,
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) body: Vec<u8>,
}

impl Reply {
    /// The first value of header `name` (lowercase).
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// Every value of header `name` (lowercase).
    pub(crate) fn headers(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// Every comma-separated token of every line of header `name`, trimmed.
    pub(crate) fn tokens(&self, name: &str) -> Vec<String> {
        self.headers(name)
            .iter()
            .flat_map(|v| v.split(','))
            .map(|t| t.trim().to_owned())
            .filter(|t| !t.is_empty())
            .collect()
    }

    /// The body as text, cut to a short excerpt for a report line, with anything that looks
    /// like a secret, token or code (32 hex digits or more) redacted.
    pub(crate) fn excerpt(&self) -> String {
        let text = redact(&String::from_utf8_lossy(&self.body));
        // One report line per check: no line breaks or other controls from the body.
        let text = text
            .split(|c: char| c.is_whitespace() || c.is_control())
            .filter(|word| !word.is_empty())
            .collect::<Vec<_>>()
            .join(" ");
        let text = text.as_str();
        let mut out: String = text.chars().take(100).collect();
        if text.chars().count() > 100 {
            out.push('…');
        }
        out
    }

    /// `"403 {"error":"x"}"`: the status and a body excerpt.
    pub(crate) fn summary(&self) -> String {
        let excerpt = self.excerpt();
        if excerpt.is_empty() {
            format!("{} (empty body)", self.status)
        } else {
            format!("{} {excerpt}", self.status)
        }
    }

    /// The body as a JSON object.
    pub(crate) fn object(&self) -> Result<Map<String, Value>, String> {
        match serde_json::from_slice::<Value>(&self.body) {
            Ok(Value::Object(map)) => Ok(map),
            Ok(_) => Err(format!(
                "{}: the body is JSON but not an object",
                self.summary()
            )),
            Err(_) => Err(format!("{}: the body is not JSON", self.summary())),
        }
    }

    /// The refusal code of a `{"error": code}` body, if that is what the body is.
    pub(crate) fn error_code(&self) -> Option<String> {
        let map = self.object().ok()?;
        match map.get("error") {
            Some(Value::String(code)) if map.len() == 1 => Some(code.clone()),
            _ => None,
        }
    }

    /// Whether this is `429 {"error":"locked_out"}`.
    pub(crate) fn is_locked_out(&self) -> bool {
        self.status == 429 && self.error_code().as_deref() == Some("locked_out")
    }
}

/// `Content-Type: application/json` (parameters allowed) and `Cache-Control` holding `no-store`:
/// what `PROTOCOL.md` says of every JSON response.
pub(crate) fn json_headers(reply: &Reply) -> Result<(), String> {
    let content_type = reply.header("content-type").unwrap_or("");
    let media = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    if media != "application/json" {
        return Err(format!(
            "{}: Content-Type {content_type:?}, not application/json",
            reply.status
        ));
    }
    no_store(reply)
}

/// `Cache-Control` holds `no-store`.
pub(crate) fn no_store(reply: &Reply) -> Result<(), String> {
    let tokens = reply.tokens("cache-control");
    if tokens.iter().any(|t| t.eq_ignore_ascii_case("no-store")) {
        Ok(())
    } else {
        Err(format!(
            "{}: Cache-Control {:?}, without no-store",
            reply.status,
            reply.headers("cache-control")
        ))
    }
}

/// `status` with exactly `{"error": code}` as a JSON response.
pub(crate) fn refusal(reply: &Reply, status: u16, code: &str) -> Result<String, String> {
    refusal_of(reply, status, &[code])
}

/// `status` with exactly `{"error": c}` for one of `codes`, as a JSON response.
pub(crate) fn refusal_of(reply: &Reply, status: u16, codes: &[&str]) -> Result<String, String> {
    let code = reply.error_code();
    if reply.status != status || !code.as_deref().is_some_and(|c| codes.contains(&c)) {
        return Err(reply.summary());
    }
    json_headers(reply)?;
    Ok(format!("{status} {}", code.unwrap_or_default()))
}

/// `status` with a JSON object body, as a JSON response.
pub(crate) fn json_object(reply: &Reply, status: u16) -> Result<Map<String, Value>, String> {
    if reply.status != status {
        return Err(reply.summary());
    }
    json_headers(reply)?;
    reply.object()
}

/// Whether `text` is 64 lowercase hex digits.
pub(crate) fn is_hex64(text: &str) -> bool {
    text.len() == 64 && text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// A string field of `map`; the error shows the object with anything that looks like a secret,
/// token or code redacted (a report line may be logged).
pub(crate) fn string<'a>(map: &'a Map<String, Value>, field: &str) -> Result<&'a str, String> {
    map.get(field).and_then(Value::as_str).ok_or_else(|| {
        format!(
            "no string field {field:?} in {}",
            redact(&Value::Object(map.clone()).to_string())
        )
    })
}

/// `text` with every run of 32 or more hex digits replaced by `<redacted>`.
pub(crate) fn redact(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut run = String::new();
    let flush = |run: &mut String, out: &mut String| {
        if run.len() >= 32 {
            out.push_str("<redacted>");
        } else {
            out.push_str(run);
        }
        run.clear();
    };
    for c in text.chars() {
        if c.is_ascii_hexdigit() {
            run.push(c);
        } else {
            flush(&mut run, &mut out);
            out.push(c);
        }
    }
    flush(&mut run, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_redacted_from_excerpts() {
        let secret = "9f2c4e6a8b0d1f3e5a7c9b1d3f5e7a9c0b2d4f6e8a0c2e4f6a8b0d2f4e6a8c0b";
        let reply = Reply {
            status: 200,
            headers: Vec::new(),
            body: format!(r#"{{"local_secret":"{secret}","port":8080}}"#).into_bytes(),
        };
        assert_eq!(
            reply.summary(),
            r#"200 {"local_secret":"<redacted>","port":8080}"#
        );
        let page = Reply {
            status: 404,
            headers: Vec::new(),
            body: b"<h1>Not\r\n  Found</h1>\n".to_vec(),
        };
        assert_eq!(page.summary(), "404 <h1>Not Found</h1>");
    }

    #[test]
    fn a_missing_field_error_redacts_the_object_it_shows() {
        let token = "9f2c4e6a8b0d1f3e5a7c9b1d3f5e7a9c0b2d4f6e8a0c2e4f6a8b0d2f4e6a8c0b";
        let Value::Object(map) = serde_json::json!({ "auth_token": token, "attempt": 0 }) else {
            unreachable!("an object")
        };
        let err = string(&map, "instance_id").expect_err("missing");
        assert!(!err.contains(token) && err.contains("<redacted>"), "{err}");
    }
}
