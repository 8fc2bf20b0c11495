//! Paginated listings: fetch page after page up to a `max_items`, and return one
//! envelope `{"items": [...], "truncated": bool, "next": cursor or null}` whose cursor,
//! passed back as the payload's `next`, resumes where the listing stopped.
//!
//! Each API pages its own way (a `Link` header, a page number, a token in the body,
//! a GraphQL `endCursor`, a `startAt`); a plugin reduces that to a *position*: a string
//! that fetches one page (the next page's URL, or its token), and hands [`Paging::collect`]
//! a closure fetching the page at a position. This module owns the rest: the count, the
//! cut inside a page, and the cursor, which records the position of the page where the
//! listing stopped and how many of that page's items were already returned. A cursor is
//! opaque (base64url of a small JSON object) and bound to its command; a URL position,
//! from a cursor or from the API, must lie under the plugin's base URL, so that neither
//! a pasted cursor nor a server can send the plugin (and its host-added credentials)
//! elsewhere.
//!
//! ```no_run
//! use honeydew_plugin_sdk::paging::{Fetched, Paging};
//! # fn fetch(url: &str) -> Result<(Vec<String>, Option<String>), honeydew_plugin_sdk::PluginError> { unimplemented!() }
//! # fn run(max_items: Option<u64>, next: Option<String>) -> Result<(), honeydew_plugin_sdk::PluginError> {
//! let base_url = "https://api.github.com";
//! let paging = Paging::new("commits", max_items, next.as_deref())?.urls_under(base_url)?;
//! let first = format!("{base_url}/repos/o/r/commits?per_page={}", paging.page_size(100));
//! let page = paging.collect(|position| {
//!     let (items, next) = fetch(position.unwrap_or(&first))?;
//!     Ok(Fetched { items, next })
//! })?;
//! # Ok(()) }
//! ```

use serde::{Deserialize, Serialize};

use crate::PluginError;
use crate::http::Response;

/// How many items a listing returns when the payload gives no `max_items`.
pub const DEFAULT_MAX_ITEMS: usize = 100;
/// The most items one listing returns, whatever the payload asks (`--all`): a larger
/// `max_items` is cut to this.
pub const MAX_ITEMS: usize = 10_000;
/// How many pages in a row may come back empty yet promise a next page before the
/// listing is given up as a loop.
const MAX_EMPTY_PAGES: usize = 5;
/// The longest cursor read; positions are URLs or tokens, far shorter.
const MAX_CURSOR_BYTES: usize = 8 * 1024;

/// One page as a plugin fetched it: its items, converted, and the position of the
/// page after it (`None` on the last page).
#[derive(Debug)]
pub struct Fetched<T> {
    /// The page's items in the API's order.
    pub items: Vec<T>,
    /// Where the next page is: its URL or token; `None` when this page is the last.
    pub next: Option<String>,
}

/// A listing's result: the envelope every list command returns.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Page<T> {
    /// The items, at most `max_items`.
    pub items: Vec<T>,
    /// Whether more items exist than were returned.
    pub truncated: bool,
    /// A cursor to pass back as the payload's `next` to get the items after these;
    /// `null` when there are none.
    pub next: Option<String>,
}

/// A listing about to run: its command, its bound and where it starts.
#[derive(Debug, Clone)]
pub struct Paging {
    command: String,
    max_items: usize,
    start: Option<String>,
    skip: usize,
    base_url: Option<String>,
}

/// What a cursor holds. Field names are short: the cursor travels in payloads.
#[derive(Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Cursor {
    /// The command it belongs to.
    c: String,
    /// The position of the page to fetch; `None` for the first page.
    p: Option<String>,
    /// How many items of that page were already returned.
    s: usize,
}

impl Paging {
    /// A listing for `command` of at most `max_items` (payload field `max_items`:
    /// [`DEFAULT_MAX_ITEMS`] when absent, cut to [`MAX_ITEMS`]; 0 is refused), from
    /// the start or from cursor `next` (payload field `next`), which must be one that
    /// `command` returned.
    pub fn new(
        command: &str,
        max_items: Option<u64>,
        next: Option<&str>,
    ) -> Result<Self, PluginError> {
        let max_items = match max_items {
            None => DEFAULT_MAX_ITEMS,
            Some(0) => {
                return Err(PluginError::permanent(
                    "invalid payload: field \"max_items\": must be at least 1",
                ));
            }
            Some(count) => usize::try_from(count).unwrap_or(MAX_ITEMS).min(MAX_ITEMS),
        };
        let (start, skip) = match next {
            None => (None, 0),
            Some(cursor) => {
                let cursor = Cursor::decode(cursor)?;
                if cursor.c != command {
                    return Err(invalid_cursor(&format!(
                        "it continues command {:?}, not {command:?}",
                        cursor.c
                    )));
                }
                // A page is never longer than the largest listing; a larger skip is
                // no cursor this SDK wrote.
                if cursor.s > MAX_ITEMS {
                    return Err(invalid_cursor("it skips more items than a page holds"));
                }
                (cursor.p, cursor.s)
            }
        };
        Ok(Self {
            command: command.to_owned(),
            max_items,
            start,
            skip,
            base_url: None,
        })
    }

    /// Requires every position to be a URL under `base_url` (same scheme, host and
    /// port, and a path below its path), both the cursor's and each next page the API
    /// names. Fails, naming the payload field `next`, when the cursor's is not.
    pub fn urls_under(mut self, base_url: &str) -> Result<Self, PluginError> {
        let base_url = base_url.trim_end_matches('/').to_owned();
        if let Some(start) = &self.start
            && !is_under(start, &base_url)
        {
            return Err(invalid_cursor(&format!(
                "it points outside the plugin's base URL {base_url}"
            )));
        }
        self.base_url = Some(base_url);
        Ok(self)
    }

    /// The most items to return.
    pub fn max_items(&self) -> usize {
        self.max_items
    }

    /// The position this listing starts at: `None` for the first page (which the
    /// plugin builds from the payload), else the cursor's.
    pub fn start(&self) -> Option<&str> {
        self.start.as_deref()
    }

    /// A page size to ask for: `max_items`, at most the API's `largest`, at least 1.
    pub fn page_size(&self, largest: u32) -> u32 {
        u32::try_from(self.max_items)
            .unwrap_or(u32::MAX)
            .clamp(1, largest.max(1))
    }

    /// Fetches pages from the start position on, `fetch(position)` getting each (the
    /// position is `None` for the first page), until the API has no next page or
    /// `max_items` are in hand; the envelope's cursor resumes after the last item
    /// returned. An error of `fetch` ends the listing with that error. Each page
    /// fetched is reported as the job's progress ([`crate::job::progress`]).
    pub fn collect<T>(
        self,
        mut fetch: impl FnMut(Option<&str>) -> Result<Fetched<T>, PluginError>,
    ) -> Result<Page<T>, PluginError> {
        let mut items: Vec<T> = Vec::new();
        let mut position = self.start.clone();
        let mut skip = self.skip;
        let mut empty_pages = 0;
        let mut pages = 0u64;
        loop {
            let Fetched { items: page, next } = fetch(position.as_deref())?;
            pages += 1;
            // What a watcher of the job sees (`honeydew wait`): pages so far.
            let noun = if pages == 1 { "page" } else { "pages" };
            crate::job::progress(
                pages,
                None,
                Some(&format!(
                    "{pages} {noun} fetched, {} items",
                    items.len() + page.len()
                )),
            );
            if let (Some(next), Some(base_url)) = (&next, &self.base_url)
                && !is_under(next, base_url)
            {
                return Err(PluginError::permanent(format!(
                    "the API's next page {next:?} is outside the plugin's base URL {base_url}"
                )));
            }
            let on_page = page.len();
            // The page may have shrunk since the cursor was made: skip what is there.
            let skip_now = skip.min(on_page);
            let room = self.max_items - items.len();
            let left = on_page - skip_now;
            if left > room {
                items.extend(page.into_iter().skip(skip_now).take(room));
                let next = self.cursor(position, skip_now + room);
                return Ok(Page {
                    items,
                    truncated: true,
                    next: Some(next),
                });
            }
            items.extend(page.into_iter().skip(skip_now));
            let Some(next) = next else {
                return Ok(Page {
                    items,
                    truncated: false,
                    next: None,
                });
            };
            if position.as_deref() == Some(next.as_str()) {
                return Err(PluginError::permanent(format!(
                    "the API names page {next:?} as the page after itself"
                )));
            }
            if items.len() == self.max_items {
                let cursor = self.cursor(Some(next), 0);
                return Ok(Page {
                    items,
                    truncated: true,
                    next: Some(cursor),
                });
            }
            empty_pages = if left == 0 { empty_pages + 1 } else { 0 };
            if empty_pages > MAX_EMPTY_PAGES {
                return Err(PluginError::permanent(format!(
                    "the API returned {empty_pages} empty pages in a row, each naming a next one"
                )));
            }
            position = Some(next);
            skip = 0;
        }
    }

    fn cursor(&self, position: Option<String>, skip: usize) -> String {
        Cursor {
            c: self.command.clone(),
            p: position,
            s: skip,
        }
        .encode()
    }
}

/// The payload error for a cursor that cannot be used, saying why.
pub fn invalid_cursor(reason: &str) -> PluginError {
    PluginError::permanent(format!(
        "invalid payload: field \"next\": not a cursor this command returned ({reason}); \
         pass back the \"next\" of a previous result unchanged"
    ))
}

impl Cursor {
    fn encode(&self) -> String {
        // A struct of strings and a number always serialises.
        let json = serde_json::to_vec(self).unwrap_or_default();
        base64url::encode(&json)
    }

    fn decode(text: &str) -> Result<Self, PluginError> {
        if text.len() > MAX_CURSOR_BYTES {
            return Err(invalid_cursor("too long"));
        }
        let json = base64url::decode(text).ok_or_else(|| invalid_cursor("not base64url"))?;
        serde_json::from_slice(&json).map_err(|_| invalid_cursor("its content is not readable"))
    }
}

/// Whether `url` lies under `base_url` (no trailing slash): the same text up to the
/// end of the base, then the end, a `/` or a `?`. Scheme and host compare without
/// case; `..` segments are refused outright.
fn is_under(url: &str, base_url: &str) -> bool {
    let Some(head) = url.get(..base_url.len()) else {
        return false;
    };
    let (Some((base_scheme, base_rest)), Some((scheme, rest))) =
        (base_url.split_once("://"), head.split_once("://"))
    else {
        return false;
    };
    let authority_end = |text: &str| text.find(['/', '?']).unwrap_or(text.len());
    let (base_authority, base_path) = base_rest.split_at(authority_end(base_rest));
    let (authority, path) = rest.split_at(authority_end(rest));
    let same = base_scheme.eq_ignore_ascii_case(scheme)
        && base_authority.eq_ignore_ascii_case(authority)
        && base_path == path;
    let boundary = matches!(url[base_url.len()..].chars().next(), None | Some('/' | '?'));
    let path_only = url.split(['?', '#']).next().unwrap_or_default();
    same && boundary && !path_only.split('/').any(|segment| segment == "..")
}

/// The URL of the `rel="next"` link of a response's `Link` header (RFC 8288), as
/// GitHub and GitLab send it: `<https://...&page=2>; rel="next", <...>; rel="last"`.
pub fn link_next(response: &Response) -> Option<String> {
    response
        .headers
        .iter()
        .filter(|(name, _)| name.eq_ignore_ascii_case("link"))
        .flat_map(|(_, value)| split_links(value))
        .find(|(_, params)| {
            params.split(';').any(|param| {
                let Some((name, value)) = param.split_once('=') else {
                    return false;
                };
                name.trim().eq_ignore_ascii_case("rel")
                    && value
                        .trim()
                        .trim_matches('"')
                        .split_ascii_whitespace()
                        .any(|rel| rel.eq_ignore_ascii_case("next"))
            })
        })
        .map(|(url, _)| url.to_owned())
}

/// The `(target, parameters)` of each link in a `Link` value. Targets are inside
/// `<...>`, so a comma in one does not split it.
fn split_links(value: &str) -> Vec<(&str, &str)> {
    let mut links = Vec::new();
    let mut rest = value;
    while let Some(open) = rest.find('<') {
        let after = &rest[open + 1..];
        let Some(close) = after.find('>') else { break };
        let target = &after[..close];
        let tail = &after[close + 1..];
        // Parameters run to the next link's '<' (a quoted comma is not a boundary we
        // need: rel values hold none).
        let end = tail.find('<').unwrap_or(tail.len());
        let params = tail[..end].trim().trim_end_matches(',');
        links.push((target.trim(), params));
        rest = &tail[end..];
    }
    links
}

/// `url` with query parameter `name` set to `value` (replacing any), for APIs that
/// name the next page by number (GitLab's `x-next-page`).
pub fn with_query(url: &str, name: &str, value: &str) -> String {
    let (url, fragment) = url
        .split_once('#')
        .map_or((url, None), |(u, f)| (u, Some(f)));
    let (path, query) = url.split_once('?').unwrap_or((url, ""));
    let mut pairs: Vec<String> = query
        .split('&')
        .filter(|pair| !pair.is_empty() && pair.split('=').next() != Some(name))
        .map(str::to_owned)
        .collect();
    pairs.push(format!(
        "{}={}",
        crate::http::encode(name),
        crate::http::encode(value)
    ));
    let mut out = format!("{path}?{}", pairs.join("&"));
    if let Some(fragment) = fragment {
        out.push('#');
        out.push_str(fragment);
    }
    out
}

/// Base64url without padding (RFC 4648 section 5): cursors stay one word in a shell.
mod base64url {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

    pub(super) fn encode(bytes: &[u8]) -> String {
        let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
        for chunk in bytes.chunks(3) {
            let word = chunk.iter().enumerate().fold(0u32, |word, (at, &byte)| {
                word | u32::from(byte) << (16 - 8 * at)
            });
            for at in 0..=chunk.len() {
                let index = (word >> (18 - 6 * at)) & 0x3f;
                out.push(char::from(ALPHABET[index as usize]));
            }
        }
        out
    }

    pub(super) fn decode(text: &str) -> Option<Vec<u8>> {
        let values: Vec<u32> = text
            .bytes()
            .map(|byte| {
                ALPHABET
                    .iter()
                    .position(|&candidate| candidate == byte)
                    .map(|at| at as u32)
            })
            .collect::<Option<_>>()?;
        let mut out = Vec::with_capacity(values.len() * 3 / 4);
        for chunk in values.chunks(4) {
            if chunk.len() == 1 {
                return None;
            }
            let word = chunk
                .iter()
                .enumerate()
                .fold(0u32, |word, (at, &value)| word | value << (18 - 6 * at));
            for at in 0..chunk.len() - 1 {
                out.push((word >> (16 - 8 * at)) as u8);
            }
        }
        Some(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fake API of `total` numbered items in pages of `size`; positions are page
    /// numbers as text, the first page being position `None`.
    fn pages(
        total: usize,
        size: usize,
    ) -> impl FnMut(Option<&str>) -> Result<Fetched<usize>, PluginError> {
        move |position| {
            let page: usize = position.map_or(0, |p| p.parse().unwrap());
            let start = page * size;
            let items: Vec<usize> = (start..total.min(start + size)).collect();
            let next = (start + size < total).then(|| (page + 1).to_string());
            Ok(Fetched { items, next })
        }
    }

    fn list(max_items: Option<u64>, next: Option<&str>, total: usize, size: usize) -> Page<usize> {
        Paging::new("commits", max_items, next)
            .unwrap()
            .collect(pages(total, size))
            .unwrap()
    }

    #[test]
    fn every_page_is_fetched_up_to_the_end() {
        let page = list(Some(1000), None, 137, 30);
        assert_eq!(page.items, (0..137).collect::<Vec<_>>());
        assert!(!page.truncated);
        assert_eq!(page.next, None);
        // The default bound.
        let page = list(None, None, 137, 30);
        assert_eq!(page.items.len(), DEFAULT_MAX_ITEMS);
        assert!(page.truncated);
    }

    #[test]
    fn a_cut_inside_a_page_resumes_on_that_page() {
        let mut seen = Vec::new();
        let mut next = None;
        loop {
            let page = list(Some(45), next.as_deref(), 137, 30);
            assert!(page.items.len() <= 45);
            seen.extend(page.items);
            assert_eq!(page.truncated, page.next.is_some());
            next = page.next;
            if next.is_none() {
                break;
            }
        }
        assert_eq!(seen, (0..137).collect::<Vec<_>>());
    }

    #[test]
    fn a_cut_on_a_page_boundary_resumes_on_the_next_page() {
        let page = list(Some(60), None, 137, 30);
        assert_eq!(page.items.len(), 60);
        assert!(page.truncated);
        let cursor = Cursor::decode(page.next.as_deref().unwrap()).unwrap();
        assert_eq!(
            cursor,
            Cursor {
                c: "commits".into(),
                p: Some("2".into()),
                s: 0
            }
        );
        let rest = list(Some(1000), page.next.as_deref(), 137, 30);
        assert_eq!(rest.items, (60..137).collect::<Vec<_>>());
        // Exactly all: not truncated.
        let page = list(Some(137), None, 137, 30);
        assert_eq!((page.items.len(), page.truncated), (137, false));
    }

    #[test]
    fn max_items_is_bounded() {
        let paging = Paging::new("x", Some(u64::MAX), None).unwrap();
        assert_eq!(paging.max_items(), MAX_ITEMS);
        assert_eq!(paging.page_size(100), 100);
        assert_eq!(Paging::new("x", Some(7), None).unwrap().page_size(100), 7);
        let error = Paging::new("x", Some(0), None).unwrap_err();
        assert_eq!(
            error.message(),
            "invalid payload: field \"max_items\": must be at least 1"
        );
    }

    #[test]
    fn bad_cursors_are_payload_errors_naming_next() {
        let other = list(Some(10), None, 137, 30).next.unwrap();
        for (cursor, reason) in [
            ("not a cursor!", "not base64url"),
            ("e30", "its content is not readable"),
        ] {
            let error = Paging::new("commits", None, Some(cursor)).unwrap_err();
            assert!(!error.is_retriable());
            assert!(
                error
                    .message()
                    .starts_with("invalid payload: field \"next\""),
                "{error}"
            );
            assert!(error.message().contains(reason), "{error}");
        }
        let error = Paging::new("pullRequests", None, Some(&other)).unwrap_err();
        assert!(
            error.message().contains("continues command \"commits\""),
            "{error}"
        );
        let huge = Cursor {
            c: "commits".into(),
            p: None,
            s: MAX_ITEMS + 1,
        }
        .encode();
        assert!(Paging::new("commits", None, Some(&huge)).is_err());
    }

    #[test]
    fn url_positions_must_stay_under_the_base_url() {
        let base = "https://api.github.com";
        let cursor = |position: &str| {
            Cursor {
                c: "commits".into(),
                p: Some(position.into()),
                s: 0,
            }
            .encode()
        };
        let under = |position: &str| {
            Paging::new("commits", None, Some(&cursor(position)))
                .unwrap()
                .urls_under(base)
                .is_ok()
        };
        assert!(under(
            "https://api.github.com/repositories/1/commits?page=2"
        ));
        assert!(under("HTTPS://API.GITHUB.COM/x"));
        assert!(!under("https://evil.example/repositories/1/commits?page=2"));
        assert!(!under("https://api.github.com.evil.example/x"));
        assert!(!under("https://api.github.com@evil.example/x"));
        assert!(!under("http://api.github.com/x"));
        assert!(!under("https://api.github.com:444/x"));
        assert!(!under("https://api.github.com/../x"));
        assert!(is_under(
            "https://gitlab.example/api/v4/projects?page=2",
            "https://gitlab.example/api/v4"
        ));
        assert!(!is_under(
            "https://gitlab.example/api/v40/projects",
            "https://gitlab.example/api/v4"
        ));
        assert!(!is_under(
            "https://gitlab.example/other",
            "https://gitlab.example/api/v4"
        ));

        // A server naming a foreign next page is refused as well.
        let error = Paging::new("commits", None, None)
            .unwrap()
            .urls_under(base)
            .unwrap()
            .collect(|_| {
                Ok(Fetched {
                    items: vec![1],
                    next: Some("https://evil.example/page2".to_owned()),
                })
            })
            .unwrap_err();
        assert!(
            error.message().contains("outside the plugin's base URL"),
            "{error}"
        );
    }

    #[test]
    fn a_looping_api_is_given_up() {
        let error = Paging::new("x", None, None)
            .unwrap()
            .collect(|_| {
                Ok(Fetched::<u8> {
                    items: vec![],
                    next: Some("same".into()),
                })
            })
            .unwrap_err();
        assert!(error.message().contains("after itself"), "{error}");
        let mut n = 0;
        let error = Paging::new("x", None, None)
            .unwrap()
            .collect(|_| {
                n += 1;
                Ok(Fetched::<u8> {
                    items: vec![],
                    next: Some(n.to_string()),
                })
            })
            .unwrap_err();
        assert!(error.message().contains("empty pages"), "{error}");
    }

    #[test]
    fn link_headers_name_the_next_page() {
        let check = |value: &str, expected: Option<&str>| {
            let response = Response::new(200, &[("Link", value)], "");
            assert_eq!(link_next(&response).as_deref(), expected, "{value}");
        };
        check(
            r#"<https://api.github.com/repositories/1/commits?page=2>; rel="next", <https://api.github.com/repositories/1/commits?page=5>; rel="last""#,
            Some("https://api.github.com/repositories/1/commits?page=2"),
        );
        check(
            r#"<https://x.test/a?page=1>; rel="prev", <https://x.test/a?page=3>; rel="next""#,
            Some("https://x.test/a?page=3"),
        );
        check(
            r#"<https://x.test/a?b=1,2>; rel="next""#,
            Some("https://x.test/a?b=1,2"),
        );
        check("<https://x.test/a>; rel=next", Some("https://x.test/a"));
        check(r#"<https://x.test/a>; rel="last""#, None);
        check("garbage", None);
        assert_eq!(link_next(&Response::new(200, &[], "")), None);
    }

    #[test]
    fn query_parameters_are_replaced() {
        assert_eq!(
            with_query("https://x/a?page=1&per_page=5", "page", "2"),
            "https://x/a?per_page=5&page=2"
        );
        assert_eq!(with_query("https://x/a", "page", "2"), "https://x/a?page=2");
    }

    #[test]
    fn base64url_round_trips() {
        for text in [
            "",
            "a",
            "ab",
            "abc",
            "abcd",
            "{\"c\":\"x\",\"p\":null,\"s\":0}",
        ] {
            let encoded = base64url::encode(text.as_bytes());
            assert!(!encoded.contains(['+', '/', '=']));
            assert_eq!(
                base64url::decode(&encoded).unwrap(),
                text.as_bytes(),
                "{text}"
            );
        }
        assert_eq!(base64url::encode(b"hello"), "aGVsbG8");
        assert_eq!(base64url::decode("a"), None);
        assert_eq!(base64url::decode("a+b"), None);
    }
}
