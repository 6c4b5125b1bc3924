//! Connection limits and shutdown for WebSockets. Upgraded sockets outlive the HTTP server's
//! graceful shutdown (hyper hands them over and forgets them), so they are counted here and
//! told to close when the server stops.

use dashmap::DashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::sync::{Notify, watch};

/// Why a new socket was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// This address has `ws.max_per_ip` sockets open.
    #[error("too many open sockets from this address")]
    PerAddress,
    /// The process has `ws.max_connections` sockets open.
    #[error("the server has as many open sockets as it takes")]
    Full,
    /// The server is shutting down.
    #[error("the server is shutting down")]
    ShuttingDown,
}

/// Open sockets of this process. Cheap to clone.
#[derive(Clone)]
pub struct Connections {
    inner: Arc<Inner>,
}

struct Inner {
    max: usize,
    max_per_ip: usize,
    open: AtomicUsize,
    // A map with one small entry per connected address: the per-address limit needs a count
    // per address, and DashMap's sharded locks keep admissions from serializing.
    per_ip: DashMap<IpAddr, usize>,
    closed: Notify,
    shutdown: watch::Sender<bool>,
}

/// One admitted socket; dropping it frees its place.
pub struct Slot {
    inner: Arc<Inner>,
    ip: IpAddr,
}

impl Connections {
    /// Limits: `max` sockets in all, `max_per_ip` from one address.
    pub fn new(max: usize, max_per_ip: usize) -> Self {
        Connections {
            inner: Arc::new(Inner {
                max,
                max_per_ip,
                open: AtomicUsize::new(0),
                per_ip: DashMap::new(),
                closed: Notify::new(),
                shutdown: watch::channel(false).0,
            }),
        }
    }

    /// Takes a place for a socket from `ip`, or says why not.
    pub fn admit(&self, ip: IpAddr) -> Result<Slot, Refusal> {
        if *self.inner.shutdown.borrow() {
            return Err(Refusal::ShuttingDown);
        }
        if self.inner.open.fetch_add(1, Ordering::AcqRel) >= self.inner.max {
            self.inner.open.fetch_sub(1, Ordering::AcqRel);
            return Err(Refusal::Full);
        }
        let mut count = self.inner.per_ip.entry(ip).or_insert(0);
        if *count >= self.inner.max_per_ip {
            drop(count);
            self.inner.open.fetch_sub(1, Ordering::AcqRel);
            return Err(Refusal::PerAddress);
        }
        *count += 1;
        Ok(Slot {
            inner: self.inner.clone(),
            ip,
        })
    }

    /// Sockets open now.
    pub fn open(&self) -> usize {
        self.inner.open.load(Ordering::Acquire)
    }

    /// Turns true when the server stops; every socket's loop watches it.
    pub fn shutdown_signal(&self) -> watch::Receiver<bool> {
        self.inner.shutdown.subscribe()
    }

    /// Tells every socket to close (1001) and waits up to `grace` for them to finish.
    pub async fn close_all(&self, grace: Duration) {
        self.inner.shutdown.send_replace(true);
        let drained = async {
            loop {
                let closed = self.inner.closed.notified();
                if self.open() == 0 {
                    return;
                }
                closed.await;
            }
        };
        if tokio::time::timeout(grace, drained).await.is_err() {
            tracing::warn!(
                open = self.open(),
                "WebSockets still open after the shutdown grace"
            );
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.inner.per_ip.remove_if_mut(&self.ip, |_, n| {
            *n -= 1;
            *n == 0
        });
        self.inner.open.fetch_sub(1, Ordering::AcqRel);
        self.inner.closed.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 1));
    const B: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 2));

    #[test]
    fn per_address_and_global_limits_hold_and_free_on_drop() {
        let c = Connections::new(3, 2);
        let a1 = c.admit(A).unwrap();
        let _a2 = c.admit(A).unwrap();
        assert_eq!(c.admit(A).err(), Some(Refusal::PerAddress));
        let _b1 = c.admit(B).unwrap();
        assert_eq!(c.admit(B).err(), Some(Refusal::Full));
        drop(a1);
        assert_eq!(c.open(), 2);
        assert!(c.admit(A).is_ok(), "a closed socket frees its place");
        assert_eq!(c.open(), 2, "the temporary slot was dropped again");
    }

    #[tokio::test]
    async fn close_all_refuses_new_sockets_and_waits_for_open_ones() {
        let c = Connections::new(10, 10);
        let slot = c.admit(A).unwrap();
        let mut signal = c.shutdown_signal();
        let closer = tokio::spawn({
            let c = c.clone();
            async move { c.close_all(Duration::from_secs(5)).await }
        });
        signal.changed().await.unwrap();
        assert_eq!(c.admit(B).err(), Some(Refusal::ShuttingDown));
        assert!(!closer.is_finished());
        drop(slot);
        closer.await.unwrap();
        assert_eq!(c.open(), 0);
    }
}
