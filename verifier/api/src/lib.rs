//! The contract of vouchd's HTTP APIs, shared by vouchd (which serves it and derives its
//! OpenAPI document from these types) and by the `vouch` CLI (which calls it).
//!
//! Invariant: this crate is data only — request and response types with their exact JSON
//! shapes, the signing string of host operations, and how its times read ([`utc`]). It does no I/O and knows neither axum
//! nor any HTTP client. A field's JSON name or type never changes; new fields are optional.

pub mod signing;
pub mod types;

pub use types::*;

use serde::{Deserialize, Serialize};

/// One of the API's times (Unix seconds) as people read it: `YYYY-MM-DD HH:MM:SSZ` (UTC), as
/// the `vouch` CLI and the web console show it.
pub fn utc(ts: i64) -> String {
    let days = ts.div_euclid(86_400);
    let secs = ts.rem_euclid(86_400);
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}Z",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

/// The group whose members may configure trust.
pub const TRUSTED_ADMINS: &str = "TrustedAdmins";

/// Every error answer: a stable code and a sentence for people.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ErrorBody {
    /// `unauthenticated`, `forbidden`, `bad_request`, `not_found`, `no_such_route`,
    /// `method_not_allowed`, `conflict`, `internal`, or a key provider's code.
    pub error: String,
    pub reason: String,
}

#[cfg(test)]
mod tests {
    #[test]
    fn times_read_as_utc_dates() {
        assert_eq!(super::utc(0), "1970-01-01 00:00:00Z");
        assert_eq!(super::utc(951_782_400), "2000-02-29 00:00:00Z");
        assert_eq!(super::utc(1_800_000_000), "2027-01-15 08:00:00Z");
        assert_eq!(super::utc(-1), "1969-12-31 23:59:59Z");
    }
}
