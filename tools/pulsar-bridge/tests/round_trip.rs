//! End to end through a real pulsar-lite broker: the `pulsar` crate produces, consumes, acks and
//! nacks through the bridge. Without the bridge the consumer fails with "Error decoding payload
//! frame"; `direct_connection_is_broken` keeps that fact honest.

use futures::StreamExt;
use pulsar::{Consumer, Pulsar, SubType, TokioExecutor, consumer::ConsumerOptions};
use pulsar_bridge::{BridgeConfig, serve};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A pulsar-lite process with its own port and data folder, killed on drop.
struct Broker {
    child: Child,
    addr: SocketAddr,
    _dir: TempDir,
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn pulsar_lite_binary() -> PathBuf {
    if let Ok(path) = std::env::var("PULSAR_LITE_BIN") {
        return path.into();
    }
    let default = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../.data/bin/pulsar-lite");
    assert!(
        default.exists(),
        "pulsar-lite not found at {}; run dev/services.sh up or set PULSAR_LITE_BIN",
        default.display()
    );
    default
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn start_broker() -> Broker {
    let dir = std::env::temp_dir().join(format!("pulsar-lite-test-{}", uuid_like()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("pulsar-lite.toml");
    std::fs::write(&config, "[metrics]\nenabled = false\n").unwrap();
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let child = Command::new(pulsar_lite_binary())
        .arg("--config")
        .arg(&config)
        .arg("--addr")
        .arg(addr.to_string())
        .arg("--db-path")
        .arg(dir.join("db"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start pulsar-lite");
    let broker = Broker {
        child,
        addr,
        _dir: TempDir(dir),
    };
    wait_until_listening(addr).await;
    broker
}

async fn wait_until_listening(addr: SocketAddr) {
    for _ in 0..200 {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("pulsar-lite did not listen on {addr}");
}

fn uuid_like() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    format!("{}-{}", std::process::id(), nanos.as_nanos())
}

async fn start_bridge(upstream: SocketAddr) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let advertised_url = format!("pulsar://{}", listener.local_addr().unwrap());
    let config = BridgeConfig {
        upstream,
        advertised_url: advertised_url.clone(),
    };
    tokio::spawn(serve(listener, config));
    advertised_url
}

/// A client of `url`. The broker accepts TCP a moment before it answers the Pulsar handshake
/// (seen on a loaded machine), so the handshake is retried for up to 10 s.
async fn connect(url: String) -> Pulsar<TokioExecutor> {
    let mut last_error = None;
    for _ in 0..50 {
        match Pulsar::builder(url.clone(), TokioExecutor).build().await {
            Ok(client) => return client,
            Err(e) => last_error = Some(e),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("no Pulsar handshake with {url}: {last_error:?}");
}

async fn consumer(client: &Pulsar<TokioExecutor>, topic: &str) -> Consumer<Vec<u8>, TokioExecutor> {
    client
        .consumer()
        .with_topic(topic)
        .with_subscription("round-trip")
        .with_subscription_type(SubType::Shared)
        .with_options(ConsumerOptions::default())
        .build()
        .await
        .unwrap()
}

async fn next_payload(
    consumer: &mut Consumer<Vec<u8>, TokioExecutor>,
) -> pulsar::consumer::Message<Vec<u8>> {
    tokio::time::timeout(Duration::from_secs(20), consumer.next())
        .await
        .expect("a message within 20 s")
        .expect("stream open")
        .expect("message decodes")
}

#[tokio::test]
async fn produce_consume_ack_nack_through_the_bridge() {
    let broker = start_broker().await;
    let url = start_bridge(broker.addr).await;
    let client = connect(url).await;
    let topic = format!("persistent://public/default/bridge-rt-{}", uuid_like());
    let mut consumer = consumer(&client, &topic).await;
    let mut producer = client.producer().with_topic(&topic).build().await.unwrap();

    for body in ["one", "two"] {
        producer
            .send_non_blocking(body.as_bytes().to_vec())
            .await
            .unwrap()
            .await
            .unwrap();
    }
    let first = next_payload(&mut consumer).await;
    assert_eq!(first.payload.data, b"one");
    consumer.ack(&first).await.unwrap();

    let second = next_payload(&mut consumer).await;
    assert_eq!(second.payload.data, b"two");
    consumer.nack(&second).await.unwrap();
    let again = next_payload(&mut consumer).await;
    assert_eq!(
        again.payload.data, b"two",
        "a nacked message is delivered again"
    );
    consumer.ack(&again).await.unwrap();
}

#[tokio::test]
async fn direct_connection_is_broken() {
    let broker = start_broker().await;
    let client = connect(format!("pulsar://{}", broker.addr)).await;
    let topic = format!("persistent://public/default/bridge-direct-{}", uuid_like());
    let mut consumer = consumer(&client, &topic).await;
    let mut producer = client.producer().with_topic(&topic).build().await.unwrap();
    producer
        .send_non_blocking(b"x".to_vec())
        .await
        .unwrap()
        .await
        .unwrap();
    let got = tokio::time::timeout(Duration::from_secs(5), consumer.next()).await;
    let decoded_ok = matches!(got, Ok(Some(Ok(ref m))) if m.payload.data == b"x");
    assert!(
        !decoded_ok,
        "pulsar-lite now sends checksums; the bridge may be unnecessary"
    );
}
