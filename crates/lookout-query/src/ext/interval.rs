use crate::error::SqlState;
use crate::error::{QueryError, Result};

/// Parses a duration such as `'90 days'`, `'1 hour'`, `'1 day 12 hours'` or
/// `'15m'` into microseconds.
pub fn parse_duration(text: &str) -> Result<i64> {
    match parse_non_negative_duration(text)? {
        0 => Err(QueryError::new(
            SqlState::InvalidDatetimeFormat,
            format!("invalid interval: \"{text}\""),
        )),
        micros => Ok(micros),
    }
}

/// As [`parse_duration`], but zero (`'0'`, `'0 seconds'`) is allowed: for
/// timers such as an alert's `FOR`, where zero means "at once".
pub fn parse_non_negative_duration(text: &str) -> Result<i64> {
    let bad = || {
        QueryError::new(
            SqlState::InvalidDatetimeFormat,
            format!("invalid interval: \"{text}\""),
        )
    };
    if text.trim() == "0" {
        return Ok(0);
    }
    let lowered = text.trim().to_ascii_lowercase();
    let mut tokens: Vec<String> = Vec::new();
    for word in lowered.split_whitespace() {
        // Split "15m" into "15" "m".
        let split = word
            .find(|c: char| c.is_ascii_alphabetic())
            .filter(|i| *i > 0);
        match split {
            Some(i) => {
                tokens.push(word[..i].to_string());
                tokens.push(word[i..].to_string());
            }
            None => tokens.push(word.to_string()),
        }
    }
    if tokens.is_empty() || !tokens.len().is_multiple_of(2) {
        return Err(bad());
    }
    let mut total: i64 = 0;
    for pair in tokens.chunks(2) {
        let n: f64 = pair[0].parse().map_err(|_| bad())?;
        let unit: i64 = match pair[1].trim_end_matches(',') {
            "us" | "microsecond" | "microseconds" => 1,
            "ms" | "millisecond" | "milliseconds" => 1_000,
            "s" | "sec" | "secs" | "second" | "seconds" => 1_000_000,
            "m" | "min" | "mins" | "minute" | "minutes" => 60_000_000,
            "h" | "hr" | "hrs" | "hour" | "hours" => 3_600_000_000,
            "d" | "day" | "days" => 86_400_000_000,
            "w" | "week" | "weeks" => 7 * 86_400_000_000,
            _ => return Err(bad()),
        };
        total = total
            .checked_add((n * unit as f64) as i64)
            .ok_or_else(bad)?;
    }
    if total < 0 {
        return Err(bad());
    }
    Ok(total)
}

/// A duration as [`parse_duration`] reads it back: `'1 day 2 hours'`,
/// `'0'` for zero.
pub fn format_duration(micros: i64) -> String {
    if micros == 0 {
        return "0".into();
    }
    let units: [(&str, i64); 6] = [
        ("day", 86_400_000_000),
        ("hour", 3_600_000_000),
        ("minute", 60_000_000),
        ("second", 1_000_000),
        ("millisecond", 1_000),
        ("microsecond", 1),
    ];
    let mut rest = micros.unsigned_abs();
    let mut parts = Vec::new();
    for (name, size) in units {
        let size = size.unsigned_abs();
        let count = rest / size;
        if count > 0 {
            let plural = if count == 1 { "" } else { "s" };
            parts.push(format!("{count} {name}{plural}"));
            rest -= count * size;
        }
    }
    let sign = if micros < 0 { "-" } else { "" };
    format!("{sign}{}", parts.join(" "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formatted_durations_parse_back() {
        for micros in [0, 1, 999, 1_000, 90_061_000_001, 7 * 86_400_000_000] {
            let text = format_duration(micros);
            assert_eq!(
                parse_non_negative_duration(&text).ok(),
                Some(micros),
                "{text}"
            );
        }
        assert_eq!(format_duration(129_600_000_000), "1 day 12 hours");
    }

    #[test]
    fn parses_common_spellings() {
        assert_eq!(parse_duration("1 day").ok(), Some(86_400_000_000));
        assert_eq!(parse_duration("90 days").ok(), Some(90 * 86_400_000_000));
        assert_eq!(parse_duration("1 day 12 hours").ok(), Some(129_600_000_000));
        assert_eq!(parse_duration("15m").ok(), Some(900_000_000));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("0 days").is_err());
        assert_eq!(parse_non_negative_duration("0").ok(), Some(0));
        assert_eq!(parse_non_negative_duration("0 seconds").ok(), Some(0));
        assert!(parse_non_negative_duration("-1 seconds").is_err());
    }
}
