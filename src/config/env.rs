//! `${VAR}` substitution in every string of the raw YAML tree, before it is deserialized.

use serde_yaml::Value;

use super::ConfigError;

/// Replaces `${VAR}` in every string value of `value` with the variable from `lookup`.
/// `$${` stands for a literal `${`. The first unset or malformed reference is an error naming the
/// key path and the variable.
pub fn substitute(
    value: &mut Value,
    path: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<(), ConfigError> {
    match value {
        Value::String(s) => {
            if s.contains('$') {
                *s = expand(s, path, lookup)?;
            }
        }
        Value::Sequence(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                substitute(item, &format!("{path}[{i}]"), lookup)?;
            }
        }
        Value::Mapping(map) => {
            for (k, v) in map.iter_mut() {
                let key = match k {
                    Value::String(s) => s.clone(),
                    other => serde_yaml::to_string(other)
                        .unwrap_or_default()
                        .trim()
                        .to_string(),
                };
                let child = if path.is_empty() {
                    key
                } else {
                    format!("{path}.{key}")
                };
                substitute(v, &child, lookup)?;
            }
        }
        Value::Tagged(t) => substitute(&mut t.value, path, lookup)?,
        Value::Null | Value::Bool(_) | Value::Number(_) => {}
    }
    Ok(())
}

fn expand(
    input: &str,
    path: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<String, ConfigError> {
    let mut out = String::with_capacity(input.len());
    let mut rest = input;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        let after = &rest[pos..];
        if let Some(tail) = after.strip_prefix("$${") {
            out.push_str("${");
            rest = tail;
        } else if let Some(tail) = after.strip_prefix("${") {
            let Some(end) = tail.find('}') else {
                return Err(ConfigError::key(
                    path,
                    "unterminated \"${\" (write \"$${\" for a literal)",
                ));
            };
            let name = &tail[..end];
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return Err(ConfigError::key(
                    path,
                    format!("invalid environment variable name \"{name}\""),
                ));
            }
            match lookup(name) {
                Some(v) => out.push_str(&v),
                None => {
                    return Err(ConfigError::UnsetEnv {
                        key: path.to_string(),
                        var: name.to_string(),
                    })
                }
            }
            rest = &tail[end + 1..];
        } else {
            out.push('$');
            rest = &after[1..];
        }
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "A" => Some("alpha".into()),
            "EMPTY" => Some(String::new()),
            _ => None,
        }
    }

    #[test]
    fn expands_known_variables_and_escapes() {
        assert_eq!(expand("x${A}y", "k", &env).unwrap(), "xalphay");
        assert_eq!(expand("${A}${A}", "k", &env).unwrap(), "alphaalpha");
        assert_eq!(expand("$${A}", "k", &env).unwrap(), "${A}");
        assert_eq!(expand("cost $5", "k", &env).unwrap(), "cost $5");
        assert_eq!(expand("${EMPTY}", "k", &env).unwrap(), "");
    }

    #[test]
    fn unset_variable_names_key_and_variable() {
        let err = expand("${NOPE}", "providers.a.client_id", &env).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("providers.a.client_id"), "{msg}");
        assert!(msg.contains("NOPE"), "{msg}");
    }

    #[test]
    fn malformed_references_are_errors() {
        assert!(expand("${A", "k", &env).is_err());
        assert!(expand("${A-B}", "k", &env).is_err());
        assert!(expand("${}", "k", &env).is_err());
    }

    #[test]
    fn walks_nested_values_with_paths() {
        let mut v: Value = serde_yaml::from_str("a:\n  - b: ${NOPE}\n").unwrap();
        let err = substitute(&mut v, "", &env).unwrap_err();
        assert!(err.to_string().starts_with("a[0].b:"), "{err}");
    }
}
