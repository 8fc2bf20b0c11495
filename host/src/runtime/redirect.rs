//! Redirects of a guest's outgoing requests, which the host follows on its behalf: for
//! a response to one hop, whether there is a next hop, and what it is.
//!
//! [`Redirects`] holds the redirect state of one guest request and decides, from a
//! response's status and `Location`, what happens next ([`Next`]): the response goes to
//! the guest as it is; or the host sends the next [`Hop`] (its `Location` resolved
//! against the current URL as RFC 3986 §5.2 says; the method changes as the Fetch
//! standard says: a POST after 301 or 302, and anything but GET or HEAD after 303,
//! becomes a GET without body, every other request keeps its method and body; the
//! headers the host added are removed, and on a hop to another origin the guest's
//! credentials too); or the redirect is not followed (the [`MAX_REDIRECTS`]th was
//! already followed, a body that was not kept would have to be sent again, the
//! `Location` is not an http or https URL with a host, or it carries a user name or
//! password) and the guest gets it with the reason. This file is pure
//! logic: it sends nothing, and it must not decide which hosts are granted or which
//! credentials a host gets; that is `egress`'s, which checks and completes every hop.
//! It must not log or keep header values (the guest's credentials are among them).

use http::header::{
    AUTHORIZATION, CONTENT_ENCODING, CONTENT_LANGUAGE, CONTENT_LENGTH, CONTENT_LOCATION,
    CONTENT_TYPE, COOKIE, HOST, PROXY_AUTHORIZATION, TRANSFER_ENCODING,
};
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri};

/// The most redirects the host follows for one request; the guest gets the next one.
pub(super) const MAX_REDIRECTS: usize = 5;

/// The largest request body the host keeps so that a 307 or 308 can send it again.
/// Only a body whose length the guest declared (`content-length`) is kept: it is read
/// whole before the request goes out. A larger one, or one of unknown length, streams
/// as it is written, and a redirect that must send it again goes to the guest.
pub(super) const MAX_RESENT_BODY_BYTES: u64 = 64 * 1024;

/// Headers that carry credentials whoever set them: dropped on a hop to another origin,
/// as browsers (the Fetch standard) and curl do. The manifest's `[[auth]]` header names
/// are treated the same way.
const CREDENTIAL_HEADERS: [HeaderName; 3] = [AUTHORIZATION, PROXY_AUTHORIZATION, COOKIE];

/// Headers that describe a request's body; they go when a redirect drops the body.
const BODY_HEADERS: [HeaderName; 6] = [
    CONTENT_LENGTH,
    CONTENT_TYPE,
    CONTENT_ENCODING,
    CONTENT_LANGUAGE,
    CONTENT_LOCATION,
    TRANSFER_ENCODING,
];

/// The request line and headers of one hop; its body travels beside it.
#[derive(Clone, Debug, PartialEq)]
pub(super) struct Hop {
    pub(super) method: Method,
    pub(super) uri: Uri,
    pub(super) headers: HeaderMap,
}

/// What the response to a hop leads to.
#[derive(Debug, PartialEq)]
pub(super) enum Next {
    /// Not a redirect the host follows (another status, or a 3xx without `Location`):
    /// the response goes to the guest as it came.
    Deliver,
    /// Send `hop` next, with the request's body if `keeps_body`, else with none.
    Follow { hop: Hop, keeps_body: bool },
    /// A redirect the host does not follow, for this reason (lowercase, naming the
    /// `Location`): the guest gets the response with the reason as its body, which the
    /// SDK's `error_for_status` reports as a permanent `HTTP 3xx: reason`.
    Refuse(String),
}

/// The redirect state of one guest request.
#[derive(Debug)]
pub(super) struct Redirects {
    followed: usize,
    body_kept: bool,
    credential_headers: Vec<HeaderName>,
}

impl Redirects {
    /// The state before the first hop. `body_kept`: the request's body (empty counts)
    /// can be sent again; `auth_headers`: the names the manifest's `[[auth]]` rules
    /// set, which carry credentials like `Authorization` does.
    pub(super) fn new(body_kept: bool, auth_headers: impl IntoIterator<Item = HeaderName>) -> Self {
        let mut credential_headers = CREDENTIAL_HEADERS.to_vec();
        for name in auth_headers {
            if !credential_headers.contains(&name) {
                credential_headers.push(name);
            }
        }
        Self {
            followed: 0,
            body_kept,
            credential_headers,
        }
    }

    /// What follows the response (`status`, `location`) to `hop`, whose headers
    /// `host_added` the host set (they are removed from the next hop; `egress` adds
    /// those of the next hop's host again). Counts a followed redirect.
    pub(super) fn next(
        &mut self,
        hop: &Hop,
        status: StatusCode,
        location: Option<&HeaderValue>,
        host_added: &[HeaderName],
    ) -> Next {
        if !is_followed(status) {
            return Next::Deliver;
        }
        let Some(location) = location else {
            return Next::Deliver;
        };
        let Some(target) = location
            .to_str()
            .ok()
            .and_then(|text| resolve(&hop.uri, text))
        else {
            return Next::Refuse(format!(
                "redirect not followed: its location {:?} is not an http or https URL with \
                 a host (and without user name or password)",
                String::from_utf8_lossy(location.as_bytes())
            ));
        };
        // The query is left out of what is said: a redirect's may carry a token (GitHub's
        // archive redirects do), and the reason ends up in the job's error.
        let shown = without_query(&target);
        if self.followed >= MAX_REDIRECTS {
            return Next::Refuse(format!(
                "redirect not followed: the host follows at most {MAX_REDIRECTS} redirects \
                 for one request, and this is one more (to {shown})"
            ));
        }
        let to_get = becomes_get(status, &hop.method);
        if !to_get && !self.body_kept {
            return Next::Refuse(format!(
                "redirect not followed: a {} to {shown} sends the request's body again, and \
                 the host keeps only bodies of declared length up to \
                 {MAX_RESENT_BODY_BYTES} bytes for that",
                status.as_u16()
            ));
        }
        let mut headers = hop.headers.clone();
        for name in host_added {
            headers.remove(name);
        }
        if !same_origin(&hop.uri, &target) {
            for name in &self.credential_headers {
                headers.remove(name);
            }
        }
        if to_get {
            for name in &BODY_HEADERS {
                headers.remove(name);
            }
            // No body from here on: an empty one can always be sent again.
            self.body_kept = true;
        }
        if headers.contains_key(HOST)
            && let Some(authority) = target.authority()
            && let Ok(value) = HeaderValue::from_str(authority.as_str())
        {
            headers.insert(HOST, value);
        }
        self.followed += 1;
        Next::Follow {
            hop: Hop {
                method: if to_get {
                    Method::GET
                } else {
                    hop.method.clone()
                },
                uri: target,
                headers,
            },
            keeps_body: !to_get,
        }
    }
}

/// Whether `status` is a redirect the host follows: 301, 302, 303, 307 and 308 (not
/// 300, whose choice is the client's, nor 304 and 305).
fn is_followed(status: StatusCode) -> bool {
    matches!(
        status,
        StatusCode::MOVED_PERMANENTLY
            | StatusCode::FOUND
            | StatusCode::SEE_OTHER
            | StatusCode::TEMPORARY_REDIRECT
            | StatusCode::PERMANENT_REDIRECT
    )
}

/// Whether a redirect with `status` turns a request with `method` into a GET without
/// body, as the Fetch standard (HTTP-redirect fetch, step 12) and curl do: a POST after
/// 301 or 302, anything but GET or HEAD after 303. Every other method keeps going as it
/// is: a PATCH or DELETE quietly turned into a GET would answer 200 for a write that
/// never happened.
fn becomes_get(status: StatusCode, method: &Method) -> bool {
    match status {
        StatusCode::MOVED_PERMANENTLY | StatusCode::FOUND => *method == Method::POST,
        StatusCode::SEE_OTHER => *method != Method::GET && *method != Method::HEAD,
        _ => false,
    }
}

/// `uri` as `scheme://authority/path`, without its query: for messages and the log.
pub(super) fn without_query(uri: &Uri) -> String {
    match (uri.scheme_str(), uri.authority()) {
        (Some(scheme), Some(authority)) => format!("{scheme}://{authority}{}", uri.path()),
        _ => uri.path().to_owned(),
    }
}

/// Whether `a` and `b` have the same scheme, host and port (the default one if none).
fn same_origin(a: &Uri, b: &Uri) -> bool {
    let origin = |uri: &Uri| {
        let scheme = uri.scheme_str().map(str::to_ascii_lowercase);
        let port = uri.port_u16().or(match scheme.as_deref() {
            Some("http") => Some(80),
            Some("https") => Some(443),
            _ => None,
        });
        let host = uri
            .host()
            .map(|host| host.trim_end_matches('.').to_ascii_lowercase());
        (scheme, host, port)
    };
    origin(a) == origin(b)
}

/// `reference` (a `Location` value) resolved against `base`, as RFC 3986 §5.2.2 says;
/// `None` unless the result is an `http` or `https` URL with a host, no user name or
/// password, and a port (if any) that is a number up to 65535. The host comes out in
/// lowercase. The fragment is dropped: it is never sent.
fn resolve(base: &Uri, reference: &str) -> Option<Uri> {
    let reference = reference.trim();
    let reference = reference
        .split_once('#')
        .map_or(reference, |(before, _)| before);
    let (scheme, rest) = match reference.split_once(':') {
        Some((scheme, rest))
            if scheme.starts_with(|c: char| c.is_ascii_alphabetic())
                && scheme
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.')) =>
        {
            (Some(scheme), rest)
        }
        _ => (None, reference),
    };
    let (authority, rest) = match rest.strip_prefix("//") {
        Some(after) => {
            let end = after.find(['/', '?']).unwrap_or(after.len());
            (Some(&after[..end]), &after[end..])
        }
        None => (None, rest),
    };
    let (path, query) = match rest.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (rest, None),
    };

    let base_scheme = base.scheme_str()?;
    let base_authority = base.authority()?.as_str();
    let (scheme, authority, path, query) = match (scheme, authority) {
        (Some(scheme), _) => (scheme, authority?, remove_dot_segments(path), query),
        (None, Some(authority)) => (base_scheme, authority, remove_dot_segments(path), query),
        (None, None) if path.is_empty() => (
            base_scheme,
            base_authority,
            base.path().to_owned(),
            query.or(base.query()),
        ),
        (None, None) if path.starts_with('/') => (
            base_scheme,
            base_authority,
            remove_dot_segments(path),
            query,
        ),
        (None, None) => {
            let base_path = base.path();
            let directory = &base_path[..base_path.rfind('/').map_or(0, |slash| slash + 1)];
            let merged = if directory.is_empty() {
                format!("/{path}")
            } else {
                format!("{directory}{path}")
            };
            (
                base_scheme,
                base_authority,
                remove_dot_segments(&merged),
                query,
            )
        }
    };
    let scheme = scheme.to_ascii_lowercase();
    // A user name or password in a redirect would be sent as part of the authority
    // (and could make a granted host's name the user name of another's).
    if authority.is_empty() || authority.contains('@') || !matches!(&*scheme, "http" | "https") {
        return None;
    }
    let authority = authority.to_ascii_lowercase();
    let path = if path.is_empty() { "/" } else { path.as_str() };
    let text = match query {
        Some(query) => format!("{scheme}://{authority}{path}?{query}"),
        None => format!("{scheme}://{authority}{path}"),
    };
    let uri: Uri = text.parse().ok()?;
    let authority = uri.authority()?;
    // `http` keeps a port it cannot read (`:99999`) and answers no port for it, which
    // would match the scheme's default port in the policy.
    let has_port = authority
        .as_str()
        .rsplit_once(':')
        .is_some_and(|(_, after)| !after.contains(']'));
    if has_port && authority.port_u16().is_none() {
        return None;
    }
    uri.host()
        .is_some_and(|host| !host.is_empty())
        .then_some(uri)
}

/// `path` without its `.` and `..` segments (RFC 3986 §5.2.4).
fn remove_dot_segments(path: &str) -> String {
    let mut input = path;
    let mut output: Vec<&str> = Vec::new();
    while !input.is_empty() {
        if let Some(rest) = input.strip_prefix("../") {
            input = rest;
        } else if let Some(rest) = input.strip_prefix("./") {
            input = rest;
        } else if input.starts_with("/./") {
            input = &input[2..];
        } else if input == "/." {
            input = "/";
        } else if input.starts_with("/../") || input == "/.." {
            input = if input == "/.." { "/" } else { &input[3..] };
            output.pop();
        } else if input == "." || input == ".." {
            input = "";
        } else {
            // The first segment, with its leading '/' if any, moves to the output.
            let start = usize::from(input.starts_with('/'));
            let end = input[start..]
                .find('/')
                .map_or(input.len(), |at| at + start);
            output.push(&input[..end]);
            input = &input[end..];
        }
    }
    output.concat()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_resolve_as_rfc_3986_says() {
        // RFC 3986 §5.4.1 and §5.4.2 (those a URL with a host can express).
        let base: Uri = "http://a/b/c/d;p?q".parse().unwrap();
        for (reference, expected) in [
            ("g", "http://a/b/c/g"),
            ("./g", "http://a/b/c/g"),
            ("g/", "http://a/b/c/g/"),
            ("/g", "http://a/g"),
            ("//g", "http://g/"),
            ("?y", "http://a/b/c/d;p?y"),
            ("g?y", "http://a/b/c/g?y"),
            ("#s", "http://a/b/c/d;p?q"),
            ("g#s", "http://a/b/c/g"),
            (";x", "http://a/b/c/;x"),
            ("", "http://a/b/c/d;p?q"),
            (".", "http://a/b/c/"),
            ("./", "http://a/b/c/"),
            ("..", "http://a/b/"),
            ("../", "http://a/b/"),
            ("../g", "http://a/b/g"),
            ("../..", "http://a/"),
            ("../../g", "http://a/g"),
            ("../../../g", "http://a/g"),
            ("/./g", "http://a/g"),
            ("/../g", "http://a/g"),
            ("g.", "http://a/b/c/g."),
            ("..g", "http://a/b/c/..g"),
            ("./../g", "http://a/b/g"),
            ("g/./h", "http://a/b/c/g/h"),
            ("g/../h", "http://a/b/c/h"),
            ("g?y/./x", "http://a/b/c/g?y/./x"),
            // Absolute URLs, as GitHub and GitLab send them.
            (
                "https://api.github.com/repositories/42",
                "https://api.github.com/repositories/42",
            ),
            (
                "HTTPS://Codeload.GitHub.com/x",
                "https://codeload.github.com/x",
            ),
            ("http://b:8080/c/../d", "http://b:8080/d"),
            ("//[::1]:8080/x", "http://[::1]:8080/x"),
            ("  /padded  ", "http://a/padded"),
        ] {
            let resolved = resolve(&base, reference).map(|uri| uri.to_string());
            assert_eq!(resolved.as_deref(), Some(expected), "{reference:?}");
        }
    }

    #[test]
    fn locations_that_are_not_urls_with_a_host_resolve_to_nothing() {
        let base: Uri = "https://api.github.com/repos/a/b".parse().unwrap();
        for reference in [
            "mailto:someone@example.com",
            "https:///no-host",
            "http:relative",
            "https://exa mple.com/",
            "/with space",
            "ftp://files.example/x",
            "javascript:alert(1)",
            "https://user@api.github.com/",
            "https://api.github.com:token@evil.example/",
            "//api.github.com:99999/",
            "https://[::1/",
        ] {
            assert_eq!(resolve(&base, reference), None, "{reference:?}");
        }
    }

    #[test]
    fn origins_compare_scheme_host_and_port() {
        let same = |a: &str, b: &str| same_origin(&a.parse().unwrap(), &b.parse().unwrap());
        assert!(same(
            "https://api.github.com/a",
            "https://API.github.com:443/b"
        ));
        assert!(same("http://127.0.0.1:8080/", "http://127.0.0.1:8080/x?y"));
        assert!(!same("http://127.0.0.1:8080/", "http://127.0.0.1:8081/"));
        assert!(!same("https://github.com/", "http://github.com/"));
        assert!(!same("https://github.com/", "https://codeload.github.com/"));
    }

    fn hop(method: Method, url: &str, headers: &[(&str, &str)]) -> Hop {
        Hop {
            method,
            uri: url.parse().unwrap(),
            headers: headers
                .iter()
                .map(|(name, value)| {
                    (
                        HeaderName::from_bytes(name.as_bytes()).unwrap(),
                        HeaderValue::from_str(value).unwrap(),
                    )
                })
                .collect(),
        }
    }

    /// The next hop after `status` with `location`, from a fresh state.
    fn check(current: &Hop, status: u16, location: &str, expected: Next) {
        let mut redirects = Redirects::new(true, []);
        let status = StatusCode::from_u16(status).unwrap();
        let location = HeaderValue::from_str(location).unwrap();
        assert_eq!(
            redirects.next(current, status, Some(&location), &[]),
            expected,
            "{status} to {location:?}"
        );
    }

    #[test]
    fn the_method_changes_as_the_fetch_standard_says() {
        let body_headers = [
            ("content-type", "application/json"),
            ("content-length", "2"),
            ("accept", "application/json"),
        ];
        // (method, status, the next hop's method, whether it keeps the body).
        use Method as M;
        for (method, status, expected, keeps_body) in [
            (M::POST, 301, M::GET, false),
            (M::POST, 302, M::GET, false),
            (M::POST, 303, M::GET, false),
            (M::POST, 307, M::POST, true),
            (M::POST, 308, M::POST, true),
            // A write is never quietly turned into a read, except by 303 ("see other").
            (M::PUT, 301, M::PUT, true),
            (M::PATCH, 302, M::PATCH, true),
            (M::DELETE, 308, M::DELETE, true),
            (M::PUT, 303, M::GET, false),
            (M::PATCH, 303, M::GET, false),
            (M::DELETE, 303, M::GET, false),
            // GET and HEAD stay as they are, whatever the redirect.
            (M::GET, 301, M::GET, true),
            (M::GET, 303, M::GET, true),
            (M::GET, 307, M::GET, true),
            (M::HEAD, 302, M::HEAD, true),
            (M::HEAD, 303, M::HEAD, true),
            (M::HEAD, 308, M::HEAD, true),
        ] {
            let current = hop(method.clone(), "https://a.example/old", &body_headers);
            let headers: &[(&str, &str)] = if keeps_body {
                &body_headers
            } else {
                &[("accept", "application/json")]
            };
            let next = hop(expected, "https://a.example/new", headers);
            let expected = Next::Follow {
                hop: next,
                keeps_body,
            };
            check(&current, status, "/new", expected);
        }
    }

    #[test]
    fn other_statuses_and_redirects_without_location_are_delivered() {
        let current = hop(Method::GET, "https://a.example/", &[]);
        for status in [200, 300, 304, 305, 404, 500] {
            check(&current, status, "/elsewhere", Next::Deliver);
        }
        let mut redirects = Redirects::new(true, []);
        assert_eq!(
            redirects.next(&current, StatusCode::MOVED_PERMANENTLY, None, &[]),
            Next::Deliver
        );
    }

    #[test]
    fn credentials_stay_behind_on_a_hop_to_another_origin() {
        let current = hop(
            Method::GET,
            "https://api.github.com/repos/old/name",
            &[
                ("host", "api.github.com"),
                ("authorization", "Bearer host-added"),
                ("cookie", "session=guest"),
                ("proxy-authorization", "Basic guest"),
                ("private-token", "guest-token"),
                ("accept", "application/vnd.github+json"),
            ],
        );
        let host_added = [AUTHORIZATION];
        let auth_headers = [HeaderName::from_static("private-token")];
        let next = |location: &str| {
            let mut redirects = Redirects::new(true, auth_headers.clone());
            let location = HeaderValue::from_str(location).unwrap();
            match redirects.next(&current, StatusCode::FOUND, Some(&location), &host_added) {
                Next::Follow { hop, .. } => hop,
                other => panic!("{other:?}"),
            }
        };

        // Same origin: the guest's own headers go along; the host's are re-added later.
        let same = next("/repos/new/name");
        assert_eq!(
            same,
            hop(
                Method::GET,
                "https://api.github.com/repos/new/name",
                &[
                    ("host", "api.github.com"),
                    ("cookie", "session=guest"),
                    ("proxy-authorization", "Basic guest"),
                    ("private-token", "guest-token"),
                    ("accept", "application/vnd.github+json"),
                ],
            )
        );
        // Another host, or the same one on another scheme or port: no credentials.
        for (location, host) in [
            (
                "https://codeload.github.com/old/name",
                "codeload.github.com",
            ),
            ("http://api.github.com/x", "api.github.com"),
            ("https://api.github.com:8443/x", "api.github.com:8443"),
        ] {
            let other = next(location);
            assert_eq!(
                other.headers,
                hop(
                    Method::GET,
                    location,
                    &[("host", host), ("accept", "application/vnd.github+json")]
                )
                .headers,
                "{location}"
            );
        }
    }

    #[test]
    fn at_most_5_redirects_are_followed() {
        let mut redirects = Redirects::new(true, []);
        let mut current = hop(Method::GET, "http://a.example/0", &[]);
        for followed in 1..=MAX_REDIRECTS {
            let location = HeaderValue::from_str(&format!("/{followed}")).unwrap();
            match redirects.next(&current, StatusCode::FOUND, Some(&location), &[]) {
                Next::Follow { hop, .. } => current = hop,
                other => panic!("redirect {followed}: {other:?}"),
            }
        }
        assert_eq!(current.uri, "http://a.example/5");
        let location = HeaderValue::from_static("/6");
        assert_eq!(
            redirects.next(&current, StatusCode::FOUND, Some(&location), &[]),
            Next::Refuse(
                "redirect not followed: the host follows at most 5 redirects for one request, \
                 and this is one more (to http://a.example/6)"
                    .into()
            )
        );
        // The query of a redirect is never said: it may hold a token.
        let location = HeaderValue::from_static("/6?token=s3cr3t");
        let refused = redirects.next(&current, StatusCode::FOUND, Some(&location), &[]);
        assert_eq!(
            refused,
            Next::Refuse(
                "redirect not followed: the host follows at most 5 redirects for one request, \
                 and this is one more (to http://a.example/6)"
                    .into()
            )
        );
    }

    #[test]
    fn a_body_that_was_not_kept_is_never_sent_again() {
        let put = hop(Method::PUT, "https://a.example/upload", &[]);
        // A 301 keeps a PUT a PUT, so it too needs the body.
        let mut redirects = Redirects::new(false, []);
        let location = HeaderValue::from_static("/moved");
        assert!(matches!(
            redirects.next(&put, StatusCode::MOVED_PERMANENTLY, Some(&location), &[]),
            Next::Refuse(reason) if reason.starts_with("redirect not followed: a 301 to https://a.example/moved")
        ));
        let location = HeaderValue::from_static("https://b.example/upload");
        let mut redirects = Redirects::new(false, []);
        assert_eq!(
            redirects.next(&put, StatusCode::TEMPORARY_REDIRECT, Some(&location), &[]),
            Next::Refuse(
                "redirect not followed: a 307 to https://b.example/upload sends the request's \
                 body again, and the host keeps only bodies of declared length up to 65536 \
                 bytes for that"
                    .into()
            )
        );
        // A 303 drops the body, so it is followed; then nothing is left to send again.
        let Next::Follow {
            hop: get,
            keeps_body,
        } = redirects.next(&put, StatusCode::SEE_OTHER, Some(&location), &[])
        else {
            panic!("a 303 needs no body");
        };
        assert!(!keeps_body);
        assert!(matches!(
            redirects.next(&get, StatusCode::PERMANENT_REDIRECT, Some(&location), &[]),
            Next::Follow {
                keeps_body: true,
                ..
            }
        ));
    }

    #[test]
    fn a_location_that_is_no_url_is_refused_naming_it() {
        for location in [
            "mailto:x@example.com",
            "ftp://files.example/x",
            "https://user:pass@a.example/",
            "https://a.example:99999/",
        ] {
            check(
                &hop(Method::GET, "https://a.example/", &[]),
                301,
                location,
                Next::Refuse(format!(
                    "redirect not followed: its location {location:?} is not an http or https \
                     URL with a host (and without user name or password)"
                )),
            );
        }
    }
}
