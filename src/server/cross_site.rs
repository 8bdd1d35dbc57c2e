//! Cross-site requests on the server's user routes: the rule every HTTP stack applies before a
//! user route runs, as a pure function over the request's header lines ([`check`]).
//! It must not authenticate anyone or read a body: it runs on the header lines before the host's
//! authenticator does.
//!
//! User routes are authenticated by the host (`http::Authenticator`), which may use cookie
//! sessions. A browser sends a cookie with a request that another site's page starts, and
//! `SameSite` does not stop a sibling subdomain (it is the same site). What stops such a request
//! here:
//!
//! - **JSON only.** A state-changing route that takes a body (`POST {prefix}/link`, Obico's
//!   `POST /api/v1/printer_discovery/` and `POST /api/v1/one_time_passcodes/`) needs
//!   `Content-Type: application/json` (parameters allowed, the media type in any case); a
//!   bodyless one (`POST {prefix}/codes`) takes that or none. Anything else is
//!   `415 unsupported_media_type`. An HTML form can only send `text/plain`,
//!   `application/x-www-form-urlencoded` or `multipart/form-data`, and a script may send JSON to
//!   another origin only after a CORS preflight that the server never grants.
//! - **Origin.** A state-changing request whose `Origin` is present and is not allowed is
//!   `403 bad_origin`: with configured origins ([`ServerConfig::allow_origin`]), it must be one
//!   of them; without, it must name the request's own host (`Host`, or the authority of an
//!   absolute-form target), the scheme's default port implied. A repeated `Origin`, or
//!   `Origin: null` (sandboxed and privacy-sensitive contexts), is refused too. Browsers send
//!   `Origin` with every cross-origin request and every `POST`; other clients send none and are
//!   not affected. This covers the bodyless `POST` a page may send without a preflight
//!   (`fetch(url, {method: "POST", mode: "no-cors", credentials: "include"})`).
//!
//! Reads (`GET {prefix}/discover`, `GET {prefix}/link/{id}`) are not checked: another origin
//! cannot read their answers (no CORS), and they change nothing an attacker could use.
//!
//! ```
//! use lanlink::server::cross_site::{check, RequestHead, UserRoute};
//! use lanlink::Refusal;
//! let form = RequestHead {
//!     content_type: &["application/x-www-form-urlencoded"],
//!     origin: &["https://evil.example"],
//!     host: &["cloud.example"],
//! };
//! assert_eq!(check(UserRoute::WithBody, &form, &[]), Err(Refusal::BadOrigin));
//! let page = RequestHead {
//!     content_type: &["application/json; charset=utf-8"],
//!     origin: &["https://cloud.example"],
//!     host: &["cloud.example"],
//! };
//! assert_eq!(check(UserRoute::WithBody, &page, &[]), Ok(()));
//! let text = RequestHead { content_type: &["text/plain"], ..page };
//! assert_eq!(check(UserRoute::WithBody, &text, &[]), Err(Refusal::UnsupportedMediaType));
//! // A client that is not a browser sends no Origin.
//! let cli = RequestHead { content_type: &[], origin: &[], host: &["cloud.example"] };
//! assert_eq!(check(UserRoute::Bodyless, &cli, &[]), Ok(()));
//! ```
//!
//! [`ServerConfig::allow_origin`]: super::ServerConfig::allow_origin

use crate::error::Refusal;

/// The media type every request body is in.
pub const JSON: &str = "application/json";

/// What a user route does, for [`check`].
///
/// ```
/// use lanlink::server::cross_site::{check, RequestHead, UserRoute};
/// // A read is never checked, whatever it carries.
/// let foreign = RequestHead { content_type: &["text/plain"], origin: &["https://evil.example"], host: &["cloud.example"] };
/// assert_eq!(check(UserRoute::Read, &foreign, &[]), Ok(()));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum UserRoute {
    /// A read (`GET`): not checked.
    Read,
    /// A state-changing request with a JSON body (`POST {prefix}/link`).
    WithBody,
    /// A state-changing request without a body (`POST {prefix}/codes`).
    Bodyless,
}

/// The header lines of a request that [`check`] reads, each header's lines in the order received
/// (values as text; an HTTP stack drops or passes lines that are not text as it likes: a line
/// that is not text is never a valid one).
///
/// ```
/// use lanlink::server::cross_site::{check, RequestHead, UserRoute};
/// use lanlink::Refusal;
/// // Two Origin lines: which one is the page's cannot be told.
/// let twice = RequestHead { origin: &["https://cloud.example", "https://evil.example"], host: &["cloud.example"], ..Default::default() };
/// assert_eq!(check(UserRoute::Bodyless, &twice, &[]), Err(Refusal::BadOrigin));
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct RequestHead<'a> {
    /// Every `Content-Type` line.
    pub content_type: &'a [&'a str],
    /// Every `Origin` line.
    pub origin: &'a [&'a str],
    /// The request's own authority: the authority of an absolute-form target (which stands for
    /// `Host`, RFC 9112 §3.2.2), else every `Host` line.
    pub host: &'a [&'a str],
}

/// Whether a request for `route` may run: `Err(`[`Refusal::BadOrigin`]`)` for an `Origin` that
/// is not allowed (checked first), `Err(`[`Refusal::UnsupportedMediaType`]`)` for a body that is
/// not declared JSON; see the [module docs](self). `allowed_origins` are the configured origins
/// ([`ServerConfig::allowed_origins`](super::ServerConfig::allowed_origins)); when empty, only
/// the request's own host is allowed. Neither refusal is a guess (never counted).
///
/// ```
/// use lanlink::server::cross_site::{check, RequestHead, UserRoute};
/// use lanlink::Refusal;
/// let app = RequestHead { content_type: &["application/json"], origin: &["https://app.example"], host: &["api.example"] };
/// let own = RequestHead { origin: &["https://api.example"], ..app };
/// // With configured origins, only those are allowed, not even the host's own.
/// let allowed = ["https://app.example".to_owned()];
/// assert_eq!(check(UserRoute::WithBody, &app, &allowed), Ok(()));
/// assert_eq!(check(UserRoute::WithBody, &own, &allowed), Err(Refusal::BadOrigin));
/// assert_eq!(check(UserRoute::WithBody, &own, &[]), Ok(()), "with none configured, the host's own is");
/// ```
pub fn check(
    route: UserRoute,
    head: &RequestHead<'_>,
    allowed_origins: &[String],
) -> Result<(), Refusal> {
    if route == UserRoute::Read {
        return Ok(());
    }
    match head.origin {
        [] => {}
        [origin] if origin_allowed(origin, head.host, allowed_origins) => {}
        _ => return Err(Refusal::BadOrigin),
    }
    match (route, head.content_type) {
        (UserRoute::Bodyless, []) => Ok(()),
        (_, [content_type]) if is_json(content_type) => Ok(()),
        _ => Err(Refusal::UnsupportedMediaType),
    }
}

/// Whether a `Content-Type` value is `application/json`, with any parameters
/// (`application/json; charset=utf-8`), the media type in any case (RFC 9110 §8.3.1).
///
/// ```
/// use lanlink::server::cross_site::is_json;
/// assert!(is_json("Application/JSON;charset=UTF-8"));
/// assert!(!is_json("text/plain"));
/// assert!(!is_json("application/json-seq"));
/// assert!(!is_json("application/json, text/plain"));
/// ```
pub fn is_json(content_type: &str) -> bool {
    let media_type = content_type.split(';').next().unwrap_or_default();
    media_type.trim().eq_ignore_ascii_case(JSON)
}

/// Whether `origin` may make a state-changing request to a server reached as `host`: one of
/// `allowed` (when any is configured) or, when none is, the origin of `host` itself (its scheme's
/// default port implied: `https://cloud.example` is the origin of `cloud.example` and of
/// `cloud.example:443`). ASCII case-insensitive; a repeated or missing `host` allows no origin
/// but a configured one.
///
/// ```
/// use lanlink::server::cross_site::origin_allowed;
/// assert!(origin_allowed("https://cloud.example", &["cloud.example"], &[]));
/// assert!(origin_allowed("http://127.0.0.1:8080", &["127.0.0.1:8080"], &[]));
/// assert!(!origin_allowed("https://app.cloud.example", &["cloud.example"], &[]));
/// assert!(!origin_allowed("null", &["cloud.example"], &[]));
/// let allowed = ["https://app.example".to_owned()];
/// assert!(origin_allowed("https://app.example", &["api.example"], &allowed));
/// // Configured origins replace the own-host rule.
/// assert!(!origin_allowed("https://api.example", &["api.example"], &allowed));
/// ```
pub fn origin_allowed(origin: &str, host: &[&str], allowed: &[String]) -> bool {
    let Some(origin) = Origin::parse(origin) else {
        return false;
    };
    if !allowed.is_empty() {
        return allowed
            .iter()
            .filter_map(|a| Origin::parse(a))
            .any(|a| a == origin);
    }
    match host {
        [host] => origin.is_of(host),
        _ => false,
    }
}

/// Whether `origin` is a serialized web origin as [`origin_allowed`] reads it:
/// `http://` or `https://`, then a host with an optional port, nothing else.
///
/// ```
/// use lanlink::server::cross_site::valid_origin;
/// assert!(valid_origin("https://cloud.example"));
/// assert!(valid_origin("http://[::1]:8080"));
/// assert!(!valid_origin("cloud.example"));
/// assert!(!valid_origin("https://cloud.example/"));
/// assert!(!valid_origin("null"));
/// ```
pub fn valid_origin(origin: &str) -> bool {
    Origin::parse(origin).is_some()
}

/// An origin, lowercased, with its scheme's default port dropped.
#[derive(Debug, PartialEq, Eq)]
struct Origin {
    https: bool,
    authority: String,
}

impl Origin {
    fn parse(text: &str) -> Option<Self> {
        let text = text.trim().to_ascii_lowercase();
        let (https, rest) = if let Some(rest) = text.strip_prefix("https://") {
            (true, rest)
        } else {
            (false, text.strip_prefix("http://")?)
        };
        let authority = normalize_authority(rest, https)?;
        Some(Self { https, authority })
    }

    /// Whether this is the origin of a request whose `Host` is `host` (either scheme: a server
    /// behind a TLS-terminating proxy does not know which the browser used).
    fn is_of(&self, host: &str) -> bool {
        normalize_authority(&host.trim().to_ascii_lowercase(), self.https)
            .is_some_and(|host| host == self.authority)
    }
}

/// `host[:port]` without the default port of the scheme, or `None` if it is no authority (empty,
/// a path, user info, a character that is not printable ASCII).
fn normalize_authority(text: &str, https: bool) -> Option<String> {
    let valid = !text.is_empty()
        && text.bytes().all(|b| b.is_ascii_graphic())
        && !text.contains(['/', '?', '#', '@', '\\']);
    if !valid {
        return None;
    }
    let default = if https { ":443" } else { ":80" };
    let authority = text.strip_suffix(default).unwrap_or(text);
    (!authority.is_empty() && !authority.ends_with(':')).then(|| authority.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head<'a>(content_type: &'a [&'a str], origin: &'a [&'a str]) -> RequestHead<'a> {
        RequestHead {
            content_type,
            origin,
            host: &["cloud.example"],
        }
    }

    #[test]
    fn a_body_must_be_declared_json() {
        let json = [
            "application/json",
            "application/json; charset=utf-8",
            "Application/JSON;charset=UTF-8",
            " application/json ",
        ];
        for content_type in json {
            let lines = [content_type];
            assert_eq!(check(UserRoute::WithBody, &head(&lines, &[]), &[]), Ok(()));
            assert_eq!(check(UserRoute::Bodyless, &head(&lines, &[]), &[]), Ok(()));
        }
        let not_json = [
            "text/plain",
            "text/plain; charset=utf-8",
            "application/x-www-form-urlencoded",
            "multipart/form-data; boundary=x",
            "text/json",
            "application/json-seq",
            "application/merge-patch+json",
            "application/json, text/plain",
            "",
        ];
        for content_type in not_json {
            let lines = [content_type];
            for route in [UserRoute::WithBody, UserRoute::Bodyless] {
                assert_eq!(
                    check(route, &head(&lines, &[]), &[]),
                    Err(Refusal::UnsupportedMediaType),
                    "{content_type:?} {route:?}"
                );
            }
        }
        // Missing: only a bodyless route; repeated: never.
        assert_eq!(
            check(UserRoute::WithBody, &head(&[], &[]), &[]),
            Err(Refusal::UnsupportedMediaType)
        );
        assert_eq!(check(UserRoute::Bodyless, &head(&[], &[]), &[]), Ok(()));
        let twice = ["application/json", "application/json"];
        assert_eq!(
            check(UserRoute::Bodyless, &head(&twice, &[]), &[]),
            Err(Refusal::UnsupportedMediaType)
        );
        // Reads are not checked.
        assert_eq!(
            check(UserRoute::Read, &head(&["text/plain"], &["null"]), &[]),
            Ok(())
        );
    }

    #[test]
    fn an_origin_must_be_the_own_host_or_a_configured_one() {
        let json = ["application/json"];
        let own = [
            "https://cloud.example",
            "http://cloud.example",
            "HTTPS://Cloud.Example",
            "https://cloud.example:443",
        ];
        for origin in own {
            let lines = [origin];
            assert_eq!(
                check(UserRoute::WithBody, &head(&json, &lines), &[]),
                Ok(()),
                "{origin}"
            );
        }
        let foreign = [
            "https://evil.example",
            "https://app.cloud.example",
            "https://cloud.example.evil.example",
            "https://cloud.example:8443",
            "http://cloud.example:443",
            "null",
            "",
            "cloud.example",
            "https://cloud.example/",
            "https://user@cloud.example",
            "ftp://cloud.example",
        ];
        for origin in foreign {
            let lines = [origin];
            for route in [UserRoute::WithBody, UserRoute::Bodyless] {
                assert_eq!(
                    check(route, &head(&json, &lines), &[]),
                    Err(Refusal::BadOrigin),
                    "{origin:?} {route:?}"
                );
            }
        }
        // Repeated, or no single host to compare with.
        let twice = ["https://cloud.example", "https://cloud.example"];
        assert_eq!(
            check(UserRoute::WithBody, &head(&json, &twice), &[]),
            Err(Refusal::BadOrigin)
        );
        let origin = ["https://cloud.example"];
        for host in [&[][..], &["cloud.example", "cloud.example"][..]] {
            let head = RequestHead {
                host,
                ..head(&json, &origin)
            };
            assert_eq!(
                check(UserRoute::Bodyless, &head, &[]),
                Err(Refusal::BadOrigin)
            );
        }
        // Ports: a host with an explicit port is that port's origin.
        let head8080 = |origin| RequestHead {
            content_type: &[],
            origin,
            host: &["127.0.0.1:8080"],
        };
        assert_eq!(
            check(
                UserRoute::Bodyless,
                &head8080(&["http://127.0.0.1:8080"]),
                &[]
            ),
            Ok(())
        );
        assert_eq!(
            check(UserRoute::Bodyless, &head8080(&["http://127.0.0.1"]), &[]),
            Err(Refusal::BadOrigin)
        );
        // Configured origins replace the own-host rule.
        let allowed = ["https://app.example".to_owned()];
        assert_eq!(
            check(
                UserRoute::WithBody,
                &head(&json, &["https://app.example"]),
                &allowed
            ),
            Ok(())
        );
        assert_eq!(
            check(
                UserRoute::WithBody,
                &head(&json, &["https://cloud.example"]),
                &allowed
            ),
            Err(Refusal::BadOrigin)
        );
        // The origin is checked before the content type.
        assert_eq!(
            check(
                UserRoute::WithBody,
                &head(&["text/plain"], &["https://evil.example"]),
                &[]
            ),
            Err(Refusal::BadOrigin)
        );
    }
}
