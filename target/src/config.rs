//! Loading an SPDK-format JSON config (`plexd --config FILE`): start-up methods first, then
//! `framework_start_init`, then runtime methods in subsystem order. Batches (arrays of
//! entries) are accepted as SPDK writes them with `with_batches`.

use std::path::Path;
use std::sync::Arc;

use plexd_control::RpcState;
use serde_json::Value;

use crate::framework::Framework;

/// A config file that could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file '{path}'")]
    Read {
        /// The file.
        path: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The file is not JSON or lacks `subsystems`.
    #[error("config file '{path}' is not a valid plexd/SPDK config: {reason}")]
    Format {
        /// The file.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// One entry failed.
    #[error("config entry {index} of subsystem '{subsystem}' ({method}) failed: {message}")]
    Entry {
        /// Subsystem name.
        subsystem: String,
        /// Position within the subsystem's config (0-based).
        index: usize,
        /// The method.
        method: String,
        /// The server's message.
        message: String,
    },
}

/// One `{method, params}` with where it came from.
#[derive(Debug, Clone)]
pub struct Entry {
    subsystem: String,
    index: usize,
    method: String,
    params: Option<Value>,
}

/// Reads a config file into its entries, in file order.
pub fn read(path: &Path) -> Result<Vec<Entry>, ConfigError> {
    let p = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: p.clone(),
        source,
    })?;
    parse(&p, &text)
}

/// Parses config text.
pub fn parse(path: &str, text: &str) -> Result<Vec<Entry>, ConfigError> {
    let fmt = |reason: String| ConfigError::Format {
        path: path.to_string(),
        reason,
    };
    let root: Value = serde_json::from_str(text).map_err(|e| fmt(e.to_string()))?;
    let subs = root
        .get("subsystems")
        .and_then(Value::as_array)
        .ok_or_else(|| fmt("the root object needs a \"subsystems\" array".into()))?;
    let mut out = Vec::new();
    for s in subs {
        let name = s
            .get("subsystem")
            .and_then(Value::as_str)
            .ok_or_else(|| fmt("a subsystem lacks its \"subsystem\" name".into()))?;
        let config = match s.get("config") {
            None | Some(Value::Null) => continue,
            Some(Value::Array(a)) => a,
            Some(_) => {
                return Err(fmt(format!(
                    "subsystem '{name}': \"config\" must be an array"
                )))
            }
        };
        let mut index = 0;
        for item in config {
            let items: Vec<&Value> = match item {
                Value::Array(batch) => batch.iter().collect(),
                other => vec![other],
            };
            for e in items {
                let method = e.get("method").and_then(Value::as_str).ok_or_else(|| {
                    fmt(format!(
                        "subsystem '{name}' entry {index} has no \"method\" string"
                    ))
                })?;
                out.push(Entry {
                    subsystem: name.to_string(),
                    index,
                    method: method.to_string(),
                    params: e.get("params").cloned(),
                });
                index += 1;
            }
        }
    }
    Ok(out)
}

fn run(fw: &Framework, e: &Entry, ignore_errors: bool) -> Result<(), ConfigError> {
    match fw.dispatch(&e.method, e.params.clone()) {
        Ok(_) => Ok(()),
        Err(err) => {
            let ce = ConfigError::Entry {
                subsystem: e.subsystem.clone(),
                index: e.index,
                method: e.method.clone(),
                message: err.message,
            };
            if ignore_errors {
                tracing::warn!("{ce} (ignored: --ignore-config-errors)");
                Ok(())
            } else {
                Err(ce)
            }
        }
    }
}

/// Applies `entries`: start-up methods now; runtime methods now if the framework is (or,
/// without `wait_for_rpc`, is then put) in the runtime state, else when
/// `framework_start_init` arrives.
pub fn apply(
    fw: &Arc<Framework>,
    entries: Vec<Entry>,
    wait_for_rpc: bool,
    ignore_errors: bool,
) -> Result<(), ConfigError> {
    let (startup, runtime): (Vec<Entry>, Vec<Entry>) = entries
        .into_iter()
        .filter(|e| e.method != "framework_start_init")
        .partition(|e| fw.is_startup_only(&e.method));
    for e in &startup {
        run(fw, e, ignore_errors)?;
    }
    if wait_for_rpc && fw.state() == RpcState::Startup {
        let f = Arc::downgrade(fw);
        fw.on_init(move || {
            let Some(fw) = f.upgrade() else { return Ok(()) };
            if let Err(err) = run_in_order(&fw, &runtime, ignore_errors) {
                let msg = err.to_string();
                fw.fail_fatally(msg.clone());
                return Err(plexd_control::RpcError::internal(msg));
            }
            Ok(())
        });
        return Ok(());
    }
    if fw.state() == RpcState::Startup {
        let _ = fw.start_init();
    }
    run_in_order(fw, &runtime, ignore_errors)
}

/// Runs entries in file order, telling the framework when each subsystem's entries are done.
fn run_in_order(fw: &Framework, entries: &[Entry], ignore_errors: bool) -> Result<(), ConfigError> {
    let mut current: Option<&str> = None;
    for e in entries {
        if let Some(prev) = current.filter(|p| *p != e.subsystem) {
            fw.subsystem_loaded(prev);
        }
        current = Some(&e.subsystem);
        run(fw, e, ignore_errors)?;
    }
    if let Some(last) = current {
        fw.subsystem_loaded(last);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_entries_and_batches() {
        let text = r#"{"subsystems": [
            {"subsystem": "bdev", "config": [
                {"method": "bdev_malloc_create", "params": {"name": "M0"}},
                [{"method": "bdev_null_create"}, {"method": "bdev_null_create"}]
            ]},
            {"subsystem": "empty", "config": null}
        ], "extra": 1}"#;
        let e = parse("x", text).unwrap();
        assert_eq!(e.len(), 3);
        assert_eq!(e[0].method, "bdev_malloc_create");
        assert_eq!(e[2].index, 2);
    }

    #[test]
    fn rejects_garbage() {
        assert!(matches!(parse("x", "{"), Err(ConfigError::Format { .. })));
        assert!(matches!(parse("x", "{}"), Err(ConfigError::Format { .. })));
        let no_method = r#"{"subsystems":[{"subsystem":"bdev","config":[{"params":{}}]}]}"#;
        assert!(matches!(
            parse("x", no_method),
            Err(ConfigError::Format { .. })
        ));
    }
}
