//! The framework's methods (SPDK's names and shapes): version and method list, start-up state,
//! subsystems and their config, reactors and threads, and stopping the daemon.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{Lenient, NoParams, RpcMethod};

method!(
    /// `spdk_get_version`.
    SpdkGetVersion, "spdk_get_version", NoParams, Version
);
method!(
    /// `rpc_get_methods`: the method names, all or those callable now.
    RpcGetMethods, "rpc_get_methods", GetMethodsParams, Vec<String>
);
method!(
    /// `framework_start_init`: leave the start-up state.
    FrameworkStartInit, "framework_start_init", NoParams, bool
);
method!(
    /// `framework_wait_init`: block until initialisation has finished.
    FrameworkWaitInit, "framework_wait_init", NoParams, bool
);
method!(
    /// `framework_get_subsystems`.
    FrameworkGetSubsystems, "framework_get_subsystems", NoParams, Vec<SubsystemInfo>
);
method!(
    /// `framework_get_config`: one subsystem's saved config, `{"method", "params"}` entries.
    FrameworkGetConfig, "framework_get_config", GetConfigParams, Vec<Value>
);
method!(
    /// `framework_get_reactors`.
    FrameworkGetReactors, "framework_get_reactors", NoParams, Reactors
);
method!(
    /// `thread_get_stats`.
    ThreadGetStats, "thread_get_stats", NoParams, ThreadStats
);
method!(
    /// `spdk_kill_instance`: deliver a signal to the daemon.
    SpdkKillInstance, "spdk_kill_instance", KillParams, bool
);
method!(
    /// `bdev_wait_for_examine`: plexd examines synchronously, so this answers at once.
    BdevWaitForExamine, "bdev_wait_for_examine", NoParams, bool
);
method!(
    /// `bdev_set_options`: accepted with any params for SPDK configs; plexd sizes its pools
    /// itself.
    BdevSetOptions, "bdev_set_options", Value, bool
);

/// The `spdk_get_version` result.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Version {
    /// `plexd vX.Y.Z`.
    pub version: Lenient<String>,
    /// The version's parts.
    pub fields: VersionFields,
}

/// The parts of a version.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct VersionFields {
    /// Major version.
    pub major: u64,
    /// Minor version.
    pub minor: u64,
    /// Patch level.
    pub patch: u64,
    /// Pre-release suffix (empty).
    pub suffix: String,
}

/// Params of `rpc_get_methods`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GetMethodsParams {
    /// Only the methods callable in the current state.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub current: Option<bool>,
    /// Accepted and ignored (plexd has no aliases).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub include_aliases: Option<bool>,
}

/// Params of `framework_get_config`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GetConfigParams {
    /// The subsystem.
    pub name: String,
    /// Accepted and ignored.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub with_batches: Option<bool>,
}

/// Params of `spdk_kill_instance`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KillParams {
    /// SIGTERM (default), SIGINT, SIGQUIT or SIGKILL; the SIG prefix is optional.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sig_name: Option<String>,
}

/// One subsystem as `framework_get_subsystems` lists it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SubsystemInfo {
    /// Its name.
    pub subsystem: Lenient<String>,
    /// Subsystems whose config must load first.
    pub depends_on: Vec<String>,
}

/// The `framework_get_reactors` result.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Reactors {
    /// TSC ticks per second.
    pub tick_rate: Lenient<u64>,
    /// The daemon's pid.
    pub pid: Lenient<u64>,
    /// `busy`, `adaptive` or `interrupt`.
    pub poll_mode: String,
    /// One entry per reactor.
    pub reactors: Vec<ReactorInfo>,
}

/// One reactor (core).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ReactorInfo {
    /// The core it runs on.
    pub lcore: Lenient<u32>,
    /// Its thread id.
    pub tid: Lenient<i64>,
    /// Ticks spent doing work.
    pub busy: Lenient<u64>,
    /// Ticks spent idle.
    pub idle: Lenient<u64>,
    /// Whether it sleeps on an eventfd rather than polling.
    pub in_interrupt: Lenient<bool>,
    /// Always 0.
    pub irq_counter: u64,
    /// Always 0.
    pub sys_stat: u64,
    /// Always 0.
    pub usr_stat: u64,
    /// The lightweight threads on it (one per reactor in plexd).
    pub lw_threads: Vec<LwThread>,
}

/// A lightweight thread on a reactor.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct LwThread {
    /// `reactor_<core>`.
    pub name: Lenient<String>,
    /// Thread id (reactor index + 1).
    pub id: u64,
    /// Its core as a hex mask.
    pub cpumask: String,
    /// Ticks since it started.
    pub elapsed: u64,
}

/// The `thread_get_stats` result.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ThreadStats {
    /// TSC ticks per second.
    pub tick_rate: u64,
    /// One entry per thread.
    pub threads: Vec<ThreadStat>,
}

/// Statistics of one lightweight thread.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ThreadStat {
    /// `reactor_<core>`.
    pub name: Lenient<String>,
    /// Thread id.
    pub id: Lenient<u64>,
    /// Its core as a hex mask.
    pub cpumask: Lenient<String>,
    /// Ticks spent doing work.
    pub busy: Lenient<u64>,
    /// Ticks spent idle.
    pub idle: Lenient<u64>,
    /// Pollers run on every iteration.
    pub active_pollers_count: Lenient<u64>,
    /// Pollers run on a timer.
    pub timed_pollers_count: Lenient<u64>,
    /// Always 0.
    pub paused_pollers_count: u64,
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::api::golden::assert_shape;

    #[test]
    fn version_shape() {
        assert_shape(
            &Version {
                version: "plexd v0.1.0".into(),
                fields: VersionFields {
                    major: 0,
                    minor: 1,
                    patch: 0,
                    suffix: String::new(),
                },
            },
            json!({"version": "plexd v0.1.0",
                "fields": {"major": 0, "minor": 1, "patch": 0, "suffix": ""}}),
        );
    }

    #[test]
    fn reactors_and_threads_shapes() {
        let r = Reactors {
            tick_rate: 2_400_000_000.into(),
            pid: 42.into(),
            poll_mode: "busy".into(),
            reactors: vec![ReactorInfo {
                lcore: 1.into(),
                tid: 100.into(),
                busy: 25.into(),
                idle: 75.into(),
                in_interrupt: false.into(),
                lw_threads: vec![LwThread {
                    name: "reactor_1".into(),
                    id: 1,
                    cpumask: "2".into(),
                    elapsed: 100,
                }],
                ..Default::default()
            }],
        };
        assert_shape(
            &r,
            json!({"tick_rate": 2_400_000_000u64, "pid": 42, "poll_mode": "busy",
                "reactors": [{"lcore": 1, "tid": 100, "busy": 25, "idle": 75,
                    "in_interrupt": false, "irq_counter": 0, "sys_stat": 0, "usr_stat": 0,
                    "lw_threads": [{"name": "reactor_1", "id": 1, "cpumask": "2",
                        "elapsed": 100}]}]}),
        );
        let t = ThreadStats {
            tick_rate: 1,
            threads: vec![ThreadStat {
                name: "reactor_0".into(),
                id: 1.into(),
                cpumask: "1".into(),
                busy: 2.into(),
                idle: 3.into(),
                active_pollers_count: 4.into(),
                timed_pollers_count: 5.into(),
                paused_pollers_count: 0,
            }],
        };
        assert_shape(
            &t,
            json!({"tick_rate": 1, "threads": [{"name": "reactor_0", "id": 1, "cpumask": "1",
                "busy": 2, "idle": 3, "active_pollers_count": 4, "timed_pollers_count": 5,
                "paused_pollers_count": 0}]}),
        );
    }

    #[test]
    fn subsystem_and_params_shapes() {
        assert_shape(
            &vec![SubsystemInfo {
                subsystem: "vhost_blk".into(),
                depends_on: vec!["bdev".into()],
            }],
            json!([{"subsystem": "vhost_blk", "depends_on": ["bdev"]}]),
        );
        assert_shape(
            &GetMethodsParams {
                current: Some(true),
                include_aliases: None,
            },
            json!({"current": true}),
        );
        assert_shape(
            &GetConfigParams {
                name: "bdev".into(),
                with_batches: None,
            },
            json!({"name": "bdev"}),
        );
        assert_shape(
            &KillParams {
                sig_name: Some("SIGTERM".into()),
            },
            json!({"sig_name": "SIGTERM"}),
        );
    }
}
