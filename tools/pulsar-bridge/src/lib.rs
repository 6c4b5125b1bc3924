//! Dev-only bridge between the `pulsar` crate and the `pulsar-lite` broker.
//!
//! pulsar-lite speaks the Pulsar binary protocol with two deviations that break the `pulsar`
//! crate (measured, see `docs/pulsar-lite.md` of the main project):
//!
//! 1. it sends payload frames without the optional magic number (`0x0e01`) and CRC32C checksum,
//!    which the crate's decoder requires ("Error decoding payload frame");
//! 2. its lookup answers send clients straight to the broker's own address, bypassing us.
//!
//! The bridge sits in front of the broker. Client → broker bytes pass through untouched. Broker →
//! client frames are parsed one by one: payload frames get the magic number and checksum inserted,
//! and lookup answers are rewritten to name the bridge. Production talks to Apache Pulsar directly
//! and never runs this.

use bytes::{BufMut, BytesMut};
use prost::Message as _;
use pulsar::proto::BaseCommand;
use std::net::SocketAddr;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// The Pulsar payload frame's magic number for CRC32C-checksummed payloads.
const MAGIC_CRC32C: [u8; 2] = [0x0e, 0x01];

/// Frames larger than this are refused: pulsar-lite's own limit is 5 MiB per message, so anything
/// far beyond it is a corrupt length prefix and must not make us allocate gigabytes.
const MAX_FRAME_BYTES: usize = 64 * 1024 * 1024;

/// Why a broker frame could not be rewritten.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The frame is shorter than its own length fields claim.
    #[error("frame shorter than its length fields")]
    Truncated,
    /// The command part is not a valid `BaseCommand`.
    #[error("undecodable command: {0}")]
    BadCommand(prost::DecodeError),
}

/// Rewrites one broker → client frame body (everything after the 4-byte total size) and returns
/// the complete frame, total size included.
///
/// Payload frames without the magic number get `0x0e01` + CRC32C(metadata size, metadata,
/// payload) inserted; lookup answers are pointed at `advertised_url`. Everything else is copied.
pub fn rewrite_broker_frame(body: &[u8], advertised_url: &str) -> Result<BytesMut, FrameError> {
    let cmd_size = read_u32(body, 0)? as usize;
    let cmd_end = 4usize.checked_add(cmd_size).ok_or(FrameError::Truncated)?;
    let command = body.get(4..cmd_end).ok_or(FrameError::Truncated)?;
    let rest = &body[cmd_end..];

    let command = rewrite_command(command, advertised_url)?;
    let needs_checksum = !rest.is_empty() && !rest.starts_with(&MAGIC_CRC32C);
    let extra = if needs_checksum { 6 } else { 0 };
    let total = 4 + command.len() + extra + rest.len();

    let mut out = BytesMut::with_capacity(total + 4);
    out.put_u32(total as u32);
    out.put_u32(command.len() as u32);
    out.put_slice(&command);
    if needs_checksum {
        out.put_slice(&MAGIC_CRC32C);
        out.put_u32(crc32c::crc32c(rest));
    }
    out.put_slice(rest);
    Ok(out)
}

/// Re-encodes the command only when it is a lookup answer; other commands keep their exact bytes.
fn rewrite_command(command: &[u8], advertised_url: &str) -> Result<Vec<u8>, FrameError> {
    let mut decoded = BaseCommand::decode(command).map_err(FrameError::BadCommand)?;
    let Some(lookup) = decoded.lookup_topic_response.as_mut() else {
        return Ok(command.to_vec());
    };
    lookup.broker_service_url = Some(advertised_url.to_string());
    lookup.broker_service_url_tls = None;
    lookup.proxy_through_service_url = Some(false);
    Ok(decoded.encode_to_vec())
}

fn read_u32(buf: &[u8], at: usize) -> Result<u32, FrameError> {
    let bytes = buf.get(at..at + 4).ok_or(FrameError::Truncated)?;
    Ok(u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]))
}

/// Where the bridge listens, where the broker is, and what URL lookups should name.
#[derive(Clone, Debug)]
pub struct BridgeConfig {
    /// The pulsar-lite broker's address.
    pub upstream: SocketAddr,
    /// The `pulsar://host:port` URL clients should use; normally the bridge's own address.
    pub advertised_url: String,
}

/// Accepts client connections until the listener fails, bridging each to the broker.
pub async fn serve(listener: TcpListener, config: BridgeConfig) -> std::io::Result<()> {
    loop {
        let (client, peer) = listener.accept().await?;
        let config = config.clone();
        tokio::spawn(async move {
            if let Err(e) = bridge_connection(client, &config).await {
                tracing::debug!(%peer, error = %e, "bridge connection ended");
            }
        });
    }
}

async fn bridge_connection(client: TcpStream, config: &BridgeConfig) -> anyhow::Result<()> {
    client.set_nodelay(true)?;
    let broker = TcpStream::connect(config.upstream).await?;
    broker.set_nodelay(true)?;
    let (mut client_rd, mut client_wr) = client.into_split();
    let (broker_rd, mut broker_wr) = broker.into_split();
    let upstream = async {
        tokio::io::copy(&mut client_rd, &mut broker_wr).await?;
        broker_wr.shutdown().await?;
        anyhow::Ok(())
    };
    let downstream = pump_broker_frames(broker_rd, &mut client_wr, &config.advertised_url);
    // Either side closing ends the connection: Pulsar connections are not half-closed.
    tokio::select! {
        r = upstream => r,
        r = downstream => r,
    }
}

async fn pump_broker_frames<R, W>(
    mut from: R,
    to: &mut W,
    advertised_url: &str,
) -> anyhow::Result<()>
where
    R: AsyncReadExt + Unpin,
    W: AsyncWriteExt + Unpin,
{
    let mut body = Vec::new();
    loop {
        let size = match from.read_u32().await {
            Ok(n) => n as usize,
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
            Err(e) => return Err(e.into()),
        };
        anyhow::ensure!(
            size <= MAX_FRAME_BYTES,
            "frame of {size} bytes exceeds the limit"
        );
        body.resize(size, 0);
        from.read_exact(&mut body).await?;
        let frame = rewrite_broker_frame(&body, advertised_url)?;
        to.write_all(&frame).await?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pulsar::proto::{CommandLookupTopicResponse, base_command::Type};

    fn frame_body(command: &BaseCommand, rest: &[u8]) -> Vec<u8> {
        let cmd = command.encode_to_vec();
        let mut body = Vec::new();
        body.put_u32(cmd.len() as u32);
        body.put_slice(&cmd);
        body.put_slice(rest);
        body
    }

    fn ping() -> BaseCommand {
        BaseCommand {
            r#type: Type::Ping as i32,
            ping: Some(Default::default()),
            ..Default::default()
        }
    }

    #[test]
    fn payload_without_magic_gets_magic_and_crc32c() {
        let metadata_and_payload = b"\x00\x00\x00\x03abcpayload";
        let body = frame_body(&ping(), metadata_and_payload);
        let out = rewrite_broker_frame(&body, "pulsar://x:1").unwrap();

        let total = u32::from_be_bytes(out[0..4].try_into().unwrap()) as usize;
        assert_eq!(total, out.len() - 4);
        assert_eq!(total, body.len() + 6);
        let cmd_size = u32::from_be_bytes(out[4..8].try_into().unwrap()) as usize;
        let at = 8 + cmd_size;
        assert_eq!(&out[at..at + 2], &MAGIC_CRC32C);
        let crc = u32::from_be_bytes(out[at + 2..at + 6].try_into().unwrap());
        assert_eq!(crc, crc32c::crc32c(metadata_and_payload));
        assert_eq!(&out[at + 6..], metadata_and_payload);
    }

    #[test]
    fn payload_with_magic_and_simple_commands_pass_unchanged() {
        let mut checked = MAGIC_CRC32C.to_vec();
        checked.extend_from_slice(b"\x01\x02\x03\x04rest");
        for rest in [&checked[..], &b""[..]] {
            let body = frame_body(&ping(), rest);
            let out = rewrite_broker_frame(&body, "pulsar://x:1").unwrap();
            assert_eq!(&out[4..], &body[..]);
        }
    }

    #[test]
    fn lookup_answer_names_the_bridge() {
        let lookup = BaseCommand {
            r#type: Type::LookupResponse as i32,
            lookup_topic_response: Some(CommandLookupTopicResponse {
                broker_service_url: Some("pulsar://127.0.0.1:6651".into()),
                proxy_through_service_url: Some(true),
                request_id: 7,
                ..Default::default()
            }),
            ..Default::default()
        };
        let out = rewrite_broker_frame(&frame_body(&lookup, b""), "pulsar://bridge:6650").unwrap();
        let cmd_size = u32::from_be_bytes(out[4..8].try_into().unwrap()) as usize;
        let decoded = BaseCommand::decode(&out[8..8 + cmd_size]).unwrap();
        let answer = decoded.lookup_topic_response.unwrap();
        assert_eq!(
            answer.broker_service_url.as_deref(),
            Some("pulsar://bridge:6650")
        );
        assert_eq!(answer.proxy_through_service_url, Some(false));
        assert_eq!(answer.request_id, 7);
    }

    #[test]
    fn truncated_frames_are_errors_not_panics() {
        assert!(matches!(
            rewrite_broker_frame(&[0, 0], "u"),
            Err(FrameError::Truncated)
        ));
        assert!(matches!(
            rewrite_broker_frame(&[0, 0, 0, 9, 1], "u"),
            Err(FrameError::Truncated)
        ));
    }
}
