//! The Unix-socket JSON-RPC 2.0 server: framing, limits and dispatch to an [`RpcHandler`].
//!
//! The stream from a client is a sequence of JSON values with no delimiter (SPDK's client sends
//! pretty-printed JSON and may split it across writes or pack several values into one), so each
//! connection accumulates bytes in a `FrameBuffer` and pulls complete values out of it. Every
//! answer is one JSON value followed by `\n`. One accept thread plus one thread per connection;
//! no async runtime.

use std::collections::HashMap;
use std::io::{self, ErrorKind, Read, Write};
use std::net::Shutdown;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::Duration;
use std::{fs, process};

use serde_json::{json, Deserializer, Map, Value};

use crate::jsonrpc::{ErrorCode, RpcError};

/// Answers the calls the server has framed and validated.
pub trait RpcHandler: Send + Sync + 'static {
    /// Runs `method`; `params` is `None` when the request had no `params` or `params: null`.
    fn call(&self, method: &str, params: Option<Value>) -> Result<Value, RpcError>;
}

impl<F> RpcHandler for F
where
    F: Fn(&str, Option<Value>) -> Result<Value, RpcError> + Send + Sync + 'static,
{
    fn call(&self, method: &str, params: Option<Value>) -> Result<Value, RpcError> {
        self(method, params)
    }
}

/// Limits the server enforces, each answered with a clear error when exceeded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerLimits {
    /// Largest single request (or batch) in bytes; default 1 MiB (SPDK uses 256 KiB).
    pub max_request_bytes: usize,
    /// Most connections open at once; default 128 (SPDK uses 64).
    pub max_connections: usize,
}

impl Default for ServerLimits {
    fn default() -> Self {
        ServerLimits {
            max_request_bytes: 1 << 20,
            max_connections: 128,
        }
    }
}

/// Why the RPC server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// A live server already answers on the socket path.
    #[error("another plexd is listening on {}", .path.display())]
    InUse {
        /// The socket path.
        path: PathBuf,
    },
    /// Something other than a socket occupies the path; it is left alone.
    #[error("{} exists and is not a socket; remove it or choose another RPC socket path", .path.display())]
    NotASocket {
        /// The occupied path.
        path: PathBuf,
    },
    /// The existing socket file could not be checked or removed.
    #[error("cannot replace the stale RPC socket {}", .path.display())]
    Stale {
        /// The socket path.
        path: PathBuf,
        /// The underlying failure.
        #[source]
        source: io::Error,
    },
    /// Creating, binding or publishing the listening socket failed.
    #[error("cannot create the RPC socket {}", .path.display())]
    Bind {
        /// The socket path.
        path: PathBuf,
        /// The underlying failure.
        #[source]
        source: io::Error,
    },
    /// The accept thread could not be started.
    #[error("cannot start the RPC accept thread")]
    Spawn(#[source] io::Error),
}

/// One complete or failed frame pulled from a [`FrameBuffer`].
#[derive(Debug)]
pub(crate) enum Frame {
    /// A complete JSON value.
    Value(Value),
    /// The buffer holds only part of a value (or nothing).
    NeedMore,
    /// The bytes are not JSON; the stream cannot be resynchronised.
    Syntax(serde_json::Error),
    /// The value being received is larger than the limit.
    TooLarge,
}

/// Accumulates bytes from a stream and splits them into JSON values.
pub(crate) struct FrameBuffer {
    buf: Vec<u8>,
    pos: usize,
    limit: usize,
}

impl FrameBuffer {
    /// An empty buffer accepting values of at most `limit` bytes.
    pub(crate) fn new(limit: usize) -> Self {
        FrameBuffer {
            buf: Vec::new(),
            pos: 0,
            limit,
        }
    }

    /// Appends bytes read from the stream.
    pub(crate) fn push(&mut self, data: &[u8]) {
        if self.pos > 0 {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
        self.buf.extend_from_slice(data);
    }

    /// True when only whitespace (or nothing) is buffered.
    pub(crate) fn is_idle(&self) -> bool {
        self.buf[self.pos..].iter().all(u8::is_ascii_whitespace)
    }

    /// Takes the next complete value, if there is one.
    pub(crate) fn next_frame(&mut self) -> Frame {
        let tail = &self.buf[self.pos..];
        let mut values = Deserializer::from_slice(tail).into_iter::<Value>();
        match values.next() {
            None => {
                self.buf.clear();
                self.pos = 0;
                Frame::NeedMore
            }
            Some(Ok(value)) => {
                let len = values.byte_offset();
                self.pos += len;
                if len > self.limit {
                    Frame::TooLarge
                } else {
                    Frame::Value(value)
                }
            }
            Some(Err(e)) if e.is_eof() => {
                if tail.len() > self.limit {
                    Frame::TooLarge
                } else {
                    Frame::NeedMore
                }
            }
            Some(Err(e)) => Frame::Syntax(e),
        }
    }
}

/// A running RPC server. Serving happens on background threads; [`RpcServer::shutdown`] or
/// dropping the server stops them and removes the socket file.
pub struct RpcServer {
    path: PathBuf,
    /// Device and inode of the socket file we created, so we never remove someone else's.
    identity: Option<(u64, u64)>,
    listener: Arc<UnixListener>,
    shared: Arc<Shared>,
    accept: Option<JoinHandle<()>>,
}

struct Shared {
    handler: Arc<dyn RpcHandler>,
    limits: ServerLimits,
    stopping: AtomicBool,
    next_conn: AtomicU64,
    conns: Mutex<HashMap<u64, Conn>>,
}

struct Conn {
    stream: UnixStream,
    thread: JoinHandle<()>,
}

impl Shared {
    fn conns(&self) -> MutexGuard<'_, HashMap<u64, Conn>> {
        self.conns.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl RpcServer {
    /// Listens on `path` (mode 0600) and serves calls with `handler` on background threads.
    ///
    /// A leftover socket file nobody listens on is replaced; a live one is an error.
    pub fn bind(
        path: &Path,
        limits: ServerLimits,
        handler: Arc<dyn RpcHandler>,
    ) -> Result<RpcServer, ServerError> {
        remove_stale(path)?;
        let listener = Arc::new(bind_private(path)?);
        let identity = fs::symlink_metadata(path).ok().map(|m| (m.dev(), m.ino()));
        let shared = Arc::new(Shared {
            handler,
            limits,
            stopping: AtomicBool::new(false),
            next_conn: AtomicU64::new(0),
            conns: Mutex::new(HashMap::new()),
        });
        let accept = {
            let (listener, shared) = (listener.clone(), shared.clone());
            thread::Builder::new()
                .name("rpc-accept".into())
                .spawn(move || accept_loop(&listener, &shared))
        };
        let mut server = RpcServer {
            path: path.to_path_buf(),
            identity,
            listener,
            shared,
            accept: None,
        };
        match accept {
            Ok(handle) => server.accept = Some(handle),
            Err(e) => return Err(ServerError::Spawn(e)), // drop removes the socket file
        }
        tracing::info!(path = %path.display(), ?limits, "RPC server listening");
        Ok(server)
    }

    /// The socket path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Number of client connections currently open.
    pub fn connection_count(&self) -> usize {
        self.shared.conns().len()
    }

    /// Stops accepting, closes every connection (waiting for calls in progress) and removes the
    /// socket file.
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        if self.shared.stopping.swap(true, Ordering::SeqCst) {
            return;
        }
        self.remove_socket_file();
        // SAFETY: shutdown(2) only takes a descriptor number; it is the listening socket owned
        // by `self.listener`, which stays open until after this call, so the number cannot have
        // been reused for another file. Shutting it down wakes the accept thread.
        unsafe { libc::shutdown(self.listener.as_raw_fd(), libc::SHUT_RDWR) };
        if let Some(handle) = self.accept.take() {
            join(handle);
        }
        let conns: Vec<Conn> = self.shared.conns().drain().map(|(_, c)| c).collect();
        for conn in &conns {
            let _ = conn.stream.shutdown(Shutdown::Both);
        }
        for conn in conns {
            join(conn.thread);
        }
        tracing::info!(path = %self.path.display(), "RPC server stopped");
    }

    fn remove_socket_file(&self) {
        let ours = fs::symlink_metadata(&self.path)
            .map(|m| Some((m.dev(), m.ino())) == self.identity)
            .unwrap_or(false);
        if ours {
            if let Err(e) = fs::remove_file(&self.path) {
                tracing::warn!(path = %self.path.display(), error = %e, "cannot remove RPC socket");
            }
        }
    }
}

impl Drop for RpcServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Joins a thread unless it is the calling one (a handler may shut the server down).
fn join(handle: JoinHandle<()>) {
    if handle.thread().id() != thread::current().id() {
        let _ = handle.join();
    }
}

/// Removes a socket file left by a dead server; refuses if a server still answers on it.
fn remove_stale(path: &Path) -> Result<(), ServerError> {
    let stale = |source| ServerError::Stale {
        path: path.to_path_buf(),
        source,
    };
    match fs::symlink_metadata(path) {
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(stale(e)),
        Ok(m) if !m.file_type().is_socket() => {
            return Err(ServerError::NotASocket {
                path: path.to_path_buf(),
            })
        }
        Ok(_) => {}
    }
    match UnixStream::connect(path) {
        Ok(_) => Err(ServerError::InUse {
            path: path.to_path_buf(),
        }),
        Err(e) if e.raw_os_error() == Some(libc::ECONNREFUSED) => {
            tracing::info!(path = %path.display(), "removing stale RPC socket");
            match fs::remove_file(path) {
                Err(e) if e.kind() != ErrorKind::NotFound => Err(stale(e)),
                _ => Ok(()),
            }
        }
        Err(e) => Err(stale(e)),
    }
}

/// Binds inside a fresh 0700 directory, sets the socket to 0600 and only then links it at
/// `path`, so the socket is never reachable by others, without touching the process umask.
fn bind_private(path: &Path) -> Result<UnixListener, ServerError> {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let err = |source| ServerError::Bind {
        path: path.to_path_buf(),
        source,
    };
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let seq = SEQ.fetch_add(1, Ordering::Relaxed);
    let dir = parent.join(format!(".plexd-{}-{seq}", process::id()));
    fs::DirBuilder::new()
        .mode(0o700)
        .create(&dir)
        .map_err(err)?;
    let tmp = dir.join("s");
    let result = UnixListener::bind(&tmp)
        .and_then(|l| fs::set_permissions(&tmp, fs::Permissions::from_mode(0o600)).map(|()| l))
        .and_then(|l| fs::hard_link(&tmp, path).map(|()| l));
    let _ = fs::remove_file(&tmp);
    let _ = fs::remove_dir(&dir);
    match result {
        Err(e) if e.kind() == ErrorKind::AlreadyExists => Err(ServerError::InUse {
            path: path.to_path_buf(),
        }),
        other => other.map_err(err),
    }
}

fn accept_loop(listener: &UnixListener, shared: &Arc<Shared>) {
    loop {
        let result = listener.accept();
        if shared.stopping.load(Ordering::SeqCst) {
            return;
        }
        match result {
            Ok((stream, _)) => admit(stream, shared),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => {
                tracing::warn!(error = %e, "RPC accept failed");
                thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

/// Starts a connection thread, or turns the client away when the limit is reached.
fn admit(mut stream: UnixStream, shared: &Arc<Shared>) {
    let limit = shared.limits.max_connections;
    let mut conns = shared.conns();
    if conns.len() >= limit {
        drop(conns);
        let message = format!("too many RPC connections (limit {limit})");
        tracing::warn!("{message}");
        let _ = stream.set_write_timeout(Some(Duration::from_secs(1)));
        let reply = error_response(Value::Null, &RpcError::internal(message));
        let _ = write_value(&mut stream, &reply);
        let _ = stream.shutdown(Shutdown::Both);
        return;
    }
    let peer = match stream.try_clone() {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "cannot register RPC connection");
            return;
        }
    };
    let id = shared.next_conn.fetch_add(1, Ordering::Relaxed);
    let worker = shared.clone();
    let spawned = thread::Builder::new()
        .name(format!("rpc-conn-{id}"))
        .spawn(move || {
            tracing::debug!(conn = id, "RPC connection opened");
            serve(stream, &worker);
            worker.conns().remove(&id);
            tracing::debug!(conn = id, "RPC connection closed");
        });
    match spawned {
        Ok(thread) => {
            conns.insert(
                id,
                Conn {
                    stream: peer,
                    thread,
                },
            );
        }
        Err(e) => tracing::warn!(error = %e, "cannot start RPC connection thread"),
    }
}

/// Reads, frames and answers requests until the client goes away or sends something
/// unrecoverable.
fn serve(mut stream: UnixStream, shared: &Shared) {
    let limit = shared.limits.max_request_bytes;
    let mut frames = FrameBuffer::new(limit);
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        let n = match stream.read(&mut chunk) {
            Ok(0) => {
                if !frames.is_idle() {
                    tracing::debug!("RPC client disconnected in the middle of a request");
                }
                return;
            }
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => {
                tracing::debug!(error = %e, "RPC connection read failed");
                return;
            }
        };
        frames.push(&chunk[..n]);
        loop {
            let fatal = match frames.next_frame() {
                Frame::NeedMore => break,
                Frame::Value(request) => {
                    if let Some(reply) = dispatch(request, shared.handler.as_ref()) {
                        if let Err(e) = write_value(&mut stream, &reply) {
                            tracing::debug!(error = %e, "RPC client went away before the reply");
                            return;
                        }
                    }
                    continue;
                }
                Frame::Syntax(e) => {
                    RpcError::new(ErrorCode::ParseError, format!("parse error: {e}"))
                }
                Frame::TooLarge => RpcError::new(
                    ErrorCode::InvalidRequest,
                    format!("request exceeds the {limit}-byte limit"),
                ),
            };
            tracing::warn!("closing RPC connection: {}", fatal.message);
            let _ = write_value(&mut stream, &error_response(Value::Null, &fatal));
            let _ = stream.shutdown(Shutdown::Both);
            return;
        }
    }
}

fn write_value(stream: &mut UnixStream, value: &Value) -> io::Result<()> {
    let mut bytes = value.to_string().into_bytes();
    bytes.push(b'\n');
    stream.write_all(&bytes)
}

fn error_response(id: Value, error: &RpcError) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "error": error.to_json()})
}

/// Answers one top-level value: a request or a batch. `None` when nothing is to be sent.
pub(crate) fn dispatch(request: Value, handler: &dyn RpcHandler) -> Option<Value> {
    match request {
        Value::Array(items) if items.is_empty() => Some(error_response(
            Value::Null,
            &RpcError::new(ErrorCode::InvalidRequest, "empty batch"),
        )),
        Value::Array(items) => {
            let replies: Vec<Value> = items
                .into_iter()
                .filter_map(|r| call_one(r, handler))
                .collect();
            (!replies.is_empty()).then_some(Value::Array(replies))
        }
        single => call_one(single, handler),
    }
}

fn call_one(request: Value, handler: &dyn RpcHandler) -> Option<Value> {
    let invalid = |id: Value, msg: &str| {
        Some(error_response(
            id,
            &RpcError::new(ErrorCode::InvalidRequest, msg),
        ))
    };
    let Value::Object(mut obj) = request else {
        return invalid(Value::Null, "request must be a JSON object");
    };
    let id = obj.remove("id");
    let reply_id = match &id {
        None => Value::Null,
        Some(v @ (Value::Null | Value::String(_) | Value::Number(_))) => v.clone(),
        Some(_) => return invalid(Value::Null, "id must be a string, a number or null"),
    };
    if obj.get("jsonrpc").and_then(Value::as_str) != Some("2.0") {
        return invalid(reply_id, "jsonrpc must be \"2.0\"");
    }
    let Some(method) = take_method(&mut obj) else {
        return invalid(reply_id, "method must be a string");
    };
    let params = match obj.remove("params") {
        None | Some(Value::Null) => None,
        Some(p @ (Value::Object(_) | Value::Array(_))) => Some(p),
        Some(_) => return invalid(reply_id, "params must be an object or an array"),
    };
    tracing::debug!(method = %method, "RPC call");
    let result =
        catch_unwind(AssertUnwindSafe(|| handler.call(&method, params))).unwrap_or_else(|_| {
            tracing::error!(method = %method, "RPC handler panicked");
            Err(RpcError::internal("internal error: handler panicked"))
        });
    if let Err(e) = &result {
        tracing::debug!(method = %method, code = e.code.code(), "RPC error: {}", e.message);
    }
    if reply_id.is_null() {
        return None; // a notification: never answered
    }
    Some(match result {
        Ok(value) => json!({"jsonrpc": "2.0", "id": reply_id, "result": value}),
        Err(e) => error_response(reply_id, &e),
    })
}

fn take_method(obj: &mut Map<String, Value>) -> Option<String> {
    match obj.remove("method") {
        Some(Value::String(m)) => Some(m),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;
    use std::sync::Barrier;
    use std::time::Instant;

    use super::*;
    use crate::client::RpcClient;

    #[derive(Default)]
    struct TestHandler {
        counted: AtomicUsize,
    }

    impl RpcHandler for TestHandler {
        fn call(&self, method: &str, params: Option<Value>) -> Result<Value, RpcError> {
            match method {
                "echo" => Ok(json!({"some": params.is_some(), "params": params})),
                "count" => Ok(json!(self.counted.fetch_add(1, Ordering::SeqCst) + 1)),
                "fail" => Err(RpcError::errno(libc::ENODEV, "no such bdev")),
                "panic" => panic!("test handler panic"),
                _ => Err(RpcError::new(ErrorCode::MethodNotFound, "method not found")),
            }
        }
    }

    fn start(limits: ServerLimits) -> (tempfile::TempDir, RpcServer, Arc<TestHandler>) {
        let dir = tempfile::tempdir().expect("tempdir");
        let handler = Arc::new(TestHandler::default());
        let server =
            RpcServer::bind(&dir.path().join("rpc.sock"), limits, handler.clone()).expect("bind");
        (dir, server, handler)
    }

    fn connect(server: &RpcServer) -> UnixStream {
        let s = UnixStream::connect(server.path()).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        s
    }

    /// Reads until the server closes the connection and splits what came into JSON values.
    fn read_all(stream: &mut UnixStream) -> Vec<Value> {
        let mut bytes = Vec::new();
        stream.read_to_end(&mut bytes).expect("read to EOF");
        Deserializer::from_slice(&bytes)
            .into_iter::<Value>()
            .collect::<Result<_, _>>()
            .expect("server sent valid JSON")
    }

    /// Sends `chunks` as separate writes, closes our write side and returns every reply.
    fn exchange(server: &RpcServer, chunks: &[&[u8]]) -> Vec<Value> {
        let mut s = connect(server);
        for chunk in chunks {
            s.write_all(chunk).expect("write");
        }
        s.shutdown(Shutdown::Write).expect("shutdown");
        read_all(&mut s)
    }

    fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !cond() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            thread::sleep(Duration::from_millis(5));
        }
    }

    const PRETTY: &str = "{\n  \"jsonrpc\": \"2.0\",\n  \"method\": \"echo\",\n  \"id\": 1,\n  \"params\": {\n    \"name\": \"Malloc0\"\n  }\n}";

    #[test]
    fn frame_buffer_assembles_a_value_fed_byte_by_byte() {
        let mut frames = FrameBuffer::new(1024);
        let bytes = PRETTY.as_bytes();
        for (i, b) in bytes.iter().enumerate() {
            frames.push(std::slice::from_ref(b));
            match frames.next_frame() {
                Frame::NeedMore => assert!(i + 1 < bytes.len(), "value not complete at the end"),
                Frame::Value(v) => {
                    assert_eq!(i + 1, bytes.len(), "value completed early");
                    assert_eq!(v["params"]["name"], "Malloc0");
                }
                other => panic!("unexpected frame {other:?}"),
            }
        }
        assert!(matches!(frames.next_frame(), Frame::NeedMore));
        assert!(frames.is_idle());
    }

    #[test]
    fn pretty_request_split_byte_by_byte_over_the_socket() {
        let (_dir, server, _) = start(ServerLimits::default());
        let mut s = connect(&server);
        for b in PRETTY.as_bytes() {
            s.write_all(std::slice::from_ref(b)).expect("write");
            thread::sleep(Duration::from_micros(200));
        }
        s.shutdown(Shutdown::Write).expect("shutdown");
        let replies = read_all(&mut s);
        assert_eq!(
            replies,
            vec![
                json!({"jsonrpc": "2.0", "id": 1, "result": {"some": true, "params": {"name": "Malloc0"}}})
            ]
        );
    }

    #[test]
    fn two_requests_in_one_write_get_two_newline_terminated_replies() {
        let (_dir, server, _) = start(ServerLimits::default());
        let mut s = connect(&server);
        let two = br#"{"jsonrpc":"2.0","id":1,"method":"count"}{"jsonrpc":"2.0","id":"b","method":"fail"}"#;
        s.write_all(two).expect("write");
        s.shutdown(Shutdown::Write).expect("shutdown");
        let mut raw = String::new();
        s.read_to_string(&mut raw).expect("read");
        let lines: Vec<Value> = raw
            .lines()
            .map(|l| serde_json::from_str(l).expect("line is JSON"))
            .collect();
        assert!(raw.ends_with('\n'));
        assert_eq!(lines[0], json!({"jsonrpc": "2.0", "id": 1, "result": 1}));
        assert_eq!(
            lines[1],
            json!({"jsonrpc": "2.0", "id": "b", "error": {"code": -19, "message": "no such bdev"}})
        );
        assert_eq!(lines.len(), 2);
    }

    #[test]
    fn batch_answers_non_notifications_in_order() {
        let (_dir, server, handler) = start(ServerLimits::default());
        let batch = br#"[{"jsonrpc":"2.0","id":1,"method":"count"},
            {"jsonrpc":"2.0","method":"count"},
            "not an object",
            {"jsonrpc":"2.0","id":2,"method":"fail"}]"#;
        let replies = exchange(
            &server,
            &[batch, b"[]", br#"[{"jsonrpc":"2.0","method":"count"}]"#],
        );
        assert_eq!(
            replies,
            vec![
                json!([
                    {"jsonrpc": "2.0", "id": 1, "result": 1},
                    {"jsonrpc": "2.0", "id": null, "error": {"code": -32600, "message": "request must be a JSON object"}},
                    {"jsonrpc": "2.0", "id": 2, "error": {"code": -19, "message": "no such bdev"}},
                ]),
                json!({"jsonrpc": "2.0", "id": null, "error": {"code": -32600, "message": "empty batch"}}),
            ]
        );
        assert_eq!(handler.counted.load(Ordering::SeqCst), 3);
    }

    #[test]
    fn notification_is_called_but_not_answered() {
        let (_dir, server, handler) = start(ServerLimits::default());
        let replies = exchange(
            &server,
            &[
                br#"{"jsonrpc":"2.0","method":"count"}"#,
                br#"{"jsonrpc":"2.0","method":"count","id":null}"#,
                br#"{"jsonrpc":"2.0","method":"count","id":7}"#,
            ],
        );
        assert_eq!(
            replies,
            vec![json!({"jsonrpc": "2.0", "id": 7, "result": 3})]
        );
        assert_eq!(handler.counted.load(Ordering::SeqCst), 3);
    }

    #[test]
    fn params_absent_or_null_reach_the_handler_as_none() {
        let (_dir, server, _) = start(ServerLimits::default());
        let replies = exchange(
            &server,
            &[
                br#"{"jsonrpc":"2.0","id":1,"method":"echo"}"#,
                br#"{"jsonrpc":"2.0","id":2,"method":"echo","params":null}"#,
                br#"{"jsonrpc":"2.0","id":3,"method":"echo","params":[1]}"#,
            ],
        );
        let results: Vec<&Value> = replies.iter().map(|r| &r["result"]).collect();
        assert_eq!(results[0], &json!({"some": false, "params": null}));
        assert_eq!(results[1], &json!({"some": false, "params": null}));
        assert_eq!(results[2], &json!({"some": true, "params": [1]}));
    }

    #[test]
    fn malformed_json_gets_parse_error_and_close_then_server_still_serves() {
        let (_dir, server, _) = start(ServerLimits::default());
        let mut s = connect(&server);
        s.write_all(br#"{"jsonrpc":"2.0","id":1,"method":"count"} {"jsonrpc": ]"#)
            .expect("write");
        // No shutdown of our side: the server must close the connection by itself.
        let replies = read_all(&mut s);
        assert_eq!(replies.len(), 2);
        assert_eq!(replies[0]["result"], 1);
        assert_eq!(replies[1]["id"], Value::Null);
        assert_eq!(replies[1]["error"]["code"], -32700);
        let mut client = RpcClient::connect(server.path()).expect("connect");
        assert_eq!(client.call("count", None).expect("call"), json!(2));
    }

    #[test]
    fn invalid_requests_get_32600_with_their_id() {
        let (_dir, server, handler) = start(ServerLimits::default());
        let replies = exchange(
            &server,
            &[
                br#"{"jsonrpc":"1.0","id":3,"method":"count"}"#,
                br#"{"id":4,"method":"count"}"#,
                br#"{"jsonrpc":"2.0","id":5,"method":12}"#,
                br#"{"jsonrpc":"2.0","id":6,"method":"count","params":5}"#,
                br#"{"jsonrpc":"2.0","id":{},"method":"count"}"#,
                br#"{"jsonrpc":"2.0","method":"nope","id":8}"#,
            ],
        );
        let got: Vec<(Value, Value)> = replies
            .iter()
            .map(|r| (r["id"].clone(), r["error"]["code"].clone()))
            .collect();
        let want = [(3, -32600), (4, -32600), (5, -32600), (6, -32600)];
        for (i, (id, code)) in want.iter().enumerate() {
            assert_eq!(got[i], (json!(id), json!(code)), "reply {i}");
        }
        assert_eq!(got[4], (Value::Null, json!(-32600)));
        assert_eq!(got[5], (json!(8), json!(-32601)));
        assert_eq!(got.len(), 6);
        assert_eq!(handler.counted.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn oversize_request_is_refused_and_closed_others_still_served() {
        let limits = ServerLimits {
            max_request_bytes: 1024,
            ..ServerLimits::default()
        };
        let (_dir, server, _) = start(limits);
        let mut other = RpcClient::connect(server.path()).expect("connect");
        // Incomplete and already too large.
        let mut big = br#"{"jsonrpc":"2.0","id":1,"method":"echo","params":{"s":""#.to_vec();
        big.extend_from_slice(&[b'x'; 2000]);
        let replies = exchange(&server, &[&big]);
        // Complete but too large.
        big.extend_from_slice(b"\"}}");
        let complete = exchange(&server, &[&big]);
        for r in [replies, complete] {
            assert_eq!(
                r,
                vec![json!({"jsonrpc": "2.0", "id": null,
                    "error": {"code": -32600, "message": "request exceeds the 1024-byte limit"}})]
            );
        }
        assert_eq!(other.call("count", None).expect("call"), json!(1));
    }

    #[test]
    fn client_disconnecting_mid_request_affects_nobody() {
        let (_dir, server, _) = start(ServerLimits::default());
        let mut other = RpcClient::connect(server.path()).expect("connect");
        assert_eq!(other.call("count", None).expect("call"), json!(1));
        {
            let mut s = connect(&server);
            s.write_all(&PRETTY.as_bytes()[..30]).expect("write");
        }
        wait_until("the abandoned connection to close", || {
            server.connection_count() == 1
        });
        assert_eq!(other.call("count", None).expect("call"), json!(2));
    }

    #[test]
    fn hundred_concurrent_clients_all_succeed() {
        let (_dir, server, handler) = start(ServerLimits::default());
        let barrier = Arc::new(Barrier::new(100));
        let threads: Vec<_> = (0..100)
            .map(|i| {
                let (path, barrier) = (server.path().to_path_buf(), barrier.clone());
                thread::spawn(move || {
                    let mut client = RpcClient::connect(&path).expect("connect");
                    barrier.wait(); // all 100 connected at once
                    for j in 0..5 {
                        let params = json!({"client": i, "call": j});
                        let got = client.call("echo", Some(params.clone())).expect("call");
                        assert_eq!(got, json!({"some": true, "params": params}));
                        client.call("count", None).expect("count");
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().expect("client thread");
        }
        assert_eq!(handler.counted.load(Ordering::SeqCst), 500);
    }

    #[test]
    fn connection_limit_turns_extra_clients_away() {
        let limits = ServerLimits {
            max_connections: 2,
            ..ServerLimits::default()
        };
        let (_dir, server, _) = start(limits);
        let mut a = RpcClient::connect(server.path()).expect("connect");
        let mut b = RpcClient::connect(server.path()).expect("connect");
        a.call("count", None).expect("a");
        b.call("count", None).expect("b");
        let mut third = connect(&server);
        assert_eq!(
            read_all(&mut third),
            vec![json!({"jsonrpc": "2.0", "id": null,
                "error": {"code": -32603, "message": "too many RPC connections (limit 2)"}})]
        );
        drop(a);
        wait_until("a slot to free up", || server.connection_count() == 1);
        let mut c = RpcClient::connect(server.path()).expect("connect");
        assert_eq!(c.call("count", None).expect("c"), json!(3));
    }

    #[test]
    fn socket_is_private() {
        let (_dir, server, _) = start(ServerLimits::default());
        let meta = fs::symlink_metadata(server.path()).expect("stat");
        assert!(meta.file_type().is_socket());
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    }

    #[test]
    fn handler_panic_is_an_internal_error_and_server_keeps_serving() {
        let (_dir, server, _) = start(ServerLimits::default());
        let replies = exchange(
            &server,
            &[
                br#"{"jsonrpc":"2.0","id":1,"method":"panic"}"#,
                br#"{"jsonrpc":"2.0","id":2,"method":"count"}"#,
            ],
        );
        assert_eq!(
            replies,
            vec![
                json!({"jsonrpc": "2.0", "id": 1,
                    "error": {"code": -32603, "message": "internal error: handler panicked"}}),
                json!({"jsonrpc": "2.0", "id": 2, "result": 1}),
            ]
        );
        let mut client = RpcClient::connect(server.path()).expect("connect");
        assert_eq!(client.call("count", None).expect("call"), json!(2));
    }

    #[test]
    fn stale_socket_is_replaced() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("rpc.sock");
        drop(UnixListener::bind(&path).expect("stale bind"));
        assert!(
            path.exists(),
            "stale socket file should remain after its listener closed"
        );
        let server = RpcServer::bind(
            &path,
            ServerLimits::default(),
            Arc::new(TestHandler::default()),
        )
        .expect("bind over stale socket");
        let mut client = RpcClient::connect(&path).expect("connect");
        assert_eq!(client.call("count", None).expect("call"), json!(1));
        drop(server);
        assert!(!path.exists(), "drop removes the socket file");
    }

    #[test]
    fn live_socket_and_non_socket_paths_are_refused() {
        let (dir, server, _) = start(ServerLimits::default());
        let handler: Arc<dyn RpcHandler> = Arc::new(TestHandler::default());
        let err = RpcServer::bind(server.path(), ServerLimits::default(), handler.clone())
            .err()
            .expect("second bind must fail");
        assert!(matches!(err, ServerError::InUse { .. }), "{err:?}");
        assert_eq!(
            err.to_string(),
            format!("another plexd is listening on {}", server.path().display())
        );
        let mut client = RpcClient::connect(server.path()).expect("first server still serves");
        assert_eq!(client.call("count", None).expect("call"), json!(1));

        let file = dir.path().join("plain");
        fs::write(&file, b"keep me").expect("write");
        let err = RpcServer::bind(&file, ServerLimits::default(), handler)
            .err()
            .expect("bind over a regular file must fail");
        assert!(matches!(err, ServerError::NotASocket { .. }), "{err:?}");
        assert_eq!(fs::read(&file).expect("file kept"), b"keep me");
    }

    #[test]
    fn shutdown_closes_connections_and_removes_the_socket() {
        let (_dir, server, _) = start(ServerLimits::default());
        let path = server.path().to_path_buf();
        let mut idle = connect(&server);
        let mut client = RpcClient::connect(&path).expect("connect");
        client.call("count", None).expect("call");
        server.shutdown();
        assert!(!path.exists());
        assert!(UnixStream::connect(&path).is_err());
        assert_eq!(read_all(&mut idle), Vec::<Value>::new());
        assert!(client.call("count", None).is_err());
    }

    #[test]
    fn closures_are_handlers() {
        let dir = tempfile::tempdir().expect("tempdir");
        let handler = |method: &str, _params: Option<Value>| Ok(json!(method.len()));
        let server = RpcServer::bind(
            &dir.path().join("s"),
            ServerLimits::default(),
            Arc::new(handler),
        )
        .expect("bind");
        let mut client = RpcClient::connect(server.path()).expect("connect");
        assert_eq!(client.call("four", None).expect("call"), json!(4));
    }
}
