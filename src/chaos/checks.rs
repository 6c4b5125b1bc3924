//! What must hold after every fault, asked of Postgres (the truth) directly and of the server's
//! reconciliation view: no acknowledged order lost, no seat in two live orders, no seat stuck,
//! the actor and the Redis mirror equal to Postgres, and every order event sent to Pulsar.

use super::load::Ack;
use std::collections::HashSet;
use std::time::{Duration, Instant};

/// How late an expiry may be before its seats count as stuck (the actor's timer is exact; a
/// store outage delays it by the outage, retried every second after).
const EXPIRY_SLACK_SECS: i64 = 10;

/// One connection of its own per check: a pooled one would not survive the Postgres outage.
pub async fn connect(url: &str) -> anyhow::Result<tokio_postgres::Client> {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls).await?;
    tokio::spawn(connection);
    Ok(client)
}

/// Acknowledged orders missing from Postgres, with other seats than acknowledged, or still
/// live although their cancel was acknowledged; with a line naming each (at most a few).
pub async fn lost(
    pg: &tokio_postgres::Client,
    acks: &[Ack],
    cancelled: &HashSet<i64>,
) -> anyhow::Result<(u64, Vec<String>)> {
    let numbers: Vec<i64> = acks.iter().map(|a| a.order_no).collect();
    let rows = pg
        .query(
            "SELECT a.no, o.status,
                    coalesce(array_agg(t.seat_id ORDER BY t.seat_id) FILTER (WHERE t.seat_id IS NOT NULL), '{}')
             FROM unnest($1::bigint[]) AS a(no)
             LEFT JOIN orders o ON o.gene = (a.no & 15)::smallint AND o.order_no = a.no
             LEFT JOIN tickets t ON t.gene = o.gene AND t.order_no = o.order_no
             GROUP BY a.no, o.status",
            &[&numbers],
        )
        .await?;
    let found: std::collections::HashMap<i64, (Option<String>, Vec<i64>)> = rows
        .iter()
        .map(|r| (r.get(0), (r.get(1), r.get(2))))
        .collect();
    let mut problems = Vec::new();
    for ack in acks {
        let problem = match found.get(&ack.order_no) {
            None | Some((None, _)) => Some("missing".to_string()),
            Some((_, seats)) if *seats != ack.seats => {
                Some(format!("seats {seats:?}, acknowledged {:?}", ack.seats))
            }
            Some((Some(status), _))
                if cancelled.contains(&ack.order_no) && status != "cancelled" =>
            {
                Some(format!("{status} after an acknowledged cancel"))
            }
            _ => None,
        };
        problems.extend(problem.map(|p| format!("order {}: {p}", ack.order_no)));
    }
    Ok((problems.len() as u64, problems))
}

/// Seats held by more than one live order's tickets (the claims table forbids it; this asks
/// the tickets themselves).
pub async fn double_sold(pg: &tokio_postgres::Client, program: i64) -> anyhow::Result<u64> {
    count(
        pg,
        "SELECT count(*) FROM (
                SELECT t.seat_id FROM tickets t
                JOIN orders o ON o.gene = t.gene AND o.order_no = t.order_no
                WHERE t.program_id = $1 AND t.seat_id IS NOT NULL
                  AND o.status IN ('pending_payment', 'paid')
                GROUP BY t.seat_id HAVING count(*) > 1) d",
        &[&program],
    )
    .await
}

/// Seats whose row disagrees with the live orders: taken without a live order, or a live
/// order's seat not held (sold) by it, or a claim without its live ticket (or the reverse).
/// One statement, so one snapshot: a commit in flight is never half seen.
pub async fn stuck_rows(pg: &tokio_postgres::Client, program: i64) -> anyhow::Result<u64> {
    count(
        pg,
        "WITH live AS (
                SELECT t.seat_id, o.order_no, o.status FROM tickets t
                JOIN orders o ON o.gene = t.gene AND o.order_no = t.order_no
                WHERE t.program_id = $1 AND t.seat_id IS NOT NULL
                  AND o.status IN ('pending_payment', 'paid'))
             SELECT count(*) FROM seats s
             LEFT JOIN live l ON l.seat_id = s.id
             LEFT JOIN seat_claims c ON c.seat_id = s.id
             WHERE s.program_id = $1 AND (
                (l.seat_id IS NULL AND (s.status <> 'available' OR c.seat_id IS NOT NULL))
                OR (l.seat_id IS NOT NULL AND (s.order_no IS DISTINCT FROM l.order_no
                    OR c.order_no IS DISTINCT FROM l.order_no
                    OR s.status <> CASE l.status WHEN 'paid' THEN 'sold' ELSE 'held' END)))",
        &[&program],
    )
    .await
}

/// Seats of unpaid orders well past their payment window: their expiry did not happen.
pub async fn overdue(pg: &tokio_postgres::Client, program: i64) -> anyhow::Result<u64> {
    count(
        pg,
        "SELECT count(t.seat_id) FROM orders o
             JOIN tickets t ON t.gene = o.gene AND t.order_no = o.order_no
             WHERE o.program_id = $1 AND o.status = 'pending_payment'
               AND o.expires_at < now() - make_interval(secs => $2)",
        &[&program, &(EXPIRY_SLACK_SECS as f64)],
    )
    .await
}

/// The single count `sql` answers.
async fn count(
    pg: &tokio_postgres::Client,
    sql: &str,
    params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
) -> anyhow::Result<u64> {
    let row = pg.query_one(sql, params).await?;
    Ok(row.get::<_, i64>(0) as u64)
}

/// Order events up to id `up_to` not yet sent to the broker.
pub async fn unsent_events(pg: &tokio_postgres::Client, up_to: i64) -> anyhow::Result<u64> {
    count(
        pg,
        "SELECT count(*) FROM outbox WHERE send_status <> 'sent' AND id <= $1",
        &[&up_to],
    )
    .await
}

/// The id of the latest order event recorded (0 without any).
pub async fn last_event(pg: &tokio_postgres::Client) -> anyhow::Result<i64> {
    let row = pg
        .query_one("SELECT coalesce(max(id), 0)::bigint FROM outbox", &[])
        .await?;
    Ok(row.get(0))
}

/// Problems the server's own reconciler raised (or raised again) since `since`, by kind: a
/// divergence it saw while the load ran, which the checks after the load cannot see.
pub async fn problems(
    pg: &tokio_postgres::Client,
    since: chrono::DateTime<chrono::Utc>,
) -> anyhow::Result<std::collections::BTreeMap<String, u64>> {
    let rows = pg
        .query(
            "SELECT kind, count(*) FROM reconciliation_findings
             WHERE status = 'reconciled_with_problem' AND updated_at >= $1 GROUP BY kind",
            &[&since],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| (r.get(0), r.get::<_, i64>(1) as u64))
        .collect())
}

/// The reconciliation view says the actor, Postgres and the mirror agree on every seat of
/// the program (and an actor runs: with none there is nothing compared).
pub async fn agree(http: &reqwest::Client, base: &str, admin: &str, program: i64) -> bool {
    let url = format!("{base}/api/v1/admin/programs/{program}/inventory");
    let Ok(response) = http.get(url).bearer_auth(admin).send().await else {
        return false;
    };
    let Ok(view) = response.json::<serde_json::Value>().await else {
        return false;
    };
    let categories = view["categories"].as_array().cloned().unwrap_or_default();
    view["consistent"] == true
        && !categories.is_empty()
        && categories.iter().all(|c| !c["actor"].is_null())
}

/// Seconds from `since` until `agree` holds, polled for at most `limit`.
pub async fn seconds_to_agree(
    http: &reqwest::Client,
    base: &str,
    admin: &str,
    program: i64,
    limit: Duration,
) -> Option<f64> {
    let since = Instant::now();
    super::poll(limit, async || agree(http, base, admin, program).await)
        .await
        .map(|_| since.elapsed().as_secs_f64())
}
