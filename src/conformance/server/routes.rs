//! The server checks of the conventions: routing, raw HTTP, request bodies, announcements
//! refused and accepted.
//! It must not reach the server but over HTTP, as a client would.

use super::*;

impl Session<'_> {
    pub(super) async fn routing(&mut self) {
        let reply = self.call("GET", "/no-such-route", As::Nobody, None).await;
        self.check(
            "server.not_found",
            reply.and_then(|r| reply::refusal(&r, 404, "not_found")),
        );
        let reply = self.call("GET", "/agent/announce", As::Nobody, None).await;
        let allow_post = reply
            .as_ref()
            .map_err(Clone::clone)
            .and_then(|r| allows(r, &["POST"]));
        self.check(
            "server.method_not_allowed",
            reply.and_then(|r| reply::refusal(&r, 405, "method_not_allowed")),
        );
        let reply = self.call("DELETE", "/discover", As::User, None).await;
        let allow_get = reply.and_then(|r| {
            reply::refusal(&r, 405, "method_not_allowed")?;
            allows(&r, &["GET"])
        });
        self.check(
            "server.method_not_allowed.allow",
            allow_post.and_then(|post| allow_get.map(|get| format!("{post}; {get}"))),
        );
        // HEAD: the GET's status and headers, no body.
        let reply = self.call("HEAD", "/discover", As::User, None).await;
        self.check(
            "server.discover.head",
            reply.and_then(|r| {
                if r.status != 200 {
                    return Err(r.summary());
                }
                reply::json_headers(&r)?;
                if !r.body.is_empty() {
                    return Err(format!("200 with a {}-byte body", r.body.len()));
                }
                Ok("200, JSON headers, no body".to_owned())
            }),
        );
        // A forwarding line that is not text, from a peer that is no trusted proxy: ignored.
        let reply = self
            .call_with(
                "GET",
                "/discover",
                As::User,
                &[(
                    "x-forwarded-for",
                    reqwest::header::HeaderValue::from_bytes(b"203.0.113.\xff9")
                        .map_err(|e| e.to_string()),
                )],
            )
            .await;
        self.check(
            "server.forwarded.non_utf8",
            reply.and_then(|r| reply::json_object(&r, 200).map(|_| "200".to_owned())),
        );
    }

    /// The target's `host:port` for raw requests, if it is plain HTTP.
    pub(super) fn authority(&self) -> Result<(String, String), String> {
        let url = reqwest::Url::parse(&self.target.url).map_err(|e| format!("bad URL: {e}"))?;
        if url.scheme() != "http" {
            return Err("needs a plain http:// URL (the kit writes these requests itself)".into());
        }
        let host = url.host_str().ok_or("the URL has no host")?;
        let port = url.port_or_known_default().unwrap_or(80);
        let authority = if host.contains(':') && !host.starts_with('[') {
            format!("[{host}]:{port}")
        } else {
            format!("{host}:{port}")
        };
        let path = format!("{}{}", url.path().trim_end_matches('/'), self.target.prefix);
        Ok((authority, path))
    }

    pub(super) async fn raw_http(&mut self) {
        let (authority, path) = match self.authority() {
            Ok(found) => found,
            Err(why) => {
                self.rec.skip_all(
                    &[
                        "server.http.garbled_request_line",
                        "server.http.headers_too_large",
                        "server.body.request_timeout",
                    ],
                    &why,
                );
                return;
            }
        };
        let limit = self.target.timeout;
        // Not HTTP at all.
        let garbled = raw::exchange(
            &authority,
            b"\x16\x03\x01 hello there\r\n\r\n".to_vec(),
            limit,
            Until::Response,
            false,
        )
        .await
        .map(|answer| match answer.reply(false) {
            Some(r) if (400..500).contains(&r.status) && r.body.is_empty() => {
                Ok(format!("{} (empty body)", r.status))
            }
            Some(r) => Err(r.summary()),
            None if answer.bytes.is_empty() && answer.closed => Ok("closed unanswered".to_owned()),
            None if answer.bytes.is_empty() => Err("no answer, connection left open".into()),
            None => Err(format!(
                "{} bytes that are not an HTTP response",
                answer.bytes.len()
            )),
        });
        self.check("server.http.garbled_request_line", garbled.and_then(|v| v));
        // Headers far over 64 KiB: the reference server's HTTP layer (hyper, whose read buffer
        // is capped at 64 KiB) still reads heads of about 100 KiB, so the kit sends 256 KiB.
        let request = RawRequest::new("GET", format!("{path}/discover"))
            .header("host", authority.clone())
            .header("x-conformance-padding", "a".repeat(256 * 1024));
        let reply = raw::send(&authority, &request, limit).await;
        self.check(
            "server.http.headers_too_large",
            reply.and_then(|r| {
                if r.status == 431 && r.body.is_empty() {
                    Ok("431 (empty body)".to_owned())
                } else {
                    Err(r.summary())
                }
            }),
        );
        // A body that never arrives.
        if self.rec.opted_out("server.body.request_timeout") {
            self.rec
                .skip("server.body.request_timeout", "not waited for the deadline");
            return;
        }
        let deadline = self.target.request_timeout;
        let mut request = RawRequest::new("POST", format!("{path}/agent/redeem"))
            .header("host", authority.clone())
            .header("content-type", "application/json")
            .header("content-length", "100");
        request.body = b"{\"instance_id\":".to_vec();
        let wait = deadline + std::time::Duration::from_secs(5);
        let verdict = raw::exchange(&authority, request.bytes(), wait, Until::Closed, false)
            .await
            .and_then(|answer| {
                let reply = answer
                    .reply(false)
                    .ok_or_else(|| format!("no answer within {wait:?}"))?;
                let got = reply::refusal(&reply, 408, "request_timeout")?;
                if answer.closed {
                    Ok(format!("{got}, connection closed"))
                } else {
                    Err(format!("{got}, but the connection stayed open"))
                }
            });
        self.check("server.body.request_timeout", verdict);
    }

    pub(super) async fn bodies(&mut self) {
        let big = json!({"instance_id": random_id().to_string(), "code": "x".repeat(17 * 1024)});
        let reply = self.post("/agent/redeem", As::Nobody, &big).await;
        self.check(
            "server.body.too_large",
            reply.and_then(|r| reply::refusal(&r, 413, "too_large")),
        );
    }

    pub(super) async fn announce_refusals(&mut self) {
        let reply = self
            .call(
                "POST",
                "/agent/announce",
                As::Nobody,
                Some(b"{\"version\": 1,".to_vec()),
            )
            .await;
        self.check(
            "server.announce.malformed_json",
            reply.and_then(|r| reply::refusal(&r, 400, "malformed")),
        );
        let agent = KitAgent::new();
        /// A check, its refusal code, and how it spoils a good announcement.
        type Edit = (&'static str, &'static str, fn(&mut Value));
        let edits: [Edit; 8] = [
            ("server.announce.unknown_field", "malformed", |v| {
                v["extra"] = json!(1)
            }),
            ("server.announce.missing_field", "malformed", |v| {
                if let Some(map) = v.as_object_mut() {
                    map.remove("presence_key");
                }
            }),
            ("server.announce.wrong_type", "malformed", |v| {
                v["port"] = json!("8080")
            }),
            ("server.announce.bad_instance_id", "malformed", |v| {
                v["instance_id"] = json!("7c1f0a52-3b8e-1d5a-9c2e-1f0b6a7d8e90")
            }),
            (
                "server.announce.unsupported_version",
                "unsupported_version",
                |v| v["version"] = json!(2),
            ),
            ("server.announce.long_field", "bad_field", |v| {
                v["info"]["hostname"] = json!("h".repeat(254))
            }),
            ("server.announce.hidden_character", "bad_field", |v| {
                v["info"]["model"] = json!("Prusa\u{202E}4KM")
            }),
            ("server.announce.not_private_ip", "not_private_ip", |v| {
                v["private_ip"] = json!("192.0.2.1")
            }),
        ];
        for (id, code, edit) in edits {
            let mut value = agent.announce();
            edit(&mut value);
            let status = match code {
                "not_private_ip" => 403,
                _ => 400,
            };
            let reply = self.announce(&value).await;
            self.check(id, reply.and_then(|r| reply::refusal(&r, status, code)));
        }
        // Over 4 KiB (and under 16): whitespace, so it is still JSON.
        let announcement = body(&agent.announce());
        let mut padded = b"{".to_vec();
        padded.extend(std::iter::repeat_n(b' ', 5 * 1024));
        padded.extend_from_slice(announcement.get(1..).unwrap_or_default());
        let reply = self
            .call("POST", "/agent/announce", As::Nobody, Some(padded))
            .await;
        self.check(
            "server.announce.too_large",
            reply.and_then(|r| reply::refusal(&r, 413, "too_large")),
        );
        // A key that derives another id.
        let mut forged = agent.announce();
        forged["presence_key"] = json!(PresenceKey::generate(&mut crate::os_rng())
            .to_hex()
            .as_str());
        let reply = self.announce(&forged).await;
        self.check(
            "server.announce.forged_instance",
            reply.and_then(|r| reply::refusal(&r, 403, "forged_instance")),
        );
    }

    pub(super) async fn announce_ok(&mut self, agent: &KitAgent) -> bool {
        let reply = self.announce(&agent.announce()).await;
        let verdict = reply.and_then(|r| {
            let map = reply::json_object(&r, 200)?;
            let messages = map.get("messages").and_then(Value::as_array);
            let poll = map.get("poll_after_ms").and_then(Value::as_u64);
            let stated = map
                .get("revision")
                .and_then(Value::as_str)
                .map(str::to_owned);
            match (messages, poll) {
                (Some(m), Some(poll)) if m.is_empty() => {
                    Ok((format!("200 no messages, poll_after_ms {poll}"), stated))
                }
                _ => Err(format!("200 {}", r.excerpt())),
            }
        });
        let verdict = verdict.map(|(got, stated)| {
            self.holds = holds_of(stated.as_deref());
            got
        });
        self.check("server.announce.ok", verdict)
    }
}
