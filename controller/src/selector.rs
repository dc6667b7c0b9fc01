//! Kubernetes label selectors, as `kubectl -l` takes them: `app=web`, `tier==db`, `env!=dev`,
//! `env in (prod,staging)`, `env notin (dev)`, `canary`, `!canary`, joined by commas (all must
//! hold).
//!
//! The controller matches selectors itself rather than passing them to the API server, so that
//! live clusters and `--snapshot` files select the same Services through one code path.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

/// A selector that does not parse.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("bad label selector {selector:?}: {reason}")]
pub struct SelectorError {
    /// The selector as given.
    pub selector: String,
    /// What is wrong with it.
    pub reason: String,
}

/// One requirement of a selector.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Requirement {
    /// `key in (values)`; `key=value` is `In` with one value.
    In(String, Vec<String>),
    /// `key notin (values)`; `key!=value` is `NotIn` with one value. Also holds when the label
    /// is absent, as in Kubernetes.
    NotIn(String, Vec<String>),
    /// `key`
    Exists(String),
    /// `!key`
    Absent(String),
}

/// A parsed label selector; the empty selector matches everything.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Selector {
    text: String,
    requirements: Vec<Requirement>,
}

impl Selector {
    /// Whether `labels` satisfy every requirement.
    pub fn matches(&self, labels: Option<&BTreeMap<String, String>>) -> bool {
        let get = |k: &str| labels.and_then(|l| l.get(k));
        self.requirements.iter().all(|r| match r {
            Requirement::In(k, vs) => get(k).is_some_and(|v| vs.contains(v)),
            Requirement::NotIn(k, vs) => get(k).is_none_or(|v| !vs.contains(v)),
            Requirement::Exists(k) => get(k).is_some(),
            Requirement::Absent(k) => get(k).is_none(),
        })
    }
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl FromStr for Selector {
    type Err = SelectorError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = |reason: &str| SelectorError {
            selector: s.to_owned(),
            reason: reason.to_owned(),
        };
        let mut requirements = Vec::new();
        for part in split_top_level(s) {
            let part = part.trim();
            if part.is_empty() {
                if s.trim().is_empty() {
                    continue;
                }
                return Err(err("empty requirement between commas"));
            }
            requirements.push(parse_requirement(part).map_err(|r| err(&r))?);
        }
        Ok(Self {
            text: s.trim().to_owned(),
            requirements,
        })
    }
}

/// Splits on commas outside parentheses.
fn split_top_level(s: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let (mut depth, mut start) = (0i32, 0);
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&s[start..]);
    parts
}

fn parse_requirement(part: &str) -> Result<Requirement, String> {
    if let Some(key) = part.strip_prefix('!') {
        return Ok(Requirement::Absent(label_key(key.trim())?));
    }
    for (op, negated) in [("!=", true), ("==", false), ("=", false)] {
        if let Some((k, v)) = part.split_once(op) {
            let values = vec![label_value(v.trim())?];
            let key = label_key(k.trim())?;
            return Ok(if negated {
                Requirement::NotIn(key, values)
            } else {
                Requirement::In(key, values)
            });
        }
    }
    let mut words = part.splitn(2, char::is_whitespace);
    let key = label_key(words.next().unwrap_or_default())?;
    let Some(rest) = words.next().map(str::trim) else {
        return Ok(Requirement::Exists(key));
    };
    let (negated, list) = if let Some(l) = rest.strip_prefix("notin") {
        (true, l)
    } else if let Some(l) = rest.strip_prefix("in") {
        (false, l)
    } else {
        return Err(format!(
            "unknown operator in {part:?} (use =, ==, !=, in, notin)"
        ));
    };
    let list = list
        .trim()
        .strip_prefix('(')
        .and_then(|l| l.strip_suffix(')'))
        .ok_or_else(|| format!("{part:?}: the values must be in parentheses"))?;
    let values = list
        .split(',')
        .map(|v| label_value(v.trim()))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(if negated {
        Requirement::NotIn(key, values)
    } else {
        Requirement::In(key, values)
    })
}

fn label_key(k: &str) -> Result<String, String> {
    let name = k.rsplit('/').next().unwrap_or_default();
    if name.is_empty() || name.len() > 63 || !k.chars().all(label_char_or_slash) {
        return Err(format!("{k:?} is not a label key"));
    }
    Ok(k.to_owned())
}

fn label_value(v: &str) -> Result<String, String> {
    if v.len() > 63 || !v.chars().all(label_char) {
        return Err(format!("{v:?} is not a label value"));
    }
    Ok(v.to_owned())
}

fn label_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')
}

fn label_char_or_slash(c: char) -> bool {
    label_char(c) || c == '/'
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn sel(s: &str) -> Selector {
        s.parse().expect("selector parses")
    }

    #[test]
    fn every_operator_matches_as_kubectl_does() {
        let l = labels(&[
            ("app", "web"),
            ("env", "prod"),
            ("fedplane.io/tier", "edge"),
        ]);
        for (s, want) in [
            ("", true),
            ("app=web", true),
            ("app==web", true),
            ("app!=web", false),
            ("app!=db", true),
            ("missing!=x", true),
            ("env in (prod, staging)", true),
            ("env notin (prod)", false),
            ("missing notin (prod)", true),
            ("env in (dev)", false),
            ("canary", false),
            ("!canary", true),
            ("app", true),
            ("!app", false),
            ("app=web,env in (prod),!canary", true),
            ("app=web,env=dev", false),
            ("fedplane.io/tier=edge", true),
        ] {
            assert_eq!(sel(s).matches(Some(&l)), want, "{s}");
        }
        assert!(sel("!app").matches(None));
        assert!(!sel("app").matches(None));
    }

    #[test]
    fn malformed_selectors_are_refused_with_the_reason() {
        for s in [
            "app=web,,env=x",
            "env in prod",
            "env within (a)",
            "a b=c",
            "=x",
        ] {
            let e = s.parse::<Selector>().expect_err(s);
            assert_eq!(e.selector, s);
        }
    }
}
