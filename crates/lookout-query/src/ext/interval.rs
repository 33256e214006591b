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

#[cfg(test)]
mod tests {
    use super::*;

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
