//! `plexctl`: the command-line client for plexd's JSON-RPC socket.
//!
//! Its own crate (`plexd-plexctl`), so `plexd-control`, which the engine depends on, never
//! compiles clap. One module per noun (`bdev`, `vhost`, `framework`, `dg`, `disk`, `volume`,
//! `plex`, `subdisk`, `task`) holds that noun's subcommands, the call each makes and how its
//! result is shown. The shared parts: `cli` (global options and the top-level command tree),
//! `plan` (a parsed command to the calls it makes: a pure function, tested without a daemon),
//! `render` and `table` (human output), `config` (`save-config` / `load-config` on top of plain
//! calls). This file connects them to the client and owns the exit
//! status: 0 on success, 1 when the daemon answers with an error (or a call fails), 2 for usage
//! errors and when the daemon cannot be reached.

mod bdev;
mod cli;
mod config;
mod dg;
mod disk;
mod framework;
mod plan;
mod plex;
mod render;
mod subdisk;
mod table;
mod task;
mod vhost;
mod volume;

use std::error::Error;
use std::fmt;
use std::io::{self, IsTerminal, Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::error::ErrorKind;
use clap::{ArgMatches, CommandFactory, FromArgMatches};
use plexd_control::{ClientError, RpcClient};
use serde_json::Value;

use crate::cli::Cli;
use crate::config::{ConfigError, Rpc};
use crate::plan::{Input, Plan};
use crate::render::{pretty, render_with};
use crate::task::follow as tasks;
use crate::task::task_outcome;

impl Rpc for RpcClient {
    type Error = ClientError;

    fn call(&mut self, method: &str, params: Option<Value>) -> Result<Value, ClientError> {
        RpcClient::call(self, method, params)
    }
}

/// Why a run failed; each variant knows its exit status.
#[derive(Debug)]
enum Failure {
    /// The command line makes no sense (exit 2, reported the way clap reports usage errors).
    Usage(plan::CommandError),
    /// The socket could not be reached (exit 2).
    Connect { path: PathBuf, source: io::Error },
    /// A call failed: the daemon answered with an error, or the exchange broke (exit 1).
    Call(ClientError),
    /// A `load-config` / `save-config` step failed (exit 1).
    Config(ConfigError<ClientError>),
    /// Reading a file or stdin failed (exit 1).
    Read { what: String, source: io::Error },
    /// A config file is not JSON (exit 1).
    ConfigJson { what: String, reason: String },
    /// Writing the output failed for a reason other than a closed pipe (exit 1).
    Write(io::Error),
    /// A task failed, was cancelled or cannot be followed (exit 1).
    Task(String),
}

impl Failure {
    fn exit_code(&self) -> u8 {
        match self {
            Failure::Usage(_) | Failure::Connect { .. } => 2,
            _ => 1,
        }
    }
}

/// An I/O error's text without the `(os error N)` tail, which says nothing to a user.
fn io_reason(e: &io::Error) -> String {
    let s = e.to_string();
    match s.find(" (os error ") {
        Some(i) => s[..i].to_string(),
        None => s,
    }
}

/// A client error as one line: the server's message and code, or the error and its causes.
fn describe(e: &ClientError) -> String {
    if let Some(code) = e.rpc_code() {
        return format!("{e} (code {code})");
    }
    let mut s = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        s.push_str(": ");
        match c.downcast_ref::<io::Error>() {
            Some(io) => s.push_str(&io_reason(io)),
            None => s.push_str(&c.to_string()),
        }
        cause = c.source();
    }
    s
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Usage(e) => write!(f, "{e}"),
            Failure::Connect { path, source } => write!(
                f,
                "cannot connect to plexd at {}: {} (is plexd running? use -s)",
                path.display(),
                io_reason(source)
            ),
            Failure::Call(e) => f.write_str(&describe(e)),
            Failure::Config(ConfigError::Call { method, source }) => {
                write!(f, "{method}: {}", describe(source))
            }
            Failure::Config(e) => write!(f, "{e}"),
            Failure::Read { what, source } => {
                write!(f, "cannot read {what}: {}", io_reason(source))
            }
            Failure::ConfigJson { what, reason } => write!(f, "{what} is not valid JSON: {reason}"),
            Failure::Write(e) => write!(f, "cannot write output: {}", io_reason(e)),
            Failure::Task(message) => f.write_str(message),
        }
    }
}

fn main() -> ExitCode {
    let matches = Cli::command().get_matches();
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    match run(&cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Usage(e)) => usage_error(&matches, e),
        Err(e) => {
            eprintln!("plexctl: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

/// Reports a usage error the way clap does (exit 2), with the usage line of the subcommand
/// that was given rather than the top level's.
fn usage_error(matches: &ArgMatches, error: plan::CommandError) -> ! {
    let mut root = Cli::command();
    root.build();
    let mut command = &root;
    let mut matches = matches;
    while let Some((name, sub_matches)) = matches.subcommand() {
        match command.find_subcommand(name) {
            Some(sub) => command = sub,
            None => break,
        }
        matches = sub_matches;
    }
    command
        .clone()
        .error(ErrorKind::ValueValidation, error)
        .exit()
}

fn run(cli: &Cli) -> Result<(), Failure> {
    let plan = plan::plan(&cli.command).map_err(Failure::Usage)?;
    match plan {
        Plan::Completions(shell) => {
            let mut out = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "plexctl", &mut out);
            emit(&out)
        }
        Plan::Call(request) => {
            let mut client = connect(cli)?;
            let result = client
                .call(&request.method, request.params)
                .map_err(Failure::Call)?;
            let text = if cli.json {
                pretty(&result)
            } else {
                // The lookup only improves the table; without it the cells show `-`.
                let lookup = request
                    .lookup
                    .and_then(|l| client.call(l.method, l.params).ok());
                render_with(request.output, &result, lookup.as_ref())
            };
            emit(text.as_bytes())
        }
        Plan::WaitTask(id) => {
            let mut client = connect(cli)?;
            wait_task(cli, &mut client, id)
        }
        Plan::StartTask(request) => {
            let mut client = connect(cli)?;
            let result = client
                .call(&request.method, request.params)
                .map_err(Failure::Call)?;
            let id = result.get("task").and_then(Value::as_u64).ok_or_else(|| {
                Failure::Task(format!(
                    "{} did not return a task id: {result}",
                    request.method
                ))
            })?;
            wait_task(cli, &mut client, id)
        }
        Plan::CallWithStdin { method } => {
            let text = read_input(&Input::Stdin)?;
            let params = plan::parse_params(&text).map_err(Failure::Usage)?;
            let mut client = connect(cli)?;
            let result = client.call(&method, params).map_err(Failure::Call)?;
            emit(pretty(&result).as_bytes())
        }
        Plan::SaveConfig { subsystems } => {
            let mut client = connect(cli)?;
            let config = config::save_config(&mut client, &subsystems).map_err(Failure::Config)?;
            emit(pretty(&config).as_bytes())
        }
        Plan::LoadConfig(input) => {
            let text = read_input(&input)?;
            let config: Value = serde_json::from_str(&text).map_err(|e| Failure::ConfigJson {
                what: input_name(&input),
                reason: e.to_string(),
            })?;
            let mut client = connect(cli)?;
            config::load_config(&mut client, &config).map_err(Failure::Config)
        }
    }
}

/// Follows task `id` to its end: progress on stderr and a final line on stdout, or with
/// `--json` the task as `task_wait` returns it. A failed or cancelled task is an error.
fn wait_task(cli: &Cli, client: &mut RpcClient, id: u64) -> Result<(), Failure> {
    let task = if cli.json {
        let task = tasks::wait(client, id, tasks::wait_slice(cli.timeout), |e| {
            e.rpc_code() == Some(-i64::from(libc::ETIMEDOUT))
        })
        .map_err(Failure::Call)?;
        emit(pretty(&task).as_bytes())?;
        task
    } else {
        let mut err = io::stderr().lock();
        let tty = err.is_terminal();
        let progress = tasks::Progress {
            out: &mut err,
            tty,
            poll: tasks::POLL,
            plain_every: tasks::PLAIN_EVERY,
        };
        tasks::follow(client, id, progress).map_err(|e| match e {
            tasks::WaitError::Call(e) => Failure::Call(e),
            tasks::WaitError::Task(m) => Failure::Task(m),
        })?
    };
    match task_outcome(&task) {
        Ok(line) if !cli.json => emit(line.as_bytes()),
        Ok(_) => Ok(()),
        Err(message) => Err(Failure::Task(message)),
    }
}

/// Connects to the socket given by `-s` and applies `--timeout`.
fn connect(cli: &Cli) -> Result<RpcClient, Failure> {
    let mut client = RpcClient::connect(&cli.socket_path()).map_err(|e| match e {
        ClientError::Connect { path, source } => Failure::Connect { path, source },
        other => Failure::Call(other),
    })?;
    client.set_timeout(cli.timeout);
    Ok(client)
}

fn input_name(input: &Input) -> String {
    match input {
        Input::Stdin => "standard input".to_string(),
        Input::File(path) => path.display().to_string(),
    }
}

/// Reads all of a file or of stdin as UTF-8 text.
fn read_input(input: &Input) -> Result<String, Failure> {
    let failed = |source| Failure::Read {
        what: input_name(input),
        source,
    };
    match input {
        Input::Stdin => {
            let mut text = String::new();
            io::stdin().read_to_string(&mut text).map_err(failed)?;
            Ok(text)
        }
        Input::File(path) => std::fs::read_to_string(path).map_err(failed),
    }
}

/// Writes to stdout; a reader that went away (`plexctl methods | head`) is not an error.
fn emit(bytes: &[u8]) -> Result<(), Failure> {
    let mut out = io::stdout().lock();
    match out.write_all(bytes).and_then(|()| out.flush()) {
        Err(e) if e.kind() != io::ErrorKind::BrokenPipe => Err(Failure::Write(e)),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;
    use plexd_control::RpcError;

    use super::*;

    #[test]
    fn rpc_errors_show_message_and_code() {
        let e = ClientError::Rpc(RpcError::errno(libc::ENODEV, "no such bdev: M9"));
        let f = Failure::Call(e);
        assert_eq!(f.to_string(), "no such bdev: M9 (code -19)");
        assert_eq!(f.exit_code(), 1);
    }

    #[test]
    fn connect_errors_explain_and_exit_2() {
        let f = Failure::Connect {
            path: "/var/tmp/plexd.sock".into(),
            source: io::Error::from_raw_os_error(libc::ENOENT),
        };
        assert_eq!(
            f.to_string(),
            "cannot connect to plexd at /var/tmp/plexd.sock: No such file or directory \
             (is plexd running? use -s)"
        );
        assert_eq!(f.exit_code(), 2);
    }

    #[test]
    fn io_errors_include_their_cause() {
        let e = ClientError::Io(io::Error::new(
            io::ErrorKind::TimedOut,
            "no reply within 1s",
        ));
        assert_eq!(describe(&e), "RPC socket I/O failed: no reply within 1s");
    }

    #[test]
    fn load_config_errors_name_the_method() {
        let source = ClientError::Rpc(RpcError::errno(libc::EEXIST, "bdev M0 exists"));
        let f = Failure::Config(ConfigError::Call {
            method: "bdev_malloc_create".into(),
            source,
        });
        assert_eq!(
            f.to_string(),
            "bdev_malloc_create: bdev M0 exists (code -17)"
        );
    }

    #[test]
    fn connecting_to_a_missing_socket_fails_with_connect() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cli = Cli::try_parse_from([
            "plexctl",
            "-s",
            dir.path().join("none.sock").to_str().expect("utf-8"),
            "version",
        ])
        .expect("parse");
        match run(&cli) {
            Err(f @ Failure::Connect { .. }) => assert_eq!(f.exit_code(), 2),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn missing_config_file_is_reported_before_connecting() {
        let cli = Cli::try_parse_from([
            "plexctl",
            "-s",
            "/nonexistent/plexd.sock",
            "load-config",
            "/nonexistent/config.json",
        ])
        .expect("parse");
        match run(&cli) {
            Err(f @ Failure::Read { .. }) => assert_eq!(
                f.to_string(),
                "cannot read /nonexistent/config.json: No such file or directory"
            ),
            other => panic!("unexpected {other:?}"),
        }
    }
}
