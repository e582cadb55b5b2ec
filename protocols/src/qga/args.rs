//! Command arguments, checked as QEMU's QAPI input visitor checks them: members in schema
//! order (the first missing or mistyped one is reported), nested names like
//! `vcpus[0].logical-id`, and unknown members reported after the known ones were visited.

use serde_json::{Map, Value};

use super::error::QgaError;

fn missing(name: &str) -> QgaError {
    QgaError::generic(format!("Parameter '{name}' is missing"))
}

fn bad_type(name: &str, expected: &str) -> QgaError {
    QgaError::generic(format!(
        "Invalid parameter type for '{name}', expected: {expected}"
    ))
}

/// A value read from one argument.
pub trait FromArg: Sized {
    /// Convert `v`, naming it `name` in errors.
    fn from_arg(v: &Value, name: &str) -> Result<Self, QgaError>;
}

impl FromArg for i64 {
    fn from_arg(v: &Value, name: &str) -> Result<Self, QgaError> {
        v.as_i64().ok_or_else(|| bad_type(name, "integer"))
    }
}

impl FromArg for String {
    fn from_arg(v: &Value, name: &str) -> Result<Self, QgaError> {
        v.as_str()
            .map(str::to_owned)
            .ok_or_else(|| bad_type(name, "string"))
    }
}

impl FromArg for bool {
    fn from_arg(v: &Value, name: &str) -> Result<Self, QgaError> {
        v.as_bool().ok_or_else(|| bad_type(name, "boolean"))
    }
}

impl<T: FromArg> FromArg for Vec<T> {
    fn from_arg(v: &Value, name: &str) -> Result<Self, QgaError> {
        let items = v.as_array().ok_or_else(|| bad_type(name, "array"))?;
        items
            .iter()
            .enumerate()
            .map(|(i, item)| T::from_arg(item, &format!("{name}[{i}]")))
            .collect()
    }
}

/// QAPI `uint64`: a non-negative integer up to 2^64-1; negative int64 values are accepted
/// and wrap, as QEMU accepts them for backward compatibility.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct U64(pub u64);

impl FromArg for U64 {
    fn from_arg(v: &Value, name: &str) -> Result<Self, QgaError> {
        if let Some(u) = v.as_u64() {
            return Ok(U64(u));
        }
        if let Some(i) = v.as_i64() {
            return Ok(U64(i as u64));
        }
        Err(QgaError::generic(format!(
            "Parameter '{name}' expects uint64"
        )))
    }
}

/// Reads the members of one object.
#[derive(Debug)]
pub struct Args<'a> {
    map: &'a Map<String, Value>,
    prefix: String,
    visited: Vec<&'a str>,
}

impl<'a> Args<'a> {
    /// The top-level `arguments` object.
    pub fn new(map: &'a Map<String, Value>) -> Self {
        Self {
            map,
            prefix: String::new(),
            visited: Vec::new(),
        }
    }

    /// A nested object named `name` (`vcpus[0]`), or its type error.
    pub fn nested(v: &'a Value, name: &str) -> Result<Self, QgaError> {
        let map = v.as_object().ok_or_else(|| bad_type(name, "object"))?;
        Ok(Self {
            map,
            prefix: name.to_owned(),
            visited: Vec::new(),
        })
    }

    fn name(&self, key: &str) -> String {
        if self.prefix.is_empty() {
            key.to_owned()
        } else {
            format!("{}.{key}", self.prefix)
        }
    }

    fn take(&mut self, key: &'a str) -> Option<&'a Value> {
        let v = self.map.get(key)?;
        self.visited.push(key);
        Some(v)
    }

    /// A required string member, borrowed: a `guest-file-write` buffer can be tens of MiB,
    /// and a copy of it would double the agent's peak memory.
    pub fn req_str(&mut self, key: &'a str) -> Result<&'a str, QgaError> {
        let name = self.name(key);
        let v = self.take(key).ok_or_else(|| missing(&name))?;
        v.as_str().ok_or_else(|| bad_type(&name, "string"))
    }

    /// A required member.
    pub fn req<T: FromArg>(&mut self, key: &'a str) -> Result<T, QgaError> {
        let name = self.name(key);
        let v = self.take(key).ok_or_else(|| missing(&name))?;
        T::from_arg(v, &name)
    }

    /// An optional member (`null` counts as present, as in QEMU).
    pub fn opt<T: FromArg>(&mut self, key: &'a str) -> Result<Option<T>, QgaError> {
        let name = self.name(key);
        self.take(key).map(|v| T::from_arg(v, &name)).transpose()
    }

    /// A required member converted by `f`.
    pub fn req_with<T>(
        &mut self,
        key: &'a str,
        f: impl FnOnce(&'a Value, &str) -> Result<T, QgaError>,
    ) -> Result<T, QgaError> {
        let name = self.name(key);
        let v = self.take(key).ok_or_else(|| missing(&name))?;
        f(v, &name)
    }

    /// An optional member converted by `f`.
    pub fn opt_with<T>(
        &mut self,
        key: &'a str,
        f: impl FnOnce(&'a Value, &str) -> Result<T, QgaError>,
    ) -> Result<Option<T>, QgaError> {
        let name = self.name(key);
        self.take(key).map(|v| f(v, &name)).transpose()
    }

    /// After every known member: an unknown one is an error.
    pub fn finish(self) -> Result<(), QgaError> {
        let keys: Vec<&str> = self.map.keys().map(String::as_str).collect();
        let order = super::json::qdict_order(&keys);
        match order.into_iter().find(|k| !self.visited.contains(k)) {
            Some(k) => Err(QgaError::generic(format!(
                "Parameter '{}' is unexpected",
                self.name(k)
            ))),
            None => Ok(()),
        }
    }
}

/// A list of objects, each read by `f`.
pub fn object_list<'a, T>(
    v: &'a Value,
    name: &str,
    mut f: impl FnMut(&mut Args<'a>) -> Result<T, QgaError>,
) -> Result<Vec<T>, QgaError> {
    let items = v.as_array().ok_or_else(|| bad_type(name, "array"))?;
    let mut out = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let mut a = Args::nested(item, &format!("{name}[{i}]"))?;
        let t = f(&mut a)?;
        a.finish()?;
        out.push(t);
    }
    Ok(out)
}

/// An enum given as a string.
pub fn enum_value<T: Copy>(v: &Value, name: &str, values: &[(&str, T)]) -> Result<T, QgaError> {
    let s = v.as_str().ok_or_else(|| bad_type(name, "string"))?;
    values
        .iter()
        .find(|(n, _)| *n == s)
        .map(|(_, t)| *t)
        .ok_or_else(|| QgaError::generic(format!("Parameter '{name}' does not accept value '{s}'")))
}

/// A QAPI alternate of an integer and an enum (`GuestFileWhence`).
pub fn int_or_enum<T: Copy>(
    v: &Value,
    name: &str,
    alternate: &str,
    values: &[(&str, T)],
) -> Result<Result<i64, T>, QgaError> {
    match v {
        Value::Number(_) => i64::from_arg(v, name).map(Ok),
        Value::String(_) => enum_value(v, name, values).map(Err),
        _ => Err(bad_type(name, alternate)),
    }
}

/// A QAPI alternate of a boolean and an enum (`GuestExecCaptureOutput`).
pub fn bool_or_enum<T: Copy>(
    v: &Value,
    name: &str,
    alternate: &str,
    values: &[(&str, T)],
) -> Result<Result<bool, T>, QgaError> {
    match v {
        Value::Bool(b) => Ok(Ok(*b)),
        Value::String(_) => enum_value(v, name, values).map(Err),
        _ => Err(bad_type(name, alternate)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn map(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn schema_order_then_unexpected() {
        let m = map(json!({"x": 1, "vcpus": [{"logical-id": 0}]}));
        let mut a = Args::new(&m);
        let err = a
            .req_with("vcpus", |v, n| {
                object_list(v, n, |o| {
                    let id: i64 = o.req("logical-id")?;
                    let online: bool = o.req("online")?;
                    Ok((id, online))
                })
            })
            .unwrap_err();
        assert_eq!(err.desc, "Parameter 'vcpus[0].online' is missing");

        let m = map(json!({"id": 1, "foo": 2}));
        let mut a = Args::new(&m);
        assert_eq!(a.req::<i64>("id").unwrap(), 1);
        assert_eq!(
            a.finish().unwrap_err().desc,
            "Parameter 'foo' is unexpected"
        );
    }

    #[test]
    fn type_errors() {
        let m = map(json!({"id": 1.5, "b": 1, "l": "x", "u": "x", "w": null}));
        let mut a = Args::new(&m);
        assert_eq!(
            a.req::<i64>("id").unwrap_err().desc,
            "Invalid parameter type for 'id', expected: integer"
        );
        assert_eq!(
            a.req::<bool>("b").unwrap_err().desc,
            "Invalid parameter type for 'b', expected: boolean"
        );
        assert_eq!(
            a.req::<Vec<String>>("l").unwrap_err().desc,
            "Invalid parameter type for 'l', expected: array"
        );
        assert_eq!(
            a.req::<U64>("u").unwrap_err().desc,
            "Parameter 'u' expects uint64"
        );
        assert_eq!(
            a.req_with("w", |v, n| int_or_enum(
                v,
                n,
                "GuestFileWhence",
                &[("set", 0)]
            ))
            .unwrap_err()
            .desc,
            "Invalid parameter type for 'w', expected: GuestFileWhence"
        );
        let l = json!([1, "x"]);
        assert_eq!(
            Vec::<String>::from_arg(&l, "mountpoints").unwrap_err().desc,
            "Invalid parameter type for 'mountpoints[0]', expected: string"
        );
    }
}
