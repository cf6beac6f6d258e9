//! In-process single flight: concurrent callers for one key share one computation.

use std::collections::HashMap;
use std::future::Future;
use std::hash::Hash;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};

use futures::future::{BoxFuture, FutureExt, Shared};
use parking_lot::Mutex;

use super::SharedError;

type Flight<V> = Shared<BoxFuture<'static, Result<V, SharedError>>>;
type Flights<K, V> = Mutex<HashMap<K, (u64, Flight<V>)>>;

/// Joins concurrent computations of the same key.
///
/// The first caller for a key starts the computation; callers arriving while it runs wait
/// for the same result (value or error). When it finishes the key is forgotten, so errors
/// are never cached and a later call computes afresh. A computation survives the drop of
/// the caller that started it as long as another caller still waits; a panic inside it
/// becomes an error for every waiter.
pub(crate) struct SingleFlight<K, V> {
    flights: Arc<Flights<K, V>>,
    next_id: AtomicU64,
}

impl<K, V> Default for SingleFlight<K, V> {
    fn default() -> Self {
        Self {
            flights: Arc::new(Mutex::new(HashMap::new())),
            next_id: AtomicU64::new(0),
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("the computation panicked: {0}")]
struct Panicked(String);

impl<K, V> SingleFlight<K, V>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    /// Runs `make()` for `key` unless a computation for it is in flight, in which case its
    /// result is awaited instead. `make` is called (at most once) outside any lock.
    pub(crate) async fn run<F, Fut>(&self, key: K, make: F) -> Result<V, SharedError>
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = Result<V, SharedError>> + Send + 'static,
    {
        let flight = {
            let mut map = self.flights.lock();
            match map.get(&key) {
                Some((_, f)) => f.clone(),
                None => {
                    let id = self.next_id.fetch_add(1, Ordering::Relaxed);
                    let registry: Weak<Flights<K, V>> = Arc::downgrade(&self.flights);
                    let k = key.clone();
                    let work = async move {
                        let out = match AssertUnwindSafe(async move { make().await })
                            .catch_unwind()
                            .await
                        {
                            Ok(out) => out,
                            Err(panic) => {
                                Err(Arc::new(Panicked(panic_message(&*panic))) as SharedError)
                            }
                        };
                        if let Some(flights) = registry.upgrade() {
                            let mut map = flights.lock();
                            if map.get(&k).is_some_and(|(i, _)| *i == id) {
                                map.remove(&k);
                            }
                        }
                        out
                    }
                    .boxed()
                    .shared();
                    map.insert(key, (id, work.clone()));
                    work
                }
            }
        };
        flight.await
    }

    /// Keys with a computation in flight (for tests and metrics).
    #[cfg(test)]
    pub(crate) fn in_flight(&self) -> usize {
        self.flights.lock().len()
    }
}

/// The message of a panic payload.
pub(crate) fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&'static str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "a non-string panic payload".to_owned()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use tokio::sync::oneshot;

    use super::*;

    #[tokio::test]
    async fn concurrent_callers_share_one_computation() {
        let sf: Arc<SingleFlight<&'static str, u32>> = Arc::default();
        let calls = Arc::new(AtomicUsize::new(0));
        let (tx, rx) = oneshot::channel::<u32>();
        let rx = Arc::new(Mutex::new(Some(rx)));
        let callers: Vec<_> = (0..5)
            .map(|_| {
                let calls = calls.clone();
                let rx = rx.clone();
                let sf = sf.clone();
                async move {
                    sf.run("k", move || async move {
                        calls.fetch_add(1, Ordering::SeqCst);
                        let rx = rx.lock().take().expect("computed twice");
                        Ok(rx.await.unwrap_or(0))
                    })
                    .await
                }
            })
            .collect();
        // join_all polls every caller before the release below, so all of them have joined.
        let release = async {
            assert_eq!(sf.in_flight(), 1);
            tx.send(7).unwrap();
        };
        let (results, ()) = futures::join!(futures::future::join_all(callers), release);
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert!(results.iter().all(|r| matches!(r, Ok(7))));
        assert_eq!(sf.in_flight(), 0, "finished flights are forgotten");
    }

    #[tokio::test]
    async fn errors_and_panics_are_shared_but_not_kept() {
        let sf: SingleFlight<u8, u8> = SingleFlight::default();
        let e = sf
            .run(1, || async {
                Err(Arc::new(Panicked("boom".into())) as SharedError)
            })
            .await
            .unwrap_err();
        assert!(e.to_string().contains("boom"));
        let e = sf
            .run(1, || async {
                if true {
                    panic!("kaboom");
                }
                Ok(0)
            })
            .await
            .unwrap_err();
        assert!(e.to_string().contains("kaboom"), "{e}");
        assert_eq!(sf.run(1, || async { Ok(3) }).await.unwrap(), 3);
        assert_eq!(sf.in_flight(), 0);
    }
}
