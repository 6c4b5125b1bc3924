//! Processes the fault suite owns. Each is started from a [`Recipe`], stopped with the signal
//! its fault calls for, started again on the same port, and stopped when dropped: a failed or
//! interrupted run must not leave a Redis, a Postgres or a server behind.

use anyhow::Context;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a stopped process may take to exit before it is killed.
const EXIT_GRACE: Duration = Duration::from_secs(15);

/// What to run and how: enough to start the same process again after a fault.
#[derive(Debug, Clone)]
pub struct Recipe {
    /// Shown in errors and in the log file's name.
    pub name: &'static str,
    /// The executable.
    pub program: PathBuf,
    /// Its arguments.
    pub args: Vec<String>,
    /// Environment added to the inherited one.
    pub env: Vec<(String, String)>,
    /// Run as this (uid, gid): Postgres refuses to run as root.
    pub user: Option<(u32, u32)>,
    /// Standard output and error are appended here, across restarts.
    pub log: PathBuf,
    /// The signal that stops it when dropped (`QUIT` for Postgres: its immediate shutdown
    /// also ends the backends, which a `KILL` of the postmaster would leave running).
    pub last_signal: &'static str,
}

/// A running (or stopped, between faults) process of the suite.
pub struct Daemon {
    recipe: Recipe,
    child: Option<Child>,
}

impl Daemon {
    /// Starts `recipe`.
    pub fn start(recipe: Recipe) -> anyhow::Result<Daemon> {
        let mut daemon = Daemon {
            recipe,
            child: None,
        };
        daemon.restart()?;
        Ok(daemon)
    }

    /// Starts the process again (a no-op while it runs).
    pub fn restart(&mut self) -> anyhow::Result<()> {
        if self.child.is_some() {
            return Ok(());
        }
        let r = &self.recipe;
        let log = append(&r.log)?;
        let mut command = Command::new(&r.program);
        command
            .args(&r.args)
            .envs(r.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        if let Some((uid, gid)) = r.user {
            use std::os::unix::process::CommandExt;
            command.uid(uid).gid(gid);
        }
        let child = command
            .spawn()
            .with_context(|| format!("start {} ({})", r.name, r.program.display()))?;
        self.child = Some(child);
        Ok(())
    }

    /// Sends `signal` (`KILL`, `TERM`, `QUIT`, …) and waits for the exit; a process still
    /// running after [`EXIT_GRACE`] is killed.
    pub fn stop(&mut self, signal: &str) -> anyhow::Result<()> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        if signal == "KILL" {
            child.kill().ok();
        } else {
            send_signal(child.id(), signal)?;
        }
        if wait_exit(&mut child, EXIT_GRACE)?.is_none() {
            child.kill().ok();
            child.wait()?;
            anyhow::bail!("{} ignored SIG{signal}; killed", self.recipe.name);
        }
        Ok(())
    }

    /// The log file of the process.
    pub fn log(&self) -> &Path {
        &self.recipe.log
    }

    /// False once the process has exited on its own (it crashed or refused to start).
    pub fn alive(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let signal = self.recipe.last_signal;
        if let Err(e) = self.stop(signal) {
            eprintln!("chaos: stopping {}: {e:#}", self.recipe.name);
        }
    }
}

fn append(path: &Path) -> anyhow::Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("open {}", path.display()))
}

/// `kill -s <signal> <pid>`: std sends only `KILL`.
fn send_signal(pid: u32, signal: &str) -> anyhow::Result<()> {
    let status = Command::new("kill")
        .args(["-s", signal, &pid.to_string()])
        .status()
        .context("run kill")?;
    anyhow::ensure!(status.success(), "kill -s {signal} {pid} failed");
    Ok(())
}

/// Polls for the child's exit until `limit`; `None` if it still runs.
fn wait_exit(
    child: &mut Child,
    limit: Duration,
) -> anyhow::Result<Option<std::process::ExitStatus>> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(Some(status));
        }
        if Instant::now() >= deadline {
            return Ok(None);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A TCP port nobody listens on now (the kernel's choice).
pub fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// Waits until something accepts connections on `127.0.0.1:port`, for at most `limit`.
pub async fn wait_port(port: u16, limit: Duration, what: &str) -> anyhow::Result<()> {
    let listening = super::poll(limit, async || {
        tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
    })
    .await;
    anyhow::ensure!(
        listening.is_some(),
        "{what} does not listen on {port} after {limit:?}"
    );
    Ok(())
}

/// Runs `command` to completion; its output goes to `log`. For one-shot tools (`initdb`).
pub fn run_to_end(mut command: Command, log: &Path, what: &str) -> anyhow::Result<()> {
    let out = append(log)?;
    let status = command
        .stdin(Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out)
        .status()
        .with_context(|| format!("run {what}"))?;
    anyhow::ensure!(status.success(), "{what} failed; see {}", log.display());
    Ok(())
}
