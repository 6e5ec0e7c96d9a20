//! Hanging GETs (`?wait_for_change=true`), shared by idbridge's metadata frontend and the
//! emulator's.
//!
//! GCE's rules, as clients rely on them:
//!
//! * Every value carries an `ETag` ([`super::server::etag`] of the body; for minting leaves, of
//!   the credential the server hands out, so a refreshed token changes it).
//! * `wait_for_change=true` with no `last_etag`, or one that differs from the current `ETag`,
//!   answers at once with the current value (Go's `Subscribe` sends the `ETag` of its first
//!   plain GET; other clients start from `0` or `NONE`).
//! * With a matching `last_etag` the request waits until the value changes, or `timeout_sec`
//!   elapses (at most [`MAX_TIMEOUT`], which is also the default), and then answers **200 with
//!   the current value and `ETag`**, changed or not (the guest agent relies on this).
//! * `recursive=true` on a directory watches the whole rendering, so any descendant's change
//!   wakes it.
//!
//! A server keeps one [`Watchers`]: it calls [`Watchers::changed`] when anything in its tree
//! (or a credential behind a minting leaf) changes, and each hanging GET re-renders its node
//! then and compares `ETag`s. At most [`Watchers::new`]'s `max` requests hang at once; one more
//! is refused at once ([`Busy`], answered 503 so clients back off: Go's `Subscribe` sleeps five
//! seconds). [`Watchers::close`] releases every hanging GET with its current value, for a
//! server shutting down.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::sync::{Semaphore, watch};

/// The longest a hanging GET waits, and how long it waits without `timeout_sec`. GCE does not
/// publish its own bound; five minutes keeps a client that sends no `timeout_sec` (Go's
/// `Subscribe`) connected through long quiet periods while every hanging GET still ends on
/// its own, well inside the HTTP timeouts of the proxies and clients in between.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(300);

/// Default bound on concurrent hanging GETs of one server. A host runs a handful of watching
/// agents; 256 leaves room for many while keeping a runaway client from tying up the server.
pub const DEFAULT_MAX_WATCHERS: usize = 256;

/// A request's `wait_for_change` parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wait {
    /// `last_etag`, when sent.
    pub last_etag: Option<String>,
    /// `timeout_sec`, capped at [`MAX_TIMEOUT`]; [`MAX_TIMEOUT`] when absent.
    pub timeout: Duration,
}

impl Wait {
    /// The wait of `wait_for_change=true`, with `last_etag` and the raw `timeout_sec`; a
    /// `timeout_sec` that is not a non-negative integer is an error, answered 400.
    pub fn new(last_etag: Option<String>, timeout_sec: Option<&str>) -> Result<Wait, BadTimeout> {
        let timeout = match timeout_sec {
            None => MAX_TIMEOUT,
            Some(t) => {
                if t.is_empty() || !t.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(BadTimeout);
                }
                t.parse::<u64>()
                    .map_or(MAX_TIMEOUT, Duration::from_secs)
                    .min(MAX_TIMEOUT)
            }
        };
        Ok(Wait { last_etag, timeout })
    }
}

/// `timeout_sec` is not a non-negative integer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BadTimeout;

/// Too many hanging GETs already.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Busy;

/// A server's hanging GETs: the change signal they wait on and the bound on how many may wait.
#[derive(Debug, Clone)]
pub struct Watchers {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    changes: watch::Sender<u64>,
    permits: Semaphore,
    max: usize,
    closed: AtomicBool,
}

impl Default for Watchers {
    fn default() -> Self {
        Watchers::new(DEFAULT_MAX_WATCHERS)
    }
}

impl Watchers {
    /// Watchers of one server, at most `max` hanging at once.
    pub fn new(max: usize) -> Watchers {
        Watchers {
            inner: Arc::new(Inner {
                changes: watch::Sender::new(0),
                permits: Semaphore::new(max),
                max,
                closed: AtomicBool::new(false),
            }),
        }
    }

    /// Something changed: every hanging GET re-renders its node and answers if its `ETag`
    /// moved.
    pub fn changed(&self) {
        self.inner.changes.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Releases every hanging GET with its current value, and makes later ones answer at once.
    pub fn close(&self) {
        self.inner.closed.store(true, Ordering::SeqCst);
        self.changed();
    }

    /// Hanging GETs right now.
    pub fn hanging(&self) -> usize {
        self.inner
            .max
            .saturating_sub(self.inner.permits.available_permits())
    }

    /// Calls [`Self::changed`] whenever `source` changes, until it closes (a task on the
    /// current runtime).
    pub fn follow<T: Send + Sync + 'static>(&self, mut source: watch::Receiver<T>) {
        let me = self.clone();
        tokio::spawn(async move {
            while source.changed().await.is_ok() {
                me.changed();
            }
        });
    }

    /// Calls [`Self::close`] once `stop` turns true (a task on the current runtime).
    pub fn close_on(&self, mut stop: watch::Receiver<bool>) {
        let me = self.clone();
        tokio::spawn(async move {
            let _ = stop.wait_for(|stopping| *stopping).await;
            me.close();
        });
    }

    /// Answers a hanging GET. `render` yields the node's current `ETag` (`None` when the
    /// answer is not a value, an error, which is sent at once) and the answer to send.
    pub async fn hang<T, F, Fut>(&self, wait: &Wait, mut render: F) -> Result<T, Busy>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = (Option<String>, T)>,
    {
        // Subscribe before the first rendering, so no change between the two is missed.
        let mut changes = self.inner.changes.subscribe();
        let (etag, answer) = render().await;
        let Some(etag) = etag else {
            return Ok(answer);
        };
        if wait.last_etag.as_deref() != Some(etag.as_str())
            || self.inner.closed.load(Ordering::SeqCst)
        {
            return Ok(answer);
        }
        let Ok(_permit) = self.inner.permits.try_acquire() else {
            return Err(Busy);
        };
        drop(answer);
        let deadline = tokio::time::Instant::now() + wait.timeout;
        loop {
            tokio::select! {
                changed = changes.changed() => {
                    if changed.is_err() {
                        return Ok(render().await.1);
                    }
                }
                () = tokio::time::sleep_until(deadline) => return Ok(render().await.1),
            }
            let (now, answer) = render().await;
            if now.as_deref() != Some(etag.as_str()) || self.inner.closed.load(Ordering::SeqCst) {
                return Ok(answer);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    #[test]
    fn wait_parameters() {
        assert_eq!(Wait::new(None, None).unwrap().timeout, MAX_TIMEOUT);
        assert_eq!(
            Wait::new(Some("x".to_owned()), Some("5")).unwrap(),
            Wait {
                last_etag: Some("x".to_owned()),
                timeout: Duration::from_secs(5)
            }
        );
        assert_eq!(Wait::new(None, Some("0")).unwrap().timeout, Duration::ZERO);
        assert_eq!(
            Wait::new(None, Some("99999999999999999999"))
                .unwrap()
                .timeout,
            MAX_TIMEOUT
        );
        for bad in ["", "-1", "1.5", "x"] {
            assert_eq!(Wait::new(None, Some(bad)), Err(BadTimeout), "{bad}");
        }
    }

    fn value(
        v: &Arc<Mutex<String>>,
    ) -> impl FnMut() -> std::future::Ready<(Option<String>, String)> {
        let v = Arc::clone(v);
        move || {
            let s = v.lock().unwrap().clone();
            std::future::ready((Some(super::super::server::etag(&s)), s))
        }
    }

    #[tokio::test(start_paused = true)]
    async fn answers_at_once_unless_the_etag_matches() {
        let w = Watchers::new(4);
        let v = Arc::new(Mutex::new("a".to_owned()));
        let etag = super::super::server::etag("a");
        for last in [None, Some("0".to_owned()), Some("NONE".to_owned())] {
            let wait = Wait::new(last, None).unwrap();
            assert_eq!(w.hang(&wait, value(&v)).await.unwrap(), "a");
        }
        // Matching: waits for the timeout, then answers the same value.
        let start = tokio::time::Instant::now();
        let wait = Wait::new(Some(etag.clone()), Some("7")).unwrap();
        assert_eq!(w.hang(&wait, value(&v)).await.unwrap(), "a");
        assert_eq!(start.elapsed(), Duration::from_secs(7));
    }

    #[tokio::test(start_paused = true)]
    async fn a_change_wakes_only_when_the_etag_moves() {
        let w = Watchers::new(4);
        let v = Arc::new(Mutex::new("a".to_owned()));
        let wait = Wait::new(Some(super::super::server::etag("a")), None).unwrap();
        let hanging = tokio::spawn({
            let (w, v) = (w.clone(), Arc::clone(&v));
            async move { w.hang(&wait, value(&v)).await }
        });
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(w.hanging(), 1);
        w.changed(); // nothing moved: keeps waiting
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(!hanging.is_finished());
        *v.lock().unwrap() = "b".to_owned();
        w.changed();
        assert_eq!(hanging.await.unwrap().unwrap(), "b");
    }

    #[tokio::test(start_paused = true)]
    async fn bounded_and_closable() {
        let w = Watchers::new(1);
        let v = Arc::new(Mutex::new("a".to_owned()));
        let wait = Wait::new(Some(super::super::server::etag("a")), None).unwrap();
        let first = tokio::spawn({
            let (w, v, wait) = (w.clone(), Arc::clone(&v), wait.clone());
            async move { w.hang(&wait, value(&v)).await }
        });
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert_eq!(w.hang(&wait, value(&v)).await, Err(Busy));
        w.close();
        assert_eq!(first.await.unwrap().unwrap(), "a");
        // Closed: answers at once.
        assert_eq!(w.hang(&wait, value(&v)).await.unwrap(), "a");
        // An error answer is sent at once.
        let w = Watchers::new(1);
        let err = || std::future::ready((None, "404"));
        assert_eq!(w.hang(&wait, err).await.unwrap(), "404");
    }
}
