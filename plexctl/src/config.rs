//! `save-config` and `load-config`: SPDK's client-side `save_config` / `load_config`
//! (`scripts/rpc/client.py`), built on plain method calls so a config saved by SPDK loads into
//! plexd and the other way round.
//!
//! The format is `{"subsystems": [{"subsystem": NAME, "config": [{"method", "params"}, ...]}]}`.

use plexd_control::api::framework::{
    FrameworkGetConfig, FrameworkGetSubsystems, FrameworkStartInit, FrameworkWaitInit,
    GetConfigParams, GetMethodsParams, RpcGetMethods,
};
use plexd_control::api::{params_value, NoParams, RpcMethod};
use serde_json::{json, Value};

/// Something that can make JSON-RPC calls: the real client, or a stand-in in tests.
pub trait Rpc {
    /// The error a call can fail with.
    type Error;
    /// Calls `method` with `params` and returns the result.
    fn call(&mut self, method: &str, params: Option<Value>) -> Result<Value, Self::Error>;
}

/// Why saving or loading a config failed.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError<E> {
    /// A call failed; `method` says which.
    #[error("{method}: {source}")]
    Call {
        /// The method that failed.
        method: String,
        /// The client's error.
        source: E,
    },
    /// The config file or a reply does not have the expected shape.
    #[error("invalid config: {0}")]
    Malformed(String),
    /// The config names a method the daemon does not have.
    #[error("the config calls {0}, which this daemon does not know")]
    UnknownMethod(String),
    /// Entries are left that can be run in no state.
    #[error("the config has entries that cannot run in the current state: {0}")]
    Stuck(String),
}

fn call<R: Rpc>(
    rpc: &mut R,
    method: &str,
    params: Option<Value>,
) -> Result<Value, ConfigError<R::Error>> {
    rpc.call(method, params)
        .map_err(|source| ConfigError::Call {
            method: method.to_string(),
            source,
        })
}

/// Calls the typed method `M`; the result is read here, defensively, as plain JSON.
fn invoke<M: RpcMethod, R: Rpc>(
    rpc: &mut R,
    params: &M::Params,
) -> Result<Value, ConfigError<R::Error>> {
    call(rpc, M::METHOD, params_value(params))
}

/// `rpc_get_methods`, all of them or (`current`) those callable now.
fn get_methods<R: Rpc>(rpc: &mut R, current: bool) -> Result<Value, ConfigError<R::Error>> {
    let params = GetMethodsParams {
        current: current.then_some(true),
        include_aliases: None,
    };
    invoke::<RpcGetMethods, R>(rpc, &params)
}

/// Builds the full config: every subsystem from `framework_get_subsystems` (or only those named
/// in `only`, if not empty) with its `framework_get_config`.
pub fn save_config<R: Rpc>(rpc: &mut R, only: &[String]) -> Result<Value, ConfigError<R::Error>> {
    let reply = invoke::<FrameworkGetSubsystems, R>(rpc, &NoParams {})?;
    let subsystems = reply.as_array().ok_or_else(|| {
        ConfigError::Malformed("framework_get_subsystems did not return an array".into())
    })?;
    let mut out = Vec::with_capacity(subsystems.len());
    for s in subsystems {
        let name = s.get("subsystem").and_then(Value::as_str).ok_or_else(|| {
            ConfigError::Malformed(format!("subsystem entry without a name: {s}"))
        })?;
        if !only.is_empty() && !only.iter().any(|o| o == name) {
            continue;
        }
        let params = GetConfigParams {
            name: name.to_string(),
            with_batches: None,
        };
        let config = invoke::<FrameworkGetConfig, R>(rpc, &params)?;
        out.push(json!({"subsystem": name, "config": config}));
    }
    Ok(json!({"subsystems": out}))
}

/// One `{method, params}` entry of a config.
#[derive(Debug, Clone)]
struct Entry {
    method: String,
    params: Option<Value>,
}

/// Reads the entries of each subsystem, dropping subsystems with no (or null) config.
fn parse_config<E>(config: &Value) -> Result<Vec<Vec<Entry>>, ConfigError<E>> {
    let bad = |what: String| ConfigError::Malformed(what);
    let root = config
        .as_object()
        .ok_or_else(|| bad("the top level must be an object".into()))?;
    let subsystems = match root.get("subsystems") {
        Some(Value::Array(a)) => a,
        Some(_) => return Err(bad("\"subsystems\" must be an array".into())),
        None => return Err(bad("no \"subsystems\" key".into())),
    };
    let mut out = Vec::new();
    for s in subsystems {
        let s = s
            .as_object()
            .ok_or_else(|| bad(format!("subsystem entry is not an object: {s}")))?;
        let entries = match s.get("config") {
            None | Some(Value::Null) => continue,
            Some(Value::Array(a)) => a,
            Some(other) => return Err(bad(format!("\"config\" must be an array, not {other}"))),
        };
        let mut list = Vec::with_capacity(entries.len());
        for e in entries {
            let method = e
                .get("method")
                .and_then(Value::as_str)
                .ok_or_else(|| bad(format!("config entry without a method: {e}")))?;
            let params = match e.get("params") {
                None | Some(Value::Null) => None,
                Some(p) => Some(p.clone()),
            };
            list.push(Entry {
                method: method.to_string(),
                params,
            });
        }
        if !list.is_empty() {
            out.push(list);
        }
    }
    Ok(out)
}

/// The method names an `rpc_get_methods` reply lists.
fn method_names<E>(reply: &Value) -> Result<Vec<String>, ConfigError<E>> {
    reply
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
        .ok_or_else(|| ConfigError::Malformed("rpc_get_methods did not return an array".into()))
}

/// The methods callable in the daemon's present state.
fn current_methods<R: Rpc>(rpc: &mut R) -> Result<Vec<String>, ConfigError<R::Error>> {
    method_names(&get_methods(rpc, true)?)
}

/// `framework_start_init` followed by `framework_wait_init`.
fn start_init<R: Rpc>(rpc: &mut R) -> Result<(), ConfigError<R::Error>> {
    invoke::<FrameworkStartInit, R>(rpc, &NoParams {})?;
    invoke::<FrameworkWaitInit, R>(rpc, &NoParams {})?;
    Ok(())
}

/// Replays `config` the way SPDK's `load_config` does: check every method exists, then in
/// rounds run the entries whose method is callable now (`rpc_get_methods {current: true}`),
/// in file order; while the daemon is in its startup state (`framework_start_init` is listed),
/// start it and go round again for the runtime methods.
pub fn load_config<R: Rpc>(rpc: &mut R, config: &Value) -> Result<(), ConfigError<R::Error>> {
    let mut subsystems = parse_config(config)?;

    if subsystems.is_empty() {
        // Nothing to replay; still leave the startup state, as SPDK does. Unlike SPDK, ask for
        // the current list, so an empty config on a running daemon is a no-op, not an error.
        let current = current_methods(rpc)?;
        if current.iter().any(|m| m == "framework_start_init") {
            start_init(rpc)?;
        }
        return Ok(());
    }
    let known = method_names(&get_methods(rpc, false)?)?;
    if let Some(e) = subsystems
        .iter()
        .flatten()
        .find(|e| !known.contains(&e.method))
    {
        return Err(ConfigError::UnknownMethod(e.method.clone()));
    }

    while !subsystems.is_empty() {
        let current = method_names(&get_methods(rpc, true)?)?;
        let mut progressed = false;
        for entries in &mut subsystems {
            let mut left = Vec::new();
            for e in entries.drain(..) {
                if current.contains(&e.method) {
                    call(rpc, &e.method, e.params)?;
                    progressed = true;
                } else {
                    left.push(e);
                }
            }
            *entries = left;
        }
        subsystems.retain(|entries| !entries.is_empty());
        if current.iter().any(|m| m == "framework_start_init") {
            start_init(rpc)?;
            progressed = true;
        }
        if !progressed {
            break;
        }
    }
    if let Some(e) = subsystems.iter().flatten().next() {
        return Err(ConfigError::Stuck(e.method.clone()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    /// A fake daemon: a startup and a runtime method list, per-subsystem configs, and a log of
    /// the calls it received.
    struct Fake {
        started: bool,
        startup: Vec<&'static str>,
        runtime: Vec<&'static str>,
        configs: BTreeMap<&'static str, Value>,
        log: Vec<(String, Option<Value>)>,
        fail: Option<&'static str>,
    }

    impl Fake {
        fn new(started: bool) -> Self {
            Fake {
                started,
                startup: vec![
                    "rpc_get_methods",
                    "framework_start_init",
                    "framework_wait_init",
                    "iobuf_set_options",
                ],
                runtime: vec![
                    "rpc_get_methods",
                    "framework_wait_init",
                    "framework_get_subsystems",
                    "framework_get_config",
                    "bdev_malloc_create",
                    "vhost_create_blk_controller",
                ],
                configs: BTreeMap::new(),
                log: Vec::new(),
                fail: None,
            }
        }

        fn methods_called(&self) -> Vec<&str> {
            self.log.iter().map(|(m, _)| m.as_str()).collect()
        }
    }

    impl Rpc for Fake {
        type Error = String;

        fn call(&mut self, method: &str, params: Option<Value>) -> Result<Value, String> {
            self.log.push((method.to_string(), params.clone()));
            if self.fail == Some(method) {
                return Err("boom (code -17)".into());
            }
            let current = if self.started {
                &self.runtime
            } else {
                &self.startup
            };
            match method {
                "rpc_get_methods" => {
                    let only_current =
                        params.as_ref().and_then(|p| p.get("current")) == Some(&json!(true));
                    let mut names: Vec<&str> = if only_current {
                        current.clone()
                    } else {
                        self.startup.iter().chain(&self.runtime).copied().collect()
                    };
                    names.sort();
                    names.dedup();
                    Ok(json!(names))
                }
                m if !current.contains(&m) => Err(format!("{m} not allowed now")),
                "framework_start_init" => {
                    self.started = true;
                    Ok(json!(true))
                }
                "framework_get_subsystems" => Ok(json!(self
                    .configs
                    .keys()
                    .map(|k| json!({"subsystem": k, "depends_on": []}))
                    .collect::<Vec<_>>())),
                "framework_get_config" => {
                    let name = params
                        .as_ref()
                        .and_then(|p| p.get("name"))
                        .and_then(Value::as_str)
                        .unwrap_or_default();
                    self.configs
                        .get(name)
                        .cloned()
                        .ok_or_else(|| "no such subsystem".to_string())
                }
                _ => Ok(json!(true)),
            }
        }
    }

    #[test]
    fn save_builds_spdk_format() {
        let mut fake = Fake::new(true);
        fake.configs.insert(
            "bdev",
            json!([{"method": "bdev_malloc_create", "params": {"name": "M0", "num_blocks": 8, "block_size": 512}}]),
        );
        fake.configs.insert("vhost_blk", json!([]));
        let config = save_config(&mut fake, &[]).expect("save");
        assert_eq!(
            config,
            json!({"subsystems": [
                {"subsystem": "bdev", "config": [{"method": "bdev_malloc_create",
                    "params": {"name": "M0", "num_blocks": 8, "block_size": 512}}]},
                {"subsystem": "vhost_blk", "config": []}
            ]})
        );
        assert_eq!(
            fake.log[1],
            (
                "framework_get_config".to_string(),
                Some(json!({"name": "bdev"}))
            )
        );

        let only = save_config(&mut fake, &["vhost_blk".to_string()]).expect("save");
        assert_eq!(
            only,
            json!({"subsystems": [{"subsystem": "vhost_blk", "config": []}]})
        );
    }

    #[test]
    fn load_runs_startup_then_init_then_runtime() {
        let mut fake = Fake::new(false);
        let config = json!({"subsystems": [
            {"subsystem": "bdev", "config": [
                {"method": "bdev_malloc_create", "params": {"name": "M0"}},
                {"method": "iobuf_set_options", "params": {"small_pool_count": 1}}]},
            {"subsystem": "scheduler", "config": null},
            {"subsystem": "vhost_blk", "config": [
                {"method": "vhost_create_blk_controller", "params": {"ctrlr": "v0", "dev_name": "M0"}}]}
        ], "extra_root_key": 1});
        load_config(&mut fake, &config).expect("load");
        assert_eq!(
            fake.methods_called(),
            vec![
                "rpc_get_methods",
                "rpc_get_methods",
                "iobuf_set_options",
                "framework_start_init",
                "framework_wait_init",
                "rpc_get_methods",
                "bdev_malloc_create",
                "vhost_create_blk_controller",
            ]
        );
        assert_eq!(fake.log[1].1, Some(json!({"current": true})));
        assert_eq!(fake.log[6].1, Some(json!({"name": "M0"})));
    }

    #[test]
    fn load_into_running_daemon_skips_init() {
        let mut fake = Fake::new(true);
        let config = json!({"subsystems": [{"subsystem": "bdev", "config": [
            {"method": "bdev_malloc_create", "params": {"name": "M0"}}]}]});
        load_config(&mut fake, &config).expect("load");
        assert_eq!(
            fake.methods_called(),
            vec!["rpc_get_methods", "rpc_get_methods", "bdev_malloc_create"]
        );
    }

    #[test]
    fn empty_config_just_starts_the_framework() {
        let mut fake = Fake::new(false);
        load_config(
            &mut fake,
            &json!({"subsystems": [{"subsystem": "bdev", "config": []}]}),
        )
        .expect("load");
        assert_eq!(
            fake.methods_called(),
            vec![
                "rpc_get_methods",
                "framework_start_init",
                "framework_wait_init"
            ]
        );
        let mut running = Fake::new(true);
        load_config(&mut running, &json!({"subsystems": []})).expect("load");
        assert_eq!(running.methods_called(), vec!["rpc_get_methods"]);
    }

    #[test]
    fn unknown_method_is_refused_before_anything_runs() {
        let mut fake = Fake::new(true);
        let config = json!({"subsystems": [{"subsystem": "bdev", "config": [
            {"method": "bdev_malloc_create", "params": {}},
            {"method": "bdev_nvme_attach_controller", "params": {}}]}]});
        match load_config(&mut fake, &config) {
            Err(ConfigError::UnknownMethod(m)) => assert_eq!(m, "bdev_nvme_attach_controller"),
            other => panic!("unexpected {other:?}"),
        }
        assert_eq!(fake.methods_called(), vec!["rpc_get_methods"]);
    }

    #[test]
    fn startup_only_method_on_running_daemon_is_stuck() {
        let mut fake = Fake::new(true);
        let config = json!({"subsystems": [{"subsystem": "iobuf", "config": [
            {"method": "iobuf_set_options", "params": {}}]}]});
        match load_config(&mut fake, &config) {
            Err(ConfigError::Stuck(m)) => assert_eq!(m, "iobuf_set_options"),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn failing_call_names_the_method() {
        let mut fake = Fake::new(true);
        fake.fail = Some("bdev_malloc_create");
        let config = json!({"subsystems": [{"subsystem": "bdev", "config": [
            {"method": "bdev_malloc_create", "params": {"name": "M0"}}]}]});
        let err = load_config(&mut fake, &config).expect_err("must fail");
        assert_eq!(err.to_string(), "bdev_malloc_create: boom (code -17)");
    }

    #[test]
    fn malformed_configs() {
        let mut fake = Fake::new(true);
        for bad in [
            json!([]),
            json!({}),
            json!({"subsystems": {}}),
            json!({"subsystems": [1]}),
            json!({"subsystems": [{"subsystem": "bdev", "config": {}}]}),
            json!({"subsystems": [{"subsystem": "bdev", "config": [{"params": {}}]}]}),
        ] {
            match load_config(&mut fake, &bad) {
                Err(ConfigError::Malformed(_)) => {}
                other => panic!("{bad}: unexpected {other:?}"),
            }
        }
        assert!(fake.log.is_empty());
    }
}
