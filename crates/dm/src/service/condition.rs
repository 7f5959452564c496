//! The small expression language of `runIf` and `repeatUntil` after `$var` substitution:
//! numbers, quoted strings, `True`/`False`, comparisons, `and`, `or`, `not` and parentheses,
//! with Python's meaning (`'$status' == 'done'`, `$count >= 3`).

use std::cmp::Ordering;

/// Why a condition could not be evaluated.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot evaluate condition {condition:?}: {reason}")]
pub struct ConditionError {
    condition: String,
    reason: String,
}

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Number(f64),
    Text(String),
    Bool(bool),
    Compare(&'static str),
    And,
    Or,
    Not,
    Open,
    Close,
}

#[derive(Debug, Clone, PartialEq)]
enum Operand {
    Number(f64),
    Text(String),
    Bool(bool),
}

impl Operand {
    fn truthy(&self) -> bool {
        match self {
            Operand::Number(n) => *n != 0.0,
            Operand::Text(t) => !t.is_empty(),
            Operand::Bool(b) => *b,
        }
    }

    fn as_number(&self) -> Option<f64> {
        match self {
            Operand::Number(n) => Some(*n),
            Operand::Bool(b) => Some(f64::from(u8::from(*b))),
            Operand::Text(_) => None,
        }
    }
}

/// Evaluate a condition; an empty condition is true.
pub fn evaluate(condition: &str) -> Result<bool, ConditionError> {
    let fail = |reason: String| ConditionError {
        condition: condition.to_string(),
        reason,
    };
    let tokens = tokenize(condition).map_err(fail)?;
    if tokens.is_empty() {
        return Ok(true);
    }
    let mut parser = Parser {
        tokens,
        position: 0,
    };
    let value = parser.or().map_err(fail)?;
    if parser.position != parser.tokens.len() {
        return Err(fail(format!(
            "unexpected {:?}",
            parser.tokens[parser.position]
        )));
    }
    Ok(value.truthy())
}

fn tokenize(text: &str) -> Result<Vec<Token>, String> {
    let chars: Vec<char> = text.chars().collect();
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        match c {
            _ if c.is_whitespace() => i += 1,
            '(' | ')' => {
                tokens.push(if c == '(' { Token::Open } else { Token::Close });
                i += 1;
            }
            '\'' | '"' => {
                let end = chars[i + 1..]
                    .iter()
                    .position(|&x| x == c)
                    .ok_or("unterminated string")?;
                tokens.push(Token::Text(chars[i + 1..i + 1 + end].iter().collect()));
                i += end + 2;
            }
            '=' | '!' | '<' | '>' => {
                let operator = match (c, next) {
                    ('=', Some('=')) => "==",
                    ('!', Some('=')) => "!=",
                    ('<', Some('=')) => "<=",
                    ('>', Some('=')) => ">=",
                    ('<', _) => "<",
                    ('>', _) => ">",
                    _ => return Err(format!("unknown operator at {c:?}")),
                };
                tokens.push(Token::Compare(operator));
                i += operator.len();
            }
            _ if c.is_ascii_digit()
                || c == '.'
                || ((c == '-' || c == '+')
                    && next.is_some_and(|n| n.is_ascii_digit() || n == '.')) =>
            {
                let start = i;
                i += 1;
                while i < chars.len() && (chars[i].is_ascii_digit() || chars[i] == '.') {
                    i += 1;
                }
                let literal: String = chars[start..i].iter().collect();
                let number = literal
                    .parse()
                    .map_err(|_| format!("bad number {literal:?}"))?;
                tokens.push(Token::Number(number));
            }
            _ if c.is_alphabetic() || c == '_' => {
                let start = i;
                while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                    i += 1;
                }
                let word: String = chars[start..i].iter().collect();
                tokens.push(match word.as_str() {
                    "and" => Token::And,
                    "or" => Token::Or,
                    "not" => Token::Not,
                    "True" | "true" => Token::Bool(true),
                    "False" | "false" => Token::Bool(false),
                    _ => return Err(format!("unknown name {word:?} (quote text values)")),
                });
            }
            _ => return Err(format!("unexpected character {c:?}")),
        }
    }
    Ok(tokens)
}

struct Parser {
    tokens: Vec<Token>,
    position: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.position)
    }

    fn or(&mut self) -> Result<Operand, String> {
        let mut value = self.and()?;
        while self.peek() == Some(&Token::Or) {
            self.position += 1;
            let right = self.and()?;
            value = Operand::Bool(value.truthy() || right.truthy());
        }
        Ok(value)
    }

    fn and(&mut self) -> Result<Operand, String> {
        let mut value = self.not()?;
        while self.peek() == Some(&Token::And) {
            self.position += 1;
            let right = self.not()?;
            value = Operand::Bool(value.truthy() && right.truthy());
        }
        Ok(value)
    }

    fn not(&mut self) -> Result<Operand, String> {
        if self.peek() == Some(&Token::Not) {
            self.position += 1;
            return Ok(Operand::Bool(!self.not()?.truthy()));
        }
        self.comparison()
    }

    fn comparison(&mut self) -> Result<Operand, String> {
        let left = self.atom()?;
        let Some(Token::Compare(operator)) = self.peek().cloned() else {
            return Ok(left);
        };
        self.position += 1;
        let right = self.atom()?;
        let ordering = match (&left, &right) {
            (Operand::Text(a), Operand::Text(b)) => Some(a.cmp(b)),
            _ => match (left.as_number(), right.as_number()) {
                (Some(a), Some(b)) => a.partial_cmp(&b),
                _ => None,
            },
        };
        let result = match (operator, ordering) {
            ("==", ordering) => ordering == Some(Ordering::Equal),
            ("!=", ordering) => ordering != Some(Ordering::Equal),
            (_, None) => return Err(format!("cannot order {left:?} and {right:?}")),
            ("<", Some(o)) => o == Ordering::Less,
            ("<=", Some(o)) => o != Ordering::Greater,
            (">", Some(o)) => o == Ordering::Greater,
            (_, Some(o)) => o != Ordering::Less,
        };
        Ok(Operand::Bool(result))
    }

    fn atom(&mut self) -> Result<Operand, String> {
        let token = self.peek().cloned().ok_or("the condition ends too early")?;
        self.position += 1;
        match token {
            Token::Number(n) => Ok(Operand::Number(n)),
            Token::Text(t) => Ok(Operand::Text(t)),
            Token::Bool(b) => Ok(Operand::Bool(b)),
            Token::Open => {
                let value = self.or()?;
                if self.peek() != Some(&Token::Close) {
                    return Err("missing )".into());
                }
                self.position += 1;
                Ok(value)
            }
            other => Err(format!("unexpected {other:?}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::evaluate;

    #[test]
    fn python_like_conditions() {
        assert!(evaluate("'done' == 'done'").unwrap());
        assert!(!evaluate("'a' == 'b'").unwrap());
        assert!(evaluate("3 >= 3 and not 2 > 5").unwrap());
        assert!(evaluate("False or (1 < 2)").unwrap());
        assert!(!evaluate("0").unwrap());
        assert!(evaluate("True").unwrap());
        assert!(evaluate("").unwrap());
        assert!(evaluate("-1.5 < 0").unwrap());
    }

    #[test]
    fn bad_conditions_say_why() {
        assert!(evaluate("done == 'done'").is_err());
        assert!(evaluate("'a' < 3").is_err());
        assert!(evaluate("(1 == 1").is_err());
        assert!(evaluate("'open").is_err());
    }
}
