//! Durations as every berth flag and config value writes them.

use std::time::Duration;

/// The longest duration any flag accepts (a year).
pub const MAX_DURATION: Duration = Duration::from_secs(365 * 86_400);

/// Parses a duration as humantime writes it (`500ms`, `15s`, `2m`, `1h 30m`, `2days`), or a
/// bare number of seconds (`3`, `0.5`), at most [`MAX_DURATION`].
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let d = if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        let secs: f64 = s
            .parse()
            .map_err(|_| format!("invalid duration {s:?}: expected e.g. 500ms, 15s, 2m, 1h"))?;
        Duration::try_from_secs_f64(secs).map_err(|_| format!("invalid duration {s:?}"))?
    } else {
        match humantime::parse_duration(s) {
            Ok(d) => d,
            // Too large for a Duration is too large for berth.
            Err(humantime::DurationError::NumberOverflow) => MAX_DURATION + Duration::from_secs(1),
            Err(e) => {
                return Err(format!(
                    "invalid duration {s:?}: {e} (expected e.g. 500ms, 15s, 2m, 1h 30m)"
                ));
            }
        }
    };
    if d > MAX_DURATION {
        return Err(format!(
            "invalid duration {s:?}: at most {} days",
            MAX_DURATION.as_secs() / 86_400
        ));
    }
    Ok(d)
}
