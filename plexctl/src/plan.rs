//! From a parsed command to what plexctl does: usually one JSON-RPC call (method + params) and
//! how to show its result. This is a pure function of the command line, so every mapping is
//! tested without a daemon. Each noun's module (`bdev`, `vhost`, `dg`, ...) plans its own
//! commands; this module holds the shared types and dispatches to them.

use std::path::{Path, PathBuf};

use clap_complete::Shell;
use plexd_control::api::{params_value, RpcMethod};
use serde_json::Value;

use crate::cli::Command;

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
    /// A call of `method` whose result is shown as `output`.
    pub(crate) fn new(method: &str, params: Option<Value>, output: Output) -> Self {
        Request {
            method: method.to_string(),
            params,
            output,
            lookup: None,
        }
    }

    /// A call of the typed method `M` (empty params are sent as none).
    pub(crate) fn typed<M: RpcMethod>(params: &M::Params, output: Output) -> Self {
        Request::new(M::METHOD, params_value(params), output)
    }

    /// Adds the call whose result the rendering also needs.
    pub(crate) fn with_lookup(mut self, method: &'static str, params: Option<Value>) -> Self {
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
    /// A value larger than the daemon's field can hold.
    #[error("{0} is too large")]
    TooLarge(&'static str),
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
    let call = |request: Request| Ok(Plan::Call(request));
    match command {
        Command::Version => call(crate::framework::version()),
        Command::Methods { current } => call(crate::framework::methods(*current)),
        Command::Framework(f) => call(crate::framework::plan(f)),
        Command::Thread(t) => call(crate::framework::thread(t)),
        Command::Kill { signal } => call(crate::framework::kill(signal)),
        Command::SaveConfig { subsystems } => Ok(Plan::SaveConfig {
            subsystems: subsystems.clone(),
        }),
        Command::LoadConfig { file } => Ok(Plan::LoadConfig(Input::from_path(file))),
        Command::Bdev(b) => crate::bdev::plan(b).map(Plan::Call),
        Command::Vhost(v) => call(crate::vhost::plan(v)),
        Command::Dg(d) => call(crate::dg::plan(d)),
        Command::Disk(d) => call(crate::disk::plan(d)),
        Command::Volume(v) => crate::volume::plan(v).map(Plan::Call),
        Command::Plex(p) => Ok(crate::plex::plan(p)),
        Command::Subdisk(s) => Ok(crate::subdisk::plan(s)),
        Command::Print { dg } => call(crate::volume::print(dg.as_deref())),
        Command::Task(t) => Ok(crate::task::plan(t)),
        Command::Call { method, params } => match params.as_deref() {
            Some("-") => Ok(Plan::CallWithStdin {
                method: method.clone(),
            }),
            Some(text) => call(Request::new(method, parse_params(text)?, Output::Json)),
            None => call(Request::new(method, None, Output::Json)),
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

/// `value`, or a usage error naming `what` if it is zero.
pub(crate) fn nonzero(value: u64, what: &'static str) -> Result<u64, CommandError> {
    if value == 0 {
        Err(CommandError::Zero(what))
    } else {
        Ok(value)
    }
}

/// The daemon resolves paths against its own working directory, so relative paths are made
/// absolute against ours (lexically; symlinks are left for the daemon to follow).
pub(crate) fn absolute(path: &Path) -> Result<String, CommandError> {
    let abs = std::path::absolute(path).map_err(|e| CommandError::Absolute {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    abs.to_str()
        .map(str::to_string)
        .ok_or(CommandError::NonUtf8Path(abs.clone()))
}

/// Helpers for the modules' tests: parse a command line and plan it.
#[cfg(test)]
pub(crate) mod testing {
    use clap::Parser;
    use serde_json::Value;

    use super::{plan, CommandError, Output, Plan};
    use crate::cli::Cli;

    /// Parses a command line (without the program name) and plans it.
    pub(crate) fn plan_of(args: &str) -> Result<Plan, CommandError> {
        let argv = std::iter::once("plexctl").chain(args.split_whitespace());
        let cli = Cli::try_parse_from(argv).unwrap_or_else(|e| panic!("{args}: {e}"));
        plan(&cli.command)
    }

    /// The single call a command line makes.
    pub(crate) fn call_of(args: &str) -> (String, Option<Value>, Output) {
        match plan_of(args) {
            Ok(Plan::Call(r)) => (r.method, r.params, r.output),
            other => panic!("{args}: expected one call, got {other:?}"),
        }
    }

    /// Asserts the call a command line makes.
    pub(crate) fn check(args: &str, method: &str, params: Option<Value>, output: Output) {
        assert_eq!(
            call_of(args),
            (method.to_string(), params, output),
            "{args}"
        );
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::plan::testing::{check, plan_of};

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
