//! `plexctl bdev ...`: list bdevs and their I/O statistics, and create and delete the bdevs of
//! each driver (malloc, null, aio, uring, error, delay).

use std::path::PathBuf;

use clap::{Args, Subcommand, ValueEnum};
use plexd_control::api::bdev::{
    BdevGetBdevs, BdevGetIostat, BdevInfo, GetBdevsParams, GetIostatParams, Iostat,
};
use plexd_control::api::drivers::{
    AioCreateParams, BdevAioCreate, BdevAioDelete, BdevDelayCreate, BdevDelayDelete,
    BdevErrorCreate, BdevErrorDelete, BdevErrorInjectError, BdevMallocCreate, BdevMallocDelete,
    BdevNullCreate, BdevNullDelete, BdevUringCreate, BdevUringDelete, DelayCreateParams,
    DeleteParams, ErrorCreateParams, InjectErrorParams, MallocCreateParams, NullCreateParams,
    UringCreateParams,
};
use plexd_control::api::Lenient;
use plexd_control::size::{format_size, size_arg};
use serde::Deserialize;
use serde_json::Value;

use crate::plan::{absolute, nonzero, CommandError, Output, Request};
use crate::render::{cell, num_cell, pretty, rows, yes_no, MISSING};
use crate::table::Table;

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

/// `plexctl bdev ...`.
pub(crate) fn plan(command: &BdevCommand) -> Result<Request, CommandError> {
    let delete = |name: &str| DeleteParams {
        name: name.to_string(),
    };
    let silent = Output::Silent;
    Ok(match command {
        BdevCommand::List { name } => Request::typed::<BdevGetBdevs>(
            &GetBdevsParams {
                name: name.clone(),
                ..Default::default()
            },
            Output::Bdevs,
        ),
        BdevCommand::Iostat { names } => Request::typed::<BdevGetIostat>(
            &GetIostatParams {
                names: (!names.is_empty()).then(|| names.clone()),
                ..Default::default()
            },
            Output::Iostat,
        ),
        BdevCommand::Malloc(MallocCommand::Create(args)) => {
            let m = mem_create(args)?;
            let params = MallocCreateParams {
                name: Some(m.name),
                block_size: m.block_size,
                num_blocks: m.num_blocks,
                uuid: m.uuid,
                ..Default::default()
            };
            Request::typed::<BdevMallocCreate>(&params, Output::Name)
        }
        BdevCommand::Malloc(MallocCommand::Delete { name }) => {
            Request::typed::<BdevMallocDelete>(&delete(name), silent)
        }
        BdevCommand::Null(NullCommand::Create(args)) => {
            let m = mem_create(args)?;
            let params = NullCreateParams {
                name: m.name,
                block_size: m.block_size,
                num_blocks: m.num_blocks,
                uuid: m.uuid,
                ..Default::default()
            };
            Request::typed::<BdevNullCreate>(&params, Output::Name)
        }
        BdevCommand::Null(NullCommand::Delete { name }) => {
            Request::typed::<BdevNullDelete>(&delete(name), silent)
        }
        BdevCommand::Aio(AioCommand::Create {
            name,
            file,
            block_size,
            readonly,
        }) => {
            let params = AioCreateParams {
                name: name.clone(),
                filename: absolute(file)?,
                block_size: file_block_size(*block_size)?,
                readonly: *readonly,
                ..Default::default()
            };
            Request::typed::<BdevAioCreate>(&params, Output::Name)
        }
        BdevCommand::Aio(AioCommand::Delete { name }) => {
            Request::typed::<BdevAioDelete>(&delete(name), silent)
        }
        BdevCommand::Uring(UringCommand::Create {
            name,
            file,
            block_size,
        }) => {
            let params = UringCreateParams {
                name: name.clone(),
                filename: absolute(file)?,
                block_size: file_block_size(*block_size)?,
                uuid: None,
            };
            Request::typed::<BdevUringCreate>(&params, Output::Name)
        }
        BdevCommand::Uring(UringCommand::Delete { name }) => {
            Request::typed::<BdevUringDelete>(&delete(name), silent)
        }
        BdevCommand::Error(ErrorCommand::Create { base }) => Request::typed::<BdevErrorCreate>(
            &ErrorCreateParams {
                base_name: base.clone(),
                uuid: None,
            },
            Output::Name,
        ),
        BdevCommand::Error(ErrorCommand::Delete { name }) => {
            Request::typed::<BdevErrorDelete>(&delete(name), silent)
        }
        BdevCommand::Error(ErrorCommand::Inject {
            name,
            io_type,
            error_type,
            num,
            corrupt_offset,
            corrupt_value,
        }) => {
            let corrupting = *error_type == ErrorType::CorruptData;
            if !corrupting && (corrupt_offset.is_some() || corrupt_value.is_some()) {
                return Err(CommandError::CorruptOptions);
            }
            let params = InjectErrorParams {
                name: name.clone(),
                io_type: io_type.as_str().to_string(),
                error_type: Some(error_type.as_str().to_string()),
                num: *num,
                corrupt_offset: *corrupt_offset,
                corrupt_value: *corrupt_value,
                ..Default::default()
            };
            Request::typed::<BdevErrorInjectError>(&params, silent)
        }
        BdevCommand::Delay(DelayCommand::Create {
            name,
            base,
            avg_read,
            p99_read,
            avg_write,
            p99_write,
        }) => Request::typed::<BdevDelayCreate>(
            &DelayCreateParams {
                name: name.clone(),
                base_bdev_name: base.clone(),
                avg_read_latency: *avg_read,
                p99_read_latency: *p99_read,
                avg_write_latency: *avg_write,
                p99_write_latency: *p99_write,
                uuid: None,
            },
            Output::Name,
        ),
        BdevCommand::Delay(DelayCommand::Delete { name }) => {
            Request::typed::<BdevDelayDelete>(&delete(name), silent)
        }
    })
}

/// What `bdev malloc create` and `bdev null create` send: the size as a block count.
struct MemCreate {
    name: String,
    block_size: u32,
    num_blocks: u64,
    uuid: Option<String>,
}

/// The size becomes a block count; both must be non-zero and the size whole blocks.
fn mem_create(args: &MemCreateArgs) -> Result<MemCreate, CommandError> {
    let block_size = nonzero(args.block_size, "--block-size")?;
    let size = nonzero(args.size, "--size")?;
    if size % block_size != 0 {
        return Err(CommandError::NotBlockMultiple { size, block_size });
    }
    Ok(MemCreate {
        name: args.name.clone(),
        block_size: u32::try_from(block_size)
            .map_err(|_| CommandError::TooLarge("--block-size"))?,
        num_blocks: size / block_size,
        uuid: args.uuid.clone(),
    })
}

/// `--block-size` of a file bdev: non-zero and within the daemon's u32.
fn file_block_size(block_size: Option<u64>) -> Result<Option<u32>, CommandError> {
    block_size
        .map(|bs| {
            let bs = nonzero(bs, "--block-size")?;
            u32::try_from(bs).map_err(|_| CommandError::TooLarge("--block-size"))
        })
        .transpose()
}

/// `bdev_get_bdevs`: one row per bdev.
pub(crate) fn bdevs(result: &Value) -> String {
    let Some(list) = rows::<BdevInfo>(result, "bdevs") else {
        return pretty(result);
    };
    let mut t = Table::new(&[
        "NAME", "DRIVER", "BLOCK", "BLOCKS", "SIZE", "CLAIMED", "UUID",
    ])
    .right(&[2, 3, 4]);
    for b in list {
        let block_size = b.block_size.copied().map(u64::from);
        let num_blocks = b.num_blocks.copied();
        let size = match (block_size, num_blocks) {
            (Some(bs), Some(n)) => bs.checked_mul(n).map(format_size),
            _ => None,
        };
        t.row(vec![
            cell(&b.name),
            cell(&b.product_name),
            num_cell(block_size),
            num_cell(num_blocks),
            size.unwrap_or_else(|| MISSING.to_string()),
            yes_no(&b.claimed),
            cell(&b.uuid),
        ]);
    }
    t.render()
}

/// Average latency in microseconds of `ops` operations taking `ticks` in total at `tick_rate`
/// ticks per second; `-` when there were no operations or the rate is unknown.
fn avg_latency_us(ticks: Option<u64>, ops: Option<u64>, tick_rate: Option<u64>) -> String {
    match (ticks, ops, tick_rate) {
        (Some(ticks), Some(ops), Some(rate)) if ops > 0 && rate > 0 => {
            let us = ticks as f64 / ops as f64 / rate as f64 * 1e6;
            format!("{us:.1}")
        }
        _ => MISSING.to_string(),
    }
}

/// `bdev_get_iostat`: one row per bdev, latencies from the tick rate.
pub(crate) fn iostat(result: &Value) -> String {
    let Ok(stat) = Iostat::deserialize(result) else {
        return pretty(result);
    };
    let tick_rate = stat.tick_rate.copied();
    let mut t = Table::new(&[
        "NAME",
        "READ_OPS",
        "READ",
        "READ_LAT(µs)",
        "WRITE_OPS",
        "WRITTEN",
        "WRITE_LAT(µs)",
        "UNMAP_OPS",
    ])
    .right(&[1, 2, 3, 4, 5, 6, 7]);
    for b in &stat.bdevs {
        let bytes = |n: &Lenient<u64>| n.copied().map_or_else(|| MISSING.to_string(), format_size);
        let read_ops = b.num_read_ops.copied();
        let write_ops = b.num_write_ops.copied();
        t.row(vec![
            cell(&b.name),
            num_cell(read_ops),
            bytes(&b.bytes_read),
            avg_latency_us(b.read_latency_ticks.copied(), read_ops, tick_rate),
            num_cell(write_ops),
            bytes(&b.bytes_written),
            avg_latency_us(b.write_latency_ticks.copied(), write_ops, tick_rate),
            num_cell(b.num_unmap_ops.copied()),
        ]);
    }
    t.render()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::plan::testing::{call_of, check, plan_of};
    use crate::plan::{CommandError, Output};
    use crate::render::render;

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
    fn bdev_table() {
        let reply = json!([
            {"name": "Malloc0", "product_name": "Malloc disk", "block_size": 512,
             "num_blocks": 131072, "claimed": false, "uuid": "1b4e28ba-2fa1-11d2-883f-0016d3cca427"},
            {"name": "EE_Malloc0", "product_name": "Error disk", "block_size": 512,
             "num_blocks": 3, "claimed": true}
        ]);
        let out = render(Output::Bdevs, &reply);
        assert_eq!(
            out,
            "NAME        DRIVER       BLOCK  BLOCKS     SIZE  CLAIMED  UUID\n\
             Malloc0     Malloc disk    512  131072   64 MiB  no       1b4e28ba-2fa1-11d2-883f-0016d3cca427\n\
             EE_Malloc0  Error disk     512       3  1.5 KiB  yes      -\n"
        );
    }

    #[test]
    fn iostat_latency_from_ticks() {
        let reply = json!({"tick_rate": 1_000_000_000u64, "ticks": 5, "bdevs": [
            {"name": "M0", "bytes_read": 8192, "num_read_ops": 2, "read_latency_ticks": 3000,
             "bytes_written": 0, "num_write_ops": 0, "write_latency_ticks": 0, "num_unmap_ops": 0}
        ]});
        let out = render(Output::Iostat, &reply);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 2);
        let cells: Vec<&str> = lines[1].split_whitespace().collect();
        // 3000 ticks / 2 ops at 1 GHz = 1.5 µs.
        assert_eq!(
            cells,
            vec!["M0", "2", "8", "KiB", "1.5", "0", "0", "B", "-", "0"]
        );
        assert_eq!(avg_latency_us(Some(10), Some(1), None), "-");
        assert_eq!(avg_latency_us(Some(10), Some(1), Some(0)), "-");
        assert_eq!(
            avg_latency_us(Some(2_000_000), Some(4), Some(2_000_000)),
            "250000.0"
        );
    }
}
