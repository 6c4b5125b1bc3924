//! One run of the suite: set up, one phase per fault, the table, the verdict.

use super::checks;
use super::load::{Ack, Buyer, Load, TICKET_BUYERS, Target};
use super::report::{Row, Timing, render};
use super::server::{READY_LIMIT, Server};
use super::stores::{Binaries, Stores, Workdir};
use super::{Fault, Options, Plan, poll};
use anyhow::Context;
use boxoffice::bench::{Scratch, ordering, reconcile};
use boxoffice::config::Settings;
use rand::Rng;
use secrecy::ExposeSecret;
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// How long agreement is still watched for, to report how late it came.
const AGREE_WATCH: Duration = Duration::from_secs(30);
/// How long an unanswered request may still be retried once a phase ends.
const DRAIN: Duration = Duration::from_secs(10);
/// How long the order events may take to reach the broker after a fault.
const EVENTS_LIMIT: Duration = Duration::from_secs(60);
/// How long the load may take to get its orders acknowledged before and after a fault.
const WARM_LIMIT: Duration = Duration::from_secs(30);

/// Runs the suite; prints the table and fails when a check failed. Ctrl-C stops it, and every
/// process it started, cleanly.
pub async fn main(options: Options, settings: Settings) -> anyhow::Result<()> {
    let work = Workdir::create(options.keep)?;
    let outcome = tokio::select! {
        r = run(&options, settings, work.path()) => r,
        _ = boxoffice::shutdown_signal() => Err(anyhow::anyhow!("interrupted")),
    };
    let failures = match outcome {
        Ok(failures) => failures,
        Err(e) => vec![format!("{e:#}")],
    };
    if failures.is_empty() {
        println!("fault suite: every check passed");
        return Ok(());
    }
    let mut work = work;
    work.keep = !options.sabotage;
    anyhow::bail!("the fault suite failed:\n  {}", failures.join("\n  "))
}

async fn run(options: &Options, settings: Settings, work: &Path) -> anyhow::Result<Vec<String>> {
    let plan = Plan::from(options);
    let bins = binaries(options)?;
    eprintln!("chaos: stores and logs under {}", work.display());
    let stores = Stores::start(work, &bins).await?;
    let mut suite = Suite::prepare(options, &plan, settings, stores, work).await?;
    let mut rows = Vec::new();
    for fault in &plan.faults {
        let started = Instant::now();
        let row = suite.phase(*fault).await?;
        eprintln!("chaos: {} done in {:.1?}", row.fault, started.elapsed());
        rows.push(row);
    }
    if options.sabotage {
        rows.push(suite.sabotage().await?);
    }
    let table = render(&rows);
    println!("\n{table}");
    if let Some(out) = &options.out {
        let args: Vec<String> = std::env::args().skip(1).collect();
        let text = format!("`boxoffice {}`\n\n{table}", args.join(" "));
        std::fs::write(out, text).with_context(|| format!("write {}", out.display()))?;
    }
    let agree_limit = plan.agree_within.as_secs_f64();
    Ok(rows
        .iter()
        .flat_map(|r| {
            let notes = r.notes.iter().map(|n| format!("{}: {n}", r.fault));
            r.failures(agree_limit, plan.problems_fail)
                .into_iter()
                .chain(notes)
        })
        .collect())
}

/// Where each binary comes from: the options, else the places `dev/services.sh` and cargo
/// put them.
fn binaries(options: &Options) -> anyhow::Result<Binaries> {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let exe = std::env::current_exe()?;
    let beside = exe.with_file_name("pulsar-bridge");
    let pulsar_bridge = options
        .pulsar_bridge
        .clone()
        .unwrap_or(match beside.exists() {
            true => beside,
            false => repo.join("target/debug/pulsar-bridge"),
        });
    let pulsar_lite =
        (options.pulsar_lite.clone()).unwrap_or_else(|| repo.join(".data/bin/pulsar-lite"));
    for (path, how) in [
        (
            &pulsar_lite,
            "dev/services.sh up installs it; or --pulsar-lite",
        ),
        (
            &pulsar_bridge,
            "cargo build -p pulsar-bridge; or --pulsar-bridge",
        ),
    ] {
        anyhow::ensure!(path.exists(), "{} not found ({how})", path.display());
    }
    Ok(Binaries {
        pg_bin: options.pg_bin.clone().map_or_else(postgres_bin, Ok)?,
        redis_server: PathBuf::from("redis-server"),
        pulsar_lite,
        pulsar_bridge,
    })
}

/// The newest `/usr/lib/postgresql/<version>/bin` (Debian's layout).
fn postgres_bin() -> anyhow::Result<PathBuf> {
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .context("no /usr/lib/postgresql: pass --pg-bin")?
        .filter_map(|e| {
            let e = e.ok()?;
            let version = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((version, bin))
        })
        .collect();
    found.sort();
    found
        .pop()
        .map(|(_, bin)| bin)
        .context("no initdb under /usr/lib/postgresql: pass --pg-bin")
}

/// Everything a phase needs. (Fields drop in order: the server stops before its stores.)
struct Suite {
    http: reqwest::Client,
    server: Server,
    stores: Stores,
    database_url: String,
    admin: String,
    target: Target,
    buyers: Vec<Buyer>,
    clients: usize,
    /// Every order acknowledged so far, and those whose cancel was.
    acks: Vec<Ack>,
    cancelled: HashSet<i64>,
}

impl Suite {
    /// A migrated database on the suite's Postgres, a program on sale, the buyers, an admin,
    /// and the server started.
    async fn prepare(
        options: &Options,
        plan: &Plan,
        mut settings: Settings,
        stores: Stores,
        work: &Path,
    ) -> anyhow::Result<Suite> {
        settings.database.url = stores.postgres.url("boxoffice").into();
        settings.redis.url = stores.redis.url().into();
        settings.redis.key_prefix = "chaos:".into();
        settings.pulsar.url = stores.pulsar.url();
        settings.orders.payment_window_secs = options.payment_window_secs;
        let scratch = Scratch::create(&settings, "chaos").await?;
        let settings = scratch.settings;
        let pool = boxoffice::store::postgres::connect(&settings.database).await?;
        let (program, category) = ordering::hot_program(&pool, options.rows, "chaos").await?;
        let racers =
            ordering::mint_racers_with(&pool, &settings, plan.clients, TICKET_BUYERS).await?;
        let admin = reconcile::admin_token(&pool, &settings).await?;
        pool.close();
        let http = client(plan.clients)?;
        let binary = match &options.server_binary {
            Some(path) => path.clone(),
            None => std::env::current_exe()?,
        };
        let server = Server::start(&binary, &settings, work, &http).await?;
        let target = Target {
            base: server.base.clone(),
            program,
            category,
            think: Duration::from_millis(options.think_ms),
            payment_window: Duration::from_secs(options.payment_window_secs),
        };
        Ok(Suite {
            http,
            server,
            stores,
            database_url: settings.database.url.expose_secret().to_string(),
            admin,
            target,
            buyers: racers
                .into_iter()
                .enumerate()
                .map(|(i, r)| Buyer::new(i, r))
                .collect(),
            clients: plan.clients,
            acks: Vec::new(),
            cancelled: HashSet::new(),
        })
    }

    /// The load, the fault under it, recovery, more load, then the checks.
    async fn phase(&mut self, fault: Fault) -> anyhow::Result<Row> {
        let started = chrono::Utc::now();
        let load = Load::start(&self.http, &self.target, std::mem::take(&mut self.buyers));
        self.more_orders(&load).await;
        let healed = self.inject(fault).await?;
        let (backlog, (recovery, (buyers, tally))) =
            tokio::join!(backlog_sent(&self.database_url), self.recover(load, healed));
        self.buyers = buyers;
        self.acks.extend(tally.acks.iter().cloned());
        self.cancelled.extend(tally.cancelled.iter().copied());
        let mut row = Row::new(fault.name(), &tally);
        if !matches!(fault, Fault::Baseline(_)) {
            row.recovery = Timing::of(recovery, READY_LIMIT);
        }
        row.events = Timing::of(backlog, EVENTS_LIMIT);
        self.check(&mut row, started).await?;
        Ok(row)
    }

    /// Until the server is ready and a new order was acknowledged (how long that took), then
    /// another batch of orders, then the load stops.
    async fn recover(
        &self,
        load: Load,
        healed: Instant,
    ) -> (Option<Duration>, (Vec<Buyer>, super::load::Tally)) {
        let recovery = poll(READY_LIMIT, async || {
            load.created_since(healed) && self.server.ready(&self.http).await
        })
        .await;
        self.more_orders(&load).await;
        (recovery, load.stop(DRAIN).await)
    }

    /// Waits (bounded) until the load has had another batch of orders acknowledged: half as
    /// many as there are buyers.
    async fn more_orders(&self, load: &Load) {
        let goal = load.created() + (self.clients as u64).div_ceil(2);
        poll(WARM_LIMIT, async || load.created() >= goal).await;
    }

    /// Injects `fault` and repairs it; answers when the repair was made.
    async fn inject(&mut self, fault: Fault) -> anyhow::Result<Instant> {
        match fault {
            Fault::Baseline(load) => tokio::time::sleep(load).await,
            Fault::Kill(_) => {
                // Somewhere in the stream of requests, not at the moment the load warmed up.
                let jitter = rand::thread_rng().gen_range(0..500);
                tokio::time::sleep(Duration::from_millis(jitter)).await;
                self.server.kill()?;
                self.server.restart()?;
            }
            Fault::Redis(down) => {
                self.stores.redis.stop()?;
                tokio::time::sleep(down).await;
                self.stores.redis.start_again().await?;
            }
            Fault::Postgres(down) => {
                self.stores.postgres.stop()?;
                tokio::time::sleep(down).await;
                self.stores.postgres.start().await?;
            }
            Fault::Pulsar(down) => {
                self.stores.pulsar.stop()?;
                tokio::time::sleep(down).await;
                self.stores.pulsar.start_again().await?;
            }
        }
        Ok(Instant::now())
    }

    /// The checks, with the load stopped: invariants in Postgres, problems the reconciler
    /// raised since the phase `started`, agreement of the stores, every order event sent.
    async fn check(
        &self,
        row: &mut Row,
        started: chrono::DateTime<chrono::Utc>,
    ) -> anyhow::Result<()> {
        let pg = checks::connect(&self.database_url).await?;
        self.check_postgres(&pg, row).await?;
        row.problems = checks::problems(&pg, started).await?;
        let agree = checks::seconds_to_agree(
            &self.http,
            &self.server.base,
            &self.admin,
            self.target.program,
            AGREE_WATCH,
        )
        .await;
        row.agree = Timing::of(agree.map(Duration::from_secs_f64), AGREE_WATCH);
        let sent = poll(EVENTS_LIMIT, async || {
            checks::unsent_events(&pg, i64::MAX)
                .await
                .is_ok_and(|n| n == 0)
        })
        .await;
        if sent.is_none() {
            let unsent = checks::unsent_events(&pg, i64::MAX).await?;
            row.notes.push(format!("{unsent} order events never sent"));
        }
        Ok(())
    }

    /// Lost orders, double sales and stuck seats, straight from Postgres.
    async fn check_postgres(
        &self,
        pg: &tokio_postgres::Client,
        row: &mut Row,
    ) -> anyhow::Result<()> {
        let program = self.target.program;
        let (lost, notes) = checks::lost(pg, &self.acks, &self.cancelled).await?;
        row.lost = lost;
        row.notes.extend(notes.into_iter().take(5));
        row.double_sold = checks::double_sold(pg, program).await?;
        let rows = checks::stuck_rows(pg, program).await?;
        // An expiry due during an outage happens after it: give it the slack to catch up.
        let mut overdue = 0;
        poll(Duration::from_secs(20), async || {
            overdue = checks::overdue(pg, program).await.unwrap_or(u64::MAX);
            overdue == 0
        })
        .await;
        row.stuck = rows + overdue;
        Ok(())
    }

    /// The server is stopped (so nothing repairs what follows), then one acknowledged order is
    /// deleted, one free seat is marked taken by no order, and two closed orders are made live
    /// again with a ticket of the second on the first one's seat; the Postgres checks must find
    /// all three.
    async fn sabotage(&mut self) -> anyhow::Result<Row> {
        self.server.kill()?;
        let with_seats: Vec<i64> = (self.acks.iter())
            .filter(|a| !a.seats.is_empty())
            .map(|a| a.order_no)
            .collect();
        let [first, second, .., victim] = with_seats[..] else {
            anyhow::bail!("fewer than three orders to plant damage in");
        };
        let mut pg = checks::connect(&self.database_url).await?;
        let tx = pg.transaction().await?;
        // Neither triggers nor the claims' keys may stop the plants.
        tx.batch_execute("SET LOCAL session_replication_role = replica")
            .await?;
        let program = self.target.program;
        type Param<'a> = &'a (dyn tokio_postgres::types::ToSql + Sync);
        let plants: [(&str, Vec<Param>); 4] = [
            (LOSE, vec![&victim]),
            (STICK, vec![&program]),
            (REVIVE, vec![&first, &second]),
            (DOUBLE_SELL, vec![&first, &second]),
        ];
        for (sql, params) in plants {
            tx.execute(sql, &params).await?;
        }
        tx.commit().await?;
        let mut row = Row::new("sabotage (planted)".into(), &Default::default());
        self.check_postgres(&pg, &mut row).await?;
        Ok(row)
    }
}

/// An acknowledged order and its tickets vanish.
const LOSE: &str =
    "WITH t AS (DELETE FROM tickets WHERE gene = ($1::bigint & 15)::smallint AND order_no = $1)
    DELETE FROM orders WHERE gene = ($1::bigint & 15)::smallint AND order_no = $1";
/// A free seat is held by an order that does not exist.
const STICK: &str = "UPDATE seats SET status = 'held', order_no = 1, hold_expires_at = now() + interval '1 hour'
    WHERE id = (SELECT id FROM seats WHERE program_id = $1 AND status = 'available' ORDER BY id LIMIT 1)";
/// Two orders are live again.
const REVIVE: &str = "UPDATE orders SET status = 'pending_payment', closed_at = NULL, expires_at = now() + interval '1 hour'
    WHERE (gene, order_no) IN ((($1::bigint & 15)::smallint, $1), (($2::bigint & 15)::smallint, $2))";
/// The second gets a ticket on the first one's seat.
const DOUBLE_SELL: &str =
    "INSERT INTO tickets (order_no, gene, line_no, user_id, program_id, ticket_category_id,
        ticket_buyer_id, seat_id, price_cents)
    SELECT b.order_no, b.gene, 99, b.user_id, b.program_id, b.ticket_category_id, b.ticket_buyer_id,
           a.seat_id, b.price_cents
    FROM tickets a, tickets b
    WHERE a.gene = ($1::bigint & 15)::smallint AND a.order_no = $1 AND a.seat_id IS NOT NULL
      AND b.gene = ($2::bigint & 15)::smallint AND b.order_no = $2
    LIMIT 1";

/// How long until every order event recorded by now has been sent to the broker.
async fn backlog_sent(database_url: &str) -> Option<Duration> {
    let pg = checks::connect(database_url).await.ok()?;
    let mark = checks::last_event(&pg).await.ok()?;
    poll(EVENTS_LIMIT, async || {
        checks::unsent_events(&pg, mark).await.is_ok_and(|n| n == 0)
    })
    .await
}

/// One HTTP client for every buyer: a connection each, a timeout a buyer would have.
fn client(clients: usize) -> anyhow::Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .pool_max_idle_per_host(clients)
        .connect_timeout(Duration::from_secs(2))
        .timeout(Duration::from_secs(10))
        .build()?)
}
