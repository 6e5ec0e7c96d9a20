//! The CEL environment attribute mappings and conditions are compiled and evaluated in: CEL's
//! standard definitions (the `cel` crate, with `matches` for regular expressions) plus Google's
//! `string.extract(template)`.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, LazyLock};

use cel::common::ast::{EntryExpr, Expr, IdedExpr};
use cel::common::types::{CelString, STRING_TYPE};
use cel::common::value::{CowVal, Val};
use cel::objects::{Key, Map};
use cel::{Context, Env, ExecutionError, Program, Value as CelValue};
use serde_json::Value;

use super::extract::extract;

/// Type names an expression may mention as identifiers (`type(x) == string`).
const TYPE_IDENTIFIERS: [&str; 11] = [
    "bool",
    "bytes",
    "double",
    "dyn",
    "int",
    "list",
    "map",
    "null_type",
    "string",
    "type",
    "uint",
];

static ENV: LazyLock<Result<Arc<Env>, String>> = LazyLock::new(|| {
    let mut env = Env::stdlib();
    env.add_member_overload(
        "extract",
        "string_extract_string",
        STRING_TYPE,
        vec![STRING_TYPE],
        extract_overload,
    )
    .map_err(|e| e.to_string())?;
    Ok(Arc::new(env))
});

/// `string.extract(string) -> string`.
fn extract_overload<'b, 'v>(args: Vec<CowVal<'b, 'v>>) -> Result<CowVal<'b, 'v>, ExecutionError> {
    let [text, template] = args.as_slice() else {
        return Err(ExecutionError::invalid_argument_count(2, args.len()));
    };
    let (Some(text), Some(template)) = (
        text.downcast_ref::<CelString<'_>>(),
        template.downcast_ref::<CelString<'_>>(),
    ) else {
        return Err(ExecutionError::function_error(
            "extract",
            "expects a string receiver and a string template",
        ));
    };
    let value = extract(text.inner(), template.inner())
        .map_err(|e| ExecutionError::function_error("extract", e))?;
    Ok(CowVal::owned(CelString::from(value.to_owned())))
}

fn env() -> Result<&'static Arc<Env>, String> {
    ENV.as_ref()
        .map_err(|e| format!("the CEL environment could not be built: {e}"))
}

/// Compiles `source`. The error lists each syntax error as `line:column: message`.
pub(crate) fn compile(source: &str) -> Result<Program, String> {
    env()?.compile(source).map_err(|errors| {
        errors
            .errors
            .iter()
            .map(|e| format!("{}:{}: {}", e.pos.0, e.pos.1, e.msg))
            .collect::<Vec<_>>()
            .join("; ")
    })
}

/// Evaluates `program` with the given variables bound.
pub(crate) fn evaluate(
    program: &Program,
    variables: Vec<(&'static str, CelValue)>,
) -> Result<CelValue, String> {
    let mut ctx = Context::with_env(Arc::clone(env()?));
    for (name, value) in variables {
        let value = Box::<dyn Val>::try_from(value).map_err(|e| e.to_string())?;
        ctx.add_variable_as_val(name, value);
    }
    program.execute(&ctx).map_err(|e| e.to_string())
}

/// The identifiers `program` reads that no comprehension (`exists`, `all`, `map`, …) binds,
/// other than type names.
pub(crate) fn free_variables(program: &Program) -> BTreeSet<String> {
    let mut free = BTreeSet::new();
    walk(program.expression(), &mut Vec::new(), &mut free);
    free
}

fn walk<'e>(expr: &'e IdedExpr, bound: &mut Vec<&'e str>, free: &mut BTreeSet<String>) {
    match &expr.expr {
        Expr::Unspecified | Expr::Literal(_) => {}
        Expr::Ident(name) => {
            if !name.starts_with('@')
                && !bound.contains(&name.as_str())
                && !TYPE_IDENTIFIERS.contains(&name.as_str())
            {
                free.insert(name.clone());
            }
        }
        Expr::Call(call) => {
            if let Some(target) = &call.target {
                walk(target, bound, free);
            }
            for arg in &call.args {
                walk(arg, bound, free);
            }
        }
        Expr::Comprehension(c) => {
            walk(&c.iter_range, bound, free);
            walk(&c.accu_init, bound, free);
            let depth = bound.len();
            bound.push(&c.iter_var);
            if let Some(second) = &c.iter_var2 {
                bound.push(second);
            }
            bound.push(&c.accu_var);
            walk(&c.loop_cond, bound, free);
            walk(&c.loop_step, bound, free);
            bound.truncate(depth);
            bound.push(&c.accu_var);
            walk(&c.result, bound, free);
            bound.truncate(depth);
        }
        Expr::List(list) => {
            for element in &list.elements {
                walk(element, bound, free);
            }
        }
        Expr::Map(map) => walk_entries(&map.entries, bound, free),
        Expr::Struct(st) => walk_entries(&st.entries, bound, free),
        Expr::Select(select) => walk(&select.operand, bound, free),
    }
}

fn walk_entries<'e>(
    entries: &'e [cel::common::ast::IdedEntryExpr],
    bound: &mut Vec<&'e str>,
    free: &mut BTreeSet<String>,
) {
    for entry in entries {
        match &entry.expr {
            EntryExpr::StructField(field) => walk(&field.value, bound, free),
            EntryExpr::MapEntry(pair) => {
                walk(&pair.key, bound, free);
                walk(&pair.value, bound, free);
            }
        }
    }
}

/// A JSON value as CEL sees it: integers as `int` (or `uint` beyond `int`'s range), other
/// numbers as `double`, objects as maps with string keys.
pub(crate) fn from_json(value: &Value) -> CelValue {
    match value {
        Value::Null => CelValue::Null,
        Value::Bool(b) => CelValue::Bool(*b),
        Value::Number(n) => match (n.as_i64(), n.as_u64()) {
            (Some(i), _) => CelValue::Int(i),
            (None, Some(u)) => CelValue::UInt(u),
            (None, None) => CelValue::Float(n.as_f64().unwrap_or(f64::NAN)),
        },
        Value::String(s) => CelValue::String(Arc::new(s.clone())),
        Value::Array(items) => CelValue::List(Arc::new(items.iter().map(from_json).collect())),
        Value::Object(fields) => {
            let map: HashMap<Key, CelValue> = fields
                .iter()
                .map(|(k, v)| (Key::from(k.clone()), from_json(v)))
                .collect();
            CelValue::Map(Map { map: Arc::new(map) })
        }
    }
}

/// A map with string keys.
pub(crate) fn string_map(entries: impl IntoIterator<Item = (String, CelValue)>) -> CelValue {
    let map: HashMap<Key, CelValue> = entries
        .into_iter()
        .map(|(k, v)| (Key::from(k), v))
        .collect();
    CelValue::Map(Map { map: Arc::new(map) })
}

/// A list of strings.
pub(crate) fn string_list(items: &[String]) -> CelValue {
    CelValue::List(Arc::new(
        items
            .iter()
            .map(|s| CelValue::String(Arc::new(s.clone())))
            .collect(),
    ))
}

/// The CEL type name of a value, for messages.
pub(crate) fn type_name(value: &CelValue) -> &'static str {
    match value {
        CelValue::List(_) => "list",
        CelValue::Map(_) => "map",
        CelValue::Function(..) => "function",
        CelValue::Int(_) => "int",
        CelValue::UInt(_) => "uint",
        CelValue::Float(_) => "double",
        CelValue::String(_) => "string",
        CelValue::Bytes(_) => "bytes",
        CelValue::Bool(_) => "bool",
        CelValue::Null => "null",
        _ => "another type",
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn eval(source: &str, assertion: Value) -> Result<CelValue, String> {
        let program = compile(source)?;
        evaluate(&program, vec![("assertion", from_json(&assertion))])
    }

    #[test]
    fn extract_is_a_member_function() {
        let v = eval(
            "assertion.sub.extract('/ns/{ns}/')",
            json!({"sub": "spiffe://example.org/ns/prod/sa/billing"}),
        );
        assert_eq!(v, Ok(CelValue::String(Arc::new("prod".to_owned()))));
        let v = eval("'abc'.extract('x{v}')", json!({}));
        assert_eq!(v, Ok(CelValue::String(Arc::new(String::new()))));
        let err = eval("'abc'.extract('nothing')", json!({})).unwrap_err();
        assert!(err.contains("placeholder"), "{err}");
        assert!(eval("extract('abc', '{v}')", json!({})).is_err());
        assert!(eval("(1).extract('{v}')", json!({})).is_err());
    }

    #[test]
    fn json_numbers_are_ints() {
        assert_eq!(
            eval("assertion.iat + 1", json!({"iat": 41})),
            Ok(CelValue::Int(42))
        );
        assert_eq!(
            eval("assertion.big", json!({"big": u64::MAX})),
            Ok(CelValue::UInt(u64::MAX))
        );
        assert_eq!(
            eval("assertion.f", json!({"f": 1.5})),
            Ok(CelValue::Float(1.5))
        );
        assert_eq!(
            eval(
                "'admins' in assertion.groups",
                json!({"groups": ["devs", "admins"]})
            ),
            Ok(CelValue::Bool(true))
        );
        assert_eq!(
            eval(
                "assertion.repo.matches('^org/.*$')",
                json!({"repo": "org/app"})
            ),
            Ok(CelValue::Bool(true))
        );
    }

    #[test]
    fn free_variables_skip_comprehension_variables() {
        let p = compile(
            "assertion.groups.exists(g, g == attribute.team) && google.subject != '' && type(x) == string",
        )
        .unwrap();
        let free: Vec<String> = free_variables(&p).into_iter().collect();
        assert_eq!(free, ["assertion", "attribute", "google", "x"]);
        let p = compile("[1, 2].map(i, i * k).all(j, j > 0)").unwrap();
        let free: Vec<String> = free_variables(&p).into_iter().collect();
        assert_eq!(free, ["k"]);
    }

    #[test]
    fn syntax_errors_have_positions() {
        let err = compile("assertion.arn ==").unwrap_err();
        assert!(err.starts_with("1:"), "{err}");
    }
}
