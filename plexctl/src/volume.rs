//! `plexctl volume ...`: volumes, the bdevs `DG/NAME` built from plexes.

use std::collections::HashMap;

use clap::builder::{PossibleValuesParser, TypedValueParser};
use clap::{ArgGroup, Args, Subcommand, ValueEnum};
use plexd_control::api::dg::{DgDiskParams, DgListParams};
use plexd_control::api::volume::{
    Resized, Size, VmPrint, VolumeAddlog, VolumeAddlogParams, VolumeCheck, VolumeCheckParams,
    VolumeCreate, VolumeCreateParams, VolumeDelete, VolumeInfo, VolumeList, VolumeRecover,
    VolumeRecoverParams, VolumeResize, VolumeResizeParams, VolumeSet, VolumeSetParams, VolumeStart,
    VolumeStartParams, VolumeStop,
};
use plexd_control::api::{params_value, RpcMethod};
use plexd_control::size::{format_size, size_arg};
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::plan::{nonzero, CommandError, Output, Request};
use crate::render::{cell, len_cell, pretty, rows, yes_no, MISSING};
use crate::table::Table;

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
    /// One RAID-5 plex: --ncol columns (at least 3) with rotating parity, 16K stripe unit.
    Raid5,
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
            Layout::Raid5 => "raid5",
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
    /// Number of columns (striped and raid5 layouts; default from the number of disks, at
    /// least 3 for raid5).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub ncol: Option<u32>,
    /// Number of plexes (mirror layouts default to 2).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub nmirror: Option<u32>,
    /// Stripe unit, a whole number of KiB (daemon default: 64K; 16K for raid5, which takes
    /// powers of two from 4K to 1M).
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
    /// RAID-5: log plexes, each on a disk no column uses (default 1 when one has room; 0
    /// for none). The log closes the RAID-5 write hole.
    #[arg(long, value_name = "N")]
    pub nlog: Option<u32>,
    /// RAID-5: once no log plex works, continue (write on without the log's protection) or
    /// readonly (refuse writes until a log plex is added).
    #[arg(long, value_name = "POLICY")]
    pub log_failure: Option<String>,
    /// RAID-5: full-stripe writes compute parity from the client's buffers without copying
    /// them first (md's skip_copy). Only for clients that never change a buffer while its
    /// write is in flight; not used while a log plex works.
    #[arg(long)]
    pub skip_copy: bool,
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
        /// Start a RAID-5 volume that crashed while degraded (where the crash tore a write,
        /// its missing column may read back wrong).
        #[arg(long)]
        force: bool,
    },
    /// Rebuild a RAID-5 volume's stale column whose disks are back (volume_recover); prints
    /// the task's id (follow it with `plexctl task wait`).
    Recover {
        /// The disk group.
        dg: String,
        /// The volume.
        name: String,
        /// Rebuild the column on this disk (disk name or bdev) instead of in place (default:
        /// in place when its disk is back, else a disk no other column or log uses).
        #[arg(long, value_name = "DISK")]
        disk: Option<String>,
        /// Pause between chunks of rows, in ms (throttle).
        #[arg(long, value_name = "MS")]
        delay_ms: Option<u64>,
    },
    /// Add a log plex to a RAID-5 volume, on a disk no column or log uses (volume_addlog);
    /// prints the new plex's name.
    Addlog {
        /// The disk group.
        dg: String,
        /// The volume.
        name: String,
        /// Allocate only on this disk (disk name or bdev; repeatable).
        #[arg(long = "alloc", value_name = "DISK")]
        alloc: Vec<String>,
    },
    /// Check a RAID-5 volume's parity against its data (volume_check); prints the task's id.
    /// `plexctl task wait ID` shows the mismatching rows when it ends.
    Check {
        /// The disk group.
        dg: String,
        /// The volume.
        name: String,
        /// Rewrite the parity where it does not match.
        #[arg(long)]
        repair: bool,
    },
    /// Change properties of a volume (volume_set); a started volume uses them at once.
    #[command(group(ArgGroup::new("properties").required(true).multiple(true)))]
    Set {
        /// The disk group.
        dg: String,
        /// The volume.
        name: String,
        /// RAID-5: on, full-stripe writes compute parity from the client's buffers without
        /// copying them first (md's skip_copy); off (the default), every write is copied.
        /// Only for clients that never change a buffer while its write is in flight; not
        /// used while a log plex works.
        #[arg(long, value_name = "on|off", value_parser = on_off(), group = "properties")]
        skip_copy: Option<bool>,
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

/// A switch's value: `on` or `off`.
fn on_off() -> impl TypedValueParser<Value = bool> {
    PossibleValuesParser::new(["on", "off"]).map(|v| v == "on")
}

pub(crate) fn plan(command: &VolumeCommand) -> Result<Request, CommandError> {
    let dg_name = |dg: &String, name: &String| DgDiskParams {
        dg: dg.clone(),
        name: name.clone(),
    };
    Ok(match command {
        VolumeCommand::Create(args) => {
            Request::typed::<VolumeCreate>(&volume_create(args)?, Output::Name)
        }
        VolumeCommand::Delete { dg, name } => {
            Request::typed::<VolumeDelete>(&dg_name(dg, name), Output::Silent)
        }
        VolumeCommand::Start { dg, name, force } => Request::typed::<VolumeStart>(
            &VolumeStartParams {
                dg: dg.clone(),
                name: name.clone(),
                force: *force,
            },
            Output::Silent,
        ),
        VolumeCommand::Recover {
            dg,
            name,
            disk,
            delay_ms,
        } => Request::typed::<VolumeRecover>(
            &VolumeRecoverParams {
                dg: dg.clone(),
                name: name.clone(),
                disk: disk.clone(),
                delay_ms: *delay_ms,
            },
            Output::TaskStarted,
        ),
        VolumeCommand::Addlog { dg, name, alloc } => Request::typed::<VolumeAddlog>(
            &VolumeAddlogParams {
                dg: dg.clone(),
                name: name.clone(),
                alloc: (!alloc.is_empty()).then(|| alloc.clone()),
            },
            Output::Name,
        ),
        VolumeCommand::Check { dg, name, repair } => Request::typed::<VolumeCheck>(
            &VolumeCheckParams {
                dg: dg.clone(),
                name: name.clone(),
                repair: *repair,
            },
            Output::TaskStarted,
        ),
        VolumeCommand::Set {
            dg,
            name,
            skip_copy,
        } => Request::typed::<VolumeSet>(
            &VolumeSetParams {
                dg: dg.clone(),
                name: name.clone(),
                skip_copy: *skip_copy,
            },
            Output::Silent,
        ),
        VolumeCommand::Stop { dg, name } => {
            Request::typed::<VolumeStop>(&dg_name(dg, name), Output::Silent)
        }
        VolumeCommand::Resize { dg, name, size } => Request::typed::<VolumeResize>(
            &VolumeResizeParams {
                dg: dg.clone(),
                name: name.clone(),
                size: Size::Bytes(nonzero(*size, "size")?),
            },
            Output::Resized,
        )
        .with_lookup(
            VolumeList::METHOD,
            params_value(&DgListParams {
                dg: Some(dg.clone()),
                name: Some(name.clone()),
            }),
        ),
        VolumeCommand::List { dg, name } => Request::typed::<VolumeList>(
            &DgListParams {
                dg: dg.clone(),
                name: name.clone(),
            },
            Output::Volumes,
        ),
    })
}

/// `plexctl print [DG]`: the volume manager's objects in `vxprint -ht` columns.
pub(crate) fn print(dg: Option<&str>) -> Request {
    Request::typed::<VmPrint>(
        &DgListParams {
            dg: dg.map(str::to_string),
            name: None,
        },
        Output::Text,
    )
}

/// Params for `volume_create`: the size in bytes, the stripe unit in KiB, and a read policy
/// that fits `--prefer-plex` (which alone implies `prefer`).
fn volume_create(args: &VolumeCreateArgs) -> Result<VolumeCreateParams, CommandError> {
    let mut p = VolumeCreateParams {
        dg: args.dg.clone(),
        name: args.name.clone(),
        size: Size::Bytes(nonzero(args.size, "size")?),
        layout: args.layout.map(|l| l.as_str().to_string()),
        ncol: args.ncol,
        nmirror: args.nmirror,
        ..Default::default()
    };
    if let Some(su) = args.stripe_unit {
        let su = nonzero(su, "--stripe-unit")?;
        if su % 1024 != 0 {
            return Err(CommandError::StripeUnitKib(su));
        }
        p.stripe_unit_kb = Some(su / 1024);
    }
    let policy = match (args.read_policy, &args.prefer_plex) {
        (Some(ReadPolicy::Prefer), None) => return Err(CommandError::PreferNeedsPlex),
        (Some(other), Some(_)) if other != ReadPolicy::Prefer => {
            return Err(CommandError::PreferPlexPolicy(other.as_str()))
        }
        (None, Some(_)) => Some(ReadPolicy::Prefer),
        (policy, _) => policy,
    };
    p.read_policy = policy.map(|policy| policy.as_str().to_string());
    p.prefer_plex = args.prefer_plex.clone();
    p.alloc = (!args.alloc.is_empty()).then(|| args.alloc.clone());
    p.nlog = args.nlog;
    p.log_failure = args.log_failure.clone();
    p.skip_copy = args.skip_copy.then_some(true);
    Ok(p)
}

/// `volume_list`: one row per volume.
pub(crate) fn volumes(result: &Value) -> String {
    let Some(list) = rows::<VolumeInfo>(result, "") else {
        return pretty(result);
    };
    let mut t = Table::new(&[
        "VOLUME", "SIZE", "LAYOUT", "STATE", "KSTATE", "PLEXES", "STARTED",
    ])
    .right(&[1, 5]);
    for v in list {
        let size = v
            .size_bytes
            .copied()
            .or_else(|| v.num_blocks.copied()?.checked_mul(v.block_size.copied()?));
        t.row(vec![
            format!("{}/{}", cell(&v.dg), cell(&v.name)),
            size.map_or_else(|| MISSING.to_string(), format_size),
            cell(&v.layout),
            cell(&v.state),
            cell(&v.kstate),
            len_cell(&v.plexes),
            yes_no(&v.started),
        ]);
    }
    t.render()
}

/// Block size by (disk group, volume), from a `volume_list` reply.
pub(crate) fn volume_block_sizes(volume_list: Option<&Value>) -> HashMap<(String, String), u64> {
    let list = volume_list
        .and_then(|v| rows::<VolumeInfo>(v, ""))
        .unwrap_or_default();
    list.into_iter()
        .filter_map(|v| {
            let key = (v.dg.get()?.clone(), v.name.get()?.clone());
            Some((key, v.block_size.copied()?))
        })
        .collect()
}

/// `volume_resize`: `dg01/vol01: 16 MiB (32768 blocks)`, the name and block size taken from
/// the `volume_list` lookup; without it, only the block count.
pub(crate) fn resized(result: &Value, lookup: Option<&Value>) -> String {
    let Some(blocks) = reply::<Resized>(result).and_then(|r| r.num_blocks.copied()) else {
        return pretty(result);
    };
    let volume = lookup
        .and_then(|v| rows::<VolumeInfo>(v, ""))
        .and_then(|list| list.into_iter().next());
    let size = volume
        .as_ref()
        .and_then(|v| v.block_size.copied())
        .and_then(|bs| blocks.checked_mul(bs));
    match (volume, size) {
        (Some(v), Some(bytes)) => format!(
            "{}/{}: {} ({blocks} blocks)\n",
            cell(&v.dg),
            cell(&v.name),
            format_size(bytes)
        ),
        _ => format!("{blocks} blocks\n"),
    }
}

/// A reply read as `T`, if it is one.
fn reply<T: DeserializeOwned>(result: &Value) -> Option<T> {
    T::deserialize(result).ok()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use crate::plan::testing::{check, plan_of};
    use crate::plan::{CommandError, Lookup, Output, Plan};
    use crate::render::{render, render_with};

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
    fn volume_create_raid5() {
        check(
            "volume create dg01 r5 1G --layout raid5 --ncol 4 --stripe-unit 32K",
            "volume_create",
            Some(json!({
                "dg": "dg01", "name": "r5", "size": 1u64 << 30, "layout": "raid5",
                "ncol": 4, "stripe_unit_kb": 32
            })),
            Output::Name,
        );
        check(
            "volume create dg01 r5 100M --layout raid5",
            "volume_create",
            Some(json!({"dg": "dg01", "name": "r5", "size": 100u64 << 20, "layout": "raid5"})),
            Output::Name,
        );
        check(
            "volume create dg01 r5 100M --layout raid5 --nlog 0 --skip-copy",
            "volume_create",
            Some(json!({
                "dg": "dg01", "name": "r5", "size": 100u64 << 20, "layout": "raid5",
                "nlog": 0, "skip_copy": true
            })),
            Output::Name,
        );
    }

    #[test]
    fn volume_set_sends_the_properties_given() {
        for (value, on) in [("on", true), ("off", false)] {
            check(
                &format!("volume set dg01 r5 --skip-copy {value}"),
                "volume_set",
                Some(json!({"dg": "dg01", "name": "r5", "skip_copy": on})),
                Output::Silent,
            );
        }
        // No property, or a value that is not on/off: refused before anything is sent.
        let parse = |args: &str| {
            <crate::cli::Cli as clap::Parser>::try_parse_from(
                ["plexctl", "volume", "set", "dg01", "r5"]
                    .into_iter()
                    .chain(args.split_whitespace()),
            )
        };
        let err = parse("").expect_err("no property");
        assert_eq!(err.kind(), clap::error::ErrorKind::MissingRequiredArgument);
        let err = parse("--skip-copy").expect_err("no value");
        assert_eq!(err.kind(), clap::error::ErrorKind::InvalidValue);
        for bad in ["sometimes", "true"] {
            let err = parse(&format!("--skip-copy {bad}")).expect_err("not on or off");
            assert_eq!(err.kind(), clap::error::ErrorKind::InvalidValue, "{bad}");
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
        check(
            "volume start --force dg01 r5",
            "volume_start",
            Some(json!({"dg": "dg01", "name": "r5", "force": true})),
            Output::Silent,
        );
        check(
            "volume recover dg01 r5 --delay-ms 5",
            "volume_recover",
            Some(json!({"dg": "dg01", "name": "r5", "delay_ms": 5})),
            Output::TaskStarted,
        );
        check(
            "volume addlog dg01 r5 --alloc disk05",
            "volume_addlog",
            Some(json!({"dg": "dg01", "name": "r5", "alloc": ["disk05"]})),
            Output::Name,
        );
        check(
            "volume check dg01 r5 --repair",
            "volume_check",
            Some(json!({"dg": "dg01", "name": "r5", "repair": true})),
            Output::TaskStarted,
        );
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
    fn volume_table() {
        let reply = json!([
            {"dg": "dg01", "name": "vol01", "block_size": 512, "num_blocks": 16384,
             "size_bytes": 8388608, "layout": "mirror", "state": "ACTIVE", "kstate": "ENABLED",
             "started": true, "plexes": [{"name": "vol01-01"}, {"name": "vol01-02"}]},
            {"dg": "dg01", "name": "vol02", "block_size": 4096, "num_blocks": 3,
             "layout": "stripe", "state": "CLEAN", "kstate": "DISABLED", "started": false,
             "plexes": [{"name": "vol02-01"}]}
        ]);
        assert_eq!(
            render(Output::Volumes, &reply),
            "VOLUME        SIZE  LAYOUT  STATE   KSTATE    PLEXES  STARTED\n\
             dg01/vol01   8 MiB  mirror  ACTIVE  ENABLED        2  yes\n\
             dg01/vol02  12 KiB  stripe  CLEAN   DISABLED       1  no\n"
        );
    }

    #[test]
    fn resized_volume_size_from_the_lookup() {
        let reply = json!({"num_blocks": 32768});
        let volumes = json!([{"dg": "dg01", "name": "vol01", "block_size": 512,
            "num_blocks": 32768, "size_bytes": 16777216}]);
        assert_eq!(
            render_with(Output::Resized, &reply, Some(&volumes)),
            "dg01/vol01: 16 MiB (32768 blocks)\n"
        );
        let odd = json!([{"dg": "dg01", "name": "vol02", "block_size": 4096}]);
        assert_eq!(
            render_with(Output::Resized, &json!({"num_blocks": 3}), Some(&odd)),
            "dg01/vol02: 12 KiB (3 blocks)\n"
        );
        // Without the lookup (or with an odd one) only the block count is known.
        assert_eq!(render(Output::Resized, &reply), "32768 blocks\n");
        assert_eq!(
            render_with(Output::Resized, &reply, Some(&json!([]))),
            "32768 blocks\n"
        );
    }
}
