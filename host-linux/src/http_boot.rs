//! HTTP boot: what TFTP serves, over HTTP (`[http] listen`), which iPXE and
//! UEFI HTTP boot fetch much faster than TFTP for large kernels and initrds.
//!
//! hyper speaks HTTP/1.1; this module only maps a request path to bytes:
//! the generated scripts (`sanboot_config::script::virtual_file`), files
//! under the TFTP root (the core's path normalisation, then
//! `sanboot_config::files::open_under`, exactly as TFTP), and with
//! `[http] images` the read-only LUN images at `/images/<target-iqn>/<lun>`
//! for iPXE's `sanboot http://…`. GET and HEAD, one byte range per request
//! (`206`, `416` when it starts past the end), nothing outside the root.
//!
//! File bytes are read with `pread` on a blocking thread in [`CHUNK`] pieces
//! and handed to hyper through a small channel, so a slow client holds at
//! most a few chunks in memory. A read that fails or comes up short ends the
//! connection mid-body: the client sees a truncated response, never bytes
//! that are not the file's.

use std::convert::Infallible;
use std::fs::File;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;

use anyhow::{Context, Result};
use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::{Body, Frame, Incoming};
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use sanboot_core::tftp::{path::normalize, Refusal};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch, Semaphore};

use crate::config::files::{open_under, tftp_root};
use crate::config::script::virtual_file;
use crate::config::stations::Stations;
use crate::config::Config;
use crate::status::Ended;

/// Bytes per `pread` and per body frame. Large, because every chunk is a
/// hand-off between the reading thread and the connection's task, and on a
/// busy machine each wake-up waits for a CPU: with 256 KiB chunks a 64 MiB
/// download was bound by those waits, not by copying.
const CHUNK: usize = 1024 * 1024;
/// Chunks read ahead of a slow client, per response.
const CHUNKS_AHEAD: usize = 2;
/// Connections at once; more are closed at once (each may hold
/// `CHUNK * (CHUNKS_AHEAD + 1)` of read-ahead).
const MAX_CONNECTIONS: usize = 128;
/// A client that sends no complete request header in this time is dropped.
const HEADER_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest path accepted after percent-decoding (as TFTP's limit).
const MAX_PATH: usize = 1024;
/// Where `[http] images` serves read-only LUN images.
const IMAGES_DIR: &str = "images";

type BoxedBody = BoxBody<Bytes, io::Error>;

struct Shared {
    config: Arc<Config>,
    /// Who may read which secret-carrying script (as for TFTP).
    stations: Arc<Stations>,
    /// `[tftp] root`, canonicalised once at start.
    root: Option<PathBuf>,
}

/// Runs the HTTP server until `stop` turns true (`[http] listen` must be set).
pub async fn run(
    config: Arc<Config>,
    stations: Arc<Stations>,
    stop: watch::Receiver<bool>,
) -> Result<()> {
    let listen = config
        .http
        .listen
        .context("[http] listen is not set: HTTP boot is off")?;
    let listener = TcpListener::bind(listen)
        .await
        .with_context(|| format!("[http] listen = {listen}: cannot bind"))?;
    serve(config, stations, listener, stop).await
}

/// Serves HTTP on an already bound listener until `stop` turns true.
pub async fn serve(
    config: Arc<Config>,
    stations: Arc<Stations>,
    listener: TcpListener,
    mut stop: watch::Receiver<bool>,
) -> Result<()> {
    let shared = Arc::new(Shared {
        root: tftp_root(&config)?,
        config,
        stations,
    });
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    tracing::info!(listen = %listener.local_addr()?, "HTTP boot serving");
    loop {
        let (stream, peer) = tokio::select! {
            _ = stop.changed() => return Ok(()),
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // EMFILE and the like: wait instead of spinning.
                    tracing::warn!("HTTP accept: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tracing::warn!(client = %peer, "HTTP: {MAX_CONNECTIONS} connections open, refused");
            continue;
        };
        let _ = stream.set_nodelay(true);
        let shared = shared.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let shared = shared.clone();
                async move { Ok::<_, Infallible>(respond(&shared, peer, req).await) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service);
            if let Err(e) = conn.await {
                tracing::debug!(client = %peer, "HTTP connection: {e}");
            }
            drop(slot);
        });
    }
}

/// What a path names.
enum Content {
    Memory(Bytes),
    File(File, u64),
}

async fn respond(shared: &Shared, peer: SocketAddr, req: Request<Incoming>) -> Response<BoxedBody> {
    let head = match *req.method() {
        Method::GET => false,
        Method::HEAD => true,
        _ => {
            let mut r = status(StatusCode::METHOD_NOT_ALLOWED);
            r.headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
            return r;
        }
    };
    let raw = req.uri().path().to_owned();
    let content = {
        // Scripts follow a reload (`crate::reload`), as over TFTP.
        let config = crate::reload::current().unwrap_or_else(|| shared.config.clone());
        let stations = shared.stations.clone();
        let root = shared.root.clone();
        let raw = raw.clone();
        let client = peer.ip();
        // Opening may block (canonicalize, open, a script render): off the runtime.
        tokio::task::spawn_blocking(move || open(&config, &stations, client, root.as_deref(), &raw))
            .await
            .unwrap_or(Err(StatusCode::INTERNAL_SERVER_ERROR))
    };
    let content = match content {
        Ok(c) => c,
        Err(code) => {
            tracing::info!(client = %peer.ip(), path = %raw, "HTTP {} {code}", req.method());
            report(
                peer,
                &raw,
                0,
                Duration::ZERO,
                Ended::Refused(code.to_string()),
            );
            return status(code);
        }
    };
    let len = match &content {
        Content::Memory(b) => b.len() as u64,
        Content::File(_, len) => *len,
    };
    let range = req
        .headers()
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        .map_or(RangeRequest::Whole, |v| parse_range(v, len));
    let (code, start, count) = match range {
        RangeRequest::Whole => (StatusCode::OK, 0, len),
        RangeRequest::Bytes { first, last } => {
            (StatusCode::PARTIAL_CONTENT, first, last - first + 1)
        }
        RangeRequest::Unsatisfiable => {
            let mut r = status(StatusCode::RANGE_NOT_SATISFIABLE);
            if let Ok(v) = HeaderValue::from_str(&format!("bytes */{len}")) {
                r.headers_mut().insert(header::CONTENT_RANGE, v);
            }
            tracing::info!(client = %peer.ip(), path = %raw, "HTTP range past the end (416)");
            report(
                peer,
                &raw,
                0,
                Duration::ZERO,
                Ended::Refused("range past the end".into()),
            );
            return r;
        }
    };
    tracing::info!(
        client = %peer.ip(),
        path = %raw,
        "HTTP {} {} bytes {start}+{count} of {len}",
        req.method(),
        code.as_u16()
    );
    let body: BoxedBody = match (head, content) {
        (true, _) => Empty::new().map_err(|never| match never {}).boxed(),
        (false, Content::Memory(b)) => {
            let end = usize::try_from(start + count).unwrap_or(b.len());
            let start = usize::try_from(start).unwrap_or(0);
            Full::new(b.slice(start..end))
                .map_err(|never| match never {})
                .boxed()
        }
        (false, Content::File(file, _)) => FileBody::spawn(file, start, count).boxed(),
    };
    // A HEAD asks only the size (a probe, as a PXE ROM's tsize is).
    let expected = if head { u64::MAX } else { count };
    let mut r = Response::new(Reported::new(body, peer, &raw, expected).boxed());
    *r.status_mut() = code;
    let h = r.headers_mut();
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(count));
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    let text = raw.to_ascii_lowercase().ends_with(".ipxe");
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(if text {
            "text/plain"
        } else {
            "application/octet-stream"
        }),
    );
    if code == StatusCode::PARTIAL_CONTENT {
        let v = format!("bytes {start}-{}/{len}", start + count - 1);
        if let Ok(v) = HeaderValue::from_str(&v) {
            h.insert(header::CONTENT_RANGE, v);
        }
    }
    r
}

/// Tells the status page how a fetch ended.
fn report(peer: SocketAddr, path: &str, bytes: u64, took: Duration, ended: Ended) {
    crate::status::fetch(crate::status::Fetch {
        via: crate::status::Via::Http,
        client: peer.ip(),
        path: path.trim_start_matches('/'),
        script: path.ends_with(".ipxe"),
        bytes,
        took,
        ended,
    });
}

/// A response body that counts what went out and, when hyper drops it
/// (sent, or the client went away), reports the fetch to the status page.
struct Reported {
    inner: BoxedBody,
    peer: SocketAddr,
    path: String,
    expected: u64,
    sent: u64,
    failed: Option<String>,
    started: std::time::Instant,
}

impl Reported {
    fn new(inner: BoxedBody, peer: SocketAddr, path: &str, expected: u64) -> Self {
        Reported {
            inner,
            peer,
            path: path.to_string(),
            expected,
            sent: 0,
            failed: None,
            started: std::time::Instant::now(),
        }
    }
}

impl Body for Reported {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                let n = frame.data_ref().map_or(0, |d| d.len() as u64);
                self.sent += n;
            }
            Poll::Ready(Some(Err(e))) => self.failed = Some(e.to_string()),
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for Reported {
    fn drop(&mut self) {
        let ended = match self.failed.take() {
            Some(e) => Ended::Failed(e),
            None if self.sent == self.expected => Ended::Complete,
            None if self.expected == u64::MAX => Ended::ByClient("HEAD: the size only".into()),
            None => Ended::ByClient("connection closed before the end".into()),
        };
        report(
            self.peer,
            &self.path,
            self.sent,
            self.started.elapsed(),
            ended,
        );
    }
}

fn status(code: StatusCode) -> Response<BoxedBody> {
    let text = format!("{code}\n");
    let mut r = Response::new(
        Full::new(Bytes::from(text))
            .map_err(|never| match never {})
            .boxed(),
    );
    *r.status_mut() = code;
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    r
}

/// The request path (still percent-encoded) → what it names, or the status
/// that says why not. Same rules as TFTP: the core's `normalize` refuses
/// `..`, drive letters and control characters after decoding, and
/// `open_under` refuses what resolves outside the root.
fn open(
    config: &Config,
    stations: &Stations,
    client: IpAddr,
    root: Option<&std::path::Path>,
    raw: &str,
) -> Result<Content, StatusCode> {
    let decoded: Vec<u8> = percent_encoding::percent_decode_str(raw).collect();
    let path = normalize::<MAX_PATH>(&decoded).map_err(|e| {
        tracing::warn!("HTTP path {raw:?} refused: {e}");
        StatusCode::FORBIDDEN
    })?;
    if let Some(text) = virtual_file(config, &path) {
        if !crate::stations::script_requested(stations, config, &path, client, "HTTP GET") {
            return Err(StatusCode::NOT_FOUND);
        }
        return Ok(Content::Memory(Bytes::from(text)));
    }
    if config.http.images {
        if let Some(rest) = path
            .strip_prefix(IMAGES_DIR)
            .and_then(|r| r.strip_prefix('/'))
        {
            return open_image(config, rest);
        }
    }
    let root = root.ok_or(StatusCode::NOT_FOUND)?;
    let file = open_under(root, &path).map_err(|r| match r {
        Refusal::NotFound => StatusCode::NOT_FOUND,
        Refusal::AccessViolation => StatusCode::FORBIDDEN,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    })?;
    let len = file
        .metadata()
        .map_err(|_| StatusCode::INTERNAL_SERVER_ERROR)?
        .len();
    Ok(Content::File(file, len))
}

/// `<target-iqn>/<lun>` → that LUN's image, if it is read-only (a writable
/// disk changes under a reader and belongs to its one initiator).
fn open_image(config: &Config, rest: &str) -> Result<Content, StatusCode> {
    let (iqn, id) = rest.rsplit_once('/').ok_or(StatusCode::NOT_FOUND)?;
    let id: u64 = id.parse().map_err(|_| StatusCode::NOT_FOUND)?;
    let lun = config
        .target(iqn)
        .and_then(|t| t.luns.iter().find(|l| l.id == id))
        .filter(|l| l.read_only)
        .ok_or(StatusCode::NOT_FOUND)?;
    let file = File::open(&lun.image).map_err(|e| {
        tracing::warn!("HTTP image {}: {e}", lun.image.display());
        StatusCode::INTERNAL_SERVER_ERROR
    })?;
    let len = file
        .metadata()
        .map_err(|_| StatusCode::INTERNAL_SERVER_ERROR)?
        .len();
    Ok(Content::File(file, len))
}

/// A response body read from a file on a blocking thread, chunk by chunk.
struct FileBody {
    rx: mpsc::Receiver<io::Result<Bytes>>,
}

impl FileBody {
    /// Streams `count` bytes of `file` from `start`.
    fn spawn(file: File, start: u64, count: u64) -> Self {
        let (tx, rx) = mpsc::channel(CHUNKS_AHEAD);
        tokio::task::spawn_blocking(move || {
            let mut offset = start;
            let end = start + count;
            while offset < end {
                let want = usize::try_from(end - offset).unwrap_or(CHUNK).min(CHUNK);
                let mut buf = vec![0u8; want];
                let chunk = match file.read_exact_at(&mut buf, offset) {
                    Ok(()) => Ok(Bytes::from(buf)),
                    // A file that shrank, or an I/O error: end the body with an error.
                    Err(e) => Err(e),
                };
                let failed = chunk.is_err();
                // A closed channel: the client went away.
                if tx.blocking_send(chunk).is_err() || failed {
                    return;
                }
                offset += want as u64;
            }
        });
        FileBody { rx }
    }
}

impl Body for FileBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        self.rx
            .poll_recv(cx)
            .map(|chunk| chunk.map(|c| c.map(Frame::data)))
    }
}

/// What a `Range` header asks of a resource of a given length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RangeRequest {
    /// No usable range: the whole resource, 200. RFC 9110 §14.2 lets a
    /// server ignore a header it does not understand or does not support
    /// (several ranges, other units).
    Whole,
    /// One range, bounds inclusive and inside the resource: 206.
    Bytes { first: u64, last: u64 },
    /// Starts past the end (or a suffix of 0 bytes): 416.
    Unsatisfiable,
}

/// Parses `bytes=a-b`, `bytes=a-` or `bytes=-n` (RFC 9110 §14.1.2).
fn parse_range(header: &str, len: u64) -> RangeRequest {
    let Some(spec) = header.trim().strip_prefix("bytes=") else {
        return RangeRequest::Whole;
    };
    if spec.contains(',') {
        return RangeRequest::Whole;
    }
    let Some((a, b)) = spec.trim().split_once('-') else {
        return RangeRequest::Whole;
    };
    let num = |s: &str| -> Option<u64> {
        if s.is_empty() || !s.bytes().all(|c| c.is_ascii_digit()) {
            return None;
        }
        s.parse().ok()
    };
    match (a.trim(), b.trim()) {
        ("", suffix) => match num(suffix) {
            None => RangeRequest::Whole,
            Some(0) => RangeRequest::Unsatisfiable,
            Some(_) if len == 0 => RangeRequest::Unsatisfiable,
            Some(n) => RangeRequest::Bytes {
                first: len.saturating_sub(n),
                last: len - 1,
            },
        },
        (first, last) => {
            let Some(first) = num(first) else {
                return RangeRequest::Whole;
            };
            let last = match last {
                "" => u64::MAX,
                l => match num(l) {
                    Some(l) if l >= first => l,
                    _ => return RangeRequest::Whole,
                },
            };
            if first >= len {
                return RangeRequest::Unsatisfiable;
            }
            RangeRequest::Bytes {
                first,
                last: last.min(len - 1),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_as_rfc_9110_reads_them() {
        use RangeRequest::*;
        let r = |h| parse_range(h, 100);
        assert_eq!(r("bytes=0-9"), Bytes { first: 0, last: 9 });
        assert_eq!(
            r("bytes=90-"),
            Bytes {
                first: 90,
                last: 99
            }
        );
        assert_eq!(
            r("bytes=90-1000"),
            Bytes {
                first: 90,
                last: 99
            }
        );
        assert_eq!(
            r("bytes=-10"),
            Bytes {
                first: 90,
                last: 99
            }
        );
        assert_eq!(r("bytes=-1000"), Bytes { first: 0, last: 99 });
        assert_eq!(r("bytes=100-"), Unsatisfiable);
        assert_eq!(r("bytes=-0"), Unsatisfiable);
        // Ignored, whole resource: several ranges, other units, nonsense.
        for h in [
            "bytes=0-1,5-6",
            "items=0-1",
            "bytes=5-2",
            "bytes=a-b",
            "bytes=-",
            "bytes=+1-2",
        ] {
            assert_eq!(r(h), Whole, "{h}");
        }
        assert_eq!(parse_range("bytes=0-", 0), Unsatisfiable);
    }
}
