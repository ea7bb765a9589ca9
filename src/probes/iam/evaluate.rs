//! Our own evaluation of an IAM policy document, the path that works everywhere (AWS's simulator
//! is absent on S3-compatible stacks and moto): explicit Deny wins, then Allow, else implicit
//! deny; a statement with a Condition is uncertain, never allowed.

use serde::Serialize;
use serde_json::Value;

/// The actions the backup job needs and the resources it needs them on.
pub fn required_actions(bucket: &str, prefix: &str) -> Vec<(&'static str, String)> {
    let objects = format!("arn:aws:s3:::{bucket}/{prefix}*");
    vec![
        ("s3:PutObject", objects.clone()),
        ("s3:GetObject", objects),
        ("s3:ListBucket", format!("arn:aws:s3:::{bucket}")),
    ]
}

/// What a policy says about one action on one resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    /// An Allow statement without a condition matches, and no Deny can apply.
    Allowed,
    /// A Deny statement without a condition matches.
    ExplicitDeny,
    /// No statement allows it.
    ImplicitDeny,
    /// The answer depends on a Condition that was not evaluated.
    Uncertain,
}

impl Decision {
    /// Whether the backup job is certainly not allowed the action.
    pub fn is_denied(self) -> bool {
        matches!(self, Decision::ExplicitDeny | Decision::ImplicitDeny)
    }
}

/// The decision about one action, and the statement that made it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Verdict {
    pub action: String,
    pub resource: String,
    pub decision: Decision,
    /// The deciding statement ("statement 2 (Sid NoWrites)"); none for an implicit deny.
    pub statement: Option<String>,
    /// Why, in words.
    pub why: String,
}

/// Why a policy document could not be evaluated.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    #[error("the policy document is not JSON: {0}")]
    NotJson(String),
    #[error("the policy document has no Statement")]
    NoStatement,
    #[error("statement {0} has no valid Effect (Allow or Deny)")]
    BadEffect(usize),
}

/// Decodes a policy document as IAM returns it (URL-encoded, RFC 3986) and parses it.
pub fn parse_document(raw: &str) -> Result<Value, PolicyError> {
    let trimmed = raw.trim_start();
    // A document that already starts like JSON is not encoded; decoding it could corrupt a '%'.
    let text = if trimmed.starts_with('{') {
        trimmed.to_owned()
    } else {
        percent_encoding::percent_decode_str(trimmed)
            .decode_utf8()
            .map_err(|e| PolicyError::NotJson(e.to_string()))?
            .into_owned()
    };
    serde_json::from_str(&text).map_err(|e| PolicyError::NotJson(e.to_string()))
}

/// `*` (any run of characters) and `?` (one character) wildcard matching, as IAM does for
/// actions and resources.
pub fn wildcard_match(pattern: &str, text: &str, ignore_case: bool) -> bool {
    let fold = |s: &str| -> Vec<char> {
        if ignore_case {
            s.to_lowercase().chars().collect()
        } else {
            s.chars().collect()
        }
    };
    let (p, t) = (fold(pattern), fold(text));
    let (mut pi, mut ti) = (0, 0);
    // Where the last '*' was, and how much of the text it had swallowed: backtrack there.
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ti));
            pi += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

/// A string or an array of strings (IAM accepts both for Action, Resource…).
fn strings(v: Option<&Value>) -> Option<Vec<&str>> {
    match v? {
        Value::String(s) => Some(vec![s.as_str()]),
        Value::Array(items) => Some(items.iter().filter_map(Value::as_str).collect()),
        _ => None,
    }
}

/// Whether the element (`Action`/`NotAction`, `Resource`/`NotResource`) of a statement covers
/// `value`. A statement with neither form matches nothing.
fn covers(
    statement: &Value,
    positive: &str,
    negative: &str,
    value: &str,
    ignore_case: bool,
) -> bool {
    if let Some(patterns) = strings(statement.get(positive)) {
        patterns
            .iter()
            .any(|p| wildcard_match(p, value, ignore_case))
    } else if let Some(patterns) = strings(statement.get(negative)) {
        !patterns
            .iter()
            .any(|p| wildcard_match(p, value, ignore_case))
    } else {
        false
    }
}

fn describe_statement(index: usize, statement: &Value) -> String {
    match statement
        .get("Sid")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
    {
        Some(sid) => format!("statement {index} (Sid {sid})"),
        None => format!("statement {index}"),
    }
}

/// Evaluates an identity policy document for `action` on `resource`: explicit Deny wins, then
/// Allow, otherwise implicit deny. A matching statement with a Condition makes the answer
/// [`Decision::Uncertain`]. Statements are numbered from 1, as a person counts them.
pub fn evaluate(document: &Value, action: &str, resource: &str) -> Result<Verdict, PolicyError> {
    let statements: Vec<&Value> = match document.get("Statement") {
        Some(Value::Array(items)) => items.iter().collect(),
        Some(one @ Value::Object(_)) => vec![one],
        _ => return Err(PolicyError::NoStatement),
    };
    let mut deny = None;
    let mut conditional_deny = None;
    let mut allow = None;
    let mut conditional_allow = None;
    for (i, statement) in statements.iter().enumerate() {
        let index = i + 1;
        let effect = statement
            .get("Effect")
            .and_then(Value::as_str)
            .ok_or(PolicyError::BadEffect(index))?;
        if !covers(statement, "Action", "NotAction", action, true)
            || !covers(statement, "Resource", "NotResource", resource, false)
        {
            continue;
        }
        let conditional = statement
            .get("Condition")
            .is_some_and(|c| c.as_object().is_none_or(|o| !o.is_empty()));
        let slot = match (effect, conditional) {
            ("Deny", false) => &mut deny,
            ("Deny", true) => &mut conditional_deny,
            ("Allow", false) => &mut allow,
            ("Allow", true) => &mut conditional_allow,
            _ => return Err(PolicyError::BadEffect(index)),
        };
        slot.get_or_insert(describe_statement(index, statement));
    }
    let verdict = |decision, statement: Option<String>, why: String| Verdict {
        action: action.to_owned(),
        resource: resource.to_owned(),
        decision,
        statement,
        why,
    };
    Ok(if let Some(s) = deny {
        verdict(
            Decision::ExplicitDeny,
            Some(s.clone()),
            format!("{s} denies it explicitly"),
        )
    } else if let Some(s) = conditional_deny {
        verdict(
            Decision::Uncertain,
            Some(s.clone()),
            format!("{s} denies it under a condition that was not evaluated"),
        )
    } else if let Some(s) = allow {
        verdict(Decision::Allowed, Some(s.clone()), format!("{s} allows it"))
    } else if let Some(s) = conditional_allow {
        verdict(
            Decision::Uncertain,
            Some(s.clone()),
            format!("{s} allows it only under a condition that was not evaluated"),
        )
    } else {
        verdict(
            Decision::ImplicitDeny,
            None,
            "no statement allows it".to_owned(),
        )
    })
}
