//! Payload filters: evaluation of a Qdrant-style [`Filter`] against a stored JSON payload.

use abi_protocol::vector::{Condition, Filter, MatchValue, PointId, Range};
use serde_json::Value;

/// Checks a filter for mistakes that would otherwise only show up as empty results.
pub fn validate(filter: &Filter) -> Result<(), String> {
    for c in filter
        .must
        .iter()
        .chain(&filter.should)
        .chain(&filter.must_not)
    {
        match c {
            Condition::Match { key, .. } | Condition::MatchAny { key, .. } if key.is_empty() => {
                return Err("filter condition with an empty key".into());
            }
            Condition::Range { key, range } => {
                if key.is_empty() {
                    return Err("filter condition with an empty key".into());
                }
                let bounds = [range.gt, range.gte, range.lt, range.lte];
                if bounds.iter().all(Option::is_none) {
                    return Err(format!("range on {key:?} has no bound"));
                }
                if bounds.iter().flatten().any(|b| !b.is_finite()) {
                    return Err(format!("range on {key:?} has a non-finite bound"));
                }
            }
            Condition::Nested(f) => validate(f)?,
            _ => {}
        }
    }
    Ok(())
}

/// Values at a dotted path; arrays along the way are flattened (Qdrant semantics).
fn lookup<'a>(payload: &'a Value, key: &str, out: &mut Vec<&'a Value>) {
    fn walk<'a>(v: &'a Value, parts: &[&str], out: &mut Vec<&'a Value>) {
        match (parts.split_first(), v) {
            (None, Value::Array(items)) => out.extend(items.iter()),
            (None, v) => out.push(v),
            (Some(_), Value::Array(items)) => {
                for it in items {
                    walk(it, parts, out);
                }
            }
            (Some((head, rest)), Value::Object(map)) => {
                if let Some(child) = map.get(*head) {
                    walk(child, rest, out);
                }
            }
            (Some(_), _) => {}
        }
    }
    let parts: Vec<&str> = key.split('.').collect();
    walk(payload, &parts, out);
}

fn value_matches(v: &Value, m: &MatchValue) -> bool {
    match (v, m) {
        (Value::String(s), MatchValue::Str(x)) => s == x,
        (Value::Bool(b), MatchValue::Bool(x)) => b == x,
        (Value::Number(n), MatchValue::Int(x)) => n.as_i64() == Some(*x),
        _ => false,
    }
}

fn in_range(v: &Value, r: &Range) -> bool {
    let Some(x) = v.as_f64() else {
        return false;
    };
    r.gt.is_none_or(|b| x > b)
        && r.gte.is_none_or(|b| x >= b)
        && r.lt.is_none_or(|b| x < b)
        && r.lte.is_none_or(|b| x <= b)
}

fn condition(c: &Condition, id: PointId, payload: &Value) -> bool {
    let mut vals = Vec::new();
    match c {
        Condition::Match { key, value } => {
            lookup(payload, key, &mut vals);
            vals.iter().any(|v| value_matches(v, value))
        }
        Condition::MatchAny { key, any } => {
            lookup(payload, key, &mut vals);
            vals.iter().any(|v| any.iter().any(|m| value_matches(v, m)))
        }
        Condition::Range { key, range } => {
            lookup(payload, key, &mut vals);
            vals.iter().any(|v| in_range(v, range))
        }
        Condition::HasId(ids) => ids.contains(&id),
        Condition::Nested(f) => matches(f, id, payload),
    }
}

/// Whether a point passes the filter.
pub fn matches(filter: &Filter, id: PointId, payload: &Value) -> bool {
    filter.must.iter().all(|c| condition(c, id, payload))
        && (filter.should.is_empty() || filter.should.iter().any(|c| condition(c, id, payload)))
        && !filter.must_not.iter().any(|c| condition(c, id, payload))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn key_match(key: &str, value: MatchValue) -> Condition {
        Condition::Match {
            key: key.into(),
            value,
        }
    }

    #[test]
    fn equality_range_any_and_nesting() {
        let p = json!({"city": "Paris", "n": 7, "tags": ["a", "b"], "meta": {"ok": true}});
        let id = PointId::Num(1);
        let f = Filter {
            must: vec![
                key_match("city", MatchValue::Str("Paris".into())),
                key_match("tags", MatchValue::Str("b".into())),
                key_match("meta.ok", MatchValue::Bool(true)),
                Condition::Range {
                    key: "n".into(),
                    range: Range {
                        gte: Some(7.0),
                        lt: Some(8.0),
                        ..Range::default()
                    },
                },
            ],
            should: vec![
                Condition::MatchAny {
                    key: "n".into(),
                    any: vec![MatchValue::Int(3), MatchValue::Int(7)],
                },
                Condition::HasId(vec![PointId::Num(99)]),
            ],
            must_not: vec![key_match("city", MatchValue::Str("Rome".into()))],
        };
        assert!(matches(&f, id, &p));
        let mut g = f.clone();
        g.must_not.push(Condition::HasId(vec![id]));
        assert!(!matches(&g, id, &p));
        let mut h = f.clone();
        h.must.push(Condition::Range {
            key: "n".into(),
            range: Range {
                gt: Some(7.0),
                ..Range::default()
            },
        });
        assert!(!matches(&h, id, &p));
        // A missing field never matches, a string is not a number.
        assert!(!matches(
            &Filter {
                must: vec![key_match("missing", MatchValue::Int(1))],
                ..Filter::default()
            },
            id,
            &p
        ));
        assert!(!matches(
            &Filter {
                must: vec![key_match("city", MatchValue::Int(1))],
                ..Filter::default()
            },
            id,
            &p
        ));
    }

    #[test]
    fn validation_rejects_empty_ranges() {
        let f = Filter {
            must: vec![Condition::Range {
                key: "n".into(),
                range: Range::default(),
            }],
            ..Filter::default()
        };
        assert!(validate(&f).is_err());
    }
}
