//! A Python literal as `ast.literal_eval` takes it, read into JSON: the DM tools' workflow files
//! are Python dicts. Dicts, lists and tuples (as arrays), strings in either quote style (triple
//! quotes, `r` prefixes, escapes, adjacent literals joined), numbers (with `_`, `0x`, `0o`,
//! `0b`), `True`/`False`/`None`,
//! trailing commas and `#` comments.

use serde_json::{Map, Number, Value};

/// Why a text is not a Python literal: where (1-based line and column) and what.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}, column {column}: {problem}")]
pub struct LiteralError {
    /// The line of the problem.
    pub line: usize,
    /// The column (in characters).
    pub column: usize,
    /// What is wrong there.
    pub problem: String,
}

/// Read `text`, one Python literal (surrounding blanks and comments allowed).
pub fn parse(text: &str) -> Result<Value, LiteralError> {
    let mut parser = Parser {
        chars: text.chars().collect(),
        at: 0,
    };
    let value = parser.value()?;
    parser.blanks();
    if parser.at < parser.chars.len() {
        return Err(parser.error("text after the literal"));
    }
    Ok(value)
}

struct Parser {
    chars: Vec<char>,
    at: usize,
}

impl Parser {
    fn error(&self, problem: impl Into<String>) -> LiteralError {
        let before = &self.chars[..self.at.min(self.chars.len())];
        let line = before.iter().filter(|c| **c == '\n').count() + 1;
        let column = before.iter().rev().take_while(|c| **c != '\n').count() + 1;
        LiteralError {
            line,
            column,
            problem: problem.into(),
        }
    }

    fn peek(&self) -> Option<char> {
        self.chars.get(self.at).copied()
    }

    fn starts_with(&self, word: &str) -> bool {
        word.chars()
            .enumerate()
            .all(|(i, c)| self.chars.get(self.at + i) == Some(&c))
    }

    /// Skip white space (newlines included, as inside brackets) and comments.
    fn blanks(&mut self) {
        while let Some(c) = self.peek() {
            match c {
                '#' => {
                    while self.peek().is_some_and(|c| c != '\n') {
                        self.at += 1;
                    }
                }
                '\\' if self.chars.get(self.at + 1) == Some(&'\n') => self.at += 2,
                c if c.is_whitespace() => self.at += 1,
                _ => return,
            }
        }
    }

    fn value(&mut self) -> Result<Value, LiteralError> {
        self.blanks();
        match self.peek() {
            None => Err(self.error("a value is missing")),
            Some('{') => self.dict(),
            Some('[') => self.sequence('[', ']'),
            Some('(') => self.sequence('(', ')'),
            Some('\'' | '"') => self.strings(),
            Some('r' | 'R' | 'u' | 'U')
                if matches!(self.chars.get(self.at + 1), Some('\'' | '"')) =>
            {
                self.strings()
            }
            Some(c) if c.is_ascii_digit() || matches!(c, '-' | '+' | '.') => self.number(),
            Some(_) => {
                for (word, value) in [
                    ("True", Value::Bool(true)),
                    ("False", Value::Bool(false)),
                    ("None", Value::Null),
                ] {
                    let end = self.at + word.len();
                    let boundary = self
                        .chars
                        .get(end)
                        .is_none_or(|c| !(c.is_alphanumeric() || *c == '_'));
                    if self.starts_with(word) && boundary {
                        self.at = end;
                        return Ok(value);
                    }
                }
                Err(self.error(
                    "not a literal (a dict, list, tuple, string, number, True, False or None)",
                ))
            }
        }
    }

    /// Items up to `close`, separated by commas, a trailing comma allowed; `item` reads one.
    fn items(
        &mut self,
        close: char,
        mut item: impl FnMut(&mut Self) -> Result<(), LiteralError>,
    ) -> Result<(), LiteralError> {
        self.at += 1;
        loop {
            self.blanks();
            if self.peek() == Some(close) {
                self.at += 1;
                return Ok(());
            }
            item(self)?;
            self.blanks();
            match self.peek() {
                Some(',') => self.at += 1,
                Some(c) if c == close => {}
                _ => return Err(self.error(format!("expected ',' or '{close}'"))),
            }
        }
    }

    fn dict(&mut self) -> Result<Value, LiteralError> {
        let mut map = Map::new();
        self.items('}', |p| {
            let key = match p.value()? {
                Value::String(s) => s,
                Value::Number(n) => n.to_string(),
                Value::Bool(b) => if b { "True" } else { "False" }.to_owned(),
                _ => return Err(p.error("a dict key must be a string or a number")),
            };
            p.blanks();
            if p.peek() != Some(':') {
                return Err(p.error("expected ':' after the key"));
            }
            p.at += 1;
            let value = p.value()?;
            map.insert(key, value);
            Ok(())
        })?;
        Ok(Value::Object(map))
    }

    fn sequence(&mut self, _open: char, close: char) -> Result<Value, LiteralError> {
        let mut items = Vec::new();
        self.items(close, |p| {
            items.push(p.value()?);
            Ok(())
        })?;
        Ok(Value::Array(items))
    }

    /// One string literal or several adjacent ones (joined, as Python does).
    fn strings(&mut self) -> Result<Value, LiteralError> {
        let mut text = self.string()?;
        loop {
            let save = self.at;
            self.blanks();
            let next_is_string = match self.peek() {
                Some('\'' | '"') => true,
                Some('r' | 'R' | 'u' | 'U') => {
                    matches!(self.chars.get(self.at + 1), Some('\'' | '"'))
                }
                _ => false,
            };
            if !next_is_string {
                self.at = save;
                return Ok(Value::String(text));
            }
            text.push_str(&self.string()?);
        }
    }

    fn string(&mut self) -> Result<String, LiteralError> {
        let mut raw = false;
        if let Some(prefix @ ('r' | 'R' | 'u' | 'U')) = self.peek() {
            raw = matches!(prefix, 'r' | 'R');
            self.at += 1;
        }
        let quote = self.peek().unwrap_or('"');
        let triple = self.starts_with(&quote.to_string().repeat(3));
        let start = self.at;
        self.at += if triple { 3 } else { 1 };
        let mut out = String::new();
        loop {
            let Some(c) = self.peek() else {
                self.at = start;
                return Err(self.error("a string is not closed"));
            };
            if c == quote && (!triple || self.starts_with(&quote.to_string().repeat(3))) {
                self.at += if triple { 3 } else { 1 };
                return Ok(out);
            }
            if c == '\n' && !triple {
                return Err(self.error("a line ends inside a string"));
            }
            self.at += 1;
            if c != '\\' {
                out.push(c);
                continue;
            }
            let Some(next) = self.peek() else { continue };
            if raw {
                out.push('\\');
                out.push(next);
                self.at += 1;
                continue;
            }
            self.at += 1;
            match next {
                '\n' => {}
                'n' => out.push('\n'),
                't' => out.push('\t'),
                'r' => out.push('\r'),
                '0' => out.push('\0'),
                'a' => out.push('\u{7}'),
                'b' => out.push('\u{8}'),
                'f' => out.push('\u{c}'),
                'v' => out.push('\u{b}'),
                '\\' | '\'' | '"' => out.push(next),
                'x' => out.push(self.code_point(2)?),
                'u' => out.push(self.code_point(4)?),
                'U' => out.push(self.code_point(8)?),
                other => {
                    out.push('\\');
                    out.push(other);
                }
            }
        }
    }

    fn code_point(&mut self, digits: usize) -> Result<char, LiteralError> {
        let hex: String = self.chars.iter().skip(self.at).take(digits).collect();
        let c = u32::from_str_radix(&hex, 16)
            .ok()
            .filter(|_| hex.len() == digits)
            .and_then(char::from_u32)
            .ok_or_else(|| self.error(format!("bad escape of {digits} hex digits")))?;
        self.at += digits;
        Ok(c)
    }

    fn number(&mut self) -> Result<Value, LiteralError> {
        let start = self.at;
        while self
            .peek()
            .is_some_and(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '+' | '-'))
        {
            let c = self.chars[self.at];
            // A sign only starts the number or follows an exponent.
            if matches!(c, '+' | '-')
                && self.at > start
                && !matches!(self.chars[self.at - 1], 'e' | 'E')
            {
                break;
            }
            self.at += 1;
        }
        let text: String = self.chars[start..self.at]
            .iter()
            .filter(|c| **c != '_')
            .collect();
        let (sign, digits) = match text.strip_prefix('-') {
            Some(rest) => (-1, rest),
            None => (1, text.strip_prefix('+').unwrap_or(&text)),
        };
        let radix = match digits.get(..2).map(str::to_ascii_lowercase).as_deref() {
            Some("0x") => Some(16),
            Some("0o") => Some(8),
            Some("0b") => Some(2),
            _ => None,
        };
        let parsed = if let Some(radix) = radix {
            i64::from_str_radix(&digits[2..], radix)
                .ok()
                .map(|i| Number::from(sign * i))
        } else if let Ok(i) = text.parse::<i64>() {
            Some(Number::from(i))
        } else if let Ok(u) = text.parse::<u64>() {
            Some(Number::from(u))
        } else {
            text.parse::<f64>().ok().and_then(Number::from_f64)
        };
        parsed.map(Value::Number).ok_or_else(|| {
            self.at = start;
            self.error(format!("'{text}' is not a number"))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reads_a_dm_workflow_written_as_a_python_dict() {
        let text = r#"
# A DM workflow, as the DM tools' examples write them.
{
    'name': 'example-01',   # the name
    "description": 'Two ' "stages",
    'stages': {
        '01-START': {'command': '/bin/date +%Y%m%d%H%M%S',
                     'outputVariableRegexList': [r'(?P<timeStamp>\d+)',],},
        '02-MORE': {'command': """echo 'it''s' \"quoted\"""", 'runIf': True,
                    'maxRepeats': 3, 'repeatPeriod': 1.5, 'x': None, 'y': (1, -2e3, 0x10_0 if False else 7)},
    },
}
"#;
        let e = parse(text).unwrap_err();
        assert_eq!(e.line, 10, "{e}");
        let text = text.replace(" if False else 7", "");
        assert_eq!(
            parse(&text).unwrap(),
            json!({
                "name": "example-01",
                "description": "Two stages",
                "stages": {
                    "01-START": {"command": "/bin/date +%Y%m%d%H%M%S",
                                 "outputVariableRegexList": ["(?P<timeStamp>\\d+)"]},
                    "02-MORE": {"command": "echo 'it''s' \"quoted\"", "runIf": true,
                                "maxRepeats": 3, "repeatPeriod": 1.5, "x": null,
                                "y": [1, -2000.0, 256]}
                }
            })
        );
    }

    #[test]
    fn says_where_a_literal_goes_wrong() {
        for (text, line, column) in [
            ("{'a': 1,\n 'b' 2}", 2, 6),
            ("{'a': 'open}", 1, 7),
            ("{'a': true}", 1, 7),
            ("[1, 2] 3", 1, 8),
            ("{'a': '\\x4'}", 1, 10),
        ] {
            let e = parse(text).unwrap_err();
            assert_eq!((e.line, e.column), (line, column), "{text:?}: {e}");
        }
        assert_eq!(
            parse("{'a': '\\x41\\u00e9\\n'}").unwrap(),
            json!({"a": "Aé\n"})
        );
    }
}
