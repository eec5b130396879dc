//! Bandwidth limits: one upload and one download limit for the whole process, applied to
//! every byte of S3 traffic as it goes over the connection (object_store's requests through
//! `ThrottledConnector`; the Object Lock client's uploads before each request), so that a
//! backup leaves room on a school's uplink during the working day.
//!
//! A limit is a token bucket with a small burst (50 ms of the rate): bodies are sent and read
//! in pieces of at most 64 KiB, each waiting for its share, so the link sees a steady rate
//! rather than full-speed bursts between pauses.

use std::pin::Pin;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use object_store::client::{
    HttpClient, HttpConnector, HttpError, HttpErrorKind, HttpRequest, HttpResponse,
    HttpResponseBody, HttpService,
};

/// A rate in bytes per second, parsed from what people write: `20Mbit/s`, `2MiB/s`,
/// `500KB/s`, `10 Mbps`. Bits are decimal (a link's 20 Mbit/s is 20,000,000 bits), bytes
/// take KB/MB/GB as decimal and KiB/MiB/GiB as binary.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rate(u64);

impl Rate {
    pub fn bytes_per_second(self) -> u64 {
        self.0
    }

    pub fn parse(text: &str) -> Result<Rate, RateError> {
        let bad = || {
            RateError(format!(
                "{text:?} is not a rate: write a number and a unit, like \"20Mbit/s\", \"10 Mbps\" or \"2MiB/s\""
            ))
        };
        let t = text.trim();
        let split = t
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(bad)?;
        let (num, unit) = t.split_at(split);
        let num: f64 = num.parse().map_err(|_| bad())?;
        let unit = unit.trim();
        let unit = unit
            .strip_suffix("/s")
            .or_else(|| unit.strip_suffix("ps"))
            .ok_or_else(bad)?;
        let per_second = match unit {
            "bit" | "b" => num / 8.0,
            "kbit" | "Kbit" | "kb" | "Kb" => num * 1e3 / 8.0,
            "Mbit" | "mbit" | "Mb" => num * 1e6 / 8.0,
            "Gbit" | "gbit" | "Gb" => num * 1e9 / 8.0,
            "B" => num,
            "KB" | "kB" => num * 1e3,
            "MB" => num * 1e6,
            "GB" => num * 1e9,
            "KiB" => num * 1024.0,
            "MiB" => num * 1024.0 * 1024.0,
            "GiB" => num * 1024.0 * 1024.0 * 1024.0,
            _ => return Err(bad()),
        };
        if per_second.is_nan() || per_second < 1024.0 {
            return Err(RateError(format!(
                "{text:?} is below 1 KiB/s: nothing useful gets through; give a larger rate, or none for no limit"
            )));
        }
        Ok(Rate(per_second as u64))
    }
}

impl std::fmt::Display for Rate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let bits = self.0 as f64 * 8.0;
        if bits >= 1e6 {
            write!(f, "{:.1} Mbit/s", bits / 1e6)
        } else {
            write!(f, "{:.0} kbit/s", bits / 1e3)
        }
    }
}

/// A rate that cannot be read: what was written, and how to write one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct RateError(String);

/// One direction's limit: a token bucket whose rate may change while transfers run.
#[derive(Debug)]
pub struct Limiter {
    /// Bytes per second; 0 is no limit.
    rate: AtomicU64,
    bucket: Mutex<Bucket>,
}

#[derive(Debug)]
struct Bucket {
    /// Bytes that may pass now; negative when callers have reserved ahead (they wait).
    tokens: f64,
    /// When `tokens` was last brought up to date (`None` before the first transfer).
    at: Option<Instant>,
}

/// Bodies pass through in pieces no larger than this, each waiting for its tokens.
const PIECE: usize = 64 << 10;

impl Limiter {
    const fn new() -> Self {
        Self {
            rate: AtomicU64::new(0),
            bucket: Mutex::new(Bucket {
                tokens: 0.0,
                at: None,
            }),
        }
    }

    /// Set or lift the limit.
    pub fn set(&self, rate: Option<Rate>) {
        self.rate
            .store(rate.map_or(0, Rate::bytes_per_second), Ordering::Relaxed);
    }

    pub fn rate(&self) -> Option<Rate> {
        match self.rate.load(Ordering::Relaxed) {
            0 => None,
            n => Some(Rate(n)),
        }
    }

    /// Reserve `n` bytes; returns how long to wait before sending them.
    fn reserve(&self, n: usize) -> Duration {
        let rate = self.rate.load(Ordering::Relaxed);
        if rate == 0 {
            return Duration::ZERO;
        }
        let rate = rate as f64;
        let burst = (rate / 20.0).max(PIECE as f64);
        let mut b = self.bucket.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        let elapsed =
            b.at.map_or(0.0, |at| now.saturating_duration_since(at).as_secs_f64());
        b.at = Some(now);
        b.tokens = (b.tokens + elapsed * rate).min(burst) - n as f64;
        if b.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-b.tokens / rate)
        }
    }

    /// Wait until `n` bytes may pass (taken in pieces, so that callers share the rate).
    pub async fn take(&self, mut n: usize) {
        while n > 0 {
            let piece = n.min(PIECE);
            n -= piece;
            let wait = self.reserve(piece);
            if !wait.is_zero() {
                tokio::time::sleep(wait).await;
            }
        }
    }
}

static UPLOAD: Limiter = Limiter::new();
static DOWNLOAD: Limiter = Limiter::new();

/// The process's upload limit.
pub fn upload() -> &'static Limiter {
    &UPLOAD
}

/// The process's download limit.
pub fn download() -> &'static Limiter {
    &DOWNLOAD
}

/// A body that passes through `limiter` piece by piece.
struct Throttled<B> {
    inner: B,
    limiter: &'static Limiter,
    /// The rest of a frame not yet passed on.
    rest: Bytes,
    /// A piece waiting for its turn, and the wait.
    ready: Option<Bytes>,
    sleep: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl<B> Throttled<B> {
    fn new(inner: B, limiter: &'static Limiter) -> Self {
        Self {
            inner,
            limiter,
            rest: Bytes::new(),
            ready: None,
            sleep: None,
        }
    }
}

impl<B> Body for Throttled<B>
where
    B: Body<Data = Bytes> + Unpin,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        loop {
            if let Some(sleep) = &mut this.sleep {
                if sleep.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                this.sleep = None;
            }
            if let Some(piece) = this.ready.take() {
                return Poll::Ready(Some(Ok(Frame::data(piece))));
            }
            if !this.rest.is_empty() {
                let piece = this.rest.split_to(this.rest.len().min(PIECE));
                let wait = this.limiter.reserve(piece.len());
                this.ready = Some(piece);
                if !wait.is_zero() {
                    this.sleep = Some(Box::pin(tokio::time::sleep(wait)));
                }
                continue;
            }
            match Pin::new(&mut this.inner).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                    Ok(data) => this.rest = data,
                    Err(frame) => return Poll::Ready(Some(Ok(frame))),
                },
                other => return other,
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.rest.is_empty() && self.ready.is_none() && self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        let inner = self.inner.size_hint();
        let extra = (self.rest.len() + self.ready.as_ref().map_or(0, Bytes::len)) as u64;
        // The upper bound first: a lower bound above the upper one panics.
        let mut hint = SizeHint::new();
        if let Some(upper) = inner.upper() {
            hint.set_upper(upper + extra);
        }
        hint.set_lower(inner.lower() + extra);
        hint
    }
}

/// object_store's HTTP client with both directions passing through the process's limits.
#[derive(Debug)]
pub(super) struct ThrottledConnector {
    pub connect_timeout: Duration,
    pub timeout: Duration,
    pub allow_http: bool,
}

impl HttpConnector for ThrottledConnector {
    fn connect(&self, _options: &object_store::ClientOptions) -> object_store::Result<HttpClient> {
        // As object_store builds its own client: no transparent decompression (it would
        // break the lengths object_store relies on), its timeouts, https unless told.
        let client = reqwest::Client::builder()
            .user_agent(concat!("vouch/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(self.connect_timeout)
            .timeout(self.timeout)
            .https_only(!self.allow_http)
            .http1_only()
            .build()
            .map_err(|e| object_store::Error::Generic {
                store: "S3",
                source: Box::new(e),
            })?;
        Ok(HttpClient::new(ThrottledService { client }))
    }
}

#[derive(Debug)]
struct ThrottledService {
    client: reqwest::Client,
}

fn http_error(e: reqwest::Error) -> HttpError {
    let kind = if e.is_timeout() {
        HttpErrorKind::Timeout
    } else if e.is_connect() {
        HttpErrorKind::Connect
    } else if e.is_body() || e.is_decode() {
        HttpErrorKind::Decode
    } else if e.is_request() {
        HttpErrorKind::Request
    } else {
        HttpErrorKind::Unknown
    };
    HttpError::new(kind, e)
}

#[async_trait::async_trait]
impl HttpService for ThrottledService {
    async fn call(&self, req: HttpRequest) -> Result<HttpResponse, HttpError> {
        let (parts, body) = req.into_parts();
        let url = reqwest::Url::parse(&parts.uri.to_string())
            .map_err(|e| HttpError::new(HttpErrorKind::Request, e))?;
        let mut request = reqwest::Request::new(parts.method, url);
        *request.headers_mut() = parts.headers;
        // Not `is_empty`: object_store 0.12 answers it backwards for a `PutPayload`.
        if body.content_length() > 0 {
            // The body is in memory already (object_store's payloads are `Bytes`): it goes out
            // as a stream of pieces, each once the upload limit lets it.
            let chunks = http_body_util::BodyExt::collect(body)
                .await
                .map_err(|e| HttpError::new(HttpErrorKind::Request, e))?
                .to_bytes();
            let pieces = futures::stream::unfold(chunks, |mut rest| async move {
                if rest.is_empty() {
                    return None;
                }
                let piece = rest.split_to(rest.len().min(PIECE));
                upload().take(piece.len()).await;
                Some((Ok::<_, std::convert::Infallible>(piece), rest))
            });
            *request.body_mut() = Some(reqwest::Body::wrap_stream(pieces));
        }
        let response = self.client.execute(request).await.map_err(http_error)?;
        let response: http::Response<reqwest::Body> = response.into();
        let (parts, body) = response.into_parts();
        let body = Throttled::new(body, download());
        let body = http_body_util::BodyExt::map_err(body, http_error);
        Ok(HttpResponse::from_parts(parts, HttpResponseBody::new(body)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_read_as_people_write_them() {
        assert_eq!(
            Rate::parse("20Mbit/s").unwrap().bytes_per_second(),
            2_500_000
        );
        assert_eq!(
            Rate::parse("10 Mbps").unwrap().bytes_per_second(),
            1_250_000
        );
        assert_eq!(Rate::parse("2MiB/s").unwrap().bytes_per_second(), 2 << 20);
        assert_eq!(Rate::parse("500KB/s").unwrap().bytes_per_second(), 500_000);
        assert_eq!(
            Rate::parse("1.5MB/s").unwrap().bytes_per_second(),
            1_500_000
        );
        for bad in [
            "20",
            "fast",
            "20 Mbit",
            "-3MiB/s",
            "10 parsecs/s",
            "100bit/s",
        ] {
            let e = Rate::parse(bad).unwrap_err().to_string();
            assert!(e.contains(bad), "{e}");
        }
        assert_eq!(Rate::parse("20Mbit/s").unwrap().to_string(), "20.0 Mbit/s");
    }

    #[tokio::test]
    async fn a_limit_holds_the_rate_and_no_limit_waits_for_nothing() {
        let limiter = Limiter::new();
        let start = Instant::now();
        limiter.take(8 << 20).await;
        assert!(start.elapsed() < Duration::from_secs(1), "no limit");
        limiter.set(Some(Rate(4 << 20)));
        let start = Instant::now();
        limiter.take(2 << 20).await;
        let took = start.elapsed().as_secs_f64();
        // 2 MiB at 4 MiB/s, less the burst of 50 ms.
        assert!(took >= 0.4, "{took}");
        limiter.set(None);
        let start = Instant::now();
        limiter.take(8 << 20).await;
        assert!(start.elapsed() < Duration::from_secs(1), "lifted");
    }
}

#[cfg(test)]
mod body_tests {
    use super::*;

    #[tokio::test]
    async fn a_throttled_body_passes_every_byte_on() {
        use http_body_util::BodyExt;
        let payload = object_store::PutPayload::from(vec![7u8; 200_000]);
        let body = Throttled::new(
            object_store::client::HttpRequestBody::from(payload),
            upload(),
        );
        let got = body.collect().await.unwrap().to_bytes();
        assert_eq!(got.len(), 200_000);
    }
}

#[cfg(test)]
mod wire_tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn a_request_through_the_limited_client_carries_its_whole_body() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (mut c, _) = listener.accept().await.unwrap();
            let mut got = Vec::new();
            let mut buf = [0u8; 65536];
            while !got.ends_with(&[7u8; 16]) {
                let n = c.read(&mut buf).await.unwrap();
                if n == 0 {
                    break;
                }
                got.extend_from_slice(&buf[..n]);
            }
            c.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
                .await
                .unwrap();
            got.len()
        });
        let service = ThrottledConnector {
            connect_timeout: Duration::from_secs(5),
            timeout: Duration::from_secs(5),
            allow_http: true,
        }
        .connect(&object_store::ClientOptions::new())
        .unwrap();
        let payload = object_store::PutPayload::from(vec![7u8; 431]);
        let req = http::Request::builder()
            .method("PUT")
            .uri(format!("http://{addr}/x"))
            .header("content-length", "431")
            .body(object_store::client::HttpRequestBody::from(payload))
            .unwrap();
        let resp = tokio::time::timeout(Duration::from_secs(5), service.execute(req)).await;
        assert!(resp.is_ok(), "timed out");
        resp.unwrap().unwrap();
        assert!(server.await.unwrap() > 431);
    }
}
