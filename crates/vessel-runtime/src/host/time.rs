//! RFC 3339 timestamps in UTC without a calendar dependency.
//!
//! runc records `created` with Go's `time.Now().UTC()` and marshals it as RFC 3339 with
//! nanoseconds, trailing zeros trimmed (`2024-05-01T10:00:00.1234Z`); logrus's JSON formatter
//! uses whole seconds. Both shapes are produced here.

use std::time::{SystemTime, UNIX_EPOCH};

/// Splits days since 1970-01-01 into (year, month 1-12, day 1-31), proleptic Gregorian
/// (Howard Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

fn format(t: SystemTime, with_nanos: bool) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs() as i64;
    let (year, month, day) = civil_from_days(secs.div_euclid(86_400));
    let rem = secs.rem_euclid(86_400);
    let mut out = format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    );
    let nanos = d.subsec_nanos();
    if with_nanos && nanos != 0 {
        let frac = format!("{nanos:09}");
        out.push('.');
        out.push_str(frac.trim_end_matches('0'));
    }
    out.push('Z');
    out
}

/// `t` as RFC 3339 in UTC with up to nine fractional digits, trailing zeros trimmed (Go's
/// `time.RFC3339Nano`, the form runc's `state` prints for `created`).
pub fn rfc3339_nanos(t: SystemTime) -> String {
    format(t, true)
}

/// `t` as RFC 3339 in UTC with whole seconds (the `time` of a logrus JSON log line).
pub fn rfc3339_secs(t: SystemTime) -> String {
    format(t, false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn formats_known_instants() {
        let at = |s: u64, n: u32| UNIX_EPOCH + Duration::new(s, n);
        assert_eq!(rfc3339_nanos(at(0, 0)), "1970-01-01T00:00:00Z");
        // 2000-02-29 (leap day) 12:34:56.5
        assert_eq!(
            rfc3339_nanos(at(951_827_696, 500_000_000)),
            "2000-02-29T12:34:56.5Z"
        );
        assert_eq!(
            rfc3339_secs(at(951_827_696, 500_000_000)),
            "2000-02-29T12:34:56Z"
        );
        // 2024-12-31T23:59:59.000000001Z
        assert_eq!(
            rfc3339_nanos(at(1_735_689_599, 1)),
            "2024-12-31T23:59:59.000000001Z"
        );
    }
}
