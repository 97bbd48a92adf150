//! A blocking JSON-RPC 2.0 client for plexd's Unix socket, used by `plexctl` and the tests.
//!
//! Like the server, it does not rely on newlines: the reply is read as one JSON value from the
//! stream, however the server splits it.

use std::io::{self, ErrorKind, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{json, Deserializer, Value};

use crate::api::{params_value, RpcMethod};
use crate::jsonrpc::{ErrorCode, RpcError};

/// Why a call did not return a result.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The socket could not be reached.
    #[error("cannot connect to the RPC socket {}; is plexd running?", .path.display())]
    Connect {
        /// The socket path.
        path: PathBuf,
        /// The underlying failure.
        #[source]
        source: io::Error,
    },
    /// Sending or receiving failed, or no reply came within the timeout.
    #[error("RPC socket I/O failed")]
    Io(#[from] io::Error),
    /// The server sent something that is not a valid JSON-RPC reply.
    #[error("invalid reply from the RPC server: {0}")]
    Protocol(String),
    /// The server answered with an error; displays the server's message.
    #[error("{}", .0.message)]
    Rpc(RpcError),
}

impl ClientError {
    /// The JSON-RPC error code when the server answered with an error.
    pub fn rpc_code(&self) -> Option<i64> {
        self.rpc_error().map(|e| e.code.code())
    }

    /// The server's error when it answered with one.
    pub fn rpc_error(&self) -> Option<&RpcError> {
        match self {
            ClientError::Rpc(e) => Some(e),
            _ => None,
        }
    }
}

/// Turns a JSON-RPC `error` object back into an [`RpcError`]; `None` if it is malformed or its
/// code is not one plexd could send (a non-negative or out-of-range number).
pub fn rpc_error_from_json(error: &Value) -> Option<RpcError> {
    let code = error.get("code")?.as_i64()?;
    let message = error.get("message")?.as_str()?;
    let code = match code {
        -32700 => ErrorCode::ParseError,
        -32600 => ErrorCode::InvalidRequest,
        -32601 => ErrorCode::MethodNotFound,
        -32602 => ErrorCode::InvalidParams,
        -32603 => ErrorCode::InternalError,
        c if c < 0 => ErrorCode::Errno(i32::try_from(-c).ok()?),
        _ => return None,
    };
    Some(RpcError::new(code, message))
}

/// A connection to the plexd RPC socket. Calls are sequential; ids increase from 1.
pub struct RpcClient {
    stream: UnixStream,
    next_id: u64,
    buf: Vec<u8>,
    timeout: Option<Duration>,
}

impl RpcClient {
    /// Connects to the server listening on `path`.
    pub fn connect(path: &Path) -> Result<Self, ClientError> {
        let stream = UnixStream::connect(path).map_err(|source| ClientError::Connect {
            path: path.to_path_buf(),
            source,
        })?;
        Ok(RpcClient {
            stream,
            next_id: 1,
            buf: Vec::new(),
            timeout: None,
        })
    }

    /// Limits how long each send and each wait for a reply may take; `None` waits forever.
    /// A zero duration is treated as one millisecond.
    pub fn set_timeout(&mut self, timeout: Option<Duration>) {
        let timeout = timeout.map(|t| t.max(Duration::from_millis(1)));
        self.timeout = timeout;
        // These only fail for a zero duration, which is excluded above.
        let _ = self.stream.set_read_timeout(timeout);
        let _ = self.stream.set_write_timeout(timeout);
    }

    /// Calls `method` and returns its result. `params: None` omits the `params` member.
    pub fn call(&mut self, method: &str, params: Option<Value>) -> Result<Value, ClientError> {
        let id = self.next_id;
        self.next_id += 1;
        let mut request = json!({"jsonrpc": "2.0", "method": method, "id": id});
        if let Some(params) = params {
            request["params"] = params;
        }
        self.send(&request)?;
        loop {
            let reply = self.read_value()?;
            match reply.get("id") {
                Some(Value::Number(n)) if n.as_u64() == Some(id) => return parse_reply(reply),
                // A connection-level error (parse error, limits) is not tied to a request.
                None | Some(Value::Null) if reply.get("error").is_some() => {
                    return parse_reply(reply)
                }
                // A late reply to an earlier call that timed out.
                Some(Value::Number(n)) if n.as_u64().is_some_and(|n| n < id) => {
                    tracing::debug!(id = %n, "skipping reply to an earlier call");
                }
                _ => {
                    return Err(ClientError::Protocol(format!(
                        "expected the reply to request {id}, got {reply}"
                    )))
                }
            }
        }
    }

    /// Calls the typed method `M`: sends its params (none if they are empty) and reads the
    /// result as `M::Result`.
    pub fn invoke<M: RpcMethod>(&mut self, params: &M::Params) -> Result<M::Result, ClientError> {
        let result = self.call(M::METHOD, params_value(params))?;
        serde_json::from_value(result)
            .map_err(|e| ClientError::Protocol(format!("{} result: {e}", M::METHOD)))
    }

    /// Sends a notification (a request without `id`); the server sends no reply.
    pub fn notify(&mut self, method: &str, params: Option<Value>) -> Result<(), ClientError> {
        let mut request = json!({"jsonrpc": "2.0", "method": method});
        if let Some(params) = params {
            request["params"] = params;
        }
        self.send(&request)
    }

    fn send(&mut self, request: &Value) -> Result<(), ClientError> {
        let mut bytes = request.to_string().into_bytes();
        bytes.push(b'\n');
        self.stream.write_all(&bytes).map_err(|e| self.io_error(e))
    }

    /// Reads exactly one JSON value, keeping whatever follows it for the next read.
    fn read_value(&mut self) -> Result<Value, ClientError> {
        let mut chunk = vec![0u8; 64 * 1024];
        loop {
            let mut values = Deserializer::from_slice(&self.buf).into_iter::<Value>();
            match values.next() {
                Some(Ok(value)) => {
                    let used = values.byte_offset();
                    self.buf.drain(..used);
                    return Ok(value);
                }
                Some(Err(e)) if !e.is_eof() => {
                    return Err(ClientError::Protocol(format!("reply is not JSON: {e}")))
                }
                Some(Err(_)) => {}
                None => self.buf.clear(),
            }
            let n = match self.stream.read(&mut chunk) {
                Ok(n) => n,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => return Err(self.io_error(e)),
            };
            if n == 0 {
                let when = if self.buf.is_empty() {
                    "before"
                } else {
                    "in the middle of"
                };
                return Err(ClientError::Protocol(format!(
                    "the server closed the connection {when} its reply"
                )));
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    fn io_error(&self, e: io::Error) -> ClientError {
        match (e.kind(), self.timeout) {
            (ErrorKind::WouldBlock | ErrorKind::TimedOut, Some(t)) => {
                ClientError::Io(io::Error::new(
                    ErrorKind::TimedOut,
                    format!("the RPC server did not respond within {t:?}"),
                ))
            }
            _ => ClientError::Io(e),
        }
    }
}

/// Splits a reply object into its result or its error.
fn parse_reply(reply: Value) -> Result<Value, ClientError> {
    let Value::Object(mut obj) = reply else {
        return Err(ClientError::Protocol(format!(
            "reply is not an object: {reply}"
        )));
    };
    if let Some(error) = obj.get("error") {
        return Err(match rpc_error_from_json(error) {
            Some(e) => ClientError::Rpc(e),
            None => ClientError::Protocol(format!("malformed error object: {error}")),
        });
    }
    obj.remove("result")
        .ok_or_else(|| ClientError::Protocol("reply has neither result nor error".into()))
}

#[cfg(test)]
mod tests {
    use std::os::unix::net::UnixListener;
    use std::sync::Arc;
    use std::thread::{self, JoinHandle};

    use super::*;
    use crate::server::{Frame, FrameBuffer, RpcServer, ServerLimits};

    /// A hand-written server: runs `script` on the first connection.
    fn fake_server<F>(script: F) -> (tempfile::TempDir, PathBuf, JoinHandle<()>)
    where
        F: FnOnce(UnixStream) + Send + 'static,
    {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("fake.sock");
        let listener = UnixListener::bind(&path).expect("bind");
        let handle = thread::spawn(move || {
            let (stream, _) = listener.accept().expect("accept");
            script(stream);
        });
        (dir, path, handle)
    }

    /// Reads one request the way the real server does.
    fn read_request(stream: &mut UnixStream, frames: &mut FrameBuffer) -> Value {
        let mut chunk = [0u8; 256];
        loop {
            match frames.next_frame() {
                Frame::Value(v) => return v,
                Frame::NeedMore => {}
                other => panic!("bad request: {other:?}"),
            }
            let n = stream.read(&mut chunk).expect("read");
            assert!(n > 0, "client closed early");
            frames.push(&chunk[..n]);
        }
    }

    #[test]
    fn error_objects_map_back_to_codes() {
        let cases = [
            (-32700, Some(ErrorCode::ParseError)),
            (-32600, Some(ErrorCode::InvalidRequest)),
            (-32601, Some(ErrorCode::MethodNotFound)),
            (-32602, Some(ErrorCode::InvalidParams)),
            (-32603, Some(ErrorCode::InternalError)),
            (-19, Some(ErrorCode::Errno(19))),
            (-17, Some(ErrorCode::Errno(17))),
            (5, None),
            (-(1i64 << 40), None),
        ];
        for (code, want) in cases {
            let got = rpc_error_from_json(&json!({"code": code, "message": "m"}));
            assert_eq!(got.map(|e| e.code), want, "code {code}");
        }
        assert_eq!(rpc_error_from_json(&json!({"code": -19})), None);
        assert_eq!(
            rpc_error_from_json(&json!({"code": "x", "message": "m"})),
            None
        );
    }

    #[test]
    fn ids_increase_and_split_pretty_replies_are_read_whole() {
        let (_dir, path, server) = fake_server(|mut s| {
            let mut frames = FrameBuffer::new(1 << 20);
            for want_id in 1..=2u64 {
                let req = read_request(&mut s, &mut frames);
                assert_eq!(req["id"], json!(want_id));
                assert_eq!(req["jsonrpc"], "2.0");
                assert_eq!(req["method"], "bdev_get_bdevs");
                assert_eq!(req.get("params").is_some(), want_id == 2);
                let reply = serde_json::to_string_pretty(&json!({
                    "jsonrpc": "2.0", "id": want_id, "result": [{"name": "Malloc0"}]
                }))
                .expect("serialize");
                for b in reply.as_bytes() {
                    s.write_all(std::slice::from_ref(b)).expect("write");
                }
            }
        });
        let mut client = RpcClient::connect(&path).expect("connect");
        for params in [None, Some(json!({"name": "Malloc0"}))] {
            let got = client.call("bdev_get_bdevs", params).expect("call");
            assert_eq!(got, json!([{"name": "Malloc0"}]));
        }
        server.join().expect("fake server");
    }

    #[test]
    fn stale_replies_are_skipped_and_mismatched_ones_rejected() {
        let (_dir, path, server) = fake_server(|mut s| {
            let mut frames = FrameBuffer::new(1 << 20);
            read_request(&mut s, &mut frames);
            let stale =
                r#"{"jsonrpc":"2.0","id":0,"result":"old"}{"jsonrpc":"2.0","id":1,"result":"new"}"#;
            s.write_all(stale.as_bytes()).expect("write");
            read_request(&mut s, &mut frames);
            s.write_all(br#"{"jsonrpc":"2.0","id":9,"result":"future"}"#)
                .expect("write");
        });
        let mut client = RpcClient::connect(&path).expect("connect");
        assert_eq!(client.call("a", None).expect("call"), json!("new"));
        let err = client.call("b", None).expect_err("wrong id");
        assert!(matches!(err, ClientError::Protocol(_)), "{err:?}");
        server.join().expect("fake server");
    }

    #[test]
    fn server_errors_display_the_server_message() {
        let (_dir, path, server) = fake_server(|mut s| {
            let mut frames = FrameBuffer::new(1 << 20);
            read_request(&mut s, &mut frames);
            s.write_all(
                br#"{"jsonrpc":"2.0","id":1,"error":{"code":-19,"message":"no such bdev"}}"#,
            )
            .expect("write");
        });
        let mut client = RpcClient::connect(&path).expect("connect");
        let err = client
            .call("bdev_malloc_delete", None)
            .expect_err("error reply");
        assert_eq!(err.to_string(), "no such bdev");
        assert_eq!(err.rpc_code(), Some(-19));
        assert_eq!(err.rpc_error().map(|e| e.code), Some(ErrorCode::Errno(19)));
        server.join().expect("fake server");
    }

    #[test]
    fn closing_without_a_reply_is_a_protocol_error() {
        let (_dir, path, server) = fake_server(|mut s| {
            let mut frames = FrameBuffer::new(1 << 20);
            read_request(&mut s, &mut frames);
            s.write_all(br#"{"jsonrpc":"2.0","#).expect("write");
        });
        let mut client = RpcClient::connect(&path).expect("connect");
        let err = client.call("x", None).expect_err("no reply");
        match err {
            ClientError::Protocol(m) => assert!(m.contains("in the middle of"), "{m}"),
            other => panic!("expected a protocol error, got {other:?}"),
        }
        server.join().expect("fake server");
    }

    #[test]
    fn timeout_gives_an_io_error() {
        let (_dir, path, server) = fake_server(|mut s| {
            let mut frames = FrameBuffer::new(1 << 20);
            read_request(&mut s, &mut frames);
            // Never answer; wait for the client to give up and close.
            let _ = s.read_to_end(&mut Vec::new());
        });
        let mut client = RpcClient::connect(&path).expect("connect");
        client.set_timeout(Some(Duration::from_millis(100)));
        match client.call("x", None) {
            Err(ClientError::Io(e)) => assert_eq!(e.kind(), ErrorKind::TimedOut),
            other => panic!("expected a timeout, got {other:?}"),
        }
        drop(client);
        server.join().expect("fake server");
    }

    #[test]
    fn connect_failure_names_the_path() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("missing.sock");
        match RpcClient::connect(&path) {
            Err(e @ ClientError::Connect { .. }) => {
                assert!(e.to_string().contains(&*path.to_string_lossy()), "{e}")
            }
            Err(e) => panic!("wrong error {e:?}"),
            Ok(_) => panic!("connected to a missing socket"),
        }
    }

    #[test]
    fn notify_then_call_against_the_real_server() {
        let dir = tempfile::tempdir().expect("tempdir");
        let count = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let seen = count.clone();
        let handler = move |method: &str, _: Option<Value>| match method {
            "bump" => {
                let n = seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
                Ok(json!(n))
            }
            _ => Err(RpcError::new(
                ErrorCode::MethodNotFound,
                format!("no method {method}"),
            )),
        };
        let server = RpcServer::bind(
            &dir.path().join("s"),
            ServerLimits::default(),
            Arc::new(handler),
        )
        .expect("bind");
        let mut client = RpcClient::connect(server.path()).expect("connect");
        client.notify("bump", None).expect("notify");
        assert_eq!(
            client.call("bump", Some(json!({}))).expect("call"),
            json!(2)
        );
        let err = client.call("nope", None).expect_err("unknown method");
        assert_eq!(err.rpc_code(), Some(-32601));
        assert_eq!(err.to_string(), "no method nope");
    }
}
