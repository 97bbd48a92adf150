//! `plexctl framework ...`, `thread ...`, `version`, `methods` and `kill`: the framework's
//! state, reactors and threads, and the daemon itself.

use clap::Subcommand;
use plexd_control::api::framework::{
    FrameworkGetConfig, FrameworkGetReactors, FrameworkGetSubsystems, FrameworkStartInit,
    FrameworkWaitInit, GetConfigParams, GetMethodsParams, KillParams, Reactors, RpcGetMethods,
    SpdkGetVersion, SpdkKillInstance, SubsystemInfo, ThreadGetStats, ThreadStats, Version,
};
use plexd_control::api::{Lenient, NoParams};
use serde::Deserialize;
use serde_json::Value;

use crate::plan::{Output, Request};
use crate::render::{cell, num_cell, pretty, rows, yes_no, MISSING};
use crate::table::Table;

/// `plexctl framework ...`
#[derive(Debug, Subcommand)]
pub enum FrameworkCommand {
    /// Leave the startup state and initialise subsystems (framework_start_init).
    StartInit,
    /// Block until initialisation has finished (framework_wait_init).
    WaitInit,
    /// List subsystems and their dependencies (framework_get_subsystems).
    Subsystems,
    /// Print one subsystem's configuration (framework_get_config).
    Config {
        /// The subsystem, e.g. bdev.
        name: String,
    },
    /// Show reactors (cores) and the threads on them (framework_get_reactors).
    Reactors,
}

/// `plexctl thread ...`
#[derive(Debug, Subcommand)]
pub enum ThreadCommand {
    /// Per-thread busy/idle statistics (thread_get_stats).
    Stats,
}

/// `plexctl version`.
pub(crate) fn version() -> Request {
    Request::typed::<SpdkGetVersion>(&NoParams {}, Output::Version)
}

/// `plexctl methods [--current]`.
pub(crate) fn methods(current: bool) -> Request {
    let params = GetMethodsParams {
        current: current.then_some(true),
        include_aliases: None,
    };
    Request::typed::<RpcGetMethods>(&params, Output::Lines)
}

/// `plexctl kill --signal SIGNAL`.
pub(crate) fn kill(signal: &str) -> Request {
    let params = KillParams {
        sig_name: Some(signal.to_string()),
    };
    Request::typed::<SpdkKillInstance>(&params, Output::Silent)
}

/// `plexctl framework ...`.
pub(crate) fn plan(command: &FrameworkCommand) -> Request {
    match command {
        FrameworkCommand::StartInit => {
            Request::typed::<FrameworkStartInit>(&NoParams {}, Output::Silent)
        }
        FrameworkCommand::WaitInit => {
            Request::typed::<FrameworkWaitInit>(&NoParams {}, Output::Silent)
        }
        FrameworkCommand::Subsystems => {
            Request::typed::<FrameworkGetSubsystems>(&NoParams {}, Output::Subsystems)
        }
        FrameworkCommand::Config { name } => Request::typed::<FrameworkGetConfig>(
            &GetConfigParams {
                name: name.clone(),
                with_batches: None,
            },
            Output::Json,
        ),
        FrameworkCommand::Reactors => {
            Request::typed::<FrameworkGetReactors>(&NoParams {}, Output::Reactors)
        }
    }
}

/// `plexctl thread ...`.
pub(crate) fn thread(command: &ThreadCommand) -> Request {
    match command {
        ThreadCommand::Stats => Request::typed::<ThreadGetStats>(&NoParams {}, Output::ThreadStats),
    }
}

/// `spdk_get_version`: the version string.
pub(crate) fn version_line(result: &Value) -> String {
    match Version::deserialize(result)
        .ok()
        .and_then(|v| v.version.get().cloned())
    {
        Some(v) => format!("{v}\n"),
        None => pretty(result),
    }
}

/// `busy / (busy + idle)` as a percentage with one decimal.
fn busy_percent(busy: &Lenient<u64>, idle: &Lenient<u64>) -> String {
    match (busy.copied(), idle.copied()) {
        (Some(busy), Some(idle)) if busy.saturating_add(idle) > 0 => {
            let total = busy as f64 + idle as f64;
            format!("{:.1}", busy as f64 * 100.0 / total)
        }
        _ => MISSING.to_string(),
    }
}

/// `framework_get_subsystems`: one row per subsystem.
pub(crate) fn subsystems(result: &Value) -> String {
    let Some(list) = rows::<SubsystemInfo>(result, "subsystems") else {
        return pretty(result);
    };
    let mut t = Table::new(&["SUBSYSTEM", "DEPENDS_ON"]);
    for s in list {
        let deps = if s.depends_on.is_empty() {
            MISSING.to_string()
        } else {
            s.depends_on.join(",")
        };
        t.row(vec![cell(&s.subsystem), deps]);
    }
    t.render()
}

/// `framework_get_reactors`: one row per reactor, under the pid and tick rate.
pub(crate) fn reactors(result: &Value) -> String {
    let Ok(reply) = Reactors::deserialize(result) else {
        return pretty(result);
    };
    let mut t = Table::new(&["LCORE", "TID", "BUSY%", "INTERRUPT", "THREADS"]).right(&[0, 1, 2]);
    for r in &reply.reactors {
        let threads = r
            .lw_threads
            .iter()
            .map(|t| cell(&t.name))
            .collect::<Vec<_>>()
            .join(",");
        t.row(vec![
            cell(&r.lcore),
            cell(&r.tid),
            busy_percent(&r.busy, &r.idle),
            yes_no(&r.in_interrupt),
            if threads.is_empty() {
                MISSING.to_string()
            } else {
                threads
            },
        ]);
    }
    let mut out = String::new();
    if let (Some(pid), Some(rate)) = (reply.pid.copied(), reply.tick_rate.copied()) {
        out.push_str(&format!("pid {pid}, tick rate {rate} Hz\n"));
    }
    out.push_str(&t.render());
    out
}

/// `thread_get_stats`: one row per lightweight thread.
pub(crate) fn thread_stats(result: &Value) -> String {
    let Ok(reply) = ThreadStats::deserialize(result) else {
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
    for th in &reply.threads {
        t.row(vec![
            cell(&th.name),
            cell(&th.id),
            cell(&th.cpumask),
            busy_percent(&th.busy, &th.idle),
            num_cell(th.active_pollers_count.copied()),
            num_cell(th.timed_pollers_count.copied()),
        ]);
    }
    t.render()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use crate::plan::testing::check;
    use crate::plan::Output;
    use crate::render::render;

    #[test]
    fn framework_and_info_commands() {
        check("version", "spdk_get_version", None, Output::Version);
        check("methods", "rpc_get_methods", None, Output::Lines);
        check(
            "methods --current",
            "rpc_get_methods",
            Some(json!({"current": true})),
            Output::Lines,
        );
        check(
            "framework start-init",
            "framework_start_init",
            None,
            Output::Silent,
        );
        check(
            "framework wait-init",
            "framework_wait_init",
            None,
            Output::Silent,
        );
        check(
            "framework subsystems",
            "framework_get_subsystems",
            None,
            Output::Subsystems,
        );
        check(
            "framework config bdev",
            "framework_get_config",
            Some(json!({"name": "bdev"})),
            Output::Json,
        );
        check(
            "framework reactors",
            "framework_get_reactors",
            None,
            Output::Reactors,
        );
        check(
            "thread stats",
            "thread_get_stats",
            None,
            Output::ThreadStats,
        );
    }

    #[test]
    fn kill_defaults_to_sigterm() {
        check(
            "kill",
            "spdk_kill_instance",
            Some(json!({"sig_name": "SIGTERM"})),
            Output::Silent,
        );
        check(
            "kill --signal int",
            "spdk_kill_instance",
            Some(json!({"sig_name": "SIGINT"})),
            Output::Silent,
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
}
