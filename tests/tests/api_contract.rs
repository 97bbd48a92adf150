//! The RPC contract against the real daemon: every typed method's reply, read as its
//! `plexd_control::api` result type and written back, is the JSON the daemon sent. A field the
//! daemon renames, adds or drops without the api type following fails here (the api modules'
//! own tests pin the shapes; this checks the handlers fill them).

use plexd_control::api::bdev::{BdevGetBdevs, BdevGetIostat, GetBdevsParams, GetIostatParams};
use plexd_control::api::dg::{DgCreate, DgCreateParams, DgList, DgListParams};
use plexd_control::api::disk::DiskList;
use plexd_control::api::drivers::{
    BdevDelayCreate, BdevErrorCreate, BdevMallocCreate, DelayCreateParams, ErrorCreateParams,
    MallocCreateParams,
};
use plexd_control::api::framework::{
    FrameworkGetReactors, FrameworkGetSubsystems, RpcGetMethods, SpdkGetVersion, ThreadGetStats,
};
use plexd_control::api::plex::{PlexAttach, PlexAttachParams};
use plexd_control::api::raid::{
    BaseBdevs, BdevRaidCreate, BdevRaidGetBdevs, RaidCreateParams, RaidGetBdevsParams,
};
use plexd_control::api::task::{TaskList, TaskListParams, TaskWait, TaskWaitParams};
use plexd_control::api::vhost::{
    CreateBlkControllerParams, GetControllersParams, VhostCreateBlkController, VhostGetControllers,
};
use plexd_control::api::volume::{
    Size, VmPrint, VolumeCreate, VolumeCreateParams, VolumeList, VolumeResize, VolumeResizeParams,
};
use plexd_control::api::{params_value, NoParams, RpcMethod};
use plexd_control::RpcClient;
use plexd_tests::Plexd;
use serde_json::Value;

/// Calls `M` raw and typed and asserts the typed result writes back to the raw reply.
fn same_both_ways<M: RpcMethod>(client: &mut RpcClient, params: &M::Params) -> M::Result {
    let raw = client
        .call(M::METHOD, params_value(params))
        .unwrap_or_else(|e| panic!("{}: {e}", M::METHOD));
    let typed = client
        .invoke::<M>(params)
        .unwrap_or_else(|e| panic!("{} typed: {e}", M::METHOD));
    let back = serde_json::to_value(&typed).expect("serialise");
    assert_eq!(
        strip_volatile(back),
        strip_volatile(raw),
        "{}: the api type lost or renamed a field",
        M::METHOD
    );
    typed
}

/// Clears the counters that move between two calls (ticks, busy/idle, elapsed).
fn strip_volatile(mut v: Value) -> Value {
    match &mut v {
        Value::Object(map) => {
            for (k, x) in map.iter_mut() {
                if ["ticks", "busy", "idle", "elapsed"].contains(&k.as_str()) && x.is_number() {
                    *x = Value::Null;
                } else {
                    *x = strip_volatile(x.take());
                }
            }
        }
        Value::Array(items) => {
            for x in items.iter_mut() {
                *x = strip_volatile(x.take());
            }
        }
        _ => {}
    }
    v
}

#[test]
fn typed_results_are_what_the_daemon_sends() {
    let sockets = tempfile::tempdir().expect("tempdir");
    let dir = sockets.path().to_str().expect("utf-8").to_string();
    let p = Plexd::start_args(&["-S", &dir]);
    let mut c = p.client();

    let name = c
        .invoke::<BdevMallocCreate>(&MallocCreateParams {
            name: Some("M0".into()),
            block_size: 512,
            num_blocks: 2048,
            ..Default::default()
        })
        .expect("malloc");
    assert_eq!(name, "M0");
    c.invoke::<BdevMallocCreate>(&MallocCreateParams {
        name: Some("M1".into()),
        block_size: 4096,
        num_blocks: 256,
        ..Default::default()
    })
    .expect("malloc");
    let ee = c
        .invoke::<BdevErrorCreate>(&ErrorCreateParams {
            base_name: "M0".into(),
            uuid: None,
        })
        .expect("error bdev");
    assert_eq!(ee, "EE_M0");
    c.invoke::<BdevDelayCreate>(&DelayCreateParams {
        name: "D1".into(),
        base_bdev_name: "M1".into(),
        avg_read_latency: 10,
        p99_read_latency: 20,
        avg_write_latency: 30,
        p99_write_latency: 40,
        uuid: None,
    })
    .expect("delay bdev");
    let done = c
        .invoke::<VhostCreateBlkController>(&CreateBlkControllerParams {
            ctrlr: "vhost.0".into(),
            dev_name: "EE_M0".into(),
            ..Default::default()
        })
        .expect("vhost controller");
    assert!(done);

    let bdevs = same_both_ways::<BdevGetBdevs>(&mut c, &GetBdevsParams::default());
    assert_eq!(bdevs.len(), 4);
    let claimed = same_both_ways::<BdevGetBdevs>(
        &mut c,
        &GetBdevsParams {
            name: Some("M0".into()),
            ..Default::default()
        },
    );
    assert_eq!(claimed[0].claimed.copied(), Some(true));
    assert!(claimed[0].claimed_by.is_some());
    same_both_ways::<BdevGetIostat>(&mut c, &GetIostatParams::default());
    same_both_ways::<VhostGetControllers>(&mut c, &GetControllersParams::default());
    same_both_ways::<SpdkGetVersion>(&mut c, &NoParams {});
    same_both_ways::<RpcGetMethods>(&mut c, &Default::default());
    same_both_ways::<FrameworkGetSubsystems>(&mut c, &NoParams {});
    same_both_ways::<FrameworkGetReactors>(&mut c, &NoParams {});
    same_both_ways::<ThreadGetStats>(&mut c, &NoParams {});
}

/// A malloc bdev of 32 MiB in 512-byte blocks.
fn malloc(c: &mut RpcClient, name: &str) {
    c.invoke::<BdevMallocCreate>(&MallocCreateParams {
        name: Some(name.into()),
        block_size: 512,
        num_blocks: 65536,
        ..Default::default()
    })
    .unwrap_or_else(|e| panic!("malloc {name}: {e}"));
}

#[test]
fn typed_volume_results_are_what_the_daemon_sends() {
    let p = Plexd::start();
    let mut c = p.client();
    for m in ["M0", "M1", "M2", "M3", "M4"] {
        malloc(&mut c, m);
    }
    assert!(c
        .invoke::<DgCreate>(&DgCreateParams {
            name: "dg01".into(),
            disks: vec!["M0".into(), "M1".into(), "M2".into()],
            ..Default::default()
        })
        .expect("dg_create"));
    let bdev = c
        .invoke::<VolumeCreate>(&VolumeCreateParams {
            dg: "dg01".into(),
            name: "vol01".into(),
            size: Size::Text("4M".into()),
            layout: Some("mirror".into()),
            alloc: Some(vec!["disk01".into(), "disk02".into()]),
            ..Default::default()
        })
        .expect("volume_create");
    assert!(!bdev.is_empty());
    let resized = c
        .invoke::<VolumeResize>(&VolumeResizeParams {
            dg: "dg01".into(),
            name: "vol01".into(),
            size: Size::Bytes(8 << 20),
        })
        .expect("volume_resize");
    assert_eq!(resized.num_blocks.copied(), Some(16384));
    let started = c
        .invoke::<PlexAttach>(&PlexAttachParams {
            dg: "dg01".into(),
            volume: "vol01".into(),
            alloc: Some(vec!["disk03".into()]),
            ..Default::default()
        })
        .expect("plex_attach");
    let id = started.task.copied().expect("a task id");
    let task = c
        .invoke::<TaskWait>(&TaskWaitParams {
            id,
            timeout_ms: Some(60_000),
        })
        .expect("task_wait");
    assert_eq!(task.state.get().map(String::as_str), Some("done"));
    assert!(c
        .invoke::<BdevRaidCreate>(&RaidCreateParams {
            name: "R1".into(),
            raid_level: "raid1".into(),
            base_bdevs: BaseBdevs::Text("M3 M4".into()),
            ..Default::default()
        })
        .expect("bdev_raid_create"));

    // Let every copy (the raid1's resync, if it has one) end, so task_list holds still.
    let running = c.invoke::<TaskList>(&TaskListParams {}).expect("task_list");
    for t in running {
        let id = t.id.copied().expect("task id");
        c.invoke::<TaskWait>(&TaskWaitParams {
            id,
            timeout_ms: Some(60_000),
        })
        .expect("task_wait");
    }

    let groups = same_both_ways::<DgList>(&mut c, &DgListParams::default());
    assert_eq!(groups.len(), 2, "dg01 and the raid's group");
    same_both_ways::<DiskList>(&mut c, &DgListParams::default());
    let volumes = same_both_ways::<VolumeList>(
        &mut c,
        &DgListParams {
            dg: Some("dg01".into()),
            name: Some("vol01".into()),
        },
    );
    assert_eq!(volumes[0].plexes.get().map(Vec::len), Some(3));
    same_both_ways::<VolumeList>(&mut c, &DgListParams::default());
    let print = same_both_ways::<VmPrint>(&mut c, &DgListParams::default());
    assert!(print.contains("vol01"), "{print}");
    let tasks = same_both_ways::<TaskList>(&mut c, &TaskListParams {});
    assert!(!tasks.is_empty());
    let raids = same_both_ways::<BdevRaidGetBdevs>(&mut c, &RaidGetBdevsParams::default());
    assert_eq!(raids.len(), 1);
    assert_eq!(raids[0].base_bdevs_list.len(), 2);
}
