//! `boxoffice events tail`: an operator's live view of order events, one line each, on a
//! subscription of its own (it takes nothing from the server's consumers) that is removed when
//! the command ends.

use super::Event;
use crate::store::pulsar::ORDER_EVENTS;
use crate::store::{PulsarStore, StoreError};
use futures::StreamExt;
use pulsar::SubType;
use pulsar::consumer::{ConsumerOptions, InitialPosition};
use std::future::Future;
use std::io::Write;

/// Which events to print.
#[derive(Debug, Clone, Default)]
pub struct TailFilter {
    /// Only this event type (`OrderPaid`, ...).
    pub event_type: Option<String>,
    /// Only this program's events.
    pub program_id: Option<i64>,
}

impl TailFilter {
    fn admits(&self, event: &Event) -> bool {
        self.event_type
            .as_ref()
            .is_none_or(|t| *t == event.event_type)
            && self.program_id.is_none_or(|p| event.program_id == Some(p))
    }
}

/// One line: time, type, order, buyer, program, the event's data.
pub fn line(event: &Event) -> String {
    let or_dash = |v: Option<i64>| v.map_or("-".to_string(), |n| n.to_string());
    format!(
        "{} {} order={} user={} program={} {}",
        event
            .occurred_at
            .to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        event.event_type,
        if event.order_no.is_empty() {
            "-"
        } else {
            &event.order_no
        },
        or_dash(event.user_id),
        or_dash(event.program_id),
        event.data
    )
}

/// Prints matching events to `out` as they arrive until `stop` resolves (Ctrl-C), then
/// removes its subscription. The first line says what is tailed, once subscribed.
pub async fn tail(
    pulsar: &PulsarStore,
    filter: TailFilter,
    out: &mut impl Write,
    stop: impl Future<Output = ()>,
) -> Result<(), StoreError> {
    let topic = pulsar.topic(ORDER_EVENTS);
    let mut consumer: pulsar::Consumer<Vec<u8>, _> = pulsar
        .client()
        .consumer()
        .with_topic(&topic)
        .with_subscription(format!("tail-{}", uuid::Uuid::new_v4()))
        .with_subscription_type(SubType::Exclusive)
        .with_options(ConsumerOptions {
            initial_position: InitialPosition::Latest,
            ..Default::default()
        })
        .build()
        .await
        .map_err(StoreError::from)?;
    let _ = writeln!(out, "tailing {topic} (Ctrl-C stops)");
    let _ = out.flush();
    tokio::pin!(stop);
    loop {
        let message = tokio::select! {
            m = consumer.next() => m,
            _ = &mut stop => break,
        };
        let Some(Ok(message)) = message else { break };
        if let Ok(event) = serde_json::from_slice::<Event>(&message.payload.data)
            && filter.admits(&event)
        {
            let _ = writeln!(out, "{}", line(&event));
            let _ = out.flush();
        }
        let _ = consumer.ack(&message).await;
    }
    // A tail's subscription would otherwise keep collecting a backlog nobody reads.
    let _ = consumer.unsubscribe().await;
    Ok(())
}
