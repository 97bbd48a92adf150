//! `plexctl` against a real plexd: creating bdevs, tables and `--json`, raw calls, config
//! save/load between two daemons, exit statuses and messages, completions.

use std::io::Write;
use std::process::{Command, Output, Stdio};

use plexd_tests::{bin, sorted_by_name, Plexd};
use serde_json::{json, Value};

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Runs `plexctl -s SOCKET args…` expecting success; returns stdout.
fn ok(p: &Plexd, args: &[&str]) -> String {
    let out = p.plexctl(args);
    assert_eq!(
        out.status.code(),
        Some(0),
        "plexctl {args:?}:\nstdout: {}\nstderr: {}",
        stdout(&out),
        stderr(&out)
    );
    stdout(&out)
}

fn parse(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

#[test]
fn malloc_create_list_json_and_call() {
    let p = Plexd::start();
    let out = ok(
        &p,
        &[
            "bdev",
            "malloc",
            "create",
            "M0",
            "--size",
            "64MiB",
            "--block-size",
            "512",
        ],
    );
    assert_eq!(out.trim(), "M0");

    let table = ok(&p, &["bdev", "list"]);
    let row = table
        .lines()
        .find(|l| l.split_whitespace().next() == Some("M0"))
        .unwrap_or_else(|| panic!("no M0 row in:\n{table}"));
    assert!(
        row.split_whitespace().any(|w| w == "131072"),
        "row lacks 131072: {row}"
    );
    assert!(
        row.split_whitespace().any(|w| w == "512"),
        "row lacks the block size: {row}"
    );

    let listed = parse(&ok(&p, &["--json", "bdev", "list"]));
    let arr = listed.as_array().expect("array");
    assert_eq!(arr.len(), 1);
    assert_eq!(arr[0]["name"], "M0");
    assert_eq!(arr[0]["num_blocks"], 131072);
    assert_eq!(arr[0]["block_size"], 512);
    assert_eq!(listed, p.call("bdev_get_bdevs", json!({})));

    let called = parse(&ok(&p, &["call", "bdev_get_bdevs", r#"{"name":"M0"}"#]));
    assert_eq!(called, p.call("bdev_get_bdevs", json!({"name": "M0"})));
    assert_eq!(called[0]["name"], "M0");
}

#[test]
fn null_and_uring_create() {
    let p = Plexd::start();
    let out = ok(
        &p,
        &[
            "bdev",
            "null",
            "create",
            "N0",
            "--size",
            "1GiB",
            "--block-size",
            "4096",
        ],
    );
    assert_eq!(out.trim(), "N0");
    let n0 = p.call("bdev_get_bdevs", json!({"name": "N0"}));
    assert_eq!(
        (n0[0]["block_size"].clone(), n0[0]["num_blocks"].clone()),
        (json!(4096), json!(262144))
    );
    assert_eq!(n0[0]["product_name"], "Null disk");

    // A relative path is resolved against plexctl's working directory, not plexd's.
    let file = p.dir.path().join("disk.img");
    std::fs::File::create(&file)
        .and_then(|f| f.set_len(4 << 20))
        .expect("backing file");
    let out = Command::new(bin("plexctl"))
        .current_dir(p.dir.path())
        .args(["-s", p.socket.to_str().expect("utf-8")])
        .args([
            "bdev",
            "uring",
            "create",
            "U0",
            "disk.img",
            "--block-size",
            "512",
        ])
        .output()
        .expect("run plexctl");
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(stdout(&out).trim(), "U0");
    let u0 = p.call("bdev_get_bdevs", json!({"name": "U0"}));
    assert_eq!(u0[0]["num_blocks"], 8192);
    assert_eq!(u0[0]["block_size"], 512);
    assert_eq!(
        u0[0]["driver_specific"]["uring"]["filename"],
        file.to_str().expect("utf-8")
    );
    assert_eq!(p.names(), ["N0", "U0"]);
}

#[test]
fn save_config_loads_into_a_second_plexd() {
    let p1 = Plexd::start();
    ok(
        &p1,
        &[
            "bdev",
            "malloc",
            "create",
            "M0",
            "--size",
            "8MiB",
            "--block-size",
            "4096",
        ],
    );
    ok(
        &p1,
        &[
            "bdev",
            "null",
            "create",
            "N0",
            "--size",
            "64MiB",
            "--block-size",
            "512",
        ],
    );
    ok(&p1, &["bdev", "malloc", "create", "M1", "--size", "1MiB"]);
    let saved = ok(&p1, &["save-config"]);
    let config = parse(&saved);
    assert!(config["subsystems"].is_array(), "{saved}");
    let file = p1.dir.path().join("saved.json");
    std::fs::write(&file, &saved).expect("write config");

    let p2 = Plexd::start();
    let out = ok(&p2, &["load-config", file.to_str().expect("utf-8")]);
    assert_eq!(out.trim(), "");
    let want = sorted_by_name(&p1.call("bdev_get_bdevs", json!({})));
    assert_eq!(p2.bdevs(), want);
    assert_eq!(p2.names(), ["M0", "M1", "N0"]);

    // The same through standard input.
    let p3 = Plexd::start();
    let mut child = Command::new(bin("plexctl"))
        .args(["-s", p3.socket.to_str().expect("utf-8"), "load-config", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run plexctl");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(saved.as_bytes())
        .expect("write stdin");
    let out = child.wait_with_output().expect("plexctl");
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(p3.bdevs(), want);
}

#[test]
fn server_errors_exit_1_with_the_servers_message() {
    let p = Plexd::start();
    let (_, server_msg) = p.call_err("bdev_malloc_delete", json!({"name": "Nope"}));
    let out = p.plexctl(&["bdev", "malloc", "delete", "Nope"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(&server_msg),
        "stderr {:?} lacks {server_msg:?}",
        stderr(&out)
    );
    assert!(stderr(&out).contains("-19"), "{}", stderr(&out));
    assert_eq!(stdout(&out), "");

    // Duplicate names too, and nothing changes.
    ok(&p, &["bdev", "malloc", "create", "M0", "--size", "1MiB"]);
    let out = p.plexctl(&["bdev", "null", "create", "M0", "--size", "1MiB"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("-17"), "{}", stderr(&out));
    assert_eq!(p.names(), ["M0"]);
}

#[test]
fn no_daemon_exits_2_cannot_connect() {
    let dir = tempfile::tempdir().expect("tempdir");
    let socket = dir.path().join("nobody.sock");
    let out = Command::new(bin("plexctl"))
        .args(["-s", socket.to_str().expect("utf-8"), "bdev", "list"])
        .output()
        .expect("run plexctl");
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("cannot connect"), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(socket.to_str().expect("utf-8")),
        "{}",
        stderr(&out)
    );
    assert_eq!(stdout(&out), "");
}

#[test]
fn completions_bash_prints_a_script() {
    let out = Command::new(bin("plexctl"))
        .args(["completions", "bash"])
        .output()
        .expect("run plexctl");
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let script = stdout(&out);
    assert!(script.contains("_plexctl()"), "{script}");
    assert!(script.contains("complete -F _plexctl"), "{script}");
    assert!(script.contains("malloc"), "subcommands missing");
}

#[test]
fn usage_errors_exit_2_and_send_nothing() {
    let p = Plexd::start();
    let out = p.plexctl(&["bdev", "malloc", "create", "M1", "--size", "1000"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("not a multiple"), "{}", stderr(&out));
    let out = p.plexctl(&["call", "bdev_get_bdevs", "{not json"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(p.names().is_empty());
}

#[test]
fn load_config_failure_names_the_method_and_exits_1() {
    let p = Plexd::start();
    let cfg = plexd_tests::write_bdev_config(
        p.dir.path(),
        "bad.json",
        &[json!({"method": "bdev_malloc_create",
                 "params": {"name": "Bad", "block_size": 700, "num_blocks": 64}})],
    );
    let out = p.plexctl(&["load-config", cfg.to_str().expect("utf-8")]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("bdev_malloc_create") && err.contains("-22"),
        "{err}"
    );
    assert!(p.names().is_empty());
}

/// The volume manager through plexctl: a disk group on malloc bdevs, a mirrored volume, the
/// tables, the `vxprint`-style tree, and a plex attach followed to its end.
#[test]
fn volume_manager_commands() {
    let p = Plexd::start();
    for m in ["M0", "M1", "M2"] {
        ok(&p, &["bdev", "malloc", "create", m, "--size", "32MiB"]);
    }
    assert_eq!(ok(&p, &["dg", "create", "dg01", "M0", "M1"]), "");
    assert_eq!(ok(&p, &["dg", "add-disk", "dg01", "M2"]).trim(), "disk03");
    let out = ok(
        &p,
        &[
            "volume", "create", "dg01", "vol01", "8MiB", "--layout", "mirror",
        ],
    );
    assert_eq!(out.trim(), "dg01/vol01");
    let bdev = p.call("bdev_get_bdevs", json!({"name": "dg01/vol01"}));
    assert_eq!(bdev[0]["num_blocks"], 16384);

    let groups = ok(&p, &["dg", "list"]);
    let row = groups
        .lines()
        .find(|l| l.starts_with("dg01 "))
        .unwrap_or_else(|| panic!("no dg01 row in:\n{groups}"));
    let cells: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(&cells[..3], ["dg01", "3", "1"], "{groups}");

    let disks = ok(&p, &["disk", "list", "--dg", "dg01"]);
    assert_eq!(disks.lines().count(), 4, "{disks}");
    assert!(disks.starts_with("DG "), "{disks}");
    ok(&p, &["disk", "set", "dg01", "disk03", "--nohotuse", "true"]);
    let disks = ok(&p, &["disk", "list"]);
    assert!(
        disks
            .lines()
            .any(|l| l.contains("disk03") && l.ends_with("nohotuse")),
        "{disks}"
    );

    let volumes = ok(&p, &["volume", "list"]);
    let row = volumes
        .lines()
        .find(|l| l.starts_with("dg01/vol01 "))
        .unwrap_or_else(|| panic!("no dg01/vol01 row in:\n{volumes}"));
    let cells: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(
        cells,
        [
            "dg01/vol01",
            "8",
            "MiB",
            "mirror",
            "ACTIVE",
            "ENABLED",
            "2",
            "yes"
        ],
        "{volumes}"
    );
    let listed = parse(&ok(
        &p,
        &["--json", "volume", "list", "--dg", "dg01", "vol01"],
    ));
    assert_eq!(listed, p.call("volume_list", json!({"dg": "dg01"})));

    let tree = ok(&p, &["print"]);
    assert!(
        tree.starts_with("DG NAME         NCONFIG"),
        "no vxprint header:\n{tree}"
    );
    assert!(tree.contains("\nV  NAME "), "{tree}");
    assert!(
        tree.lines().any(|l| l.starts_with("v  vol01 ")),
        "no volume line:\n{tree}"
    );
    assert_eq!(tree, ok(&p, &["print", "dg01"]));
    assert_eq!(tree.matches("\npl vol01-").count(), 2, "{tree}");

    assert_eq!(
        ok(&p, &["task", "list"]),
        "ID  KIND  VOLUME  PLEX  STATE  PROGRESS  RATE  ETA\n"
    );
    // A third mirror; --wait follows the copy (stderr is a pipe: plain progress lines).
    let out = p.plexctl(&["plex", "attach", "dg01", "vol01", "--wait"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(
        stdout(&out),
        "task 1 (plex_attach of dg01/vol01, plex vol01-03): done\n"
    );
    assert!(stderr(&out).contains("100.0%  done"), "{}", stderr(&out));
    let tasks = ok(&p, &["task", "list"]);
    let cells: Vec<&str> = tasks
        .lines()
        .nth(1)
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    assert_eq!(
        cells,
        [
            "1",
            "plex_attach",
            "dg01/vol01",
            "vol01-03",
            "done",
            "100.0%",
            "-",
            "-"
        ],
        "{tasks}"
    );
    let waited = parse(&ok(&p, &["--json", "task", "wait", "1"]));
    assert_eq!(waited["state"], "done");
    assert_eq!(waited["total_blocks"], 16384);

    ok(&p, &["plex", "detach", "dg01", "vol01-03", "--dissociate"]);
    ok(&p, &["volume", "stop", "dg01", "vol01"]);
    assert!(!p.names().contains(&"dg01/vol01".to_string()));
    ok(&p, &["volume", "start", "dg01", "vol01"]);
    assert!(p.names().contains(&"dg01/vol01".to_string()));
    ok(&p, &["volume", "delete", "dg01", "vol01"]);
    ok(&p, &["dg", "remove-disk", "dg01", "disk03"]);
    ok(&p, &["dg", "deport", "dg01"]);
    assert_eq!(
        ok(&p, &["dg", "list"]),
        "NAME  DISKS  VOLUMES  FREE  SEQ  ID\n"
    );
    // A deported group is imported only by name (as VxVM does).
    assert_eq!(ok(&p, &["dg", "import"]).trim(), "");
    assert_eq!(ok(&p, &["dg", "import", "dg01"]).trim(), "dg01");
}

/// `plexctl volume create --layout raid5 --ncol --stripe-unit` makes a RAID-5 volume that
/// `print` shows as `vxprint -ht` does (RAID, NCOL/WID in sectors) and `volume list` lists;
/// `--help` offers raid5; `volume set --skip-copy` changes it; a bad column count is the
/// daemon's clear error, exit status 1.
#[test]
fn raid5_volume_create_list_and_print() {
    let p = Plexd::start();
    for m in ["M0", "M1", "M2", "M3"] {
        ok(&p, &["bdev", "malloc", "create", m, "--size", "32MiB"]);
    }
    ok(&p, &["dg", "create", "dg01", "M0", "M1", "M2", "M3"]);
    let help = ok(&p, &["volume", "create", "--help"]);
    assert!(help.contains("raid5"), "{help}");
    let out = ok(
        &p,
        &[
            "volume",
            "create",
            "dg01",
            "r5",
            "6MiB",
            "--layout",
            "raid5",
            "--ncol",
            "3",
            "--stripe-unit",
            "32K",
        ],
    );
    assert_eq!(out.trim(), "dg01/r5");
    let bdev = p.call("bdev_get_bdevs", json!({"name": "dg01/r5"}));
    assert_eq!(bdev[0]["num_blocks"], 12288);

    let tree = ok(&p, &["print", "dg01"]);
    let cells = |prefix: &str| -> Vec<String> {
        tree.lines()
            .find(|l| l.starts_with(prefix))
            .unwrap_or_else(|| panic!("no '{prefix}' line:\n{tree}"))
            .split_whitespace()
            .map(str::to_string)
            .collect()
    };
    assert_eq!(
        cells("v  r5 "),
        ["v", "r5", "-", "ENABLED", "ACTIVE", "12288", "RAID", "-", "raid5"]
    );
    assert_eq!(
        cells("pl r5-01 "),
        ["pl", "r5-01", "r5", "ENABLED", "ACTIVE", "12288", "RAID", "3/64", "RW"]
    );
    // Three columns, and a log plex on the fourth disk (one subdisk).
    assert_eq!(cells("pl r5-02 ")[4], "LOG", "{tree}");
    assert_eq!(tree.matches("\nsd ").count(), 4, "{tree}");

    let listed = parse(&ok(&p, &["--json", "volume", "list", "--dg", "dg01", "r5"]));
    assert_eq!(listed[0]["layout"], "raid5");
    let plex = &listed[0]["plexes"][0];
    assert_eq!(
        (&plex["layout"], &plex["ncol"], &plex["stripe_unit_blocks"]),
        (&json!("raid"), &json!(3), &json!(64))
    );

    // `volume set --skip-copy on|off` changes the volume, and its listing follows (the field
    // is absent while it is off); a volume without parity refuses it, exit status 1.
    assert_eq!(listed[0].get("skip_copy"), None, "{listed}");
    let skip_copy = |on: &str| {
        ok(&p, &["volume", "set", "dg01", "r5", "--skip-copy", on]);
        let listed = parse(&ok(&p, &["--json", "volume", "list", "--dg", "dg01", "r5"]));
        listed[0].get("skip_copy").cloned()
    };
    assert_eq!(skip_copy("on"), Some(json!(true)));
    assert_eq!(skip_copy("off"), None);
    ok(
        &p,
        &[
            "volume", "create", "dg01", "m", "1MiB", "--layout", "mirror",
        ],
    );
    let out = p.plexctl(&["volume", "set", "dg01", "m", "--skip-copy", "on"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("skip_copy applies to RAID-5 volumes only"),
        "{}",
        stderr(&out)
    );

    let out = p.plexctl(&[
        "volume", "create", "dg01", "bad", "1MiB", "--layout", "raid5", "--ncol", "2",
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("at least 3 columns"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn volume_manager_errors_exit_1_and_unknown_tasks_too() {
    let p = Plexd::start();
    let (code, msg) = p.call_err("volume_list", json!({"dg": "nope"}));
    let out = p.plexctl(&["volume", "list", "--dg", "nope"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains(&msg), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(&format!("code {code}")),
        "{}",
        stderr(&out)
    );

    let out = p.plexctl(&["task", "wait", "9"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("no task 9"), "{}", stderr(&out));
    let out = p.plexctl(&["--json", "task", "wait", "9"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("-2"), "{}", stderr(&out));

    // Usage errors are caught before anything is sent.
    let out = p.plexctl(&[
        "volume",
        "create",
        "dg01",
        "v",
        "1G",
        "--stripe-unit",
        "1000",
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("whole number of KiB"),
        "{}",
        stderr(&out)
    );
}

/// The subdisks of a volume's first plex in a `volume list --json` reply: (name, disk, device).
fn subdisks_of(volumes: &Value) -> Vec<(String, String, String)> {
    volumes[0]["plexes"][0]["subdisks"]
        .as_array()
        .unwrap_or_else(|| panic!("no subdisks in {volumes}"))
        .iter()
        .map(|s| {
            let text = |k: &str| {
                s[k].as_str()
                    .unwrap_or_else(|| panic!("{k} in {s}"))
                    .to_string()
            };
            (text("name"), text("disk"), text("device"))
        })
        .collect()
}

/// `volume resize`, `subdisk move --wait` and `dg destroy`: a concat volume grows, one of its
/// subdisks moves to another disk while the volume stays started, and a destroyed group's
/// bdevs make a new group without `--force`.
#[test]
fn volume_resize_subdisk_move_and_dg_destroy() {
    let p = Plexd::start();
    for m in ["M0", "M1", "M2"] {
        ok(&p, &["bdev", "malloc", "create", m, "--size", "64MiB"]);
    }
    ok(&p, &["dg", "create", "dg01", "M0", "M1", "M2"]);
    assert_eq!(
        ok(&p, &["volume", "create", "dg01", "vol01", "8M"]).trim(),
        "dg01/vol01"
    );
    let list = |p: &Plexd| {
        parse(&ok(
            p,
            &["--json", "volume", "list", "--dg", "dg01", "vol01"],
        ))
    };
    assert_eq!(list(&p)[0]["num_blocks"], 16384);

    // Grow: the new size, human-readably; then the daemon's view and the bdev agree.
    assert_eq!(
        ok(&p, &["volume", "resize", "dg01", "vol01", "16M"]),
        "dg01/vol01: 16 MiB (32768 blocks)\n"
    );
    let volumes = list(&p);
    assert_eq!(volumes[0]["num_blocks"], 32768, "{volumes}");
    assert_eq!(volumes[0]["size_bytes"], 16 << 20, "{volumes}");
    let bdev = p.call("bdev_get_bdevs", json!({"name": "dg01/vol01"}));
    assert_eq!(bdev[0]["num_blocks"], 32768);
    // --json shows the daemon's reply.
    assert_eq!(
        parse(&ok(
            &p,
            &["--json", "volume", "resize", "dg01", "vol01", "16MiB"]
        )),
        json!({"num_blocks": 32768})
    );
    // Shrinking is the daemon's EINVAL.
    let out = p.plexctl(&["volume", "resize", "dg01", "vol01", "8M"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("code -22"), "{}", stderr(&out));
    assert_eq!(list(&p)[0]["num_blocks"], 32768);

    // Move the first subdisk to a disk the volume does not use, named by its bdev.
    let before = subdisks_of(&volumes);
    let (sd, from_disk, _) = before[0].clone();
    let disks = parse(&ok(&p, &["--json", "disk", "list", "--dg", "dg01"]));
    let (to_disk, to_bdev) = disks
        .as_array()
        .expect("disk list")
        .iter()
        .map(|d| {
            (
                d["name"].as_str().expect("name").to_string(),
                d["device"].as_str().expect("device").to_string(),
            )
        })
        .find(|(name, _)| before.iter().all(|(_, disk, _)| disk != name))
        .unwrap_or_else(|| panic!("every disk holds vol01: {before:?}"));
    let out = p.plexctl(&["subdisk", "move", "dg01", &sd, "--to", &to_bdev, "--wait"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(
        stdout(&out),
        "task 1 (subdisk_move of dg01/vol01, plex vol01-01): done\n"
    );
    assert!(stderr(&out).contains("100.0%  done"), "{}", stderr(&out));
    let volumes = list(&p);
    let after = subdisks_of(&volumes);
    assert_eq!(after.len(), before.len(), "{volumes}");
    assert!(after.iter().all(|(name, _, _)| *name != sd), "{volumes}");
    assert!(
        after
            .iter()
            .any(|(_, disk, device)| *disk == to_disk && *device == to_bdev),
        "no subdisk on {to_disk} ({to_bdev}): {volumes}"
    );
    assert_eq!(
        after
            .iter()
            .filter(|(_, disk, _)| *disk == from_disk)
            .count()
            + 1,
        before
            .iter()
            .filter(|(_, disk, _)| *disk == from_disk)
            .count(),
        "{volumes}"
    );
    assert_eq!(volumes[0]["num_blocks"], 32768, "{volumes}");
    assert_eq!(volumes[0]["started"], true, "{volumes}");
    // Another subdisk: not onto its own disk; without --to and --wait the daemon picks a disk
    // and plexctl prints the task's id.
    let (sd2, disk2, _) = after
        .iter()
        .find(|(_, disk, _)| *disk != to_disk)
        .cloned()
        .unwrap_or_else(|| panic!("a second subdisk: {volumes}"));
    let out = p.plexctl(&["subdisk", "move", "dg01", &sd2, "--to", &disk2]);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    assert!(stderr(&out).contains("code -22"), "{}", stderr(&out));
    assert_eq!(
        ok(&p, &["subdisk", "move", "dg01", &sd2, "--delay-ms", "1"]),
        "task 2 started; follow it with: plexctl task wait 2\n"
    );
    assert_eq!(
        ok(&p, &["task", "wait", "2"]),
        "task 2 (subdisk_move of dg01/vol01, plex vol01-01): done\n"
    );
    let volumes = list(&p);
    let moved = subdisks_of(&volumes);
    assert!(
        moved
            .iter()
            .all(|(name, disk, _)| *name != sd2 && *disk != disk2),
        "{volumes}"
    );

    // A group with volumes is not destroyed.
    let out = p.plexctl(&["dg", "destroy", "dg01"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("vol01"), "{}", stderr(&out));
    ok(&p, &["volume", "delete", "dg01", "vol01"]);
    assert_eq!(ok(&p, &["dg", "destroy", "dg01"]), "");
    assert_eq!(
        ok(&p, &["dg", "list"]),
        "NAME  DISKS  VOLUMES  FREE  SEQ  ID\n"
    );
    for b in p
        .call("bdev_get_bdevs", json!({}))
        .as_array()
        .expect("bdevs")
    {
        assert_eq!(b["claimed"], false, "{b}");
    }
    // Nothing is left to import, and the bdevs make a new group without --force.
    assert_eq!(ok(&p, &["dg", "import"]), "");
    assert_eq!(ok(&p, &["dg", "create", "dg01", "M0", "M1", "M2"]), "");
    let groups = parse(&ok(&p, &["--json", "dg", "list", "dg01"]));
    assert_eq!(groups[0]["disks"], json!(["disk01", "disk02", "disk03"]));
    assert_eq!(groups[0]["volumes"], json!([]));
}
