//! Timestamp formats the clouds insist on.
//!
//! AWS (`Expiration` in STS XML, IMDS, ECS and credential_process) and Google (`expireTime` in
//! IAM Credentials) both want `YYYY-MM-DDTHH:MM:SSZ`: google-auth parses `expireTime` with
//! `%Y-%m-%dT%H:%M:%SZ`, so fractional seconds or offsets break real clients.

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use time::macros::format_description;

/// Formats as `YYYY-MM-DDTHH:MM:SSZ` in UTC, without fractional seconds.
pub fn rfc3339_seconds(t: OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    t.format(format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second]Z"
    ))
    .unwrap_or_else(|_| t.unix_timestamp().to_string())
}

/// Parses an RFC 3339 timestamp (any offset, optional fraction).
pub fn parse_rfc3339(s: &str) -> Option<OffsetDateTime> {
    OffsetDateTime::parse(s.trim(), &Rfc3339).ok()
}

/// Formats the SigV4 `x-amz-date` form `YYYYMMDDTHHMMSSZ`.
pub fn amz_date(t: OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    t.format(format_description!(
        "[year][month][day]T[hour][minute][second]Z"
    ))
    .unwrap_or_default()
}

/// Parses the SigV4 `x-amz-date` form `YYYYMMDDTHHMMSSZ`.
pub fn parse_amz_date(s: &str) -> Option<OffsetDateTime> {
    let fmt = format_description!("[year][month][day]T[hour][minute][second]Z");
    time::PrimitiveDateTime::parse(s, fmt)
        .ok()
        .map(|p| p.assume_utc())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_without_fraction() -> Result<(), Box<dyn std::error::Error>> {
        let t =
            OffsetDateTime::from_unix_timestamp(1_597_128_922)? + time::Duration::milliseconds(450);
        assert_eq!(rfc3339_seconds(t), "2020-08-11T06:55:22Z");
        assert_eq!(amz_date(t), "20200811T065522Z");
        assert_eq!(
            parse_amz_date("20200811T065522Z").map(|t| t.unix_timestamp()),
            Some(1_597_128_922)
        );
        assert_eq!(
            parse_rfc3339("2020-08-11T06:55:22Z").map(|t| t.unix_timestamp()),
            Some(1_597_128_922)
        );
        Ok(())
    }
}
