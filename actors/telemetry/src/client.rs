//! The flusher's HTTP/1.1 client: one kept-alive connection to the receiver.
//!
//! The connection is driven by the export that uses it (polled next to the
//! request), not by a background task, so the flusher owns everything it
//! started. A connection the receiver closed between exports shows up as a
//! failed send on reuse: the request is then tried once on a fresh connection.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::client::conn::http1::{Connection, SendRequest};
use hyper::{Request, StatusCode, Uri};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// Why an export request failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum PostError {
    /// No connection (refused, unreachable, DNS).
    #[error("cannot connect to {addr}: {reason}")]
    Connect {
        /// `host:port`.
        addr: String,
        /// The OS's or hyper's words.
        reason: String,
    },
    /// The connection broke during the request.
    #[error("request failed: {0}")]
    Http(#[from] hyper::Error),
    /// The request could not be built (a header value the URL made invalid).
    #[error("cannot build the request: {0}")]
    Request(#[from] hyper::http::Error),
    /// The receiver closed the connection before answering.
    #[error("the receiver closed the connection")]
    Closed,
    /// The receiver answered, but not with success.
    #[error("receiver answered {status}: {body}")]
    Status {
        /// The HTTP status.
        status: StatusCode,
        /// The start of its body (OTLP receivers explain refusals there).
        body: String,
    },
    /// No answer within the export timeout.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
}

type Conn = Connection<TokioIo<TcpStream>, Full<Bytes>>;

/// A receiver's URL and the open connection to it, if any.
pub(crate) struct Client {
    /// The request target: the URL's path and query (origin form, as servers expect).
    target: Uri,
    /// `host:port`, to connect to and for the `Host` header.
    addr: String,
    timeout: Duration,
    open: Option<(SendRequest<Full<Bytes>>, Conn)>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("addr", &self.addr)
            .field("target", &self.target)
            .field("connected", &self.open.is_some())
            .finish()
    }
}

impl Client {
    /// A client of the `http://` URL `endpoint` (checked by the config's validation).
    pub(crate) fn new(endpoint: &str, timeout: Duration) -> Result<Self, String> {
        let uri: Uri = endpoint.parse().map_err(|e| format!("{e}"))?;
        if uri.scheme_str() != Some("http") {
            return Err("only http:// receivers are supported".into());
        }
        let host = uri.host().ok_or("no host")?;
        let addr = format!("{host}:{}", uri.port_u16().unwrap_or(80));
        let target = uri
            .path_and_query()
            .map_or_else(|| Uri::from_static("/"), |p| Uri::from(p.clone()));
        Ok(Self {
            target,
            addr,
            timeout,
            open: None,
        })
    }

    /// POSTs an OTLP protobuf body; `Ok` when the receiver answered 2xx.
    pub(crate) async fn post(&mut self, body: Bytes) -> Result<(), PostError> {
        let limit = self.timeout;
        match tokio::time::timeout(limit, self.post_within(body)).await {
            Ok(r) => r,
            Err(_) => {
                // The connection may be mid-request: never reuse it.
                self.open = None;
                Err(PostError::Timeout(limit))
            }
        }
    }

    async fn post_within(&mut self, body: Bytes) -> Result<(), PostError> {
        let reused = self.open.is_some();
        match self.try_post(body.clone()).await {
            Err(PostError::Http(_) | PostError::Closed) if reused => {
                // Most likely the receiver closed the idle connection: once more, fresh.
                self.try_post(body).await
            }
            other => other,
        }
    }

    async fn try_post(&mut self, body: Bytes) -> Result<(), PostError> {
        let (mut sender, mut conn) = match self.open.take() {
            Some(open) => open,
            None => self.dial().await?,
        };
        let request = Request::post(self.target.clone())
            .header(hyper::header::HOST, self.addr.as_str())
            .header(hyper::header::CONTENT_TYPE, "application/x-protobuf")
            .body(Full::new(body))?;
        // The connection does the I/O. It may end first (the receiver answered and
        // closed): the answer, if one came, is then already waiting for `exchange`.
        let (status, body, closed) = {
            let exchange = async {
                let response = sender.send_request(request).await?;
                let status = response.status();
                let body = response.into_body().collect().await?.to_bytes();
                Ok::<_, hyper::Error>((status, body))
            };
            tokio::pin!(exchange);
            tokio::select! {
                biased;
                r = &mut exchange => r.map(|(s, b)| (s, b, false))?,
                r = &mut conn => {
                    r?;
                    let (s, b) = exchange.await.map_err(|_| PostError::Closed)?;
                    (s, b, true)
                }
            }
        };
        if !closed {
            self.open = Some((sender, conn));
        }
        if status.is_success() {
            return Ok(());
        }
        Err(PostError::Status {
            status,
            body: String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned(),
        })
    }

    /// Opens the connection unless one is open (the next post uses it).
    pub(crate) async fn connect(&mut self) -> Result<(), PostError> {
        if self.open.is_none() {
            let limit = self.timeout;
            let open = tokio::time::timeout(limit, self.dial())
                .await
                .map_err(|_| PostError::Timeout(limit))??;
            self.open = Some(open);
        }
        Ok(())
    }

    async fn dial(&self) -> Result<(SendRequest<Full<Bytes>>, Conn), PostError> {
        let failed = |reason: String| PostError::Connect {
            addr: self.addr.clone(),
            reason,
        };
        let stream = TcpStream::connect(&self.addr)
            .await
            .map_err(|e| failed(e.to_string()))?;
        // Small requests answered at once: no Nagle delay.
        stream
            .set_nodelay(true)
            .map_err(|e| failed(e.to_string()))?;
        // Vectored writes: the body goes to the socket as it is, not copied into
        // hyper's write buffer first (a batch is ~100 KB).
        hyper::client::conn::http1::Builder::new()
            .writev(true)
            .handshake(TokioIo::new(stream))
            .await
            .map_err(|e| failed(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    use tokio::net::TcpListener;

    use super::*;

    /// Answers each connection's first request with `answer`, then closes it if `close`.
    async fn serve(listener: TcpListener, answer: &'static [u8], close: bool) {
        while let Ok((mut sock, _)) = listener.accept().await {
            let mut seen = Vec::new();
            let mut chunk = [0u8; 4096];
            while let Ok(n) = sock.read(&mut chunk).await
                && n > 0
            {
                seen.extend_from_slice(&chunk[..n]);
                // The test bodies are tiny: the request is whole once the body arrived.
                if seen.ends_with(b"payload") {
                    assert!(
                        seen.starts_with(b"POST /v1/traces HTTP/1.1\r\n"),
                        "origin-form request line: {}",
                        String::from_utf8_lossy(&seen)
                    );
                    let _ = sock.write_all(answer).await;
                    seen.clear();
                    if close {
                        break;
                    }
                }
            }
        }
    }

    async fn client_of(answer: &'static [u8], close: bool) -> Client {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        tokio::spawn(serve(listener, answer, close));
        Client::new(
            &format!("http://127.0.0.1:{port}/v1/traces"),
            Duration::from_secs(5),
        )
        .expect("client")
    }

    const OK: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n";

    #[tokio::test]
    async fn a_connection_closed_between_exports_is_replaced() {
        let mut c = client_of(OK, true).await;
        for i in 0..3 {
            c.post(Bytes::from_static(b"payload"))
                .await
                .unwrap_or_else(|e| panic!("export {i}: {e}"));
        }
    }

    #[tokio::test]
    async fn a_kept_alive_connection_is_reused() {
        let mut c = client_of(OK, false).await;
        c.post(Bytes::from_static(b"payload")).await.expect("first");
        assert!(c.open.is_some(), "kept");
        c.post(Bytes::from_static(b"payload"))
            .await
            .expect("second");
    }

    #[tokio::test]
    async fn a_refusal_is_an_error_with_the_receivers_words() {
        let mut c = client_of(
            b"HTTP/1.1 400 Bad Request\r\ncontent-length: 11\r\n\r\nbad payload",
            false,
        )
        .await;
        match c.post(Bytes::from_static(b"payload")).await {
            Err(PostError::Status { status, body }) => {
                assert_eq!(status, StatusCode::BAD_REQUEST);
                assert_eq!(body, "bad payload");
            }
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn nothing_listening_is_a_connect_error_and_no_answer_a_timeout() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("port");
        let mut c = Client::new(&format!("http://127.0.0.1:{port}/"), Duration::from_secs(5))
            .expect("client");
        let r = c.post(Bytes::from_static(b"payload")).await;
        assert!(matches!(r, Err(PostError::Connect { .. })), "{r:?}");

        // A receiver that accepts and never answers.
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let _held = tokio::spawn(async move {
            let mut socks = Vec::new();
            while let Ok((s, _)) = listener.accept().await {
                socks.push(s);
            }
        });
        let mut c = Client::new(
            &format!("http://127.0.0.1:{port}/"),
            Duration::from_millis(200),
        )
        .expect("client");
        let r = c.post(Bytes::from_static(b"payload")).await;
        assert!(matches!(r, Err(PostError::Timeout(_))), "{r:?}");
        assert!(c.open.is_none(), "a timed-out connection is not reused");
    }

    #[test]
    fn only_http_urls_are_taken() {
        for bad in ["https://x/v1/traces", "x:4318", "http:///v1"] {
            assert!(Client::new(bad, Duration::from_secs(1)).is_err(), "{bad}");
        }
        let c = Client::new("http://collector/v1/traces", Duration::from_secs(1)).expect("ok");
        assert_eq!(c.addr, "collector:80");
    }
}
