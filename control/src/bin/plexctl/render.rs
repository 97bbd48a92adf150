//! Human output for method results. Replies are read defensively: a missing or mistyped field
//! shows as `-` rather than failing, so a newer daemon's extra or changed fields never break
//! the CLI (and `--json` always shows everything).

use serde_json::Value;

use crate::commands::Output;
use crate::size::format_size;
use crate::table::Table;

/// Shown for a field the reply lacks.
const MISSING: &str = "-";

/// Renders `result` for people; the returned text ends in a newline unless it is empty.
pub fn render(output: Output, result: &Value) -> String {
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
    fn unexpected_shapes_fall_back_to_json() {
        for output in [
            Output::Bdevs,
            Output::Iostat,
            Output::Reactors,
            Output::ThreadStats,
            Output::VhostControllers,
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
