//! What a product keeps on disk, in a directory it chooses: the activation
//! file, the pinned keys, the last verified grant document (and the highest
//! `iat` of one received), a pending offline request and the clock's
//! high-water mark. Every file is written
//! atomically (a temporary file in the same directory, synced, renamed over
//! the old one) and, on Unix, readable by its owner only (0600).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use chrono::{DateTime, Duration, Utc};

use crate::error::{Error, Result};

pub const ACTIVATION_FILE: &str = "activation.jws";
pub const ACTIVATION_JWKS: &str = "activation-jwks.json";
pub const GRANTS_JWKS: &str = "grants-jwks.json";
pub const GRANT_DOCUMENT: &str = "grant-document.jws";
pub const PENDING_OFFLINE: &str = "offline-request.json";
pub const HIGH_WATER: &str = "clock-high-water";
pub const GRANT_IAT: &str = "grant-document-iat";

/// The documents whose offline use the clock checks protect.
const DOCUMENTS: [&str; 2] = [ACTIVATION_FILE, GRANT_DOCUMENT];

/// Why a kept document cannot be used while its clock record is gone.
const NO_MARK: &str =
    "the clock's high-water mark, while documents are kept: an online activation or sync is needed";

/// The clock rule: `now` earlier than the latest time seen (`high_water`)
/// by more than `tolerance` is a rollback. The same rule, and by default
/// the same tolerance (600 s), as the servers apply to reported times.
pub fn check_clock(
    high_water: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
    tolerance: Duration,
) -> Result<()> {
    match high_water {
        Some(hw) if contracts::time::add(now, tolerance) < hw => Err(Error::ClockRollback {
            now,
            high_water: hw,
        }),
        _ => Ok(()),
    }
}

/// A directory of the product's own. Clones share one lock, so the clock
/// checks of concurrent calls do not interleave.
#[derive(Debug, Clone)]
pub struct Store {
    dir: PathBuf,
    lock: Arc<Mutex<()>>,
}

impl Store {
    /// The store in `dir`, created (0700 on Unix) if missing.
    pub fn open(dir: impl Into<PathBuf>) -> Result<Self> {
        let dir = dir.into();
        std::fs::create_dir_all(&dir)?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))?;
        }
        Ok(Self {
            dir,
            lock: Arc::default(),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Writes `name` atomically, 0600.
    pub fn write(&self, name: &str, contents: &[u8]) -> Result<()> {
        write_atomic(&self.path(name), contents)
    }

    /// The contents of `name`; None if it does not exist.
    pub fn read(&self, name: &str) -> Result<Option<String>> {
        match std::fs::read_to_string(self.path(name)) {
            Ok(s) => Ok(Some(s)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    pub fn remove(&self, name: &str) -> Result<()> {
        match std::fs::remove_file(self.path(name)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e.into()),
            _ => Ok(()),
        }
    }

    fn locked(&self) -> MutexGuard<'_, ()> {
        // The lock guards no data: a panic while holding it leaves none torn.
        self.lock.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The latest time seen; None if missing or unreadable.
    pub fn high_water(&self) -> Result<Option<DateTime<Utc>>> {
        Ok(self
            .read(HIGH_WATER)?
            .and_then(|s| contracts::time::parse(s.trim()).ok()))
    }

    /// Checks `now` against the floor — the high-water mark and the `iat`
    /// of the kept documents, whichever is later ([`check_clock`]) — and
    /// records it as the new mark when later. The mark only moves forward.
    /// A missing or unreadable mark while documents are kept is refused
    /// ([`Error::Missing`]): deleting it must not reset the clock check.
    pub fn observe_clock(&self, now: DateTime<Utc>, tolerance: Duration) -> Result<()> {
        self.observe(now, tolerance, false)
    }

    /// [`Store::observe_clock`] before a call to a server, which checks the
    /// client's time itself: a missing mark is let through (and left
    /// missing until [`Store::record_clock`] after the server's answer).
    pub fn observe_clock_online(&self, now: DateTime<Utc>, tolerance: Duration) -> Result<()> {
        self.observe(now, tolerance, true)
    }

    fn observe(&self, now: DateTime<Utc>, tolerance: Duration, online: bool) -> Result<()> {
        let _serial = self.locked();
        let mark = self.high_water()?;
        let mut kept = Vec::new();
        for name in DOCUMENTS {
            kept.extend(self.read(name)?);
        }
        if mark.is_none() && !kept.is_empty() && !online {
            return Err(Error::Missing(NO_MARK));
        }
        let floor = kept
            .iter()
            .filter_map(|d| claimed_iat(d))
            .filter_map(|iat| DateTime::from_timestamp(iat, 0))
            .chain(mark)
            .max();
        check_clock(floor, now, tolerance)?;
        // Without documents there is nothing a missing mark would unlock.
        let establish = mark.is_none() && kept.is_empty();
        if establish || mark.is_some_and(|hw| now > hw) {
            self.write(HIGH_WATER, now.to_rfc3339().as_bytes())?;
        }
        Ok(())
    }

    /// After a server accepted `now` (it checks the client's time) and
    /// answered: the mark is at least `now`, even if it was missing.
    pub fn record_clock(&self, now: DateTime<Utc>) -> Result<()> {
        let _serial = self.locked();
        if self.high_water()?.is_none_or(|hw| now > hw) {
            self.write(HIGH_WATER, now.to_rfc3339().as_bytes())?;
        }
        Ok(())
    }

    /// The highest `iat` of a grant document received; None if missing or
    /// unreadable. A kept document issued earlier is a restored old one.
    pub fn grant_iat(&self) -> Result<Option<i64>> {
        Ok(self.read(GRANT_IAT)?.and_then(|s| s.trim().parse().ok()))
    }

    /// Keeps a grant document just verified, issued at `iat`, and records
    /// `iat` as the lowest a kept document may have — unless a later one
    /// is kept already (two syncs answered out of order).
    pub fn keep_grant_document(&self, document: &str, iat: i64) -> Result<()> {
        let _serial = self.locked();
        if self.grant_iat()?.is_some_and(|kept| iat < kept) {
            return Ok(());
        }
        // The document first: a crash between the two leaves a record no
        // higher than the document kept.
        self.write(GRANT_DOCUMENT, document.as_bytes())?;
        self.write(GRANT_IAT, iat.to_string().as_bytes())
    }
}

/// The `iat` a compact JWS claims, unverified: it only ever raises the
/// clock's floor, so a forged one can make the check stricter, no laxer.
fn claimed_iat(jws: &str) -> Option<i64> {
    let payload = jws.trim().split('.').nth(1)?;
    let claims: serde_json::Value = serde_json::from_slice(&B64.decode(payload).ok()?).ok()?;
    claims.get("iat")?.as_i64()
}

/// Writes `path` through a temporary file in its directory, synced and
/// renamed over it, so a reader sees the old contents or the new, never
/// part of either. The file is 0600 on Unix.
pub fn write_atomic(path: &Path, contents: &[u8]) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or(Error::Missing("a file name"))?;
    let tmp = dir.join(format!(".{name}.{}.tmp", uuid::Uuid::new_v4().simple()));
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let written = (|| -> std::io::Result<()> {
        let mut f = options.open(&tmp)?;
        f.write_all(contents)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        // The rename itself survives a crash once the directory is synced.
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(())
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    Ok(written?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        contracts::time::parse(s).expect("time")
    }

    fn temp_store() -> Store {
        let dir = std::env::temp_dir().join(format!("license-client-{}", uuid::Uuid::new_v4()));
        Store::open(dir).expect("store")
    }

    #[test]
    fn a_clock_set_back_beyond_the_tolerance_is_a_rollback() {
        let tol = Duration::seconds(600);
        let hw = Some(t("2031-01-01T12:00:00Z"));
        assert!(check_clock(None, t("2001-01-01T00:00:00Z"), tol).is_ok());
        assert!(check_clock(hw, t("2031-01-01T11:50:00Z"), tol).is_ok());
        assert!(matches!(
            check_clock(hw, t("2031-01-01T11:49:59Z"), tol),
            Err(Error::ClockRollback { .. })
        ));
    }

    #[test]
    fn the_high_water_mark_only_moves_forward_and_survives_reopening() {
        let store = temp_store();
        let tol = Duration::seconds(600);
        store
            .observe_clock(t("2031-01-01T12:00:00Z"), tol)
            .expect("first");
        // Within the tolerance: fine, and the mark stays.
        store
            .observe_clock(t("2031-01-01T11:55:00Z"), tol)
            .expect("within tolerance");
        assert_eq!(
            store.high_water().expect("read"),
            Some(t("2031-01-01T12:00:00Z"))
        );
        let reopened = Store::open(store.dir()).expect("reopen");
        assert!(matches!(
            reopened.observe_clock(t("2031-01-01T10:00:00Z"), tol),
            Err(Error::ClockRollback { .. })
        ));
        reopened
            .observe_clock(t("2031-01-02T00:00:00Z"), tol)
            .expect("forward");
        assert_eq!(
            reopened.high_water().expect("read"),
            Some(t("2031-01-02T00:00:00Z"))
        );
        let _ = std::fs::remove_dir_all(store.dir());
    }

    /// A compact JWS-looking text whose payload claims `iat` (unsigned:
    /// the store reads the claim, the client verifies the signature).
    fn document_issued(iat: DateTime<Utc>) -> String {
        let payload = B64.encode(format!("{{\"iat\":{}}}", iat.timestamp()));
        format!("e30.{payload}.sig")
    }

    #[test]
    fn a_missing_or_garbled_mark_with_documents_kept_needs_an_online_check() {
        let store = temp_store();
        let tol = Duration::seconds(600);
        let now = t("2031-01-02T00:00:00Z");
        // Nothing kept: no mark is simply the first run.
        store.observe_clock(now, tol).expect("first run");
        store
            .write(ACTIVATION_FILE, document_issued(now).as_bytes())
            .expect("write");
        for mark in [None, Some("not a time")] {
            match mark {
                None => store.remove(HIGH_WATER).expect("remove"),
                Some(m) => store.write(HIGH_WATER, m.as_bytes()).expect("garble"),
            }
            assert!(matches!(
                store.observe_clock(now, tol),
                Err(Error::Missing(m)) if m.contains("online")
            ));
            // Before an online call it passes, but sets no mark yet …
            store.observe_clock_online(now, tol).expect("online");
            assert!(store.observe_clock(now, tol).is_err());
            // … the server's answer does.
            store.record_clock(now).expect("record");
            store.observe_clock(now, tol).expect("re-established");
        }
        let _ = std::fs::remove_dir_all(store.dir());
    }

    #[test]
    fn the_floor_is_the_latest_of_the_mark_and_the_kept_documents_iat() {
        let store = temp_store();
        let tol = Duration::seconds(600);
        store
            .observe_clock(t("2031-01-01T00:00:00Z"), tol)
            .expect("mark");
        store
            .write(
                GRANT_DOCUMENT,
                document_issued(t("2031-01-05T00:00:00Z")).as_bytes(),
            )
            .expect("write");
        for check in [Store::observe_clock, Store::observe_clock_online] {
            assert!(matches!(
                check(&store, t("2031-01-04T23:49:59Z"), tol),
                Err(Error::ClockRollback { high_water, .. })
                    if high_water == t("2031-01-05T00:00:00Z")
            ));
        }
        store
            .observe_clock(t("2031-01-04T23:50:00Z"), tol)
            .expect("within tolerance of the iat");
        let _ = std::fs::remove_dir_all(store.dir());
    }

    #[test]
    fn clones_share_one_lock_and_the_mark_ends_at_the_latest_time() {
        let store = temp_store();
        assert!(Arc::ptr_eq(&store.lock, &store.clone().lock));
        let base = t("2031-01-01T00:00:00Z");
        let threads: Vec<_> = (0..8)
            .map(|i| {
                let s = store.clone();
                std::thread::spawn(move || {
                    s.observe_clock(base + Duration::seconds(i), Duration::seconds(600))
                })
            })
            .collect();
        for th in threads {
            th.join().expect("thread").expect("observed");
        }
        assert_eq!(
            store.high_water().expect("read"),
            Some(base + Duration::seconds(7))
        );
        let _ = std::fs::remove_dir_all(store.dir());
    }

    #[test]
    fn a_grant_document_older_than_the_one_recorded_is_not_kept() {
        let store = temp_store();
        assert_eq!(store.grant_iat().expect("read"), None);
        store.keep_grant_document("new", 200).expect("keep");
        store.keep_grant_document("old", 100).expect("skip");
        assert_eq!(
            store.read(GRANT_DOCUMENT).expect("read").as_deref(),
            Some("new")
        );
        assert_eq!(store.grant_iat().expect("read"), Some(200));
        store.keep_grant_document("same second", 200).expect("keep");
        assert_eq!(
            store.read(GRANT_DOCUMENT).expect("read").as_deref(),
            Some("same second")
        );
        let _ = std::fs::remove_dir_all(store.dir());
    }

    #[test]
    fn files_are_replaced_whole_and_private() {
        let store = temp_store();
        store.write("f", b"one").expect("write");
        store.write("f", b"two").expect("rewrite");
        assert_eq!(store.read("f").expect("read").as_deref(), Some("two"));
        assert_eq!(store.read("absent").expect("read"), None);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(store.path("f"))
                .expect("meta")
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        // No temporary file is left behind.
        let names: Vec<_> = std::fs::read_dir(store.dir())
            .expect("dir")
            .filter_map(|e| e.ok())
            .map(|e| e.file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("f")]);
        let _ = std::fs::remove_dir_all(store.dir());
    }
}
