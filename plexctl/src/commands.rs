//! From a parsed command to what plexctl does: usually one JSON-RPC call (method + params) and
//! how to show its result. This is a pure function of the command line, so every mapping is
//! tested without a daemon.

use std::path::{Path, PathBuf};

use clap_complete::Shell;
use serde_json::{json, Map, Value};

use crate::cli::{
    AioCommand, BdevCommand, Command, DelayCommand, DgCommand, DiskCommand, ErrorCommand,
    FrameworkCommand, MallocCommand, MemCreateArgs, NullCommand, PlexCommand, ReadPolicy,
    SubdiskCommand, TaskCommand, ThreadCommand, UringCommand, VhostCommand, VolumeCommand,
    VolumeCreateArgs,
};

/// How a method's result is shown when `--json` is not given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    /// `spdk_get_version`: the version string.
    Version,
    /// A list of names, one per line.
    Lines,
    /// `framework_get_subsystems` table.
    Subsystems,
    /// `framework_get_reactors` table.
    Reactors,
    /// `thread_get_stats` table.
    ThreadStats,
    /// `bdev_get_bdevs` table.
    Bdevs,
    /// `bdev_get_iostat` table.
    Iostat,
    /// `vhost_get_controllers` table.
    VhostControllers,
    /// `dg_list` table.
    DiskGroups,
    /// `disk_list` table (sizes from a `dg_list` lookup).
    Disks,
    /// `volume_list` table.
    Volumes,
    /// `task_list` table (rates from a `volume_list` lookup).
    Tasks,
    /// `plex_attach`, `subdisk_move`: the id of the task it started.
    TaskStarted,
    /// `volume_resize`: the new size (block size and name from a `volume_list` lookup).
    Resized,
    /// A string result printed as it is (`vm_print`).
    Text,
    /// A create method: the new object's name.
    Name,
    /// Nothing (the result is `true`).
    Silent,
    /// Pretty-printed JSON.
    Json,
}

/// One JSON-RPC call and how to show its result.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    /// Method name.
    pub method: String,
    /// Params; `None` sends none.
    pub params: Option<Value>,
    /// Human rendering of the result.
    pub output: Output,
    /// A call whose result the human rendering also needs, e.g. `dg_list` for block sizes.
    /// Made after the request; skipped with `--json`; if it fails, the output shows `-`.
    pub lookup: Option<Lookup>,
}

/// A second call made only for the human rendering (see [`Request::lookup`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Lookup {
    /// Method name.
    pub method: &'static str,
    /// Params; `None` sends none.
    pub params: Option<Value>,
}

impl Request {
    fn new(method: &str, params: Option<Value>, output: Output) -> Self {
        Request {
            method: method.to_string(),
            params,
            output,
            lookup: None,
        }
    }

    fn with_lookup(mut self, method: &'static str, params: Option<Value>) -> Self {
        self.lookup = Some(Lookup { method, params });
        self
    }
}

/// Where `load-config` reads from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// Standard input (`-`).
    Stdin,
    /// A file.
    File(PathBuf),
}

impl Input {
    /// `-` means stdin, anything else a path.
    fn from_path(path: &Path) -> Self {
        if path == Path::new("-") {
            Input::Stdin
        } else {
            Input::File(path.to_path_buf())
        }
    }
}

/// What running a command involves.
#[derive(Debug, Clone, PartialEq)]
pub enum Plan {
    /// One call.
    Call(Request),
    /// `call METHOD -`: read the params from stdin, then call.
    CallWithStdin {
        /// Method name.
        method: String,
    },
    /// Build a config from `framework_get_subsystems` + `framework_get_config`.
    SaveConfig {
        /// Only these subsystems; empty means all.
        subsystems: Vec<String>,
    },
    /// Replay a config.
    LoadConfig(Input),
    /// Print a completion script; no daemon needed.
    Completions(Shell),
    /// Follow a task until it is no longer running.
    WaitTask(u64),
    /// One call that starts a task (its result is `{"task": id}`), then [`Plan::WaitTask`].
    StartTask(Request),
}

/// A command line that parsed but does not make sense.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    /// `--size` is not a whole number of blocks.
    #[error("--size {size} is not a multiple of --block-size {block_size}")]
    NotBlockMultiple {
        /// Requested size in bytes.
        size: u64,
        /// Requested block size.
        block_size: u64,
    },
    /// A size or block size of zero.
    #[error("{0} must not be zero")]
    Zero(&'static str),
    /// The params of `call` are not JSON.
    #[error("params are not valid JSON: {0}")]
    BadJson(String),
    /// The params of `call` are JSON but not an object or array.
    #[error("params must be a JSON object or array, not {0}")]
    BadParams(&'static str),
    /// A path that is not UTF-8 cannot be sent in JSON.
    #[error("path {0} is not valid UTF-8")]
    NonUtf8Path(PathBuf),
    /// The current directory is needed to make a relative path absolute.
    #[error("cannot make {path} absolute: {reason}")]
    Absolute {
        /// The path given.
        path: PathBuf,
        /// Why not.
        reason: String,
    },
    /// Corruption options with an error type that does not corrupt.
    #[error("--corrupt-offset and --corrupt-value only apply to --error-type corrupt_data")]
    CorruptOptions,
    /// The daemon takes the stripe unit in KiB.
    #[error("--stripe-unit {0} is not a whole number of KiB")]
    StripeUnitKib(u64),
    /// `--prefer-plex` with a read policy other than prefer.
    #[error("--prefer-plex only applies to --read-policy prefer, not {0}")]
    PreferPlexPolicy(&'static str),
    /// `--read-policy prefer` without the plex.
    #[error("--read-policy prefer needs --prefer-plex, the plex to read from")]
    PreferNeedsPlex,
}

/// Maps a parsed command to its plan.
pub fn plan(command: &Command) -> Result<Plan, CommandError> {
    let call = |method: &str, params: Option<Value>, output: Output| {
        Ok(Plan::Call(Request::new(method, params, output)))
    };
    match command {
        Command::Version => call("spdk_get_version", None, Output::Version),
        Command::Methods { current } => {
            let params = current.then(|| json!({"current": true}));
            call("rpc_get_methods", params, Output::Lines)
        }
        Command::Framework(f) => match f {
            FrameworkCommand::StartInit => call("framework_start_init", None, Output::Silent),
            FrameworkCommand::WaitInit => call("framework_wait_init", None, Output::Silent),
            FrameworkCommand::Subsystems => {
                call("framework_get_subsystems", None, Output::Subsystems)
            }
            FrameworkCommand::Config { name } => call(
                "framework_get_config",
                Some(json!({"name": name})),
                Output::Json,
            ),
            FrameworkCommand::Reactors => call("framework_get_reactors", None, Output::Reactors),
        },
        Command::Thread(ThreadCommand::Stats) => {
            call("thread_get_stats", None, Output::ThreadStats)
        }
        Command::Kill { signal } => call(
            "spdk_kill_instance",
            Some(json!({"sig_name": signal})),
            Output::Silent,
        ),
        Command::SaveConfig { subsystems } => Ok(Plan::SaveConfig {
            subsystems: subsystems.clone(),
        }),
        Command::LoadConfig { file } => Ok(Plan::LoadConfig(Input::from_path(file))),
        Command::Bdev(b) => bdev(b).map(Plan::Call),
        Command::Vhost(v) => Ok(Plan::Call(vhost(v))),
        Command::Dg(d) => Ok(Plan::Call(dg(d))),
        Command::Disk(d) => Ok(Plan::Call(disk(d))),
        Command::Volume(v) => volume(v).map(Plan::Call),
        Command::Plex(p) => Ok(plex(p)),
        Command::Subdisk(s) => Ok(subdisk(s)),
        Command::Print { dg } => call(
            "vm_print",
            dg.as_ref().map(|d| json!({"dg": d})),
            Output::Text,
        ),
        Command::Task(TaskCommand::List) => Ok(Plan::Call(
            Request::new("task_list", None, Output::Tasks).with_lookup("volume_list", None),
        )),
        Command::Task(TaskCommand::Wait { id }) => Ok(Plan::WaitTask(*id)),
        Command::Call { method, params } => match params.as_deref() {
            Some("-") => Ok(Plan::CallWithStdin {
                method: method.clone(),
            }),
            Some(text) => call(method, parse_params(text)?, Output::Json),
            None => call(method, None, Output::Json),
        },
        Command::Completions { shell } => Ok(Plan::Completions(*shell)),
    }
}

/// Parses the params given to `call`: a JSON object or array; `null` or blank means none.
pub fn parse_params(text: &str) -> Result<Option<Value>, CommandError> {
    if text.trim().is_empty() {
        return Ok(None);
    }
    let value: Value =
        serde_json::from_str(text).map_err(|e| CommandError::BadJson(e.to_string()))?;
    match value {
        Value::Null => Ok(None),
        Value::Object(_) | Value::Array(_) => Ok(Some(value)),
        Value::Bool(_) => Err(CommandError::BadParams("a boolean")),
        Value::Number(_) => Err(CommandError::BadParams("a number")),
        Value::String(_) => Err(CommandError::BadParams("a string")),
    }
}

fn bdev(command: &BdevCommand) -> Result<Request, CommandError> {
    let req = |method: &str, params: Value, output: Output| {
        Ok(Request::new(method, Some(params), output))
    };
    let delete = |method: &str, name: &str| req(method, json!({"name": name}), Output::Silent);
    match command {
        BdevCommand::List { name } => {
            let params = name.as_ref().map(|n| json!({"name": n}));
            Ok(Request::new("bdev_get_bdevs", params, Output::Bdevs))
        }
        BdevCommand::Iostat { names } => {
            let params = (!names.is_empty()).then(|| json!({"names": names}));
            Ok(Request::new("bdev_get_iostat", params, Output::Iostat))
        }
        BdevCommand::Malloc(MallocCommand::Create(args)) => {
            req("bdev_malloc_create", mem_create(args)?, Output::Name)
        }
        BdevCommand::Malloc(MallocCommand::Delete { name }) => delete("bdev_malloc_delete", name),
        BdevCommand::Null(NullCommand::Create(args)) => {
            req("bdev_null_create", mem_create(args)?, Output::Name)
        }
        BdevCommand::Null(NullCommand::Delete { name }) => delete("bdev_null_delete", name),
        BdevCommand::Aio(AioCommand::Create {
            name,
            file,
            block_size,
            readonly,
        }) => {
            let mut p = Map::new();
            p.insert("name".into(), json!(name));
            p.insert("filename".into(), json!(absolute(file)?));
            if let Some(bs) = block_size {
                p.insert("block_size".into(), json!(nonzero(*bs, "--block-size")?));
            }
            if *readonly {
                p.insert("readonly".into(), json!(true));
            }
            req("bdev_aio_create", Value::Object(p), Output::Name)
        }
        BdevCommand::Aio(AioCommand::Delete { name }) => delete("bdev_aio_delete", name),
        BdevCommand::Uring(UringCommand::Create {
            name,
            file,
            block_size,
        }) => {
            let mut p = Map::new();
            p.insert("name".into(), json!(name));
            p.insert("filename".into(), json!(absolute(file)?));
            if let Some(bs) = block_size {
                p.insert("block_size".into(), json!(nonzero(*bs, "--block-size")?));
            }
            req("bdev_uring_create", Value::Object(p), Output::Name)
        }
        BdevCommand::Uring(UringCommand::Delete { name }) => delete("bdev_uring_delete", name),
        BdevCommand::Error(ErrorCommand::Create { base }) => req(
            "bdev_error_create",
            json!({"base_name": base}),
            Output::Name,
        ),
        BdevCommand::Error(ErrorCommand::Delete { name }) => delete("bdev_error_delete", name),
        BdevCommand::Error(ErrorCommand::Inject {
            name,
            io_type,
            error_type,
            num,
            corrupt_offset,
            corrupt_value,
        }) => {
            let corrupting = *error_type == crate::cli::ErrorType::CorruptData;
            if !corrupting && (corrupt_offset.is_some() || corrupt_value.is_some()) {
                return Err(CommandError::CorruptOptions);
            }
            let mut p = Map::new();
            p.insert("name".into(), json!(name));
            p.insert("io_type".into(), json!(io_type.as_str()));
            p.insert("error_type".into(), json!(error_type.as_str()));
            for (key, value) in [
                ("num", num),
                ("corrupt_offset", corrupt_offset),
                ("corrupt_value", corrupt_value),
            ] {
                if let Some(v) = value {
                    p.insert(key.into(), json!(v));
                }
            }
            req("bdev_error_inject_error", Value::Object(p), Output::Silent)
        }
        BdevCommand::Delay(DelayCommand::Create {
            name,
            base,
            avg_read,
            p99_read,
            avg_write,
            p99_write,
        }) => req(
            "bdev_delay_create",
            json!({
                "name": name,
                "base_bdev_name": base,
                "avg_read_latency": avg_read,
                "p99_read_latency": p99_read,
                "avg_write_latency": avg_write,
                "p99_write_latency": p99_write,
            }),
            Output::Name,
        ),
        BdevCommand::Delay(DelayCommand::Delete { name }) => delete("bdev_delay_delete", name),
    }
}

fn vhost(command: &VhostCommand) -> Request {
    match command {
        VhostCommand::Create {
            ctrlr,
            bdev,
            readonly,
            cpumask,
        } => {
            let mut p = Map::new();
            p.insert("ctrlr".into(), json!(ctrlr));
            p.insert("dev_name".into(), json!(bdev));
            if *readonly {
                p.insert("readonly".into(), json!(true));
            }
            if let Some(mask) = cpumask {
                p.insert("cpumask".into(), json!(mask));
            }
            Request::new(
                "vhost_create_blk_controller",
                Some(Value::Object(p)),
                Output::Silent,
            )
        }
        VhostCommand::List { ctrlr } => Request::new(
            "vhost_get_controllers",
            ctrlr.as_ref().map(|c| json!({"name": c})),
            Output::VhostControllers,
        ),
        VhostCommand::Delete { ctrlr } => Request::new(
            "vhost_delete_controller",
            Some(json!({"ctrlr": ctrlr})),
            Output::Silent,
        ),
        VhostCommand::Coalescing {
            ctrlr,
            delay_base_us,
            iops_threshold,
        } => Request::new(
            "vhost_controller_set_coalescing",
            Some(json!({
                "ctrlr": ctrlr,
                "delay_base_us": delay_base_us,
                "iops_threshold": iops_threshold,
            })),
            Output::Silent,
        ),
    }
}

fn dg(command: &DgCommand) -> Request {
    let req =
        |method: &str, params: Value, output: Output| Request::new(method, Some(params), output);
    match command {
        DgCommand::Create { name, bdevs, force } => {
            let mut p = Map::new();
            p.insert("name".into(), json!(name));
            p.insert("disks".into(), json!(bdevs));
            if *force {
                p.insert("force".into(), json!(true));
            }
            req("dg_create", Value::Object(p), Output::Silent)
        }
        DgCommand::AddDisk {
            dg,
            bdev,
            name,
            force,
        } => {
            let mut p = Map::new();
            p.insert("dg".into(), json!(dg));
            p.insert("disk".into(), json!(bdev));
            if let Some(n) = name {
                p.insert("name".into(), json!(n));
            }
            if *force {
                p.insert("force".into(), json!(true));
            }
            req("dg_add_disk", Value::Object(p), Output::Name)
        }
        DgCommand::RemoveDisk { dg, disk } => req(
            "dg_remove_disk",
            json!({"dg": dg, "name": disk}),
            Output::Silent,
        ),
        DgCommand::Deport { name } => req("dg_deport", json!({"name": name}), Output::Silent),
        DgCommand::Import {
            name,
            disks,
            select_copy,
        } => {
            let mut p = Map::new();
            if let Some(n) = name {
                p.insert("name".into(), json!(n));
            }
            if !disks.is_empty() {
                p.insert("disks".into(), json!(disks));
            }
            if let Some(c) = select_copy {
                p.insert("select_copy".into(), json!(c));
            }
            let params = (!p.is_empty()).then_some(Value::Object(p));
            Request::new("dg_import", params, Output::Lines)
        }
        DgCommand::List { name } => Request::new(
            "dg_list",
            name.as_ref().map(|n| json!({"name": n})),
            Output::DiskGroups,
        ),
        DgCommand::Destroy { name } => req("dg_destroy", json!({"name": name}), Output::Silent),
    }
}

fn disk(command: &DiskCommand) -> Request {
    match command {
        DiskCommand::List { dg } => Request::new(
            "disk_list",
            dg.as_ref().map(|d| json!({"dg": d})),
            Output::Disks,
        )
        .with_lookup("dg_list", None),
        DiskCommand::Set {
            dg,
            disk,
            spare,
            nohotuse,
        } => {
            let mut p = Map::new();
            p.insert("dg".into(), json!(dg));
            p.insert("name".into(), json!(disk));
            if let Some(s) = spare {
                p.insert("spare".into(), json!(s));
            }
            if let Some(n) = nohotuse {
                p.insert("nohotuse".into(), json!(n));
            }
            Request::new("disk_set", Some(Value::Object(p)), Output::Silent)
        }
    }
}

fn volume(command: &VolumeCommand) -> Result<Request, CommandError> {
    let dg_name = |method: &str, dg: &str, name: &str| {
        Request::new(
            method,
            Some(json!({"dg": dg, "name": name})),
            Output::Silent,
        )
    };
    Ok(match command {
        VolumeCommand::Create(args) => {
            Request::new("volume_create", Some(volume_create(args)?), Output::Name)
        }
        VolumeCommand::Delete { dg, name } => dg_name("volume_delete", dg, name),
        VolumeCommand::Start { dg, name } => dg_name("volume_start", dg, name),
        VolumeCommand::Stop { dg, name } => dg_name("volume_stop", dg, name),
        VolumeCommand::Resize { dg, name, size } => Request::new(
            "volume_resize",
            Some(json!({"dg": dg, "name": name, "size": nonzero(*size, "size")?})),
            Output::Resized,
        )
        .with_lookup("volume_list", Some(json!({"dg": dg, "name": name}))),
        VolumeCommand::List { dg, name } => {
            let mut p = Map::new();
            if let Some(d) = dg {
                p.insert("dg".into(), json!(d));
            }
            if let Some(n) = name {
                p.insert("name".into(), json!(n));
            }
            let params = (!p.is_empty()).then_some(Value::Object(p));
            Request::new("volume_list", params, Output::Volumes)
        }
    })
}

/// Params for `volume_create`: the size in bytes, the stripe unit in KiB, and a read policy
/// that fits `--prefer-plex` (which alone implies `prefer`).
fn volume_create(args: &VolumeCreateArgs) -> Result<Value, CommandError> {
    let mut p = Map::new();
    p.insert("dg".into(), json!(args.dg));
    p.insert("name".into(), json!(args.name));
    p.insert("size".into(), json!(nonzero(args.size, "size")?));
    if let Some(layout) = args.layout {
        p.insert("layout".into(), json!(layout.as_str()));
    }
    if let Some(n) = args.ncol {
        p.insert("ncol".into(), json!(n));
    }
    if let Some(n) = args.nmirror {
        p.insert("nmirror".into(), json!(n));
    }
    if let Some(su) = args.stripe_unit {
        let su = nonzero(su, "--stripe-unit")?;
        if su % 1024 != 0 {
            return Err(CommandError::StripeUnitKib(su));
        }
        p.insert("stripe_unit_kb".into(), json!(su / 1024));
    }
    let policy = match (args.read_policy, &args.prefer_plex) {
        (Some(ReadPolicy::Prefer), None) => return Err(CommandError::PreferNeedsPlex),
        (Some(other), Some(_)) if other != ReadPolicy::Prefer => {
            return Err(CommandError::PreferPlexPolicy(other.as_str()))
        }
        (None, Some(_)) => Some(ReadPolicy::Prefer),
        (policy, _) => policy,
    };
    if let Some(policy) = policy {
        p.insert("read_policy".into(), json!(policy.as_str()));
    }
    if let Some(plex) = &args.prefer_plex {
        p.insert("prefer_plex".into(), json!(plex));
    }
    if !args.alloc.is_empty() {
        p.insert("alloc".into(), json!(args.alloc));
    }
    Ok(Value::Object(p))
}

fn plex(command: &PlexCommand) -> Plan {
    match command {
        PlexCommand::Attach {
            dg,
            volume,
            plex,
            alloc,
            delay_ms,
            wait,
        } => {
            let mut p = Map::new();
            p.insert("dg".into(), json!(dg));
            p.insert("volume".into(), json!(volume));
            if let Some(pl) = plex {
                p.insert("plex".into(), json!(pl));
            }
            if !alloc.is_empty() {
                p.insert("alloc".into(), json!(alloc));
            }
            if let Some(ms) = delay_ms {
                p.insert("delay_ms".into(), json!(ms));
            }
            let request = Request::new("plex_attach", Some(Value::Object(p)), Output::TaskStarted);
            if *wait {
                Plan::StartTask(request)
            } else {
                Plan::Call(request)
            }
        }
        PlexCommand::Detach {
            dg,
            plex,
            dissociate,
        } => {
            let mut p = Map::new();
            p.insert("dg".into(), json!(dg));
            p.insert("plex".into(), json!(plex));
            if *dissociate {
                p.insert("dissociate".into(), json!(true));
            }
            Plan::Call(Request::new(
                "plex_detach",
                Some(Value::Object(p)),
                Output::Silent,
            ))
        }
    }
}

fn subdisk(command: &SubdiskCommand) -> Plan {
    match command {
        SubdiskCommand::Move {
            dg,
            subdisk,
            to,
            delay_ms,
            wait,
        } => {
            let mut p = Map::new();
            p.insert("dg".into(), json!(dg));
            p.insert("subdisk".into(), json!(subdisk));
            if let Some(disk) = to {
                p.insert("disk".into(), json!(disk));
            }
            if let Some(ms) = delay_ms {
                p.insert("delay_ms".into(), json!(ms));
            }
            let request = Request::new("subdisk_move", Some(Value::Object(p)), Output::TaskStarted);
            if *wait {
                Plan::StartTask(request)
            } else {
                Plan::Call(request)
            }
        }
    }
}

/// Params for `bdev_malloc_create` / `bdev_null_create`: the size becomes a block count.
fn mem_create(args: &MemCreateArgs) -> Result<Value, CommandError> {
    let block_size = nonzero(args.block_size, "--block-size")?;
    let size = nonzero(args.size, "--size")?;
    if size % block_size != 0 {
        return Err(CommandError::NotBlockMultiple { size, block_size });
    }
    let mut p = Map::new();
    p.insert("name".into(), json!(args.name));
    p.insert("num_blocks".into(), json!(size / block_size));
    p.insert("block_size".into(), json!(block_size));
    if let Some(uuid) = &args.uuid {
        p.insert("uuid".into(), json!(uuid));
    }
    Ok(Value::Object(p))
}

fn nonzero(value: u64, what: &'static str) -> Result<u64, CommandError> {
    if value == 0 {
        Err(CommandError::Zero(what))
    } else {
        Ok(value)
    }
}

/// The daemon resolves paths against its own working directory, so relative paths are made
/// absolute against ours (lexically; symlinks are left for the daemon to follow).
fn absolute(path: &Path) -> Result<String, CommandError> {
    let abs = std::path::absolute(path).map_err(|e| CommandError::Absolute {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    abs.to_str()
        .map(str::to_string)
        .ok_or(CommandError::NonUtf8Path(abs.clone()))
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::cli::Cli;

    /// Parses a command line (without the program name) and plans it.
    fn plan_of(args: &str) -> Result<Plan, CommandError> {
        let argv = std::iter::once("plexctl").chain(args.split_whitespace());
        let cli = Cli::try_parse_from(argv).unwrap_or_else(|e| panic!("{args}: {e}"));
        plan(&cli.command)
    }

    /// The single call a command line makes.
    fn call_of(args: &str) -> (String, Option<Value>, Output) {
        match plan_of(args) {
            Ok(Plan::Call(r)) => (r.method, r.params, r.output),
            other => panic!("{args}: expected one call, got {other:?}"),
        }
    }

    fn check(args: &str, method: &str, params: Option<Value>, output: Output) {
        assert_eq!(
            call_of(args),
            (method.to_string(), params, output),
            "{args}"
        );
    }

    #[test]
    fn framework_and_info_commands() {
        check("version", "spdk_get_version", None, Output::Version);
        check("methods", "rpc_get_methods", None, Output::Lines);
        check(
            "methods --current",
            "rpc_get_methods",
            Some(json!({"current": true})),
            Output::Lines,
        );
        check(
            "framework start-init",
            "framework_start_init",
            None,
            Output::Silent,
        );
        check(
            "framework wait-init",
            "framework_wait_init",
            None,
            Output::Silent,
        );
        check(
            "framework subsystems",
            "framework_get_subsystems",
            None,
            Output::Subsystems,
        );
        check(
            "framework config bdev",
            "framework_get_config",
            Some(json!({"name": "bdev"})),
            Output::Json,
        );
        check(
            "framework reactors",
            "framework_get_reactors",
            None,
            Output::Reactors,
        );
        check(
            "thread stats",
            "thread_get_stats",
            None,
            Output::ThreadStats,
        );
    }

    #[test]
    fn kill_defaults_to_sigterm() {
        check(
            "kill",
            "spdk_kill_instance",
            Some(json!({"sig_name": "SIGTERM"})),
            Output::Silent,
        );
        check(
            "kill --signal int",
            "spdk_kill_instance",
            Some(json!({"sig_name": "SIGINT"})),
            Output::Silent,
        );
    }

    #[test]
    fn config_commands() {
        assert_eq!(
            plan_of("save-config"),
            Ok(Plan::SaveConfig { subsystems: vec![] })
        );
        assert_eq!(
            plan_of("save-config -n bdev --subsystem vhost_blk"),
            Ok(Plan::SaveConfig {
                subsystems: vec!["bdev".into(), "vhost_blk".into()]
            })
        );
        assert_eq!(plan_of("load-config -"), Ok(Plan::LoadConfig(Input::Stdin)));
        assert_eq!(
            plan_of("load-config /etc/plexd.json"),
            Ok(Plan::LoadConfig(Input::File("/etc/plexd.json".into())))
        );
    }

    #[test]
    fn bdev_list_and_iostat() {
        check("bdev list", "bdev_get_bdevs", None, Output::Bdevs);
        check(
            "bdev list Malloc0",
            "bdev_get_bdevs",
            Some(json!({"name": "Malloc0"})),
            Output::Bdevs,
        );
        check("bdev iostat", "bdev_get_iostat", None, Output::Iostat);
        check(
            "bdev iostat M0 M1",
            "bdev_get_iostat",
            Some(json!({"names": ["M0", "M1"]})),
            Output::Iostat,
        );
    }

    #[test]
    fn malloc_and_null() {
        check(
            "bdev malloc create Malloc0 --size 64MiB",
            "bdev_malloc_create",
            Some(json!({"name": "Malloc0", "num_blocks": 131072, "block_size": 512})),
            Output::Name,
        );
        check(
            "bdev malloc create M1 --size 1G --block-size 4K --uuid 1b4e28ba-2fa1-11d2-883f-0016d3cca427",
            "bdev_malloc_create",
            Some(json!({
                "name": "M1", "num_blocks": 262144, "block_size": 4096,
                "uuid": "1b4e28ba-2fa1-11d2-883f-0016d3cca427"
            })),
            Output::Name,
        );
        check(
            "bdev malloc delete Malloc0",
            "bdev_malloc_delete",
            Some(json!({"name": "Malloc0"})),
            Output::Silent,
        );
        check(
            "bdev null create N0 --size 1TiB --block-size 4096",
            "bdev_null_create",
            Some(json!({"name": "N0", "num_blocks": 1u64 << 28, "block_size": 4096})),
            Output::Name,
        );
        check(
            "bdev null delete N0",
            "bdev_null_delete",
            Some(json!({"name": "N0"})),
            Output::Silent,
        );
    }

    #[test]
    fn size_must_be_whole_blocks() {
        assert_eq!(
            plan_of("bdev malloc create M0 --size 1000"),
            Err(CommandError::NotBlockMultiple {
                size: 1000,
                block_size: 512
            })
        );
        assert_eq!(
            plan_of("bdev null create N0 --size 1MB --block-size 4096"),
            Err(CommandError::NotBlockMultiple {
                size: 1_000_000,
                block_size: 4096
            })
        );
        assert_eq!(
            plan_of("bdev malloc create M0 --size 0"),
            Err(CommandError::Zero("--size"))
        );
        assert_eq!(
            plan_of("bdev malloc create M0 --size 1M --block-size 0"),
            Err(CommandError::Zero("--block-size"))
        );
    }

    #[test]
    fn aio_and_uring() {
        check(
            "bdev aio create A0 /dev/sdb",
            "bdev_aio_create",
            Some(json!({"name": "A0", "filename": "/dev/sdb"})),
            Output::Name,
        );
        check(
            "bdev aio create A0 /tmp/disk.img --block-size 4096 --readonly",
            "bdev_aio_create",
            Some(json!({
                "name": "A0", "filename": "/tmp/disk.img", "block_size": 4096, "readonly": true
            })),
            Output::Name,
        );
        check(
            "bdev aio delete A0",
            "bdev_aio_delete",
            Some(json!({"name": "A0"})),
            Output::Silent,
        );
        check(
            "bdev uring create U0 /dev/nvme0n1 --block-size 512",
            "bdev_uring_create",
            Some(json!({"name": "U0", "filename": "/dev/nvme0n1", "block_size": 512})),
            Output::Name,
        );
        check(
            "bdev uring delete U0",
            "bdev_uring_delete",
            Some(json!({"name": "U0"})),
            Output::Silent,
        );
    }

    #[test]
    fn relative_files_are_made_absolute() {
        let (_, params, _) = call_of("bdev uring create U0 disk.img");
        let expected = std::env::current_dir().expect("cwd").join("disk.img");
        assert_eq!(
            params,
            Some(json!({"name": "U0", "filename": expected.to_str().expect("utf-8 cwd")}))
        );
    }

    #[test]
    fn error_bdev() {
        check(
            "bdev error create Malloc0",
            "bdev_error_create",
            Some(json!({"base_name": "Malloc0"})),
            Output::Name,
        );
        check(
            "bdev error delete EE_Malloc0",
            "bdev_error_delete",
            Some(json!({"name": "EE_Malloc0"})),
            Output::Silent,
        );
        check(
            "bdev error inject EE_Malloc0 --io-type write --error-type failure",
            "bdev_error_inject_error",
            Some(json!({"name": "EE_Malloc0", "io_type": "write", "error_type": "failure"})),
            Output::Silent,
        );
        check(
            "bdev error inject EE_M0 --io-type all --error-type nomem --num 5",
            "bdev_error_inject_error",
            Some(json!({"name": "EE_M0", "io_type": "all", "error_type": "nomem", "num": 5})),
            Output::Silent,
        );
        check(
            "bdev error inject EE_M0 --io-type read --error-type corrupt_data --corrupt-offset 7 --corrupt-value 255",
            "bdev_error_inject_error",
            Some(json!({
                "name": "EE_M0", "io_type": "read", "error_type": "corrupt_data",
                "corrupt_offset": 7, "corrupt_value": 255
            })),
            Output::Silent,
        );
        check(
            "bdev error inject EE_M0 --io-type clear --error-type pending",
            "bdev_error_inject_error",
            Some(json!({"name": "EE_M0", "io_type": "clear", "error_type": "pending"})),
            Output::Silent,
        );
        check(
            "bdev error inject EE_M0 --io-type unmap --error-type failure",
            "bdev_error_inject_error",
            Some(json!({"name": "EE_M0", "io_type": "unmap", "error_type": "failure"})),
            Output::Silent,
        );
        check(
            "bdev error inject EE_M0 --io-type flush --error-type failure",
            "bdev_error_inject_error",
            Some(json!({"name": "EE_M0", "io_type": "flush", "error_type": "failure"})),
            Output::Silent,
        );
        assert_eq!(
            plan_of(
                "bdev error inject EE_M0 --io-type read --error-type failure --corrupt-value 1"
            ),
            Err(CommandError::CorruptOptions)
        );
    }

    #[test]
    fn delay_bdev() {
        check(
            "bdev delay create D0 Malloc0 --avg-read 100 --p99-read 200 --avg-write 300 --p99-write 400",
            "bdev_delay_create",
            Some(json!({
                "name": "D0", "base_bdev_name": "Malloc0",
                "avg_read_latency": 100, "p99_read_latency": 200,
                "avg_write_latency": 300, "p99_write_latency": 400
            })),
            Output::Name,
        );
        check(
            "bdev delay delete D0",
            "bdev_delay_delete",
            Some(json!({"name": "D0"})),
            Output::Silent,
        );
    }

    #[test]
    fn vhost_create() {
        check(
            "vhost create vhost.0 Malloc0",
            "vhost_create_blk_controller",
            Some(json!({"ctrlr": "vhost.0", "dev_name": "Malloc0"})),
            Output::Silent,
        );
        check(
            "vhost create vhost.1 M0 --readonly --cpumask 0x3",
            "vhost_create_blk_controller",
            Some(json!({
                "ctrlr": "vhost.1", "dev_name": "M0", "readonly": true, "cpumask": "0x3"
            })),
            Output::Silent,
        );
        // A list mask is passed through as given; the daemon parses it like `plexd -m`.
        check(
            "vhost create v M0 --cpumask [0,2-3]",
            "vhost_create_blk_controller",
            Some(json!({"ctrlr": "v", "dev_name": "M0", "cpumask": "[0,2-3]"})),
            Output::Silent,
        );
    }

    #[test]
    fn vhost_list_delete_and_coalescing() {
        check(
            "vhost list",
            "vhost_get_controllers",
            None,
            Output::VhostControllers,
        );
        check(
            "vhost list vhost.0",
            "vhost_get_controllers",
            Some(json!({"name": "vhost.0"})),
            Output::VhostControllers,
        );
        check(
            "vhost delete vhost.0",
            "vhost_delete_controller",
            Some(json!({"ctrlr": "vhost.0"})),
            Output::Silent,
        );
        check(
            "vhost coalescing vhost.0 --delay-base-us 50 --iops-threshold 60000",
            "vhost_controller_set_coalescing",
            Some(json!({"ctrlr": "vhost.0", "delay_base_us": 50, "iops_threshold": 60000})),
            Output::Silent,
        );
    }

    #[test]
    fn raw_call() {
        check(
            "call spdk_get_version",
            "spdk_get_version",
            None,
            Output::Json,
        );
        check(
            r#"call bdev_get_bdevs {"name":"M0"}"#,
            "bdev_get_bdevs",
            Some(json!({"name": "M0"})),
            Output::Json,
        );
        check("call foo null", "foo", None, Output::Json);
        check("call foo [1,2]", "foo", Some(json!([1, 2])), Output::Json);
        assert_eq!(
            plan_of("call foo -"),
            Ok(Plan::CallWithStdin {
                method: "foo".into()
            })
        );
        assert!(matches!(
            plan_of("call foo {bad"),
            Err(CommandError::BadJson(_))
        ));
        assert_eq!(
            plan_of("call foo 42"),
            Err(CommandError::BadParams("a number"))
        );
    }

    #[test]
    fn params_text() {
        assert_eq!(parse_params(""), Ok(None));
        assert_eq!(parse_params(" \n"), Ok(None));
        assert_eq!(parse_params("{\n \"a\": 1\n}\n"), Ok(Some(json!({"a": 1}))));
        assert_eq!(
            parse_params("\"x\""),
            Err(CommandError::BadParams("a string"))
        );
        assert_eq!(
            parse_params("true"),
            Err(CommandError::BadParams("a boolean"))
        );
        assert!(matches!(
            parse_params("{} {}"),
            Err(CommandError::BadJson(_))
        ));
    }

    #[test]
    fn disk_groups() {
        check(
            "dg create dg01 M0 M1",
            "dg_create",
            Some(json!({"name": "dg01", "disks": ["M0", "M1"]})),
            Output::Silent,
        );
        check(
            "dg create dg01 M0 --force",
            "dg_create",
            Some(json!({"name": "dg01", "disks": ["M0"], "force": true})),
            Output::Silent,
        );
        check(
            "dg add-disk dg01 M2",
            "dg_add_disk",
            Some(json!({"dg": "dg01", "disk": "M2"})),
            Output::Name,
        );
        check(
            "dg add-disk dg01 M2 --name fast01 --force",
            "dg_add_disk",
            Some(json!({"dg": "dg01", "disk": "M2", "name": "fast01", "force": true})),
            Output::Name,
        );
        check(
            "dg remove-disk dg01 disk02",
            "dg_remove_disk",
            Some(json!({"dg": "dg01", "name": "disk02"})),
            Output::Silent,
        );
        check(
            "dg deport dg01",
            "dg_deport",
            Some(json!({"name": "dg01"})),
            Output::Silent,
        );
        check("dg import", "dg_import", None, Output::Lines);
        check(
            "dg import dg01 --disk M0 --disk M1 --select-copy M1",
            "dg_import",
            Some(json!({"name": "dg01", "disks": ["M0", "M1"], "select_copy": "M1"})),
            Output::Lines,
        );
        check(
            "dg destroy dg01",
            "dg_destroy",
            Some(json!({"name": "dg01"})),
            Output::Silent,
        );
        check("dg list", "dg_list", None, Output::DiskGroups);
        check(
            "dg list dg01",
            "dg_list",
            Some(json!({"name": "dg01"})),
            Output::DiskGroups,
        );
    }

    #[test]
    fn disks_and_their_flags() {
        let Ok(Plan::Call(r)) = plan_of("disk list --dg dg01") else {
            panic!("disk list is one call");
        };
        assert_eq!(
            (r.method.as_str(), r.params, r.output, r.lookup),
            (
                "disk_list",
                Some(json!({"dg": "dg01"})),
                Output::Disks,
                Some(Lookup {
                    method: "dg_list",
                    params: None
                })
            )
        );
        check("disk list", "disk_list", None, Output::Disks);
        check(
            "disk set dg01 disk03 --spare true",
            "disk_set",
            Some(json!({"dg": "dg01", "name": "disk03", "spare": true})),
            Output::Silent,
        );
        check(
            "disk set dg01 disk03 --spare false --nohotuse true",
            "disk_set",
            Some(json!({"dg": "dg01", "name": "disk03", "spare": false, "nohotuse": true})),
            Output::Silent,
        );
    }

    #[test]
    fn volume_create_sends_bytes_and_kib() {
        check(
            "volume create dg01 vol01 1G",
            "volume_create",
            Some(json!({"dg": "dg01", "name": "vol01", "size": 1u64 << 30})),
            Output::Name,
        );
        check(
            "volume create dg01 v 100MB --layout mirror-stripe --ncol 3 --nmirror 2 \
             --stripe-unit 128K --read-policy round --alloc disk01 --alloc M3",
            "volume_create",
            Some(json!({
                "dg": "dg01", "name": "v", "size": 100_000_000, "layout": "mirror-stripe",
                "ncol": 3, "nmirror": 2, "stripe_unit_kb": 128, "read_policy": "round",
                "alloc": ["disk01", "M3"]
            })),
            Output::Name,
        );
        // --prefer-plex alone implies the prefer policy.
        for args in [
            "volume create dg01 v 8M --layout mirror --prefer-plex 02",
            "volume create dg01 v 8M --layout mirror --read-policy prefer --prefer-plex 02",
        ] {
            check(
                args,
                "volume_create",
                Some(json!({
                    "dg": "dg01", "name": "v", "size": 8 << 20, "layout": "mirror",
                    "read_policy": "prefer", "prefer_plex": "02"
                })),
                Output::Name,
            );
        }
    }

    #[test]
    fn volume_create_rejects_what_the_daemon_would() {
        assert_eq!(
            plan_of("volume create dg01 v 0"),
            Err(CommandError::Zero("size"))
        );
        assert_eq!(
            plan_of("volume create dg01 v 1G --layout stripe --stripe-unit 1536"),
            Err(CommandError::StripeUnitKib(1536))
        );
        assert_eq!(
            plan_of("volume create dg01 v 1G --layout stripe --stripe-unit 0"),
            Err(CommandError::Zero("--stripe-unit"))
        );
        assert_eq!(
            plan_of("volume create dg01 v 1G --read-policy prefer"),
            Err(CommandError::PreferNeedsPlex)
        );
        assert_eq!(
            plan_of("volume create dg01 v 1G --read-policy round --prefer-plex v-01"),
            Err(CommandError::PreferPlexPolicy("round"))
        );
    }

    #[test]
    fn volumes() {
        for (verb, method) in [
            ("delete", "volume_delete"),
            ("start", "volume_start"),
            ("stop", "volume_stop"),
        ] {
            check(
                &format!("volume {verb} dg01 vol01"),
                method,
                Some(json!({"dg": "dg01", "name": "vol01"})),
                Output::Silent,
            );
        }
        check("volume list", "volume_list", None, Output::Volumes);
        check(
            "volume list --dg dg01 vol01",
            "volume_list",
            Some(json!({"dg": "dg01", "name": "vol01"})),
            Output::Volumes,
        );
        check(
            "volume list vol01",
            "volume_list",
            Some(json!({"name": "vol01"})),
            Output::Volumes,
        );
    }

    #[test]
    fn volume_resize_sends_bytes_and_looks_the_volume_up() {
        check(
            "volume resize dg01 vol01 2G",
            "volume_resize",
            Some(json!({"dg": "dg01", "name": "vol01", "size": 2u64 << 30})),
            Output::Resized,
        );
        check(
            "volume resize dg01 vol01 100MB",
            "volume_resize",
            Some(json!({"dg": "dg01", "name": "vol01", "size": 100_000_000})),
            Output::Resized,
        );
        let Ok(Plan::Call(r)) = plan_of("volume resize dg01 vol01 16M") else {
            panic!("volume resize is one call");
        };
        assert_eq!(
            r.lookup,
            Some(Lookup {
                method: "volume_list",
                params: Some(json!({"dg": "dg01", "name": "vol01"}))
            })
        );
        assert_eq!(
            plan_of("volume resize dg01 vol01 0"),
            Err(CommandError::Zero("size"))
        );
    }

    #[test]
    fn subdisk_move_starts_a_task() {
        check(
            "subdisk move dg01 disk01-01",
            "subdisk_move",
            Some(json!({"dg": "dg01", "subdisk": "disk01-01"})),
            Output::TaskStarted,
        );
        check(
            "subdisk move dg01 disk01-01 --to disk03 --delay-ms 5",
            "subdisk_move",
            Some(json!({
                "dg": "dg01", "subdisk": "disk01-01", "disk": "disk03", "delay_ms": 5
            })),
            Output::TaskStarted,
        );
        match plan_of("subdisk move dg01 disk01-01 --to M2 --wait") {
            Ok(Plan::StartTask(r)) => {
                assert_eq!(r.method, "subdisk_move");
                assert_eq!(
                    r.params,
                    Some(json!({"dg": "dg01", "subdisk": "disk01-01", "disk": "M2"}))
                );
                assert_eq!(r.output, Output::TaskStarted);
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn plexes() {
        check(
            "plex attach dg01 vol01",
            "plex_attach",
            Some(json!({"dg": "dg01", "volume": "vol01"})),
            Output::TaskStarted,
        );
        check(
            "plex attach dg01 vol01 --plex vol01-02 --alloc disk03 --delay-ms 5",
            "plex_attach",
            Some(json!({
                "dg": "dg01", "volume": "vol01", "plex": "vol01-02", "alloc": ["disk03"],
                "delay_ms": 5
            })),
            Output::TaskStarted,
        );
        match plan_of("plex attach dg01 vol01 --wait") {
            Ok(Plan::StartTask(r)) => {
                assert_eq!(r.method, "plex_attach");
                assert_eq!(r.params, Some(json!({"dg": "dg01", "volume": "vol01"})));
            }
            other => panic!("unexpected {other:?}"),
        }
        check(
            "plex detach dg01 vol01-02",
            "plex_detach",
            Some(json!({"dg": "dg01", "plex": "vol01-02"})),
            Output::Silent,
        );
        check(
            "plex detach dg01 vol01-02 --dissociate",
            "plex_detach",
            Some(json!({"dg": "dg01", "plex": "vol01-02", "dissociate": true})),
            Output::Silent,
        );
    }

    #[test]
    fn print_and_tasks() {
        check("print", "vm_print", None, Output::Text);
        check(
            "print dg01",
            "vm_print",
            Some(json!({"dg": "dg01"})),
            Output::Text,
        );
        match plan_of("task list") {
            Ok(Plan::Call(r)) => {
                assert_eq!(
                    (r.method.as_str(), r.params, r.output, r.lookup),
                    (
                        "task_list",
                        None,
                        Output::Tasks,
                        Some(Lookup {
                            method: "volume_list",
                            params: None
                        })
                    )
                );
            }
            other => panic!("unexpected {other:?}"),
        }
        assert_eq!(plan_of("task wait 7"), Ok(Plan::WaitTask(7)));
    }

    #[test]
    fn completions_need_no_daemon() {
        assert_eq!(
            plan_of("completions bash"),
            Ok(Plan::Completions(Shell::Bash))
        );
        assert_eq!(
            plan_of("completions zsh"),
            Ok(Plan::Completions(Shell::Zsh))
        );
    }
}
