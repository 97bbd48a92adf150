//! The real-guest harness: a plexd with vhost sockets in a private directory ([`Target`]), and
//! the test guest of `tests/guest/` booted by `run-guest.sh` against its vhost-user-blk
//! controller [`CTRLR`], either run to the end ([`run_guest`]) or in the background while the
//! host acts on the markers it prints ([`BackgroundGuest`]).
//!
//! Guests run one at a time in a test binary ([`one_guest_at_a_time`]): each keeps two host
//! CPUs busy under TCG. Needs `qemu-system-x86_64` and the guest image:
//! `scripts/install-test-deps.sh` (or `tests/guest/build-guest.sh`) provides both.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::Plexd;

/// Seconds before `run-guest.sh` kills QEMU (a guest normally finishes in 5-15 s).
pub const GUEST_TIMEOUT: u64 = 240;
/// The name of the vhost-user-blk controller the guest connects to.
pub const CTRLR: &str = "vhost.0";

/// Guests run one at a time: each keeps two host CPUs busy under TCG.
static GUEST_LOCK: Mutex<()> = Mutex::new(());

/// Holds the one-guest lock of this test binary until dropped (a failed test's poisoned lock
/// is taken over).
pub fn one_guest_at_a_time() -> MutexGuard<'static, ()> {
    GUEST_LOCK.lock().unwrap_or_else(|p| p.into_inner())
}

fn guest_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("guest")
}

/// `p` as UTF-8 (the test's temporary paths always are).
pub fn path_str(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// A plexd with two reactors whose vhost sockets go to `sockets`.
pub struct Target {
    /// The daemon.
    pub plexd: Plexd,
    /// The directory of its vhost sockets (`-S`).
    pub sockets: tempfile::TempDir,
}

impl Target {
    /// Starts plexd with two reactors (`-m 0x3`) and a private vhost socket directory.
    pub fn start() -> Target {
        let sockets = tempfile::tempdir().expect("tempdir");
        let plexd = Plexd::start_args(&["-m", "0x3", "-S", path_str(sockets.path())]);
        Target { plexd, sockets }
    }

    /// Calls `method`, panicking on error.
    pub fn call(&self, method: &str, params: Value) -> Value {
        self.plexd.call(method, params)
    }

    /// The socket of controller [`CTRLR`].
    pub fn vhost_socket(&self) -> PathBuf {
        self.sockets.path().join(CTRLR)
    }

    /// `vhost_get_controllers` for [`CTRLR`].
    pub fn controller(&self) -> Value {
        let v = self.call("vhost_get_controllers", json!({"name": CTRLR}));
        v[0].clone()
    }

    /// The number of vhost sessions of [`CTRLR`].
    pub fn sessions(&self) -> usize {
        self.controller()["sessions"]
            .as_array()
            .expect("sessions array")
            .len()
    }

    /// `bdev_get_iostat` of one bdev.
    pub fn iostat(&self, bdev: &str) -> Value {
        self.call("bdev_get_iostat", json!({"name": bdev}))["bdevs"][0].clone()
    }

    /// Stops plexd (SIGTERM) and returns its log; used when a test fails.
    pub fn stop_for_log(&mut self) -> String {
        if let Ok(None) = self.plexd.child.try_wait() {
            self.plexd.stop(libc::SIGTERM);
        }
        self.plexd.stderr()
    }

    /// Panics with the guest's serial log and plexd's log unless the guest script passed.
    pub fn expect_pass(&mut self, what: &str, g: &GuestRun) {
        if g.status != Some(0) {
            let plexd_log = self.stop_for_log();
            panic!(
                "guest {what} failed: run-guest.sh exit status {:?} (the script's status; 124 = \
                 timeout, 125 = no PLEXD-GUEST-EXIT line)\n--- guest serial log ---\n{}\n\
                 --- plexd log ---\n{plexd_log}",
                g.status, g.log
            );
        }
    }
}

/// The output of one guest run.
pub struct GuestRun {
    /// `run-guest.sh`'s exit status: the script's, 124 on timeout, 125 without an exit line.
    pub status: Option<i32>,
    /// The serial log.
    pub log: String,
}

/// `run-guest.sh SCRIPT` with a vhost-user-blk device (two queues) on `socket`; `append` goes
/// to the guest's kernel command line.
pub fn guest_command(script: &str, append: &str, socket: &Path) -> Command {
    // x86 truncates the kernel command line at 2048 bytes; run-guest.sh adds ~30.
    assert!(append.len() < 1900, "GUEST_APPEND too long: {append}");
    let mut cmd = Command::new("bash");
    cmd.arg(guest_dir().join("run-guest.sh"))
        .arg(guest_dir().join(script))
        .arg("-chardev")
        .arg(format!("socket,id=vub0,path={}", path_str(socket)))
        .arg("-device")
        .arg("vhost-user-blk-pci,chardev=vub0,num-queues=2")
        .env("GUEST_TIMEOUT", GUEST_TIMEOUT.to_string())
        .env("GUEST_APPEND", append)
        .stdin(Stdio::null());
    cmd
}

/// Boots the guest, runs `script` to the end, and returns its status and serial log.
pub fn run_guest(script: &str, append: &str, socket: &Path) -> GuestRun {
    let out = guest_command(script, append, socket)
        .output()
        .expect("run tests/guest/run-guest.sh (bash)");
    let mut log = String::from_utf8_lossy(&out.stdout).into_owned();
    log.push_str(&String::from_utf8_lossy(&out.stderr));
    // Shown by the test harness if a later host-side check fails (or with --nocapture).
    println!("--- guest serial log ({script}) ---\n{log}");
    GuestRun {
        status: out.status.code(),
        log,
    }
}

/// A guest running in the background; QEMU is killed on drop if still running.
pub struct BackgroundGuest {
    child: Child,
    lines: mpsc::Receiver<String>,
    log: String,
    pidfile: PathBuf,
}

impl BackgroundGuest {
    /// Starts `cmd` (from [`guest_command`]), QEMU writing its pid to `pidfile`.
    pub fn spawn(mut cmd: Command, pidfile: PathBuf) -> BackgroundGuest {
        cmd.arg("-pidfile")
            .arg(&pidfile)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("run tests/guest/run-guest.sh (bash)");
        let (tx, lines) = mpsc::channel();
        for stream in [
            Box::new(child.stdout.take().expect("stdout")) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().expect("stderr")),
        ] {
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines() {
                    let Ok(line) = line else { break };
                    if tx.send(line).is_err() {
                        break;
                    }
                }
            });
        }
        BackgroundGuest {
            child,
            lines,
            log: String::new(),
            pidfile,
        }
    }

    /// Collects output until a line equals `marker` (true), or the guest's output ends or the
    /// guest timeout passes (false). `None` collects until the output ends.
    pub fn collect_until(&mut self, marker: Option<&str>) -> bool {
        let end = Instant::now() + Duration::from_secs(GUEST_TIMEOUT + 20);
        while Instant::now() < end {
            match self.lines.recv_timeout(Duration::from_millis(200)) {
                Ok(line) => {
                    self.log.push_str(&line);
                    self.log.push('\n');
                    if marker == Some(line.as_str()) {
                        return true;
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => return false,
            }
        }
        false
    }

    /// Kills QEMU (a test that gives up) and returns the serial log so far.
    pub fn kill(mut self) -> GuestRun {
        self.kill_qemu();
        self.finish()
    }

    fn kill_qemu(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            // run-guest.sh runs QEMU under timeout(1), in its own process group: kill QEMU.
            if let Some(pid) = std::fs::read_to_string(&self.pidfile)
                .ok()
                .and_then(|s| s.trim().parse::<i32>().ok())
            {
                // SAFETY: kill(2) on the QEMU this guest started (its -pidfile).
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
            let _ = self.child.kill();
        }
    }

    /// Waits for the guest to finish; returns its status and the whole serial log.
    pub fn finish(mut self) -> GuestRun {
        self.collect_until(None);
        let status = self.child.wait().ok().and_then(|s| s.code());
        println!("--- guest serial log ---\n{}", self.log);
        GuestRun {
            status,
            log: std::mem::take(&mut self.log),
        }
    }
}

impl Drop for BackgroundGuest {
    fn drop(&mut self) {
        self.kill_qemu();
        let _ = self.child.wait();
    }
}
