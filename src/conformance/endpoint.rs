//! The agent-endpoint checks, over raw HTTP/1.1 (so that repeated, missing and odd headers reach
//! the endpoint as written).
//! They reach the endpoint only over the network, through the raw client of [`super::raw`], never
//! through the crate's endpoint function.
//!
//! Serving the secret changes nothing at the agent but its events (`SecretServed`; refusals
//! record `SecretRefused`): the window and discovery go on, so no check here depends on the
//! order of the others. The secret the kit fetches is used only to check that the popup page
//! does not hold it.

use std::collections::BTreeMap;

use super::raw::{self, query_escape, RawRequest};
use super::reply::{self, Reply};
use super::{CheckSpec, EndpointTarget, Recorder, Report, Verdict};
use crate::id::InstanceId;

const SECRET: &str = "`GET {prefix}/secret?instance_id={instance_id}`";
const PREFLIGHT: &str = "`OPTIONS {prefix}/secret` (CORS preflight)";
const POPUP: &str =
    "`GET {prefix}/popup?instance_id={instance_id}&origin={origin}` (browser fallback)";
const REFUSALS: &str = "Refusals";

const fn spec(id: &'static str, section: &'static str, expects: &'static str) -> CheckSpec {
    CheckSpec {
        id,
        section,
        expects,
    }
}

/// Every agent-endpoint check, in the order the kit makes them.
pub const ENDPOINT_CHECKS: &[CheckSpec] = &[
    spec("endpoint.secret.ok", SECRET, "200 {\"local_secret\": 64 hex}, JSON, Cache-Control: no-store, no Access-Control-Allow-Origin"),
    spec("endpoint.secret.allowed_origin", SECRET, "200 with Access-Control-Allow-Origin: <that origin> (never *) and Vary: Origin"),
    spec("endpoint.secret.disallowed_origin", SECRET, "403 bad_origin, no Access-Control-Allow-Origin"),
    spec("endpoint.secret.repeated_origin", SECRET, "403 bad_origin for two Origin lines"),
    spec("endpoint.secret.wrong_instance", SECRET, "404 wrong_instance for another instance's id"),
    spec("endpoint.secret.unparsable_instance", SECRET, "404 wrong_instance or 400 malformed for an instance_id that is not a UUID"),
    spec("endpoint.secret.missing_instance", SECRET, "400 malformed without instance_id"),
    spec("endpoint.secret.repeated_instance", SECRET, "400 malformed for instance_id given twice"),
    spec("endpoint.secret.rebinding_host", SECRET, "403 bad_host for a Host that is neither an IP literal nor a configured name"),
    spec("endpoint.secret.missing_host", SECRET, "403 bad_host (or the HTTP layer's 400) without Host"),
    spec("endpoint.secret.repeated_host", SECRET, "403 bad_host (or the HTTP layer's 400) for two Host lines"),
    spec("endpoint.secret.host_name", SECRET, "200 for a configured host name in Host"),
    spec("endpoint.secret.head", REFUSALS, "405 (HEAD refused)"),
    spec("endpoint.secret.wrong_method", REFUSALS, "405 method_not_allowed for POST"),
    spec("endpoint.preflight.ok", PREFLIGHT, "204 with Access-Control-Allow-Origin: <origin>, Access-Control-Allow-Methods: GET, Access-Control-Max-Age: 60, Vary: Origin"),
    spec("endpoint.preflight.private_network", PREFLIGHT, "204 with Access-Control-Allow-Private-Network: true when asked"),
    spec("endpoint.preflight.disallowed_origin", PREFLIGHT, "403 bad_origin, no CORS allow headers"),
    spec("endpoint.preflight.bad_host", PREFLIGHT, "403 bad_host, no CORS allow headers"),
    spec("endpoint.preflight.repeated_host", PREFLIGHT, "403 bad_host (or the HTTP layer's 400) for two Host lines, no CORS allow headers"),
    spec("endpoint.preflight.repeated_origin", PREFLIGHT, "403 bad_origin for two Origin lines, no CORS allow headers"),
    spec("endpoint.preflight.wrong_method", PREFLIGHT, "403 bad_origin or bad_host for Access-Control-Request-Method: POST, no CORS allow headers"),
    spec("endpoint.popup.ok", POPUP, "200 HTML without the secret, with the popup's headers (CSP with a fresh nonce, X-Frame-Options, nosniff, no-store, Referrer-Policy, CORP), no Access-Control-Allow-Origin"),
    spec("endpoint.popup.not_top_level", POPUP, "403 HTML page with the popup's headers for Sec-Fetch-Dest: iframe"),
    spec("endpoint.popup.bad_origin", POPUP, "403 HTML page with the popup's headers for an origin that is not configured"),
    spec("endpoint.popup.missing_origin", POPUP, "403 HTML page with the popup's headers without origin"),
    spec("endpoint.popup.repeated_instance", POPUP, "400 HTML page with the popup's headers for instance_id given twice"),
    spec("endpoint.popup.wrong_instance", POPUP, "404 HTML page with the popup's headers, posting lanlink-refused wrong_instance"),
    spec("endpoint.popup.head", POPUP, "405 (HEAD refused)"),
    spec("endpoint.not_found", REFUSALS, "404 not_found (JSON) for an unknown path under the prefix"),
];

/// An origin no agent allows.
const EVIL: &str = "http://conformance-kit.invalid";
/// A host name no agent allows (DNS rebinding).
const REBIND: &str = "rebind.conformance-kit.invalid";

struct Session<'t> {
    target: &'t EndpointTarget,
    /// `host:port`, to connect to and to send as `Host`.
    authority: String,
    /// The URL's port, for `Host: name:port`.
    port: u16,
    /// The URL's path and the prefix.
    path: String,
    rec: Recorder,
}

pub(crate) async fn run(target: &EndpointTarget) -> Report {
    let mut rec = Recorder::new(ENDPOINT_CHECKS, &target.opted_out);
    let parsed = reqwest::Url::parse(&target.url)
        .map_err(|err| format!("bad URL {:?}: {err}", target.url))
        .and_then(|url| {
            if url.scheme() != "http" {
                return Err("the endpoint's URL must be plain http://".to_owned());
            }
            let host = url.host_str().ok_or("the URL has no host")?.to_owned();
            let port = url.port_or_known_default().unwrap_or(80);
            let authority = if host.contains(':') && !host.starts_with('[') {
                format!("[{host}]:{port}")
            } else {
                format!("{host}:{port}")
            };
            let path = format!("{}{}", url.path().trim_end_matches('/'), target.prefix);
            Ok((authority, port, path))
        });
    let (authority, port, path) = match parsed {
        Ok(parsed) => parsed,
        Err(why) => {
            for spec in ENDPOINT_CHECKS {
                rec.skip(spec.id, why.clone());
            }
            return rec.finish();
        }
    };
    let mut session = Session {
        target,
        authority,
        port,
        path,
        rec,
    };
    session.run().await;
    session.rec.finish()
}

impl Session<'_> {
    async fn run(&mut self) {
        let secret = self.secret().await;
        self.preflight().await;
        self.popup(secret.as_deref()).await;
        let reply = self.get(&format!("{}/no-such-route", self.path), &[]).await;
        self.check(
            "endpoint.not_found",
            reply.and_then(|r| reply::refusal(&r, 404, "not_found")),
        );
    }

    fn check(&mut self, id: &'static str, verdict: Verdict) -> bool {
        self.rec.verdict(id, verdict)
    }

    /// Sends `request` as it is (the caller writes `Host`).
    async fn send(&self, request: RawRequest) -> Result<Reply, String> {
        raw::send(&self.authority, &request, self.target.timeout).await
    }

    /// `GET target` with `Host` and then `headers`.
    async fn get(&self, target: &str, headers: &[(&str, &str)]) -> Result<Reply, String> {
        self.send(self.with_host("GET", target, headers)).await
    }

    fn with_host(&self, method: &str, target: &str, headers: &[(&str, &str)]) -> RawRequest {
        let mut request = RawRequest::new(method, target).header("host", self.authority.clone());
        for (name, value) in headers {
            request = request.header(name, *value);
        }
        request
    }

    fn secret_target(&self, query: &str) -> String {
        format!("{}/secret{query}", self.path)
    }

    fn id(&self) -> String {
        self.target.instance_id.to_string()
    }

    /// The secret route's checks; returns the secret, if it was served.
    async fn secret(&mut self) -> Option<String> {
        let own = self.secret_target(&format!("?instance_id={}", self.id()));
        let origin = self.target.origin.clone();

        let reply = self.get(&own, &[]).await;
        let mut secret = None;
        let verdict = reply.and_then(|r| {
            let served = served_secret(&r)?;
            if let Some(allow) = r.header("access-control-allow-origin") {
                return Err(format!(
                    "200 with Access-Control-Allow-Origin {allow:?} for a request without Origin"
                ));
            }
            secret = Some(served);
            Ok("200 local_secret (64 hex), no-store".to_owned())
        });
        self.check("endpoint.secret.ok", verdict);

        let reply = self.get(&own, &[("origin", &origin)]).await;
        let verdict = reply.and_then(|r| {
            if r.status != 200 {
                return Err(r.summary());
            }
            exact_allow_origin(&r, &origin)?;
            vary_origin(&r)?;
            served_secret(&r)?;
            Ok(format!(
                "200 with Access-Control-Allow-Origin {origin}, Vary: Origin"
            ))
        });
        self.check("endpoint.secret.allowed_origin", verdict);

        let reply = self.get(&own, &[("origin", EVIL)]).await;
        self.check(
            "endpoint.secret.disallowed_origin",
            reply.and_then(|r| {
                let got = reply::refusal(&r, 403, "bad_origin")?;
                no_cors(&r)?;
                Ok(got)
            }),
        );
        let reply = self
            .get(&own, &[("origin", &origin), ("origin", &origin)])
            .await;
        self.check(
            "endpoint.secret.repeated_origin",
            reply.and_then(|r| reply::refusal(&r, 403, "bad_origin")),
        );

        let other = InstanceId::generate(&mut crate::os_rng());
        let reply = self
            .get(&self.secret_target(&format!("?instance_id={other}")), &[])
            .await;
        self.check(
            "endpoint.secret.wrong_instance",
            reply.and_then(|r| reply::refusal(&r, 404, "wrong_instance")),
        );
        let reply = self
            .get(&self.secret_target("?instance_id=not-an-instance-id"), &[])
            .await;
        self.check(
            "endpoint.secret.unparsable_instance",
            reply.and_then(|r| match r.status {
                400 => reply::refusal(&r, 400, "malformed"),
                _ => reply::refusal(&r, 404, "wrong_instance"),
            }),
        );
        let reply = self.get(&self.secret_target(""), &[]).await;
        self.check(
            "endpoint.secret.missing_instance",
            reply.and_then(|r| reply::refusal(&r, 400, "malformed")),
        );
        let twice = self.secret_target(&format!("?instance_id={0}&instance_id={0}", self.id()));
        let reply = self.get(&twice, &[]).await;
        self.check(
            "endpoint.secret.repeated_instance",
            reply.and_then(|r| reply::refusal(&r, 400, "malformed")),
        );

        let rebind = format!("{REBIND}:{}", self.port);
        let reply = self
            .send(RawRequest::new("GET", own.clone()).header("host", rebind))
            .await;
        self.check(
            "endpoint.secret.rebinding_host",
            reply.and_then(|r| reply::refusal(&r, 403, "bad_host")),
        );
        let reply = self.send(RawRequest::new("GET", own.clone())).await;
        self.check(
            "endpoint.secret.missing_host",
            reply.and_then(|r| bad_host_or_http_400(&r)),
        );
        let reply = self.get(&own, &[("host", &self.authority.clone())]).await;
        self.check(
            "endpoint.secret.repeated_host",
            reply.and_then(|r| bad_host_or_http_400(&r)),
        );
        match self.target.host_name.clone() {
            Some(name) => {
                let host = format!("{name}:{}", self.port);
                let reply = self
                    .send(RawRequest::new("GET", own.clone()).header("host", host.clone()))
                    .await;
                self.check(
                    "endpoint.secret.host_name",
                    reply.and_then(|r| served_secret(&r).map(|_| format!("200 for Host {host}"))),
                );
            }
            None => self
                .rec
                .skip("endpoint.secret.host_name", "no configured host name given"),
        }

        let reply = self.send(self.with_host("HEAD", &own, &[])).await;
        self.check(
            "endpoint.secret.head",
            reply.and_then(|r| match r.status {
                405 => Ok("405".to_owned()),
                _ => Err(r.summary()),
            }),
        );
        let reply = self
            .send(self.with_host("POST", &own, &[("content-length", "0")]))
            .await;
        self.check(
            "endpoint.secret.wrong_method",
            reply.and_then(|r| reply::refusal(&r, 405, "method_not_allowed")),
        );
        secret
    }

    async fn preflight(&mut self) {
        let target = self.secret_target("");
        let origin = self.target.origin.clone();
        let preflight = |origin: &str, method: &str| {
            vec![
                ("origin".to_owned(), origin.to_owned()),
                (
                    "access-control-request-method".to_owned(),
                    method.to_owned(),
                ),
            ]
        };
        let options = |headers: Vec<(String, String)>, host: &str| {
            let mut request = RawRequest::new("OPTIONS", target.clone()).header("host", host);
            for (name, value) in headers {
                request = request.header(&name, value);
            }
            request
        };
        let host = self.authority.clone();

        let reply = self.send(options(preflight(&origin, "GET"), &host)).await;
        self.check(
            "endpoint.preflight.ok",
            reply.and_then(|r| preflight_allowed(&r, &origin)),
        );
        let mut asking = preflight(&origin, "GET");
        asking.push((
            "access-control-request-private-network".to_owned(),
            "true".to_owned(),
        ));
        let reply = self.send(options(asking, &host)).await;
        self.check(
            "endpoint.preflight.private_network",
            reply.and_then(|r| {
                preflight_allowed(&r, &origin)?;
                match r.headers("access-control-allow-private-network").as_slice() {
                    ["true"] => {
                        Ok("204 with Access-Control-Allow-Private-Network: true".to_owned())
                    }
                    other => Err(format!(
                        "204 with Access-Control-Allow-Private-Network {other:?}"
                    )),
                }
            }),
        );
        let reply = self.send(options(preflight(EVIL, "GET"), &host)).await;
        self.check(
            "endpoint.preflight.disallowed_origin",
            reply.and_then(|r| refused_without_cors(&r, &["bad_origin"])),
        );
        let rebind = format!("{REBIND}:{}", self.port);
        let reply = self.send(options(preflight(&origin, "GET"), &rebind)).await;
        self.check(
            "endpoint.preflight.bad_host",
            reply.and_then(|r| refused_without_cors(&r, &["bad_host"])),
        );
        let mut twice = preflight(&origin, "GET");
        twice.push(("host".to_owned(), host.clone()));
        let reply = self.send(options(twice, &host)).await;
        self.check(
            "endpoint.preflight.repeated_host",
            reply.and_then(|r| {
                no_cors(&r)?;
                bad_host_or_http_400(&r)
            }),
        );
        let mut twice = preflight(&origin, "GET");
        twice.push(("origin".to_owned(), origin.clone()));
        let reply = self.send(options(twice, &host)).await;
        self.check(
            "endpoint.preflight.repeated_origin",
            reply.and_then(|r| refused_without_cors(&r, &["bad_origin"])),
        );
        let reply = self.send(options(preflight(&origin, "POST"), &host)).await;
        self.check(
            "endpoint.preflight.wrong_method",
            reply.and_then(|r| refused_without_cors(&r, &["bad_origin", "bad_host"])),
        );
    }

    async fn popup(&mut self, secret: Option<&str>) {
        let id = self.id();
        let origin = query_escape(&self.target.origin);
        let path = self.path.clone();
        let popup = |query: String| format!("{path}/popup?{query}");
        let navigate = [
            ("sec-fetch-dest", "document"),
            ("sec-fetch-mode", "navigate"),
        ];
        let own = popup(format!("instance_id={id}&origin={origin}"));

        let first = self.get(&own, &navigate).await;
        let second = self.get(&own, &navigate).await;
        let verdict = first.and_then(|r| {
            let nonce = popup_page(&r, 200)?;
            if let Some(secret) = secret {
                if String::from_utf8_lossy(&r.body)
                    .to_ascii_lowercase()
                    .contains(secret)
                {
                    return Err("200, but the page holds the secret".to_owned());
                }
            }
            let again = second.and_then(|s| popup_page(&s, 200))?;
            if again == nonce {
                return Err("200, but two loads carry the same CSP nonce".to_owned());
            }
            Ok(match secret {
                Some(_) => "200 HTML without the secret, fresh nonce, popup headers".to_owned(),
                None => "200 HTML, fresh nonce, popup headers (the secret was not served, so \
                         its absence from the page is not checked)"
                    .to_owned(),
            })
        });
        self.check("endpoint.popup.ok", verdict);

        let framed = [("sec-fetch-dest", "iframe"), ("sec-fetch-mode", "navigate")];
        let reply = self.get(&own, &framed).await;
        self.check(
            "endpoint.popup.not_top_level",
            reply.and_then(|r| popup_page(&r, 403).map(|_| "403 HTML".to_owned())),
        );
        let evil = popup(format!("instance_id={id}&origin={}", query_escape(EVIL)));
        let reply = self.get(&evil, &navigate).await;
        self.check(
            "endpoint.popup.bad_origin",
            reply.and_then(|r| popup_page(&r, 403).map(|_| "403 HTML".to_owned())),
        );
        let reply = self
            .get(&popup(format!("instance_id={id}")), &navigate)
            .await;
        self.check(
            "endpoint.popup.missing_origin",
            reply.and_then(|r| popup_page(&r, 403).map(|_| "403 HTML".to_owned())),
        );
        let twice = popup(format!("instance_id={id}&instance_id={id}&origin={origin}"));
        let reply = self.get(&twice, &navigate).await;
        self.check(
            "endpoint.popup.repeated_instance",
            reply.and_then(|r| popup_page(&r, 400).map(|_| "400 HTML".to_owned())),
        );
        let other = InstanceId::generate(&mut crate::os_rng());
        let wrong = popup(format!("instance_id={other}&origin={origin}"));
        let reply = self.get(&wrong, &navigate).await;
        self.check(
            "endpoint.popup.wrong_instance",
            reply.and_then(|r| {
                popup_page(&r, 404)?;
                let page = String::from_utf8_lossy(&r.body);
                if page.contains("lanlink-refused") && page.contains("wrong_instance") {
                    Ok("404 HTML posting lanlink-refused wrong_instance".to_owned())
                } else {
                    Err("404 HTML without a lanlink-refused wrong_instance message".to_owned())
                }
            }),
        );
        let reply = self.send(self.with_host("HEAD", &own, &navigate)).await;
        self.check(
            "endpoint.popup.head",
            reply.and_then(|r| match r.status {
                405 => Ok("405".to_owned()),
                _ => Err(r.summary()),
            }),
        );
    }
}

/// A served secret: `200 {"local_secret": 64 hex}` as a JSON response (no-store).
fn served_secret(reply: &Reply) -> Result<String, String> {
    let map = reply::json_object(reply, 200)?;
    match map.get("local_secret").and_then(|v| v.as_str()) {
        Some(secret) if reply::is_hex64(secret) => Ok(secret.to_owned()),
        _ => Err(format!(
            "200 without a 64-lowercase-hex local_secret: {}",
            reply.excerpt()
        )),
    }
}

/// Exactly one `Access-Control-Allow-Origin`, and it is `origin` (never `*`).
fn exact_allow_origin(reply: &Reply, origin: &str) -> Result<(), String> {
    match reply.headers("access-control-allow-origin").as_slice() {
        [allowed] if *allowed == origin => Ok(()),
        other => Err(format!(
            "{} with Access-Control-Allow-Origin {other:?}, not exactly {origin:?}",
            reply.status
        )),
    }
}

fn vary_origin(reply: &Reply) -> Result<(), String> {
    if reply
        .tokens("vary")
        .iter()
        .any(|t| t.eq_ignore_ascii_case("origin"))
    {
        Ok(())
    } else {
        Err(format!(
            "{} with Vary {:?}, without Origin",
            reply.status,
            reply.headers("vary")
        ))
    }
}

/// No CORS header that would let a page read the answer.
fn no_cors(reply: &Reply) -> Result<(), String> {
    for name in [
        "access-control-allow-origin",
        "access-control-allow-private-network",
        "access-control-allow-methods",
    ] {
        if let Some(value) = reply.header(name) {
            return Err(format!("{} with {name}: {value}", reply.status));
        }
    }
    Ok(())
}

fn refused_without_cors(reply: &Reply, codes: &[&str]) -> Verdict {
    let got = reply::refusal_of(reply, 403, codes)?;
    no_cors(reply)?;
    Ok(got)
}

/// `403 bad_host`, or a `400` refused by the HTTP layer before the endpoint (RFC 9112 §3.2
/// asks a server to answer a missing or repeated `Host` so), without the secret.
fn bad_host_or_http_400(reply: &Reply) -> Verdict {
    if reply.status == 400 && reply.error_code().is_none() {
        let body = String::from_utf8_lossy(&reply.body);
        if body.contains("local_secret") {
            return Err("400 with a local_secret".to_owned());
        }
        return Ok("400 from the HTTP layer".to_owned());
    }
    reply::refusal(reply, 403, "bad_host")
}

fn preflight_allowed(reply: &Reply, origin: &str) -> Verdict {
    if reply.status != 204 {
        return Err(reply.summary());
    }
    exact_allow_origin(reply, origin)?;
    let methods = reply.tokens("access-control-allow-methods");
    if !methods.iter().any(|m| m == "GET") {
        return Err(format!("204 with Access-Control-Allow-Methods {methods:?}"));
    }
    match reply.headers("access-control-max-age").as_slice() {
        ["60"] => {}
        other => return Err(format!("204 with Access-Control-Max-Age {other:?}, not 60")),
    }
    vary_origin(reply)?;
    Ok(format!("204 for {origin}, GET, max-age 60, Vary: Origin"))
}

/// A popup response with `status`: an HTML page with every header `PROTOCOL.md` gives it, and
/// no `Access-Control-Allow-Origin`. Returns the CSP nonce.
fn popup_page(reply: &Reply, status: u16) -> Result<String, String> {
    if reply.status != status {
        return Err(reply.summary());
    }
    let content_type = reply.header("content-type").unwrap_or("");
    if !content_type.to_ascii_lowercase().starts_with("text/html") {
        return Err(format!(
            "{status} with Content-Type {content_type:?}, not text/html"
        ));
    }
    let wanted = [
        ("x-frame-options", "DENY"),
        ("x-content-type-options", "nosniff"),
        ("referrer-policy", "no-referrer"),
        ("cross-origin-resource-policy", "same-origin"),
    ];
    for (name, value) in wanted {
        match reply.headers(name).as_slice() {
            [got] if got.eq_ignore_ascii_case(value) => {}
            other => return Err(format!("{status} with {name} {other:?}, not {value:?}")),
        }
    }
    reply::no_store(reply)?;
    if let Some(allow) = reply.header("access-control-allow-origin") {
        return Err(format!(
            "{status} with Access-Control-Allow-Origin {allow:?}"
        ));
    }
    let csp = match reply.headers("content-security-policy").as_slice() {
        [csp] => csp.to_string(),
        other => return Err(format!("{status} with Content-Security-Policy {other:?}")),
    };
    popup_csp(&csp).map_err(|why| format!("{status} with Content-Security-Policy {csp:?}: {why}"))
}

/// The popup's policy exactly (in any order), with one nonce for scripts and styles.
fn popup_csp(csp: &str) -> Result<String, String> {
    let mut directives = BTreeMap::new();
    for directive in csp.split(';').map(str::trim).filter(|d| !d.is_empty()) {
        let (name, value) = directive.split_once(' ').unwrap_or((directive, ""));
        if directives
            .insert(name.to_ascii_lowercase(), value.trim().to_owned())
            .is_some()
        {
            return Err(format!("{name} given twice"));
        }
    }
    let nonce = directives
        .get("script-src")
        .and_then(|v| v.strip_prefix("'nonce-"))
        .and_then(|v| v.strip_suffix('\''))
        .filter(|n| {
            !n.is_empty()
                && n.bytes().all(|b| {
                    b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'=' | b'-' | b'_')
                })
        })
        .ok_or("script-src is not one nonce")?
        .to_owned();
    let nonce_source = format!("'nonce-{nonce}'");
    let expected: BTreeMap<String, String> = [
        ("default-src", "'none'"),
        ("script-src", nonce_source.as_str()),
        ("style-src", nonce_source.as_str()),
        ("connect-src", "'self'"),
        ("base-uri", "'none'"),
        ("form-action", "'none'"),
        ("frame-ancestors", "'none'"),
    ]
    .into_iter()
    .map(|(n, v)| (n.to_owned(), v.to_owned()))
    .collect();
    if directives == expected {
        Ok(nonce)
    } else {
        Err("not the popup's policy".to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_popup_policy_is_read_exactly() {
        let good = "default-src 'none'; script-src 'nonce-abc1'; style-src 'nonce-abc1'; \
                    connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";
        assert_eq!(popup_csp(good).unwrap(), "abc1");
        assert!(popup_csp(&good.replace("style-src 'nonce-abc1'", "style-src 'nonce-x'")).is_err());
        assert!(popup_csp(&good.replace("connect-src 'self'", "connect-src *")).is_err());
        assert!(popup_csp(&format!("{good}; img-src *")).is_err());
    }
}
