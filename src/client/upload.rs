//! Requests whose body is produced while it is sent (`vm cp` to a guest: a tar stream built
//! from local files), so an upload of any size holds only a few chunks in memory: a producer
//! thread writes into a bounded channel that the request body drains.

use std::future::Future;
use std::io::{self, Write};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{header, Request};
use http_body_util::{BodyExt, Limited};
use hyper::body::{Body, Frame};
use hyper_util::rt::TokioIo;
use tokio::net::UnixStream;
use tokio::sync::mpsc;

use super::{runtime, ApiPath, Client, ClientError, Method, Response, MAX_BODY};

/// Bytes per chunk sent (and per `write` the producer's buffer makes).
const CHUNK: usize = 256 * 1024;
/// Chunks in flight between the producer and the connection.
const IN_FLIGHT: usize = 4;

/// Why an upload failed.
#[derive(Debug, thiserror::Error)]
pub enum UploadError {
    /// Producing the body failed (a local file could not be read); the request was aborted.
    #[error("Reading the local side failed: {0}")]
    Produce(#[source] io::Error),
    /// The request failed.
    #[error(transparent)]
    Client(#[from] ClientError),
}

/// A request body fed by a channel.
struct ChannelBody {
    rx: mpsc::Receiver<io::Result<Bytes>>,
}

impl Body for ChannelBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        self.rx.poll_recv(cx).map(|o| o.map(|r| r.map(Frame::data)))
    }
}

/// The producer's writer: each `write` sends one chunk, waiting while the channel is full.
struct ChannelWriter {
    tx: mpsc::Sender<io::Result<Bytes>>,
    /// Set when the request stopped taking the body (hearthd answered early, or the
    /// connection failed): the exchange's outcome says why, not the producer's error.
    cut: Arc<AtomicBool>,
}

impl Write for ChannelWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        self.tx
            .blocking_send(Ok(Bytes::copy_from_slice(buf)))
            .map_err(|_| {
                self.cut.store(true, Ordering::Relaxed);
                io::Error::new(io::ErrorKind::BrokenPipe, "upload ended")
            })?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Sends `method path` with a body that `produce` writes (chunked), and reads the answer
/// (at most [`MAX_BODY`] bytes). A failing `produce` aborts the request, so hearthd sees a
/// cut-off body rather than a complete one.
///
/// # Errors
/// See [`UploadError`]; the producer's failure wins over the connection's.
pub fn send_stream<F>(
    client: &Client,
    method: Method,
    path: &ApiPath,
    content_type: &'static str,
    produce: F,
) -> Result<Response, UploadError>
where
    F: FnOnce(&mut dyn Write) -> io::Result<()> + Send + 'static,
{
    let uri = path
        .as_str()
        .parse::<http::Uri>()
        .map_err(|_| ClientError::InvalidRequest(format!("bad path {:?}", path.as_str())))?;
    let (tx, rx) = mpsc::channel(IN_FLIGHT);
    let req = Request::builder()
        .method(method)
        .uri(uri)
        .header(header::HOST, "hearthd")
        .header(header::CONNECTION, "close")
        .header(header::ACCEPT, "application/json")
        .header(header::CONTENT_TYPE, content_type)
        .body(ChannelBody { rx })
        .map_err(|e| ClientError::InvalidRequest(e.to_string()))?;
    let cut = Arc::new(AtomicBool::new(false));
    let writer_cut = cut.clone();
    let producer = std::thread::spawn(move || {
        let err_tx = tx.clone();
        let mut w = io::BufWriter::with_capacity(
            CHUNK,
            ChannelWriter {
                tx,
                cut: writer_cut,
            },
        );
        let r = produce(&mut w).and_then(|()| w.flush());
        if let Err(e) = &r {
            // Fails the body, so the request is aborted instead of ending cleanly.
            let _ = err_tx.blocking_send(Err(io::Error::new(e.kind(), e.to_string())));
        }
        r
    });
    let sent = runtime()
        .map_err(UploadError::Client)?
        .block_on(exchange(client, req));
    let outcome = producer
        .join()
        .unwrap_or_else(|_| Err(io::Error::other("the producer panicked")));
    match (outcome, sent) {
        (Err(e), _) if !cut.load(Ordering::Relaxed) => Err(UploadError::Produce(e)),
        (_, r) => Ok(r?),
    }
}

async fn exchange(client: &Client, req: Request<ChannelBody>) -> Result<Response, ClientError> {
    let stream = UnixStream::connect(client.socket())
        .await
        .map_err(|e| client.connect_error(e))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    let mut conn = Some(Box::pin(conn));
    let work = async move {
        let resp = sender.send_request(req).await?;
        let (status, headers) = super::head(&resp);
        let body = match Limited::new(resp.into_body(), MAX_BODY).collect().await {
            Ok(c) => c.to_bytes().to_vec(),
            Err(e) => match e.downcast::<hyper::Error>() {
                Ok(e) => return Err((*e).into()),
                Err(_) => return Err(ClientError::TooLarge { limit: MAX_BODY }),
            },
        };
        Ok::<_, ClientError>(Response {
            status,
            headers,
            body,
        })
    };
    let mut work = std::pin::pin!(work);
    // Drives the connection beside the exchange, without spawning: the connection ends with
    // this call.
    std::future::poll_fn(|cx| {
        if conn
            .as_mut()
            .is_some_and(|c| c.as_mut().poll(cx).is_ready())
        {
            conn = None;
        }
        work.as_mut().poll(cx)
    })
    .await
}
