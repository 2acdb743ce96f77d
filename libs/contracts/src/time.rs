//! Instants a caller gives and instants the rules compute, kept inside the
//! range every strict RFC 3339 reader accepts: years 0001 to 9999, four
//! digits. chrono itself reads `+262142-12-01T00:00:00Z` and writes
//! year 10000 as `+10000-…`, which most parsers refuse, and its arithmetic
//! panics at the edge of its range; so caller instants are read with
//! [`strict`] and every sum of an instant and a duration goes through
//! [`add`], which saturates at [`max`].

use chrono::{DateTime, Datelike, Duration, NaiveDate, Utc};
use serde::{Deserialize, Deserializer, Serializer};

/// Why an instant is refused. The message is safe to show to the caller.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TimeError {
    #[error("must be an RFC 3339 date-time with a four-digit year (e.g. 2027-01-31T00:00:00Z)")]
    Format,
    #[error("must be between 0001-01-01T00:00:00Z and 9999-12-31T23:59:59Z")]
    Range,
}

/// The latest instant there is here: 9999-12-31T23:59:59.999999Z.
pub fn max() -> DateTime<Utc> {
    NaiveDate::from_ymd_opt(9999, 12, 31)
        .and_then(|d| d.and_hms_micro_opt(23, 59, 59, 999_999))
        .map(|t| t.and_utc())
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}

/// The earliest: 0001-01-01T00:00:00Z.
pub fn min() -> DateTime<Utc> {
    NaiveDate::from_ymd_opt(1, 1, 1)
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|t| t.and_utc())
        .unwrap_or(DateTime::<Utc>::MIN_UTC)
}

/// Whether `t` is in range (in UTC: `9999-12-31T23:00:00-02:00` is not).
pub fn check(t: DateTime<Utc>) -> Result<DateTime<Utc>, TimeError> {
    if (1..=9999).contains(&t.year()) {
        Ok(t)
    } else {
        Err(TimeError::Range)
    }
}

/// Reads a caller's instant: RFC 3339 with a four-digit year and an
/// offset, in range once in UTC.
pub fn parse(s: &str) -> Result<DateTime<Utc>, TimeError> {
    // `parse_from_rfc3339` takes exactly four year digits, unlike
    // `DateTime::from_str` (which serde uses by default).
    let t = DateTime::parse_from_rfc3339(s.trim()).map_err(|_| TimeError::Format)?;
    check(t.with_timezone(&Utc))
}

/// `t + d`, saturating at [`min`] and [`max`]: a computed date is never
/// out of range, and no input can make the arithmetic panic.
pub fn add(t: DateTime<Utc>, d: Duration) -> DateTime<Utc> {
    match t.checked_add_signed(d) {
        Some(sum) if sum > max() => max(),
        Some(sum) if sum < min() => min(),
        Some(sum) => sum,
        None if d > Duration::zero() => max(),
        None => min(),
    }
}

/// `t` plus whole days ([`add`]'s saturation).
pub fn add_days(t: DateTime<Utc>, days: u32) -> DateTime<Utc> {
    add(
        t,
        Duration::try_days(i64::from(days)).unwrap_or(Duration::MAX),
    )
}

/// `t` plus seconds ([`add`]'s saturation).
pub fn add_secs(t: DateTime<Utc>, secs: i64) -> DateTime<Utc> {
    add(
        t,
        Duration::try_seconds(secs).unwrap_or(if secs > 0 {
            Duration::MAX
        } else {
            Duration::MIN
        }),
    )
}

/// Serde for a caller's instant: `#[serde(with = "contracts::time::strict")]`.
pub mod strict {
    use super::*;

    pub fn serialize<S: Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
        serde::Serialize::serialize(t, s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<DateTime<Utc>, D::Error> {
        let s = std::borrow::Cow::<str>::deserialize(d)?;
        parse(&s).map_err(serde::de::Error::custom)
    }
}

/// [`strict`] for an optional instant:
/// `#[serde(default, with = "contracts::time::strict_option")]`.
pub mod strict_option {
    use super::*;

    pub fn serialize<S: Serializer>(t: &Option<DateTime<Utc>>, s: S) -> Result<S::Ok, S::Error> {
        serde::Serialize::serialize(t, s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<DateTime<Utc>>, D::Error> {
        match Option::<std::borrow::Cow<str>>::deserialize(d)? {
            Some(s) => parse(&s).map(Some).map_err(serde::de::Error::custom),
            None => Ok(None),
        }
    }
}

/// Writes an instant as chrono's own `Serialize` does, in one string:
/// chrono formats through `collect_str`, which serde_json escapes a
/// character at a time, a tenth of the CPU of an as-of answer listing
/// thousands of activations. `#[serde(serialize_with = "contracts::time::written")]`.
pub fn written<S: Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true))
}

/// [`written`] for an optional instant.
pub fn written_option<S: Serializer>(t: &Option<DateTime<Utc>>, s: S) -> Result<S::Ok, S::Error> {
    match t {
        Some(t) => written(t, s),
        None => s.serialize_none(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn written_is_what_chrono_writes() {
        #[derive(serde::Serialize)]
        struct Both {
            #[serde(serialize_with = "written")]
            ours: DateTime<Utc>,
            chrono: DateTime<Utc>,
            #[serde(serialize_with = "written_option")]
            ours_option: Option<DateTime<Utc>>,
            chrono_option: Option<DateTime<Utc>>,
        }
        let base = parse("2026-01-07T14:36:39Z").expect("instant");
        // Every precision chrono picks (none, milli, micro, nano), the
        // range's ends and a leap second.
        let mut instants = vec![min(), max(), base];
        for nanos in [
            1,
            999,
            1_000,
            120_000,
            1_000_000,
            5_000_000,
            123_456_789,
            999_999_999,
        ] {
            instants.push(base + Duration::nanoseconds(nanos));
        }
        instants.push(
            NaiveDate::from_ymd_opt(2016, 12, 31)
                .and_then(|d| d.and_hms_nano_opt(23, 59, 59, 1_500_000_000))
                .expect("leap second")
                .and_utc(),
        );
        for t in instants {
            for opt in [Some(t), None] {
                let v = serde_json::to_value(Both {
                    ours: t,
                    chrono: t,
                    ours_option: opt,
                    chrono_option: opt,
                })
                .expect("json");
                assert_eq!(v["ours"], v["chrono"], "{t:?}");
                assert_eq!(v["ours_option"], v["chrono_option"], "{opt:?}");
            }
        }
    }

    #[test]
    fn only_four_digit_years_in_range_are_read() {
        assert!(parse("2027-01-31T00:00:00Z").is_ok());
        assert!(parse("2027-01-31T08:00:00+08:00").is_ok());
        assert!(parse("9999-12-31T23:59:59Z").is_ok());
        assert_eq!(parse("+262142-12-01T00:00:00Z"), Err(TimeError::Format));
        assert_eq!(parse("200000-01-01T00:00:00Z"), Err(TimeError::Format));
        assert_eq!(parse("10000-01-01T00:00:00Z"), Err(TimeError::Format));
        assert_eq!(parse("9999-12-31T23:00:00-02:00"), Err(TimeError::Range));
        assert_eq!(parse("0000-01-01T00:00:00Z"), Err(TimeError::Range));
        assert_eq!(parse("2027-01-31"), Err(TimeError::Format));
        assert_eq!(parse("tomorrow"), Err(TimeError::Format));
    }

    #[test]
    fn sums_saturate_instead_of_panicking() {
        let late = parse("9999-12-31T00:00:00Z").expect("valid");
        assert_eq!(add_days(late, u32::MAX), max());
        assert_eq!(add_secs(late, i64::MAX), max());
        assert_eq!(add_secs(min(), i64::MIN), min());
        assert_eq!(add(DateTime::<Utc>::MAX_UTC, Duration::MAX), max());
        let t = parse("2027-01-01T00:00:00Z").expect("valid");
        assert_eq!(
            add_days(t, 90),
            parse("2027-04-01T00:00:00Z").expect("valid")
        );
        // What is written reads back.
        let json = serde_json::to_string(&max()).expect("json");
        assert!(parse(json.trim_matches('"')).is_ok(), "{json}");
    }

    #[derive(serde::Deserialize)]
    struct Body {
        #[serde(with = "strict")]
        at: DateTime<Utc>,
        #[serde(default, with = "strict_option")]
        until: Option<DateTime<Utc>>,
    }

    #[test]
    fn serde_uses_the_strict_reading() {
        let ok: Body = serde_json::from_str(r#"{"at":"2027-01-01T00:00:00Z"}"#).expect("valid");
        assert_eq!(ok.at, parse("2027-01-01T00:00:00Z").expect("valid"));
        assert!(ok.until.is_none());
        let ok: Body =
            serde_json::from_str(r#"{"at":"2027-01-01T00:00:00Z","until":null}"#).expect("valid");
        assert!(ok.until.is_none());
        assert!(serde_json::from_str::<Body>(r#"{"at":"+262142-12-01T00:00:00Z"}"#).is_err());
        assert!(serde_json::from_str::<Body>(
            r#"{"at":"2027-01-01T00:00:00Z","until":"+10000-01-01T00:00:00Z"}"#
        )
        .is_err());
    }
}
