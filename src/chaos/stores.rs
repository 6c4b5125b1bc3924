//! The suite's own stores: a Postgres cluster made with `initdb`, a Redis without persistence,
//! and a pulsar-lite broker with its bridge, each on a free port under one working directory.
//! The shared development services (5432, 6379, 6650/6651) are never touched: stopping them
//! would break everyone else's work on the machine.

use super::procs::{Daemon, Recipe, free_port, run_to_end, wait_port};
use anyhow::Context;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How long a store may take to accept connections after a (re)start; Postgres replays its WAL
/// after an immediate shutdown.
const START_LIMIT: Duration = Duration::from_secs(60);

/// Where the binaries come from.
#[derive(Debug, Clone)]
pub struct Binaries {
    /// Folder holding `initdb` and `postgres`.
    pub pg_bin: PathBuf,
    /// `redis-server`.
    pub redis_server: PathBuf,
    /// The pulsar-lite broker.
    pub pulsar_lite: PathBuf,
    /// The dev bridge in front of it (ARCHITECTURE.md, "Events on Pulsar").
    pub pulsar_bridge: PathBuf,
}

/// A directory of the run's own, removed when dropped unless kept for a post-mortem.
pub struct Workdir {
    path: PathBuf,
    /// Keep the directory (logs, data) after the run.
    pub keep: bool,
}

impl Workdir {
    /// `$TMPDIR/boxoffice-chaos-<uuid>`, readable by the Postgres service account.
    pub fn create(keep: bool) -> anyhow::Result<Workdir> {
        let path =
            std::env::temp_dir().join(format!("boxoffice-chaos-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&path).with_context(|| format!("create {}", path.display()))?;
        Ok(Workdir { path, keep })
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for Workdir {
    fn drop(&mut self) {
        if self.keep {
            eprintln!("chaos: working directory kept: {}", self.path.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

/// A Postgres cluster of the suite's own (trust authentication, local only).
pub struct OwnPostgres {
    daemon: Daemon,
    /// Its port.
    pub port: u16,
}

impl OwnPostgres {
    /// `initdb` into `work/pg`, then starts the postmaster and waits until it accepts queries.
    pub async fn create(work: &Path, bin: &Path) -> anyhow::Result<OwnPostgres> {
        let user = postgres_account()?;
        let dir = work.join("pg");
        std::fs::create_dir_all(&dir)?;
        if let Some((uid, gid)) = user {
            std::os::unix::fs::chown(&dir, Some(uid), Some(gid))?;
        }
        let log = work.join("postgres.log");
        let mut initdb = std::process::Command::new(bin.join("initdb"));
        initdb.args(["-D", &path_arg(&dir.join("data")), "-U", "postgres"]);
        initdb.args(["-A", "trust", "-E", "UTF8", "--locale=C", "--no-sync"]);
        if let Some((uid, gid)) = user {
            use std::os::unix::process::CommandExt;
            initdb.uid(uid).gid(gid);
        }
        run_to_end(initdb, &log, "initdb")?;
        let port = free_port()?;
        let daemon = Daemon::start(postmaster(bin, &dir, port, user, log))?;
        let pg = OwnPostgres { daemon, port };
        pg.wait_ready().await?;
        Ok(pg)
    }

    /// `postgres://postgres@127.0.0.1:<port>/<database>`.
    pub fn url(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }

    /// Immediate shutdown (`pg_ctl stop -m immediate`): every backend ends at once, no
    /// checkpoint, crash recovery at the next start.
    pub fn stop(&mut self) -> anyhow::Result<()> {
        self.daemon.stop("QUIT")
    }

    /// Starts the postmaster again and waits until it accepts queries.
    pub async fn start(&mut self) -> anyhow::Result<()> {
        self.daemon.restart()?;
        self.wait_ready().await
    }

    async fn wait_ready(&self) -> anyhow::Result<()> {
        let url = self.url("postgres");
        let ready = super::poll(START_LIMIT, async || {
            tokio_postgres::connect(&url, tokio_postgres::NoTls)
                .await
                .is_ok()
        })
        .await;
        anyhow::ensure!(
            ready.is_some(),
            "postgres does not accept connections; see {}",
            self.daemon.log().display()
        );
        Ok(())
    }
}

/// The postmaster itself (not `pg_ctl`, which detaches it): a child of this process, so it
/// is stopped when the suite ends however it ends.
fn postmaster(bin: &Path, dir: &Path, port: u16, user: Option<(u32, u32)>, log: PathBuf) -> Recipe {
    let args = [
        "-D",
        &path_arg(&dir.join("data")),
        "-p",
        &port.to_string(),
        "-k",
        &path_arg(dir),
        "-c",
        "listen_addresses=127.0.0.1",
        "-c",
        "max_connections=200",
    ];
    Recipe {
        name: "postgres",
        program: bin.join("postgres"),
        args: args.iter().map(|s| s.to_string()).collect(),
        env: Vec::new(),
        user,
        log,
        last_signal: "QUIT",
    }
}

fn path_arg(path: &Path) -> String {
    path.to_string_lossy().into_owned()
}

/// Postgres will not run as root: when we are root, the `postgres` account's (uid, gid).
fn postgres_account() -> anyhow::Result<Option<(u32, u32)>> {
    let status = std::fs::read_to_string("/proc/self/status").context("read /proc/self/status")?;
    let euid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|ids| ids.split_whitespace().nth(1))
        .context("no Uid line in /proc/self/status")?;
    if euid != "0" {
        return Ok(None);
    }
    let passwd = std::fs::read_to_string("/etc/passwd").context("read /etc/passwd")?;
    passwd
        .lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .find(|f| f.first() == Some(&"postgres") && f.len() > 3)
        .map(|f| Ok(Some((f[2].parse()?, f[3].parse()?))))
        .unwrap_or_else(|| {
            anyhow::bail!("running as root, and there is no `postgres` account to run Postgres as")
        })
}

/// A Redis of the suite's own: no snapshots, no append-only file, so a restart comes back
/// empty, as a crashed cache would.
pub struct OwnRedis {
    daemon: Daemon,
    /// Its port.
    pub port: u16,
}

impl OwnRedis {
    /// Starts `redis-server` on a free port.
    pub async fn start(work: &Path, program: &Path) -> anyhow::Result<OwnRedis> {
        let port = free_port()?;
        let dir = path_arg(work);
        let args = ["--port", &port.to_string(), "--bind", "127.0.0.1"];
        let rest = ["--save", "", "--appendonly", "no", "--dir", &dir];
        let recipe = Recipe {
            name: "redis",
            program: program.to_path_buf(),
            args: args.iter().chain(&rest).map(|s| s.to_string()).collect(),
            env: Vec::new(),
            user: None,
            log: work.join("redis.log"),
            last_signal: "KILL",
        };
        let redis = OwnRedis {
            daemon: Daemon::start(recipe)?,
            port,
        };
        wait_port(port, START_LIMIT, "redis").await?;
        Ok(redis)
    }

    /// `redis://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// A crash: `kill -9`, everything in memory gone.
    pub fn stop(&mut self) -> anyhow::Result<()> {
        self.daemon.stop("KILL")
    }

    /// Starts it again, empty, on the same port.
    pub async fn start_again(&mut self) -> anyhow::Result<()> {
        self.daemon.restart()?;
        wait_port(self.port, START_LIMIT, "redis").await
    }
}

/// A pulsar-lite broker of the suite's own, behind a bridge of its own.
pub struct OwnPulsar {
    bridge: Daemon,
    broker: Daemon,
    broker_port: u16,
    bridge_port: u16,
}

impl OwnPulsar {
    /// Starts the broker (metrics off: it would take port 8080) and the bridge.
    pub async fn start(work: &Path, bins: &Binaries) -> anyhow::Result<OwnPulsar> {
        let config = work.join("pulsar-lite.toml");
        std::fs::write(&config, "[metrics]\nenabled = false\n")?;
        let (broker_port, bridge_port) = (free_port()?, free_port()?);
        let broker_addr = format!("127.0.0.1:{broker_port}");
        let broker_args = [
            "--config",
            &path_arg(&config),
            "--addr",
            &broker_addr,
            "--db-path",
            &path_arg(&work.join("pulsar-db")),
            // At `info` it logs a line per dispatch of 20 messages: tens of thousands a second
            // while a backlog drains, and it then spends its time writing them.
            "--log-level",
            "warn",
        ];
        let bridge_args = [
            "--listen",
            &format!("127.0.0.1:{bridge_port}"),
            "--upstream",
            &broker_addr,
        ];
        let broker = Daemon::start(pulsar_recipe(
            "pulsar-lite",
            &bins.pulsar_lite,
            &broker_args,
            work,
        ))?;
        let bridge = Daemon::start(pulsar_recipe(
            "pulsar-bridge",
            &bins.pulsar_bridge,
            &bridge_args,
            work,
        ))?;
        let pulsar = OwnPulsar {
            bridge,
            broker,
            broker_port,
            bridge_port,
        };
        pulsar.wait_ready().await?;
        Ok(pulsar)
    }

    /// `pulsar://127.0.0.1:<bridge port>`.
    pub fn url(&self) -> String {
        format!("pulsar://127.0.0.1:{}", self.bridge_port)
    }

    /// The broker goes away: pulsar-lite is stopped (`TERM`) and so is its bridge, so clients
    /// find nothing listening, as with a stopped Apache Pulsar.
    pub fn stop(&mut self) -> anyhow::Result<()> {
        self.bridge.stop("KILL")?;
        self.broker.stop("TERM")
    }

    /// Both come back on their ports.
    pub async fn start_again(&mut self) -> anyhow::Result<()> {
        self.broker.restart()?;
        self.bridge.restart()?;
        self.wait_ready().await
    }

    async fn wait_ready(&self) -> anyhow::Result<()> {
        wait_port(self.broker_port, START_LIMIT, "pulsar-lite").await?;
        wait_port(self.bridge_port, START_LIMIT, "pulsar-bridge").await
    }
}

/// The broker or the bridge, logging warnings only.
fn pulsar_recipe(name: &'static str, program: &Path, args: &[&str], work: &Path) -> Recipe {
    Recipe {
        name,
        program: program.to_path_buf(),
        args: args.iter().map(|s| s.to_string()).collect(),
        env: vec![("RUST_LOG".into(), "warn".into())],
        user: None,
        log: work.join(format!("{name}.log")),
        last_signal: "TERM",
    }
}

/// The three stores of one run.
pub struct Stores {
    /// Source of truth.
    pub postgres: OwnPostgres,
    /// Sessions, rate limits, markers, the mirror.
    pub redis: OwnRedis,
    /// Order events.
    pub pulsar: OwnPulsar,
}

impl Stores {
    /// Starts all three under `work`.
    pub async fn start(work: &Path, bins: &Binaries) -> anyhow::Result<Stores> {
        Ok(Stores {
            postgres: OwnPostgres::create(work, &bins.pg_bin).await?,
            redis: OwnRedis::start(work, &bins.redis_server).await?,
            pulsar: OwnPulsar::start(work, bins).await?,
        })
    }
}
