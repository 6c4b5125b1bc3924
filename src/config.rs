//! Typed configuration in three layers: embedded defaults (`src/defaults.toml`) ← a TOML file
//! (`config.toml` by default) ← `BOXOFFICE__SECTION__KEY` environment variables.
//!
//! Every key has a default, so a file or the environment only says what differs. A value of the
//! wrong type stops startup with an error that names the key and the layer it came from. Secrets
//! are [`SecretString`]s: their `Debug` output is redacted, so logging the settings is safe.

use figment::Figment;
use figment::providers::{Env, Format, Toml};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use std::path::Path;
use std::time::Duration;

/// The embedded first layer; it lists every key, so it doubles as reference documentation.
pub const DEFAULTS_TOML: &str = include_str!("defaults.toml");

/// Prefix of environment overrides; `__` separates section and key.
pub const ENV_PREFIX: &str = "BOXOFFICE__";

/// All settings of one boxoffice process.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// HTTP listener.
    pub server: ServerSettings,
    /// PostgreSQL, the source of truth.
    pub database: DatabaseSettings,
    /// Redis: sessions, rate limits, read-model mirror. Never decides.
    pub redis: RedisSettings,
    /// Pulsar: order events.
    pub pulsar: PulsarSettings,
    /// Keys that must never be logged.
    pub secrets: Secrets,
    /// Logging.
    pub log: LogSettings,
    /// Category actors.
    pub actors: ActorSettings,
    /// Registration, sessions and ticket buyers.
    pub accounts: AccountSettings,
    /// Catalog read cache (in-process → Redis → Postgres).
    pub cache: CacheSettings,
    /// Token buckets per route group.
    pub rate_limit: RateLimitSettings,
    /// The group-commit writer.
    pub writer: WriterConfig,
    /// Ordering rules.
    pub orders: OrderSettings,
    /// Payment providers.
    pub payments: PaymentSettings,
    /// Outbox relay and event consumers.
    pub events: EventSettings,
    /// WebSockets: live seat maps and buyers' channels.
    pub ws: WsSettings,
    /// The Redis mirror and the reconciler.
    pub reconcile: ReconcileSettings,
    /// The background probe behind fail-fast and `/readyz`.
    pub health: HealthSettings,
}

/// How often and how patiently the stores are probed ([`crate::store::health::Probe`]).
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthSettings {
    /// Time between probe rounds: how long requests may still wait on a store that just went
    /// down, and how soon one that came back is used again.
    pub probe_interval_ms: u64,
    /// Longest wait for one store's answer before it counts as down.
    pub probe_timeout_ms: u64,
}

impl HealthSettings {
    /// `probe_interval_ms` as a duration.
    pub fn interval(&self) -> Duration {
        Duration::from_millis(self.probe_interval_ms.max(1))
    }

    /// `probe_timeout_ms` as a duration.
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.probe_timeout_ms.max(1))
    }
}

/// Payment providers. The built-in `mockpay` stands in for a real third party: it runs as a
/// process of its own (`boxoffice mockpay`, [`crate::mockpay`]) on its own port, and our side
/// talks to it over HTTP only, signing every merchant call.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PaymentSettings {
    /// Every this many seconds, refunds unconfirmed for as long are sent again (0 = never).
    pub refund_retry_secs: u64,
    /// The mock provider.
    pub mockpay: MockpaySettings,
}

/// The mock provider: where it listens and is reached, the merchant it knows (us), where it
/// sends that merchant's callbacks, its bounds and its test switches. One section for both
/// sides, so the demo's single `config.toml` cannot give them different addresses or ids.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MockpaySettings {
    /// Accept the `mockpay` channel. Off in production: anyone can press its "pay" button.
    pub enabled: bool,
    /// Interface the provider process binds.
    pub host: String,
    /// Port the provider process binds; 0 picks a free one (tests).
    pub port: u16,
    /// Where its API and checkout pages are reached (our client, the pay URLs it hands out);
    /// empty = `http://{host}:{port}`.
    pub base_url: String,
    /// Our merchant id at the provider; merchant calls are signed with
    /// `secrets.payment_signing_key`, the key the provider holds for this id.
    pub merchant_id: String,
    /// Where the provider sends this merchant's callbacks: fixed by its configuration, never
    /// taken from a request (a caller-chosen address made it a request forger and a signing
    /// oracle). Empty = `server.public_url` + `/api/v1/payments/notify/mockpay`.
    pub notify_url: String,
    /// A signed merchant call whose timestamp is further than this from the provider's clock
    /// is refused: a captured call cannot be replayed later.
    pub signature_window_secs: u64,
    /// Largest trade amount the provider opens, in minor units.
    pub max_amount_cents: i64,
    /// One token bucket per client address on every provider route.
    pub rate_limit: BucketSettings,
    /// Callback deliveries tried before the provider gives up (a real provider retries for hours).
    pub callback_attempts: u32,
    /// Wait before the second delivery; doubles after each failure.
    pub callback_backoff_ms: u64,
    /// Test switch: wait this long before the first delivery.
    pub callback_delay_ms: u64,
    /// Test switch: never deliver callbacks (pay-check must find the payment).
    pub drop_callbacks: bool,
    /// Test switch: deliver every callback twice, concurrently.
    pub duplicate_callbacks: bool,
    /// How long the provider remembers a trade.
    pub trade_ttl_secs: u64,
}

/// WebSocket limits and timings. Every number bounds memory or time per connection, so ten
/// thousand watchers of one sale cost megabytes, not gigabytes.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WsSettings {
    /// A program's seat changes are gathered this long and sent as one frame; 0 = one frame per
    /// committed change. Trades a little latency for far fewer frames during a rush.
    pub coalesce_ms: u64,
    /// Frames a subscriber may fall behind before it gets a fresh snapshot instead of the
    /// backlog (its queue is a window on one shared ring, so lagging costs no memory).
    pub max_lag_frames: usize,
    /// A program's feed with no subscribers ends after this long.
    pub feed_linger_secs: u64,
    /// Server pings this often, so dead peers and idle proxies are noticed.
    pub ping_interval_secs: u64,
    /// A connection that sent nothing (not even a pong) for this long is closed.
    pub idle_timeout_secs: u64,
    /// A frame the peer does not take within this long closes the connection (a stuck reader
    /// must not hold a task and buffers forever).
    pub write_timeout_secs: u64,
    /// Open WebSockets per process.
    pub max_connections: usize,
    /// Open WebSockets per client address.
    pub max_per_ip: usize,
    /// Origins (`scheme://host[:port]`) browsers may open sockets from; empty = only
    /// `server.public_url`'s; `"*"` = any. Requests without `Origin` (non-browsers) pass.
    pub allowed_origins: Vec<String>,
    /// How often open buyer channels re-check their token (revoked or expired → closed).
    pub auth_recheck_secs: u64,
    /// Bytes reserved per connection for reading; clients only send tiny control messages.
    pub read_buffer_bytes: usize,
    /// Largest message a client may send; larger ones close the connection (1009).
    pub max_message_bytes: usize,
    /// Outgoing messages are cut into frames of at most this many bytes, so a connection's
    /// write buffer never grows to the size of a whole seat-map snapshot.
    pub fragment_bytes: usize,
    /// On shutdown, open sockets get a close frame and this long to finish.
    pub shutdown_grace_ms: u64,
}

impl WsSettings {
    /// Whether a browser page from `origin` may open a socket here.
    pub fn origin_allowed(&self, origin: &str, public_url: &str) -> bool {
        let origin = origin.trim_end_matches('/');
        if self.allowed_origins.is_empty() {
            return origin_of(public_url) == origin;
        }
        self.allowed_origins
            .iter()
            .any(|o| o == "*" || o.trim_end_matches('/') == origin)
    }
}

/// `scheme://host[:port]` of a URL (what browsers send as `Origin`).
fn origin_of(url: &str) -> &str {
    let after_scheme = url.find("://").map_or(0, |i| i + 3);
    match url[after_scheme..].find('/') {
        Some(i) => &url[..after_scheme + i],
        None => url,
    }
}

/// The outbox relay (Postgres → Pulsar) and the order-event consumers.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventSettings {
    /// Run the relay here (it still publishes only while it holds the database-wide lease).
    pub relay: bool,
    /// Run this process's consumers.
    pub consumers: bool,
    /// Most outbox rows published per round, all in flight together.
    pub relay_batch: i64,
    /// Most events a consumer applies in one transaction: those already delivered when it
    /// looks, never waiting for more (a burst costs one commit, a lone event is not delayed).
    pub consumer_batch: usize,
    /// Safety net: look for unsent rows this often even without a notification.
    pub relay_poll_ms: u64,
    /// Longest wait between attempts while the broker is away (doubling from 100 ms).
    pub relay_backoff_max_ms: u64,
    /// How often a process without the lease tries to take it over.
    pub lease_retry_ms: u64,
    /// Attempts of a consumer on one event before it is dead-lettered.
    pub max_attempts: i32,
    /// First wait before a failed event is redelivered (doubling per attempt).
    pub retry_backoff_ms: u64,
    /// An event the bookkeeping consumer has not seen this long after its commit is marked
    /// `problem` in the MQ message records.
    pub consume_deadline_secs: u64,
}

/// The Redis read-model mirror and the continuous reconciler (`reconcile`).
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReconcileSettings {
    /// Keep the Redis mirror of counts and seat statuses.
    pub mirror: bool,
    /// How long the mirror gathers committed changes before one pipelined write.
    pub mirror_coalesce_ms: u64,
    /// A continuous pass this often (0 = on demand only).
    pub interval_ms: u64,
    /// A difference between stores must still be there this much later to count: a change in
    /// flight (committed in Postgres, not yet in the actor's snapshot or the mirror) is not one.
    pub confirm_ms: u64,
    /// An unpaid order's bill older than this is asked about at the provider (its callback may
    /// have been lost).
    pub callback_grace_secs: u64,
}

/// The dev-only values shipped in `defaults.toml`: a server holding any of them in production
/// would let anyone forge tokens or read ticket buyers' id numbers.
const DEV_ONLY_SECRETS: [(&str, &str); 3] = [
    (
        "secrets.jwt_key",
        "dev-only-jwt-key-change-me-0123456789abcdef",
    ),
    (
        "secrets.payment_signing_key",
        "dev-only-mockpay-signing-key",
    ),
    (
        "secrets.id_number_key",
        "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f",
    ),
];

/// Shortest JWT key accepted in production (HS256 wants at least its output size).
const MIN_JWT_KEY_BYTES: usize = 32;

impl Settings {
    /// Everything that makes these settings unfit for production, one sentence each; empty in
    /// development, where the demo's dev-only secrets and the mock provider are the point.
    pub fn production_problems(&self) -> Vec<String> {
        if self.server.environment != Environment::Production {
            return Vec::new();
        }
        let s = &self.secrets;
        let values = [&s.jwt_key, &s.payment_signing_key, &s.id_number_key];
        let mut problems: Vec<String> = DEV_ONLY_SECRETS
            .iter()
            .zip(values)
            .filter(|((_, dev), value)| value.expose_secret() == *dev)
            .map(|((name, _), _)| {
                format!("{name} still has its dev-only default; set a secret of your own")
            })
            .collect();
        if s.jwt_key.expose_secret().len() < MIN_JWT_KEY_BYTES {
            problems.push(format!(
                "secrets.jwt_key is shorter than {MIN_JWT_KEY_BYTES} bytes"
            ));
        }
        if self.payments.mockpay.enabled {
            problems.push(
                "payments.mockpay.enabled is on: the mock provider lets anyone pay for nothing"
                    .into(),
            );
        }
        problems
    }
}

/// Ordering rules.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OrderSettings {
    /// How long an unpaid order holds its tickets.
    pub payment_window_secs: u64,
    /// This process's worker id in order numbers (0..64, unique per process).
    pub worker_id: u16,
    /// How long an `Idempotency-Key`'s answer is replayed; older keys start a fresh order and
    /// are purged in the background.
    pub idempotency_ttl_secs: u64,
    /// How long a request's in-flight marker stays its own without a renewal (renewed three
    /// times per lease while it runs): after a crash, a retry with the key waits at most this.
    pub in_flight_lease_ms: u64,
}

/// Batch bounds of the group-commit writer.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WriterConfig {
    /// Most changes committed in one transaction.
    pub max_batch: usize,
    /// Longest wait for company once a change is queued (0 = take only what is queued).
    pub max_wait_ms: u64,
    /// Changes queued before submitters wait.
    pub queue: usize,
    /// Writer tasks per shard; keep 1 (see `WriterSettings::writers`).
    #[serde(default = "one")]
    pub writers: usize,
    /// Independent writer queues, by the buyer's gene (see `WriterSettings::shards`).
    #[serde(default = "one")]
    pub shards: usize,
}

fn one() -> usize {
    1
}

impl WriterConfig {
    /// As the writer takes them.
    pub fn settings(&self) -> crate::store::writer::WriterSettings {
        crate::store::writer::WriterSettings {
            max_batch: self.max_batch.max(1),
            max_wait: Duration::from_millis(self.max_wait_ms),
            queue: self.queue.max(1),
            writers: self.writers.max(1),
            shards: self.shards.clamp(1, 16),
        }
    }
}

/// Registration, login and ticket-buyer rules.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccountSettings {
    /// Session token lifetime.
    pub token_ttl_secs: u64,
    /// Login attempts of one login from one client within a minute (counted before the password
    /// is checked); further attempts get 429, each waiting twice as long as the one before.
    pub login_failures_per_minute: u32,
    /// Registrations per second (all nodes, counted in Redis) above which a captcha is required.
    pub surge_registrations_per_sec: u32,
    /// How long the captcha requirement stays on after the last surge second.
    pub surge_hold_secs: u64,
    /// How long a captcha challenge can be answered.
    pub captcha_ttl_secs: u64,
    /// Zero bits the surge puzzle's hash must start with: about 2^bits hashes per answer
    /// (16: a fraction of a second in a browser; each further bit doubles it).
    pub captcha_difficulty_bits: u8,
    /// Bits of the Redis Bloom filter of taken mobiles/emails (about 10 per expected entry).
    pub bloom_bits: u64,
    /// Hash functions of the Bloom filter.
    pub bloom_hashes: u32,
    /// Ticket buyers one account may keep.
    pub max_ticket_buyers: u32,
    /// Password hashes or checks running at once (0 = one per core); four per slot may wait,
    /// more are refused with 503.
    pub password_hash_concurrency: usize,
}

/// The catalog's read cache.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CacheSettings {
    /// Off = every read goes to Postgres (benchmarks compare both).
    pub enabled: bool,
    /// Entries kept in process (bounded memory).
    pub local_capacity: u64,
    /// In-process entry lifetime; invalidation usually removes entries much earlier.
    pub local_ttl_secs: u64,
    /// Redis entry lifetime.
    pub redis_ttl_secs: u64,
    /// Cache misses reading Postgres at once; more wait briefly, then get 503 `CATALOG_BUSY`.
    pub max_concurrent_loads: usize,
    /// How long the seat map of a category with no running actor, read from Postgres, is
    /// served again (it changes only through an actor; another node's, at most this late).
    pub idle_seat_map_ms: u64,
}

/// Rate limiting: one token bucket per client IP and one per user, per route group.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitSettings {
    /// Off = no limits (benchmarks).
    pub enabled: bool,
    /// Sign-up, login and captcha.
    pub auth: GroupLimits,
    /// Catalog reads.
    pub catalog: GroupLimits,
    /// The caller's own account and ticket buyers.
    pub account: GroupLimits,
    /// Admin endpoints.
    pub admin: GroupLimits,
    /// The payment providers' callbacks, per client address (a provider has no user).
    pub notify: BucketSettings,
    /// `/readyz` and `/metrics`, per client address.
    pub ops: BucketSettings,
}

/// The two buckets of a route group.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupLimits {
    /// Per client IP address.
    pub per_ip: BucketSettings,
    /// Per signed-in user (requests with a valid token).
    pub per_user: BucketSettings,
}

/// One token bucket: `burst` tokens, refilled at `per_sec`.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BucketSettings {
    /// Bucket size: requests allowed at once.
    pub burst: u32,
    /// Sustained requests per second.
    pub per_sec: f64,
}

/// Limits and timings of the category actors.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActorSettings {
    /// Requests queued or running per actor before callers get `Overloaded` (503): a bound on
    /// memory and on latency, instead of an ever-growing queue during a rush.
    pub mailbox_capacity: usize,
    /// Arbiter threads hosting actors; 0 = one per core.
    pub arbiters: usize,
    /// An actor without holds that saw no request for this long is stopped (state is in Postgres).
    pub idle_passivate_secs: u64,
    /// Seat-map snapshots are republished at most this often (deltas go out per change);
    /// 0 republishes on every change.
    pub snapshot_interval_ms: u64,
    /// Delay before retrying a failed expiry write.
    pub expiry_retry_ms: u64,
    /// A reservation not settled within this is released (its caller died or gave up).
    #[serde(default = "default_reservation_timeout_ms")]
    pub reservation_timeout_ms: u64,
    /// How often the supervisor makes sure every category with live holds in Postgres has a
    /// running actor (their expiry timers live there); also done at startup. 0 = never.
    pub live_holds_sweep_secs: u64,
}

fn default_reservation_timeout_ms() -> u64 {
    30_000
}

/// Where the HTTP server listens and how it names itself in printed URLs.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSettings {
    /// Interface to bind.
    pub host: String,
    /// Port to bind; 0 picks a free one (tests).
    pub port: u16,
    /// Base URL printed for humans and used in payment redirects.
    pub public_url: String,
    /// Kernel send buffer per connection, bytes; 0 = the OS's own (which grows it for fast
    /// peers). Set it to bound what ten thousand slow WebSocket readers can hold in the kernel.
    #[serde(default)]
    pub socket_send_buffer_bytes: usize,
    /// `development` (the default; demo and tests) or `production`, in which the server refuses
    /// to start with anything only fit for a developer's machine ([`Settings::production_problems`]).
    #[serde(default)]
    pub environment: Environment,
    /// Proxies (load balancers) whose `X-Forwarded-For` names the client: rate limits and login
    /// throttling count that client instead of the proxy. Empty: the header is ignored.
    #[serde(default)]
    pub trusted_proxies: Vec<std::net::IpAddr>,
    /// Open connections at most, WebSockets included; past it new ones are closed at once.
    pub max_connections: usize,
    /// A client must send a request's headers within this (slowloris; idle kept-alive
    /// connections end after it too).
    pub header_read_timeout_ms: u64,
    /// A request unanswered after this gets 503 `REQUEST_TIMEOUT`.
    pub request_timeout_ms: u64,
    /// Requests in progress at most; past it 503 `OVERLOADED` at once (load shedding).
    pub max_in_flight_requests: usize,
}

impl ServerSettings {
    /// The limits the accept loop and the request middleware enforce ([`crate::http::server`]).
    pub fn limits(&self) -> crate::http::server::ServerLimits {
        crate::http::server::ServerLimits {
            max_connections: self.max_connections,
            header_read_timeout: Duration::from_millis(self.header_read_timeout_ms),
            request_timeout: Duration::from_millis(self.request_timeout_ms),
            max_in_flight_requests: self.max_in_flight_requests,
            socket_send_buffer: self.socket_send_buffer_bytes,
        }
    }
}

/// Where the server runs.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Environment {
    /// A developer's machine, the demo, tests: dev-only secrets and the mock provider allowed.
    #[default]
    Development,
    /// Real buyers and real money.
    Production,
}

/// PostgreSQL connection settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseSettings {
    /// libpq-style URL; secret because it may carry a password.
    pub url: SecretString,
    /// Maximum pooled connections: bounds Postgres backends this process can occupy.
    pub pool_size: usize,
    /// How long startup waits for a connection before failing.
    pub connect_timeout_ms: u64,
    /// Longest any one statement may run on our sessions (Postgres cancels it): a slow query
    /// cannot hold a pooled connection, and the locks it took, for longer. 0 = no limit.
    pub statement_timeout_ms: u64,
}

/// Redis connection settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisSettings {
    /// `redis://host:port[/db]`; secret because it may carry a password.
    pub url: SecretString,
    /// Prepended to every key, so several deployments (or tests) can share one Redis.
    pub key_prefix: String,
    /// How long startup waits for Redis before failing.
    pub connect_timeout_ms: u64,
}

/// Pulsar connection settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PulsarSettings {
    /// `pulsar://host:port`: the dev bridge locally, Apache Pulsar in production.
    pub url: String,
    /// `tenant/namespace` that holds our topics.
    pub tenant_namespace: String,
    /// Prepended to every topic name, so tests and deployments do not see each other's events.
    pub topic_prefix: String,
    /// How long startup waits for the broker before failing.
    pub connect_timeout_ms: u64,
}

/// Keys whose disclosure would let someone forge tokens, forge payment callbacks or read id
/// numbers. Only [`ExposeSecret::expose_secret`] reveals them, at the point of use.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Secrets {
    /// HMAC key for session tokens.
    pub jwt_key: SecretString,
    /// HMAC key shared with the payment provider for callback signatures.
    pub payment_signing_key: SecretString,
    /// 32-byte AES-256-GCM key, hex encoded, for ticket buyers' id numbers.
    pub id_number_key: SecretString,
}

/// Log filter and format.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogSettings {
    /// `tracing_subscriber::EnvFilter` directive; `RUST_LOG` overrides it.
    pub filter: String,
    /// `pretty` or `json`.
    pub format: LogFormat,
}

/// How log lines are rendered.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable, for terminals.
    Pretty,
    /// One JSON object per line, for collectors.
    Json,
}

/// A configuration that cannot be used; the message names the offending key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A value has the wrong type or a key is unknown; the text names key and source.
    #[error("invalid configuration: {0}")]
    Invalid(String),
    /// A value parsed but is not acceptable.
    #[error("invalid configuration: {key}: {reason}")]
    Rejected {
        /// Dotted key, e.g. `secrets.id_number_key`.
        key: &'static str,
        /// What is wrong with it.
        reason: String,
    },
}

impl Settings {
    /// Loads defaults ← `file` (skipped if it does not exist) ← environment.
    pub fn load(file: &Path) -> Result<Self, ConfigError> {
        Self::from_figment(Self::figment(file))
    }

    /// The layered sources, exposed so callers (tests, tools) can add one more layer on top.
    pub fn figment(file: &Path) -> Figment {
        Figment::from(Toml::string(DEFAULTS_TOML))
            .merge(Toml::file(file))
            .merge(Env::prefixed(ENV_PREFIX).split("__"))
    }

    /// Extracts and validates settings from any figment.
    pub fn from_figment(figment: Figment) -> Result<Self, ConfigError> {
        let settings: Settings = figment
            .extract()
            .map_err(|e| ConfigError::Invalid(describe(e)))?;
        settings.validate()?;
        Ok(settings)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        self.secrets.id_number_key_bytes()?;
        if self.database.pool_size == 0 {
            return Err(rejected("database.pool_size", "must be at least 1"));
        }
        if !self.pulsar.url.starts_with("pulsar://")
            && !self.pulsar.url.starts_with("pulsar+ssl://")
        {
            return Err(rejected(
                "pulsar.url",
                "must start with pulsar:// or pulsar+ssl://",
            ));
        }
        Ok(())
    }

    /// `host:port` to bind.
    pub fn bind_address(&self) -> String {
        format!("{}:{}", self.server.host, self.server.port)
    }

    /// Where the mock payment provider is reached (its own setting, else its listen address).
    pub fn mockpay_url(&self) -> String {
        let m = &self.payments.mockpay;
        if m.base_url.is_empty() {
            return format!("http://{}:{}", m.host, m.port);
        }
        m.base_url.trim_end_matches('/').to_string()
    }

    /// `host:port` the mock provider process binds.
    pub fn mockpay_bind_address(&self) -> String {
        let m = &self.payments.mockpay;
        format!("{}:{}", m.host, m.port)
    }

    /// Where the mock provider sends our callbacks (its own setting, else our notify route).
    pub fn mockpay_notify_url(&self) -> String {
        let url = &self.payments.mockpay.notify_url;
        if !url.is_empty() {
            return url.clone();
        }
        let base = self.server.public_url.trim_end_matches('/');
        format!(
            "{base}/api/v1/payments/notify/{}",
            crate::payments::mockpay::CHANNEL
        )
    }
}

impl Secrets {
    /// The id-number key as the 32 bytes AES-256 needs.
    pub fn id_number_key_bytes(&self) -> Result<[u8; 32], ConfigError> {
        let bytes = hex::decode(self.id_number_key.expose_secret())
            .map_err(|_| rejected("secrets.id_number_key", "must be hex"))?;
        bytes
            .try_into()
            .map_err(|_| rejected("secrets.id_number_key", "must be 32 bytes (64 hex digits)"))
    }
}

impl DatabaseSettings {
    /// Connect timeout as a [`Duration`].
    pub fn connect_timeout(&self) -> Duration {
        Duration::from_millis(self.connect_timeout_ms)
    }
}

impl RedisSettings {
    /// Connect timeout as a [`Duration`].
    pub fn connect_timeout(&self) -> Duration {
        Duration::from_millis(self.connect_timeout_ms)
    }
}

impl PulsarSettings {
    /// Connect timeout as a [`Duration`].
    pub fn connect_timeout(&self) -> Duration {
        Duration::from_millis(self.connect_timeout_ms)
    }
}

/// One line per problem: `key (from source): what is wrong`, naming the environment variable
/// itself when the value came from one.
fn describe(errors: figment::Error) -> String {
    let lines: Vec<String> = errors
        .into_iter()
        .map(|e| {
            let key = e
                .path
                .iter()
                .map(|p| p.to_lowercase())
                .collect::<Vec<_>>()
                .join(".");
            let from_env = e
                .metadata
                .as_ref()
                .is_some_and(|m| m.name.contains("environment"));
            let source = match (&e.metadata, from_env) {
                (_, true) => format!(
                    "environment variable {ENV_PREFIX}{}",
                    key.to_uppercase().replace('.', "__")
                ),
                (Some(m), false) => m
                    .source
                    .as_ref()
                    .map_or(m.name.to_string(), |s| s.to_string()),
                (None, false) => "unknown source".into(),
            };
            format!("{key} (from {source}): {}", e.kind)
        })
        .collect();
    lines.join("; ")
}

fn rejected(key: &'static str, reason: &str) -> ConfigError {
    ConfigError::Rejected {
        key,
        reason: reason.to_string(),
    }
}

#[cfg(test)]
#[allow(clippy::result_large_err)] // figment::Error is large by design; Jail closures return it.
mod tests {
    use super::*;
    use figment::Jail;

    fn load_in_jail(jail: &Jail) -> Result<Settings, ConfigError> {
        Settings::load(&jail.directory().join("config.toml"))
    }

    #[test]
    fn defaults_alone_are_complete_and_valid() {
        Jail::expect_with(|jail| {
            let s = load_in_jail(jail).expect("defaults load");
            assert_eq!(s.server.port, 8000);
            assert_eq!(s.server.host, "127.0.0.1");
            assert_eq!(s.redis.key_prefix, "boxoffice:");
            Ok(())
        });
    }

    #[test]
    fn file_overrides_defaults_and_env_overrides_file() {
        Jail::expect_with(|jail| {
            jail.create_file("config.toml", "[server]\nport = 9001\nhost = \"0.0.0.0\"\n")?;
            jail.set_env("BOXOFFICE__SERVER__PORT", "9002");
            let s = load_in_jail(jail).expect("layers load");
            assert_eq!(s.server.port, 9002, "env beats file");
            assert_eq!(s.server.host, "0.0.0.0", "file beats defaults");
            assert_eq!(s.database.pool_size, 16, "untouched keys keep defaults");
            Ok(())
        });
    }

    #[test]
    fn bad_env_value_names_the_key() {
        Jail::expect_with(|jail| {
            jail.set_env("BOXOFFICE__SERVER__PORT", "eighty");
            let err = load_in_jail(jail)
                .expect_err("a non-number port must fail")
                .to_string();
            assert!(err.contains("server.port"), "{err}");
            assert!(err.contains("BOXOFFICE__SERVER__PORT"), "{err}");
            Ok(())
        });
    }

    #[test]
    fn bad_file_value_and_unknown_key_are_refused() {
        Jail::expect_with(|jail| {
            jail.create_file("config.toml", "[database]\npool_size = \"lots\"\n")?;
            let err = load_in_jail(jail)
                .expect_err("string pool size")
                .to_string();
            assert!(err.contains("database.pool_size"), "{err}");
            jail.create_file("config.toml", "[database]\npool_sise = 3\n")?;
            let err = load_in_jail(jail).expect_err("typo in key").to_string();
            assert!(err.contains("pool_sise"), "{err}");
            Ok(())
        });
    }

    #[test]
    fn short_id_number_key_is_rejected_by_name() {
        Jail::expect_with(|jail| {
            jail.set_env("BOXOFFICE__SECRETS__ID_NUMBER_KEY", "abcd");
            let err = load_in_jail(jail).expect_err("short key").to_string();
            assert!(err.contains("secrets.id_number_key"), "{err}");
            Ok(())
        });
    }

    #[test]
    fn secrets_never_appear_in_debug_output() {
        Jail::expect_with(|jail| {
            jail.set_env("BOXOFFICE__SECRETS__JWT_KEY", "super-secret-jwt-value");
            let s = load_in_jail(jail).expect("loads");
            let printed = format!("{s:?}");
            assert!(!printed.contains("super-secret-jwt-value"));
            assert!(!printed.contains("dev-only-mockpay-signing-key"));
            assert_eq!(s.secrets.jwt_key.expose_secret(), "super-secret-jwt-value");
            Ok(())
        });
    }
}
