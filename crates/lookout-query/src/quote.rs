//! Names and strings as SQL text, for every statement Lookout builds.

/// An identifier as SQL text: double-quoted, with inner quotes doubled.
/// Every identifier Lookout pastes into SQL it builds goes through here.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// A string as an SQL literal: single-quoted, with inner quotes doubled.
/// Every string Lookout pastes into SQL it builds goes through here.
pub fn quote_literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_are_doubled() {
        assert_eq!(quote_ident(r#"q"t"#), r#""q""t""#);
        assert_eq!(quote_literal("it's"), "'it''s'");
    }
}
