//! JSON text as PostgreSQL's `json` and `jsonb` read and print it.
//!
//! A small parser of our own rather than `serde_json`: `jsonb` prints
//! numbers as PostgreSQL's `numeric` does (`1.50e1` is `15.0`), keeps the
//! last of repeated keys and orders keys by length, and `json` answers with
//! the exact text of an element; `serde_json` keeps number text only under a
//! crate-wide feature that changes every other user of it in the build.

use crate::error::SqlState;
use std::borrow::Cow;
use std::cmp::Ordering;

/// How deep arrays and objects may nest (PostgreSQL stops at its stack
/// depth limit; a bound keeps a hostile value from exhausting ours).
pub(crate) const MAX_DEPTH: usize = 1_000;

/// Largest decimal exponent a number may have, as in PostgreSQL's numeric.
const MAX_EXPONENT: i64 = 1_000;

/// Why a text is not a JSON value.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum JsonError {
    /// Not JSON (22P02).
    Syntax(String),
    /// `\u0000`, which `jsonb` cannot hold (22P05).
    NulEscape,
    /// Nested deeper than [`MAX_DEPTH`] (54001).
    TooDeep,
    /// A number outside numeric's range (22003).
    NumberRange,
}

impl JsonError {
    /// The SQLSTATE PostgreSQL gives for this error.
    pub(crate) fn sqlstate(&self) -> SqlState {
        match self {
            JsonError::Syntax(_) => SqlState::InvalidTextRepresentation,
            JsonError::NulEscape => SqlState::UntranslatableCharacter,
            JsonError::TooDeep => SqlState::StatementTooComplex,
            JsonError::NumberRange => SqlState::NumericValueOutOfRange,
        }
    }
}

impl std::fmt::Display for JsonError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            JsonError::Syntax(detail) => write!(f, "invalid input syntax for type json: {detail}"),
            JsonError::NulEscape => write!(
                f,
                "unsupported Unicode escape sequence: \\u0000 cannot be converted to text"
            ),
            JsonError::TooDeep => write!(
                f,
                "stack depth limit exceeded: JSON nested deeper than {MAX_DEPTH} levels"
            ),
            JsonError::NumberRange => write!(f, "value overflows numeric format"),
        }
    }
}

/// One JSON value.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Value<'a> {
    Null,
    Bool(bool),
    /// A number as written (valid JSON number syntax).
    Number(&'a str),
    /// A string, unescaped.
    String(Cow<'a, str>),
    Array(Vec<Node<'a>>),
    /// Members in written order, repeated keys included.
    Object(Vec<(Cow<'a, str>, Node<'a>)>),
}

/// A value and the exact text it was parsed from.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Node<'a> {
    pub(crate) value: Value<'a>,
    pub(crate) text: &'a str,
}

impl<'a> Node<'a> {
    /// The member `key` of an object (the last one, if repeated).
    pub(crate) fn field(&self, key: &str) -> Option<&Node<'a>> {
        match &self.value {
            Value::Object(members) => members.iter().rev().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    /// Element `index` of an array; negative counts from the end.
    pub(crate) fn element(&self, index: i64) -> Option<&Node<'a>> {
        match &self.value {
            Value::Array(items) => {
                let len = i64::try_from(items.len()).ok()?;
                let at = if index < 0 { len + index } else { index };
                usize::try_from(at).ok().and_then(|i| items.get(i))
            }
            _ => None,
        }
    }

    /// Follows a `#>` path: keys into objects, integers into arrays.
    pub(crate) fn path(&self, steps: &[Option<&str>]) -> Option<&Node<'a>> {
        let mut at = self;
        for step in steps {
            let step = (*step)?;
            at = match &at.value {
                Value::Object(_) => at.field(step)?,
                Value::Array(_) => at.element(step.trim().parse().ok()?)?,
                _ => return None,
            };
        }
        Some(at)
    }

    /// `jsonb_typeof`.
    pub(crate) fn type_name(&self) -> &'static str {
        match self.value {
            Value::Null => "null",
            Value::Bool(_) => "boolean",
            Value::Number(_) => "number",
            Value::String(_) => "string",
            Value::Array(_) => "array",
            Value::Object(_) => "object",
        }
    }

    /// The text `->>` answers: a string unescaped, null as SQL NULL, any
    /// other value as JSON text (`canonical` for jsonb).
    pub(crate) fn as_text(&self, canonical: bool) -> Option<String> {
        match &self.value {
            Value::Null => None,
            Value::String(s) => Some(s.to_string()),
            _ => Some(self.to_text(canonical)),
        }
    }

    /// The value as `jsonb` prints it (`canonical`) or its own text.
    pub(crate) fn to_text(&self, canonical: bool) -> String {
        if canonical {
            let mut out = String::with_capacity(self.text.len());
            write_jsonb(self, &mut out);
            out
        } else {
            self.text.to_string()
        }
    }
}

/// Parses one JSON value (surrounding whitespace allowed). `jsonb` refuses
/// `\u0000`, which `json` keeps as text.
pub(crate) fn parse(text: &str, jsonb: bool) -> Result<Node<'_>, JsonError> {
    let mut parser = Parser { text, at: 0, jsonb };
    parser.skip_space();
    let node = parser.value(0)?;
    parser.skip_space();
    if parser.at < text.len() {
        return Err(parser.unexpected());
    }
    Ok(node)
}

/// `text` as `jsonb` prints it.
pub(crate) fn normalize(text: &str) -> Result<String, JsonError> {
    Ok(parse(text, true)?.to_text(true))
}

struct Parser<'a> {
    text: &'a str,
    at: usize,
    jsonb: bool,
}

impl<'a> Parser<'a> {
    fn peek(&self) -> Option<u8> {
        self.text.as_bytes().get(self.at).copied()
    }

    fn skip_space(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.at += 1;
        }
    }

    fn unexpected(&self) -> JsonError {
        match self.text[self.at..].chars().next() {
            None => JsonError::Syntax("the input string ended unexpectedly".into()),
            Some(c) => {
                JsonError::Syntax(format!("token \"{c}\" is invalid at position {}", self.at))
            }
        }
    }

    fn expect(&mut self, byte: u8) -> Result<(), JsonError> {
        if self.peek() == Some(byte) {
            self.at += 1;
            Ok(())
        } else {
            Err(self.unexpected())
        }
    }

    fn value(&mut self, depth: usize) -> Result<Node<'a>, JsonError> {
        if depth > MAX_DEPTH {
            return Err(JsonError::TooDeep);
        }
        let start = self.at;
        let value = match self.peek() {
            Some(b'{') => self.object(depth)?,
            Some(b'[') => self.array(depth)?,
            Some(b'"') => Value::String(self.string()?),
            Some(b'-' | b'0'..=b'9') => Value::Number(self.number()?),
            Some(b't') => self.word("true", Value::Bool(true))?,
            Some(b'f') => self.word("false", Value::Bool(false))?,
            Some(b'n') => self.word("null", Value::Null)?,
            _ => return Err(self.unexpected()),
        };
        Ok(Node {
            value,
            text: &self.text[start..self.at],
        })
    }

    fn word(&mut self, word: &str, value: Value<'a>) -> Result<Value<'a>, JsonError> {
        if self.text[self.at..].starts_with(word) {
            self.at += word.len();
            if !matches!(
                self.peek(),
                Some(b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'_')
            ) {
                return Ok(value);
            }
        }
        Err(self.unexpected())
    }

    fn array(&mut self, depth: usize) -> Result<Value<'a>, JsonError> {
        self.at += 1;
        let mut items = Vec::new();
        self.skip_space();
        if self.peek() == Some(b']') {
            self.at += 1;
            return Ok(Value::Array(items));
        }
        loop {
            self.skip_space();
            items.push(self.value(depth + 1)?);
            self.skip_space();
            match self.peek() {
                Some(b',') => self.at += 1,
                Some(b']') => {
                    self.at += 1;
                    return Ok(Value::Array(items));
                }
                _ => return Err(self.unexpected()),
            }
        }
    }

    fn object(&mut self, depth: usize) -> Result<Value<'a>, JsonError> {
        self.at += 1;
        let mut members = Vec::new();
        self.skip_space();
        if self.peek() == Some(b'}') {
            self.at += 1;
            return Ok(Value::Object(members));
        }
        loop {
            self.skip_space();
            if self.peek() != Some(b'"') {
                return Err(self.unexpected());
            }
            let key = self.string()?;
            self.skip_space();
            self.expect(b':')?;
            self.skip_space();
            let value = self.value(depth + 1)?;
            members.push((key, value));
            self.skip_space();
            match self.peek() {
                Some(b',') => self.at += 1,
                Some(b'}') => {
                    self.at += 1;
                    return Ok(Value::Object(members));
                }
                _ => return Err(self.unexpected()),
            }
        }
    }

    fn number(&mut self) -> Result<&'a str, JsonError> {
        let start = self.at;
        let bytes = self.text.as_bytes();
        let digits = |at: &mut usize| {
            let from = *at;
            while bytes.get(*at).is_some_and(u8::is_ascii_digit) {
                *at += 1;
            }
            *at - from
        };
        let mut at = self.at;
        if bytes.get(at) == Some(&b'-') {
            at += 1;
        }
        let whole = digits(&mut at);
        if whole == 0 || (whole > 1 && bytes[at - whole] == b'0') {
            self.at = at;
            return Err(JsonError::Syntax(format!(
                "token \"{}\" is invalid",
                &self.text[start..at.max(start + 1).min(self.text.len())]
            )));
        }
        if bytes.get(at) == Some(&b'.') {
            at += 1;
            if digits(&mut at) == 0 {
                self.at = at;
                return Err(self.unexpected());
            }
        }
        if matches!(bytes.get(at), Some(b'e' | b'E')) {
            at += 1;
            if matches!(bytes.get(at), Some(b'+' | b'-')) {
                at += 1;
            }
            if digits(&mut at) == 0 {
                self.at = at;
                return Err(self.unexpected());
            }
        }
        if bytes
            .get(at)
            .is_some_and(|b| b.is_ascii_alphanumeric() || *b == b'_' || *b == b'.')
        {
            self.at = at;
            return Err(self.unexpected());
        }
        self.at = at;
        let text = &self.text[start..at];
        decimal_parts(text)?;
        Ok(text)
    }

    fn string(&mut self) -> Result<Cow<'a, str>, JsonError> {
        self.at += 1;
        let start = self.at;
        let bytes = self.text.as_bytes();
        // Fast path: no escapes.
        while let Some(&b) = bytes.get(self.at) {
            match b {
                b'"' => {
                    let s = &self.text[start..self.at];
                    self.at += 1;
                    return Ok(Cow::Borrowed(s));
                }
                b'\\' => break,
                0..=0x1f => {
                    return Err(JsonError::Syntax(format!(
                        "character with value 0x{b:02x} must be escaped"
                    )));
                }
                _ => self.at += 1,
            }
        }
        let mut out = String::from(&self.text[start..self.at]);
        loop {
            let Some(c) = self.text[self.at..].chars().next() else {
                return Err(JsonError::Syntax(
                    "the input string ended unexpectedly".into(),
                ));
            };
            self.at += c.len_utf8();
            match c {
                '"' => return Ok(Cow::Owned(out)),
                '\\' => {
                    let Some(e) = self.peek() else {
                        return Err(JsonError::Syntax(
                            "the input string ended unexpectedly".into(),
                        ));
                    };
                    self.at += 1;
                    match e {
                        b'"' => out.push('"'),
                        b'\\' => out.push('\\'),
                        b'/' => out.push('/'),
                        b'b' => out.push('\u{8}'),
                        b'f' => out.push('\u{c}'),
                        b'n' => out.push('\n'),
                        b'r' => out.push('\r'),
                        b't' => out.push('\t'),
                        b'u' => out.push(self.unicode_escape()?),
                        _ => {
                            return Err(JsonError::Syntax(format!(
                                "escape sequence \"\\{}\" is invalid",
                                e as char
                            )));
                        }
                    }
                }
                c if (c as u32) < 0x20 => {
                    return Err(JsonError::Syntax(format!(
                        "character with value 0x{:02x} must be escaped",
                        c as u32
                    )));
                }
                c => out.push(c),
            }
        }
    }

    fn hex4(&mut self) -> Result<u32, JsonError> {
        let digits = self
            .text
            .get(self.at..self.at + 4)
            .filter(|d| d.bytes().all(|b| b.is_ascii_hexdigit()));
        let Some(digits) = digits else {
            return Err(JsonError::Syntax(
                "\"\\u\" must be followed by four hexadecimal digits".into(),
            ));
        };
        self.at += 4;
        u32::from_str_radix(digits, 16).map_err(|e| JsonError::Syntax(e.to_string()))
    }

    fn unicode_escape(&mut self) -> Result<char, JsonError> {
        let first = self.hex4()?;
        let code = match first {
            0xD800..=0xDBFF => {
                if !self.text[self.at..].starts_with("\\u") {
                    return Err(JsonError::Syntax(
                        "Unicode low surrogate must follow a high surrogate".into(),
                    ));
                }
                self.at += 2;
                let low = self.hex4()?;
                if !(0xDC00..=0xDFFF).contains(&low) {
                    return Err(JsonError::Syntax(
                        "Unicode low surrogate must follow a high surrogate".into(),
                    ));
                }
                0x10000 + ((first - 0xD800) << 10) + (low - 0xDC00)
            }
            0xDC00..=0xDFFF => {
                return Err(JsonError::Syntax(
                    "Unicode low surrogate must follow a high surrogate".into(),
                ));
            }
            0 if self.jsonb => return Err(JsonError::NulEscape),
            code => code,
        };
        char::from_u32(code)
            .ok_or_else(|| JsonError::Syntax(format!("invalid Unicode code point {code:x}")))
    }
}

/// A JSON number's sign, digits (without the point) and the position of
/// the decimal point within them, plus the scale numeric prints it with.
struct Decimal {
    negative: bool,
    digits: String,
    point: i64,
    scale: i64,
}

fn decimal_parts(text: &str) -> Result<Decimal, JsonError> {
    let (negative, rest) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let (mantissa, exponent) = match rest.find(['e', 'E']) {
        Some(i) => (&rest[..i], &rest[i + 1..]),
        None => (rest, ""),
    };
    let exponent: i64 = if exponent.is_empty() {
        0
    } else {
        exponent
            .trim_start_matches('+')
            .parse()
            .map_err(|_| JsonError::NumberRange)?
    };
    if !(-MAX_EXPONENT..=MAX_EXPONENT).contains(&exponent) {
        return Err(JsonError::NumberRange);
    }
    let (whole, fraction) = match mantissa.split_once('.') {
        Some((w, f)) => (w, f),
        None => (mantissa, ""),
    };
    let digits = format!("{whole}{fraction}");
    let fraction_len = i64::try_from(fraction.len()).map_err(|_| JsonError::NumberRange)?;
    let whole_len = i64::try_from(whole.len()).map_err(|_| JsonError::NumberRange)?;
    Ok(Decimal {
        negative,
        digits,
        point: whole_len + exponent,
        scale: (fraction_len - exponent).max(0),
    })
}

/// A JSON number as PostgreSQL's numeric prints it: `1e2` is `100`,
/// `1.50e1` is `15.0`, `-0` is `0`.
pub(crate) fn numeric_text(text: &str) -> String {
    let Ok(d) = decimal_parts(text) else {
        return text.to_string();
    };
    let len = d.digits.len() as i64;
    let (whole, fraction): (String, String) = if d.point <= 0 {
        (
            "0".into(),
            "0".repeat(d.point.unsigned_abs() as usize) + &d.digits,
        )
    } else if d.point >= len {
        (
            d.digits.clone() + &"0".repeat((d.point - len) as usize),
            String::new(),
        )
    } else {
        let (w, f) = d.digits.split_at(d.point as usize);
        (w.to_string(), f.to_string())
    };
    let whole = whole.trim_start_matches('0');
    let whole = if whole.is_empty() { "0" } else { whole };
    let mut fraction = fraction;
    fraction.truncate(d.scale as usize);
    while (fraction.len() as i64) < d.scale {
        fraction.push('0');
    }
    let zero = whole == "0" && fraction.bytes().all(|b| b == b'0');
    let mut out = String::new();
    if d.negative && !zero {
        out.push('-');
    }
    out.push_str(whole);
    if !fraction.is_empty() {
        out.push('.');
        out.push_str(&fraction);
    }
    out
}

/// Orders two JSON numbers by value.
fn compare_numbers(a: &str, b: &str) -> Ordering {
    // Both as (sign, whole digits, fraction digits without trailing zeros).
    fn key(text: &str) -> (bool, String, String) {
        let t = numeric_text(text);
        let (negative, t) = match t.strip_prefix('-') {
            Some(rest) => (true, rest.to_string()),
            None => (false, t),
        };
        let (w, f) = t
            .split_once('.')
            .map_or((t.clone(), String::new()), |(w, f)| {
                (w.to_string(), f.to_string())
            });
        (negative, w, f.trim_end_matches('0').to_string())
    }
    let (an, aw, af) = key(a);
    let (bn, bw, bf) = key(b);
    let magnitude = aw
        .len()
        .cmp(&bw.len())
        .then_with(|| aw.cmp(&bw))
        .then_with(|| af.cmp(&bf));
    match (an, bn) {
        (false, false) => magnitude,
        (true, true) => magnitude.reverse(),
        (true, false) => Ordering::Less,
        (false, true) => Ordering::Greater,
    }
}

/// Appends `s` as a JSON string, escaped as PostgreSQL escapes it.
pub(crate) fn write_string(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
}

/// The members of an object as `jsonb` keeps them: the last of repeated
/// keys, shorter keys first, then by bytes.
pub(crate) fn jsonb_members<'n, 'a>(
    members: &'n [(Cow<'a, str>, Node<'a>)],
) -> Vec<(&'n str, &'n Node<'a>)> {
    // Sort, then keep the last of each run of equal keys: jsonb keeps the
    // last value of a repeated key. A stable sort keeps input order inside a
    // run, and the whole is O(n log n) however many keys repeat.
    let mut sorted: Vec<(&str, &Node<'a>)> = members
        .iter()
        .map(|(key, value)| (key.as_ref(), value))
        .collect();
    sorted.sort_by(|(a, _), (b, _)| {
        a.len()
            .cmp(&b.len())
            .then_with(|| a.as_bytes().cmp(b.as_bytes()))
    });
    let mut kept: Vec<(&str, &Node<'a>)> = Vec::with_capacity(sorted.len());
    for (key, value) in sorted {
        match kept.last_mut() {
            Some(last) if last.0 == key => last.1 = value,
            _ => kept.push((key, value)),
        }
    }
    kept
}

/// Appends `node` as `jsonb` prints it.
pub(crate) fn write_jsonb(node: &Node<'_>, out: &mut String) {
    match &node.value {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => out.push_str(&numeric_text(n)),
        Value::String(s) => write_string(s, out),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write_jsonb(item, out);
            }
            out.push(']');
        }
        Value::Object(members) => {
            out.push('{');
            for (i, (key, value)) in jsonb_members(members).into_iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write_string(key, out);
                out.push_str(": ");
                write_jsonb(value, out);
            }
            out.push('}');
        }
    }
}

fn scalars_equal(a: &Value<'_>, b: &Value<'_>) -> bool {
    match (a, b) {
        (Value::Null, Value::Null) => true,
        (Value::Bool(x), Value::Bool(y)) => x == y,
        (Value::Number(x), Value::Number(y)) => compare_numbers(x, y) == Ordering::Equal,
        (Value::String(x), Value::String(y)) => x == y,
        _ => false,
    }
}

fn is_container(v: &Value<'_>) -> bool {
    matches!(v, Value::Array(_) | Value::Object(_))
}

/// `a = b` as jsonb defines equality: the same keys with equal values
/// (repeated keys as jsonb keeps them), arrays equal item by item, numbers
/// equal as numerics (`1.0` equals `1`).
pub(crate) fn equal(a: &Node<'_>, b: &Node<'_>) -> bool {
    match (&a.value, &b.value) {
        (Value::Object(x), Value::Object(y)) => {
            let (x, y) = (jsonb_members(x), jsonb_members(y));
            x.len() == y.len()
                && x.iter()
                    .zip(&y)
                    .all(|((kx, vx), (ky, vy))| kx == ky && equal(vx, vy))
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(i, j)| equal(i, j))
        }
        (x, y) => !is_container(x) && !is_container(y) && scalars_equal(x, y),
    }
}

/// `a @> b`, as jsonb defines containment: objects contain their members'
/// values, arrays contain elements in any order, and at the top level an
/// array contains a scalar it holds.
pub(crate) fn contains(a: &Node<'_>, b: &Node<'_>) -> bool {
    if let (Value::Array(items), false) = (&a.value, is_container(&b.value)) {
        return items
            .iter()
            .any(|item| scalars_equal(&item.value, &b.value));
    }
    deep_contains(a, b)
}

fn deep_contains(a: &Node<'_>, b: &Node<'_>) -> bool {
    match (&a.value, &b.value) {
        (Value::Object(_), Value::Object(wanted)) => {
            jsonb_members(wanted).into_iter().all(|(key, want)| {
                a.field(key).is_some_and(|have| {
                    if is_container(&want.value) {
                        deep_contains(have, want)
                    } else {
                        scalars_equal(&have.value, &want.value)
                    }
                })
            })
        }
        (Value::Array(have), Value::Array(wanted)) => wanted.iter().all(|want| {
            have.iter().any(|item| {
                if is_container(&want.value) {
                    std::mem::discriminant(&item.value) == std::mem::discriminant(&want.value)
                        && deep_contains(item, want)
                } else {
                    scalars_equal(&item.value, &want.value)
                }
            })
        }),
        (x, y) if !is_container(x) && !is_container(y) => scalars_equal(x, y),
        _ => false,
    }
}

/// `j ? key`: a top-level key of an object, a string element of an array,
/// or the string itself.
pub(crate) fn has_key(j: &Node<'_>, key: &str) -> bool {
    match &j.value {
        Value::Object(_) => j.field(key).is_some(),
        Value::Array(items) => items
            .iter()
            .any(|i| matches!(&i.value, Value::String(s) if s == key)),
        Value::String(s) => s == key,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jsonb_prints_as_postgres_does() {
        for (input, printed) in [
            (
                r#"{"b":1,"a":2,"aa":[1,2 ,{"z":null}]}"#,
                r#"{"a": 2, "b": 1, "aa": [1, 2, {"z": null}]}"#,
            ),
            (r#"{"a":1,"a":2}"#, r#"{"a": 2}"#),
            ("1.50e1", "15.0"),
            ("1e2", "100"),
            ("1E-2", "0.01"),
            ("-0", "0"),
            ("-0.0", "0.0"),
            ("0.10", "0.10"),
            ("12e-1", "1.2"),
            ("-1.5E+3", "-1500"),
            (r#""a\u0041\n\/""#, r#""aA\n/""#),
            (r#""\ud83d\ude00""#, "\"\u{1F600}\""),
            (" [ ] ", "[]"),
            ("{}", "{}"),
            ("true", "true"),
        ] {
            assert_eq!(normalize(input).as_deref(), Ok(printed), "{input}");
        }
    }

    #[test]
    fn repeated_keys_keep_their_last_value_in_a_large_object() {
        // 100,000 keys, each written twice with the later value winning:
        // a quadratic de-duplication would not finish in a test's time.
        let n = 50_000;
        let mut text = String::from("{");
        for round in 0..2 {
            for k in 0..n {
                if round + k > 0 {
                    text.push(',');
                }
                text.push_str(&format!(r#""k{k}":{}"#, k * 10 + round));
            }
        }
        text.push('}');
        let normalized = normalize(&text).expect("valid");
        let reparsed = parse(&normalized, true).expect("valid");
        let Value::Object(members) = &reparsed.value else {
            panic!("an object")
        };
        assert_eq!(members.len(), n);
        assert!(
            normalized.starts_with(r#"{"k0": 1, "k1": 11,"#),
            "{}",
            &normalized[..40]
        );
        assert!(normalized.contains(r#""k49999": 499991}"#));
    }

    #[test]
    fn equality_is_jsonb_equality() {
        let eq = |a: &str, b: &str| equal(&parse(a, true).expect(a), &parse(b, true).expect(b));
        assert!(eq(
            r#"{"a": 1.0, "b": [1, 2]}"#,
            r#"{"b": [1, 2.00], "a": 1}"#
        ));
        assert!(eq(r#"{"a": 1, "a": 2}"#, r#"{"a": 2}"#));
        assert!(eq("1e2", "100"));
        assert!(!eq("[1, 2]", "[2, 1]"));
        assert!(!eq(r#"{"a": 1}"#, r#"{"a": 1, "b": null}"#));
        assert!(!eq("[1]", "1"));
        assert!(!eq(r#""1""#, "1"));
        assert!(!eq("null", "false"));
    }

    #[test]
    fn malformed_text_is_refused_with_postgres_codes() {
        for bad in [
            "",
            "{",
            "[1,]",
            "01",
            "1.",
            "-",
            "tru",
            "nulls",
            "{\"a\" 1}",
            "'a'",
            "\"a\tb\"",
            "[1] 2",
            "1e",
            "\"\\x\"",
            "\"\\ud800\"",
        ] {
            let e = normalize(bad).expect_err(bad);
            assert_eq!(e.sqlstate().code(), "22P02", "{bad}: {e}");
        }
        assert_eq!(
            normalize(r#""\u0000""#).map_err(|e| e.sqlstate().code()),
            Err("22P05")
        );
        assert!(parse(r#""\u0000""#, false).is_ok(), "json keeps \\u0000");
        assert_eq!(
            normalize("1e1001").map_err(|e| e.sqlstate().code()),
            Err("22003")
        );
        let deep = "[".repeat(MAX_DEPTH + 2) + &"]".repeat(MAX_DEPTH + 2);
        assert_eq!(
            normalize(&deep).map_err(|e| e.sqlstate().code()),
            Err("54001")
        );
    }

    #[test]
    fn random_and_mutated_text_never_panics_and_normalizes_stably() {
        // A fuzzer in miniature for a parser that takes client input: valid
        // values built at random, then cut and mutated byte by byte. Every
        // input must parse or fail with a code, and a normalized value must
        // read back as itself.
        let mut state = 0x2545_F491_4F6C_DD1Du64;
        let mut next = move |n: u64| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state % n.max(1)
        };
        fn build(depth: u32, next: &mut dyn FnMut(u64) -> u64, out: &mut String) {
            const ATOMS: &[&str] = &[
                "null",
                "true",
                "false",
                "0",
                "-0",
                "12",
                "1.50e1",
                "-3.25E-2",
                "1e3",
                "\"\"",
                "\"k\"",
                "\"\\u00e9\\n\"",
                "\"\\ud83d\\ude00\"",
                "\"é\"",
            ];
            match if depth > 4 { 0 } else { next(3) } {
                0 => out.push_str(ATOMS[next(ATOMS.len() as u64) as usize]),
                1 => {
                    out.push('[');
                    for i in 0..next(4) {
                        if i > 0 {
                            out.push_str(if next(2) == 0 { "," } else { " , " });
                        }
                        build(depth + 1, next, out);
                    }
                    out.push(']');
                }
                _ => {
                    out.push('{');
                    for i in 0..next(4) {
                        if i > 0 {
                            out.push(',');
                        }
                        out.push_str(["\"a\"", "\"bb\"", "\"a\"", "\"é\""][next(4) as usize]);
                        out.push(':');
                        build(depth + 1, next, out);
                    }
                    out.push('}');
                }
            }
        }
        for _ in 0..20_000 {
            let mut text = String::new();
            build(0, &mut next, &mut text);
            let canonical = normalize(&text).unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!(
                normalize(&canonical).as_deref(),
                Ok(canonical.as_str()),
                "{text}"
            );
            let a = parse(&text, true).expect("parse");
            let b = parse(&canonical, true).expect("parse");
            assert!(contains(&a, &b) && contains(&b, &a), "{text}");
            let mut bytes = text.into_bytes();
            for _ in 0..1 + next(3) {
                if bytes.is_empty() {
                    break;
                }
                let at = next(bytes.len() as u64) as usize;
                match next(3) {
                    0 => bytes.truncate(at),
                    1 => {
                        const BYTES: &[u8] = b"{}[],:\"\\e.-0 \x01\xc3";
                        bytes[at] = BYTES[next(BYTES.len() as u64) as usize];
                    }
                    _ => {
                        bytes.remove(at);
                    }
                }
            }
            let mutated = String::from_utf8_lossy(&bytes);
            if let Ok(canonical) = normalize(&mutated) {
                assert_eq!(
                    normalize(&canonical).as_deref(),
                    Ok(canonical.as_str()),
                    "{mutated}"
                );
            }
            let _ = parse(&mutated, false);
        }
    }

    #[test]
    fn lookups_containment_and_keys() {
        let j = parse(
            r#"{"a": {"b": [10, 20, {"c": "x"}]}, "n": 1.0, "a2": null}"#,
            false,
        )
        .expect("parse");
        assert_eq!(
            j.field("a").map(|n| n.text),
            Some(r#"{"b": [10, 20, {"c": "x"}]}"#)
        );
        assert_eq!(
            j.path(&[Some("a"), Some("b"), Some("-1"), Some("c")])
                .and_then(|n| n.as_text(false)),
            Some("x".into())
        );
        assert_eq!(
            j.path(&[Some("a"), Some("b"), Some("1")]).map(|n| n.text),
            Some("20")
        );
        assert!(j.path(&[Some("a"), Some("zz")]).is_none());
        assert_eq!(j.field("a2").and_then(|n| n.as_text(false)), None);
        let c = |a: &str, b: &str| contains(&parse(a, true).expect(a), &parse(b, true).expect(b));
        assert!(c(r#"{"a": 1, "b": [1, 2, 3]}"#, r#"{"b": [3, 1]}"#));
        assert!(c(r#"{"n": 1.0}"#, r#"{"n": 1}"#));
        assert!(!c(r#"{"a": 1}"#, r#"{"a": 1, "b": 2}"#));
        assert!(c("[1, 2]", "1"));
        assert!(!c(r#"{"a": [1, 2]}"#, r#"{"a": 1}"#));
        assert!(c(r#"[[1, 2], 3]"#, "[[2]]"));
        assert!(!c("[1]", "[[1]]"));
        assert!(c(r#""a""#, r#""a""#));
        assert!(has_key(&parse(r#"["a", 1]"#, true).expect("p"), "a"));
        assert!(!has_key(
            &parse(r#"{"x": {"a": 1}}"#, true).expect("p"),
            "a"
        ));
    }
}
