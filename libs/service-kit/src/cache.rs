//! A bounded map whose entries expire (`moka`): the look-ups that requests
//! repeat (API keys, clients) read their table at most once per entry
//! lifetime.

use std::hash::Hash;
use std::time::Duration;

/// At most this many entries; past it the least used go first, so a flood
/// of distinct keys cannot grow memory without bound.
const MAX_ENTRIES: u64 = 100_000;

pub struct TtlCache<K, V>(moka::sync::Cache<K, V>);

impl<K, V> TtlCache<K, V>
where
    K: Eq + Hash + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    pub fn new(ttl: Duration) -> Self {
        Self(
            moka::sync::Cache::builder()
                .max_capacity(MAX_ENTRIES)
                .time_to_live(ttl)
                .build(),
        )
    }

    /// The entry, if stored less than the lifetime ago.
    pub fn get(&self, key: &K) -> Option<V> {
        self.0.get(key)
    }

    pub fn insert(&self, key: K, value: V) {
        self.0.insert(key, value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_expire_after_their_lifetime() {
        let c = TtlCache::new(Duration::from_millis(30));
        c.insert("k", 1);
        assert_eq!(c.get(&"k"), Some(1));
        assert_eq!(c.get(&"other"), None);
        std::thread::sleep(Duration::from_millis(40));
        assert_eq!(c.get(&"k"), None);
    }
}
