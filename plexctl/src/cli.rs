//! The command line: global options and the command tree, as clap derive types.
//!
//! Every daemon method has a command; `plexctl call` reaches any method by name. What each
//! command sends is decided in `commands.rs`, what it prints in `render.rs`.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{ArgGroup, Args, Parser, Subcommand, ValueEnum};
use clap_complete::Shell;

use plexd_control::size::size_arg;

/// The daemon's default RPC socket.
pub const DEFAULT_SOCKET: &str = "/var/tmp/plexd.sock";

/// Control a running plexd over its JSON-RPC socket.
#[derive(Debug, Parser)]
#[command(name = "plexctl", version, propagate_version = true)]
#[command(after_help = "Sizes take units: 4096, 4K/4KiB (1024-based), 100MB (1000-based), 1.5G.")]
pub struct Cli {
    /// Path of plexd's RPC socket [env: PLEXD_SOCKET] [default: /var/tmp/plexd.sock].
    #[arg(
        short = 's',
        long = "socket",
        value_name = "PATH",
        global = true,
        display_order = 900
    )]
    pub socket: Option<PathBuf>,

    /// Print the raw JSON result (pretty-printed) instead of a human summary.
    #[arg(long, global = true, display_order = 901)]
    pub json: bool,

    /// Give up on the daemon after this many seconds (fractions allowed).
    #[arg(
        long,
        value_name = "SECS",
        value_parser = timeout_arg,
        global = true,
        display_order = 902
    )]
    pub timeout: Option<Duration>,

    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

impl Cli {
    /// The socket to use: `-s`, else `$PLEXD_SOCKET`, else [`DEFAULT_SOCKET`].
    pub fn socket_path(&self) -> PathBuf {
        resolve_socket(self.socket.as_deref(), std::env::var_os(SOCKET_ENV))
    }
}

/// The environment variable naming the socket when `-s` is not given.
pub const SOCKET_ENV: &str = "PLEXD_SOCKET";

/// `-s` wins over the environment, which wins over the default; an empty variable is unset.
fn resolve_socket(arg: Option<&Path>, env: Option<OsString>) -> PathBuf {
    match (arg, env) {
        (Some(path), _) => path.to_path_buf(),
        (None, Some(env)) if !env.is_empty() => PathBuf::from(env),
        _ => PathBuf::from(DEFAULT_SOCKET),
    }
}

/// Top-level commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Show the daemon's version (spdk_get_version).
    Version,
    /// List the RPC methods the daemon knows (rpc_get_methods).
    Methods {
        /// Only the methods callable in the current state (startup or runtime).
        #[arg(long)]
        current: bool,
    },
    /// Framework state: initialisation, subsystems, reactors.
    #[command(subcommand)]
    Framework(FrameworkCommand),
    /// Lightweight threads.
    #[command(subcommand)]
    Thread(ThreadCommand),
    /// Ask the daemon to exit (spdk_kill_instance).
    Kill {
        /// Signal to deliver: SIGTERM, SIGINT, SIGQUIT, SIGHUP, SIGKILL (the SIG prefix is
        /// optional, case does not matter).
        #[arg(long, value_name = "SIGNAL", default_value = "SIGTERM", value_parser = signal_arg)]
        signal: String,
    },
    /// Print the running configuration as an SPDK-format JSON config (like `rpc.py save_config`).
    SaveConfig {
        /// Save only this subsystem (repeatable); default all.
        #[arg(short = 'n', long = "subsystem", value_name = "NAME")]
        subsystems: Vec<String>,
    },
    /// Replay an SPDK-format JSON config (like `rpc.py load_config`); `-` reads stdin.
    LoadConfig {
        /// The config file, or `-` for standard input.
        #[arg(value_name = "FILE")]
        file: PathBuf,
    },
    /// Block devices.
    #[command(subcommand)]
    Bdev(BdevCommand),
    /// vhost-user-blk exports: a bdev served to a QEMU guest as a virtio-blk disk.
    #[command(subcommand)]
    Vhost(VhostCommand),
    /// Disk groups of the volume manager: sets of bdevs that hold volumes.
    #[command(subcommand)]
    Dg(DgCommand),
    /// The disks (member bdevs) of disk groups.
    #[command(subcommand)]
    Disk(DiskCommand),
    /// Volumes: bdevs named DG/NAME built from plexes on a disk group's disks.
    #[command(subcommand)]
    Volume(VolumeCommand),
    /// Plexes (mirrors) of volumes.
    #[command(subcommand)]
    Plex(PlexCommand),
    /// Subdisks: the extents of disks that make up plexes.
    #[command(subcommand)]
    Subdisk(SubdiskCommand),
    /// Show the volume manager's objects as a tree in `vxprint -ht` columns (vm_print).
    ///
    /// Lengths and offsets are in 512-byte sectors, as VxVM prints them.
    Print {
        /// Only this disk group; default all.
        dg: Option<String>,
    },
    /// Long-running volume manager operations (resync, plex attach, subdisk move).
    #[command(subcommand)]
    Task(TaskCommand),
    /// Call any method with raw JSON params and print the result as JSON.
    Call {
        /// The method name, e.g. bdev_get_bdevs.
        method: String,
        /// The params as JSON, e.g. '{"name":"Malloc0"}'; `-` reads them from stdin.
        #[arg(value_name = "JSON")]
        params: Option<String>,
    },
    /// Print a shell completion script.
    Completions {
        /// The shell to generate for.
        shell: Shell,
    },
}

/// `plexctl framework ...`
#[derive(Debug, Subcommand)]
pub enum FrameworkCommand {
    /// Leave the startup state and initialise subsystems (framework_start_init).
    StartInit,
    /// Block until initialisation has finished (framework_wait_init).
    WaitInit,
    /// List subsystems and their dependencies (framework_get_subsystems).
    Subsystems,
    /// Print one subsystem's configuration (framework_get_config).
    Config {
        /// The subsystem, e.g. bdev.
        name: String,
    },
    /// Show reactors (cores) and the threads on them (framework_get_reactors).
    Reactors,
}

/// `plexctl thread ...`
#[derive(Debug, Subcommand)]
pub enum ThreadCommand {
    /// Per-thread busy/idle statistics (thread_get_stats).
    Stats,
}

/// `plexctl bdev ...`
#[derive(Debug, Subcommand)]
pub enum BdevCommand {
    /// List block devices, or show one (bdev_get_bdevs).
    List {
        /// Only this bdev (name or alias).
        name: Option<String>,
    },
    /// I/O statistics (bdev_get_iostat).
    Iostat {
        /// Only these bdevs; default all.
        names: Vec<String>,
    },
    /// RAM-backed bdevs.
    #[command(subcommand)]
    Malloc(MallocCommand),
    /// Bdevs that discard writes and read zeroes.
    #[command(subcommand)]
    Null(NullCommand),
    /// Bdevs on a file or block device through Linux AIO.
    #[command(subcommand)]
    Aio(AioCommand),
    /// Bdevs on a file or block device through io_uring.
    #[command(subcommand)]
    Uring(UringCommand),
    /// Error-injection bdevs stacked on another bdev.
    #[command(subcommand)]
    Error(ErrorCommand),
    /// Latency-injecting bdevs stacked on another bdev.
    #[command(subcommand)]
    Delay(DelayCommand),
}

/// Arguments shared by the in-memory bdevs (malloc, null).
#[derive(Debug, Args)]
pub struct MemCreateArgs {
    /// Name of the new bdev.
    pub name: String,
    /// Total size, a multiple of the block size (e.g. 64MiB).
    #[arg(long, value_name = "SIZE", value_parser = size_arg)]
    pub size: u64,
    /// Block size in bytes.
    #[arg(long, value_name = "BYTES", default_value = "512", value_parser = size_arg)]
    pub block_size: u64,
    /// UUID for the new bdev; default a random one.
    #[arg(long, value_name = "UUID")]
    pub uuid: Option<String>,
}

/// `plexctl bdev malloc ...`
#[derive(Debug, Subcommand)]
pub enum MallocCommand {
    /// Create a malloc bdev (bdev_malloc_create).
    Create(MemCreateArgs),
    /// Delete a malloc bdev (bdev_malloc_delete).
    Delete {
        /// The bdev to delete.
        name: String,
    },
}

/// `plexctl bdev null ...`
#[derive(Debug, Subcommand)]
pub enum NullCommand {
    /// Create a null bdev (bdev_null_create).
    Create(MemCreateArgs),
    /// Delete a null bdev (bdev_null_delete).
    Delete {
        /// The bdev to delete.
        name: String,
    },
}

/// `plexctl bdev aio ...`
#[derive(Debug, Subcommand)]
pub enum AioCommand {
    /// Create an AIO bdev on a file or block device (bdev_aio_create).
    Create {
        /// Name of the new bdev.
        name: String,
        /// The backing file or device; a relative path is made absolute here, since the
        /// daemon's working directory is not the caller's.
        file: PathBuf,
        /// Block size in bytes; default the device's logical block size.
        #[arg(long, value_name = "BYTES", value_parser = size_arg)]
        block_size: Option<u64>,
        /// Open the backing file read-only.
        #[arg(long)]
        readonly: bool,
    },
    /// Delete an AIO bdev (bdev_aio_delete).
    Delete {
        /// The bdev to delete.
        name: String,
    },
}

/// `plexctl bdev uring ...`
#[derive(Debug, Subcommand)]
pub enum UringCommand {
    /// Create an io_uring bdev on a file or block device (bdev_uring_create).
    Create {
        /// Name of the new bdev.
        name: String,
        /// The backing file or device; a relative path is made absolute here.
        file: PathBuf,
        /// Block size in bytes; default the device's logical block size.
        #[arg(long, value_name = "BYTES", value_parser = size_arg)]
        block_size: Option<u64>,
    },
    /// Delete an io_uring bdev (bdev_uring_delete).
    Delete {
        /// The bdev to delete.
        name: String,
    },
}

/// `plexctl bdev error ...`
#[derive(Debug, Subcommand)]
pub enum ErrorCommand {
    /// Create EE_<BASE>, an error-injection bdev on BASE (bdev_error_create).
    Create {
        /// The bdev to stack on.
        base: String,
    },
    /// Delete an error-injection bdev (bdev_error_delete).
    Delete {
        /// The bdev to delete, e.g. EE_Malloc0.
        name: String,
    },
    /// Make the next I/Os of a type fail, hang or return corrupt data (bdev_error_inject_error).
    Inject {
        /// The error bdev, e.g. EE_Malloc0.
        name: String,
        /// Which I/Os to hit; `clear` removes injected errors.
        #[arg(long, value_name = "TYPE")]
        io_type: IoType,
        /// What happens to them.
        #[arg(long, value_name = "KIND")]
        error_type: ErrorType,
        /// How many I/Os to affect (daemon default 1).
        #[arg(long, value_name = "N")]
        num: Option<u64>,
        /// Byte offset in the buffer to corrupt (corrupt_data only).
        #[arg(long, value_name = "N")]
        corrupt_offset: Option<u64>,
        /// Value XORed into the corrupted byte (corrupt_data only).
        #[arg(long, value_name = "N")]
        corrupt_value: Option<u64>,
    },
}

/// I/O types for error injection, spelled as SPDK does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum IoType {
    /// Reads.
    Read,
    /// Writes.
    Write,
    /// Unmaps.
    Unmap,
    /// Flushes.
    Flush,
    /// Every type.
    All,
    /// Remove injected errors.
    Clear,
}

impl IoType {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            IoType::Read => "read",
            IoType::Write => "write",
            IoType::Unmap => "unmap",
            IoType::Flush => "flush",
            IoType::All => "all",
            IoType::Clear => "clear",
        }
    }
}

/// Injected error kinds, spelled as SPDK does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ErrorType {
    /// Complete the I/O with an error.
    Failure,
    /// Never complete the I/O.
    Pending,
    /// Complete successfully but corrupt the data.
    #[value(name = "corrupt_data", alias = "corrupt-data")]
    CorruptData,
    /// Complete with ENOMEM so the bdev layer retries.
    Nomem,
}

impl ErrorType {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorType::Failure => "failure",
            ErrorType::Pending => "pending",
            ErrorType::CorruptData => "corrupt_data",
            ErrorType::Nomem => "nomem",
        }
    }
}

/// `plexctl bdev delay ...`
#[derive(Debug, Subcommand)]
pub enum DelayCommand {
    /// Create a delay bdev on BASE (bdev_delay_create). Latencies are in microseconds.
    Create {
        /// Name of the new bdev.
        name: String,
        /// The bdev to stack on.
        base: String,
        /// Average read latency (µs).
        #[arg(long, value_name = "US")]
        avg_read: u64,
        /// 99th-percentile read latency (µs).
        #[arg(long, value_name = "US")]
        p99_read: u64,
        /// Average write latency (µs).
        #[arg(long, value_name = "US")]
        avg_write: u64,
        /// 99th-percentile write latency (µs).
        #[arg(long, value_name = "US")]
        p99_write: u64,
    },
    /// Delete a delay bdev (bdev_delay_delete).
    Delete {
        /// The bdev to delete.
        name: String,
    },
}

/// `plexctl vhost ...`
#[derive(Debug, Subcommand)]
pub enum VhostCommand {
    /// Export a bdev to QEMU guests (vhost_create_blk_controller).
    ///
    /// plexd listens on the socket DIR/CTRLR, where DIR is `plexd -S DIR` (default /var/tmp).
    /// The socket is created with mode 0600, so QEMU must run as plexd's user. The bdev is
    /// claimed (it cannot be deleted) until the controller is deleted.
    #[command(after_help = "Attach a QEMU guest with:\n  \
        -object memory-backend-memfd,id=mem,size=1G,share=on -numa node,memdev=mem \
        (guest RAM: shared, same size as -m)\n  \
        -chardev socket,id=vub0,path=DIR/CTRLR \
        -device vhost-user-blk-pci,chardev=vub0,num-queues=2 (at most 16 queues)")]
    Create {
        /// Name of the new controller; also the socket's file name.
        ctrlr: String,
        /// The bdev to export.
        bdev: String,
        /// Export read-only: the guest sees a write-protected disk.
        #[arg(long)]
        readonly: bool,
        /// Cores whose reactors serve the queues: a hex mask (0x3) or a list ([0,2-3]); each
        /// must run a reactor. Default every reactor.
        #[arg(long, value_name = "MASK")]
        cpumask: Option<String>,
    },
    /// List controllers, or show one (vhost_get_controllers).
    List {
        /// Only this controller.
        ctrlr: Option<String>,
    },
    /// Delete a controller (vhost_delete_controller).
    ///
    /// Removes its socket and releases the bdev. Refused while a guest is connected: shut the
    /// guest down or detach the disk first.
    Delete {
        /// The controller to delete.
        ctrlr: String,
    },
    /// Set interrupt coalescing (vhost_controller_set_coalescing).
    ///
    /// plexd stores the values and reports them (`vhost list --json`); it has no timer-based
    /// coalescing yet. Completions are already batched: at most one interrupt per
    /// queue per reactor iteration.
    Coalescing {
        /// The controller.
        ctrlr: String,
        /// Base delay in microseconds (in SPDK, 0 turns coalescing off).
        #[arg(long, value_name = "US")]
        delay_base_us: u32,
        /// I/O rate (IOPS) above which SPDK coalesces.
        #[arg(long, value_name = "N")]
        iops_threshold: u32,
    },
}

/// `plexctl dg ...`
#[derive(Debug, Subcommand)]
pub enum DgCommand {
    /// Create a disk group from bdevs (dg_create); each becomes a disk named diskNN.
    ///
    /// Every bdev is initialised (a label and a private region at its start) and claimed by
    /// the group. The bdevs must share one block size.
    Create {
        /// Name of the new disk group.
        name: String,
        /// The bdevs to use as its disks.
        #[arg(value_name = "BDEV", required = true)]
        bdevs: Vec<String>,
        /// Initialise bdevs even if they hold another group's disk, a foreign or corrupt label.
        #[arg(long)]
        force: bool,
    },
    /// Add a bdev to a disk group as a new disk (dg_add_disk); prints the disk's name.
    AddDisk {
        /// The disk group.
        dg: String,
        /// The bdev to add.
        bdev: String,
        /// Name for the disk; default the next free diskNN.
        #[arg(long, value_name = "NAME")]
        name: Option<String>,
        /// Initialise the bdev even if it holds a label.
        #[arg(long)]
        force: bool,
    },
    /// Remove a disk that holds no subdisks from its group (dg_remove_disk).
    RemoveDisk {
        /// The disk group.
        dg: String,
        /// The disk (e.g. disk02), not the bdev.
        disk: String,
    },
    /// Stop a disk group's volumes and release its disks (dg_deport), so that another plexd
    /// can import it.
    Deport {
        /// The disk group.
        name: String,
    },
    /// Import disk groups found on bdevs (dg_import); prints the groups imported.
    Import {
        /// Only this disk group; default every group found.
        name: Option<String>,
        /// Scan only this bdev (repeatable); default every unclaimed bdev.
        #[arg(long = "disk", value_name = "BDEV")]
        disks: Vec<String>,
        /// Trust the configuration copy on this bdev when the copies disagree (split brain).
        #[arg(long, value_name = "BDEV")]
        select_copy: Option<String>,
    },
    /// List imported disk groups, or show one (dg_list).
    List {
        /// Only this disk group.
        name: Option<String>,
    },
    /// Destroy a disk group that has no volumes (dg_destroy).
    ///
    /// Every disk's label is reset to a free disk and its bdev released, so the bdevs can be
    /// used again (by `dg create` without --force, for instance).
    Destroy {
        /// The disk group.
        name: String,
    },
}

/// `plexctl disk ...`
#[derive(Debug, Subcommand)]
pub enum DiskCommand {
    /// List the disks of imported disk groups (disk_list).
    List {
        /// Only the disks of this disk group.
        #[arg(long, value_name = "DG")]
        dg: Option<String>,
    },
    /// Set a disk's flags (disk_set).
    #[command(group(ArgGroup::new("flags").required(true).multiple(true)))]
    Set {
        /// The disk group.
        dg: String,
        /// The disk (e.g. disk02).
        disk: String,
        /// Keep the disk as a hot spare: new volumes are not allocated on it.
        #[arg(long, value_name = "BOOL", group = "flags")]
        spare: Option<bool>,
        /// Do not use the disk for hot relocation.
        #[arg(long, value_name = "BOOL", group = "flags")]
        nohotuse: Option<bool>,
    },
}

/// Volume layouts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Layout {
    /// One plex, subdisks end to end.
    Concat,
    /// One plex striped over columns.
    Stripe,
    /// Mirrored concat plexes (2 unless --nmirror).
    Mirror,
    /// Mirrored striped plexes.
    MirrorStripe,
    /// One striped plex whose columns are mirrored sub-volumes (layered).
    StripeMirror,
}

impl Layout {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Layout::Concat => "concat",
            Layout::Stripe => "stripe",
            Layout::Mirror => "mirror",
            Layout::MirrorStripe => "mirror-stripe",
            Layout::StripeMirror => "stripe-mirror",
        }
    }
}

/// Which plex serves a read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ReadPolicy {
    /// Alternate between the in-sync plexes.
    Round,
    /// Automatic (the daemon's default).
    Select,
    /// Always the plex given with --prefer-plex while it is usable.
    Prefer,
}

impl ReadPolicy {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            ReadPolicy::Round => "round",
            ReadPolicy::Select => "select",
            ReadPolicy::Prefer => "prefer",
        }
    }
}

/// `plexctl volume create` arguments.
#[derive(Debug, Args)]
pub struct VolumeCreateArgs {
    /// The disk group.
    pub dg: String,
    /// Name of the new volume; its bdev is DG/NAME.
    pub name: String,
    /// Size (e.g. 10GiB); rounded up to whole blocks.
    #[arg(value_parser = size_arg)]
    pub size: u64,
    /// Layout [daemon default: concat].
    #[arg(long, value_name = "LAYOUT")]
    pub layout: Option<Layout>,
    /// Number of stripe columns (striped layouts; default from the number of disks).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub ncol: Option<u32>,
    /// Number of plexes (mirror layouts default to 2).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub nmirror: Option<u32>,
    /// Stripe unit, a whole number of KiB (e.g. 64K, the daemon's default).
    #[arg(long, value_name = "SIZE", value_parser = size_arg)]
    pub stripe_unit: Option<u64>,
    /// Read policy [daemon default: select]; --prefer-plex alone implies prefer.
    #[arg(long, value_name = "POLICY")]
    pub read_policy: Option<ReadPolicy>,
    /// The plex to read from with --read-policy prefer (full name, or 01 for NAME-01).
    #[arg(long, value_name = "PLEX")]
    pub prefer_plex: Option<String>,
    /// Allocate only on this disk (disk name or bdev; repeatable).
    #[arg(long = "alloc", value_name = "DISK")]
    pub alloc: Vec<String>,
}

/// `plexctl volume ...`
#[derive(Debug, Subcommand)]
pub enum VolumeCommand {
    /// Create a volume and start it as bdev DG/NAME (volume_create); prints the bdev's name.
    Create(VolumeCreateArgs),
    /// Delete a volume with its plexes and subdisks (volume_delete).
    Delete {
        /// The disk group.
        dg: String,
        /// The volume.
        name: String,
    },
    /// Start a volume: register its bdev DG/NAME (volume_start).
    Start {
        /// The disk group.
        dg: String,
        /// The volume.
        name: String,
    },
    /// Stop a volume cleanly: its bdev goes away (volume_stop).
    Stop {
        /// The disk group.
        dg: String,
        /// The volume.
        name: String,
    },
    /// Grow a volume to SIZE (volume_resize); prints its new size.
    ///
    /// Every plex gets more space (striped plexes per column) on disks the volume's other
    /// plexes and columns do not use; the new space reads as zeroes. Shrinking is refused.
    Resize {
        /// The disk group.
        dg: String,
        /// The volume.
        name: String,
        /// The new size (e.g. 20GiB); rounded up to whole blocks.
        #[arg(value_parser = size_arg)]
        size: u64,
    },
    /// List volumes, or show one (volume_list).
    List {
        /// Only the volumes of this disk group.
        #[arg(long, value_name = "DG")]
        dg: Option<String>,
        /// Only this volume.
        name: Option<String>,
    },
}

/// `plexctl plex ...`
#[derive(Debug, Subcommand)]
pub enum PlexCommand {
    /// Add a mirror to a started volume, or bring a stale plex back (plex_attach).
    ///
    /// The plex receives writes at once and is filled in the background by a task; without
    /// --wait this prints the task's id and returns, with it plexctl follows the task as
    /// `task wait` does.
    Attach {
        /// The disk group.
        dg: String,
        /// The volume.
        volume: String,
        /// Re-attach this existing (stale, offline or detached) plex instead of a new one.
        #[arg(long, value_name = "PLEX")]
        plex: Option<String>,
        /// Allocate the new plex only on this disk (disk name or bdev; repeatable).
        #[arg(long = "alloc", value_name = "DISK")]
        alloc: Vec<String>,
        /// Sleep this long between copied chunks (throttle).
        #[arg(long, value_name = "MS")]
        delay_ms: Option<u64>,
        /// Wait for the copy to finish, as `task wait` does.
        #[arg(long)]
        wait: bool,
    },
    /// Stop I/O to a plex (state OFFLINE), or remove it from its volume (plex_detach).
    Detach {
        /// The disk group.
        dg: String,
        /// The plex (e.g. vol01-02).
        plex: String,
        /// Also remove the plex from its volume and delete its subdisks.
        #[arg(long)]
        dissociate: bool,
    },
}

/// `plexctl subdisk ...`
#[derive(Debug, Subcommand)]
pub enum SubdiskCommand {
    /// Move a subdisk of a started volume to free space on another disk (subdisk_move).
    ///
    /// The subdisk's contents are copied in the background by a task while the volume stays
    /// in use; the new subdisk takes the old one's place when the copy is done. Without
    /// --wait this prints the task's id and returns, with it plexctl follows the task as
    /// `task wait` does.
    Move {
        /// The disk group.
        dg: String,
        /// The subdisk (e.g. disk01-01).
        subdisk: String,
        /// Move it to this disk (disk name or bdev); default any disk the volume's other
        /// plexes and columns do not use.
        #[arg(long = "to", value_name = "DISK")]
        to: Option<String>,
        /// Sleep this long between copied chunks (throttle).
        #[arg(long, value_name = "MS")]
        delay_ms: Option<u64>,
        /// Wait for the copy to finish, as `task wait` does.
        #[arg(long)]
        wait: bool,
    },
}

/// `plexctl task ...`
#[derive(Debug, Subcommand)]
pub enum TaskCommand {
    /// List running and finished tasks (task_list).
    List,
    /// Wait for a task to finish, showing its progress (task_list, or task_wait with --json).
    ///
    /// Exits 1 if the task failed or was cancelled. The progress bar goes to standard error
    /// when it is a terminal; otherwise a line about every 2 seconds. With --json, prints the
    /// finished task. --timeout limits each call to the daemon, not the wait.
    Wait {
        /// The task's id (from `plex attach`, `subdisk move` or `task list`).
        id: u64,
    },
}

/// clap value parser for `--timeout`: positive, finite seconds.
fn timeout_arg(text: &str) -> Result<Duration, String> {
    let secs: f64 = text
        .trim()
        .parse()
        .map_err(|_| format!("'{text}' is not a number of seconds"))?;
    if !(secs.is_finite() && secs > 0.0) {
        return Err(format!(
            "timeout must be a positive number of seconds, not '{text}'"
        ));
    }
    Duration::try_from_secs_f64(secs).map_err(|_| format!("timeout '{text}' is too large"))
}

/// clap value parser for `--signal`: normalises `term`, `TERM`, `sigterm` to `SIGTERM`.
fn signal_arg(text: &str) -> Result<String, String> {
    let upper = text.trim().to_ascii_uppercase();
    let name = upper.strip_prefix("SIG").unwrap_or(&upper);
    if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(format!("'{text}' is not a signal name (e.g. SIGTERM)"));
    }
    Ok(format!("SIG{name}"))
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn clap_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn global_options_anywhere() {
        let cli = Cli::try_parse_from(["plexctl", "bdev", "list", "--json", "-s", "/tmp/x.sock"])
            .expect("parse");
        assert!(cli.json);
        assert_eq!(cli.socket_path(), PathBuf::from("/tmp/x.sock"));
    }

    #[test]
    fn socket_precedence() {
        let env = || Some(OsString::from("/run/env.sock"));
        let arg = Path::new("/run/arg.sock");
        assert_eq!(
            resolve_socket(Some(arg), env()),
            PathBuf::from("/run/arg.sock")
        );
        assert_eq!(resolve_socket(None, env()), PathBuf::from("/run/env.sock"));
        assert_eq!(
            resolve_socket(None, Some(OsString::new())),
            PathBuf::from(DEFAULT_SOCKET)
        );
        assert_eq!(resolve_socket(None, None), PathBuf::from(DEFAULT_SOCKET));
    }

    #[test]
    fn timeout_parsing() {
        assert_eq!(timeout_arg("2"), Ok(Duration::from_secs(2)));
        assert_eq!(timeout_arg("0.5"), Ok(Duration::from_millis(500)));
        assert!(timeout_arg("0").is_err());
        assert!(timeout_arg("-1").is_err());
        assert!(timeout_arg("inf").is_err());
        assert!(timeout_arg("NaN").is_err());
        assert!(timeout_arg("soon").is_err());
        assert!(timeout_arg("1e30").is_err());
    }

    #[test]
    fn signal_names_normalised() {
        assert_eq!(signal_arg("SIGTERM").as_deref(), Ok("SIGTERM"));
        assert_eq!(signal_arg("term").as_deref(), Ok("SIGTERM"));
        assert_eq!(signal_arg("SigInt").as_deref(), Ok("SIGINT"));
        assert!(signal_arg("").is_err());
        assert!(signal_arg("SIG").is_err());
        assert!(signal_arg("SIG TERM").is_err());
    }

    #[test]
    fn error_type_accepts_both_spellings() {
        for spelling in ["corrupt_data", "corrupt-data"] {
            let cli = Cli::try_parse_from([
                "plexctl",
                "bdev",
                "error",
                "inject",
                "EE_M0",
                "--io-type",
                "read",
                "--error-type",
                spelling,
            ])
            .expect("parse");
            match cli.command {
                Command::Bdev(BdevCommand::Error(ErrorCommand::Inject { error_type, .. })) => {
                    assert_eq!(error_type, ErrorType::CorruptData)
                }
                other => panic!("unexpected {other:?}"),
            }
        }
    }

    #[test]
    fn vhost_coalescing_needs_both_values_in_range() {
        let parse = |args: &str| {
            Cli::try_parse_from(
                ["plexctl", "vhost", "coalescing", "vhost.0"]
                    .into_iter()
                    .chain(args.split_whitespace()),
            )
        };
        assert!(parse("--delay-base-us 0 --iops-threshold 60000").is_ok());
        let err = parse("--delay-base-us 10").expect_err("must fail");
        assert_eq!(err.kind(), clap::error::ErrorKind::MissingRequiredArgument);
        let err = parse("--delay-base-us 4294967296 --iops-threshold 1").expect_err("must fail");
        assert_eq!(err.kind(), clap::error::ErrorKind::ValueValidation);
        let err = parse("--delay-base-us x --iops-threshold 1").expect_err("must fail");
        assert_eq!(err.kind(), clap::error::ErrorKind::ValueValidation);
    }

    #[test]
    fn vhost_create_needs_a_bdev() {
        let err =
            Cli::try_parse_from(["plexctl", "vhost", "create", "vhost.0"]).expect_err("must fail");
        assert_eq!(err.kind(), clap::error::ErrorKind::MissingRequiredArgument);
    }

    #[test]
    fn vm_commands_need_their_arguments() {
        let parse = |args: &str| {
            Cli::try_parse_from(std::iter::once("plexctl").chain(args.split_whitespace()))
        };
        let kind = |args: &str| parse(args).expect_err(args).kind();
        use clap::error::ErrorKind::*;
        assert_eq!(kind("dg create dg01"), MissingRequiredArgument);
        assert!(parse("dg create dg01 M0").is_ok());
        assert_eq!(kind("dg add-disk dg01"), MissingRequiredArgument);
        assert_eq!(kind("volume create dg01 vol01"), MissingRequiredArgument);
        assert_eq!(kind("volume create dg01 vol01 1Q"), ValueValidation);
        assert_eq!(kind("volume delete dg01"), MissingRequiredArgument);
        assert_eq!(kind("plex detach dg01"), MissingRequiredArgument);
        assert_eq!(kind("volume resize dg01 vol01"), MissingRequiredArgument);
        assert_eq!(kind("volume resize dg01 vol01 2X"), ValueValidation);
        assert!(parse("volume resize dg01 vol01 2G").is_ok());
        assert_eq!(kind("subdisk move dg01"), MissingRequiredArgument);
        assert_eq!(kind("subdisk move dg01 disk01-01 --to"), InvalidValue);
        assert_eq!(
            kind("subdisk move dg01 disk01-01 --delay-ms soon"),
            ValueValidation
        );
        assert!(parse("subdisk move dg01 disk01-01").is_ok());
        assert_eq!(kind("dg destroy"), MissingRequiredArgument);
        assert!(parse("dg destroy dg01").is_ok());
        assert_eq!(kind("task wait"), MissingRequiredArgument);
        assert_eq!(kind("task wait three"), ValueValidation);
    }

    #[test]
    fn volume_create_options_are_checked() {
        let parse = |args: &str| {
            Cli::try_parse_from(
                ["plexctl", "volume", "create", "dg01", "vol01", "1G"]
                    .into_iter()
                    .chain(args.split_whitespace()),
            )
        };
        let cli = parse("--layout mirror-stripe --read-policy prefer").expect("parse");
        match cli.command {
            Command::Volume(VolumeCommand::Create(a)) => {
                assert_eq!(a.size, 1 << 30);
                assert_eq!(a.layout, Some(Layout::MirrorStripe));
                assert_eq!(a.read_policy, Some(ReadPolicy::Prefer));
            }
            other => panic!("unexpected {other:?}"),
        }
        for bad in [
            "--layout raid5",
            "--layout stripe_mirror",
            "--read-policy fastest",
            "--ncol 0",
            "--nmirror 0",
            "--stripe-unit 64Q",
        ] {
            let err = parse(bad).expect_err(bad);
            assert!(
                matches!(
                    err.kind(),
                    clap::error::ErrorKind::InvalidValue | clap::error::ErrorKind::ValueValidation
                ),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn disk_set_needs_a_flag_with_a_boolean() {
        let parse = |args: &str| {
            Cli::try_parse_from(
                ["plexctl", "disk", "set", "dg01", "disk01"]
                    .into_iter()
                    .chain(args.split_whitespace()),
            )
        };
        assert!(parse("--spare true").is_ok());
        assert!(parse("--nohotuse false --spare true").is_ok());
        let err = parse("").expect_err("no flag");
        assert_eq!(err.kind(), clap::error::ErrorKind::MissingRequiredArgument);
        let err = parse("--spare").expect_err("no value");
        assert_eq!(err.kind(), clap::error::ErrorKind::InvalidValue);
        let err = parse("--spare maybe").expect_err("not a boolean");
        assert_eq!(err.kind(), clap::error::ErrorKind::InvalidValue);
    }

    #[test]
    fn plex_attach_wait_and_import_disks() {
        let cli = Cli::try_parse_from([
            "plexctl", "plex", "attach", "dg01", "vol01", "--wait", "--alloc", "disk03", "--alloc",
            "disk04",
        ])
        .expect("parse");
        match cli.command {
            Command::Plex(PlexCommand::Attach { wait, alloc, .. }) => {
                assert!(wait);
                assert_eq!(alloc, ["disk03", "disk04"]);
            }
            other => panic!("unexpected {other:?}"),
        }
        let cli = Cli::try_parse_from(["plexctl", "dg", "import", "--disk", "M0"]).expect("parse");
        match cli.command {
            Command::Dg(DgCommand::Import { name, disks, .. }) => {
                assert_eq!(name, None);
                assert_eq!(disks, ["M0"]);
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn volume_resize_takes_units_and_subdisk_move_its_options() {
        let cli = Cli::try_parse_from(["plexctl", "volume", "resize", "dg01", "vol01", "1.5G"])
            .expect("parse");
        match cli.command {
            Command::Volume(VolumeCommand::Resize { dg, name, size }) => {
                assert_eq!((dg.as_str(), name.as_str()), ("dg01", "vol01"));
                assert_eq!(size, 3 << 29);
            }
            other => panic!("unexpected {other:?}"),
        }
        let cli = Cli::try_parse_from([
            "plexctl",
            "subdisk",
            "move",
            "dg01",
            "disk01-01",
            "--to",
            "disk03",
            "--delay-ms",
            "5",
            "--wait",
        ])
        .expect("parse");
        match cli.command {
            Command::Subdisk(SubdiskCommand::Move {
                dg,
                subdisk,
                to,
                delay_ms,
                wait,
            }) => {
                assert_eq!((dg.as_str(), subdisk.as_str()), ("dg01", "disk01-01"));
                assert_eq!(to.as_deref(), Some("disk03"));
                assert_eq!(delay_ms, Some(5));
                assert!(wait);
            }
            other => panic!("unexpected {other:?}"),
        }
        let cli = Cli::try_parse_from(["plexctl", "subdisk", "move", "dg01", "sd"]).expect("parse");
        match cli.command {
            Command::Subdisk(SubdiskCommand::Move {
                to, delay_ms, wait, ..
            }) => assert_eq!((to, delay_ms, wait), (None, None, false)),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn bad_size_is_a_usage_error() {
        let err =
            Cli::try_parse_from(["plexctl", "bdev", "malloc", "create", "M0", "--size", "64Q"])
                .expect_err("must fail");
        assert_eq!(err.kind(), clap::error::ErrorKind::ValueValidation);
        assert!(err.to_string().contains("unknown unit"));
    }
}
