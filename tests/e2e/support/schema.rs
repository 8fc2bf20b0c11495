//! A small JSON Schema checker for the plugins' result schemas
//! (`plugins/NAME/schema/COMMAND.json`): the subset they use (`type`, `enum`,
//! `properties`, `required`, `additionalProperties: false`, `items`, `minimum`,
//! `$ref` into `$defs`, and `format: date-time` read strictly as RFC 3339 in UTC).
//! A keyword outside that subset fails the check, so a schema cannot silently say
//! more than is tested.

use std::path::PathBuf;

use serde_json::Value;

/// The schema file of `command` (`github.commits`).
pub fn schema_path(command: &str) -> PathBuf {
    let (plugin, name) = command.split_once('.').expect("plugin.command");
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../plugins")
        .join(plugin)
        .join("schema")
        .join(format!("{name}.json"))
}

/// Checks `value` against the schema of `command`; panics naming each violation.
pub fn assert_matches_schema(command: &str, value: &Value) {
    let path = schema_path(command);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|err| panic!("no schema for {command} at {}: {err}", path.display()));
    let schema: Value = serde_json::from_str(&text).expect("a JSON schema");
    let mut errors = Vec::new();
    check(&schema, &schema, value, "$", &mut errors);
    assert!(
        errors.is_empty(),
        "{command}'s result does not match {}:\n{}\n{value:#}",
        path.display(),
        errors.join("\n")
    );
}

const KNOWN: &[&str] = &[
    "$schema",
    "$id",
    "$defs",
    "$ref",
    "title",
    "description",
    "type",
    "enum",
    "properties",
    "required",
    "additionalProperties",
    "items",
    "minimum",
    "format",
];

fn check(root: &Value, schema: &Value, value: &Value, at: &str, errors: &mut Vec<String>) {
    let schema = schema.as_object().expect("a schema is an object");
    for key in schema.keys() {
        assert!(
            KNOWN.contains(&key.as_str()),
            "unsupported schema keyword {key:?} at {at}"
        );
    }
    if let Some(reference) = schema.get("$ref") {
        let name = reference
            .as_str()
            .and_then(|r| r.strip_prefix("#/$defs/"))
            .expect("a $ref into $defs");
        check(root, &root["$defs"][name], value, at, errors);
    }
    if let Some(types) = schema.get("type") {
        let types: Vec<&str> = match types {
            Value::String(one) => vec![one.as_str()],
            Value::Array(many) => many.iter().filter_map(Value::as_str).collect(),
            _ => panic!("bad type at {at}"),
        };
        let actual = match value {
            Value::Null => "null",
            Value::Bool(_) => "boolean",
            Value::Number(number) if number.is_i64() || number.is_u64() => "integer",
            Value::Number(_) => "number",
            Value::String(_) => "string",
            Value::Array(_) => "array",
            Value::Object(_) => "object",
        };
        let fits = types.contains(&actual) || (actual == "integer" && types.contains(&"number"));
        if !fits {
            errors.push(format!("{at}: {actual} is not {types:?}"));
            return;
        }
    }
    if let Some(allowed) = schema.get("enum").and_then(Value::as_array)
        && !allowed.contains(value)
    {
        errors.push(format!("{at}: {value} is not one of {allowed:?}"));
    }
    if let (Some(minimum), Some(number)) = (schema.get("minimum"), value.as_f64())
        && number < minimum.as_f64().unwrap_or_default()
    {
        errors.push(format!("{at}: {number} is below {minimum}"));
    }
    if schema.get("format").and_then(Value::as_str) == Some("date-time")
        && let Some(text) = value.as_str()
        && !is_utc_rfc3339(text)
    {
        errors.push(format!("{at}: {text:?} is not an RFC 3339 UTC date-time"));
    }
    if let Some(object) = value.as_object() {
        let properties = schema.get("properties").and_then(Value::as_object);
        for name in schema
            .get("required")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
        {
            if !object.contains_key(name) {
                errors.push(format!("{at}: missing {name:?}"));
            }
        }
        for (name, field) in object {
            match properties.and_then(|properties| properties.get(name)) {
                Some(property) => check(root, property, field, &format!("{at}.{name}"), errors),
                None if schema.get("additionalProperties") == Some(&Value::Bool(false)) => {
                    errors.push(format!("{at}: unexpected {name:?}"));
                }
                None => {}
            }
        }
    }
    if let (Some(items), Some(array)) = (schema.get("items"), value.as_array()) {
        for (index, item) in array.iter().enumerate() {
            check(root, items, item, &format!("{at}[{index}]"), errors);
        }
    }
}

/// `YYYY-MM-DDTHH:MM:SS[.fraction]Z`.
fn is_utc_rfc3339(text: &str) -> bool {
    let bytes = text.as_bytes();
    let digits = |range: std::ops::Range<usize>| {
        bytes
            .get(range)
            .is_some_and(|part| part.iter().all(u8::is_ascii_digit))
    };
    let fixed = bytes.len() >= 20
        && digits(0..4)
        && bytes[4] == b'-'
        && digits(5..7)
        && bytes[7] == b'-'
        && digits(8..10)
        && bytes[10] == b'T'
        && digits(11..13)
        && bytes[13] == b':'
        && digits(14..16)
        && bytes[16] == b':'
        && digits(17..19);
    if !fixed || !text.ends_with('Z') {
        return false;
    }
    match &text[19..text.len() - 1] {
        "" => true,
        fraction => {
            fraction.len() > 1
                && fraction.starts_with('.')
                && fraction[1..].bytes().all(|b| b.is_ascii_digit())
        }
    }
}
