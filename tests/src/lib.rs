//! Helpers shared by the integration tests: start the real `plexd` binary on a private
//! socket, talk to it with the JSON-RPC client, `plexctl` or `spdk-rpc`, and stop it.
//!
//! Binaries are looked up next to the test executable (`build/<profile>/`), or in
//! `$PLEXD_BIN_DIR`. Build them first: `cargo build --workspace --bins` (the test script does).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use plexd_control::RpcClient;
use serde_json::Value;

/// The directory holding the workspace's binaries.
pub fn bin_dir() -> PathBuf {
    if let Ok(d) = std::env::var("PLEXD_BIN_DIR") {
        return PathBuf::from(d);
    }
    let exe = std::env::current_exe().expect("test executable path");
    // build/<profile>/deps/<test> -> build/<profile>
    exe.parent()
        .and_then(Path::parent)
        .map(Path::to_path_buf)
        .expect("build directory")
}

/// Path of a workspace binary; panics with a hint if it was not built.
pub fn bin(name: &str) -> PathBuf {
    let p = bin_dir().join(name);
    assert!(
        p.exists(),
        "{} not found: run `cargo build --workspace --bins` (same profile as the tests) first",
        p.display()
    );
    p
}

/// A running plexd on a temporary socket; killed (SIGKILL) on drop if still running.
pub struct Plexd {
    /// The child process.
    pub child: Child,
    /// The RPC socket.
    pub socket: PathBuf,
    /// Temporary directory holding the socket (and anything else the test puts there).
    pub dir: tempfile::TempDir,
    /// plexd's stderr, read continuously so a chatty plexd never blocks on a full pipe.
    log: std::sync::Arc<std::sync::Mutex<String>>,
    log_reader: Option<std::thread::JoinHandle<()>>,
}

/// Options for starting plexd.
#[derive(Default, Clone)]
pub struct PlexdOpts {
    /// Extra arguments.
    pub args: Vec<String>,
    /// Run as this uid/gid (tests of file permissions while the suite runs as root).
    pub uid: Option<u32>,
    /// Don't wait for the socket (for start-up failures).
    pub no_wait: bool,
}

impl Plexd {
    /// Starts plexd with default options (one reactor, adaptive polling).
    pub fn start() -> Plexd {
        Self::start_with(PlexdOpts::default())
    }

    /// Starts plexd with `args` appended.
    pub fn start_args(args: &[&str]) -> Plexd {
        Self::start_with(PlexdOpts {
            args: args.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        })
    }

    /// Starts plexd and waits (up to 20 s) for its socket.
    pub fn start_with(opts: PlexdOpts) -> Plexd {
        let dir = tempfile::tempdir().expect("tempdir");
        let socket = dir.path().join("plexd.sock");
        let mut cmd = Command::new(bin("plexd"));
        cmd.arg("-r").arg(&socket).args(&opts.args);
        cmd.env(
            "PLEXD_LOG",
            std::env::var("PLEXD_TEST_LOG").unwrap_or_else(|_| "info".into()),
        )
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
        if let Some(uid) = opts.uid {
            use std::os::unix::fs::PermissionsExt;
            use std::os::unix::process::CommandExt;
            std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777))
                .expect("chmod");
            cmd.uid(uid).gid(uid);
        }
        let mut child = cmd.spawn().expect("spawn plexd");
        let log = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let log_reader = child.stderr.take().map(|mut err| {
            let log = log.clone();
            std::thread::spawn(move || {
                use std::io::Read;
                let mut buf = [0u8; 4096];
                while let Ok(n) = err.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    if let Ok(mut l) = log.lock() {
                        l.push_str(&String::from_utf8_lossy(&buf[..n]));
                    }
                }
            })
        });
        let mut p = Plexd {
            child,
            socket,
            dir,
            log,
            log_reader,
        };
        if !opts.no_wait {
            p.wait_for_socket(Duration::from_secs(20));
        }
        p
    }

    /// Waits until the socket accepts connections; panics with plexd's log if it exits.
    pub fn wait_for_socket(&mut self, timeout: Duration) {
        let end = Instant::now() + timeout;
        loop {
            if RpcClient::connect(&self.socket).is_ok() {
                return;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("plexd exited during start-up ({status}): {}", self.stderr());
            }
            assert!(
                Instant::now() < end,
                "plexd did not open its socket within {timeout:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// A new JSON-RPC client.
    pub fn client(&self) -> RpcClient {
        let mut c = RpcClient::connect(&self.socket).expect("connect to plexd");
        c.set_timeout(Some(Duration::from_secs(60)));
        c
    }

    /// Calls `method`, panicking on error.
    pub fn call(&self, method: &str, params: Value) -> Value {
        self.client()
            .call(method, Some(params))
            .unwrap_or_else(|e| panic!("{method}: {}", error_chain(&e)))
    }

    /// Calls `method` expecting an error; returns (code, message).
    pub fn call_err(&self, method: &str, params: Value) -> (i64, String) {
        match self.client().call(method, Some(params)) {
            Ok(v) => panic!("{method} unexpectedly succeeded: {v}"),
            Err(e) => (e.rpc_code().unwrap_or(0), e.to_string()),
        }
    }

    /// Runs `plexctl -s SOCKET args...`.
    pub fn plexctl(&self, args: &[&str]) -> Output {
        Command::new(bin("plexctl"))
            .arg("-s")
            .arg(&self.socket)
            .args(args)
            .output()
            .expect("run plexctl")
    }

    /// Sends a signal and waits (up to 30 s) for exit; returns the exit code.
    pub fn stop(&mut self, signal: i32) -> Option<i32> {
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(self.child.id() as i32, signal) };
        let end = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(st)) = self.child.try_wait() {
                return st.code();
            }
            if Instant::now() > end {
                let _ = self.child.kill();
                panic!("plexd did not exit within 30 s of signal {signal}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits for the process to exit on its own; returns (exit code, stderr).
    pub fn wait_exit(&mut self, timeout: Duration) -> (Option<i32>, String) {
        let end = Instant::now() + timeout;
        loop {
            if let Ok(Some(st)) = self.child.try_wait() {
                return (st.code(), self.stderr());
            }
            assert!(
                Instant::now() < end,
                "plexd did not exit within {timeout:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// What plexd wrote to stderr so far (only after it exited; empty otherwise).
    pub fn stderr(&mut self) -> String {
        if let Ok(Some(_)) = self.child.try_wait() {
            if let Some(r) = self.log_reader.take() {
                let _ = r.join();
            }
            return self.log.lock().map(|l| l.clone()).unwrap_or_default();
        }
        String::new()
    }
}

impl Drop for Plexd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Finds `spdk-rpc` (PATH or `build/venv/bin`); panics with the install hint if missing,
/// so the SPDK compatibility tests fail rather than silently pass.
pub fn spdk_rpc() -> PathBuf {
    let venv = bin_dir().join("../venv/bin/spdk-rpc");
    if venv.exists() {
        return venv;
    }
    if let Ok(path) = std::env::var("PATH") {
        for d in path.split(':') {
            let p = Path::new(d).join("spdk-rpc");
            if p.exists() {
                return p;
            }
        }
    }
    panic!("spdk-rpc not found: run scripts/install-test-deps.sh (pip install spdk==26.9)");
}

/// Runs `spdk-rpc -s SOCKET args...` with optional stdin.
pub fn run_spdk_rpc(socket: &Path, args: &[&str], stdin: Option<&[u8]>) -> Output {
    use std::io::Write;
    let mut child = Command::new(spdk_rpc())
        .arg("-s")
        .arg(socket)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run spdk-rpc");
    if let Some(input) = stdin {
        if let Some(mut s) = child.stdin.take() {
            s.write_all(input).expect("write spdk-rpc stdin");
        }
    }
    drop(child.stdin.take());
    child.wait_with_output().expect("spdk-rpc output")
}

/// Sorts a `bdev_get_bdevs` result by bdev name (for comparing two daemons' lists).
pub fn sorted_by_name(bdevs: &Value) -> Vec<Value> {
    let mut v = bdevs
        .as_array()
        .unwrap_or_else(|| panic!("not a bdev array: {bdevs}"))
        .clone();
    v.sort_by(|a, b| a["name"].as_str().cmp(&b["name"].as_str()));
    v
}

/// The names in a `bdev_get_bdevs` result, sorted.
pub fn bdev_names(bdevs: &Value) -> Vec<String> {
    sorted_by_name(bdevs)
        .iter()
        .map(|b| b["name"].as_str().expect("bdev name").to_string())
        .collect()
}

impl Plexd {
    /// `bdev_get_bdevs` with no filter, sorted by name.
    pub fn bdevs(&self) -> Vec<Value> {
        sorted_by_name(&self.call("bdev_get_bdevs", serde_json::json!({})))
    }

    /// The names of every bdev, sorted.
    pub fn names(&self) -> Vec<String> {
        bdev_names(&self.call("bdev_get_bdevs", serde_json::json!({})))
    }
}

/// Splits bytes received from the server into JSON values (panics on anything else).
pub fn json_values(bytes: &[u8]) -> Vec<Value> {
    serde_json::Deserializer::from_slice(bytes)
        .into_iter::<Value>()
        .collect::<Result<_, _>>()
        .unwrap_or_else(|e| {
            panic!(
                "server sent invalid JSON ({e}): {}",
                String::from_utf8_lossy(bytes)
            )
        })
}

/// Reads until the peer closes the connection (EOF or reset); panics after 30 s.
pub fn read_until_closed(stream: &mut std::os::unix::net::UnixStream) -> Vec<u8> {
    use std::io::{ErrorKind, Read};
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .expect("read timeout");
    let mut out = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        match stream.read(&mut chunk) {
            Ok(0) => return out,
            Ok(n) => out.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) if e.kind() == ErrorKind::ConnectionReset => return out,
            Err(e) => panic!(
                "the server did not close the connection ({e}); got so far: {}",
                String::from_utf8_lossy(&out)
            ),
        }
    }
}

/// Sends `bytes` on a new raw connection, closes the sending side and returns every JSON value
/// the server answers before it closes.
pub fn raw_exchange(socket: &Path, bytes: &[u8]) -> Vec<Value> {
    use std::io::Write;
    let mut s = std::os::unix::net::UnixStream::connect(socket).expect("connect");
    s.write_all(bytes).expect("write request");
    s.shutdown(std::net::Shutdown::Write)
        .expect("shutdown write");
    json_values(&read_until_closed(&mut s))
}

/// Runs plexd with exactly `args` (give `-r` yourself) and waits up to `timeout` for it to exit;
/// returns (exit code, stderr). A plexd still running at the deadline is killed and reported
/// with code `None`.
pub fn run_plexd(args: &[&str], timeout: Duration) -> (Option<i32>, String) {
    let mut child = Command::new(bin("plexd"))
        .args(args)
        .env("PLEXD_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn plexd");
    let end = Instant::now() + timeout;
    let mut code = None;
    loop {
        if let Ok(Some(st)) = child.try_wait() {
            code = st.code();
            break;
        }
        if Instant::now() > end {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().expect("plexd output");
    (code, String::from_utf8_lossy(&out.stderr).into_owned())
}

/// Writes an SPDK-format config whose `bdev` subsystem holds `entries`; returns its path.
pub fn write_bdev_config(dir: &Path, file: &str, entries: &[Value]) -> PathBuf {
    let config = serde_json::json!({"subsystems": [{"subsystem": "bdev", "config": entries}]});
    let path = dir.join(file);
    std::fs::write(
        &path,
        serde_json::to_vec_pretty(&config).expect("serialise"),
    )
    .expect("write config");
    path
}

/// A driver-side vhost-user-blk client (guest memory, hand-laid virtqueues, the handshake).
pub mod vhost_client;

pub mod guest;

pub mod rig;

/// An error with its sources, `: `-separated (e.g. "RPC socket I/O failed: Resource
/// temporarily unavailable"), so a failed call says whether it timed out or was reset.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cause = c.source();
    }
    s
}
