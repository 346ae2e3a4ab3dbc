//! RFC 3339 timestamps as the API prints them: UTC, second precision, `Z`.

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// Milliseconds since the Unix epoch, the unit the engine keeps times in.
pub type UnixMillis = i64;

/// Formats milliseconds since the epoch as `2024-01-19T10:00:00Z`.
pub fn format_rfc3339(ms: UnixMillis) -> String {
    let secs = ms.div_euclid(1000);
    let dt = OffsetDateTime::from_unix_timestamp(secs).unwrap_or(OffsetDateTime::UNIX_EPOCH);
    dt.format(&Rfc3339)
        .unwrap_or_else(|_| "1970-01-01T00:00:00Z".to_owned())
}

/// Formats with millisecond precision (`2024-01-19T10:00:00.123Z`), for file times.
pub fn format_rfc3339_millis(ms: UnixMillis) -> String {
    let nanos = i128::from(ms) * 1_000_000;
    let dt = OffsetDateTime::from_unix_timestamp_nanos(nanos).unwrap_or(OffsetDateTime::UNIX_EPOCH);
    dt.format(&Rfc3339)
        .unwrap_or_else(|_| "1970-01-01T00:00:00Z".to_owned())
}

/// Parses an RFC 3339 timestamp into milliseconds since the epoch.
pub fn parse_rfc3339(s: &str) -> Option<UnixMillis> {
    let dt = OffsetDateTime::parse(s, &Rfc3339).ok()?;
    i64::try_from(dt.unix_timestamp_nanos() / 1_000_000).ok()
}

/// The current time in milliseconds since the epoch.
pub fn now_millis() -> UnixMillis {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(now.as_millis()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_like_the_seed() {
        // 2024-01-19T10:00:00Z
        assert_eq!(format_rfc3339(1_705_658_400_000), "2024-01-19T10:00:00Z");
        assert_eq!(format_rfc3339(1_705_658_400_999), "2024-01-19T10:00:00Z");
        assert_eq!(
            format_rfc3339_millis(1_705_658_400_123),
            "2024-01-19T10:00:00.123Z"
        );
    }

    #[test]
    fn parses_back() {
        assert_eq!(
            parse_rfc3339("2024-01-19T10:00:00Z"),
            Some(1_705_658_400_000)
        );
        assert_eq!(parse_rfc3339("not a time"), None);
    }
}
