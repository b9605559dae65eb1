//! Layering of config trees with strict key checking (nanoGPT's "unknown config key" rule,
//! zoology's dotted overrides). Values are merged as TOML before deserialising, so serde does
//! the type checking and names the offending field.

use anyhow::{Result, anyhow, bail};
use toml::Value;

/// Merges `over` into `base`. Every key of `over` must already exist in `base`.
pub fn merge_checked(base: &mut Value, over: Value, prefix: &str) -> Result<()> {
    let (Value::Table(base_table), Value::Table(over_table)) = (&mut *base, over) else {
        bail!("expected a table at `{prefix}`");
    };
    for (key, value) in over_table {
        let path = if prefix.is_empty() { key.clone() } else { format!("{prefix}.{key}") };
        let Some(slot) = base_table.get_mut(&key) else {
            return Err(unknown_key(&path, base_table.keys()));
        };
        if slot.is_table() {
            if !value.is_table() {
                bail!("`{path}` is a section; set its keys instead, e.g. `{path}.{}`", first_key(slot));
            }
            merge_checked(slot, value, &path)?;
        } else {
            *slot = value;
        }
    }
    Ok(())
}

/// Applies one `section.key=value` override. The value is read as a TOML literal
/// (`512`, `1e-3`, `true`, `"rms"`); a bare word that is not a literal is taken as a string.
pub fn apply_override(tree: &mut Value, set: &str) -> Result<()> {
    let (path, raw) =
        set.split_once('=').ok_or_else(|| anyhow!("override `{set}` must look like section.key=value"))?;
    let path = path.trim();
    let raw = raw.trim();
    let value = parse_literal(raw);
    let mut over = value;
    for part in path.split('.').rev() {
        if part.is_empty() {
            bail!("override `{set}` has an empty key segment");
        }
        let mut table = toml::map::Map::new();
        table.insert(part.to_string(), over);
        over = Value::Table(table);
    }
    merge_checked(tree, over, "")
}

fn parse_literal(raw: &str) -> Value {
    match toml::from_str::<toml::Table>(&format!("v = {raw}")) {
        Ok(mut t) => t.remove("v").expect("the key v was just written"),
        Err(_) => Value::String(raw.to_string()),
    }
}

fn first_key(v: &Value) -> String {
    v.as_table().and_then(|t| t.keys().next().cloned()).unwrap_or_default()
}

fn unknown_key<'a>(path: &str, valid: impl Iterator<Item = &'a String>) -> anyhow::Error {
    let valid: Vec<&String> = valid.collect();
    let leaf = path.rsplit('.').next().unwrap_or(path);
    let section = path.rsplit_once('.').map(|(s, _)| format!("{s}.")).unwrap_or_default();
    let suggestion = valid
        .iter()
        .map(|k| (edit_distance(leaf, k), k))
        .filter(|(d, _)| *d <= 2)
        .min()
        .map(|(_, k)| format!(" (did you mean `{section}{k}`?)"))
        .unwrap_or_default();
    let list = valid.iter().map(|k| k.as_str()).collect::<Vec<_>>().join(", ");
    anyhow!("unknown config key `{path}`{suggestion}; valid keys here: {list}")
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != *cb);
            cur.push(sub.min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distance_counts_transpositions_as_two() {
        assert_eq!(edit_distance("d_modle", "d_model"), 2);
        assert_eq!(edit_distance("lr", "lr"), 0);
    }

    #[test]
    fn section_cannot_be_replaced_by_a_scalar() {
        let mut tree: Value = toml::from_str("[a]\nb = 1").unwrap();
        assert!(apply_override(&mut tree, "a=3").is_err());
        apply_override(&mut tree, "a.b=3").unwrap();
        assert_eq!(tree["a"]["b"].as_integer(), Some(3));
    }
}
