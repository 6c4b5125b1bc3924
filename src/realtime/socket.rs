//! One WebSocket connection's loop, the same for every endpoint: what to send comes from a
//! [`Source`]; this module adds keepalive pings, the idle timeout, a write timeout, small
//! fragments, close codes for bad input, and the close on shutdown.
//!
//! Close codes (RFC 6455 §7.4.1): 1000 normal, 1001 going away (shutdown, idle), 1002 protocol
//! error, 1003 unsupported data (binary, or a message we do not know), 1007 invalid UTF-8,
//! 1008 policy (token revoked or expired), 1009 message too big, 1011 server error.

use crate::config::WsSettings;
use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use std::future::Future;
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{CloseCode, Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::frame::{CloseFrame, Frame};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

/// A server-side socket over an upgraded HTTP connection.
pub type Ws = WebSocketStream<TokioIo<Upgraded>>;

/// Why and how a connection ends from our side.
pub type Close = CloseFrame;

/// A close frame with `code` and a short human reason.
pub fn close(code: CloseCode, reason: &'static str) -> Close {
    CloseFrame {
        code,
        reason: reason.into(),
    }
}

/// tungstenite's settings for our sockets. Its defaults reserve 128 KiB for reading per
/// connection and let the write buffer grow without bound; ours reserve `read_buffer_bytes`
/// (clients only send tiny control messages), refuse larger messages, and write every frame
/// out at once (no write batching: frames are already coalesced per program), holding at most
/// a few fragments when the peer is slow.
pub fn config(s: &WsSettings) -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(s.read_buffer_bytes)
        .write_buffer_size(0)
        .max_write_buffer_size(s.fragment_bytes * 4 + 1024)
        .max_message_size(Some(s.max_message_bytes))
        .max_frame_size(Some(s.max_message_bytes))
}

/// What a connection sends, and what it does with what the client says.
pub trait Source: Send {
    /// The next text message to send (JSON, already serialized), or why to close.
    fn next(&mut self) -> impl Future<Output = Result<Bytes, Close>> + Send;
    /// A text message from the client; an error closes the connection with that frame.
    fn on_text(&mut self, text: &str) -> Result<(), Close>;
}

/// Runs the connection until either side ends it; `shutdown` turning true closes it (1001).
pub async fn drive(
    mut ws: Ws,
    mut source: impl Source,
    settings: &WsSettings,
    mut shutdown: watch::Receiver<bool>,
) {
    let write_timeout = Duration::from_secs(settings.write_timeout_secs.max(1));
    let idle_timeout = Duration::from_secs(settings.idle_timeout_secs.max(1));
    let mut ping = tokio::time::interval(Duration::from_secs(settings.ping_interval_secs.max(1)));
    ping.tick().await;
    let mut last_heard = Instant::now();
    let ending = loop {
        tokio::select! {
            incoming = ws.next() => match incoming {
                Some(Ok(message)) => {
                    last_heard = Instant::now();
                    if let Err(close) = on_message(message, &mut source) {
                        break Some(close);
                    }
                }
                Some(Err(e)) => break close_for(&e),
                None => break None,
            },
            next = source.next() => match next {
                Ok(text) => {
                    let sent = tokio::time::timeout(write_timeout, send_text(&mut ws, text, settings.fragment_bytes)).await;
                    if !matches!(sent, Ok(Ok(()))) {
                        break None;
                    }
                }
                Err(close) => break Some(close),
            },
            _ = ping.tick() => {
                let sent = tokio::time::timeout(write_timeout, ws.send(Message::Ping(Bytes::new()))).await;
                if !matches!(sent, Ok(Ok(()))) {
                    break None;
                }
            }
            _ = tokio::time::sleep_until(last_heard + idle_timeout) => {
                break Some(close(CloseCode::Away, "idle"));
            }
            _ = raised(&mut shutdown) => break Some(close(CloseCode::Away, "server shutting down")),
        }
    };
    if let Some(frame) = ending {
        say_goodbye(ws, frame, write_timeout).await;
    }
}

/// Resolves once `flag` is true; never if its sender is gone without raising it.
pub async fn raised(flag: &mut watch::Receiver<bool>) {
    if flag.wait_for(|raised| *raised).await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// Handles one client message; control frames are answered by tungstenite itself.
fn on_message(message: Message, source: &mut impl Source) -> Result<(), Close> {
    match message {
        Message::Text(text) => source.on_text(text.as_str()),
        Message::Binary(_) => Err(close(
            CloseCode::Unsupported,
            "binary messages are not accepted",
        )),
        Message::Ping(_) | Message::Pong(_) | Message::Close(_) | Message::Frame(_) => Ok(()),
    }
}

/// The close code for a read error, or `None` when the connection is simply gone.
fn close_for(e: &WsError) -> Option<Close> {
    match e {
        WsError::Capacity(_) => Some(close(CloseCode::Size, "message too big")),
        WsError::Protocol(_) => Some(close(CloseCode::Protocol, "protocol error")),
        WsError::Utf8(_) => Some(close(CloseCode::Invalid, "text is not UTF-8")),
        _ => None,
    }
}

/// Sends a close frame and waits briefly for the peer's answer, so it learns why.
async fn say_goodbye(mut ws: Ws, frame: Close, within: Duration) {
    let goodbye = async {
        if ws.send(Message::Close(Some(frame))).await.is_err() {
            return;
        }
        while let Some(Ok(_)) = ws.next().await {}
    };
    let _ = tokio::time::timeout(within.min(Duration::from_secs(2)), goodbye).await;
}

/// Sends one text message cut into frames of at most `fragment` bytes (RFC 6455 §5.4): the
/// payload is shared, not copied per subscriber, and tungstenite's write buffer — which keeps
/// its largest size for the life of the connection — never holds more than a fragment.
pub async fn send_text(ws: &mut Ws, text: Bytes, fragment: usize) -> Result<(), WsError> {
    let fragment = fragment.max(128);
    let count = text.len().div_ceil(fragment).max(1);
    for k in 0..count {
        let part = text.slice(k * fragment..((k + 1) * fragment).min(text.len()));
        let opcode = if k == 0 { Data::Text } else { Data::Continue };
        let frame = Frame::message(part, OpCode::Data(opcode), k + 1 == count);
        ws.feed(Message::Frame(frame)).await?;
    }
    ws.flush().await
}
