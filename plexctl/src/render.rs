//! Human output for method results. Replies are read defensively: a missing or mistyped field
//! shows as `-` rather than failing, so a newer daemon's extra or changed fields never break
//! the CLI (and `--json` always shows everything). Each noun's module renders its own results
//! with the helpers here; this module picks the renderer for an [`Output`].

use std::fmt::Display;

use plexd_control::api::task::TaskStarted;
use plexd_control::api::Lenient;
use plexd_control::size::format_size;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::Value;

use crate::plan::Output;

/// Shown for a field the reply lacks.
pub(crate) const MISSING: &str = "-";

/// Renders `result` for people; the returned text ends in a newline unless it is empty.
#[cfg(test)]
pub fn render(output: Output, result: &Value) -> String {
    render_with(output, result, None)
}

/// Like `render`, with the result of the request's lookup method (see
/// [`crate::plan::Request::lookup`]) when there is one and it succeeded.
pub fn render_with(output: Output, result: &Value, lookup: Option<&Value>) -> String {
    match output {
        Output::Version => crate::framework::version_line(result),
        Output::Lines => match result.as_array() {
            Some(items) => items.iter().map(|i| format!("{}\n", text(i))).collect(),
            None => pretty(result),
        },
        Output::Subsystems => crate::framework::subsystems(result),
        Output::Reactors => crate::framework::reactors(result),
        Output::ThreadStats => crate::framework::thread_stats(result),
        Output::Bdevs => crate::bdev::bdevs(result),
        Output::Iostat => crate::bdev::iostat(result),
        Output::VhostControllers => crate::vhost::vhost_controllers(result),
        Output::DiskGroups => crate::dg::disk_groups(result),
        Output::Disks => crate::disk::disks(result, &crate::dg::group_block_sizes(lookup)),
        Output::Volumes => crate::volume::volumes(result),
        Output::Tasks => crate::task::tasks(result, &crate::volume::volume_block_sizes(lookup)),
        Output::TaskStarted => match TaskStarted::deserialize(result).map(|t| t.task.copied()) {
            Ok(Some(id)) => format!("task {id} started; follow it with: plexctl task wait {id}\n"),
            _ => pretty(result),
        },
        Output::Resized => crate::volume::resized(result, lookup),
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
pub(crate) fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => MISSING.to_string(),
        other => other.to_string(),
    }
}

/// A [`Lenient`] field as a cell: the value, or the unexpected JSON as text, or `-`.
pub(crate) fn cell<T: Display>(v: &Lenient<T>) -> String {
    match v {
        Lenient::Value(v) => v.to_string(),
        Lenient::Unexpected(v) => text(v),
        Lenient::Missing => MISSING.to_string(),
    }
}

/// A nullable [`Lenient`] field as a cell: the value, or `-` when it is `null` or absent.
pub(crate) fn opt_cell<T: Display>(v: &Lenient<Option<T>>) -> String {
    match v {
        Lenient::Value(Some(v)) => v.to_string(),
        Lenient::Value(None) | Lenient::Missing => MISSING.to_string(),
        Lenient::Unexpected(v) => text(v),
    }
}

/// The length of a [`Lenient`] list as a cell, or `-`.
pub(crate) fn len_cell<T>(v: &Lenient<Vec<T>>) -> String {
    match v {
        Lenient::Value(list) => list.len().to_string(),
        Lenient::Unexpected(Value::Array(list)) => list.len().to_string(),
        _ => MISSING.to_string(),
    }
}

/// A boolean [`Lenient`] field as `yes` / `no`, or `-`.
pub(crate) fn yes_no(v: &Lenient<bool>) -> String {
    match v.get() {
        Some(true) => "yes".to_string(),
        Some(false) => "no".to_string(),
        None => MISSING.to_string(),
    }
}

/// A number as a cell, or `-`.
pub(crate) fn num_cell(n: Option<u64>) -> String {
    n.map_or_else(|| MISSING.to_string(), |n| n.to_string())
}

/// The rows of a reply that is a list of `T` (or an object holding it at `key`), if it is one.
pub(crate) fn rows<T: DeserializeOwned>(result: &Value, key: &str) -> Option<Vec<T>> {
    let list = items(result, key)?;
    list.iter().map(|row| T::deserialize(row).ok()).collect()
}

/// The array at `key` of an object reply (or the reply itself if it is an array).
pub(crate) fn items<'a>(result: &'a Value, key: &str) -> Option<&'a Vec<Value>> {
    result
        .as_array()
        .or_else(|| result.get(key).and_then(Value::as_array))
}

/// `blocks * block_size` as a human size, or `-` if either is unknown.
pub(crate) fn blocks_size(blocks: Option<u64>, block_size: Option<u64>) -> String {
    blocks
        .zip(block_size)
        .and_then(|(n, bs)| n.checked_mul(bs))
        .map_or_else(|| MISSING.to_string(), format_size)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::plan::Output;

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
