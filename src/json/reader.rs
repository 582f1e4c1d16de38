//! A small pull reader over JSON text that is already known to be valid (the text of a
//! [`RawJson`](super::RawJson), which `serde_json` checked when it captured it).
//!
//! It exists for one purpose: reading the few typed fields of a GWS notification on the per-event
//! path without `serde`'s per-token machinery, which costs about twice as much for a 600-byte
//! payload. Because the text is valid, the reader only tokenizes; it does not validate. Every
//! method returns `None` when the next token is not what the caller asked for (a string where an
//! object was expected, ...), and the caller then falls back to the general decoder. On text that
//! is not valid JSON the reader may give up or give wrong answers, but it never panics and never
//! reads out of bounds.
//!
//! Strings without escapes are borrowed from the text; strings with escapes, and every number and
//! nested value turned into a [`Value`], are handed to `serde_json`, so their meaning is exactly
//! `serde_json`'s.

use std::borrow::Cow;

use serde_json::Value;

/// The position of the first `"` or `\\` at or after `from`, eight bytes at a time (the strings
/// of a notification are too short for `memchr`'s setup to pay off).
#[inline]
fn next_quote_or_backslash(bytes: &[u8], from: usize) -> Option<usize> {
    const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
    const HIGHS: u64 = u64::from_ne_bytes([0x80; 8]);
    const QUOTES: u64 = u64::from_ne_bytes([b'"'; 8]);
    const BACKSLASHES: u64 = u64::from_ne_bytes([b'\\'; 8]);
    /// High bit set in each byte of `x` that is zero (exact for the lowest such byte, which is
    /// the only one used).
    fn zero_bytes(x: u64) -> u64 {
        x.wrapping_sub(ONES) & !x & HIGHS
    }
    let mut at = from;
    while let Some(chunk) = bytes.get(at..at + 8) {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        let word = u64::from_le_bytes(word);
        let hits = zero_bytes(word ^ QUOTES) | zero_bytes(word ^ BACKSLASHES);
        if hits != 0 {
            return Some(at + (hits.trailing_zeros() / 8) as usize);
        }
        at += 8;
    }
    let rest = bytes.get(at..)?;
    rest.iter()
        .position(|&b| b == b'"' || b == b'\\')
        .map(|i| at + i)
}

/// Deepest nesting [`Reader::skip`] goes through; the reader is used at most a few levels
/// down, so with this the whole text stays within serde_json's recursion limit of 128.
const MAX_SKIP_DEPTH: usize = 100;

/// Whether every `\u` escape in `string` (a JSON string with its quotes) is a character: a
/// high surrogate must be followed by a low one, and a low one must follow a high one.
fn escapes_are_valid(string: &[u8]) -> bool {
    fn hex4(bytes: &[u8], at: usize) -> Option<u16> {
        let digits = std::str::from_utf8(bytes.get(at..at + 4)?).ok()?;
        u16::from_str_radix(digits, 16).ok()
    }
    let mut at = 0;
    while let Some(offset) = string
        .get(at..)
        .and_then(|rest| memchr::memchr(b'\\', rest))
    {
        at += offset;
        if string.get(at + 1) != Some(&b'u') {
            at += 2;
            continue;
        }
        let Some(unit) = hex4(string, at + 2) else {
            return false;
        };
        at += 6;
        match unit {
            0xD800..=0xDBFF => {
                let low = (string.get(at..at + 2) == Some(b"\\u"))
                    .then(|| hex4(string, at + 2))
                    .flatten();
                if !matches!(low, Some(0xDC00..=0xDFFF)) {
                    return false;
                }
                at += 6;
            }
            0xDC00..=0xDFFF => return false,
            _ => {}
        }
    }
    true
}

/// A cursor over valid JSON text.
pub(crate) struct Reader<'a> {
    text: &'a str,
    pos: usize,
}

impl<'a> Reader<'a> {
    /// A reader at the start of `text`.
    pub(crate) fn new(text: &'a str) -> Self {
        Reader { text, pos: 0 }
    }

    /// The next byte that is not whitespace, without consuming it.
    #[inline]
    fn peek(&mut self) -> Option<u8> {
        let bytes = self.text.as_bytes();
        while let Some(&b) = bytes.get(self.pos) {
            if !matches!(b, b' ' | b'\t' | b'\n' | b'\r') {
                return Some(b);
            }
            self.pos += 1;
        }
        None
    }

    /// Consumes `byte` if it is the next token.
    #[inline]
    fn eat(&mut self, byte: u8) -> Option<()> {
        (self.peek()? == byte).then(|| self.pos += 1)
    }

    /// Whether only whitespace is left.
    pub(crate) fn at_end(&mut self) -> bool {
        self.peek().is_none()
    }

    /// Consumes a `null` if it is next; `false` (and nothing consumed) otherwise.
    #[inline]
    pub(crate) fn null(&mut self) -> bool {
        if self.peek() == Some(b'n') && self.text.as_bytes()[self.pos..].starts_with(b"null") {
            self.pos += 4;
            true
        } else {
            false
        }
    }

    /// The span of the string starting at the cursor (quotes included), and whether it has
    /// escapes; the cursor moves past it.
    #[inline]
    fn string_span(&mut self) -> Option<(usize, usize, bool)> {
        if self.peek()? != b'"' {
            return None;
        }
        let bytes = self.text.as_bytes();
        let start = self.pos;
        let mut at = start + 1;
        let mut escaped = false;
        loop {
            at = next_quote_or_backslash(bytes, at)?;
            if bytes[at] == b'"' {
                self.pos = at + 1;
                return Some((start, self.pos, escaped));
            }
            // A backslash: the character after it is part of the escape (for `\uXXXX` the hex
            // digits that follow cannot be quotes or backslashes).
            escaped = true;
            at += 2;
        }
    }

    /// The string at the cursor: borrowed when it has no escapes, decoded by `serde_json`
    /// otherwise. `None` if the next token is not a string (or its escapes are invalid).
    #[inline]
    pub(crate) fn string(&mut self) -> Option<Cow<'a, str>> {
        let (start, end, escaped) = self.string_span()?;
        if escaped {
            serde_json::from_str::<String>(self.text.get(start..end)?)
                .ok()
                .map(Cow::Owned)
        } else {
            self.text.get(start + 1..end - 1).map(Cow::Borrowed)
        }
    }

    /// A string or `null` (as `None`); `None` at the outer level for any other token.
    #[inline]
    pub(crate) fn opt_string(&mut self) -> Option<Option<Cow<'a, str>>> {
        if self.null() {
            Some(None)
        } else {
            self.string().map(Some)
        }
    }

    /// Skips the value at the cursor and returns its text. `None` (give up) when it holds
    /// something a [`Value`] cannot: a number out of the `f64` range, a lone surrogate escape,
    /// or nesting deeper than [`MAX_SKIP_DEPTH`] (serde_json's limit is 128 in all), so that
    /// the general decoder reports it exactly as it would for a field that is read.
    pub(crate) fn skip(&mut self) -> Option<&'a str> {
        let first = self.peek()?;
        let start = self.pos;
        let bytes = self.text.as_bytes();
        match first {
            b'"' => {
                self.checked_string_span()?;
            }
            b'{' | b'[' => {
                let mut depth = 0usize;
                loop {
                    match *bytes.get(self.pos)? {
                        b'"' => {
                            self.checked_string_span()?;
                            continue;
                        }
                        b'-' | b'0'..=b'9' => {
                            self.checked_number()?;
                            continue;
                        }
                        b'{' | b'[' => {
                            depth += 1;
                            if depth > MAX_SKIP_DEPTH {
                                return None;
                            }
                        }
                        b'}' | b']' => {
                            depth -= 1;
                            if depth == 0 {
                                self.pos += 1;
                                break;
                            }
                        }
                        _ => {}
                    }
                    self.pos += 1;
                }
            }
            b'-' | b'0'..=b'9' => self.checked_number()?,
            _ => self.literal(),
        }
        self.text.get(start..self.pos)
    }

    /// Moves past a literal or number: up to the next delimiter.
    #[inline]
    fn literal(&mut self) {
        let bytes = self.text.as_bytes();
        while let Some(&b) = bytes.get(self.pos) {
            if matches!(b, b',' | b'}' | b']' | b' ' | b'\t' | b'\n' | b'\r') {
                break;
            }
            self.pos += 1;
        }
    }

    /// Moves past the number at the cursor; `None` when it is out of the `f64` range.
    #[inline]
    fn checked_number(&mut self) -> Option<()> {
        let start = self.pos;
        self.literal();
        let text = self.text.get(start..self.pos)?;
        // Without an exponent, only a number of more than 309 digits can overflow.
        let may_overflow = text.len() > 300 || text.bytes().any(|b| b == b'e' || b == b'E');
        if may_overflow && !text.parse::<f64>().is_ok_and(f64::is_finite) {
            return None;
        }
        Some(())
    }

    /// [`Self::string_span`], `None` when an escape is a lone surrogate (or not one
    /// `serde_json` reads).
    #[inline]
    fn checked_string_span(&mut self) -> Option<()> {
        let (start, end, escaped) = self.string_span()?;
        if escaped && !escapes_are_valid(self.text.as_bytes().get(start..end)?) {
            return None;
        }
        Some(())
    }

    /// The value at the cursor as a [`Value`] (strings, `null` and booleans directly; numbers,
    /// arrays and objects through `serde_json`).
    pub(crate) fn value(&mut self) -> Option<Value> {
        match self.peek()? {
            b'"' => self.string().map(|s| Value::String(s.into_owned())),
            b'n' if self.null() => Some(Value::Null),
            _ => {
                let text = self.skip()?;
                match text {
                    "true" => Some(Value::Bool(true)),
                    "false" => Some(Value::Bool(false)),
                    _ => {
                        // A plain non-negative integer that fits is a u64 to serde_json too;
                        // every other number goes through serde_json.
                        if text.bytes().all(|b| b.is_ascii_digit()) {
                            if let Ok(n) = text.parse::<u64>() {
                                return Some(Value::from(n));
                            }
                        }
                        serde_json::from_str(text).ok()
                    }
                }
            }
        }
    }

    /// An integer that fits in an `i64`, read as `serde_json` would (so `-0`, which it reads as a
    /// float, is not one). `None` for anything else.
    pub(crate) fn integer(&mut self) -> Option<i64> {
        if !matches!(self.peek()?, b'-' | b'0'..=b'9') {
            return None;
        }
        let text = self.skip()?;
        if text == "-0" {
            return None;
        }
        text.parse().ok()
    }

    /// Reads an object, calling `field` with each key; `field` must consume exactly the value.
    /// `None` if the next token is not an object or `field` returns `None`.
    pub(crate) fn object(
        &mut self,
        mut field: impl FnMut(&mut Self, Cow<'a, str>) -> Option<()>,
    ) -> Option<()> {
        self.eat(b'{')?;
        if self.eat(b'}').is_some() {
            return Some(());
        }
        loop {
            let key = self.string()?;
            self.eat(b':')?;
            field(self, key)?;
            match self.peek()? {
                b',' => self.pos += 1,
                b'}' => {
                    self.pos += 1;
                    return Some(());
                }
                _ => return None,
            }
        }
    }

    /// Reads an array, calling `item` for each element; `item` must consume exactly the element.
    /// `None` if the next token is not an array or `item` returns `None`.
    pub(crate) fn array(&mut self, mut item: impl FnMut(&mut Self) -> Option<()>) -> Option<()> {
        self.eat(b'[')?;
        if self.eat(b']').is_some() {
            return Some(());
        }
        loop {
            item(self)?;
            match self.peek()? {
                b',' => self.pos += 1,
                b']' => {
                    self.pos += 1;
                    return Some(());
                }
                _ => return None,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn reads_objects_arrays_strings_and_values() {
        let text = r#" { "a" : "plain", "b\u0021" : "esc\"aped\u00e9\/", "n" : null,
            "arr" : [ 1 , -2.5e3 , true , false , null , "s" , { "x" : [ ] } ],
            "o" : { "k" : { "deep" : [ "]" , "}" , "\\" ] } }, "i": -17, "z": -0 } "#;
        let mut r = Reader::new(text);
        let mut seen = Vec::new();
        r.object(|r, key| {
            match key.as_ref() {
                "a" => assert!(matches!(r.string()?, Cow::Borrowed("plain"))),
                "b!" => assert_eq!(r.string()?, "esc\"apedé/"),
                "n" => assert_eq!(r.opt_string()?, None),
                "arr" => {
                    let mut items = Vec::new();
                    r.array(|r| {
                        items.push(r.value()?);
                        Some(())
                    })?;
                    assert_eq!(
                        Value::Array(items),
                        json!([1, -2.5e3, true, false, null, "s", {"x": []}])
                    );
                }
                "o" => assert_eq!(r.skip()?, r#"{ "k" : { "deep" : [ "]" , "}" , "\\" ] } }"#),
                "i" => assert_eq!(r.integer(), Some(-17)),
                "z" => assert_eq!(r.integer(), None, "-0 is a float to serde_json"),
                other => panic!("unexpected key {other}"),
            }
            seen.push(key.into_owned());
            Some(())
        })
        .expect("an object");
        assert!(r.at_end());
        assert_eq!(seen, ["a", "b!", "n", "arr", "o", "i", "z"]);
    }

    #[test]
    fn finds_quotes_and_backslashes_at_every_offset() {
        for len in 0..40 {
            for target in 0..len {
                for byte in [b'"', b'\\'] {
                    let mut text = vec![b'a'; len];
                    text[target] = byte;
                    if target + 1 < len {
                        text[target + 1] = b'"';
                    }
                    for from in 0..=target {
                        assert_eq!(next_quote_or_backslash(&text, from), Some(target));
                    }
                }
            }
            let plain = vec![0xffu8; len];
            assert_eq!(next_quote_or_backslash(&plain, 0), None);
        }
    }

    #[test]
    fn numbers_are_read_as_serde_json_reads_them() {
        for text in [
            "0",
            "7",
            "123456789",
            "18446744073709551615",
            "18446744073709551616",
            "-0",
            "-1",
            "-9223372036854775808",
            "-9223372036854775809",
            "1.5",
            "1e2",
            "1E-2",
            "-0.0",
        ] {
            let expected: Value = serde_json::from_str(text).expect("a number");
            assert_eq!(Reader::new(text).value(), Some(expected.clone()), "{text}");
            let in_array = format!("[{text}]");
            let mut items = Vec::new();
            Reader::new(&in_array)
                .array(|r| r.value().map(|v| items.push(v)))
                .expect("an array");
            assert_eq!(items, [expected], "{text}");
        }
    }

    #[test]
    fn wrong_tokens_give_none() {
        assert_eq!(Reader::new("[1]").object(|_, _| Some(())), None);
        assert_eq!(Reader::new(r#"{"a":1}"#).array(|_| Some(())), None);
        assert_eq!(Reader::new("5").string(), None);
        assert_eq!(Reader::new("5").opt_string(), None);
        assert_eq!(Reader::new(r#""5""#).integer(), None);
        assert_eq!(Reader::new("1.5").integer(), None);
        assert_eq!(Reader::new("1e2").integer(), None);
        assert_eq!(Reader::new("9223372036854775808").integer(), None);
        assert_eq!(
            Reader::new("-9223372036854775808").integer(),
            Some(i64::MIN)
        );
        assert_eq!(
            Reader::new(r#""\ud800""#).string(),
            None,
            "a lone surrogate"
        );
        assert_eq!(Reader::new(r#"{"a":1}"#).object(|_, _| None), None);
    }

    /// G2 (issue 16): what a `Value` cannot hold is refused in skipped values too, so the
    /// general decoder reports it; everything else is still skipped.
    #[test]
    fn skip_gives_up_exactly_on_what_serde_json_refuses() {
        let deep = format!("{}{}", "[".repeat(101), "]".repeat(101));
        for text in [
            "1e400",
            "-1e400",
            r#""\ud800""#,
            r#""\udc00""#,
            r#""a\ud800b""#,
            r#""\ud800\u0041""#,
            r#"{"a":[1,{"b":1e400}]}"#,
            r#"{"\ud800":1}"#,
            r#"[true,"\udfff"]"#,
            &format!("1{}", "0".repeat(400)),
        ] {
            assert_eq!(Reader::new(text).skip(), None, "{text}");
            assert!(
                serde_json::from_str::<Value>(&format!("[[[{text}]]]")).is_err(),
                "{text}"
            );
        }
        // Too deep to skip, and serde_json refuses it once nested where notifications are read.
        assert_eq!(Reader::new(&deep).skip(), None);
        assert!(serde_json::from_str::<Value>(&format!(
            "{}{deep}{}",
            "[".repeat(28),
            "]".repeat(28)
        ))
        .is_err());
        let shallow = format!("{}{}", "[".repeat(100), "]".repeat(100));
        for text in [
            "1e300",
            "-1e-400",
            "0.1",
            "1111111111111111111111",
            r#""\ud83d\ude00""#,
            r#""\\ud800""#,
            r#""\u00e9\n\"""#,
            r#"{"a":[1,{"b":-2.5e10,"c":"\ud83d\ude00"}],"d":null}"#,
            "true",
            "null",
            &shallow,
        ] {
            assert_eq!(Reader::new(text).skip(), Some(text), "{text}");
            assert!(serde_json::from_str::<Value>(text).is_ok(), "{text}");
        }
    }

    #[test]
    fn never_panics_on_invalid_text() {
        for text in [
            "",
            "{",
            "[",
            "\"",
            "\"\\",
            "{\"a\"",
            "{\"a\":",
            "{\"a\":1",
            "[1,",
            "]",
            "}",
            "nul",
            "{\"a\" 1}",
            "[1 2]",
            "{]",
            "[}",
            "\"\\u12",
        ] {
            let mut r = Reader::new(text);
            let _ = r.object(|r, _| r.value().map(drop));
            let _ = Reader::new(text).array(|r| r.skip().map(drop));
            let _ = Reader::new(text).value();
            let _ = Reader::new(text).skip();
            let _ = Reader::new(text).integer();
        }
    }
}
