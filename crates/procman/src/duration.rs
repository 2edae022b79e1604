//! `DUR` arguments: a humantime duration (`500ms`, `30s`, `2m`) or `never`.

use std::time::Duration;

/// Parses a timeout: humantime (`500ms`, `30s`, `2m`) or `never` (`None`).
pub fn parse_timeout(text: &str) -> Result<Option<Duration>, String> {
    if text.eq_ignore_ascii_case("never") {
        return Ok(None);
    }
    humantime::parse_duration(text)
        .map(Some)
        .map_err(|e| format!("invalid duration {text:?}: {e} (use e.g. 500ms, 30s, 2m, or never)"))
}

/// Formats a timeout the way it is written on the command line.
pub fn format_timeout(timeout: Option<Duration>) -> String {
    timeout.map_or("never".into(), |d| {
        humantime::format_duration(d).to_string()
    })
}

/// A duration for people: `1.5s`, `2m 3s`, `250ms`.
pub fn human(duration: Duration) -> String {
    if duration < Duration::from_secs(60) {
        let millis = duration.as_millis();
        if millis < 1000 {
            format!("{millis}ms")
        } else if millis % 1000 == 0 {
            format!("{}s", millis / 1000)
        } else {
            format!("{:.1}s", duration.as_secs_f64())
        }
    } else {
        humantime::format_duration(Duration::from_secs(duration.as_secs())).to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeouts_and_human_durations() {
        assert_eq!(parse_timeout("never"), Ok(None));
        assert_eq!(parse_timeout("30s"), Ok(Some(Duration::from_secs(30))));
        assert!(parse_timeout("soon").unwrap_err().contains("never"));
        assert_eq!(format_timeout(Some(Duration::from_millis(500))), "500ms");
        assert_eq!(human(Duration::from_millis(250)), "250ms");
        assert_eq!(human(Duration::from_millis(33_400)), "33.4s");
        assert_eq!(human(Duration::from_secs(5)), "5s");
        assert_eq!(human(Duration::from_secs(123)), "2m 3s");
    }
}
