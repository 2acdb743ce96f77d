//! Single-flight reads: when a thousand long-polls wake on the same change,
//! they ask the same question (the changes of one license after one cursor,
//! the grants of one set of licenses); one query answers all of them.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Mutex;

use futures::future::{BoxFuture, FutureExt, Shared};

type Flight<V> = Shared<BoxFuture<'static, Result<V, String>>>;

pub struct SingleFlight<K, V: Clone> {
    inflight: Mutex<HashMap<K, Flight<V>>>,
}

impl<K, V> Default for SingleFlight<K, V>
where
    K: Eq + Hash + Clone,
    V: Clone + Send + Sync + 'static,
{
    fn default() -> Self {
        Self {
            inflight: Mutex::new(HashMap::new()),
        }
    }
}

impl<K, V> SingleFlight<K, V>
where
    K: Eq + Hash + Clone,
    V: Clone + Send + Sync + 'static,
{
    /// The answer of the query for `key` in flight, or of `query` started
    /// now. A caller that joins a flight started before its own question
    /// may get an older answer: callers key by everything that fixes the
    /// answer (a cursor, say) or re-ask when it looks stale.
    pub async fn run<F>(&self, key: K, query: impl FnOnce() -> F) -> Result<V, String>
    where
        F: std::future::Future<Output = Result<V, String>> + Send + 'static,
    {
        let flight = {
            let Ok(mut map) = self.inflight.lock() else {
                return query().await;
            };
            match map.get(&key) {
                Some(f) => f.clone(),
                None => {
                    let f = query().boxed().shared();
                    map.insert(key.clone(), f.clone());
                    f
                }
            }
        };
        let out = flight.clone().await;
        if let Ok(mut map) = self.inflight.lock() {
            if map.get(&key).is_some_and(|f| f.ptr_eq(&flight)) {
                map.remove(&key);
            }
        }
        out
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
}
