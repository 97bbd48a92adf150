//! Bad input on the RPC socket: every malformed, mistyped, conflicting or abusive request gets
//! the exact JSON-RPC / errno code SPDK clients expect, creates nothing, and leaves the daemon
//! serving everybody else.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Barrier};
use std::thread;

use plexd_control::RpcClient;
use plexd_tests::{json_values, raw_exchange, read_until_closed, Plexd, PlexdOpts};
use serde_json::{json, Value};

fn malloc(name: &str, num_blocks: u64) -> Value {
    json!({"name": name, "block_size": 512, "num_blocks": num_blocks})
}

/// A sparse backing file of `bytes` bytes.
fn backing_file(p: &Plexd, name: &str, bytes: u64) -> String {
    let path = p.dir.path().join(name);
    std::fs::File::create(&path)
        .and_then(|f| f.set_len(bytes))
        .expect("create backing file");
    path.to_str().expect("utf-8 path").to_string()
}

#[test]
fn malformed_json_is_a_parse_error_and_the_daemon_serves_others() {
    let p = Plexd::start();
    let mut before = p.client();
    let mut s = UnixStream::connect(&p.socket).expect("connect");
    // A good request first, then garbage; the server must close the connection by itself.
    s.write_all(br#"{"jsonrpc":"2.0","id":1,"method":"spdk_get_version"} {"jsonrpc": ]"#)
        .expect("write");
    let replies = json_values(&read_until_closed(&mut s));
    assert_eq!(replies.len(), 2, "{replies:?}");
    assert_eq!(replies[0]["id"], 1);
    assert!(replies[0]["result"]["version"].is_string(), "{replies:?}");
    assert_eq!(replies[1]["id"], Value::Null);
    assert_eq!(replies[1]["error"]["code"], -32700, "{replies:?}");

    // Both a connection opened before and a new one still work.
    assert!(before.call("spdk_get_version", None).is_ok());
    assert_eq!(p.call("bdev_malloc_create", malloc("M0", 64)), "M0");
    assert_eq!(p.names(), ["M0"]);
}

#[test]
fn wrong_param_types_are_invalid_params_naming_the_field() {
    let p = Plexd::start();
    let (code, msg) = p.call_err(
        "bdev_malloc_create",
        json!({"name": "M0", "block_size": "abc", "num_blocks": 64}),
    );
    assert_eq!(code, -32602, "{msg}");
    assert!(
        msg.contains("block_size"),
        "message does not name the field: {msg}"
    );
    let (code, msg) = p.call_err(
        "bdev_null_create",
        json!({"name": "N0", "block_size": 512, "num_blocks": "many"}),
    );
    assert_eq!(code, -32602, "{msg}");
    assert!(
        msg.contains("num_blocks"),
        "message does not name the field: {msg}"
    );
    assert!(p.names().is_empty());
}

#[test]
fn unknown_method_is_method_not_found() {
    let p = Plexd::start();
    let (code, msg) = p.call_err("bdev_frobnicate", json!({"name": "M0"}));
    assert_eq!(code, -32601);
    assert!(msg.contains("bdev_frobnicate"), "{msg}");
    assert!(p.names().is_empty());
}

#[test]
fn missing_required_params_are_invalid_params() {
    let p = Plexd::start();
    let (code, msg) = p.call_err(
        "bdev_malloc_create",
        json!({"name": "M0", "num_blocks": 64}),
    );
    assert_eq!(code, -32602, "{msg}");
    assert!(msg.contains("block_size"), "{msg}");
    let (code, msg) = p.call_err(
        "bdev_null_create",
        json!({"block_size": 512, "num_blocks": 64}),
    );
    assert_eq!(code, -32602, "{msg}");
    assert!(msg.contains("name"), "{msg}");
    let (code, msg) = p.call_err("bdev_malloc_delete", json!({}));
    assert_eq!(code, -32602, "{msg}");
    assert!(msg.contains("name"), "{msg}");
    // No params member at all.
    let err = p
        .client()
        .call("bdev_malloc_create", None)
        .expect_err("no params");
    assert_eq!(err.rpc_code(), Some(-32602), "{err}");
    assert!(p.names().is_empty());
}

#[test]
fn duplicate_name_is_eexist_and_the_first_bdev_is_unchanged() {
    let p = Plexd::start();
    assert_eq!(p.call("bdev_malloc_create", malloc("M0", 64)), "M0");
    let first = p.call("bdev_get_bdevs", json!({"name": "M0"}));
    let (code, msg) = p.call_err(
        "bdev_malloc_create",
        json!({"name": "M0", "block_size": 4096, "num_blocks": 128}),
    );
    assert_eq!(code, -17, "{msg}");
    assert!(msg.contains("M0"), "{msg}");
    let (code, msg) = p.call_err(
        "bdev_null_create",
        json!({"name": "M0", "block_size": 512, "num_blocks": 64}),
    );
    assert_eq!(code, -17, "{msg}");
    assert_eq!(p.call("bdev_get_bdevs", json!({"name": "M0"})), first);
    assert_eq!(first[0]["num_blocks"], 64);
    assert_eq!(first[0]["product_name"], "Malloc disk");
    assert_eq!(p.names(), ["M0"]);
}

#[test]
fn deleting_a_claimed_bdev_is_ebusy() {
    let p = Plexd::start();
    assert_eq!(p.call("bdev_malloc_create", malloc("M0", 64)), "M0");
    assert_eq!(
        p.call("bdev_error_create", json!({"base_name": "M0"})),
        "EE_M0"
    );
    assert_eq!(
        p.call("bdev_get_bdevs", json!({"name": "M0"}))[0]["claimed"],
        true
    );
    let (code, msg) = p.call_err("bdev_malloc_delete", json!({"name": "M0"}));
    assert_eq!(code, -16, "{msg}");
    assert!(msg.contains("M0"), "{msg}");
    assert_eq!(p.names(), ["EE_M0", "M0"]);
    assert_eq!(
        p.call("bdev_get_bdevs", json!({"name": "M0"}))[0]["claimed"],
        true
    );

    // Releasing the claim makes the delete work.
    assert_eq!(p.call("bdev_error_delete", json!({"name": "EE_M0"})), true);
    assert_eq!(
        p.call("bdev_get_bdevs", json!({"name": "M0"}))[0]["claimed"],
        false
    );
    assert_eq!(p.call("bdev_malloc_delete", json!({"name": "M0"})), true);
    assert!(p.names().is_empty());
}

#[test]
fn missing_backing_file_is_enoent_with_the_path() {
    let p = Plexd::start();
    let missing = p.dir.path().join("no-such.img");
    let missing = missing.to_str().expect("utf-8");
    let (code, msg) = p.call_err(
        "bdev_uring_create",
        json!({"name": "U0", "filename": missing}),
    );
    assert_eq!(code, -2, "{msg}");
    assert!(msg.contains(missing), "path missing from: {msg}");
    let (code, msg) = p.call_err(
        "bdev_aio_create",
        json!({"name": "A0", "filename": missing}),
    );
    assert_eq!(code, -2, "{msg}");
    assert!(msg.contains(missing), "path missing from: {msg}");
    assert!(p.names().is_empty());
}

#[test]
fn unreadable_file_is_eacces_for_an_unprivileged_plexd() {
    let p = Plexd::start_with(PlexdOpts {
        uid: Some(65534),
        ..Default::default()
    });
    let file = backing_file(&p, "root-only.img", 1 << 20);
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let (code, msg) = p.call_err("bdev_aio_create", json!({"name": "A0", "filename": file}));
    assert_eq!(code, -13, "{msg}");
    assert!(msg.contains(&file), "path missing from: {msg}");
    let (code, msg) = p.call_err("bdev_uring_create", json!({"name": "U0", "filename": file}));
    assert_eq!(code, -13, "{msg}");
    assert!(msg.contains(&file), "path missing from: {msg}");
    assert!(p.names().is_empty());
}

#[test]
fn block_size_not_a_multiple_of_512_is_einval() {
    let p = Plexd::start();
    for (method, bs) in [("bdev_malloc_create", 700), ("bdev_null_create", 1000)] {
        let (code, msg) = p.call_err(
            method,
            json!({"name": "X", "block_size": bs, "num_blocks": 64}),
        );
        assert_eq!(code, -22, "{method}: {msg}");
        assert!(msg.contains(&bs.to_string()), "{method}: {msg}");
    }
    assert!(p.names().is_empty());
}

#[test]
fn file_bdev_block_size_not_a_multiple_of_512_is_einval() {
    let p = Plexd::start();
    let file = backing_file(&p, "disk.img", 1 << 20);
    for method in ["bdev_uring_create", "bdev_aio_create"] {
        let (code, msg) = p.call_err(
            method,
            json!({"name": "F0", "filename": file, "block_size": 520}),
        );
        assert_eq!(code, -22, "{method}: {msg}");
    }
    assert!(p.names().is_empty());
}

#[test]
fn oversize_request_is_refused_and_closed_while_others_keep_working() {
    let p = Plexd::start_args(&["--rpc-max-request", "65536"]);
    let mut other = p.client();
    let big = json!({"jsonrpc": "2.0", "id": 1, "method": "bdev_get_bdevs",
        "params": {"name": "x".repeat(100 * 1024)}});
    let mut s = UnixStream::connect(&p.socket).expect("connect");
    // The server may close while we are still writing; that is fine.
    let _ = s.write_all(big.to_string().as_bytes());
    let replies = json_values(&read_until_closed(&mut s));
    assert_eq!(replies.len(), 1, "{replies:?}");
    assert_eq!(replies[0]["id"], Value::Null);
    assert_eq!(replies[0]["error"]["code"], -32600, "{replies:?}");
    let msg = replies[0]["error"]["message"].as_str().expect("message");
    assert!(msg.contains("65536"), "{msg}");

    // A connection opened before, a new one, and a large request under the limit still work.
    assert!(other.call("spdk_get_version", None).is_ok());
    let (code, _) = p.call_err("bdev_get_bdevs", json!({"name": "y".repeat(60 * 1024)}));
    assert_eq!(code, -19);
    assert!(p.names().is_empty());
}

#[test]
fn client_sending_half_a_request_and_leaving_affects_nobody() {
    let p = Plexd::start();
    let mut before = p.client();
    let request = serde_json::to_string_pretty(&json!({"jsonrpc": "2.0", "id": 1,
        "method": "bdev_malloc_create", "params": malloc("Half", 64)}))
    .expect("json");
    {
        let mut s = UnixStream::connect(&p.socket).expect("connect");
        s.write_all(&request.as_bytes()[..request.len() / 2])
            .expect("write");
    }
    assert!(before.call("spdk_get_version", None).is_ok());
    assert_eq!(p.call("bdev_malloc_create", malloc("M0", 64)), "M0");
    assert_eq!(p.names(), ["M0"], "the half request must not have run");
}

#[test]
fn hundred_clients_at_once_create_list_and_delete() {
    let p = Plexd::start();
    let barrier = Arc::new(Barrier::new(100));
    let threads: Vec<_> = (0..100)
        .map(|i| {
            let (socket, barrier) = (p.socket.clone(), barrier.clone());
            thread::spawn(move || {
                let mut c = RpcClient::connect(&socket).expect("connect");
                c.set_timeout(Some(std::time::Duration::from_secs(60)));
                let name = format!("C{i}");
                barrier.wait();
                let created = c.call("bdev_malloc_create", Some(malloc(&name, 256)));
                assert_eq!(created.expect("create"), json!(name));
                let all = c.call("bdev_get_bdevs", None).expect("list");
                assert!(
                    all.as_array()
                        .expect("array")
                        .iter()
                        .any(|b| b["name"] == name),
                    "{name} not listed"
                );
                let one = c
                    .call("bdev_get_bdevs", Some(json!({"name": name})))
                    .expect("get");
                assert_eq!(one[0]["num_blocks"], 256);
                let deleted = c.call("bdev_malloc_delete", Some(json!({"name": name})));
                assert_eq!(deleted.expect("delete"), json!(true));
                let gone = c.call("bdev_get_bdevs", Some(json!({"name": name})));
                assert_eq!(gone.expect_err("deleted").rpc_code(), Some(-19));
            })
        })
        .collect();
    for t in threads {
        t.join().expect("client thread");
    }
    assert!(p.names().is_empty(), "left over: {:?}", p.names());
}

#[test]
fn batch_request_gets_an_array_reply() {
    let p = Plexd::start();
    let batch = json!([
        {"jsonrpc": "2.0", "id": 1, "method": "spdk_get_version"},
        {"jsonrpc": "2.0", "method": "bdev_malloc_create", "params": malloc("B0", 64)},
        {"jsonrpc": "2.0", "id": 2, "method": "bdev_get_bdevs", "params": {"name": "nope"}},
        {"jsonrpc": "2.0", "id": 3, "method": "no_such_method"},
        {"id": 4, "method": "spdk_get_version"},
    ]);
    let replies = raw_exchange(&p.socket, batch.to_string().as_bytes());
    assert_eq!(replies.len(), 1, "one array reply expected: {replies:?}");
    let arr = replies[0].as_array().expect("array reply");
    let ids: Vec<&Value> = arr.iter().map(|r| &r["id"]).collect();
    assert_eq!(ids, [&json!(1), &json!(2), &json!(3), &json!(4)], "{arr:?}");
    assert!(arr[0]["result"]["version"].is_string());
    assert_eq!(arr[1]["error"]["code"], -19);
    assert_eq!(arr[2]["error"]["code"], -32601);
    assert_eq!(arr[3]["error"]["code"], -32600);
    // The notification inside the batch ran.
    assert_eq!(p.names(), ["B0"]);

    let empty = raw_exchange(&p.socket, b"[]");
    assert_eq!(empty.len(), 1);
    assert_eq!(empty[0]["error"]["code"], -32600);
    assert_eq!(p.names(), ["B0"]);
}

#[test]
fn notification_gets_no_reply() {
    let p = Plexd::start();
    let mut bytes =
        json!({"jsonrpc": "2.0", "method": "bdev_malloc_create", "params": malloc("N1", 64)})
            .to_string();
    bytes += &json!({"jsonrpc": "2.0", "id": null, "method": "bdev_malloc_create", "params": malloc("N2", 64)})
        .to_string();
    bytes += &json!({"jsonrpc": "2.0", "method": "bdev_malloc_create", "params": malloc("N1", 64)})
        .to_string(); // fails (EEXIST), and still no reply
    bytes += &json!({"jsonrpc": "2.0", "id": 7, "method": "bdev_get_bdevs"}).to_string();
    let replies = raw_exchange(&p.socket, bytes.as_bytes());
    assert_eq!(
        replies.len(),
        1,
        "only the request with an id is answered: {replies:?}"
    );
    assert_eq!(replies[0]["id"], 7);
    assert_eq!(plexd_tests::bdev_names(&replies[0]["result"]), ["N1", "N2"]);
}

#[test]
fn deleting_with_another_drivers_method_is_enodev_and_keeps_the_bdev() {
    let p = Plexd::start();
    assert_eq!(p.call("bdev_malloc_create", malloc("M0", 64)), "M0");
    for method in ["bdev_null_delete", "bdev_error_delete", "bdev_uring_delete"] {
        let (code, msg) = p.call_err(method, json!({"name": "M0"}));
        assert_eq!(code, -19, "{method}: {msg}");
        assert!(msg.contains("'M0'"), "{method}: {msg}");
        // M0 exists, so the message must not claim there is no such bdev.
        assert!(
            !msg.contains("no bdev named"),
            "{method}: garbled message: {msg}"
        );
    }
    assert_eq!(p.names(), ["M0"]);
    let (code, _) = p.call_err("bdev_malloc_delete", json!({"name": "Nope"}));
    assert_eq!(code, -19);
    assert_eq!(p.call("bdev_malloc_delete", json!({"name": "M0"})), true);
    assert!(p.names().is_empty());
}

#[test]
fn backing_file_smaller_than_a_block_is_einval() {
    let p = Plexd::start();
    let empty = backing_file(&p, "empty.img", 0);
    let small = backing_file(&p, "small.img", 1000);
    for method in ["bdev_uring_create", "bdev_aio_create"] {
        let (code, msg) = p.call_err(method, json!({"name": "F0", "filename": empty}));
        assert_eq!(code, -22, "{method}: {msg}");
        assert!(msg.contains(&empty), "{method}: {msg}");
        let (code, msg) = p.call_err(
            method,
            json!({"name": "F0", "filename": small, "block_size": 4096}),
        );
        assert_eq!(code, -22, "{method}: {msg}");
    }
    assert!(p.names().is_empty());
}
