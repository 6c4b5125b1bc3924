//! Ticket buyers (real-name holders) of one user. Every query is scoped to the owner, so another
//! user's ticket buyer is simply not found. Id numbers are stored encrypted (see `crypto`).

use super::{PgPool, StoreError};
use crate::crypto::{IdNumberCipher, RowBinding, key_version};
use chrono::{DateTime, Utc};
use deadpool_postgres::GenericClient;

/// A ticket buyer with the id number decrypted (the HTTP layer masks it).
pub struct TicketBuyer {
    /// Id.
    pub id: i64,
    /// Full name.
    pub name: String,
    /// Document type.
    pub id_type: String,
    /// Document number in clear.
    pub id_number: String,
    /// When it was added.
    pub created_at: DateTime<Utc>,
}

/// Why a ticket buyer could not be added.
#[derive(Debug, thiserror::Error)]
pub enum AddError {
    /// The user already has `max` ticket buyers.
    #[error("at most {0} ticket buyers per account")]
    Limit(u32),
    /// The same person (type and number) is already one of the user's ticket buyers.
    #[error("this person is already a ticket buyer of the account")]
    Duplicate,
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Adds a ticket buyer, keeping at most `max` per user even under concurrent requests (the
/// user's row is locked while counting; a rare, per-user lock, not on the ticket hot path).
pub async fn add(
    pool: &PgPool,
    cipher: &IdNumberCipher,
    user_id: i64,
    name: &str,
    id_type: &str,
    id_number: &str,
    max: u32,
) -> Result<TicketBuyer, AddError> {
    let mut client = pool.get().await.map_err(StoreError::from)?;
    let tx = client.transaction().await.map_err(StoreError::from)?;
    // Lock first, count in a second statement: under READ COMMITTED a statement sees rows
    // committed before it started, so counting in the locking statement would miss the rows of
    // the transaction it waited for.
    tx.execute("SELECT 1 FROM users WHERE id = $1 FOR UPDATE", &[&user_id])
        .await
        .map_err(StoreError::from)?;
    let count: i64 = tx
        .query_one(
            "SELECT count(*) FROM ticket_buyers WHERE user_id = $1 AND deleted_at IS NULL",
            &[&user_id],
        )
        .await
        .map_err(StoreError::from)?
        .get(0);
    if count >= max as i64 {
        return Err(AddError::Limit(max));
    }
    let (id, created_at) = insert(&tx, cipher, user_id, name, id_type, id_number)
        .await
        .map_err(|e| match e.code() {
            Some(c) if *c == tokio_postgres::error::SqlState::UNIQUE_VIOLATION => {
                AddError::Duplicate
            }
            _ => StoreError::from(e).into(),
        })?;
    tx.commit().await.map_err(StoreError::from)?;
    Ok(TicketBuyer {
        id,
        name: name.to_string(),
        id_type: id_type.to_string(),
        id_number: id_number.to_string(),
        created_at,
    })
}

/// Inserts a ticket buyer row under the current key scheme and answers its id and creation
/// time. The id comes from the sequence first, so that the ciphertext is bound to the row it
/// is written into (see [`RowBinding`]).
pub(crate) async fn insert(
    client: &impl GenericClient,
    cipher: &IdNumberCipher,
    user_id: i64,
    name: &str,
    id_type: &str,
    id_number: &str,
) -> Result<(i64, DateTime<Utc>), tokio_postgres::Error> {
    let id: i64 = client
        .query_one(
            "SELECT nextval(pg_get_serial_sequence('ticket_buyers', 'id'))",
            &[],
        )
        .await?
        .get(0);
    let binding = RowBinding {
        ticket_buyer_id: id,
        user_id,
        id_type,
    };
    let row = client
        .query_one(
            "INSERT INTO ticket_buyers (id, user_id, name, id_type, id_number_enc, id_number_hash,
                                        id_number_last4, id_key_version)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING created_at",
            &[
                &id,
                &user_id,
                &name,
                &id_type,
                &cipher.seal(id_number, binding),
                &cipher.person_hash(id_number),
                &last4(id_number),
                &key_version::CURRENT,
            ],
        )
        .await?;
    Ok((id, row.get(0)))
}

/// The last four characters, for masking.
pub(crate) fn last4(id_number: &str) -> String {
    id_number
        .chars()
        .skip(id_number.chars().count().saturating_sub(4))
        .collect()
}

/// The user's ticket buyers, oldest first.
pub async fn list(
    pool: &PgPool,
    cipher: &IdNumberCipher,
    user_id: i64,
) -> Result<Vec<TicketBuyer>, StoreError> {
    let rows = pool
        .get()
        .await?
        .query(
            "SELECT id, name, id_type, id_number_enc, created_at, id_key_version FROM ticket_buyers
             WHERE user_id = $1 AND deleted_at IS NULL ORDER BY id",
            &[&user_id],
        )
        .await?;
    rows.iter()
        .map(|r| {
            let (id, id_type): (i64, String) = (r.get(0), r.get(2));
            let binding = RowBinding {
                ticket_buyer_id: id,
                user_id,
                id_type: &id_type,
            };
            let id_number = cipher
                .open(&r.get::<_, Vec<u8>>(3), binding, r.get(5))
                .map_err(|e| StoreError::Crypto {
                    what: format!("id number of ticket buyer {id}"),
                    source: std::sync::Arc::new(e),
                })?;
            Ok(TicketBuyer {
                id,
                name: r.get(1),
                id_type,
                id_number,
                created_at: r.get(4),
            })
        })
        .collect()
}

/// Deletes the user's ticket buyer `id`; false if the user has no such ticket buyer.
pub async fn delete(pool: &PgPool, user_id: i64, id: i64) -> Result<bool, StoreError> {
    let n = pool
        .get()
        .await?
        .execute(
            "UPDATE ticket_buyers SET deleted_at = now()
             WHERE id = $1 AND user_id = $2 AND deleted_at IS NULL",
            &[&id, &user_id],
        )
        .await?;
    Ok(n == 1)
}

/// Legacy rows re-keyed per transaction.
const REKEY_CHUNK: i64 = 500;

/// What a re-keying pass did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Rekeyed {
    /// Rows now sealed and hashed under the current scheme.
    pub rows: u64,
    /// Legacy rows that did not open with the configured key: left as they are (and logged),
    /// so one damaged row cannot stop a start.
    pub unreadable: u64,
}

/// Re-seals and re-hashes every ticket buyer still under the legacy key scheme
/// (`id_key_version` 0, see `crypto::key_version`), with the claims each row holds, so that the
/// person key of every claim is the current hash — rows created before the change included. Run
/// before serving (and by `boxoffice migrate`); a no-op once nothing is left, found through a
/// partial index.
///
/// Each chunk is one transaction that locks its rows, then `buyer_claims` against writes (SHARE
/// ROW EXCLUSIVE: reads go on; a batch that would claim waits the few milliseconds), so no claim
/// can be made from a row's old hash while the row and its claims change. Folding case and spacing
/// can make two rows one person: a second live row of the same account is retired (deleted, as
/// the API would have refused it), and a second live claim of the same person for a program is
/// set aside in `person_claim_conflicts` for operators, as V14 does.
pub async fn rekey_legacy(pool: &PgPool, cipher: &IdNumberCipher) -> Result<Rekeyed, StoreError> {
    let mut done = Rekeyed::default();
    let mut after = 0;
    while let Some(chunk) = rekey_chunk(pool, cipher, after, REKEY_CHUNK).await? {
        after = chunk.last_id;
        done.rows += chunk.done.rows;
        done.unreadable += chunk.done.unreadable;
    }
    if done != Rekeyed::default() {
        tracing::info!(
            rows = done.rows,
            unreadable = done.unreadable,
            "ticket buyers re-keyed"
        );
    }
    Ok(done)
}

/// One chunk's outcome: the last row id looked at, and the counts.
struct Chunk {
    last_id: i64,
    done: Rekeyed,
}

/// Legacy rows after `after`, at most `limit`; `None` when there are none. Two rows of one
/// chunk that now name one person make a statement fail on a unique key (each statement sees
/// only what was committed before it): the chunk is then rolled back and its rows re-keyed one
/// per transaction, where each sees the one before it.
async fn rekey_chunk(
    pool: &PgPool,
    cipher: &IdNumberCipher,
    after: i64,
    limit: i64,
) -> Result<Option<Chunk>, StoreError> {
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    let rows = tx
        .query(
            "SELECT id, user_id, id_type, id_number_enc FROM ticket_buyers
             WHERE id_key_version = 0 AND id > $1 ORDER BY id LIMIT $2 FOR UPDATE",
            &[&after, &limit],
        )
        .await?;
    let Some(last_id) = rows.last().map(|r| r.get::<_, i64>(0)) else {
        return Ok(None);
    };
    // Only now, with work to do: a start with nothing to re-key does not stall the writers.
    // Claims made meanwhile from these rows' old hashes committed before the lock is granted,
    // so the statements below see them.
    tx.batch_execute("LOCK TABLE buyer_claims IN SHARE ROW EXCLUSIVE MODE")
        .await?;
    let resealed = reseal(cipher, &rows);
    let unreadable = (rows.len() - resealed.ids.len()) as u64;
    match apply_rekey(&tx, &resealed).await {
        Ok(()) => tx.commit().await?,
        Err(e)
            if limit > 1
                && e.code() == Some(&tokio_postgres::error::SqlState::UNIQUE_VIOLATION) =>
        {
            drop(tx);
            return rekey_one_by_one(pool, cipher, after, rows.len()).await;
        }
        Err(e) => return Err(e.into()),
    }
    Ok(Some(Chunk {
        last_id,
        done: Rekeyed {
            rows: resealed.ids.len() as u64,
            unreadable,
        },
    }))
}

/// The next `n` legacy rows after `after`, one transaction each.
async fn rekey_one_by_one(
    pool: &PgPool,
    cipher: &IdNumberCipher,
    mut after: i64,
    n: usize,
) -> Result<Option<Chunk>, StoreError> {
    let mut done = Rekeyed::default();
    for _ in 0..n {
        let Some(one) = Box::pin(rekey_chunk(pool, cipher, after, 1)).await? else {
            break;
        };
        after = one.last_id;
        done.rows += one.done.rows;
        done.unreadable += one.done.unreadable;
    }
    Ok(Some(Chunk {
        last_id: after,
        done,
    }))
}

/// Rows re-sealed under the current scheme, one vector per column.
#[derive(Default)]
struct Resealed {
    ids: Vec<i64>,
    sealed: Vec<Vec<u8>>,
    hashes: Vec<Vec<u8>>,
}

/// Opens each legacy row and seals it again bound to its row; rows that do not open are logged
/// and left out.
fn reseal(cipher: &IdNumberCipher, rows: &[tokio_postgres::Row]) -> Resealed {
    let mut out = Resealed::default();
    for r in rows {
        let (id, id_type): (i64, &str) = (r.get(0), r.get(2));
        let binding = RowBinding {
            ticket_buyer_id: id,
            user_id: r.get(1),
            id_type,
        };
        match cipher.open(r.get(3), binding, key_version::LEGACY) {
            Ok(number) => {
                out.ids.push(id);
                out.sealed.push(cipher.seal(&number, binding));
                out.hashes.push(cipher.person_hash(&number));
            }
            Err(e) => {
                tracing::error!(ticket_buyer = id, error = %e, "legacy id number does not open; left as it is");
            }
        }
    }
    out
}

/// The row's new ciphertext and hash; a row that now repeats a live ticket buyer of its
/// account is retired.
const REKEY_ROWS: &str = "
UPDATE ticket_buyers t
SET id_number_enc = u.sealed, id_number_hash = u.hash, id_key_version = 1,
    deleted_at = CASE WHEN t.deleted_at IS NULL AND EXISTS (
            SELECT 1 FROM ticket_buyers d
            WHERE d.user_id = t.user_id AND d.id_type = t.id_type AND d.id_number_hash = u.hash
              AND d.deleted_at IS NULL AND d.id <> t.id)
        THEN now() ELSE t.deleted_at END
FROM unnest($1::bigint[], $2::bytea[], $3::bytea[]) AS u (id, sealed, hash)
WHERE t.id = u.id";

/// Claims of these rows whose new person another row already claims for the program: set aside.
const SET_ASIDE_CLASHING_CLAIMS: &str = "
WITH clash AS (
    DELETE FROM buyer_claims c USING unnest($1::bigint[], $2::bytea[]) AS u (id, hash)
    WHERE c.ticket_buyer_id = u.id
      AND EXISTS (SELECT 1 FROM buyer_claims k
                  WHERE k.program_id = c.program_id AND k.id_type = c.id_type
                    AND k.id_number_hash = u.hash AND k.ticket_buyer_id <> c.ticket_buyer_id)
    RETURNING c.program_id, c.ticket_buyer_id, c.order_no, c.id_type, u.hash)
INSERT INTO person_claim_conflicts (program_id, ticket_buyer_id, order_no, id_type, id_number_hash)
SELECT * FROM clash ON CONFLICT DO NOTHING";

/// The other claims of these rows name the person by the new hash.
const REKEY_CLAIMS: &str = "
UPDATE buyer_claims c SET id_number_hash = u.hash
FROM unnest($1::bigint[], $2::bytea[]) AS u (id, hash)
WHERE c.ticket_buyer_id = u.id";

async fn apply_rekey(
    tx: &deadpool_postgres::Transaction<'_>,
    r: &Resealed,
) -> Result<(), tokio_postgres::Error> {
    tx.execute(REKEY_ROWS, &[&r.ids, &r.sealed, &r.hashes])
        .await?;
    tx.execute(SET_ASIDE_CLASHING_CLAIMS, &[&r.ids, &r.hashes])
        .await?;
    tx.execute(REKEY_CLAIMS, &[&r.ids, &r.hashes]).await?;
    Ok(())
}
