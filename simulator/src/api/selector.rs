//! Kubernetes label selectors (`?labelSelector=`) and field selectors
//! (`?fieldSelector=`), parsed and matched the way the real API server does.
//!
//! The label grammar, its tokenisation quirks and its error wording follow
//! `k8s.io/apimachinery/pkg/labels`, so clients that print the server's
//! message see what they would see against a real cluster. Field selectors
//! follow `k8s.io/apimachinery/pkg/fields`.

use std::borrow::Cow;
use std::collections::BTreeSet;

use serde_json::{Map, Value};

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum SelectorError {
    #[error("{0}")]
    Parse(String),
}

// ---------------------------------------------------------------------------
// Label selectors
// ---------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LabelOp {
    // `=` and `==` are distinct operators in Kubernetes but match identically,
    // so they share one variant.
    Equals,
    NotEquals,
    In,
    NotIn,
    Exists,
    DoesNotExist,
    GreaterThan,
    LessThan,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct LabelRequirement {
    key: String,
    op: LabelOp,
    // Kept as a sorted set because Kubernetes deduplicates `in (a,a)`.
    values: BTreeSet<String>,
}

impl LabelRequirement {
    fn matches(&self, labels: Option<&Map<String, Value>>) -> bool {
        let value = labels.and_then(|m| m.get(&self.key)).and_then(label_text);
        match self.op {
            LabelOp::Equals | LabelOp::In => value.is_some_and(|v| self.values.contains(v.as_ref())),
            // Kubernetes deliberately lets negative operators match objects
            // that do not carry the label at all.
            LabelOp::NotEquals | LabelOp::NotIn => value.is_none_or(|v| !self.values.contains(v.as_ref())),
            LabelOp::Exists => value.is_some(),
            LabelOp::DoesNotExist => value.is_none(),
            LabelOp::GreaterThan | LabelOp::LessThan => {
                // A label that is not an integer never satisfies gt/lt, it
                // is not an error.
                let Some(actual) = value.and_then(|v| v.parse::<i64>().ok()) else {
                    return false;
                };
                let Some(bound) = self.values.iter().next().and_then(|v| v.parse::<i64>().ok()) else {
                    return false;
                };
                if self.op == LabelOp::GreaterThan {
                    actual > bound
                } else {
                    actual < bound
                }
            }
        }
    }
}

/// Stored labels should be strings, but a hand-written object in the
/// simulator may hold a number or bool; comparing by its JSON text is more
/// useful than pretending the label is absent.
fn label_text(v: &Value) -> Option<Cow<'_, str>> {
    match v {
        Value::String(s) => Some(Cow::Borrowed(s)),
        Value::Bool(_) | Value::Number(_) => Some(Cow::Owned(v.to_string())),
        Value::Null | Value::Array(_) | Value::Object(_) => None,
    }
}

/// A parsed label selector; the empty selector matches everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LabelSelector {
    requirements: Vec<LabelRequirement>,
}

impl LabelSelector {
    pub fn parse(s: &str) -> Result<Self, SelectorError> {
        let mut parser = LabelParser { tokens: lex(s), pos: 0 };
        parser.parse().map(|requirements| LabelSelector { requirements }).map_err(SelectorError::Parse)
    }

    /// `labels` is the object's `metadata.labels`, absent when the object
    /// has none.
    pub fn matches(&self, labels: Option<&Map<String, Value>>) -> bool {
        self.requirements.iter().all(|r| r.matches(labels))
    }

    pub fn is_empty(&self) -> bool {
        self.requirements.is_empty()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    End,
    Identifier(String),
    In,
    NotIn,
    Bang,
    Equals,
    DoubleEquals,
    NotEquals,
    GreaterThan,
    LessThan,
    OpenPar,
    ClosedPar,
    Comma,
}

impl Token {
    /// The text quoted back in error messages, as Kubernetes does.
    fn literal(&self) -> &str {
        match self {
            Token::End => "",
            Token::Identifier(s) => s,
            Token::In => "in",
            Token::NotIn => "notin",
            Token::Bang => "!",
            Token::Equals => "=",
            Token::DoubleEquals => "==",
            Token::NotEquals => "!=",
            Token::GreaterThan => ">",
            Token::LessThan => "<",
            Token::OpenPar => "(",
            Token::ClosedPar => ")",
            Token::Comma => ",",
        }
    }
}

fn is_label_whitespace(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\r' | '\n')
}

fn is_special_symbol(c: char) -> bool {
    matches!(c, '=' | '!' | '(' | ')' | ',' | '>' | '<')
}

/// Identifiers are any run of characters that are neither whitespace nor
/// operator symbols; validation of what they contain happens later so that
/// the error names the offending key or value.
fn lex(s: &str) -> Vec<Token> {
    let mut tokens = Vec::new();
    let mut chars = s.chars().peekable();
    while let Some(&c) = chars.peek() {
        if is_label_whitespace(c) {
            chars.next();
            continue;
        }
        if is_special_symbol(c) {
            chars.next();
            let next = chars.peek().copied();
            let token = match (c, next) {
                ('!', Some('=')) => {
                    chars.next();
                    Token::NotEquals
                }
                ('=', Some('=')) => {
                    chars.next();
                    Token::DoubleEquals
                }
                ('!', _) => Token::Bang,
                ('=', _) => Token::Equals,
                ('(', _) => Token::OpenPar,
                (')', _) => Token::ClosedPar,
                (',', _) => Token::Comma,
                ('>', _) => Token::GreaterThan,
                _ => Token::LessThan,
            };
            tokens.push(token);
            continue;
        }
        let mut word = String::new();
        while let Some(&c) = chars.peek() {
            if is_label_whitespace(c) || is_special_symbol(c) {
                break;
            }
            word.push(c);
            chars.next();
        }
        tokens.push(match word.as_str() {
            "in" => Token::In,
            "notin" => Token::NotIn,
            _ => Token::Identifier(word),
        });
    }
    tokens
}

struct LabelParser {
    tokens: Vec<Token>,
    pos: usize,
}

impl LabelParser {
    /// Where a key or value is expected, `in`/`notin` are plain words: a
    /// label may well be called `in`.
    fn as_value(token: Token) -> Token {
        match token {
            Token::In => Token::Identifier("in".to_owned()),
            Token::NotIn => Token::Identifier("notin".to_owned()),
            other => other,
        }
    }

    fn peek_raw(&self) -> Token {
        self.tokens.get(self.pos).cloned().unwrap_or(Token::End)
    }

    fn peek_value(&self) -> Token {
        Self::as_value(self.peek_raw())
    }

    fn next_raw(&mut self) -> Token {
        let token = self.peek_raw();
        if token != Token::End {
            self.pos += 1;
        }
        token
    }

    fn next_value(&mut self) -> Token {
        Self::as_value(self.next_raw())
    }

    fn parse(&mut self) -> Result<Vec<LabelRequirement>, String> {
        let mut requirements = Vec::new();
        loop {
            match self.peek_value() {
                Token::Identifier(_) | Token::Bang => {
                    let requirement =
                        self.parse_requirement().map_err(|e| format!("unable to parse requirement: {e}"))?;
                    requirements.push(requirement);
                    match self.next_value() {
                        Token::End => return Ok(requirements),
                        Token::Comma => match self.peek_value() {
                            Token::Identifier(_) | Token::Bang => {}
                            t => return Err(format!("found '{}', expected: identifier after ','", t.literal())),
                        },
                        t => return Err(format!("found '{}', expected: ',' or 'end of string'", t.literal())),
                    }
                }
                Token::End => return Ok(requirements),
                t => return Err(format!("found '{}', expected: !, identifier, or 'end of string'", t.literal())),
            }
        }
    }

    fn parse_requirement(&mut self) -> Result<LabelRequirement, String> {
        let (key, unary) = self.parse_key()?;
        if let Some(op) = unary {
            return Ok(LabelRequirement { key, op, values: BTreeSet::new() });
        }
        let op = self.parse_operator()?;
        let values = match op {
            LabelOp::In | LabelOp::NotIn => self.parse_value_set()?,
            _ => self.parse_single_value()?,
        };
        validate_values(op, &values)?;
        Ok(LabelRequirement { key, op, values })
    }

    /// Returns the key and, when no binary operator follows, the implied
    /// unary operator (`key` = exists, `!key` = does not exist).
    fn parse_key(&mut self) -> Result<(String, Option<LabelOp>), String> {
        let mut negated = false;
        let mut token = self.next_value();
        if token == Token::Bang {
            negated = true;
            token = self.next_value();
        }
        let Token::Identifier(key) = token else {
            return Err(format!("found '{}', expected: identifier", token.literal()));
        };
        validate_label_key(&key)?;
        if negated {
            // Anything after `!key` other than `,`/end is rejected by the
            // caller, matching Kubernetes' "expected: ',' or 'end of string'".
            return Ok((key, Some(LabelOp::DoesNotExist)));
        }
        let unary = matches!(self.peek_value(), Token::End | Token::Comma).then_some(LabelOp::Exists);
        Ok((key, unary))
    }

    fn parse_operator(&mut self) -> Result<LabelOp, String> {
        match self.next_raw() {
            Token::In => Ok(LabelOp::In),
            Token::NotIn => Ok(LabelOp::NotIn),
            Token::Equals | Token::DoubleEquals => Ok(LabelOp::Equals),
            Token::NotEquals => Ok(LabelOp::NotEquals),
            Token::GreaterThan => Ok(LabelOp::GreaterThan),
            Token::LessThan => Ok(LabelOp::LessThan),
            t => Err(format!("found '{}', expected: in, notin, =, ==, !=, gt, lt", t.literal())),
        }
    }

    fn parse_value_set(&mut self) -> Result<BTreeSet<String>, String> {
        let open = self.next_value();
        if open != Token::OpenPar {
            return Err(format!("found '{}' expected: '('", open.literal()));
        }
        match self.peek_value() {
            Token::Identifier(_) | Token::Comma => {
                let set = self.parse_value_list()?;
                match self.next_value() {
                    Token::ClosedPar => Ok(set),
                    t => Err(format!("found '{}', expected: ')'", t.literal())),
                }
            }
            // Kubernetes reads `()` as the set holding the empty string, so
            // `key in ()` selects objects whose label is present but empty.
            Token::ClosedPar => {
                self.next_value();
                Ok(BTreeSet::from([String::new()]))
            }
            t => Err(format!("found '{}', expected: ',', ')' or identifier", t.literal())),
        }
    }

    /// Leaves the closing parenthesis for the caller. Commas delimit values
    /// that may be empty: `(,a)`, `(a,,b)` and `(a,)` all contain `""`.
    fn parse_value_list(&mut self) -> Result<BTreeSet<String>, String> {
        let mut set = BTreeSet::new();
        loop {
            match self.next_value() {
                Token::Identifier(v) => {
                    set.insert(v);
                    match self.peek_value() {
                        Token::Comma => {}
                        Token::ClosedPar => return Ok(set),
                        t => return Err(format!("found '{}', expected: ',' or ')'", t.literal())),
                    }
                }
                Token::Comma => {
                    if set.is_empty() {
                        set.insert(String::new());
                    }
                    match self.peek_value() {
                        Token::ClosedPar => {
                            set.insert(String::new());
                            return Ok(set);
                        }
                        Token::Comma => {
                            self.next_value();
                            set.insert(String::new());
                        }
                        _ => {}
                    }
                }
                t => return Err(format!("found '{}', expected: ',', or identifier", t.literal())),
            }
        }
    }

    fn parse_single_value(&mut self) -> Result<BTreeSet<String>, String> {
        // `key=` (nothing before the next comma) means "label is empty".
        if matches!(self.peek_value(), Token::End | Token::Comma) {
            return Ok(BTreeSet::from([String::new()]));
        }
        match self.next_value() {
            Token::Identifier(v) => Ok(BTreeSet::from([v])),
            t => Err(format!("found '{}', expected: identifier", t.literal())),
        }
    }
}

const QUALIFIED_NAME_MAX_LEN: usize = 63;
const DNS_SUBDOMAIN_MAX_LEN: usize = 253;

const QUALIFIED_NAME_HELP: &str = "name part must consist of alphanumeric characters, '-', '_' or '.', \
and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', \
regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')";

const LABEL_VALUE_HELP: &str = "a valid label must be an empty string or consist of alphanumeric \
characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  \
or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')";

/// `([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]`, non-empty.
fn is_qualified_name_part(s: &str) -> bool {
    let bytes = s.as_bytes();
    match (bytes.first(), bytes.last()) {
        (Some(first), Some(last)) => {
            first.is_ascii_alphanumeric()
                && last.is_ascii_alphanumeric()
                && bytes.iter().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        }
        _ => false,
    }
}

/// RFC 1123 subdomain: dot-separated lowercase labels, each starting and
/// ending with an alphanumeric character.
fn is_dns_subdomain(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= DNS_SUBDOMAIN_MAX_LEN
        && s.split('.').all(|label| {
            let bytes = label.as_bytes();
            match (bytes.first(), bytes.last()) {
                (Some(first), Some(last)) => {
                    (first.is_ascii_lowercase() || first.is_ascii_digit())
                        && (last.is_ascii_lowercase() || last.is_ascii_digit())
                        && bytes.iter().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
                }
                _ => false,
            }
        })
}

fn validate_label_key(key: &str) -> Result<(), String> {
    let invalid = |why: &str| format!("key: Invalid value: {key:?}: {why}");
    let (prefix, name) = match key.split_once('/') {
        Some((prefix, name)) => (Some(prefix), name),
        None => (None, key),
    };
    if let Some(prefix) = prefix {
        if prefix.is_empty() {
            return Err(invalid("prefix part must be non-empty"));
        }
        if !is_dns_subdomain(prefix) {
            return Err(invalid(
                "prefix part a lowercase RFC 1123 subdomain must consist of lower case \
                 alphanumeric characters, '-' or '.', and must start and end with an \
                 alphanumeric character (e.g. 'example.com')",
            ));
        }
    }
    if name.is_empty() {
        return Err(invalid("name part must be non-empty"));
    }
    if name.len() > QUALIFIED_NAME_MAX_LEN {
        return Err(invalid("name part must be no more than 63 characters"));
    }
    if !is_qualified_name_part(name) {
        return Err(invalid(QUALIFIED_NAME_HELP));
    }
    Ok(())
}

fn validate_values(op: LabelOp, values: &BTreeSet<String>) -> Result<(), String> {
    if matches!(op, LabelOp::GreaterThan | LabelOp::LessThan) {
        for v in values {
            if v.parse::<i64>().is_err() {
                return Err(format!(
                    "values[0]: Invalid value: {v:?}: for 'Gt', 'Lt' operators, the value must be an integer"
                ));
            }
        }
    }
    for (i, v) in values.iter().enumerate() {
        if v.len() > QUALIFIED_NAME_MAX_LEN {
            return Err(format!("values[{i}]: Invalid value: {v:?}: must be no more than 63 characters"));
        }
        if !v.is_empty() && !is_qualified_name_part(v) {
            return Err(format!("values[{i}]: Invalid value: {v:?}: {LABEL_VALUE_HELP}"));
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Field selectors
// ---------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq, Eq)]
struct FieldRequirement {
    field: String,
    value: String,
    negated: bool,
}

/// A parsed field selector; the empty selector matches everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldSelector {
    requirements: Vec<FieldRequirement>,
}

impl FieldSelector {
    pub fn parse(s: &str) -> Result<Self, SelectorError> {
        let mut requirements = Vec::new();
        for term in split_unescaped_commas(s) {
            // Kubernetes tolerates empty terms such as a trailing comma.
            if term.is_empty() {
                continue;
            }
            let not_understood = || SelectorError::Parse(format!("invalid selector: '{s}'; can't understand '{term}'"));
            let (field, negated, raw_value) = split_term(term).ok_or_else(not_understood)?;
            // Kubernetes would accept an empty field name and only reject it
            // later as an unsupported field label; failing here is simpler
            // and still a 400.
            if field.is_empty() {
                return Err(not_understood());
            }
            requirements.push(FieldRequirement {
                field: field.to_owned(),
                value: unescape_field_value(raw_value)?,
                negated,
            });
        }
        Ok(FieldSelector { requirements })
    }

    /// Field paths in selector order (duplicates kept), so the caller can
    /// reject unsupported ones with `field label not supported`.
    pub fn fields(&self) -> Vec<&str> {
        self.requirements.iter().map(|r| r.field.as_str()).collect()
    }

    pub fn matches(&self, object: &Value) -> bool {
        self.requirements.iter().all(|r| (field_text(object, &r.field) == r.value.as_str()) != r.negated)
    }

    /// Value of the first `field=value` / `field==value` requirement on
    /// `field`, letting the server short-cut `metadata.name=X` to a lookup.
    pub fn equality_value(&self, field: &str) -> Option<&str> {
        self.requirements.iter().find(|r| !r.negated && r.field == field).map(|r| r.value.as_str())
    }

    pub fn is_empty(&self) -> bool {
        self.requirements.is_empty()
    }
}

/// Splits on commas that are not preceded by an escaping backslash; the
/// escapes themselves are kept for `unescape_field_value`.
fn split_unescaped_commas(s: &str) -> Vec<&str> {
    let mut terms = Vec::new();
    let mut start = 0;
    let mut escaped = false;
    for (i, c) in s.char_indices() {
        if escaped {
            escaped = false;
        } else if c == '\\' {
            escaped = true;
        } else if c == ',' {
            terms.push(s.get(start..i).unwrap_or_default());
            start = i + c.len_utf8();
        }
    }
    terms.push(s.get(start..).unwrap_or_default());
    terms
}

/// The operator is the leftmost `!=`, `==` or `=`; everything after it,
/// including further `=`, belongs to the (still escaped) value.
fn split_term(term: &str) -> Option<(&str, bool, &str)> {
    for (i, _) in term.char_indices() {
        let lhs = term.get(..i)?;
        let rest = term.get(i..)?;
        if let Some(value) = rest.strip_prefix("!=") {
            return Some((lhs, true, value));
        }
        if let Some(value) = rest.strip_prefix("==") {
            return Some((lhs, false, value));
        }
        if let Some(value) = rest.strip_prefix('=') {
            return Some((lhs, false, value));
        }
    }
    None
}

fn unescape_field_value(raw: &str) -> Result<String, SelectorError> {
    let mut out = String::with_capacity(raw.len());
    let mut chars = raw.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some(e @ ('\\' | ',' | '=')) => out.push(e),
                Some(e) => {
                    return Err(SelectorError::Parse(format!("invalid field selector: invalid escape sequence: \\{e}")))
                }
                None => {
                    return Err(SelectorError::Parse("invalid field selector: invalid escape sequence: \\".to_owned()))
                }
            },
            // Only reachable for `=`: unescaped commas were split on already.
            ',' | '=' => {
                return Err(SelectorError::Parse(format!("invalid field selector: unescaped character in value: {c}")))
            }
            c => out.push(c),
        }
    }
    Ok(out)
}

/// A field the object lacks compares as the empty string, as Kubernetes'
/// field sets do for unset fields.
fn field_text<'a>(object: &'a Value, path: &str) -> Cow<'a, str> {
    let mut current = object;
    for segment in path.split('.') {
        match current.get(segment) {
            Some(next) => current = next,
            None => return Cow::Borrowed(""),
        }
    }
    match current {
        Value::String(s) => Cow::Borrowed(s),
        Value::Null => Cow::Borrowed(""),
        other => Cow::Owned(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;
    use serde_json::json;

    fn labels(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => Map::new(),
        }
    }

    #[rstest]
    #[case::empty("", true)]
    #[case::whitespace_only("   ", true)]
    #[case::equals_hit("app=web", true)]
    #[case::equals_miss("app=db", false)]
    #[case::double_equals("app==web", true)]
    #[case::equals_missing_key("zone=a", false)]
    #[case::not_equals_hit("app!=db", true)]
    #[case::not_equals_miss("app!=web", false)]
    #[case::not_equals_missing_key_matches("zone!=a", true)]
    #[case::in_hit("tier in (frontend, backend)", true)]
    #[case::in_miss("tier in (cache)", false)]
    #[case::in_missing_key("zone in (a,b)", false)]
    #[case::notin_hit("tier notin (cache)", true)]
    #[case::notin_miss("tier notin (frontend)", false)]
    #[case::notin_missing_key_matches("zone notin (a)", true)]
    #[case::exists("app", true)]
    #[case::exists_missing("zone", false)]
    #[case::not_exists("!zone", true)]
    #[case::not_exists_present("!app", false)]
    #[case::and_all("app=web,tier in (frontend),!zone", true)]
    #[case::and_one_fails("app=web,tier=backend", false)]
    #[case::spaces_around_tokens("  app  =  web  ,  ! zone ", true)]
    #[case::prefixed_key("example.com/team=core", true)]
    #[case::empty_value_matches_empty_label("empty=", true)]
    #[case::empty_value_not_other("app=", false)]
    #[case::empty_set_is_empty_string("empty in ()", true)]
    #[case::trailing_comma_in_set("tier in (x,)", false)]
    #[case::set_with_empty_member("empty in (x,)", true)]
    #[case::gt("replicas>2", true)]
    #[case::gt_miss("replicas>3", false)]
    #[case::lt("replicas<4", true)]
    #[case::gt_non_integer_label("app>1", false)]
    #[case::gt_missing_label("zone>1", false)]
    #[case::key_named_in("in=x", false)]
    #[case::value_named_in("word in (in, notin)", true)]
    fn label_selector_matching(#[case] selector: &str, #[case] expected: bool) {
        let labels = labels(json!({
            "app": "web",
            "tier": "frontend",
            "example.com/team": "core",
            "empty": "",
            "replicas": "3",
            "word": "notin",
        }));
        let parsed = LabelSelector::parse(selector).unwrap();
        assert_eq!(parsed.matches(Some(&labels)), expected, "{selector}");
    }

    #[rstest]
    #[case::everything("", true)]
    #[case::not_equals("app!=web", true)]
    #[case::notin("app notin (web)", true)]
    #[case::not_exists("!app", true)]
    #[case::equals("app=web", false)]
    #[case::exists("app", false)]
    #[case::in_set("app in (web)", false)]
    fn label_selector_on_object_without_labels(#[case] selector: &str, #[case] expected: bool) {
        let parsed = LabelSelector::parse(selector).unwrap();
        assert_eq!(parsed.matches(None), expected);
        assert_eq!(parsed.matches(Some(&Map::new())), expected);
    }

    #[rstest]
    #[case::leading_equals("=x", "found '=', expected: !, identifier, or 'end of string'")]
    #[case::in_without_parens("a in b", "unable to parse requirement: found 'b' expected: '('")]
    #[case::unclosed_set("a in (b", "unable to parse requirement: found '', expected: ',' or ')'")]
    #[case::unopened_set("a in b)", "unable to parse requirement: found 'b' expected: '('")]
    #[case::set_missing_comma("a in (b c)", "unable to parse requirement: found 'c', expected: ',' or ')'")]
    #[case::nested_paren("a in ((b))", "unable to parse requirement: found '(', expected: ',', ')' or identifier")]
    #[case::trailing_comma("a=b,", "found '', expected: identifier after ','")]
    #[case::double_comma("a=b,,c", "found ',', expected: identifier after ','")]
    #[case::double_operator("a==b==c", "found '==', expected: ',' or 'end of string'")]
    #[case::equals_twice("a=b=c", "found '=', expected: ',' or 'end of string'")]
    #[case::not_exists_with_value("!a=b", "found '=', expected: ',' or 'end of string'")]
    #[case::bang_alone("!", "unable to parse requirement: found '', expected: identifier")]
    #[case::missing_operator("a b", "unable to parse requirement: found 'b', expected: in, notin, =, ==, !=, gt, lt")]
    #[case::bad_operator("a!b", "unable to parse requirement: found '!', expected: in, notin, =, ==, !=, gt, lt")]
    #[case::value_is_operator("a=(", "unable to parse requirement: found '(', expected: identifier")]
    #[case::gt_not_integer("a>b", "unable to parse requirement: values[0]: Invalid value: \"b\": for 'Gt', 'Lt' operators, the value must be an integer")]
    #[case::missing_comma("a=b c", "found 'c', expected: ',' or 'end of string'")]
    fn label_selector_parse_errors(#[case] selector: &str, #[case] message: &str) {
        assert_eq!(LabelSelector::parse(selector), Err(SelectorError::Parse(message.to_owned())));
    }

    #[rstest]
    #[case::bad_key_chars("a$b=c")]
    #[case::key_starts_with_dash("-a=c")]
    #[case::key_too_long(&"k".repeat(64))]
    #[case::two_slashes("a/b/c=d")]
    #[case::empty_prefix("/name=d")]
    #[case::uppercase_prefix("Example.com/name=d")]
    #[case::empty_name("example.com/=d")]
    #[case::bad_value("a=-x")]
    #[case::value_too_long(&format!("a={}", "v".repeat(64)))]
    #[case::bad_value_in_set("a in (ok, b@d)")]
    fn label_selector_rejects_invalid_keys_and_values(#[case] selector: &str) {
        let err = LabelSelector::parse(selector).unwrap_err();
        let SelectorError::Parse(message) = err;
        assert!(message.starts_with("unable to parse requirement: "), "{message}");
        assert!(message.contains("Invalid value"), "{message}");
    }

    #[test]
    fn label_selector_is_empty() {
        assert!(LabelSelector::parse("").unwrap().is_empty());
        assert!(LabelSelector::default().is_empty());
        assert!(!LabelSelector::parse("a").unwrap().is_empty());
    }

    #[test]
    fn label_selector_compares_non_string_label_values_by_text() {
        let labels = labels(json!({"n": 5, "b": true, "z": null}));
        assert!(LabelSelector::parse("n=5,b=true").unwrap().matches(Some(&labels)));
        // A null label is treated as unset.
        assert!(LabelSelector::parse("!z").unwrap().matches(Some(&labels)));
    }

    fn pod() -> Value {
        json!({
            "metadata": {"name": "web-0", "namespace": "default"},
            "spec": {
                "nodeName": "node-1",
                "hostNetwork": true,
                "priority": 10,
                "source": {"persistentVolumeName": "pv-a,b"},
            },
            "status": {"phase": "Running"},
        })
    }

    #[rstest]
    #[case::empty("", true)]
    #[case::name("metadata.name=web-0", true)]
    #[case::name_double_equals("metadata.name==web-0", true)]
    #[case::name_miss("metadata.name=web-1", false)]
    #[case::not_equals("status.phase!=Pending", true)]
    #[case::not_equals_miss("status.phase!=Running", false)]
    #[case::and("metadata.namespace=default,spec.nodeName=node-1", true)]
    #[case::and_fails("metadata.namespace=default,spec.nodeName=node-2", false)]
    #[case::missing_field_is_empty("spec.missing=", true)]
    #[case::missing_field_not_equal_value("spec.missing!=x", true)]
    #[case::missing_parent_is_empty("status.nested.deep=", true)]
    #[case::unscheduled_pods("spec.nodeName=", false)]
    #[case::bool_as_text("spec.hostNetwork=true", true)]
    #[case::number_as_text("spec.priority=10", true)]
    #[case::nested_with_escaped_comma("spec.source.persistentVolumeName=pv-a\\,b", true)]
    #[case::trailing_comma_ignored("metadata.name=web-0,", true)]
    #[case::value_with_spaces_not_trimmed("metadata.name= web-0", false)]
    fn field_selector_matching(#[case] selector: &str, #[case] expected: bool) {
        let parsed = FieldSelector::parse(selector).unwrap();
        assert_eq!(parsed.matches(&pod()), expected, "{selector}");
    }

    #[rstest]
    #[case::comma(r"a=x\,y", "x,y")]
    #[case::equals(r"a=x\=y", "x=y")]
    #[case::backslash(r"a=x\\y", r"x\y")]
    #[case::empty("a=", "")]
    #[case::not_escaped_then_comma(r"a=x\\,b=c", r"x\")]
    fn field_selector_unescapes_values(#[case] selector: &str, #[case] value: &str) {
        let parsed = FieldSelector::parse(selector).unwrap();
        assert_eq!(parsed.equality_value("a"), Some(value));
    }

    #[rstest]
    #[case::no_operator("metadata.name", "invalid selector: 'metadata.name'; can't understand 'metadata.name'")]
    #[case::bare_bang("a!b", "invalid selector: 'a!b'; can't understand 'a!b'")]
    #[case::empty_field("=x", "invalid selector: '=x'; can't understand '=x'")]
    #[case::unescaped_equals("a=b=c", "invalid field selector: unescaped character in value: =")]
    #[case::bad_escape(r"a=\n", r"invalid field selector: invalid escape sequence: \n")]
    #[case::dangling_escape(r"a=b\", r"invalid field selector: invalid escape sequence: \")]
    #[case::in_operator("a in (b)", "invalid selector: 'a in (b)'; can't understand 'a in (b)'")]
    fn field_selector_parse_errors(#[case] selector: &str, #[case] message: &str) {
        assert_eq!(FieldSelector::parse(selector), Err(SelectorError::Parse(message.to_owned())));
    }

    #[test]
    fn field_selector_reports_fields_and_equality_values() {
        let parsed = FieldSelector::parse("metadata.name=web-0,status.phase!=Failed,spec.nodeName==n1").unwrap();
        assert_eq!(parsed.fields(), vec!["metadata.name", "status.phase", "spec.nodeName"]);
        assert_eq!(parsed.equality_value("metadata.name"), Some("web-0"));
        assert_eq!(parsed.equality_value("spec.nodeName"), Some("n1"));
        // A negative requirement does not pin the field to a value.
        assert_eq!(parsed.equality_value("status.phase"), None);
        assert_eq!(parsed.equality_value("metadata.namespace"), None);
        assert!(!parsed.is_empty());
        assert!(FieldSelector::parse("").unwrap().is_empty());
    }

    #[test]
    fn field_selector_on_non_object_compares_as_empty() {
        let parsed = FieldSelector::parse("metadata.name=").unwrap();
        assert!(parsed.matches(&json!(null)));
        assert!(parsed.matches(&json!([1, 2])));
    }

    #[rstest]
    #[case("")]
    #[case("\u{0}")]
    #[case("é=ü")]
    #[case("a in (é")]
    #[case("!!!")]
    #[case("(((")]
    #[case(",,,")]
    #[case("a\\")]
    #[case("\\,=\\")]
    #[case("==!=")]
    #[case("a notin")]
    #[case("a notin (")]
    fn selectors_never_panic(#[case] input: &str) {
        let _ = LabelSelector::parse(input);
        let _ = FieldSelector::parse(input);
    }
}
