//! Payments (ARCHITECTURE.md, "Expiry, payment, refund"; API.md, "Orders").
//!
//! Providers sit behind [`PaymentProvider`]; the built-in one is [`mockpay`], a stand-in for a
//! real third party that runs as a process of its own ([`crate::mockpay`]) and that we only ever
//! talk to over HTTP, with signed calls. [`Payments`] is our side of it: open a bill and a trade
//! (one open bill per order and channel, however often the buyer presses "pay"), apply a signed
//! notice (from the callback or from an active trade query) exactly once, refund.
//!
//! The order row decides: a notice pays the order only if it is still `pending_payment` and
//! within its window, in the same transaction that sells its seats (`store::payments`). A payment
//! that finds the order expired, cancelled or already paid is refunded and recorded instead; one
//! that finds it pending past `expires_at` (its expiry has not run yet) expires it right there and
//! is refunded the same way. Actors learn afterwards through `actors::Applied`; if that message is
//! lost, the next conditional write of the order finds the rows moved and the actor reloads from
//! Postgres.

pub mod mockpay;

use crate::actors::{ActorError, Supervisor, Transition};
use crate::domain::inventory::ChangeKind;
use crate::store::payments::{self as bills, PaymentOutcome, RefundDue, RefundOutcome};
use crate::store::{PgPool, StoreError};
use axum::http::HeaderMap;
use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use std::collections::HashMap;
use std::sync::Arc;
use uuid::Uuid;

/// A trade we ask a provider to open.
#[derive(Debug, Clone)]
pub struct TradeRequest {
    /// Our bill id; the provider's `out_trade_no`.
    pub out_trade_no: String,
    /// Amount in minor units.
    pub amount_cents: i64,
    /// What the buyer sees on the checkout page.
    pub subject: String,
}

/// A trade as the provider reports it (in a callback or a trade query).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TradeState {
    /// Our bill id.
    pub out_trade_no: String,
    /// The provider's own trade number, once paid.
    pub trade_no: Option<String>,
    /// Amount paid.
    pub amount_cents: i64,
    /// Whether the buyer paid.
    pub paid: bool,
}

/// Money back for a paid trade.
#[derive(Debug, Clone)]
pub struct RefundRequest {
    /// The bill paid.
    pub out_trade_no: String,
    /// Our refund record id; the provider refunds once per id.
    pub out_request_no: String,
    /// Amount to return.
    pub amount_cents: i64,
    /// Why.
    pub reason: String,
}

/// Why a provider call failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ProviderError {
    /// The notice's signature does not verify.
    #[error("the notice's signature does not verify")]
    BadSignature,
    /// The notice or answer could not be read.
    #[error("malformed provider message: {0}")]
    Malformed(String),
    /// The provider did not answer.
    #[error("payment provider unreachable: {0}")]
    Unreachable(String),
    /// The provider answered with a refusal.
    #[error("payment provider refused: {0}")]
    Refused(String),
}

/// One payment channel. Calls cross the network; verification is local.
pub trait PaymentProvider: Send + Sync + 'static {
    /// Opens a trade; answers the URL the buyer pays at.
    fn create_trade(&self, trade: TradeRequest) -> BoxFuture<'_, Result<String, ProviderError>>;
    /// Checks a callback's signature and reads it.
    fn verify_notice(&self, headers: &HeaderMap, body: &[u8]) -> Result<TradeState, ProviderError>;
    /// Asks the provider about a trade (`None` if it does not know it).
    fn query_trade(
        &self,
        out_trade_no: String,
    ) -> BoxFuture<'_, Result<Option<TradeState>, ProviderError>>;
    /// Returns money; idempotent per `out_request_no`.
    fn refund(&self, refund: RefundRequest) -> BoxFuture<'_, Result<(), ProviderError>>;
}

/// Why a payment operation was refused.
#[derive(Debug, thiserror::Error)]
pub enum PaymentError {
    /// No provider of that name.
    #[error("unknown payment channel {0:?}")]
    UnknownChannel(String),
    /// Only pending orders within their payment window can be paid.
    #[error("a {0} order cannot be paid")]
    NotPayable(String),
    /// No such bill or order.
    #[error("no such payment")]
    NotFound,
    /// The notice's signature does not verify.
    #[error("bad signature")]
    BadSignature,
    /// The notice's amount differs from the bill's.
    #[error("amount {got} differs from the bill's {expected}")]
    AmountMismatch {
        /// The bill's amount.
        expected: i64,
        /// The notice's amount.
        got: i64,
    },
    /// Only paid orders can be refunded; this one is in the given status.
    #[error("a {0} order cannot be refunded")]
    NotRefundable(String),
    /// The show has started.
    #[error("the show has started; refunds are closed")]
    ShowStarted,
    /// The provider failed.
    #[error(transparent)]
    Provider(ProviderError),
    /// Postgres failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<ProviderError> for PaymentError {
    fn from(e: ProviderError) -> Self {
        match e {
            ProviderError::BadSignature => PaymentError::BadSignature,
            other => PaymentError::Provider(other),
        }
    }
}

/// A payment just opened, or the one already open.
#[derive(Debug, Clone)]
pub struct Started {
    /// Our bill id.
    pub payment_id: Uuid,
    /// Where the buyer pays.
    pub pay_url: String,
    /// False when the order already had an open bill on the channel, answered again.
    pub new_bill: bool,
}

/// The order fields a payment needs.
#[derive(Debug, Clone)]
pub struct Payable {
    /// The order.
    pub order_no: i64,
    /// Its status.
    pub status: String,
    /// Its total.
    pub total_cents: i64,
    /// End of its payment window.
    pub expires_at: DateTime<Utc>,
}

/// Our side of payments; cheap to clone.
#[derive(Clone)]
pub struct Payments {
    pg: PgPool,
    supervisor: Supervisor,
    providers: Arc<HashMap<String, Arc<dyn PaymentProvider>>>,
}

impl Payments {
    /// Payments over `providers` (channel name → provider).
    pub fn new(
        pg: PgPool,
        supervisor: Supervisor,
        providers: HashMap<String, Arc<dyn PaymentProvider>>,
    ) -> Self {
        Payments {
            pg,
            supervisor,
            providers: Arc::new(providers),
        }
    }

    fn provider(&self, channel: &str) -> Result<&Arc<dyn PaymentProvider>, PaymentError> {
        self.providers
            .get(channel)
            .ok_or_else(|| PaymentError::UnknownChannel(channel.to_string()))
    }

    /// Opens a bill for the order's total and a trade at the provider — or, when the order
    /// already has an open bill on this channel, answers that one again (its trade is opened
    /// again too, which the provider treats as a repeat): a buyer pressing "pay" twice, or two
    /// tabs racing, share one bill instead of stacking up trades.
    pub async fn start(
        &self,
        order: &Payable,
        channel: &str,
        now: DateTime<Utc>,
    ) -> Result<Started, PaymentError> {
        let provider = self.provider(channel)?;
        if order.status != "pending_payment" || order.expires_at <= now {
            return Err(PaymentError::NotPayable(order.status.clone()));
        }
        let bill = bills::open_bill(&self.pg, order.order_no, channel, order.total_cents)
            .await?
            .ok_or_else(|| PaymentError::NotPayable("paid".into()))?;
        let trade = TradeRequest {
            out_trade_no: bill.id.to_string(),
            amount_cents: order.total_cents,
            subject: format!("boxoffice order {}", order.order_no),
        };
        let pay_url = provider.create_trade(trade).await?;
        Ok(Started {
            payment_id: bill.id,
            pay_url,
            new_bill: bill.created,
        })
    }

    /// A provider's callback: verified (bad → nothing changes), then applied once.
    pub async fn notified(
        &self,
        channel: &str,
        headers: &HeaderMap,
        body: &[u8],
    ) -> Result<(), PaymentError> {
        let trade = self.provider(channel)?.verify_notice(headers, body)?;
        self.apply(&trade).await
    }

    /// Applies what the provider says about a trade: a paid trade pays the order (or is
    /// refunded if the order cannot take it); anything else changes nothing.
    async fn apply(&self, trade: &TradeState) -> Result<(), PaymentError> {
        if !trade.paid {
            return Ok(());
        }
        let payment_id: Uuid = trade
            .out_trade_no
            .parse()
            .map_err(|_| PaymentError::NotFound)?;
        let trade_no = trade.trade_no.as_deref().unwrap_or_default();
        match bills::apply_payment(&self.pg, payment_id, trade_no, trade.amount_cents).await? {
            PaymentOutcome::Paid {
                order_no,
                categories,
            } => {
                self.tell_actors(ChangeKind::Confirm, order_no, &categories)
                    .await;
                Ok(())
            }
            PaymentOutcome::AlreadyApplied => Ok(()),
            PaymentOutcome::Refund(due) => {
                tracing::warn!(%payment_id, reason = %due.reason, "payment for an order that cannot take it; refunding");
                self.send_refund(&due).await;
                Ok(())
            }
            PaymentOutcome::Expired {
                order_no,
                categories,
                due,
            } => {
                tracing::warn!(%payment_id, order_no, "payment after the order's window; expired it and refunding");
                // The actors still hold these tickets under a timer that has not fired: they
                // release them in memory now, and their timers find nothing left to expire. An
                // actor whose own release was already in flight finds the rows moved and reloads.
                self.tell_actors(ChangeKind::Release, order_no, &categories)
                    .await;
                self.send_refund(&due).await;
                Ok(())
            }
            PaymentOutcome::AmountMismatch { expected_cents } => {
                Err(PaymentError::AmountMismatch {
                    expected: expected_cents,
                    got: trade.amount_cents,
                })
            }
            PaymentOutcome::UnknownBill => Err(PaymentError::NotFound),
        }
    }

    /// Pay-check: asks the provider about every open bill of the order and applies the answers;
    /// also retries refunds the provider has not confirmed yet.
    pub async fn check(&self, order_no: i64) -> Result<(), PaymentError> {
        for bill in bills::open_bills(&self.pg, order_no).await? {
            let provider = self.provider(&bill.channel)?;
            if let Some(trade) = provider.query_trade(bill.id.to_string()).await? {
                self.apply(&trade).await?;
            }
        }
        for due in bills::requested_refunds(&self.pg, Some(order_no), 0).await? {
            self.send_refund(&due).await;
        }
        Ok(())
    }

    /// Sends again every refund the provider has not confirmed within `older_than_secs` (it was
    /// down, or answered badly); answers how many it tried. Run periodically by the server.
    pub async fn retry_refunds(&self, older_than_secs: i64) -> Result<usize, PaymentError> {
        let due = bills::requested_refunds(&self.pg, None, older_than_secs).await?;
        for refund in &due {
            self.send_refund(refund).await;
        }
        Ok(due.len())
    }

    /// Refunds a paid order before the show; repeating it is harmless.
    pub async fn refund(&self, order_no: i64) -> Result<(), PaymentError> {
        match bills::refund_order(&self.pg, order_no, "buyer_request").await? {
            RefundOutcome::Refunded { categories, due } => {
                self.tell_actors(ChangeKind::Return, order_no, &categories)
                    .await;
                if let Some(due) = due {
                    self.send_refund(&due).await;
                }
                Ok(())
            }
            RefundOutcome::AlreadyRefunded => Ok(()),
            RefundOutcome::NotPaid(status) => Err(PaymentError::NotRefundable(status)),
            RefundOutcome::ShowStarted => Err(PaymentError::ShowStarted),
            RefundOutcome::UnknownOrder => Err(PaymentError::NotFound),
        }
    }

    /// Asks the provider to pay back; the record stays `requested` (and pay-check retries it)
    /// until the provider confirms.
    async fn send_refund(&self, due: &RefundDue) {
        let request = RefundRequest {
            out_trade_no: due.payment_id.to_string(),
            out_request_no: due.refund_id.to_string(),
            amount_cents: due.amount_cents,
            reason: due.reason.clone(),
        };
        let sent = match self.provider(&due.channel) {
            Ok(provider) => provider.refund(request).await.map_err(PaymentError::from),
            Err(e) => Err(e),
        };
        let confirmed = match sent {
            Ok(()) => bills::refund_confirmed(&self.pg, due)
                .await
                .map_err(PaymentError::from),
            Err(e) => Err(e),
        };
        if let Err(e) = confirmed {
            tracing::warn!(refund_id = %due.refund_id, error = %e, "refund not confirmed yet; pay-check retries it");
        }
    }

    /// Tells each category's actor about a transition already committed. A failure only delays
    /// the seat map: the actor's next write of this order finds the rows moved and reloads.
    async fn tell_actors(&self, kind: ChangeKind, order_no: i64, categories: &[i64]) {
        for &category in categories {
            let t = Transition { kind, order_no };
            if let Err(e) = self.supervisor.applied(category, t).await {
                log_untold(order_no, category, &e);
            }
        }
    }
}

fn log_untold(order_no: i64, category: i64, e: &ActorError) {
    tracing::warn!(order_no, category, error = %e, "category not told about a committed payment change");
}
