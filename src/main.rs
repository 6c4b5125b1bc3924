//! The `boxoffice` binary: parses the command line and hands over to the library.

use anyhow::Context;
use boxoffice::config::Settings;
use boxoffice::{bench, seed, store, telemetry};
use clap::{Parser, Subcommand};
use std::path::PathBuf;

mod chaos;

/// boxoffice — ticketing engine for high-demand on-sales.
#[derive(Parser, Debug)]
#[command(name = "boxoffice", version, about, long_about = None)]
struct Cli {
    /// Configuration file layered over the embedded defaults; BOXOFFICE__SECTION__KEY
    /// environment variables override it. A missing file is skipped.
    #[arg(
        long,
        short,
        global = true,
        env = "BOXOFFICE_CONFIG",
        default_value = "config.toml"
    )]
    config: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Apply migrations, then serve the REST API, WebSockets and pages until SIGTERM or Ctrl-C.
    Serve,
    /// Run the mock payment provider, a stand-in third party, on its own port
    /// (`payments.mockpay.host`/`port`) until SIGTERM or Ctrl-C. Development only.
    Mockpay,
    /// Apply pending database migrations and exit (safe to repeat).
    Migrate,
    /// Create demo areas, categories, 24 programs (incl. the "Demo Stadium Concert"),
    /// the demo buyer and the demo admin. Idempotent.
    SeedDemo,
    /// Create an admin account, or grant the admin role to an existing account.
    CreateAdmin {
        /// Login email of the admin.
        #[arg(long)]
        email: String,
        /// Password (used only when the account is created).
        #[arg(long, env = "BOXOFFICE_ADMIN_PASSWORD")]
        password: String,
        /// Shown name.
        #[arg(long, default_value = "Administrator")]
        display_name: String,
    },
    /// Run a benchmark against the configured Redis and Postgres; prints a table and writes a
    /// JSON summary.
    #[command(subcommand)]
    Bench(BenchCommand),
    /// Order events on Pulsar.
    #[command(subcommand)]
    Events(EventsCommand),
    /// The fault suite: own stores, a server process and buyers; kill -9, Redis, Postgres and
    /// broker outages; checks after each; prints a table and fails when a check does.
    Chaos(chaos::Options),
}

#[derive(Subcommand, Debug)]
enum EventsCommand {
    /// Print order events as they arrive, one line each, until Ctrl-C.
    Tail {
        /// Only events of this type (OrderCreated, OrderPaid, OrderCancelled, OrderExpired,
        /// OrderRefunded, CatalogChanged).
        #[arg(long = "type")]
        event_type: Option<String>,
        /// Only events of this program.
        #[arg(long)]
        program: Option<i64>,
    },
}

#[derive(Subcommand, Debug)]
enum BenchCommand {
    /// Hold 2 random seats of one large category: actor vs Redis-Lua vs Postgres (atomic
    /// UPDATE, SELECT FOR UPDATE), alternating rounds, at each concurrency.
    SeatHold {
        /// Seats in the category.
        #[arg(long, default_value_t = 100_000)]
        seats: u32,
        /// Rounds per design and concurrency.
        #[arg(long, default_value_t = 3)]
        rounds: u32,
        /// Seconds per measured round.
        #[arg(long, default_value_t = 3.0)]
        secs: f64,
        /// Concurrent clients, comma-separated; targets are judged at the highest.
        #[arg(long, value_delimiter = ',', default_value = "4,64")]
        concurrency: Vec<usize>,
        /// Seed of the seat permutation.
        #[arg(long, default_value_t = 2026)]
        seed: u64,
        /// Where the JSON summary goes.
        #[arg(long, default_value = "bench-results/seat-hold.json")]
        out: PathBuf,
    },
    /// Buyers race over HTTP for one hot seated category until sold out: group commit vs one
    /// transaction per order (every connection / one writer) vs a non-durable Redis-Lua order
    /// path, plus the trivial-endpoint ceiling, alternating rounds; Postgres CPU and writer
    /// statements per batch, judged against the targets.
    Ordering {
        /// Buyers racing (one seat each).
        #[arg(long, default_value_t = 2_000)]
        buyers: usize,
        /// Rows of 40 seats in the hot category.
        #[arg(long, default_value_t = 25)]
        rows: i32,
        /// Rounds per mode.
        #[arg(long, default_value_t = 2)]
        rounds: u32,
        /// Concurrent HTTP clients.
        #[arg(long, default_value_t = 64)]
        concurrency: usize,
        /// Payment window of the expiry-wave mode: the earlier sale is placed this long before
        /// the race (long enough for Postgres to go quiet in between).
        #[arg(long, default_value_t = 12)]
        wave_window_secs: u64,
        /// Where the JSON summary goes.
        #[arg(long, default_value = "bench-results/ordering.json")]
        out: PathBuf,
    },
    /// Order events: the outbox relay (batched) vs one awaited publish at a time; ordering
    /// throughput with the relay and consumers running vs stopped; commit-to-consumer delay.
    Events {
        /// Outbox rows drained per relay round (two events per order).
        #[arg(long, default_value_t = 20_000)]
        rows: i64,
        /// Rounds per mode, in both parts.
        #[arg(long, default_value_t = 3)]
        rounds: u32,
        /// Buyers racing per ordering round (one seat each).
        #[arg(long, default_value_t = 2_000)]
        buyers: usize,
        /// Rows of 40 seats in each ordering round's hot category.
        #[arg(long, default_value_t = 25)]
        seat_rows: i32,
        /// Concurrent HTTP clients of the ordering part.
        #[arg(long, default_value_t = 64)]
        concurrency: usize,
        /// Where the JSON summary goes.
        #[arg(long, default_value = "bench-results/events.json")]
        out: PathBuf,
    },
    /// Watching a sale: a reconciler pass over a 50,000-seat category, and ordering with the
    /// reconciler, the Redis mirror and an admin stream running vs none of them.
    Reconcile {
        /// Rows of 40 seats of the category a pass reconciles.
        #[arg(long, default_value_t = 1_250)]
        seat_rows: i32,
        /// Passes timed.
        #[arg(long, default_value_t = 5)]
        passes: u32,
        /// Buyers per ordering round (one seat each).
        #[arg(long, default_value_t = 2_000)]
        buyers: usize,
        /// Rows of 40 seats per ordering round.
        #[arg(long, default_value_t = 25)]
        rows: i32,
        /// Ordering rounds per side.
        #[arg(long, default_value_t = 3)]
        rounds: u32,
        /// Concurrent HTTP clients.
        #[arg(long, default_value_t = 64)]
        concurrency: usize,
        /// Where the JSON summary goes.
        #[arg(long, default_value = "bench-results/reconcile.json")]
        out: PathBuf,
    },
    /// Seat-map WebSockets: N subscribers (in steps) on one program while orders change seats;
    /// memory per idle connection, change-to-last-subscriber delay, frames and CPU with
    /// coalescing vs one frame per committed change. The server runs as a child process.
    Ws {
        /// Subscriber counts, ascending (clients are added to reach each).
        #[arg(long, value_delimiter = ',', default_value = "1000,5000,10000")]
        subscribers: Vec<usize>,
        /// Seat changes per second to drive (orders of 4 seats, each cancelled after).
        #[arg(long, default_value_t = 2_000)]
        changes_per_sec: u32,
        /// Seconds of driving per step.
        #[arg(long, default_value_t = 10)]
        secs: u64,
        /// Rows of 40 seats in the program's category.
        #[arg(long, default_value_t = 25)]
        rows: i32,
        /// Where the JSON summary goes.
        #[arg(long, default_value = "bench-results/ws.json")]
        out: PathBuf,
    },
    /// Program detail and list over HTTP: a server with a warm cache vs one with caching
    /// disabled, alternating rounds, on a scratch copy of the demo data.
    Catalog {
        /// Rounds per endpoint and server.
        #[arg(long, default_value_t = 3)]
        rounds: u32,
        /// Seconds per round.
        #[arg(long, default_value_t = 3.0)]
        secs: f64,
        /// Concurrent HTTP clients.
        #[arg(long, default_value_t = 32)]
        concurrency: usize,
        /// Where the JSON summary goes.
        #[arg(long, default_value = "bench-results/catalog.json")]
        out: PathBuf,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let settings = Settings::load(&cli.config)?;
    telemetry::init_logging(&settings.log);
    match cli.command {
        Command::Serve => serve(settings),
        Command::Mockpay => tokio::runtime::Runtime::new()?.block_on(mockpay(settings)),
        Command::Bench(which) => {
            tokio::runtime::Runtime::new()?.block_on(run_bench(which, settings))
        }
        Command::Chaos(options) => {
            tokio::runtime::Runtime::new()?.block_on(chaos::main(options, settings))
        }
        Command::Events(EventsCommand::Tail {
            event_type,
            program,
        }) => {
            let filter = boxoffice::events::tail::TailFilter {
                event_type,
                program_id: program,
            };
            tokio::runtime::Runtime::new()?.block_on(tail_events(filter, settings))
        }
        other => tokio::runtime::Runtime::new()?.block_on(run_admin_command(other, settings)),
    }
}

/// The server runs inside an actix `System` whose runtime is a multi-threaded tokio runtime:
/// HTTP tasks use all worker threads, actors live on the System's arbiters.
fn serve(settings: Settings) -> anyhow::Result<()> {
    let system = actix_rt::System::with_tokio_rt(|| {
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .expect("tokio runtime")
    });
    system.block_on(async move {
        let listener = tokio::net::TcpListener::bind(settings.bind_address())
            .await
            .with_context(|| format!("cannot listen on {}", settings.bind_address()))?;
        let url = settings.server.public_url.clone();
        println!("boxoffice serving on {url}  (API {url}/api/v1, OpenAPI {url}/api-docs/openapi.json, health {url}/readyz)");
        boxoffice::serve(settings, listener, boxoffice::shutdown_signal()).await
    })
}

/// `boxoffice mockpay`: the mock provider on its own listener, as a third party would run.
async fn mockpay(settings: Settings) -> anyhow::Result<()> {
    let address = settings.mockpay_bind_address();
    let listener = tokio::net::TcpListener::bind(&address)
        .await
        .with_context(|| format!("cannot listen on {address}"))?;
    println!(
        "mockpay serving on {} (callbacks to {})",
        settings.mockpay_url(),
        settings.mockpay_notify_url()
    );
    boxoffice::mockpay::run(settings, listener, boxoffice::shutdown_signal()).await
}

/// `boxoffice events tail`: to standard output until Ctrl-C or SIGTERM.
async fn tail_events(
    filter: boxoffice::events::tail::TailFilter,
    settings: Settings,
) -> anyhow::Result<()> {
    let pulsar = store::PulsarStore::connect(&settings.pulsar).await?;
    let mut out = std::io::stdout();
    boxoffice::events::tail::tail(&pulsar, filter, &mut out, boxoffice::shutdown_signal()).await?;
    Ok(())
}

async fn run_admin_command(command: Command, settings: Settings) -> anyhow::Result<()> {
    let pool = store::postgres::connect(&settings.database).await?;
    let applied = boxoffice::migrate(&pool, &settings).await?;
    match command {
        Command::Migrate => println!("migrations applied: {applied}"),
        Command::SeedDemo => {
            let summary = seed::seed_demo(&pool, &settings).await?;
            println!(
                "demo data ready: {} programs (stadium concert id {}), buyer {} / {}, admin {} / {}",
                summary.program_ids.len(),
                summary.program_ids[0],
                seed::DEMO_BUYER_EMAIL,
                seed::DEMO_BUYER_PASSWORD,
                seed::DEMO_ADMIN_EMAIL,
                seed::DEMO_ADMIN_PASSWORD
            );
        }
        Command::CreateAdmin {
            email,
            password,
            display_name,
        } => {
            let id = store::users::ensure_user(
                &pool,
                store::users::EnsureUser {
                    email: &email,
                    password: &password,
                    display_name: &display_name,
                    roles: &[store::users::role::BUYER, store::users::role::ADMIN],
                },
            )
            .await?;
            println!("admin {email} has user id {id}");
        }
        Command::Serve
        | Command::Mockpay
        | Command::Bench(_)
        | Command::Events(_)
        | Command::Chaos(_) => {
            unreachable!("handled in main")
        }
    }
    Ok(())
}

async fn run_bench(which: BenchCommand, settings: Settings) -> anyhow::Result<()> {
    match which {
        BenchCommand::SeatHold {
            seats,
            rounds,
            secs,
            concurrency,
            seed,
            out,
        } => {
            let opts = bench::seat_hold::Options {
                seats,
                rounds,
                round: std::time::Duration::from_secs_f64(secs),
                concurrency,
                seed,
            };
            let report = bench::seat_hold::run(&settings, &opts).await?;
            publish(&out, &report, &bench::seat_hold::render(&report))?;
            anyhow::ensure!(
                report.valid,
                "a run broke an invariant; the results are invalid"
            );
        }
        BenchCommand::Ordering {
            buyers,
            rows,
            rounds,
            concurrency,
            wave_window_secs,
            out,
        } => {
            let opts = bench::ordering::Options {
                buyers,
                rows,
                rounds,
                concurrency,
                wave_window_secs,
                ..Default::default()
            };
            let report = bench::ordering::run(&settings, &opts).await?;
            publish(&out, &report, &bench::ordering::render(&report))?;
            anyhow::ensure!(
                report.valid,
                "a round broke an invariant; the results are invalid"
            );
        }
        BenchCommand::Events {
            rows,
            rounds,
            buyers,
            seat_rows,
            concurrency,
            out,
        } => {
            let opts = bench::events::Options {
                rows,
                rounds,
                buyers,
                seat_rows,
                concurrency,
            };
            let report = bench::events::run(&settings, &opts).await?;
            publish(&out, &report, &bench::events::render(&report))?;
            anyhow::ensure!(
                report.valid,
                "a round broke an invariant; the results are invalid"
            );
        }
        BenchCommand::Reconcile {
            seat_rows,
            passes,
            buyers,
            rows,
            rounds,
            concurrency,
            out,
        } => {
            let opts = bench::reconcile::Options {
                seat_rows,
                passes,
                buyers,
                rows,
                rounds,
                concurrency,
            };
            let report = bench::reconcile::run(&settings, &opts).await?;
            publish(&out, &report, &bench::reconcile::render(&report))?;
            anyhow::ensure!(
                report.valid,
                "a round broke an invariant or a pass found a divergence; the results are invalid"
            );
        }
        BenchCommand::Ws {
            subscribers,
            changes_per_sec,
            secs,
            rows,
            out,
        } => {
            let opts = bench::ws::Options {
                subscribers,
                changes_per_sec,
                secs,
                rows,
                server_binary: std::env::current_exe()?,
            };
            let report = bench::ws::run(&settings, &opts).await?;
            publish(&out, &report, &bench::ws::render(&report))?;
        }
        BenchCommand::Catalog {
            rounds,
            secs,
            concurrency,
            out,
        } => {
            let opts = bench::catalog::Options {
                rounds,
                round: std::time::Duration::from_secs_f64(secs),
                concurrency,
            };
            let report = bench::catalog::run(&settings, &opts).await?;
            publish(&out, &report, &bench::catalog::render(&report))?;
        }
    }
    Ok(())
}

/// Writes the JSON summary to `out` and prints it with its table.
fn publish(
    out: &std::path::Path,
    report: &impl serde::Serialize,
    table: &str,
) -> anyhow::Result<()> {
    let json = serde_json::to_string_pretty(report)?;
    write_result(out, &json)?;
    println!("{json}\n{table}");
    println!("summary written to {}", out.display());
    Ok(())
}

fn write_result(path: &std::path::Path, json: &str) -> anyhow::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    }
    std::fs::write(path, json).with_context(|| format!("write {}", path.display()))
}
