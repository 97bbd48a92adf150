//! Human output for method results. Replies are read defensively: a missing or mistyped field
//! shows as `-` rather than failing, so a newer daemon's extra or changed fields never break
//! the CLI (and `--json` always shows everything).

use std::collections::HashMap;

use serde_json::Value;

use crate::commands::Output;
use crate::table::Table;
use plexd_control::size::{format_rate, format_size};

/// Shown for a field the reply lacks.
const MISSING: &str = "-";

/// Renders `result` for people; the returned text ends in a newline unless it is empty.
#[cfg(test)]
pub fn render(output: Output, result: &Value) -> String {
    render_with(output, result, None)
}

/// Like `render`, with the result of the request's lookup method (see
/// [`crate::commands::Request::lookup`]) when there is one and it succeeded.
pub fn render_with(output: Output, result: &Value, lookup: Option<&Value>) -> String {
    match output {
        Output::Version => match result.get("version").and_then(Value::as_str) {
            Some(v) => format!("{v}\n"),
            None => pretty(result),
        },
        Output::Lines => match result.as_array() {
            Some(items) => items.iter().map(|i| format!("{}\n", text(i))).collect(),
            None => pretty(result),
        },
        Output::Subsystems => subsystems(result),
        Output::Reactors => reactors(result),
        Output::ThreadStats => thread_stats(result),
        Output::Bdevs => bdevs(result),
        Output::Iostat => iostat(result),
        Output::VhostControllers => vhost_controllers(result),
        Output::DiskGroups => disk_groups(result),
        Output::Disks => disks(result, &group_block_sizes(lookup)),
        Output::Volumes => volumes(result),
        Output::Tasks => tasks(result, &volume_block_sizes(lookup)),
        Output::TaskStarted => match u64_field(result, "task") {
            Some(id) => format!("task {id} started; follow it with: plexctl task wait {id}\n"),
            None => pretty(result),
        },
        Output::Resized => resized(result, lookup),
        Output::Text => match result {
            Value::String(s) if s.is_empty() || s.ends_with('\n') => s.clone(),
            Value::String(s) => format!("{s}\n"),
            other => pretty(other),
        },
        Output::Name => match result {
            Value::String(name) => format!("{name}\n"),
            Value::Bool(true) | Value::Null => String::new(),
            other => pretty(other),
        },
        Output::Silent => match result {
            Value::Bool(true) | Value::Null => String::new(),
            other => pretty(other),
        },
        Output::Json => pretty(result),
    }
}

/// Pretty-printed JSON with a trailing newline.
pub fn pretty(value: &Value) -> String {
    let mut s = serde_json::to_string_pretty(value).unwrap_or_else(|_| value.to_string());
    s.push('\n');
    s
}

/// A scalar as a cell: strings without quotes, anything else as JSON.
fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => MISSING.to_string(),
        other => other.to_string(),
    }
}

/// The string field `key` of `v`, or `-`.
fn field(v: &Value, key: &str) -> String {
    v.get(key).map_or_else(|| MISSING.to_string(), text)
}

fn u64_field(v: &Value, key: &str) -> Option<u64> {
    v.get(key).and_then(Value::as_u64)
}

fn num_cell(n: Option<u64>) -> String {
    n.map_or_else(|| MISSING.to_string(), |n| n.to_string())
}

fn yes_no(v: &Value, key: &str) -> String {
    match v.get(key).and_then(Value::as_bool) {
        Some(true) => "yes".to_string(),
        Some(false) => "no".to_string(),
        None => MISSING.to_string(),
    }
}

/// `busy / (busy + idle)` as a percentage with one decimal.
fn busy_percent(v: &Value) -> String {
    match (u64_field(v, "busy"), u64_field(v, "idle")) {
        (Some(busy), Some(idle)) if busy.saturating_add(idle) > 0 => {
            let total = busy as f64 + idle as f64;
            format!("{:.1}", busy as f64 * 100.0 / total)
        }
        _ => MISSING.to_string(),
    }
}

/// The array at `key` of an object reply (or the reply itself if it is an array).
fn items<'a>(result: &'a Value, key: &str) -> Option<&'a Vec<Value>> {
    result
        .as_array()
        .or_else(|| result.get(key).and_then(Value::as_array))
}

fn subsystems(result: &Value) -> String {
    let Some(list) = items(result, "subsystems") else {
        return pretty(result);
    };
    let mut t = Table::new(&["SUBSYSTEM", "DEPENDS_ON"]);
    for s in list {
        let deps = s
            .get("depends_on")
            .and_then(Value::as_array)
            .map(|d| d.iter().map(text).collect::<Vec<_>>().join(","))
            .filter(|d| !d.is_empty())
            .unwrap_or_else(|| MISSING.to_string());
        t.row(vec![field(s, "subsystem"), deps]);
    }
    t.render()
}

fn reactors(result: &Value) -> String {
    let Some(list) = items(result, "reactors") else {
        return pretty(result);
    };
    let mut t = Table::new(&["LCORE", "TID", "BUSY%", "INTERRUPT", "THREADS"]).right(&[0, 1, 2]);
    for r in list {
        let threads = r
            .get("lw_threads")
            .and_then(Value::as_array)
            .map(|ts| {
                ts.iter()
                    .map(|t| t.get("name").map_or_else(|| text(t), text))
                    .collect::<Vec<_>>()
                    .join(",")
            })
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| MISSING.to_string());
        t.row(vec![
            field(r, "lcore"),
            field(r, "tid"),
            busy_percent(r),
            yes_no(r, "in_interrupt"),
            threads,
        ]);
    }
    let mut out = String::new();
    if let (Some(pid), Some(rate)) = (u64_field(result, "pid"), u64_field(result, "tick_rate")) {
        out.push_str(&format!("pid {pid}, tick rate {rate} Hz\n"));
    }
    out.push_str(&t.render());
    out
}

fn thread_stats(result: &Value) -> String {
    let Some(list) = items(result, "threads") else {
        return pretty(result);
    };
    let mut t = Table::new(&[
        "NAME",
        "ID",
        "CPUMASK",
        "BUSY%",
        "ACTIVE_POLLERS",
        "TIMED_POLLERS",
    ])
    .right(&[1, 3, 4, 5]);
    for th in list {
        t.row(vec![
            field(th, "name"),
            field(th, "id"),
            field(th, "cpumask"),
            busy_percent(th),
            num_cell(u64_field(th, "active_pollers_count")),
            num_cell(u64_field(th, "timed_pollers_count")),
        ]);
    }
    t.render()
}

fn bdevs(result: &Value) -> String {
    let Some(list) = items(result, "bdevs") else {
        return pretty(result);
    };
    let mut t = Table::new(&[
        "NAME", "DRIVER", "BLOCK", "BLOCKS", "SIZE", "CLAIMED", "UUID",
    ])
    .right(&[2, 3, 4]);
    for b in list {
        let block_size = u64_field(b, "block_size");
        let num_blocks = u64_field(b, "num_blocks");
        let size = match (block_size, num_blocks) {
            (Some(bs), Some(n)) => bs.checked_mul(n).map(format_size),
            _ => None,
        };
        t.row(vec![
            field(b, "name"),
            field(b, "product_name"),
            num_cell(block_size),
            num_cell(num_blocks),
            size.unwrap_or_else(|| MISSING.to_string()),
            yes_no(b, "claimed"),
            field(b, "uuid"),
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

fn iostat(result: &Value) -> String {
    let Some(list) = items(result, "bdevs") else {
        return pretty(result);
    };
    let tick_rate = u64_field(result, "tick_rate");
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
    for b in list {
        let bytes = |key| u64_field(b, key).map_or_else(|| MISSING.to_string(), format_size);
        let read_ops = u64_field(b, "num_read_ops");
        let write_ops = u64_field(b, "num_write_ops");
        t.row(vec![
            field(b, "name"),
            num_cell(read_ops),
            bytes("bytes_read"),
            avg_latency_us(u64_field(b, "read_latency_ticks"), read_ops, tick_rate),
            num_cell(write_ops),
            bytes("bytes_written"),
            avg_latency_us(u64_field(b, "write_latency_ticks"), write_ops, tick_rate),
            num_cell(u64_field(b, "num_unmap_ops")),
        ]);
    }
    t.render()
}

/// `vhost_get_controllers`: one row per controller. CONNECTED says whether a front-end (QEMU)
/// is attached, i.e. whether `sessions` is non-empty.
fn vhost_controllers(result: &Value) -> String {
    let Some(list) = items(result, "controllers") else {
        return pretty(result);
    };
    let mut t = Table::new(&[
        "CONTROLLER",
        "BDEV",
        "READONLY",
        "CPUMASK",
        "SOCKET",
        "CONNECTED",
    ]);
    for c in list {
        let block = c
            .get("backend_specific")
            .and_then(|b| b.get("block"))
            .unwrap_or(&Value::Null);
        let connected = match c.get("sessions").and_then(Value::as_array) {
            Some(s) if s.is_empty() => "no".to_string(),
            Some(_) => "yes".to_string(),
            None => MISSING.to_string(),
        };
        t.row(vec![
            field(c, "ctrlr"),
            field(block, "bdev"),
            yes_no(block, "readonly"),
            field(c, "cpumask"),
            field(c, "socket"),
            connected,
        ]);
    }
    t.render()
}

/// The number of items in the array at `key`, or `-`.
fn count(v: &Value, key: &str) -> String {
    v.get(key)
        .and_then(Value::as_array)
        .map_or_else(|| MISSING.to_string(), |a| a.len().to_string())
}

/// `blocks * block_size` as a human size, or `-` if either is unknown.
fn blocks_size(blocks: Option<u64>, block_size: Option<u64>) -> String {
    blocks
        .zip(block_size)
        .and_then(|(n, bs)| n.checked_mul(bs))
        .map_or_else(|| MISSING.to_string(), format_size)
}

/// `dg_list`: one row per disk group.
fn disk_groups(result: &Value) -> String {
    let Some(list) = result.as_array() else {
        return pretty(result);
    };
    let mut t = Table::new(&["NAME", "DISKS", "VOLUMES", "FREE", "SEQ", "ID"]).right(&[1, 2, 3, 4]);
    for g in list {
        t.row(vec![
            field(g, "name"),
            count(g, "disks"),
            count(g, "volumes"),
            blocks_size(u64_field(g, "free_blocks"), u64_field(g, "block_size")),
            field(g, "seq"),
            field(g, "id"),
        ]);
    }
    t.render()
}

/// Block size by disk group, from a `dg_list` reply.
fn group_block_sizes(dg_list: Option<&Value>) -> HashMap<String, u64> {
    dg_list
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|g| {
            let name = g.get("name")?.as_str()?;
            Some((name.to_string(), u64_field(g, "block_size")?))
        })
        .collect()
}

/// Block size by (disk group, volume), from a `volume_list` reply.
fn volume_block_sizes(volume_list: Option<&Value>) -> HashMap<(String, String), u64> {
    volume_list
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|v| {
            let dg = v.get("dg")?.as_str()?;
            let name = v.get("name")?.as_str()?;
            Some((
                (dg.to_string(), name.to_string()),
                u64_field(v, "block_size")?,
            ))
        })
        .collect()
}

/// `disk_list`: one row per disk; sizes need the group's block size (from `dg_list`).
fn disks(result: &Value, block_sizes: &HashMap<String, u64>) -> String {
    let Some(list) = result.as_array() else {
        return pretty(result);
    };
    let mut t =
        Table::new(&["DG", "NAME", "DEVICE", "CONDITION", "SIZE", "FREE", "FLAGS"]).right(&[4, 5]);
    for d in list {
        let bs = d
            .get("dg")
            .and_then(Value::as_str)
            .and_then(|g| block_sizes.get(g).copied());
        let flags: Vec<&str> = [("spare", "spare"), ("nohotuse", "nohotuse")]
            .into_iter()
            .filter(|(key, _)| d.get(*key).and_then(Value::as_bool) == Some(true))
            .map(|(_, name)| name)
            .collect();
        t.row(vec![
            field(d, "dg"),
            field(d, "name"),
            field(d, "device"),
            field(d, "condition"),
            blocks_size(u64_field(d, "public_blocks"), bs),
            blocks_size(u64_field(d, "free_blocks"), bs),
            if flags.is_empty() {
                MISSING.to_string()
            } else {
                flags.join(",")
            },
        ]);
    }
    t.render()
}

/// `volume_list`: one row per volume.
fn volumes(result: &Value) -> String {
    let Some(list) = result.as_array() else {
        return pretty(result);
    };
    let mut t = Table::new(&[
        "VOLUME", "SIZE", "LAYOUT", "STATE", "KSTATE", "PLEXES", "STARTED",
    ])
    .right(&[1, 5]);
    for v in list {
        let size = u64_field(v, "size_bytes")
            .or_else(|| u64_field(v, "num_blocks")?.checked_mul(u64_field(v, "block_size")?));
        t.row(vec![
            format!("{}/{}", field(v, "dg"), field(v, "name")),
            size.map_or_else(|| MISSING.to_string(), format_size),
            field(v, "layout"),
            field(v, "state"),
            field(v, "kstate"),
            count(v, "plexes"),
            yes_no(v, "started"),
        ]);
    }
    t.render()
}

/// `volume_resize`: `dg01/vol01: 16 MiB (32768 blocks)`, the name and block size taken from
/// the `volume_list` lookup; without it, only the block count.
fn resized(result: &Value, lookup: Option<&Value>) -> String {
    let Some(blocks) = u64_field(result, "num_blocks") else {
        return pretty(result);
    };
    let volume = lookup
        .and_then(Value::as_array)
        .and_then(|list| list.first());
    let size = volume
        .and_then(|v| u64_field(v, "block_size"))
        .and_then(|bs| blocks.checked_mul(bs));
    match (volume, size) {
        (Some(v), Some(bytes)) => format!(
            "{}/{}: {} ({blocks} blocks)\n",
            field(v, "dg"),
            field(v, "name"),
            format_size(bytes)
        ),
        _ => format!("{blocks} blocks\n"),
    }
}

/// The block size of a task's volume, if `block_sizes` knows it.
fn task_block_size(task: &Value, block_sizes: &HashMap<(String, String), u64>) -> Option<u64> {
    let dg = task.get("dg")?.as_str()?;
    let vol = task.get("volume")?.as_str()?;
    block_sizes.get(&(dg.to_string(), vol.to_string())).copied()
}

/// `task_list`: one row per task; RATE and ETA only while it runs.
fn tasks(result: &Value, block_sizes: &HashMap<(String, String), u64>) -> String {
    let Some(list) = result.as_array() else {
        return pretty(result);
    };
    let mut t = Table::new(&[
        "ID", "KIND", "VOLUME", "PLEX", "STATE", "PROGRESS", "RATE", "ETA",
    ])
    .right(&[0, 5, 6, 7]);
    for task in list {
        let running = task.get("state").and_then(Value::as_str) == Some("running");
        let (rate, eta) = if running {
            (
                task_rate(task, task_block_size(task, block_sizes)),
                task_eta(task),
            )
        } else {
            (MISSING.to_string(), MISSING.to_string())
        };
        t.row(vec![
            field(task, "id"),
            field(task, "kind"),
            format!("{}/{}", field(task, "dg"), field(task, "volume")),
            field(task, "plex"),
            field(task, "state"),
            task_percent(task),
            rate,
            eta,
        ]);
    }
    t.render()
}

fn task_percent(task: &Value) -> String {
    task.get("percent")
        .and_then(Value::as_f64)
        .map_or_else(|| MISSING.to_string(), |p| format!("{p:.1}%"))
}

/// The copy rate in bytes per second when the block size is known, else in blocks per second.
fn task_rate(task: &Value, block_size: Option<u64>) -> String {
    let Some(blocks) = u64_field(task, "rate_blocks_per_sec") else {
        return MISSING.to_string();
    };
    match block_size.and_then(|bs| blocks.checked_mul(bs)) {
        Some(bytes) => format_rate(bytes),
        None => format!("{blocks} blocks/s"),
    }
}

fn task_eta(task: &Value) -> String {
    u64_field(task, "eta_secs").map_or_else(|| MISSING.to_string(), format_duration)
}

/// Seconds as `8s`, `2m05s` or `1h02m`.
pub fn format_duration(secs: u64) -> String {
    match secs {
        0..60 => format!("{secs}s"),
        60..3600 => format!("{}m{:02}s", secs / 60, secs % 60),
        _ => format!("{}h{:02}m", secs / 3600, secs % 3600 / 60),
    }
}

/// Width of the progress bar, in characters between the brackets.
const BAR_WIDTH: usize = 20;

/// One progress line of `task wait`:
/// `task 3 [#########-----------]  45.2%  12.3 MiB/s  ETA 8s`.
pub fn progress_line(task: &Value, block_size: Option<u64>) -> String {
    let percent = task.get("percent").and_then(Value::as_f64).unwrap_or(0.0);
    let filled = ((percent.clamp(0.0, 100.0) / 100.0 * BAR_WIDTH as f64) as usize).min(BAR_WIDTH);
    let bar = format!("{}{}", "#".repeat(filled), "-".repeat(BAR_WIDTH - filled));
    let mut line = format!(
        "task {} [{bar}] {:>6}",
        field(task, "id"),
        task_percent(task)
    );
    if task.get("state").and_then(Value::as_str) == Some("running") {
        line.push_str(&format!("  {}", task_rate(task, block_size)));
        if let Some(eta) = u64_field(task, "eta_secs") {
            line.push_str(&format!("  ETA {}", format_duration(eta)));
        }
    } else {
        line.push_str(&format!("  {}", field(task, "state")));
    }
    line
}

/// A task named for messages: `task 3 (plex_attach of dg01/vol01, plex vol01-02)`.
pub fn task_title(task: &Value) -> String {
    let mut s = format!(
        "task {} ({} of {}/{}",
        field(task, "id"),
        field(task, "kind"),
        field(task, "dg"),
        field(task, "volume")
    );
    if let Some(plex) = task.get("plex").and_then(Value::as_str) {
        s.push_str(&format!(", plex {plex}"));
    }
    s.push(')');
    s
}

/// How a finished task ended: `Ok(line)` if it is done, `Err(message)` if it failed or was
/// cancelled (or is in a state this plexctl does not know).
pub fn task_outcome(task: &Value) -> Result<String, String> {
    let title = task_title(task);
    match task.get("state").and_then(Value::as_str) {
        Some("done") => Ok(format!("{title}: done\n")),
        Some("failed") => Err(format!("{title} failed: {}", field(task, "error"))),
        Some("cancelled") => Err(format!("{title} was cancelled")),
        _ => Err(format!("{title} ended in state {}", field(task, "state"))),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn version_and_lists() {
        let v = json!({"version": "plexd v0.1.0", "fields": {"major": 0}});
        assert_eq!(render(Output::Version, &v), "plexd v0.1.0\n");
        assert_eq!(
            render(Output::Version, &json!({"x": 1})),
            "{\n  \"x\": 1\n}\n"
        );
        assert_eq!(render(Output::Lines, &json!(["a", "b"])), "a\nb\n");
    }

    #[test]
    fn create_and_delete_results() {
        assert_eq!(render(Output::Name, &json!("Malloc0")), "Malloc0\n");
        assert_eq!(render(Output::Silent, &json!(true)), "");
        assert_eq!(
            render(Output::Silent, &json!({"a": 1})),
            "{\n  \"a\": 1\n}\n"
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

    #[test]
    fn reactors_and_threads() {
        let reply = json!({"tick_rate": 2_400_000_000u64, "pid": 42, "reactors": [
            {"lcore": 0, "tid": 100, "busy": 25, "idle": 75, "in_interrupt": false,
             "lw_threads": [{"name": "app_thread", "id": 1}, {"name": "nvmf", "id": 2}]}
        ]});
        assert_eq!(
            render(Output::Reactors, &reply),
            "pid 42, tick rate 2400000000 Hz\n\
             LCORE  TID  BUSY%  INTERRUPT  THREADS\n    \
             0  100   25.0  no         app_thread,nvmf\n"
        );
        let stats = json!({"tick_rate": 1, "threads": [
            {"name": "app_thread", "id": 1, "cpumask": "1", "busy": 0, "idle": 0,
             "active_pollers_count": 3, "timed_pollers_count": 1}
        ]});
        assert_eq!(
            render(Output::ThreadStats, &stats),
            "NAME        ID  CPUMASK  BUSY%  ACTIVE_POLLERS  TIMED_POLLERS\n\
             app_thread   1  1            -               3              1\n"
        );
    }

    #[test]
    fn subsystems_table() {
        let reply = json!([
            {"subsystem": "bdev", "depends_on": []},
            {"subsystem": "vhost_blk", "depends_on": ["bdev", "scheduler"]}
        ]);
        assert_eq!(
            render(Output::Subsystems, &reply),
            "SUBSYSTEM  DEPENDS_ON\nbdev       -\nvhost_blk  bdev,scheduler\n"
        );
    }

    #[test]
    fn vhost_controller_table() {
        let reply = json!([
            {"ctrlr": "vhost.0", "cpumask": "0x3", "delay_base_us": 0, "iops_threshold": 60000,
             "socket": "/var/tmp/vhost.0",
             "sessions": [{"vid": 0, "id": 0, "name": "vhost.0s0", "started": true}],
             "backend_specific": {"block": {"readonly": false, "bdev": "Malloc0"}}},
            {"ctrlr": "ro", "cpumask": "0x1", "socket": "/run/plexd/ro", "sessions": [],
             "backend_specific": {"block": {"readonly": true, "bdev": "U0"}}}
        ]);
        assert_eq!(
            render(Output::VhostControllers, &reply),
            "CONTROLLER  BDEV     READONLY  CPUMASK  SOCKET            CONNECTED\n\
             vhost.0     Malloc0  no        0x3      /var/tmp/vhost.0  yes\n\
             ro          U0       yes       0x1      /run/plexd/ro     no\n"
        );
        assert_eq!(
            render(Output::VhostControllers, &json!([])),
            "CONTROLLER  BDEV  READONLY  CPUMASK  SOCKET  CONNECTED\n"
        );
        // A reply without the block part or sessions still renders, with `-`.
        let out = render(Output::VhostControllers, &json!([{"ctrlr": "x"}]));
        let row: Vec<&str> = out
            .lines()
            .nth(1)
            .unwrap_or_default()
            .split_whitespace()
            .collect();
        assert_eq!(row, vec!["x", "-", "-", "-", "-", "-"], "{out}");
    }

    #[test]
    fn disk_group_table() {
        let reply = json!([
            {"name": "dg01", "id": "390e8001-afdb-4789-bf43-ab52e69cb9b6", "seq": 7,
             "block_size": 512, "nconfig": 0, "disks": ["disk01", "disk02", "disk03"],
             "volumes": ["vol01", "vol02"], "free_blocks": 131072}
        ]);
        assert_eq!(
            render(Output::DiskGroups, &reply),
            "NAME  DISKS  VOLUMES    FREE  SEQ  ID\n\
             dg01      3        2  64 MiB    7  390e8001-afdb-4789-bf43-ab52e69cb9b6\n"
        );
    }

    #[test]
    fn disk_table_takes_block_sizes_from_dg_list() {
        let reply = json!([
            {"dg": "dg01", "name": "disk01", "device": "M0", "condition": "OK",
             "spare": false, "nohotuse": false, "public_blocks": 57344, "free_blocks": 36864},
            {"dg": "dg01", "name": "disk03", "device": null, "condition": "NODEVICE",
             "spare": true, "nohotuse": true, "public_blocks": 57344, "free_blocks": 57344}
        ]);
        let groups = json!([{"name": "dg01", "block_size": 512}]);
        assert_eq!(
            render_with(Output::Disks, &reply, Some(&groups)),
            "DG    NAME    DEVICE  CONDITION    SIZE    FREE  FLAGS\n\
             dg01  disk01  M0      OK         28 MiB  18 MiB  -\n\
             dg01  disk03  -       NODEVICE   28 MiB  28 MiB  spare,nohotuse\n"
        );
        // Without the lookup the sizes are unknown.
        let out = render(Output::Disks, &reply);
        let row: Vec<&str> = out
            .lines()
            .nth(1)
            .unwrap_or_default()
            .split_whitespace()
            .collect();
        assert_eq!(
            row,
            vec!["dg01", "disk01", "M0", "OK", "-", "-", "-"],
            "{out}"
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
    fn task_table_and_progress() {
        let running = json!({"id": 4, "kind": "plex_attach", "dg": "dg01", "volume": "vol01",
            "plex": "vol01-04", "state": "running", "error": null, "done_blocks": 7372,
            "total_blocks": 16384, "percent": 45.0, "rate_blocks_per_sec": 25190,
            "eta_secs": 125, "elapsed_secs": 0.3});
        let failed = json!({"id": 2, "kind": "resync", "dg": "dg01", "volume": "vol02",
            "plex": null, "state": "failed", "error": "read failed", "done_blocks": 0,
            "total_blocks": 8, "percent": 0.0, "rate_blocks_per_sec": 0, "eta_secs": null,
            "elapsed_secs": 1.0});
        let reply = json!([failed, running]);
        let volumes = json!([{"dg": "dg01", "name": "vol01", "block_size": 512}]);
        assert_eq!(
            render_with(Output::Tasks, &reply, Some(&volumes)),
            "ID  KIND         VOLUME      PLEX      STATE    PROGRESS        RATE    ETA\n \
              2  resync       dg01/vol02  -         failed       0.0%           -      -\n \
              4  plex_attach  dg01/vol01  vol01-04  running     45.0%  12.3 MiB/s  2m05s\n"
        );
        // Unknown block size: blocks per second.
        assert!(render(Output::Tasks, &reply).contains("25190 blocks/s"));
        assert_eq!(
            progress_line(&running, Some(512)),
            "task 4 [#########-----------]  45.0%  12.3 MiB/s  ETA 2m05s"
        );
        assert_eq!(
            progress_line(&failed, None),
            "task 2 [--------------------]   0.0%  failed"
        );
        assert_eq!(
            task_outcome(&failed),
            Err("task 2 (resync of dg01/vol02) failed: read failed".to_string())
        );
        let mut done = running.clone();
        done["state"] = json!("done");
        assert_eq!(
            task_outcome(&done),
            Ok("task 4 (plex_attach of dg01/vol01, plex vol01-04): done\n".to_string())
        );
        done["state"] = json!("cancelled");
        assert!(task_outcome(&done).unwrap_err().ends_with("was cancelled"));
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

    #[test]
    fn durations() {
        assert_eq!(format_duration(0), "0s");
        assert_eq!(format_duration(59), "59s");
        assert_eq!(format_duration(60), "1m00s");
        assert_eq!(format_duration(3599), "59m59s");
        assert_eq!(format_duration(3600 * 25 + 120), "25h02m");
    }

    #[test]
    fn printed_text_and_started_tasks() {
        assert_eq!(render(Output::Text, &json!("DG NAME\n")), "DG NAME\n");
        assert_eq!(render(Output::Text, &json!("x")), "x\n");
        assert_eq!(
            render(Output::TaskStarted, &json!({"task": 3})),
            "task 3 started; follow it with: plexctl task wait 3\n"
        );
    }

    #[test]
    fn unexpected_shapes_fall_back_to_json() {
        for output in [
            Output::Bdevs,
            Output::Iostat,
            Output::Reactors,
            Output::ThreadStats,
            Output::VhostControllers,
            Output::DiskGroups,
            Output::Disks,
            Output::Volumes,
            Output::Tasks,
            Output::TaskStarted,
            Output::Resized,
        ] {
            assert_eq!(render(output, &json!("odd")), "\"odd\"\n");
        }
        let out = render(Output::Bdevs, &json!([{"name": 5, "block_size": "x"}]));
        let row: Vec<&str> = out
            .lines()
            .nth(1)
            .unwrap_or_default()
            .split_whitespace()
            .collect();
        assert_eq!(row, vec!["5", "-", "-", "-", "-", "-", "-"], "{out}");
    }
}
