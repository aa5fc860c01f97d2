//! Durations as every berth flag and config value writes them.

use std::time::Duration;

/// The longest duration any flag accepts (a year).
pub const MAX_DURATION: Duration = Duration::from_secs(365 * 86_400);

/// Parses `500ms`, `15s`, `2m`, `1h` (or a bare number of seconds), at most [`MAX_DURATION`].
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = match s.find(|c: char| !c.is_ascii_digit() && c != '.') {
        Some(i) => (&s[..i], &s[i..]),
        None => (s, "s"),
    };
    let n: f64 = num
        .parse()
        .map_err(|_| format!("invalid duration {s:?}: expected e.g. 500ms, 15s, 2m, 1h"))?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => {
            return Err(format!(
                "invalid duration {s:?}: unit must be ms, s, m or h"
            ));
        }
    };
    if !secs.is_finite() || secs < 0.0 {
        return Err(format!("invalid duration {s:?}"));
    }
    if secs > MAX_DURATION.as_secs_f64() {
        return Err(format!(
            "invalid duration {s:?}: at most {} days",
            MAX_DURATION.as_secs() / 86_400
        ));
    }
    Duration::try_from_secs_f64(secs).map_err(|_| format!("invalid duration {s:?}"))
}
