//! JSON-RPC 2.0 error type and the error codes SPDK clients expect.

use serde_json::{json, Value};

/// Standard JSON-RPC and SPDK module error codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    /// The bytes received are not valid JSON (-32700).
    ParseError,
    /// The JSON is not a valid request object (-32600).
    InvalidRequest,
    /// No such method, or not callable in the current state (-32601).
    MethodNotFound,
    /// Wrong, missing or mistyped parameters (-32602).
    InvalidParams,
    /// An unexpected failure inside the server (-32603).
    InternalError,
    /// A module error carrying a negative errno, as SPDK does (-19 ENODEV, -17 EEXIST, ...).
    Errno(i32),
}

impl ErrorCode {
    /// The numeric code sent on the wire.
    pub fn code(self) -> i64 {
        match self {
            ErrorCode::ParseError => -32700,
            ErrorCode::InvalidRequest => -32600,
            ErrorCode::MethodNotFound => -32601,
            ErrorCode::InvalidParams => -32602,
            ErrorCode::InternalError => -32603,
            ErrorCode::Errno(e) => -(e.abs() as i64),
        }
    }
}

/// An error answered to a JSON-RPC call: a code and a message a user can act on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message} (code {})", .code.code())]
pub struct RpcError {
    /// The error code.
    pub code: ErrorCode,
    /// Human-readable message; the same text is logged by the daemon.
    pub message: String,
}

impl RpcError {
    /// Builds an error from a code and a message.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        RpcError {
            code,
            message: message.into(),
        }
    }

    /// -32602: the parameters are wrong.
    pub fn invalid_params(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidParams, message)
    }

    /// -32603: something failed inside the server.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::InternalError, message)
    }

    /// A module error with a negative errno (pass the positive `libc::E*` constant).
    pub fn errno(errno: i32, message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Errno(errno), message)
    }

    /// The JSON-RPC `error` object.
    pub fn to_json(&self) -> Value {
        json!({"code": self.code.code(), "message": self.message})
    }
}

/// Deserialises `params` (absent or null counts as `{}`) into `T`, mapping failures to -32602
/// with a message that names the offending field (`block_size: invalid type: ...`).
pub fn parse_params<T: serde::de::DeserializeOwned>(params: Option<Value>) -> Result<T, RpcError> {
    let value = match params {
        None | Some(Value::Null) => Value::Object(Default::default()),
        Some(v) => v,
    };
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if path.is_empty() || path == "." {
            RpcError::invalid_params(format!("invalid parameters: {inner}"))
        } else {
            RpcError::invalid_params(format!("invalid parameter {path}: {inner}"))
        }
    })
}
