//! Typed reading of a checkpoint's `config.json`.

use std::path::Path;

use anyhow::{Result, anyhow, bail};
use serde_json::Value;

/// Typed lookups in `config.json` with errors that name the file and the key.
pub(super) struct HfConfig<'a> {
    pub json: &'a Value,
    pub path: &'a Path,
}

impl HfConfig<'_> {
    pub fn get(&self, key: &str) -> Result<&Value> {
        self.json
            .get(key)
            .filter(|v| !v.is_null())
            .ok_or_else(|| anyhow!("{} has no `{key}`", self.path.display()))
    }
    pub fn str(&self, key: &str) -> Result<&str> {
        self.get(key)?.as_str().ok_or_else(|| anyhow!("{}: `{key}` is not a string", self.path.display()))
    }
    pub fn usize(&self, key: &str) -> Result<usize> {
        self.get(key)?
            .as_u64()
            .map(|v| v as usize)
            .ok_or_else(|| anyhow!("{}: `{key}` is not a non-negative integer", self.path.display()))
    }
    pub fn opt_usize(&self, key: &str) -> Result<Option<usize>> {
        if self.json.get(key).is_none_or(Value::is_null) { Ok(None) } else { self.usize(key).map(Some) }
    }
    pub fn f64(&self, key: &str) -> Result<f64> {
        self.get(key)?.as_f64().ok_or_else(|| anyhow!("{}: `{key}` is not a number", self.path.display()))
    }
    pub fn f64_or(&self, key: &str, default: f64) -> Result<f64> {
        if self.json.get(key).is_none_or(Value::is_null) { Ok(default) } else { self.f64(key) }
    }
    pub fn bool_or(&self, key: &str, default: bool) -> Result<bool> {
        match self.json.get(key) {
            None | Some(Value::Null) => Ok(default),
            Some(v) => {
                v.as_bool().ok_or_else(|| anyhow!("{}: `{key}` is not a boolean", self.path.display()))
            }
        }
    }
    pub fn expect_str_or(&self, key: &str, expected: &str) -> Result<()> {
        match self.json.get(key).and_then(Value::as_str) {
            None => Ok(()),
            Some(v) if v == expected => Ok(()),
            Some(v) => bail!("{}: `{key}` = `{v}` is not supported (only `{expected}`)", self.path.display()),
        }
    }
}
