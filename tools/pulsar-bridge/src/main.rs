//! `pulsar-bridge`: dev-only front for pulsar-lite so the `pulsar` crate works against it.
//! See the library docs for what it rewrites and why.

use clap::Parser;
use pulsar_bridge::{BridgeConfig, serve};
use std::net::SocketAddr;

/// Command line of the bridge; `dev/services.sh` starts it.
#[derive(Parser, Debug)]
#[command(about = "Bridge the pulsar crate to a pulsar-lite broker (dev only)")]
struct Args {
    /// Address to listen on; clients use `pulsar://<this>`.
    #[arg(long, default_value = "127.0.0.1:6650")]
    listen: SocketAddr,
    /// The pulsar-lite broker.
    #[arg(long, default_value = "127.0.0.1:6651")]
    upstream: SocketAddr,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .init();
    let args = Args::parse();
    let listener = tokio::net::TcpListener::bind(args.listen).await?;
    let advertised_url = format!("pulsar://{}", listener.local_addr()?);
    tracing::info!(%advertised_url, upstream = %args.upstream, "pulsar bridge listening");
    serve(
        listener,
        BridgeConfig {
            upstream: args.upstream,
            advertised_url,
        },
    )
    .await?;
    Ok(())
}
