//! The command line: global options and the command tree, as clap derive types.
//!
//! Every daemon method has a command; `plexctl call` reaches any method by name. Each noun's
//! subcommands, the call they make and how its result is shown live in the noun's module
//! (`bdev.rs`, `vhost.rs`, `dg.rs`, ...).

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Parser, Subcommand};
use clap_complete::Shell;

use crate::bdev::BdevCommand;
use crate::dg::DgCommand;
use crate::disk::DiskCommand;
use crate::framework::{FrameworkCommand, ThreadCommand};
use crate::plex::PlexCommand;
use crate::subdisk::SubdiskCommand;
use crate::task::TaskCommand;
use crate::vhost::VhostCommand;
use crate::volume::VolumeCommand;

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

    use crate::bdev::{ErrorCommand, ErrorType};
    use crate::volume::{Layout, ReadPolicy};

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
            "--layout raid6",
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
