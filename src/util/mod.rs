//! Small helpers shared by the pipeline stages.

pub mod atomic;
pub(crate) mod checks;
pub mod hash;
pub mod lock;
#[cfg(test)]
pub mod mutate;

/// Serde helpers for f64 fields that may be NaN or infinite (a diverged run's loss): JSON has no
/// such numbers, so they are written as `null` and read back as NaN, instead of making the
/// whole record unreadable.
pub mod json_f64 {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(x: &f64, s: S) -> Result<S::Ok, S::Error> {
        if x.is_finite() { s.serialize_f64(*x) } else { s.serialize_none() }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
        Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::NAN))
    }
}

/// [`json_f64`] for optional fields: `None` and non-finite values are both written as `null`.
pub mod json_opt_f64 {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(x: &Option<f64>, s: S) -> Result<S::Ok, S::Error> {
        match x {
            Some(v) if v.is_finite() => s.serialize_f64(*v),
            _ => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
        Option::<f64>::deserialize(d)
    }
}
