//! The accept loop and the limits that keep one slow or greedy client from taking the server
//! from everyone else during an on-sale.
//!
//! - **Connection cap** (`server.max_connections`): past it a new connection is closed at once.
//!   Every connection costs a task, buffers and a file descriptor; the cap keeps a flood of
//!   idle sockets from exhausting descriptors that buyers already inside need.
//! - **Header-read timeout** (`server.header_read_timeout_ms`): a client must finish sending a
//!   request's headers this long after it starts (or after its previous answer on a kept-alive
//!   connection), so a slowloris trickling one header byte at a time is cut off, and idle
//!   kept-alive connections do not pile up toward the cap.
//! - **Request timeout** (`server.request_timeout_ms`): a request still unanswered then gets 503
//!   `REQUEST_TIMEOUT` (a slow body, a stuck dependency); an order keeps going on its own task
//!   (`http::orders`), so the buyer's retry with the same key finds its outcome.
//! - **Load shedding** (`server.max_in_flight_requests`): past that many requests in progress
//!   the next is answered 503 `OVERLOADED` at once. Queueing would only make every buyer wait
//!   longer for an answer their client gives up on; a fast refusal with `Retry-After` sheds the
//!   excess while the admitted requests keep their latency. Health, readiness and metrics are
//!   exempt: operators and load balancers must see the server as it is while it sheds.
//!
//! WebSockets count toward the connection cap but, once upgraded, not toward the in-flight
//! requests or timeouts (they have their own limits in `[ws]`).

use super::error::ApiError;
use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, Request};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tower::ServiceExt;

/// The server's connection and request limits (from `[server]`).
#[derive(Debug, Clone, Copy)]
pub struct ServerLimits {
    /// Open connections at most (WebSockets included).
    pub max_connections: usize,
    /// Time a client has to send a request's headers.
    pub header_read_timeout: Duration,
    /// Time a request has to be answered.
    pub request_timeout: Duration,
    /// Requests in progress at most before new ones are shed.
    pub max_in_flight_requests: usize,
    /// Kernel send buffer per connection; 0 = the OS's own.
    pub socket_send_buffer: usize,
}

/// Accepts connections until `shutdown` completes, then lets in-flight requests finish.
pub async fn accept_loop(
    listener: TcpListener,
    app: Router,
    limits: ServerLimits,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    // One permit per open connection; taken before the connection is served.
    let connections = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let graceful = GracefulShutdown::new();
    let builder = connection_builder(&limits);
    tokio::pin!(shutdown);
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of descriptors or a connection reset before accept: wait a moment
                    // instead of spinning on the same error.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        let Ok(permit) = connections.clone().try_acquire_owned() else {
            metrics::counter!("http_connections_refused_total").increment(1);
            continue; // dropping `tcp` closes it
        };
        tune_socket(&tcp, limits.socket_send_buffer);
        serve_one(&builder, &graceful, tcp, peer, app.clone(), permit);
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}

fn connection_builder(limits: &ServerLimits) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    builder
}

/// Serves one connection on its own task; the permit is returned when it closes.
fn serve_one(
    builder: &auto::Builder<TokioExecutor>,
    graceful: &GracefulShutdown,
    tcp: TcpStream,
    peer: SocketAddr,
    app: Router,
    permit: OwnedSemaphorePermit,
) {
    let service = app.map_request(move |req: Request<Incoming>| {
        let mut req = req.map(Body::new);
        req.extensions_mut().insert(ConnectInfo(peer));
        req
    });
    let connection = builder
        .serve_connection_with_upgrades(TokioIo::new(tcp), TowerToHyperService::new(service))
        .into_owned();
    let connection = graceful.watch(connection);
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(error = %e, "connection ended with an error");
        }
        drop(permit);
    });
}

/// No Nagle delay: seat-map frames and API answers are small and must leave at once, not
/// wait for the peer's delayed ACK (tens of ms). A fixed send buffer, when configured, bounds
/// the kernel memory each connection may hold for a slow reader (the OS otherwise grows it).
fn tune_socket(tcp: &TcpStream, send_buffer: usize) {
    let _ = tcp.set_nodelay(true);
    if send_buffer > 0
        && let Err(e) = socket2::SockRef::from(tcp).set_send_buffer_size(send_buffer)
    {
        tracing::debug!(error = %e, "socket send buffer not set");
    }
}

/// Load shedding and the request timeout, as one middleware (see the module comment).
#[derive(Clone)]
pub struct RequestLimits {
    in_flight: Arc<Semaphore>,
    timeout: Duration,
}

impl RequestLimits {
    /// At most `max_in_flight` requests at once, each answered within `timeout`.
    pub fn new(max_in_flight: usize, timeout: Duration) -> Self {
        RequestLimits {
            in_flight: Arc::new(Semaphore::new(max_in_flight.max(1))),
            timeout,
        }
    }

    /// The middleware: sheds or times out `req`, else runs it.
    pub async fn enforce(self, req: Request, next: Next) -> Response {
        if is_exempt(req.uri().path()) {
            return next.run(req).await;
        }
        let Ok(_permit) = self.in_flight.try_acquire() else {
            metrics::counter!("http_requests_shed_total").increment(1);
            return ApiError::unavailable("OVERLOADED", "the server is busy; retry shortly")
                .retry_after(1)
                .into_response();
        };
        match tokio::time::timeout(self.timeout, next.run(req)).await {
            Ok(response) => response,
            Err(_) => {
                metrics::counter!("http_requests_timed_out_total").increment(1);
                ApiError::unavailable("REQUEST_TIMEOUT", "the request took too long; retry")
                    .retry_after(1)
                    .into_response()
            }
        }
    }
}

/// Probes and scrapes pass while the server sheds, so it is seen as it is.
fn is_exempt(path: &str) -> bool {
    matches!(path, "/healthz" | "/readyz" | "/metrics")
}
