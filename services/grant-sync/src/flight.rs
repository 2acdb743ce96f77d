//! Single-flight reads: when a thousand long-polls wake on the same change,
//! they ask the same question (the changes of one license after one cursor,
//! the grants of one set of licenses); one query answers all of them.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use futures::future::{BoxFuture, FutureExt, Shared};

type Flight<V> = Shared<BoxFuture<'static, Result<V, String>>>;
type Flights<K, V> = Arc<Mutex<HashMap<K, (u64, Flight<V>)>>>;

pub struct SingleFlight<K, V: Clone> {
    inflight: Flights<K, V>,
    next: AtomicU64,
}

impl<K, V> Default for SingleFlight<K, V>
where
    K: Eq + Hash + Clone + Send + 'static,
    V: Clone + Send + Sync + 'static,
{
    fn default() -> Self {
        Self {
            inflight: Arc::new(Mutex::new(HashMap::new())),
            next: AtomicU64::new(0),
        }
    }
}

impl<K, V> SingleFlight<K, V>
where
    K: Eq + Hash + Clone + Send + 'static,
    V: Clone + Send + Sync + 'static,
{
    /// The answer of the query for `key` in flight, or of `query` started
    /// now. The query runs as a task of its own: it finishes (and leaves
    /// the map) even when every asker has gone. A caller that joins a
    /// flight started before its own question may get an older answer:
    /// callers key by everything that fixes the answer (a cursor, say).
    pub async fn run<F>(&self, key: K, query: impl FnOnce() -> F) -> Result<V, String>
    where
        F: std::future::Future<Output = Result<V, String>> + Send + 'static,
    {
        let flight = {
            let Ok(mut map) = self.inflight.lock() else {
                return query().await;
            };
            match map.get(&key) {
                Some((_, f)) => f.clone(),
                None => {
                    let id = self.next.fetch_add(1, Ordering::Relaxed);
                    let (map_ref, k) = (self.inflight.clone(), key.clone());
                    let fut = query();
                    let task = tokio::spawn(async move {
                        let out = fut.await;
                        if let Ok(mut m) = map_ref.lock() {
                            if m.get(&k).is_some_and(|(i, _)| *i == id) {
                                m.remove(&k);
                            }
                        }
                        out
                    });
                    let f = async move { task.await.map_err(|e| e.to_string())? }
                        .boxed()
                        .shared();
                    map.insert(key, (id, f.clone()));
                    f
                }
            }
        };
        flight.await
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn concurrent_askers_of_one_key_share_one_query() {
        let flights: Arc<SingleFlight<u32, u32>> = Arc::new(SingleFlight::default());
        let runs = Arc::new(AtomicUsize::new(0));
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..50 {
            let (flights, runs) = (flights.clone(), runs.clone());
            tasks.spawn(async move {
                flights
                    .run(7, move || async move {
                        runs.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        Ok(42)
                    })
                    .await
            });
        }
        while let Some(r) = tasks.join_next().await {
            assert_eq!(r.expect("task"), Ok(42));
        }
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        // Once landed, the next question runs a new query.
        let again = flights.run(7, || async { Ok(43) }).await;
        assert_eq!(again, Ok(43));
    }

    #[tokio::test]
    async fn a_flight_whose_askers_all_left_still_lands_and_is_not_reused() {
        let flights: Arc<SingleFlight<u32, u32>> = Arc::new(SingleFlight::default());
        let asker = {
            let flights = flights.clone();
            tokio::spawn(async move {
                flights
                    .run(7, || async {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        Ok(1)
                    })
                    .await
            })
        };
        tokio::time::sleep(Duration::from_millis(10)).await;
        asker.abort();
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(flights.run(7, || async { Ok(2) }).await, Ok(2));
    }
}
