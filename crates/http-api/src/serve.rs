//! The accept loop: what a connection may cost before any handler runs. hyper's HTTP/1 server
//! bounds the time to send a request head (`header_read_timeout`, also between keep-alive
//! requests) and its size (`max_buf_size`); this module bounds how many connections are open at
//! once. It does not route, authenticate or read bodies (see `routes`).
//!
//! At the connection cap, a new connection evicts the oldest one that has no request in flight
//! (an idle keep-alive or a half-sent head: the slowloris shape), so idle sockets can neither
//! starve `/healthz` nor, since the process never holds more than the cap in descriptors for the
//! API, the refreshers' pipes and sockets. When every open connection is busy, the newest is
//! closed at once.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::{Notify, watch};
use tokio::task::JoinSet;
use tower_service::Service as _;
use tracing::{debug, warn};

/// The per-connection bounds of the server, also reported in the startup log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// Connections open at once; each costs one file descriptor and at most `max_head` bytes
    /// of read buffer.
    pub max_connections: usize,
    /// The longest a client may take to send a request head, and to start the next one on a
    /// kept-alive connection.
    pub header_timeout: Duration,
    /// The largest request head (request line and headers); larger is answered 431.
    pub max_head: usize,
}

/// 256 connections of 16 KiB heads: 4 MiB of buffers and 256 descriptors at most, leaving the
/// rest of a 1,024-descriptor limit to the registry client and the refreshers.
pub const DEFAULT_CONNECTION_LIMITS: ConnectionLimits = ConnectionLimits {
    max_connections: 256,
    header_timeout: Duration::from_secs(10),
    max_head: 16 * 1024,
};

/// hyper refuses a read buffer below this.
const MIN_HEAD: usize = 8 * 1024;

/// One open connection: whether it has a request in flight, and how to close it.
struct Slot {
    in_flight: Arc<AtomicUsize>,
    evict: Arc<Notify>,
}

/// The open connections, oldest first (ids increase).
#[derive(Default)]
struct Table {
    next: u64,
    open: BTreeMap<u64, Slot>,
}

#[derive(Clone, Default)]
struct Connections(Arc<Mutex<Table>>);

struct Admitted {
    id: u64,
    in_flight: Arc<AtomicUsize>,
    evict: Arc<Notify>,
}

impl Connections {
    fn table(&self) -> std::sync::MutexGuard<'_, Table> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A slot for a new connection: free, or taken from the oldest idle connection; `None`
    /// when every connection has a request in flight.
    fn admit(&self, cap: usize) -> Option<Admitted> {
        let mut table = self.table();
        if table.open.len() >= cap {
            let idle = table
                .open
                .iter()
                .find(|(_, slot)| slot.in_flight.load(Ordering::Acquire) == 0)
                .map(|(id, _)| *id)?;
            if let Some(slot) = table.open.remove(&idle) {
                slot.evict.notify_one();
            }
        }
        let id = table.next;
        table.next += 1;
        let admitted = Admitted {
            id,
            in_flight: Arc::new(AtomicUsize::new(0)),
            evict: Arc::new(Notify::new()),
        };
        table.open.insert(
            id,
            Slot {
                in_flight: admitted.in_flight.clone(),
                evict: admitted.evict.clone(),
            },
        );
        Some(admitted)
    }

    fn close(&self, id: u64) {
        self.table().open.remove(&id);
    }
}

/// Counts a request in flight on its connection for as long as it is alive.
struct InFlight(Arc<AtomicUsize>);

impl InFlight {
    fn new(counter: &Arc<AtomicUsize>) -> InFlight {
        counter.fetch_add(1, Ordering::AcqRel);
        InFlight(counter.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Whether an accept error concerns only the connection being accepted (the listener is fine).
fn is_connection_error(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::ConnectionRefused | io::ErrorKind::ConnectionAborted | io::ErrorKind::ConnectionReset
    )
}

/// Serves `router` on `listener` until `stop` fires, then lets open requests finish.
pub(crate) async fn serve(
    listener: TcpListener,
    router: Router,
    limits: ConnectionLimits,
    mut stop: watch::Receiver<bool>,
) -> io::Result<()> {
    let connections = Connections::default();
    let mut tasks = JoinSet::new();
    let cap = limits.max_connections.max(1);
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .max_buf_size(limits.max_head.max(MIN_HEAD));
    loop {
        let accepted = tokio::select! {
            _ = stop.changed() => break,
            accepted = listener.accept() => accepted,
        };
        // Reap finished connection tasks so the set does not grow with the connections served.
        while tasks.try_join_next().is_some() {}
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(error) if is_connection_error(&error) => continue,
            Err(error) => {
                // Out of descriptors or memory: pause instead of spinning; what is open finishes.
                warn!(error = %error, "http api cannot accept a connection; retrying in 100 ms");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Some(admitted) = connections.admit(cap) else {
            debug!(peer = %peer, "http api at its connection cap with every connection busy; closing the new one");
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let router = router.clone();
        let in_flight = admitted.in_flight.clone();
        let service = hyper::service::service_fn(move |request: Request<Incoming>| {
            let guard = InFlight::new(&in_flight);
            let mut router = router.clone();
            async move {
                let response: Result<Response<Body>, Infallible> = router.call(request.map(Body::new)).await;
                drop(guard);
                response
            }
        });
        let connection = builder.serve_connection(TokioIo::new(stream), service);
        let mut stop = stop.clone();
        let connections = connections.clone();
        tasks.spawn(async move {
            let mut connection = std::pin::pin!(connection);
            tokio::select! {
                result = connection.as_mut() => {
                    if let Err(error) = result {
                        debug!(peer = %peer, error = %error, "http api connection ended");
                    }
                }
                () = admitted.evict.notified() => {
                    debug!(peer = %peer, "http api at its connection cap; closed an idle connection");
                }
                _ = stop.changed() => {
                    connection.as_mut().graceful_shutdown();
                    let _ = connection.await;
                }
            }
            connections.close(admitted.id);
        });
    }
    drop(listener);
    while tasks.join_next().await.is_some() {}
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn at_the_cap_the_oldest_idle_connection_gives_way() {
        let connections = Connections::default();
        let first = connections.admit(2).expect("free");
        let second = connections.admit(2).expect("free");
        let busy = InFlight::new(&first.in_flight);
        let third = connections.admit(2).expect("the idle second gives way");
        let open: Vec<u64> = connections.table().open.keys().copied().collect();
        assert_eq!(open, vec![first.id, third.id]);
        let _busy_too = InFlight::new(&third.in_flight);
        assert!(connections.admit(2).is_none(), "every connection is busy");
        drop(busy);
        assert!(connections.admit(2).is_some(), "the first is idle again");
        drop(second);
    }
}
