//! Reading host objects (KubeVirt, Harvester, snapshot CRDs) into the driver's typed
//! views. The views name only the fields the driver uses; unknown fields are ignored,
//! absent and `null` ones read as empty. A field of the wrong type is an error that
//! names the object and the field: the host's CRD schemas rule that out, so it means a
//! host this driver does not understand, which must not pass for "absent".

use kube::api::DynamicObject;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer};

use crate::error::{Error, Result};

/// A dynamic object as the typed view `T` (`kind` names it in the error).
pub(super) fn typed<T: DeserializeOwned>(obj: &DynamicObject, kind: &str) -> Result<T> {
    let name = obj.metadata.name.as_deref().unwrap_or("<unnamed>");
    let value = serde_json::to_value(obj).map_err(|e| Error::Internal(format!("reading {kind} {name}: {e}")))?;
    from_json(value, &format!("{kind} {name}"))
}

/// A JSON value as the typed view `T`; the error names `what` and the offending field.
pub(super) fn from_json<T: DeserializeOwned>(value: serde_json::Value, what: &str) -> Result<T> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        Error::Internal(format!("{what} is not shaped as this driver expects: at {}: {}", e.path(), e.inner()))
    })
}

/// For `#[serde(default, deserialize_with = "or_default")]`: `null` reads like an absent field.
pub(super) fn or_default<'de, D, T>(d: D) -> std::result::Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;
    use serde_json::json;

    #[derive(Debug, Default, Deserialize, PartialEq)]
    #[serde(rename_all = "camelCase")]
    struct Outer {
        #[serde(default, deserialize_with = "or_default")]
        inner: Inner,
        name: Option<String>,
    }

    #[derive(Debug, Default, Deserialize, PartialEq)]
    struct Inner {
        flag: Option<bool>,
    }

    #[rstest]
    #[case::absent(json!({}), Outer::default())]
    #[case::null(json!({"inner": null, "name": null}), Outer::default())]
    #[case::unknown_fields_ignored(json!({"inner": {"flag": true, "x": 1}, "y": [1]}), Outer { inner: Inner { flag: Some(true) }, name: None })]
    fn absent_null_and_unknown(#[case] v: serde_json::Value, #[case] want: Outer) {
        assert_eq!(from_json::<Outer>(v, "test object").expect("parses"), want);
    }

    #[test]
    fn a_wrong_type_names_the_object_and_field() {
        let err =
            from_json::<Outer>(json!({"inner": {"flag": "yes"}}), "VirtualMachine vm-1").expect_err("string flag");
        let msg = err.to_string();
        assert!(msg.contains("VirtualMachine vm-1") && msg.contains("inner.flag"), "{msg}");
    }
}
