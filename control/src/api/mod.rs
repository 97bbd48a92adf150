//! The RPC contract between plexd and its clients: each method's name with the types of its
//! params and result, as serde structs the daemon's handlers and `plexctl` both use.
//!
//! A method is a unit struct implementing [`RpcMethod`]; the daemon registers a typed handler
//! for it with [`MethodTable::typed`](crate::MethodTable::typed), and clients call it with
//! [`RpcClient::invoke`](crate::RpcClient::invoke) or build its params with
//! [`params_value`]. The JSON on the wire is SPDK's: field names, optional fields left out
//! where SPDK leaves them out, and params rejecting unknown fields where the daemon always did.
//! Each module's tests pin the JSON shape of its types, so a renamed field fails a test.
//!
//! Result fields that `plexctl` shows in its tables are [`Lenient`], so a reply from an older or
//! newer daemon still renders.
//!
//! Modules: [`framework`], [`bdev`], [`drivers`], [`vhost`], and the volume manager's
//! [`dg`], [`disk`], [`volume`] (with `vm_print`), [`plex`] (with `subdisk_move`), [`task`]
//! and [`raid`] (SPDK's `bdev_raid_*`).

/// Declares a method: a unit struct named for it with its [`RpcMethod`] impl.
macro_rules! method {
    ($(#[$doc:meta])* $name:ident, $method:literal, $params:ty, $result:ty) => {
        $(#[$doc])*
        pub struct $name;

        impl RpcMethod for $name {
            const METHOD: &'static str = $method;
            type Params = $params;
            type Result = $result;
        }
    };
}

pub mod bdev;
pub mod dg;
pub mod disk;
pub mod drivers;
pub mod framework;
mod lenient;
pub mod plex;
pub mod raid;
pub mod task;
pub mod vhost;
pub mod volume;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

pub use lenient::Lenient;

use crate::jsonrpc::{parse_params, RpcError};

/// One JSON-RPC method: its name, params and result.
pub trait RpcMethod {
    /// The method name on the wire.
    const METHOD: &'static str;
    /// What the method takes; absent or `null` params parse as `{}`.
    type Params: Serialize + DeserializeOwned;
    /// What the method answers.
    type Result: Serialize + DeserializeOwned;
}

/// Params of methods that take none (an empty object, absent or `null`; anything else is
/// refused).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NoParams {}

/// Runs a typed handler on raw params: parses them as `M::Params` (failures are -32602 naming
/// the field) and serialises the result.
pub fn serve<M: RpcMethod>(
    params: Option<Value>,
    handler: impl FnOnce(M::Params) -> Result<M::Result, RpcError>,
) -> Result<Value, RpcError> {
    let params: M::Params = parse_params(params)?;
    let result = handler(params)?;
    serde_json::to_value(result)
        .map_err(|e| RpcError::internal(format!("{}: cannot encode the result: {e}", M::METHOD)))
}

/// The params a client sends for `params`: none when they serialise to an empty object (the
/// daemon reads absent params as `{}`).
pub fn params_value<P: Serialize>(params: &P) -> Option<Value> {
    match serde_json::to_value(params) {
        Ok(Value::Object(map)) if map.is_empty() => None,
        Ok(Value::Null) => None,
        Ok(v) => Some(v),
        // Params are plain structs of strings, numbers and options: they always serialise.
        Err(_) => None,
    }
}

/// A `{"method", "params"}` entry of a saved config that calls `M`.
pub fn config_entry<M: RpcMethod>(params: &M::Params) -> Value {
    let mut entry = serde_json::Map::new();
    entry.insert("method".into(), Value::String(M::METHOD.into()));
    entry.insert(
        "params".into(),
        serde_json::to_value(params).unwrap_or(Value::Null),
    );
    Value::Object(entry)
}

#[cfg(test)]
pub(crate) mod golden {
    //! Shape checks shared by the modules' tests.

    use serde::de::DeserializeOwned;
    use serde::Serialize;
    use serde_json::Value;

    /// Asserts that `value` serialises to exactly `expected` and reads back to the same JSON.
    pub(crate) fn assert_shape<T: Serialize + DeserializeOwned>(value: &T, expected: Value) {
        let json = serde_json::to_value(value).expect("serialise");
        assert_eq!(json, expected, "wire shape changed");
        let back: T = serde_json::from_value(json.clone()).expect("read back");
        assert_eq!(
            serde_json::to_value(&back).expect("serialise again"),
            json,
            "round trip"
        );
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    struct Echo;
    impl RpcMethod for Echo {
        const METHOD: &'static str = "echo";
        type Params = bdev::GetBdevsParams;
        type Result = Vec<String>;
    }

    #[test]
    fn serve_parses_params_and_encodes_the_result() {
        let out = serve::<Echo>(Some(json!({"name": "M0"})), |p| {
            Ok(p.name.into_iter().collect())
        });
        assert_eq!(out, Ok(json!(["M0"])));
        let e = serve::<Echo>(Some(json!({"nme": "M0"})), |_| Ok(vec![])).unwrap_err();
        assert_eq!(e.code, crate::ErrorCode::InvalidParams);
    }

    #[test]
    fn empty_params_are_sent_as_none() {
        assert_eq!(params_value(&NoParams {}), None);
        assert_eq!(params_value(&bdev::GetBdevsParams::default()), None);
        assert_eq!(
            params_value(&bdev::GetBdevsParams {
                name: Some("M0".into()),
                ..Default::default()
            }),
            Some(json!({"name": "M0"}))
        );
    }

    #[test]
    fn no_params_refuses_fields() {
        assert!(parse_params::<NoParams>(None).is_ok());
        assert!(parse_params::<NoParams>(Some(json!({"x": 1}))).is_err());
    }
}
