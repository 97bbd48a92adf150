//! vhost-user-blk controllers: a named export of a bdev on a Unix socket (`<dir>/<name>`,
//! mode 0600). One accept thread per controller; one front-end (QEMU) connection at a time,
//! served by a control thread that runs the vhost-user protocol. The hot path runs on the
//! reactors (see `vring`).

use std::collections::BTreeMap;
use std::os::fd::AsRawFd;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use plexd_engine::bdev::Bdev;
use plexd_engine::Engine;
use vhost::vhost_user::{BackendReqHandler, Error as VuError};

use super::backend::{BlkBackend, Export};

/// How long a ring stop (GET_VRING_BASE, disable, reset, disconnect) waits for the requests
/// in flight before it logs that the ring is still draining; see
/// [`Controllers::set_stop_wait`].
pub const DEFAULT_STOP_WAIT: Duration = Duration::from_secs(30);

/// Queues offered to a front-end (GET_QUEUE_NUM); they are spread over the controller's
/// reactors round-robin.
pub const MAX_QUEUES: u16 = 16;

/// Errors managing controllers; each maps to an SPDK errno.
#[derive(Debug, thiserror::Error)]
pub enum ControllerError {
    /// Name taken.
    #[error("a vhost controller named '{0}' already exists")]
    Exists(String),
    /// No such controller.
    #[error("no vhost controller named '{0}'")]
    NotFound(String),
    /// A guest is connected.
    #[error("vhost controller '{0}' has a connected front-end (guest); shut the guest down or detach the disk first")]
    Connected(String),
    /// Bad name or mask.
    #[error("{0}")]
    Invalid(String),
    /// The bdev layer refused (missing or claimed bdev).
    #[error(transparent)]
    Bdev(#[from] plexd_engine::bdev::BdevError),
    /// Socket trouble.
    #[error("cannot create vhost socket '{path}': {source}")]
    Socket {
        /// The path.
        path: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

impl ControllerError {
    /// The positive errno reported over RPC.
    pub fn errno(&self) -> i32 {
        match self {
            ControllerError::Exists(_) => libc::EEXIST,
            ControllerError::NotFound(_) => libc::ENODEV,
            ControllerError::Connected(_) => libc::EBUSY,
            ControllerError::Invalid(_) => libc::EINVAL,
            ControllerError::Bdev(e) => e.errno(),
            ControllerError::Socket { source, .. } => source.raw_os_error().unwrap_or(
                if source.kind() == std::io::ErrorKind::AlreadyExists {
                    libc::EEXIST
                } else {
                    libc::EIO
                },
            ),
        }
    }
}

/// A running controller.
pub struct Controller {
    /// Name (`ctrlr`).
    pub name: String,
    /// Socket path.
    pub socket: PathBuf,
    /// Cores serving it, as given (hex mask).
    pub cpumask: String,
    /// The export.
    pub export: Export,
    /// Interrupt coalescing settings (stored for SPDK compatibility; completions are already
    /// batched per reactor iteration).
    pub coalescing: Mutex<(u32, u32)>,
    connected: Arc<AtomicBool>,
    connections: Arc<AtomicU32>,
    stop: Arc<AtomicBool>,
    listener_fd: i32,
    current: Arc<Mutex<Option<UnixStream>>>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl Controller {
    /// Whether a front-end is connected.
    pub fn is_connected(&self) -> bool {
        self.connected.load(Ordering::SeqCst)
    }

    /// How many front-ends have connected since creation.
    pub fn connection_count(&self) -> u32 {
        self.connections.load(Ordering::Relaxed)
    }

    /// How many times a ring stop has waited a whole stop-wait period for requests still in
    /// flight (a slow or stuck bdev behind the ring).
    pub fn stop_overruns(&self) -> u64 {
        self.export.stop_overruns.load(Ordering::Relaxed)
    }

    fn shutdown(&self) {
        self.stop.store(true, Ordering::SeqCst);
        // SAFETY: shutdown(2) on the listening socket we own; it wakes the blocked accept().
        unsafe { libc::shutdown(self.listener_fd, libc::SHUT_RDWR) };
        if let Some(conn) = self
            .current
            .lock()
            .ok()
            .and_then(|c| c.as_ref().and_then(|s| s.try_clone().ok()))
        {
            let _ = conn.shutdown(std::net::Shutdown::Both);
        }
        let t = self.thread.lock().ok().and_then(|mut t| t.take());
        if let Some(t) = t {
            let _ = t.join();
        }
        let _ = std::fs::remove_file(&self.socket);
        self.export.bdev.release_claim();
    }
}

/// All controllers of a plexd.
pub struct Controllers {
    engine: Arc<Engine>,
    socket_dir: PathBuf,
    map: Mutex<BTreeMap<String, Arc<Controller>>>,
    stop_wait_ms: AtomicU64,
}

fn is_fatal(e: &VuError) -> bool {
    !matches!(
        e,
        VuError::InvalidParam
            | VuError::InvalidOperation(_)
            | VuError::InactiveFeature(_)
            | VuError::InactiveOperation(_)
            | VuError::ReqHandlerError(_)
            | VuError::FeatureMismatch
            | VuError::BackendInternalError
    )
}

fn serve_connection(stream: UnixStream, export: Export) {
    let backend = Arc::new(Mutex::new(BlkBackend::new(export.clone())));
    let mut handler = BackendReqHandler::from_stream(stream, backend.clone());
    let mut errors = 0u32;
    let mut faults = super::sigbus::faults();
    loop {
        let r = handler.handle_request();
        let now = super::sigbus::faults();
        if now != faults {
            tracing::error!(ctrlr = %export.ctrlr, pages = now - faults, "a front-end shrank shared memory under plexd: pages past the end of its file were replaced by zero pages (the guest's data there is lost); reset or restart that guest");
            faults = now;
        }
        match r {
            Ok(()) => errors = 0,
            Err(e) if is_fatal(&e) => {
                tracing::info!(ctrlr = %export.ctrlr, "front-end disconnected ({e})");
                break;
            }
            Err(e) => {
                errors += 1;
                tracing::warn!(ctrlr = %export.ctrlr, "vhost-user request refused: {e}");
                if errors > 64 {
                    tracing::error!(ctrlr = %export.ctrlr, "too many refused requests; dropping the connection");
                    break;
                }
            }
        }
    }
    drop(handler);
    let mut b = match backend.lock() {
        Ok(b) => b,
        Err(p) => p.into_inner(),
    };
    b.stop_all();
    drop(b);
    drop(backend);
    // Release the guest memory mappings nothing uses any more.
    super::sigbus::sweep();
}

impl Controllers {
    /// A registry creating sockets under `socket_dir`.
    pub fn new(engine: Arc<Engine>, socket_dir: PathBuf) -> Arc<Controllers> {
        Arc::new(Controllers {
            engine,
            socket_dir,
            map: Mutex::new(BTreeMap::new()),
            stop_wait_ms: AtomicU64::new(DEFAULT_STOP_WAIT.as_millis() as u64),
        })
    }

    /// Sets how long a ring stop waits for requests in flight before it logs (and counts)
    /// that the ring is still draining, for controllers created afterwards (default
    /// [`DEFAULT_STOP_WAIT`]; tests shorten it).
    pub fn set_stop_wait(&self, wait: Duration) {
        let ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX).max(1);
        self.stop_wait_ms.store(ms, Ordering::Relaxed);
    }

    /// The directory sockets are created in.
    pub fn socket_dir(&self) -> &Path {
        &self.socket_dir
    }

    /// Creates a controller exporting `bdev_name`.
    pub fn create(
        &self,
        name: &str,
        bdev_name: &str,
        readonly: bool,
        cores: Option<Vec<u32>>,
        cpumask: String,
    ) -> Result<Arc<Controller>, ControllerError> {
        if name.is_empty() || name.contains('/') || name == "." || name == ".." || name.len() > 100
        {
            return Err(ControllerError::Invalid(format!(
                "invalid controller name '{name}': use 1-100 characters without '/'"
            )));
        }
        let all = self.engine.reactors().reactors();
        let reactors: Vec<usize> = match &cores {
            None => (0..all.len()).collect(),
            Some(cores) => {
                let mut v = Vec::new();
                for c in cores {
                    match all.iter().find(|r| r.core == *c) {
                        Some(r) => v.push(r.index),
                        None => {
                            return Err(ControllerError::Invalid(format!(
                                "cpumask {cpumask} names core {c}, which runs no reactor (plexd -m)"
                            )))
                        }
                    }
                }
                v
            }
        };
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        if map.contains_key(name) {
            return Err(ControllerError::Exists(name.to_string()));
        }
        let bdev: Arc<Bdev> = self.engine.bdevs().get(bdev_name)?;
        let socket = self.socket_dir.join(name);
        if let Ok(meta) = std::fs::symlink_metadata(&socket) {
            use std::os::unix::fs::FileTypeExt;
            // Replace only a stale socket (left by a plexd that was killed); never a regular
            // file, and never a socket someone still listens on.
            let stale = meta.file_type().is_socket() && UnixStream::connect(&socket).is_err();
            if !stale {
                return Err(ControllerError::Socket {
                    path: socket.display().to_string(),
                    source: std::io::Error::new(
                        std::io::ErrorKind::AlreadyExists,
                        "the path exists and is not a stale socket; choose another name or -S directory",
                    ),
                });
            }
            let _ = std::fs::remove_file(&socket);
        }
        bdev.claim(&format!("vhost controller {name}"))?;
        let listener = match UnixListener::bind(&socket) {
            Ok(l) => l,
            Err(source) => {
                bdev.release_claim();
                return Err(ControllerError::Socket {
                    path: socket.display().to_string(),
                    source,
                });
            }
        };
        if let Err(source) =
            std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o600))
        {
            bdev.release_claim();
            let _ = std::fs::remove_file(&socket);
            return Err(ControllerError::Socket {
                path: socket.display().to_string(),
                source,
            });
        }
        let stop = Arc::new(AtomicBool::new(false));
        let export = Export {
            ctrlr: name.to_string(),
            bdev: bdev.clone(),
            readonly,
            reactors,
            num_queues: MAX_QUEUES,
            engine: self.engine.clone(),
            stop_wait: Duration::from_millis(self.stop_wait_ms.load(Ordering::Relaxed)),
            shutting_down: stop.clone(),
            stop_overruns: Arc::new(AtomicU64::new(0)),
        };
        let connected = Arc::new(AtomicBool::new(false));
        let connections = Arc::new(AtomicU32::new(0));
        let listener_fd = listener.as_raw_fd();
        let current: Arc<Mutex<Option<UnixStream>>> = Arc::new(Mutex::new(None));
        let (c2, n2, s2, e2, cur2) = (
            connected.clone(),
            connections.clone(),
            stop.clone(),
            export.clone(),
            current.clone(),
        );
        let thread = std::thread::Builder::new()
            .name(format!("vhost-{name}"))
            .spawn(move || {
                for stream in listener.incoming() {
                    if s2.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(stream) = stream else { continue };
                    c2.store(true, Ordering::SeqCst);
                    n2.fetch_add(1, Ordering::Relaxed);
                    tracing::info!(ctrlr = %e2.ctrlr, "front-end connected");
                    if let Ok(mut cur) = cur2.lock() {
                        *cur = stream.try_clone().ok();
                    }
                    if s2.load(Ordering::SeqCst) {
                        break;
                    }
                    serve_connection(stream, e2.clone());
                    if let Ok(mut cur) = cur2.lock() {
                        *cur = None;
                    }
                    c2.store(false, Ordering::SeqCst);
                }
            });
        let thread = match thread {
            Ok(t) => t,
            Err(source) => {
                bdev.release_claim();
                let _ = std::fs::remove_file(&socket);
                return Err(ControllerError::Socket {
                    path: socket.display().to_string(),
                    source,
                });
            }
        };
        let c = Arc::new(Controller {
            name: name.to_string(),
            socket,
            cpumask,
            export,
            coalescing: Mutex::new((0, 60000)),
            connected,
            connections,
            stop,
            listener_fd,
            current,
            thread: Mutex::new(Some(thread)),
        });
        map.insert(name.to_string(), c.clone());
        tracing::info!(ctrlr = name, bdev = bdev_name, socket = %c.socket.display(), "vhost-user-blk controller created");
        Ok(c)
    }

    /// Looks a controller up.
    pub fn get(&self, name: &str) -> Result<Arc<Controller>, ControllerError> {
        self.map
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(name)
            .cloned()
            .ok_or_else(|| ControllerError::NotFound(name.to_string()))
    }

    /// Every controller, by name.
    pub fn list(&self) -> Vec<Arc<Controller>> {
        self.map
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect()
    }

    /// Deletes a controller; refused while a front-end is connected.
    pub fn delete(&self, name: &str) -> Result<(), ControllerError> {
        let c = {
            let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
            let c = map
                .get(name)
                .cloned()
                .ok_or_else(|| ControllerError::NotFound(name.to_string()))?;
            if c.is_connected() {
                return Err(ControllerError::Connected(name.to_string()));
            }
            map.remove(name);
            c
        };
        c.shutdown();
        tracing::info!(ctrlr = name, "vhost-user-blk controller deleted");
        Ok(())
    }

    /// Stops every controller (plexd shutdown): connections are dropped after their queues
    /// drain.
    pub fn shutdown_all(&self) {
        let all: Vec<Arc<Controller>> = {
            let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
            std::mem::take(&mut *map).into_values().collect()
        };
        for c in all {
            c.shutdown();
        }
    }
}
