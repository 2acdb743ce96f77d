//! A small map whose entries expire: the look-ups that requests repeat
//! (API keys, clients) read their table at most once per entry lifetime.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// At most this many entries; beyond it the map starts over (a flood of
/// distinct keys cannot grow memory without bound).
const MAX_ENTRIES: usize = 100_000;

pub struct TtlCache<K, V> {
    ttl: Duration,
    entries: Mutex<HashMap<K, (V, Instant)>>,
}

impl<K: Eq + Hash, V: Clone> TtlCache<K, V> {
    pub fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            entries: Mutex::new(HashMap::new()),
        }
    }

    /// The entry, if stored less than the lifetime ago.
    pub fn get(&self, key: &K) -> Option<V> {
        let entries = self.entries.lock().ok()?;
        entries
            .get(key)
            .filter(|(_, at)| at.elapsed() < self.ttl)
            .map(|(v, _)| v.clone())
    }

    pub fn insert(&self, key: K, value: V) {
        if let Ok(mut entries) = self.entries.lock() {
            if entries.len() >= MAX_ENTRIES {
                entries.clear();
            }
            entries.insert(key, (value, Instant::now()));
        }
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
