//! A small JSON reader for training events: standard JSON plus the non-finite numbers Python's
//! `json.dumps` writes (`NaN`, `Infinity`, `-Infinity`), with a nesting limit so no input can
//! exhaust the stack. serde_json rejects those tokens, and FL apps do send them (a diverging loss).

use std::borrow::Cow;
use std::fmt;

/// Deepest nesting accepted; events are flat, so this is generous.
const MAX_DEPTH: usize = 64;

/// A parsed JSON value. Numbers are `f64`: event counters stay far below 2^53. Strings without
/// escapes borrow from the input, so keys cost no allocation.
#[derive(Debug, Clone, PartialEq)]
pub enum Value<'a> {
    /// `null`.
    Null,
    /// `true` or `false`.
    Bool(bool),
    /// Any number, including `NaN` and the infinities.
    Number(f64),
    /// A string.
    String(Cow<'a, str>),
    /// An array.
    Array(Vec<Value<'a>>),
    /// An object; keys keep their order, a repeated key keeps its last value on lookup.
    Object(Vec<(Cow<'a, str>, Value<'a>)>),
}

impl<'a> Value<'a> {
    /// The value of `key` in an object (the last one when repeated), `None` otherwise.
    pub fn get(&self, key: &str) -> Option<&Value<'a>> {
        match self {
            Value::Object(fields) => fields.iter().rev().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    /// A short name of the value's JSON type, for error messages.
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::Null => "null",
            Value::Bool(_) => "a boolean",
            Value::Number(_) => "a number",
            Value::String(_) => "a string",
            Value::Array(_) => "an array",
            Value::Object(_) => "an object",
        }
    }

    /// The value as `serde_json` would carry it in an error report; non-finite numbers become the
    /// strings Python writes for them, since JSON has no literal for them.
    pub fn to_report(&self) -> serde_json::Value {
        match self {
            Value::Null => serde_json::Value::Null,
            Value::Bool(b) => serde_json::Value::Bool(*b),
            Value::Number(n) => number_to_report(*n),
            Value::String(s) => serde_json::Value::String(truncate(s, 200)),
            Value::Array(items) => serde_json::Value::String(format!("<array of {}>", items.len())),
            Value::Object(fields) => {
                serde_json::Value::String(format!("<object of {} fields>", fields.len()))
            }
        }
    }
}

/// A number as JSON: finite numbers as numbers (whole ones as integers, so a posted `-1` is
/// echoed `-1`, not `-1.0`), the others as `"NaN"`, `"Infinity"`, `"-Infinity"`.
pub fn number_to_report(n: f64) -> serde_json::Value {
    // Exactly representable integers only: beyond 2^53 the f64 is no longer the posted digits.
    const EXACT: f64 = 9_007_199_254_740_992.0;
    if n.fract() == 0.0 && n.abs() <= EXACT {
        serde_json::Value::Number(serde_json::Number::from(n as i64))
    } else if n.is_finite() {
        serde_json::Number::from_f64(n).map_or(serde_json::Value::Null, serde_json::Value::Number)
    } else {
        serde_json::Value::String(non_finite_name(n).to_owned())
    }
}

/// Python's spelling of a non-finite number.
pub fn non_finite_name(n: f64) -> &'static str {
    if n.is_nan() {
        "NaN"
    } else if n > 0.0 {
        "Infinity"
    } else {
        "-Infinity"
    }
}

fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

/// Why a document is not JSON, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyntaxError {
    /// Byte offset in the input.
    pub offset: usize,
    /// What was expected there.
    pub expected: &'static str,
}

impl fmt::Display for SyntaxError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid JSON at byte {}: expected {}",
            self.offset, self.expected
        )
    }
}

impl std::error::Error for SyntaxError {}

/// A cursor over the input bytes.
pub struct Reader<'a> {
    input: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    /// A reader at the start of `input`.
    pub fn new(input: &'a [u8]) -> Self {
        Reader { input, pos: 0 }
    }

    /// The current byte offset.
    pub fn offset(&self) -> usize {
        self.pos
    }

    /// Moves to `offset` (clamped to the input's end).
    pub fn seek(&mut self, offset: usize) {
        self.pos = offset.min(self.input.len());
    }

    /// Skips whitespace; true when the input is exhausted.
    pub fn at_end(&mut self) -> bool {
        self.skip_ws();
        self.pos >= self.input.len()
    }

    /// The next non-whitespace byte, without consuming it.
    pub fn peek_non_ws(&mut self) -> Option<u8> {
        self.skip_ws();
        self.input.get(self.pos).copied()
    }

    /// Consumes `byte` if it is next (after whitespace).
    pub fn eat(&mut self, byte: u8) -> bool {
        if self.peek_non_ws() == Some(byte) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn skip_ws(&mut self) {
        while let Some(b) = self.input.get(self.pos) {
            if matches!(b, b' ' | b'\t' | b'\n' | b'\r') {
                self.pos += 1;
            } else {
                break;
            }
        }
    }

    fn err(&self, expected: &'static str) -> SyntaxError {
        SyntaxError {
            offset: self.pos,
            expected,
        }
    }

    /// Parses one value at the cursor.
    pub fn value(&mut self) -> Result<Value<'a>, SyntaxError> {
        self.value_at(0)
    }

    fn value_at(&mut self, depth: usize) -> Result<Value<'a>, SyntaxError> {
        if depth > MAX_DEPTH {
            return Err(self.err("less deeply nested JSON"));
        }
        match self.peek_non_ws() {
            None => Err(self.err("a JSON value")),
            Some(b'{') => self.object(depth),
            Some(b'[') => self.array(depth),
            Some(b'"') => self.string().map(Value::String),
            Some(b't') => self.literal(b"true", Value::Bool(true)),
            Some(b'f') => self.literal(b"false", Value::Bool(false)),
            Some(b'n') => self.literal(b"null", Value::Null),
            Some(b'N') => self.literal(b"NaN", Value::Number(f64::NAN)),
            Some(b'I') => self.literal(b"Infinity", Value::Number(f64::INFINITY)),
            Some(b'-') if self.input[self.pos..].starts_with(b"-Infinity") => {
                self.literal(b"-Infinity", Value::Number(f64::NEG_INFINITY))
            }
            Some(b'-' | b'0'..=b'9') => self.number(),
            Some(_) => Err(self.err("a JSON value")),
        }
    }

    fn literal(&mut self, word: &'static [u8], value: Value<'a>) -> Result<Value<'a>, SyntaxError> {
        if self.input[self.pos..].starts_with(word) {
            self.pos += word.len();
            Ok(value)
        } else {
            Err(self.err("a JSON value"))
        }
    }

    fn object(&mut self, depth: usize) -> Result<Value<'a>, SyntaxError> {
        self.pos += 1; // '{'
        let mut fields = Vec::new();
        if self.eat(b'}') {
            return Ok(Value::Object(fields));
        }
        loop {
            if self.peek_non_ws() != Some(b'"') {
                return Err(self.err("a string key"));
            }
            let key = self.string()?;
            if !self.eat(b':') {
                return Err(self.err("':'"));
            }
            let value = self.value_at(depth + 1)?;
            fields.push((key, value));
            if self.eat(b',') {
                continue;
            }
            if self.eat(b'}') {
                return Ok(Value::Object(fields));
            }
            return Err(self.err("',' or '}'"));
        }
    }

    fn array(&mut self, depth: usize) -> Result<Value<'a>, SyntaxError> {
        self.pos += 1; // '['
        let mut items = Vec::new();
        if self.eat(b']') {
            return Ok(Value::Array(items));
        }
        loop {
            items.push(self.value_at(depth + 1)?);
            if self.eat(b',') {
                continue;
            }
            if self.eat(b']') {
                return Ok(Value::Array(items));
            }
            return Err(self.err("',' or ']'"));
        }
    }

    fn string(&mut self) -> Result<Cow<'a, str>, SyntaxError> {
        self.pos += 1; // opening quote
        let input: &'a [u8] = self.input;
        let start = self.pos;
        while let Some(&b) = input.get(self.pos) {
            if b == b'"' || b == b'\\' || b < 0x20 {
                break;
            }
            self.pos += 1;
        }
        if input.get(self.pos) == Some(&b'"') {
            // No escapes: borrow.
            let text = std::str::from_utf8(&input[start..self.pos]).map_err(|_| self.err("UTF-8 text"))?;
            self.pos += 1;
            return Ok(Cow::Borrowed(text));
        }
        let mut out = input[start..self.pos].to_vec();
        loop {
            let run = self.pos;
            while let Some(&b) = input.get(self.pos) {
                if b == b'"' || b == b'\\' || b < 0x20 {
                    break;
                }
                self.pos += 1;
            }
            out.extend_from_slice(&input[run..self.pos]);
            match input.get(self.pos) {
                None => return Err(self.err("a closing '\"'")),
                Some(b'"') => {
                    self.pos += 1;
                    return String::from_utf8(out)
                        .map(Cow::Owned)
                        .map_err(|_| self.err("UTF-8 text"));
                }
                Some(b'\\') => {
                    self.pos += 1;
                    self.escape(&mut out)?;
                }
                Some(_) => return Err(self.err("no control characters in strings")),
            }
        }
    }

    fn escape(&mut self, out: &mut Vec<u8>) -> Result<(), SyntaxError> {
        let Some(&b) = self.input.get(self.pos) else {
            return Err(self.err("an escape sequence"));
        };
        self.pos += 1;
        let simple = match b {
            b'"' => Some(b'"'),
            b'\\' => Some(b'\\'),
            b'/' => Some(b'/'),
            b'b' => Some(0x08),
            b'f' => Some(0x0c),
            b'n' => Some(b'\n'),
            b'r' => Some(b'\r'),
            b't' => Some(b'\t'),
            _ => None,
        };
        if let Some(c) = simple {
            out.push(c);
            return Ok(());
        }
        if b != b'u' {
            return Err(self.err("a valid escape sequence"));
        }
        let first = self.hex4()?;
        let code = if (0xD800..0xDC00).contains(&first) {
            // A high surrogate must be followed by `\uDC00`–`\uDFFF`.
            if self.input.get(self.pos..self.pos + 2) != Some(b"\\u") {
                return Err(self.err("a low surrogate escape"));
            }
            self.pos += 2;
            let second = self.hex4()?;
            if !(0xDC00..0xE000).contains(&second) {
                return Err(self.err("a low surrogate escape"));
            }
            0x10000 + ((first - 0xD800) << 10) + (second - 0xDC00)
        } else {
            first
        };
        let c = char::from_u32(code).ok_or_else(|| self.err("a valid Unicode code point"))?;
        let mut buf = [0u8; 4];
        out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
        Ok(())
    }

    fn hex4(&mut self) -> Result<u32, SyntaxError> {
        let digits = self
            .input
            .get(self.pos..self.pos + 4)
            .ok_or_else(|| self.err("4 hex digits"))?;
        let mut v = 0u32;
        for &d in digits {
            let n = (d as char).to_digit(16).ok_or_else(|| self.err("4 hex digits"))?;
            v = v * 16 + n;
        }
        self.pos += 4;
        Ok(v)
    }

    fn number(&mut self) -> Result<Value<'a>, SyntaxError> {
        let start = self.pos;
        if self.input.get(self.pos) == Some(&b'-') {
            self.pos += 1;
        }
        match self.input.get(self.pos) {
            Some(b'0') => {
                self.pos += 1;
                if matches!(self.input.get(self.pos), Some(b'0'..=b'9')) {
                    return Err(self.err("no leading zeros in numbers"));
                }
            }
            Some(b'1'..=b'9') => self.digits(),
            _ => return Err(self.err("a digit")),
        }
        if self.input.get(self.pos) == Some(&b'.') {
            self.pos += 1;
            if !matches!(self.input.get(self.pos), Some(b'0'..=b'9')) {
                return Err(self.err("a digit after '.'"));
            }
            self.digits();
        }
        if matches!(self.input.get(self.pos), Some(b'e' | b'E')) {
            self.pos += 1;
            if matches!(self.input.get(self.pos), Some(b'+' | b'-')) {
                self.pos += 1;
            }
            if !matches!(self.input.get(self.pos), Some(b'0'..=b'9')) {
                return Err(self.err("a digit in the exponent"));
            }
            self.digits();
        }
        // The bytes are ASCII digits, signs, '.', 'e' by construction.
        let text = std::str::from_utf8(&self.input[start..self.pos]).map_err(|_| self.err("a number"))?;
        text.parse::<f64>()
            .map(Value::Number)
            .map_err(|_| self.err("a number"))
    }

    fn digits(&mut self) {
        while matches!(self.input.get(self.pos), Some(b'0'..=b'9')) {
            self.pos += 1;
        }
    }
}

/// Parses a whole document holding exactly one value.
///
/// # Errors
/// A [`SyntaxError`] when the input is not one JSON value (trailing data included).
pub fn parse(input: &[u8]) -> Result<Value<'_>, SyntaxError> {
    let mut reader = Reader::new(input);
    let value = reader.value()?;
    if !reader.at_end() {
        return Err(reader.err("the end of the document"));
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn python_non_finite_numbers_are_accepted() {
        let v = parse(br#"{"a": NaN, "b": Infinity, "c": -Infinity, "d": -1.5e3}"#).unwrap();
        assert!(matches!(v.get("a"), Some(Value::Number(n)) if n.is_nan()));
        assert_eq!(v.get("b"), Some(&Value::Number(f64::INFINITY)));
        assert_eq!(v.get("c"), Some(&Value::Number(f64::NEG_INFINITY)));
        assert_eq!(v.get("d"), Some(&Value::Number(-1500.0)));
    }

    #[test]
    fn strings_with_escapes_and_surrogates_decode() {
        let v = parse(br#""a\"b\\c\u00e9\ud83d\ude00""#).unwrap();
        assert_eq!(v, Value::String("a\"b\\c\u{e9}\u{1F600}".into()));
        assert!(matches!(
            parse(br#""plain""#).unwrap(),
            Value::String(Cow::Borrowed("plain"))
        ));
    }

    #[test]
    fn leading_zeros_and_trailing_garbage_are_rejected() {
        assert!(parse(b"036038359").is_err());
        assert!(parse(b"{} x").is_err());
        assert!(parse(b"[1,]").is_err());
        assert!(parse(b"\"unterminated").is_err());
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_stack_overflow() {
        let deep = "[".repeat(100_000);
        assert!(parse(deep.as_bytes()).is_err());
    }

    #[test]
    fn repeated_keys_keep_the_last_value() {
        let v = parse(br#"{"a":1,"a":2}"#).unwrap();
        assert_eq!(v.get("a"), Some(&Value::Number(2.0)));
    }
}
