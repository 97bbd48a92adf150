//! From a parsed command to what plexctl does: usually one JSON-RPC call (method + params) and
//! how to show its result. This is a pure function of the command line, so every mapping is
//! tested without a daemon.

use std::path::{Path, PathBuf};

use clap_complete::Shell;
use serde_json::{json, Map, Value};

use crate::cli::{
    AioCommand, BdevCommand, Command, DelayCommand, ErrorCommand, FrameworkCommand, MallocCommand,
    MemCreateArgs, NullCommand, ThreadCommand, UringCommand, VhostCommand,
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
}

impl Request {
    fn new(method: &str, params: Option<Value>, output: Output) -> Self {
        Request {
            method: method.to_string(),
            params,
            output,
        }
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
