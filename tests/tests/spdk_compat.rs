//! SPDK's own client (`spdk-rpc`, i.e. `scripts/rpc.py`) against plexd: its CLI syntax for
//! every bdev driver, `save_config` / `load_config` round trips (also into a `--wait-for-rpc`
//! plexd), the start-up state, and `spdk_kill_instance`.

use std::path::Path;
use std::time::Duration;

use plexd_tests::{run_spdk_rpc, sorted_by_name, Plexd};
use serde_json::{json, Value};

const MALLOC0_UUID: &str = "4a1d7c2e-5b8f-4e6a-9c3d-0f1e2d3c4b5a";

/// Runs `spdk-rpc -s SOCKET args…`, panicking with its output unless it succeeds; returns stdout.
fn spdk(socket: &Path, args: &[&str], stdin: Option<&[u8]>) -> String {
    let out = run_spdk_rpc(socket, args, stdin);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "spdk-rpc {args:?} failed ({}):\nstdout: {stdout}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// Like [`spdk`], parsing stdout as JSON.
fn spdk_json(socket: &Path, args: &[&str]) -> Value {
    let text = spdk(socket, args, None);
    serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("spdk-rpc {args:?}: not JSON ({e}): {text}"))
}

/// Runs `spdk-rpc` expecting failure; returns stdout and stderr together.
fn spdk_fails(socket: &Path, args: &[&str]) -> String {
    let out = run_spdk_rpc(socket, args, None);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !out.status.success(),
        "spdk-rpc {args:?} unexpectedly succeeded: {text}"
    );
    text
}

fn methods(socket: &Path, current: bool) -> Vec<String> {
    let args: &[&str] = if current {
        &["rpc_get_methods", "-c"]
    } else {
        &["rpc_get_methods"]
    };
    serde_json::from_value(spdk_json(socket, args)).expect("array of method names")
}

fn bdevs(socket: &Path) -> Vec<Value> {
    sorted_by_name(&spdk_json(socket, &["bdev_get_bdevs"]))
}

fn bdev<'a>(list: &'a [Value], name: &str) -> &'a Value {
    list.iter()
        .find(|b| b["name"] == name)
        .unwrap_or_else(|| panic!("no bdev {name} in {list:?}"))
}

#[test]
fn every_driver_through_spdk_rpc_saves_and_loads_into_a_fresh_plexd() {
    let p1 = Plexd::start();
    let s1 = p1.socket.as_path();
    let file = p1.dir.path().join("uring.img");
    std::fs::File::create(&file)
        .and_then(|f| f.set_len(8 << 20))
        .expect("backing file");
    let file = file.to_str().expect("utf-8");

    let version = spdk_json(s1, &["spdk_get_version"]);
    assert!(
        version["version"]
            .as_str()
            .expect("version")
            .contains("plexd"),
        "{version}"
    );
    for k in ["major", "minor", "patch"] {
        assert!(version["fields"][k].is_u64(), "{version}");
    }
    let all = methods(s1, false);
    for m in [
        "bdev_malloc_create",
        "bdev_null_create",
        "bdev_uring_create",
        "bdev_aio_create",
        "bdev_error_create",
        "bdev_error_inject_error",
        "bdev_delay_create",
        "bdev_get_bdevs",
        "framework_get_config",
        "framework_get_subsystems",
        "spdk_kill_instance",
    ] {
        assert!(
            all.iter().any(|n| n == m),
            "rpc_get_methods lacks {m}: {all:?}"
        );
    }

    let create =
        |args: &[&str], want: &str| assert_eq!(spdk(s1, args, None).trim(), want, "{args:?}");
    create(
        &[
            "bdev_malloc_create",
            "-b",
            "Malloc0",
            "-u",
            MALLOC0_UUID,
            "16",
            "512",
        ],
        "Malloc0",
    );
    create(&["bdev_null_create", "Null0", "32", "4096"], "Null0");
    create(&["bdev_uring_create", file, "Uring0", "512"], "Uring0");
    create(
        &["bdev_malloc_create", "-b", "Malloc1", "8", "512"],
        "Malloc1",
    );
    create(&["bdev_error_create", "Malloc1"], "EE_Malloc1");
    create(
        &["bdev_malloc_create", "-b", "Malloc2", "8", "4096"],
        "Malloc2",
    );
    create(
        &[
            "bdev_delay_create",
            "-b",
            "Malloc2",
            "-d",
            "Delay0",
            "-r",
            "10",
            "-t",
            "20",
            "-w",
            "30",
            "-n",
            "40",
        ],
        "Delay0",
    );

    let before = bdevs(s1);
    let names: Vec<&str> = before
        .iter()
        .map(|b| b["name"].as_str().expect("name"))
        .collect();
    assert_eq!(
        names,
        [
            "Delay0",
            "EE_Malloc1",
            "Malloc0",
            "Malloc1",
            "Malloc2",
            "Null0",
            "Uring0"
        ]
    );
    let m0 = bdev(&before, "Malloc0");
    assert_eq!(
        (m0["block_size"].clone(), m0["num_blocks"].clone()),
        (json!(512), json!(32768))
    );
    assert_eq!(m0["uuid"], MALLOC0_UUID);
    assert_eq!(m0["product_name"], "Malloc disk");
    let n0 = bdev(&before, "Null0");
    assert_eq!(
        (n0["block_size"].clone(), n0["num_blocks"].clone()),
        (json!(4096), json!(8192))
    );
    assert_eq!(bdev(&before, "Uring0")["num_blocks"], 16384);
    assert_eq!(bdev(&before, "EE_Malloc1")["num_blocks"], 16384);
    assert_eq!(bdev(&before, "Delay0")["num_blocks"], 2048);
    assert_eq!(bdev(&before, "Delay0")["block_size"], 4096);
    assert_eq!(bdev(&before, "Malloc1")["claimed"], true);
    assert_eq!(bdev(&before, "Malloc2")["claimed"], true);
    assert_eq!(bdev(&before, "Malloc0")["claimed"], false);

    // Errors come back in SPDK's shape.
    let err = spdk_fails(s1, &["bdev_malloc_delete", "NoSuch"]);
    assert!(err.contains("-19"), "{err}");

    let config = spdk(s1, &["save_config"], None);
    let parsed: Value = serde_json::from_str(&config).expect("save_config is JSON");
    let bdev_sub = parsed["subsystems"]
        .as_array()
        .expect("subsystems")
        .iter()
        .find(|s| s["subsystem"] == "bdev")
        .expect("bdev subsystem saved");
    assert!(
        bdev_sub["config"].as_array().expect("config").len() >= 7,
        "{config}"
    );

    let p2 = Plexd::start();
    spdk(&p2.socket, &["load_config"], Some(config.as_bytes()));
    assert_eq!(
        bdevs(&p2.socket),
        before,
        "loaded target differs from the saved one"
    );
    // And the first target is as it was.
    assert_eq!(bdevs(s1), before);
}

#[test]
fn wait_for_rpc_starts_in_the_startup_state() {
    let p = Plexd::start_args(&["--wait-for-rpc"]);
    let s = p.socket.as_path();
    let current = methods(s, true);
    assert!(
        current.iter().any(|m| m == "framework_start_init"),
        "{current:?}"
    );
    assert!(
        !current.iter().any(|m| m == "bdev_malloc_create"),
        "{current:?}"
    );
    assert!(methods(s, false).iter().any(|m| m == "bdev_malloc_create"));

    let (code, msg) = p.call_err(
        "bdev_malloc_create",
        json!({"name": "M0", "block_size": 512, "num_blocks": 64}),
    );
    assert_eq!(code, -32601, "{msg}");
    let err = spdk_fails(s, &["bdev_malloc_create", "-b", "M0", "8", "512"]);
    assert!(err.contains("-32601"), "{err}");

    spdk(s, &["framework_start_init"], None);
    let current = methods(s, true);
    assert!(
        !current.iter().any(|m| m == "framework_start_init"),
        "{current:?}"
    );
    assert!(
        current.iter().any(|m| m == "bdev_malloc_create"),
        "{current:?}"
    );
    spdk(s, &["framework_wait_init"], None);
    assert_eq!(
        spdk(s, &["bdev_malloc_create", "-b", "M0", "8", "512"], None).trim(),
        "M0"
    );
    assert_eq!(p.names(), ["M0"]);
}

#[test]
fn load_config_into_a_wait_for_rpc_plexd() {
    let p1 = Plexd::start();
    p1.call(
        "bdev_malloc_create",
        json!({"name": "M0", "block_size": 512, "num_blocks": 2048}),
    );
    p1.call(
        "bdev_null_create",
        json!({"name": "N0", "block_size": 4096, "num_blocks": 1024}),
    );
    let config = spdk(&p1.socket, &["save_config"], None);

    let p2 = Plexd::start_args(&["--wait-for-rpc"]);
    spdk(&p2.socket, &["load_config"], Some(config.as_bytes()));
    let current = methods(&p2.socket, true);
    assert!(
        !current.iter().any(|m| m == "framework_start_init"),
        "load_config must leave the target initialised: {current:?}"
    );
    assert_eq!(bdevs(&p2.socket), bdevs(&p1.socket));
    assert_eq!(p2.names(), ["M0", "N0"]);
}

#[test]
fn spdk_kill_instance_sigterm_exits_zero_and_removes_the_socket() {
    let mut p = Plexd::start();
    p.call(
        "bdev_malloc_create",
        json!({"name": "M0", "block_size": 512, "num_blocks": 64}),
    );
    assert_eq!(
        spdk(&p.socket, &["spdk_kill_instance", "SIGTERM"], None).trim(),
        ""
    );
    let (code, stderr) = p.wait_exit(Duration::from_secs(30));
    assert_eq!(code, Some(0), "{stderr}");
    assert!(!p.socket.exists(), "socket left behind");
}

/// The raid bdev named `name` in a `bdev_raid_get_bdevs` reply.
fn raid<'a>(list: &'a Value, name: &str) -> &'a Value {
    list.as_array()
        .unwrap_or_else(|| panic!("bdev_raid_get_bdevs: not an array: {list}"))
        .iter()
        .find(|r| r["name"] == name)
        .unwrap_or_else(|| panic!("no raid bdev {name} in {list}"))
}

/// The names of a raid bdev's configured base bdevs, in order.
fn configured_bases(raid: &Value) -> Vec<String> {
    raid["base_bdevs_list"]
        .as_array()
        .unwrap_or_else(|| panic!("no base_bdevs_list in {raid}"))
        .iter()
        .filter(|b| b["is_configured"] == true)
        .map(|b| b["name"].as_str().expect("base bdev name").to_string())
        .collect()
}

/// SPDK's client drives plexd's `bdev_raid_*` methods (raid bdevs on the volume manager) with
/// its own command-line syntax: create raid0 and raid1, list them, see them as bdevs and in
/// `save_config`, remove a raid1 base bdev, delete a raid and reuse its base bdevs.
#[test]
fn spdk_rpc_drives_raid_bdevs() {
    let p = Plexd::start();
    let s = p.socket.as_path();
    for m in ["M0", "M1", "M2", "M3"] {
        assert_eq!(
            spdk(s, &["bdev_malloc_create", "-b", m, "64", "512"], None).trim(),
            m
        );
    }
    spdk(
        s,
        &[
            "bdev_raid_create",
            "-n",
            "R0",
            "-z",
            "64",
            "-r",
            "raid0",
            "-b",
            "M0 M1",
        ],
        None,
    );
    spdk(
        s,
        &["bdev_raid_create", "-n", "R1", "-r", "raid1", "-b", "M2 M3"],
        None,
    );

    let raids = spdk_json(s, &["bdev_raid_get_bdevs", "all"]);
    assert_eq!(raids.as_array().map(Vec::len), Some(2), "{raids}");
    for (name, level, bases) in [("R0", "raid0", ["M0", "M1"]), ("R1", "raid1", ["M2", "M3"])] {
        let r = raid(&raids, name);
        assert_eq!(r["raid_level"], level, "{r}");
        assert_eq!(r["state"], "online", "{r}");
        assert_eq!(r["num_base_bdevs"], 2, "{r}");
        assert_eq!(r["num_base_bdevs_discovered"], 2, "{r}");
        assert_eq!(r["num_base_bdevs_operational"], 2, "{r}");
        assert_eq!(configured_bases(r), bases, "{r}");
    }
    assert_eq!(raid(&raids, "R0")["strip_size_kb"], 64);
    assert_eq!(
        spdk_json(s, &["bdev_raid_get_bdevs", "online"]),
        raids,
        "both raids are online"
    );
    assert_eq!(spdk_json(s, &["bdev_raid_get_bdevs", "offline"]), json!([]));

    // Each base bdev keeps its first 4 MiB (label and private region), so a raid0 of two
    // 64 MiB bdevs holds 2 × 60 MiB, a raid1 60 MiB.
    let data_blocks = (64 - 4) << 11;
    let r0 = spdk_json(s, &["bdev_get_bdevs", "-b", "R0"]);
    assert_eq!(r0[0]["name"], "R0", "{r0}");
    assert_eq!(r0[0]["block_size"], 512, "{r0}");
    assert_eq!(r0[0]["num_blocks"], 2 * data_blocks, "{r0}");
    assert_eq!(r0[0]["uuid"], raid(&raids, "R0")["uuid"], "{r0}");
    let r1 = spdk_json(s, &["bdev_get_bdevs", "-b", "R1"]);
    assert_eq!(r1[0]["num_blocks"], data_blocks, "{r1}");
    let all = bdevs(s);
    for m in ["M0", "M1", "M2", "M3"] {
        assert_eq!(bdev(&all, m)["claimed"], true, "{m} is a raid's base bdev");
    }

    // save_config recreates both raids.
    let config: Value =
        serde_json::from_str(&spdk(s, &["save_config"], None)).expect("save_config is JSON");
    let creates: Vec<&Value> = config["subsystems"]
        .as_array()
        .expect("subsystems")
        .iter()
        .filter_map(|sub| sub["config"].as_array())
        .flatten()
        .filter(|c| c["method"] == "bdev_raid_create")
        .map(|c| &c["params"])
        .collect();
    assert_eq!(creates.len(), 2, "{config}");
    let saved = |name: &str| {
        *creates
            .iter()
            .find(|c| c["name"] == name)
            .unwrap_or_else(|| panic!("no bdev_raid_create for {name}: {config}"))
    };
    assert_eq!(saved("R0")["raid_level"], "raid0");
    assert_eq!(saved("R0")["strip_size_kb"], 64);
    assert_eq!(saved("R0")["base_bdevs"], json!(["M0", "M1"]));
    assert_eq!(saved("R1")["raid_level"], "raid1");
    assert_eq!(saved("R1")["base_bdevs"], json!(["M2", "M3"]));

    // A raid1 loses a base bdev: it stays online on the other, with its size, and the removed
    // bdev is free again.
    assert_eq!(
        spdk(s, &["bdev_raid_remove_base_bdev", "M3"], None).trim(),
        ""
    );
    let raids = spdk_json(s, &["bdev_raid_get_bdevs", "all"]);
    let r = raid(&raids, "R1");
    assert_eq!(r["state"], "online", "{r}");
    assert_eq!(
        r["num_base_bdevs"], 2,
        "the removed bdev leaves an empty slot: {r}"
    );
    assert_eq!(r["num_base_bdevs_discovered"], 1, "{r}");
    assert_eq!(r["num_base_bdevs_operational"], 1, "{r}");
    assert_eq!(configured_bases(r), ["M2"], "{r}");
    let r1 = spdk_json(s, &["bdev_get_bdevs", "-b", "R1"]);
    assert_eq!(r1[0]["num_blocks"], data_blocks, "{r1}");
    assert_eq!(bdev(&bdevs(s), "M3")["claimed"], false);
    // raid0 has no redundancy: its base bdevs cannot be removed.
    let err = spdk_fails(s, &["bdev_raid_remove_base_bdev", "M0"]);
    assert!(err.contains("-22"), "{err}");

    // Deleting a raid frees its base bdevs: a new raid can be built on them. (spdk-rpc sends
    // `clear_sb`, false unless `-c` is given.)
    assert_eq!(spdk(s, &["bdev_raid_delete", "R0"], None).trim(), "");
    let raids = spdk_json(s, &["bdev_raid_get_bdevs", "all"]);
    assert_eq!(raids.as_array().map(Vec::len), Some(1), "{raids}");
    let all = bdevs(s);
    assert!(all.iter().all(|b| b["name"] != "R0"), "R0 is still a bdev");
    for m in ["M0", "M1"] {
        assert_eq!(bdev(&all, m)["claimed"], false, "{m} is still claimed");
    }
    spdk(
        s,
        &[
            "bdev_raid_create",
            "-n",
            "R0",
            "-r",
            "concat",
            "-b",
            "M0 M1",
        ],
        None,
    );
    let raids = spdk_json(s, &["bdev_raid_get_bdevs", "all"]);
    let r = raid(&raids, "R0");
    assert_eq!(r["raid_level"], "concat", "{r}");
    assert_eq!(r["state"], "online", "{r}");
    assert_eq!(configured_bases(r), ["M0", "M1"], "{r}");
    let r0 = spdk_json(s, &["bdev_get_bdevs", "-b", "R0"]);
    assert_eq!(r0[0]["num_blocks"], 2 * data_blocks, "{r0}");
}

/// SPDK's client makes a raid5f (`-r raid5f` / `-r 5f`) on plexd's RAID-5 engine: SPDK's size
/// and `bdev_raid_get_bdevs` shape, the `save_config` entry, SPDK's refusals (two base bdevs,
/// a strip size that is not a power of two, none at all) with nothing claimed, a base bdev
/// removed (degraded, online), and delete.
#[test]
fn spdk_rpc_makes_raid5f_bdevs() {
    let p = Plexd::start();
    let s = p.socket.as_path();
    for m in ["M0", "M1", "M2", "M3", "M4", "M5"] {
        spdk(s, &["bdev_malloc_create", "-b", m, "64", "512"], None);
    }
    spdk(
        s,
        &[
            "bdev_raid_create",
            "-n",
            "R5",
            "-z",
            "64",
            "-r",
            "raid5f",
            "-b",
            "M0 M1 M2 M3",
        ],
        None,
    );
    let raids = spdk_json(s, &["bdev_raid_get_bdevs", "all"]);
    let r = raid(&raids, "R5");
    assert_eq!(r["raid_level"], "raid5f", "{r}");
    assert_eq!(r["strip_size_kb"], 64, "{r}");
    assert_eq!(r["state"], "online", "{r}");
    assert_eq!(r["superblock"], true, "{r}");
    for k in [
        "num_base_bdevs",
        "num_base_bdevs_discovered",
        "num_base_bdevs_operational",
    ] {
        assert_eq!(r[k], 4, "{k}: {r}");
    }
    assert_eq!(configured_bases(r), ["M0", "M1", "M2", "M3"], "{r}");
    for b in r["base_bdevs_list"].as_array().expect("base_bdevs_list") {
        for k in ["uuid", "data_offset", "data_size"] {
            assert!(!b[k].is_null(), "{k} in {b}");
        }
    }
    assert_eq!(
        spdk_json(s, &["bdev_raid_get_bdevs", "online"]),
        raids,
        "online"
    );

    // 3 data columns of each base bdev's 60 MiB data area (whole 64 KiB strips).
    let data_blocks = (64 - 4) << 11;
    let r5 = spdk_json(s, &["bdev_get_bdevs", "-b", "R5"]);
    assert_eq!(r5[0]["num_blocks"], 3 * data_blocks, "{r5}");
    assert_eq!(r5[0]["uuid"], r["uuid"], "{r5}");

    let config: Value =
        serde_json::from_str(&spdk(s, &["save_config"], None)).expect("save_config is JSON");
    let saved = config["subsystems"]
        .as_array()
        .expect("subsystems")
        .iter()
        .filter_map(|sub| sub["config"].as_array())
        .flatten()
        .find(|c| c["method"] == "bdev_raid_create" && c["params"]["name"] == "R5")
        .unwrap_or_else(|| panic!("no bdev_raid_create for R5: {config}"));
    assert_eq!(saved["params"]["raid_level"], "raid5f", "{saved}");
    assert_eq!(saved["params"]["strip_size_kb"], 64, "{saved}");
    assert_eq!(
        saved["params"]["base_bdevs"],
        json!(["M0", "M1", "M2", "M3"]),
        "{saved}"
    );

    // SPDK's refusals, in SPDK's words, and nothing claimed.
    for (args, want) in [
        (
            &["-z", "64", "-r", "5f", "-b", "M4 M5"][..],
            "At least 3 base devices required for raid5f",
        ),
        (
            &["-z", "48", "-r", "5f", "-b", "M4 M5 M0"][..],
            "Invalid strip size 48",
        ),
        (
            &["-r", "raid5f", "-b", "M4 M5 M4"][..],
            "Invalid strip size 0",
        ),
    ] {
        let mut full = vec!["bdev_raid_create", "-n", "X"];
        full.extend_from_slice(args);
        let err = spdk_fails(s, &full);
        assert!(err.contains("-22") && err.contains(want), "{args:?}: {err}");
    }
    let all = bdevs(s);
    assert!(all.iter().all(|b| b["name"] != "X"), "X was made");
    for m in ["M4", "M5"] {
        assert_eq!(bdev(&all, m)["claimed"], false, "{m} is claimed");
    }
    // Removing a base bdev leaves the raid5f online, degraded, with an empty slot; the bdev
    // is free. A second removal would take it offline: refused.
    assert_eq!(
        spdk(s, &["bdev_raid_remove_base_bdev", "M1"], None).trim(),
        ""
    );
    let raids = spdk_json(s, &["bdev_raid_get_bdevs", "all"]);
    let r = raid(&raids, "R5");
    assert_eq!(r["state"], "online", "{r}");
    assert_eq!(r["num_base_bdevs"], 4, "{r}");
    assert_eq!(r["num_base_bdevs_discovered"], 3, "{r}");
    assert_eq!(r["num_base_bdevs_operational"], 3, "{r}");
    assert!(r["base_bdevs_list"][1]["name"].is_null(), "{r}");
    assert_eq!(configured_bases(r), ["M0", "M2", "M3"], "{r}");
    assert_eq!(bdev(&bdevs(s), "M1")["claimed"], false);
    let err = spdk_fails(s, &["bdev_raid_remove_base_bdev", "M2"]);
    assert!(err.contains("-22") && err.contains("offline"), "{err}");
    let r5 = spdk_json(s, &["bdev_get_bdevs", "-b", "R5"]);
    assert_eq!(r5[0]["num_blocks"], 3 * data_blocks, "{r5}");

    assert_eq!(spdk(s, &["bdev_raid_delete", "R5"], None).trim(), "");
    assert_eq!(spdk_json(s, &["bdev_raid_get_bdevs", "all"]), json!([]));
    let all = bdevs(s);
    for m in ["M0", "M1", "M2", "M3"] {
        assert_eq!(bdev(&all, m)["claimed"], false, "{m} is still claimed");
    }
}
