//! The server under test: the `boxoffice serve` binary in a process of its own, configured only
//! by environment (no config file), so a `kill -9` is a real crash of a real process.

use super::procs::{Daemon, Recipe, free_port};
use boxoffice::config::Settings;
use secrecy::ExposeSecret;
use std::path::Path;
use std::time::Duration;

/// How long a (re)started server may take until `/readyz` answers 200.
pub const READY_LIMIT: Duration = Duration::from_secs(60);

/// The server process and where it answers.
pub struct Server {
    daemon: Daemon,
    /// `http://127.0.0.1:<port>`.
    pub base: String,
}

impl Server {
    /// Starts `binary serve` against `settings`' stores and waits until it is ready.
    pub async fn start(
        binary: &Path,
        settings: &Settings,
        work: &Path,
        http: &reqwest::Client,
    ) -> anyhow::Result<Server> {
        let port = free_port()?;
        let base = format!("http://127.0.0.1:{port}");
        let recipe = Recipe {
            name: "server",
            program: binary.to_path_buf(),
            args: vec!["serve".into()],
            env: environment(settings, port, &base),
            user: None,
            log: work.join("server.log"),
            last_signal: "KILL",
        };
        let mut server = Server {
            daemon: Daemon::start(recipe)?,
            base,
        };
        server.wait_ready(http).await?;
        Ok(server)
    }

    /// `kill -9`: no shutdown hook runs, in-flight requests are cut.
    pub fn kill(&mut self) -> anyhow::Result<()> {
        self.daemon.stop("KILL")
    }

    /// Starts the process again on the same port (without waiting for it).
    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.daemon.restart()
    }

    /// Waits until `/readyz` answers 200; fails early if the process exited.
    pub async fn wait_ready(&mut self, http: &reqwest::Client) -> anyhow::Result<()> {
        let ready = super::poll(READY_LIMIT, async || {
            !self.daemon.alive() || self.ready(http).await
        })
        .await;
        anyhow::ensure!(
            self.daemon.alive(),
            "the server exited; see {}",
            self.daemon.log().display()
        );
        anyhow::ensure!(
            ready.is_some(),
            "the server is not ready after {READY_LIMIT:?}"
        );
        Ok(())
    }

    /// `/readyz` answers 200 now.
    pub async fn ready(&self, http: &reqwest::Client) -> bool {
        http.get(format!("{}/readyz", self.base))
            .timeout(Duration::from_secs(5))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
    }
}

/// Everything the server needs, as `BOXOFFICE__…` variables: the suite's stores and the
/// driver's secrets (its tokens must verify), rate limits off (every buyer shares one IP), and a
/// short payment window so that expiries happen during the faults too.
fn environment(settings: &Settings, port: u16, base: &str) -> Vec<(String, String)> {
    let s = settings;
    [
        ("BOXOFFICE_CONFIG", "/nonexistent/boxoffice.toml".into()),
        ("BOXOFFICE__SERVER__PORT", port.to_string()),
        ("BOXOFFICE__SERVER__PUBLIC_URL", base.to_string()),
        ("BOXOFFICE__DATABASE__URL", expose(&s.database.url)),
        ("BOXOFFICE__REDIS__URL", expose(&s.redis.url)),
        ("BOXOFFICE__REDIS__KEY_PREFIX", s.redis.key_prefix.clone()),
        ("BOXOFFICE__PULSAR__URL", s.pulsar.url.clone()),
        (
            "BOXOFFICE__PULSAR__TOPIC_PREFIX",
            s.pulsar.topic_prefix.clone(),
        ),
        ("BOXOFFICE__SECRETS__JWT_KEY", expose(&s.secrets.jwt_key)),
        (
            "BOXOFFICE__SECRETS__ID_NUMBER_KEY",
            expose(&s.secrets.id_number_key),
        ),
        (
            "BOXOFFICE__SECRETS__PAYMENT_SIGNING_KEY",
            expose(&s.secrets.payment_signing_key),
        ),
        ("BOXOFFICE__RATE_LIMIT__ENABLED", "false".into()),
        (
            "BOXOFFICE__ORDERS__PAYMENT_WINDOW_SECS",
            s.orders.payment_window_secs.to_string(),
        ),
        ("RUST_LOG", "warn".into()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

fn expose(secret: &secrecy::SecretString) -> String {
    secret.expose_secret().to_string()
}
