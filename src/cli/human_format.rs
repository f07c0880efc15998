//! Values written for people: sizes in decimal units the way crictl prints
//! them ("7.2MB"), image ids cut to 13 hex characters, and timestamps in
//! RFC 3339 UTC. Pure functions, so the exact text is pinned by unit tests.

/// Decimal units, as crictl (docker/go-units `HumanSizeWithPrecision`) uses.
/// `u64::MAX` is 18.4 EB, so the list never runs out.
const SIZE_UNITS: [&str; 7] = ["B", "kB", "MB", "GB", "TB", "PB", "EB"];
const SIZE_UNIT_BASE: f64 = 1000.0;
/// crictl, docker and podman all show this many hex characters of an id.
pub const TRUNCATED_ID_CHARS: usize = 13;

/// `bytes` with three significant digits and a decimal unit: `999B`,
/// `1.23kB`, `7.2MB`, `12.3GB`.
///
/// One deliberate difference from go-units: a value that rounds up to 1000 of
/// a unit is shown as 1 of the next unit (`999_999` is `1MB`, not `1e+03kB`).
pub fn human_size(bytes: u64) -> String {
    // Exact up to 2^53 bytes (8 PiB); above that the third digit is still right.
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= SIZE_UNIT_BASE && unit < SIZE_UNITS.len() - 1 {
        value /= SIZE_UNIT_BASE;
        unit += 1;
    }
    let mut text = three_significant_digits(value);
    if text == "1000" && unit < SIZE_UNITS.len() - 1 {
        unit += 1;
        text = "1".to_owned();
    }
    format!("{text}{}", SIZE_UNITS[unit])
}

/// The first 13 hex characters of an id or digest, without its algorithm
/// prefix: `sha256:3f57d9401f8d…` becomes `3f57d9401f8d4`.
pub fn truncated_id(id: &str) -> &str {
    let hex = id.split_once(':').map_or(id, |(_algorithm, hex)| hex);
    match hex.char_indices().nth(TRUNCATED_ID_CHARS) {
        Some((cut, _)) => &hex[..cut],
        None => hex,
    }
}

/// Unix nanoseconds as `2024-03-01T12:34:56Z` (whole seconds, UTC).
pub fn rfc3339_utc(unix_nanoseconds: i64) -> String {
    const SECONDS_PER_DAY: i64 = 86_400;
    let seconds = unix_nanoseconds.div_euclid(1_000_000_000);
    let days = seconds.div_euclid(SECONDS_PER_DAY);
    let second_of_day = seconds.rem_euclid(SECONDS_PER_DAY);
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        second_of_day / 3600,
        second_of_day % 3600 / 60,
        second_of_day % 60
    )
}

/// `value` (below 1000) like C's `%.3g` for the range sizes use: at most
/// three significant digits, no trailing zeros, no exponent.
fn three_significant_digits(value: f64) -> String {
    let decimals = if value >= 100.0 {
        0
    } else if value >= 10.0 {
        1
    } else {
        2
    };
    let text = format!("{value:.decimals$}");
    if text.contains('.') {
        text.trim_end_matches('0').trim_end_matches('.').to_owned()
    } else {
        text
    }
}

/// Days since 1970-01-01 to a proleptic Gregorian (year, month, day), by
/// Howard Hinnant's `civil_from_days`.
fn civil_from_days(days_since_epoch: i64) -> (i64, u32, u32) {
    let shifted = days_since_epoch + 719_468;
    let era = shifted.div_euclid(146_097);
    let day_of_era = shifted.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = (day_of_year - (153 * month_index + 2) / 5 + 1) as u32;
    let month = if month_index < 10 {
        month_index + 3
    } else {
        month_index - 9
    } as u32;
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_have_three_significant_digits_and_decimal_units() {
        let cases = [
            (0, "0B"),
            (1, "1B"),
            (999, "999B"),
            (1000, "1kB"),
            (1234, "1.23kB"),
            (10_240, "10.2kB"),
            (99_950, "100kB"),
            (999_499, "999kB"),
            (999_999, "1MB"),
            (1_460_000, "1.46MB"),
            (7_200_000, "7.2MB"),
            (12_345_678_901, "12.3GB"),
            (5_000_000_000_000, "5TB"),
            (u64::MAX, "18.4EB"),
        ];
        for (bytes, expected) in cases {
            assert_eq!(human_size(bytes), expected, "{bytes} bytes");
        }
    }

    #[test]
    fn ids_lose_their_algorithm_and_keep_13_hex_characters() {
        let id = "sha256:3f57d9401f8d42f986df300f0c69192fc41da28ccc8d797829467780db3dd741";
        assert_eq!(truncated_id(id), "3f57d9401f8d4");
        assert_eq!(truncated_id(&id["sha256:".len()..]), "3f57d9401f8d4");
        assert_eq!(truncated_id("sha256:abc"), "abc");
        assert_eq!(truncated_id(""), "");
    }

    #[test]
    fn timestamps_are_rfc3339_utc_seconds() {
        let cases = [
            (0, "1970-01-01T00:00:00Z"),
            (1_999_999_999, "1970-01-01T00:00:01Z"),
            (951_782_400_000_000_000, "2000-02-29T00:00:00Z"),
            (1_709_296_496_123_456_789, "2024-03-01T12:34:56Z"),
            (4_107_542_399_000_000_000, "2100-02-28T23:59:59Z"),
            (-1, "1969-12-31T23:59:59Z"),
        ];
        for (nanoseconds, expected) in cases {
            assert_eq!(rfc3339_utc(nanoseconds), expected, "{nanoseconds}");
        }
    }
}
