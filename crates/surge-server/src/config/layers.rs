//! The layers settings are read from, later wins section by section: the
//! built-in defaults, the TOML file (read by the `config` crate), the
//! `SURGE_*` variables, the command-line flags. They are merged as JSON and
//! read into [`Settings`] strictly, with the path of a refused value in the
//! error: a decimal where a count is wanted, `yes` for a bool or a number
//! for a string is refused by name, never rounded or converted.
//!
//! A variable's value is typed by its form, as an operator writes it (`4`,
//! `true`, `[a, b]`); `nan`, `inf`, `1e3` or `007` stay strings.

use std::path::Path;

use ::config::{Config, File, FileFormat};
use serde::Serialize;
use serde_json::{Map, Number, Value};

use super::{ConfigError, DEFAULT_CONFIG_FILE, Settings};

/// Variables that are settings start with this (names compared lowercased);
/// `__` separates sections.
const PREFIX: &str = "surge_";
/// `SURGE_CONFIG` names the file itself (read by clap), not a setting.
const FILE_VARIABLE: &str = "surge_config";

/// Reads every layer. `file` is relative to `dir`; without it,
/// `surge.toml` in `dir` is read if present.
pub(super) fn read(
    dir: &Path,
    defaults: Value,
    file: Option<&Path>,
    variables: impl IntoIterator<Item = (String, String)>,
    flags: &impl Serialize,
) -> Result<Settings, ConfigError> {
    let file = match file.map(|file| dir.join(file)) {
        Some(path) if !path.exists() => return Err(ConfigError::MissingFile(path)),
        Some(path) => Some(path),
        None => Some(dir.join(DEFAULT_CONFIG_FILE)).filter(|path| path.exists()),
    };
    let unreadable = |error: &dyn std::fmt::Display| ConfigError::Unreadable(error.to_string());
    let mut merged = defaults;
    if let Some(path) = file {
        let text = Config::builder().add_source(File::from(path).format(FileFormat::Toml)).build();
        merge(&mut merged, text.and_then(Config::try_deserialize).map_err(|error| unreadable(&error))?);
    }
    merge(&mut merged, environment(variables));
    merge(&mut merged, serde_json::to_value(flags).map_err(|error| unreadable(&error))?);
    serde_path_to_error::deserialize(merged)
        .map_err(|error| ConfigError::Unreadable(format!("{}: {}", error.path(), error.inner())))
}

/// `layer` over `base`: tables merge key by key, anything else replaces.
fn merge(base: &mut Value, layer: Value) {
    match (base, layer) {
        (Value::Object(base), Value::Object(layer)) => {
            for (key, value) in layer {
                match base.get_mut(&key) {
                    Some(below) => merge(below, value),
                    None => {
                        base.insert(key, value);
                    }
                }
            }
        }
        (base, layer) => *base = layer,
    }
}

/// The `SURGE_*` variables as a tree of settings: `SURGE_CACHE__TTL=30s`
/// is `{"cache": {"ttl": "30s"}}`. Names are case-insensitive.
fn environment(variables: impl IntoIterator<Item = (String, String)>) -> Value {
    let mut root = Map::new();
    for (name, raw) in variables {
        let name = name.to_ascii_lowercase();
        let Some(key) = name.strip_prefix(PREFIX) else {
            continue;
        };
        if name == FILE_VARIABLE {
            continue;
        }
        let path: Vec<&str> = key.split("__").collect();
        // `SURGE_CACHE__=x` names no setting (as before the move off figment).
        if path.iter().any(|segment| segment.is_empty()) {
            continue;
        }
        insert(&mut root, &path, typed(&raw));
    }
    Value::Object(root)
}

fn insert(table: &mut Map<String, Value>, path: &[&str], value: Value) {
    match path {
        [] => {}
        [last] => {
            table.insert((*last).to_owned(), value);
        }
        [section, rest @ ..] => {
            let entry = table.entry((*section).to_owned()).or_insert_with(|| Value::Object(Map::new()));
            if !entry.is_object() {
                *entry = Value::Object(Map::new());
            }
            if let Value::Object(inner) = entry {
                insert(inner, rest, value);
            }
        }
    }
}

/// A variable's value typed by its form: a TOML inline table, list or
/// quoted string as TOML reads it (`{"1500" = "harbin"}`, `["a,b", "c"]`,
/// `"tab\t"`); `[a, b]` a list of its comma-separated items; `true` or
/// `false` a bool, an integer as written or a decimal with a point a number;
/// anything else the string as written.
fn typed(raw: &str) -> Value {
    let value = raw.trim();
    if value.starts_with(['{', '[', '"'])
        && let Ok(mut table) = format!("v = {value}").parse::<toml::Table>()
        && let Some(parsed) = table.remove("v").and_then(|parsed| serde_json::to_value(parsed).ok())
    {
        return parsed;
    }
    if let Some(inner) = value.strip_prefix('[').and_then(|rest| rest.strip_suffix(']')) {
        let items = items(inner);
        return Value::Array(items.iter().map(|item| scalar(item)).collect());
    }
    scalar(value)
}

/// A list's items: split at the commas outside double quotes, trimmed,
/// empty ones left out (`"a,b", c` is two items).
fn items(inner: &str) -> Vec<&str> {
    let (mut items, mut start, mut quoted) = (Vec::new(), 0, false);
    for (at, character) in inner.char_indices() {
        match character {
            '"' => quoted = !quoted,
            ',' if !quoted => {
                items.push(inner[start..at].trim());
                start = at + 1;
            }
            _ => {}
        }
    }
    items.push(inner[start..].trim());
    items.retain(|item| !item.is_empty());
    items
}

fn scalar(value: &str) -> Value {
    if let Some(quoted) = value.strip_prefix('"').and_then(|rest| rest.strip_suffix('"')) {
        return Value::String(quoted.to_owned());
    }
    if value.eq_ignore_ascii_case("true") || value.eq_ignore_ascii_case("false") {
        return Value::Bool(value.eq_ignore_ascii_case("true"));
    }
    // Written as the number reads back: `007` or `+5` stay strings.
    if let Ok(number) = value.parse::<i64>().map(Number::from).or_else(|_| value.parse::<u64>().map(Number::from))
        && number.to_string() == value
    {
        return Value::Number(number);
    }
    // Only a plain decimal with a point: an integer too large for 64 bits
    // stays a string, refused where a count is wanted rather than rounded.
    let decimal = value.bytes().all(|byte| byte.is_ascii_digit() || byte == b'.' || byte == b'-')
        && value.contains('.')
        && value.bytes().any(|byte| byte.is_ascii_digit());
    match value.parse::<f64>().ok().filter(|_| decimal).and_then(Number::from_f64) {
        Some(number) => Value::Number(number),
        None => Value::String(value.to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::{environment, typed};

    #[test]
    fn a_value_is_typed_by_its_form_and_odd_numbers_stay_strings() {
        assert_eq!(typed("4"), json!(4));
        assert_eq!(typed("18446744073709551615"), json!(u64::MAX));
        assert_eq!(typed("0.5"), json!(0.5));
        assert_eq!(typed("TRUE"), json!(true));
        assert_eq!(typed("30s"), json!("30s"));
        assert_eq!(typed("\"123\""), json!("123"));
        for odd in ["nan", "inf", "-infinity", "1e3", "99999999999999999999999", "007", "+5"] {
            assert_eq!(typed(odd), json!(odd), "{odd}");
        }
        assert_eq!(typed("[redis://a:1, \"redis://b:2\"]"), json!(["redis://a:1", "redis://b:2"]));
        assert_eq!(typed("[]"), json!([]));
        assert_eq!(typed(r#"["a,b", "c"]"#), json!(["a,b", "c"]));
        assert_eq!(typed(r#"["a,b", redis://c:1]"#), json!(["a,b", "redis://c:1"]), "quoted and bare");
        assert_eq!(typed(r#""tab\there""#), json!("tab\there"));
        assert_eq!(typed(r#"{ "1500" = "harbin-centre" }"#), json!({"1500": "harbin-centre"}));
    }

    #[test]
    fn variables_become_sections_and_others_are_left_out() {
        let variables = [
            ("SURGE_CACHE__TTL", "30s"),
            ("surge_node_id", "3"),
            ("SURGE_CONFIG", "surge.toml"),
            ("PATH", "/bin"),
            ("SURGE_CACHE", "flat"),
            ("SURGE_QUEUE__BREAKER__OPEN_FOR", "1s"),
            ("SURGE_CACHE__", "nameless"),
        ];
        let tree = environment(variables.map(|(name, value)| (name.to_owned(), value.to_owned())));
        assert_eq!(tree, json!({"cache": "flat", "node_id": 3, "queue": {"breaker": {"open_for": "1s"}}}));
    }
}
