//! The `workspace` capability: the `[workspace]` grant of a manifest, the job's
//! directory preopened into its sandbox, and the host side of the
//! `honeydew:plugin/workspace` import (`fetch-archive`).
//!
//! Lifecycle, in the shape of the other capabilities: the manifest says whether a
//! plugin gets a workspace and its caps ([`WorkspaceGrant`], bounded by
//! [`MAX_MAX_BYTES`] and [`MAX_MAX_FILES`]); each attempt of a granted job gets a fresh
//! directory (`crate::workspace::Workspaces::begin`), preopened read-only as
//! [`GUEST_PATH`] and kept only if the attempt completes (`sandbox::run_job`).
//!
//! `fetch-archive` downloads through the job's own [`EgressHooks`] (so the policy,
//! `[[auth]]`, redirects, the deadline and the count in flight are the guest's own),
//! checks the status, and streams the body through a bounded channel into the safe
//! extractor (`crate::workspace::unpack`) on a blocking thread: the async runtime never
//! waits on the disk, the archive never enters the guest, and a cancelled job stops
//! the download at once (the extractor sees its input end and the workspace is
//! discarded once it has stopped). This file decides how a failure is classified for
//! the plugin; it must not decide what a path may be (that is `unpack`'s) nor keep
//! anything between jobs.

use std::io::{self, Read};

use bytes::{Buf, Bytes};
use http::{HeaderName, HeaderValue, Method, Uri};
use http_body_util::BodyExt;
use tokio::sync::mpsc;
use wasmtime_wasi_http::{Error as HttpError, WasiBody};

use super::bindings::Error as GuestError;
use super::bindings::honeydew::plugin::types::RetriableError;
use super::bindings::honeydew::plugin::workspace::{ArchiveFormat, ArchiveRequest, ArchiveSummary};
use super::egress::{EgressHooks, MAX_HEADER_MAP_BYTES};
use super::redirect::without_query;
use crate::workspace::WorkspaceHandle;
use crate::workspace::unpack::{Format, Limits, SourceFailed, UnpackError};

/// Where the workspace appears inside the sandbox.
pub(super) const GUEST_PATH: &str = "/workspace";

/// The default cap on the bytes of files one archive may unpack to: 2 GiB.
pub(super) const DEFAULT_MAX_BYTES: u64 = 2 * 1024 * 1024 * 1024;

/// The largest `max_bytes` a manifest may give: 64 GiB.
pub(super) const MAX_MAX_BYTES: u64 = 64 * 1024 * 1024 * 1024;

/// The default cap on the entries (files, directories, links) of one archive.
pub(super) const DEFAULT_MAX_FILES: u64 = 200_000;

/// The largest `max_files` a manifest may give.
pub(super) const MAX_MAX_FILES: u64 = 5_000_000;

/// The most headers a plugin may add to an archive request.
const MAX_REQUEST_HEADERS: usize = 64;

/// How many body chunks may wait between the download and the extractor.
const CHUNKS_IN_FLIGHT: usize = 16;

/// How much of an error response's body is quoted to the plugin.
const MAX_QUOTED_ERROR_BYTES: usize = 512;

/// A manifest's `[workspace]` grant.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct WorkspaceGrant {
    /// The most bytes of files one archive may unpack to.
    pub(super) max_bytes: u64,
    /// The most entries one archive may unpack to.
    pub(super) max_files: u64,
}

impl WorkspaceGrant {
    fn limits(&self) -> Limits {
        Limits {
            max_bytes: self.max_bytes,
            max_entries: self.max_files,
        }
    }
}

/// What one attempt's sandbox holds of its workspace.
pub(super) struct WorkspaceAccess {
    pub(super) handle: WorkspaceHandle,
    pub(super) grant: WorkspaceGrant,
}

/// The host side of `fetch-archive` for a job whose hooks are `hooks` and whose
/// workspace is `access` (`None`: no grant).
pub(super) async fn fetch_archive(
    plugin: &str,
    hooks: &EgressHooks,
    access: Option<&WorkspaceAccess>,
    request: ArchiveRequest,
) -> Result<ArchiveSummary, GuestError> {
    let Some(access) = access else {
        return Err(permanent(format!(
            "plugin {plugin:?} has no workspace: grant one with `[workspace] enabled = true` in its manifest"
        )));
    };
    let uri: Uri = request
        .url
        .parse()
        .ok()
        .filter(|uri: &Uri| {
            matches!(uri.scheme_str(), Some("http" | "https")) && uri.authority().is_some()
        })
        .ok_or_else(|| {
            permanent(format!(
                "fetch-archive: {:?} is not an http or https URL",
                shortened(&request.url)
            ))
        })?;
    let shown = without_query(&uri);
    let http_request = build_request(uri, &request.headers)?;
    let limits = access.grant.limits();
    let format = match request.format {
        ArchiveFormat::TarGzip => Format::TarGzip,
        ArchiveFormat::Tar => Format::Tar,
    };
    // The compressed stream may not be larger than the unpacked one may be.
    let (response, io) = hooks
        .send_for_host(http_request, limits.stream_bytes())
        .await
        .map_err(|err| http_failure(&shown, err))?;
    let _io = wasmtime_wasi::runtime::spawn(async move {
        if let Err(err) = Box::into_pin(io).await {
            tracing::debug!(error = %err, "archive connection ended with an error");
        }
    });
    let status = response.status();
    let retry_after = response
        .headers()
        .get(http::header::RETRY_AFTER)
        .and_then(|value| value.to_str().ok()?.trim().parse::<u64>().ok());
    let mut body = response.into_body();
    if !status.is_success() {
        let quoted = quote_body(&mut body).await;
        let message = format!(
            "fetch-archive: GET {shown}: HTTP {}{quoted}",
            status.as_u16()
        );
        let retriable = matches!(status.as_u16(), 408 | 429) || status.is_server_error();
        return Err(if retriable {
            GuestError::Retriable(RetriableError {
                message,
                retry_after_ms: retry_after.map(|seconds| seconds.saturating_mul(1000)),
            })
        } else {
            permanent(message)
        });
    }

    let (chunks, receiver) = mpsc::channel(CHUNKS_IN_FLIGHT);
    let handle = access.handle.clone();
    let strip_components = request.strip_components;
    let unpacking = tokio::task::spawn_blocking(move || {
        handle.unpack(
            ChannelReader::new(receiver),
            format,
            strip_components,
            &limits,
        )
    });
    // The download's own failure, if it had one: it says more than the extractor's
    // view of a stream that ended early.
    let mut download_failure = None;
    while let Some(frame) = body.frame().await {
        let data = match frame {
            Ok(frame) => match frame.into_data() {
                Ok(data) => data,
                Err(_trailers) => continue,
            },
            Err(err) => {
                let failure = http_failure(&shown, err);
                let _ = chunks
                    .send(Err(SourceFailed(guest_message(&failure).to_owned())))
                    .await;
                download_failure = Some(failure);
                break;
            }
        };
        if chunks.send(Ok(data)).await.is_err() {
            // The extractor stopped (refused the archive): its error says why.
            break;
        }
    }
    drop(chunks);
    let unpacked = unpacking
        .await
        .map_err(|err| permanent(format!("fetch-archive: the extractor failed: {err}")))?;
    let summary = match (unpacked, download_failure) {
        (Ok(summary), _) => summary,
        (Err(_), Some(failure)) => return Err(failure),
        (Err(err), None) => return Err(unpack_failure(&shown, err)),
    };
    Ok(ArchiveSummary {
        host_path: access.handle.path().display().to_string(),
        guest_path: GUEST_PATH.to_owned(),
        files: summary.files,
        directories: summary.directories,
        bytes: summary.bytes,
        skipped_links: summary.skipped_links,
    })
}

/// The GET of `uri` with the host's `user-agent`, the `host` header and the plugin's
/// `headers` (bounded; a malformed one is the plugin's permanent error).
fn build_request(
    uri: Uri,
    headers: &[(String, String)],
) -> Result<http::Request<WasiBody>, GuestError> {
    if headers.len() > MAX_REQUEST_HEADERS {
        return Err(permanent(format!(
            "fetch-archive: {} headers, over the limit of {MAX_REQUEST_HEADERS}",
            headers.len()
        )));
    }
    let header_bytes: usize = headers
        .iter()
        .map(|(name, value)| name.len() + value.len())
        .sum();
    if header_bytes > MAX_HEADER_MAP_BYTES {
        return Err(permanent(format!(
            "fetch-archive: headers of {header_bytes} bytes, over the limit of {MAX_HEADER_MAP_BYTES}"
        )));
    }
    let authority = uri
        .authority()
        .map(|authority| authority.as_str().to_owned());
    let body = http_body_util::Empty::<Bytes>::new()
        .map_err(|never| match never {})
        .boxed_unsync();
    let mut request = http::Request::new(body);
    *request.method_mut() = Method::GET;
    *request.uri_mut() = uri;
    let map = request.headers_mut();
    for (name, value) in headers {
        let name = HeaderName::try_from(name.as_str()).map_err(|_| {
            permanent(format!(
                "fetch-archive: {:?} is not a header name",
                shortened(name)
            ))
        })?;
        let value = HeaderValue::try_from(value.as_str()).map_err(|_| {
            permanent(format!(
                "fetch-archive: the value of header {name} is not a header value"
            ))
        })?;
        map.append(name, value);
    }
    if !map.contains_key(http::header::USER_AGENT) {
        map.insert(
            http::header::USER_AGENT,
            HeaderValue::from_static(concat!("honeydew/", env!("CARGO_PKG_VERSION"))),
        );
    }
    if let Some(authority) = authority
        && let Ok(value) = HeaderValue::try_from(authority)
    {
        map.insert(http::header::HOST, value);
    }
    Ok(request)
}

/// Up to [`MAX_QUOTED_ERROR_BYTES`] of an error response's body, as `: TEXT`.
async fn quote_body(body: &mut WasiBody) -> String {
    let mut quoted = Vec::new();
    while quoted.len() < MAX_QUOTED_ERROR_BYTES {
        match body.frame().await {
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data() {
                    quoted.extend_from_slice(&data);
                }
            }
            _ => break,
        }
    }
    quoted.truncate(MAX_QUOTED_ERROR_BYTES);
    let text = String::from_utf8_lossy(&quoted);
    let text = text.trim();
    if text.is_empty() {
        String::new()
    } else {
        format!(": {text}")
    }
}

/// A failed exchange with the archive's host, classified: refused by the policy (the
/// job ends `egress_denied` in any case), a body over the cap, or the network.
fn http_failure(shown: &str, err: HttpError) -> GuestError {
    match err {
        HttpError::HttpRequestDenied => permanent(format!(
            "fetch-archive: GET {shown} (or a redirect from it) goes to a host that network.allowed_hosts does not grant"
        )),
        HttpError::HttpResponseBodySize(limit) => permanent(format!(
            "fetch-archive: GET {shown}: the archive is larger than the {} bytes the workspace's caps allow",
            limit.map_or_else(|| "(unknown)".to_owned(), |limit| limit.to_string())
        )),
        HttpError::HttpResponseHeaderSectionSize(_) => permanent(format!(
            "fetch-archive: GET {shown}: the response headers are too large"
        )),
        err => GuestError::Retriable(RetriableError {
            message: format!("fetch-archive: GET {shown}: {err}"),
            retry_after_ms: None,
        }),
    }
}

/// An extractor's refusal, for the plugin: permanent, but for a full disk.
fn unpack_failure(shown: &str, err: UnpackError) -> GuestError {
    let message = format!("fetch-archive: {shown}: {err}");
    match err {
        UnpackError::Io(_) | UnpackError::Source(_) => GuestError::Retriable(RetriableError {
            message,
            retry_after_ms: None,
        }),
        _ => permanent(message),
    }
}

fn permanent(message: String) -> GuestError {
    GuestError::Permanent(message)
}

fn guest_message(error: &GuestError) -> &str {
    match error {
        GuestError::Permanent(message) => message,
        GuestError::Retriable(retriable) => &retriable.message,
    }
}

/// The start of `text`, for messages (the plugin chose it).
fn shortened(text: &str) -> &str {
    &text[..text.floor_char_boundary(256)]
}

/// The extractor's input: the download's chunks, read on a blocking thread. Its end
/// is the download's end, or the download task going away (a cancelled job).
struct ChannelReader {
    receiver: mpsc::Receiver<Result<Bytes, SourceFailed>>,
    current: Bytes,
}

impl ChannelReader {
    fn new(receiver: mpsc::Receiver<Result<Bytes, SourceFailed>>) -> Self {
        Self {
            receiver,
            current: Bytes::new(),
        }
    }
}

impl Read for ChannelReader {
    fn read(&mut self, buffer: &mut [u8]) -> io::Result<usize> {
        while self.current.is_empty() {
            match self.receiver.blocking_recv() {
                Some(Ok(chunk)) => self.current = chunk,
                Some(Err(failed)) => return Err(io::Error::other(failed)),
                None => return Ok(0),
            }
        }
        let n = buffer.len().min(self.current.len());
        self.current.copy_to_slice(&mut buffer[..n]);
        Ok(n)
    }
}
