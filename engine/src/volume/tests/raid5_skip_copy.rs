//! A RAID-5 volume's `skip_copy` setting on the control side: asked for at create, stored
//! on the volume's record, published in its map (off while a log plex works), kept through
//! deport and import, changed by `volume_set` (committed, then published), and refused with
//! nothing changed for other layouts and bad requests. The I/O path's use of it has its own
//! tests.

use super::raid5_io::create_req;
use super::*;
use crate::volume::error::VolumeError;
use crate::volume::manager::settings::VolumeSet;

/// Group dg01 on four 16 MiB RAM disks.
fn group(e: &Engine, vm: &VolumeManager) {
    let d = disks(e, 4, 16);
    vm.dg_create("dg01", &d, false).unwrap();
}

/// A 1 MiB RAID-5 volume `name` of 3 columns with `nlog` logs and `skip_copy`.
fn raid5(name: &str, nlog: u32, skip_copy: Option<bool>) -> VolumeCreate {
    VolumeCreate {
        dg: "dg01".into(),
        name: name.into(),
        size: 1 << 20,
        layout: "raid5".into(),
        ncol: Some(3),
        nlog: Some(nlog),
        skip_copy,
        ..Default::default()
    }
}

/// Whether volume `vol`'s record has `skip_copy`.
fn recorded(vm: &VolumeManager, vol: &str) -> bool {
    let (cfg, _) = vm.config("dg01").unwrap();
    cfg.volume(vol).expect("the volume's record").skip_copy
}

/// Whether started volume `vol`'s published map has `skip_copy`.
fn published(vm: &VolumeManager, vol: &str) -> bool {
    let b = vm.engine().bdevs().get(&format!("dg01/{vol}")).unwrap();
    let shared = crate::volume::io::driver::shared_of(&b).expect("a volume");
    let map = shared.map();
    map.raid5.as_ref().expect("a RAID-5 map").skip_copy
}

/// `skip_copy` asked for at create is on the record and in the started volume's map, and
/// comes back after deport and import; without it both say no. With a working log plex the
/// record keeps the choice but the map does not use it (the log path copies).
#[test]
fn skip_copy_at_create_is_recorded_published_and_kept() {
    let e = engine();
    let vm = VolumeManager::new(e.clone());
    group(&e, &vm);
    create_req(&vm, &raid5("fast", 0, Some(true)));
    create_req(&vm, &raid5("plain", 0, None));
    create_req(&vm, &raid5("logged", 1, Some(true)));
    assert!(recorded(&vm, "fast") && published(&vm, "fast"));
    assert!(!recorded(&vm, "plain") && !published(&vm, "plain"));
    assert!(recorded(&vm, "logged"), "the record keeps the choice");
    assert!(!published(&vm, "logged"), "not used while a log plex works");
    // volume_list shows the setting, and leaves the field out when it is off.
    let listed = |vol: &str| {
        let list = vm.volume_list(Some("dg01"), Some(vol)).unwrap();
        let json = serde_json::to_value(&list).unwrap();
        (list[0].skip_copy, json[0].get("skip_copy").cloned())
    };
    assert_eq!(listed("fast"), (true, Some(serde_json::json!(true))));
    assert_eq!(listed("logged"), (true, Some(serde_json::json!(true))));
    assert_eq!(listed("plain"), (false, None));

    vm.dg_deport("dg01").unwrap();
    let vm = VolumeManager::new(e.clone());
    vm.dg_import(Some("dg01"), None, None).unwrap();
    assert!(recorded(&vm, "fast") && published(&vm, "fast"));
    assert!(!recorded(&vm, "plain") && !published(&vm, "plain"));
    assert!(recorded(&vm, "logged") && !published(&vm, "logged"));
    vm.shutdown();
    e.shutdown();
}

/// Checks that `req` is refused with an error containing `want` (EINVAL) and changes
/// nothing: the configuration, its sequence number and the bdevs are as before.
fn refused(e: &Engine, vm: &VolumeManager, req: &VolumeCreate, want: &[&str]) {
    let before = vm.config("dg01").unwrap();
    let bdevs = e.bdevs().list().len();
    let err = vm
        .volume_create(req)
        .expect_err(&format!("{req:?} was accepted"));
    assert!(matches!(err, VolumeError::Invalid(_)), "{err:?}");
    for w in want {
        assert!(
            err.to_string().contains(w),
            "{req:?}: '{err}' does not say '{w}'"
        );
    }
    assert_eq!(vm.config("dg01").unwrap(), before, "{req:?} changed dg01");
    assert_eq!(e.bdevs().list().len(), bdevs, "{req:?} made a bdev");
}

/// `skip_copy` on a layout without parity is refused, naming why, and creates nothing;
/// `skip_copy: false` there is what every volume has and is accepted.
#[test]
fn skip_copy_on_other_layouts_is_refused_at_create() {
    let e = engine();
    let vm = VolumeManager::new(e.clone());
    group(&e, &vm);
    for layout in [
        "concat",
        "stripe",
        "mirror",
        "mirror-stripe",
        "stripe-mirror",
    ] {
        let req = VolumeCreate {
            layout: layout.into(),
            ncol: None,
            nlog: None,
            ..raid5("v", 0, Some(true))
        };
        refused(
            &e,
            &vm,
            &req,
            &[
                "skip_copy applies to RAID-5 volumes only",
                &format!("a {layout} volume"),
            ],
        );
    }
    let req = VolumeCreate {
        layout: "mirror".into(),
        ncol: None,
        nlog: None,
        ..raid5("m", 0, Some(false))
    };
    create_req(&vm, &req);
    assert!(!recorded(&vm, "m"));
    vm.shutdown();
    e.shutdown();
}

/// `skip_copy: Some(on)` alone.
fn skip_copy(on: bool) -> VolumeSet {
    VolumeSet {
        skip_copy: Some(on),
    }
}

/// `volume_set skip_copy` on a started RAID-5 volume is committed and its map follows at
/// once, both ways; setting what is already set commits nothing. On a stopped volume it is
/// recorded and the map built at the next start has it; the setting survives deport and
/// import.
#[test]
fn volume_set_skip_copy_is_committed_and_published() {
    let e = engine();
    let vm = VolumeManager::new(e.clone());
    group(&e, &vm);
    create_req(&vm, &raid5("r5", 0, None));
    assert!(!published(&vm, "r5"));
    let (_, seq0) = vm.config("dg01").unwrap();
    vm.volume_set("dg01", "r5", &skip_copy(true)).unwrap();
    let (_, seq1) = vm.config("dg01").unwrap();
    assert!(seq1 > seq0, "committed");
    assert!(recorded(&vm, "r5") && published(&vm, "r5"));
    vm.volume_set("dg01", "r5", &skip_copy(true)).unwrap();
    assert_eq!(
        vm.config("dg01").unwrap().1,
        seq1,
        "nothing to change, no commit"
    );
    vm.volume_set("dg01", "r5", &skip_copy(false)).unwrap();
    assert!(!recorded(&vm, "r5") && !published(&vm, "r5"));

    vm.volume_stop("dg01", "r5").unwrap();
    vm.volume_set("dg01", "r5", &skip_copy(true)).unwrap();
    assert!(recorded(&vm, "r5"));
    vm.volume_start("dg01", "r5").unwrap();
    assert!(published(&vm, "r5"));

    vm.dg_deport("dg01").unwrap();
    let vm = VolumeManager::new(e.clone());
    vm.dg_import(Some("dg01"), None, None).unwrap();
    assert!(recorded(&vm, "r5") && published(&vm, "r5"));
    vm.volume_set("dg01", "r5", &skip_copy(false)).unwrap();
    assert!(!published(&vm, "r5"));
    vm.shutdown();
    e.shutdown();
}

/// `volume_set` without a property, on a group or volume that does not exist, on a
/// sub-volume, or with `skip_copy` on a volume without parity is refused with an error
/// saying so and changes nothing (configuration, sequence number, published maps).
#[test]
fn volume_set_refusals_change_nothing() {
    let e = engine();
    let vm = VolumeManager::new(e.clone());
    group(&e, &vm);
    create_req(&vm, &raid5("r5", 0, None));
    create(&vm, "m", 1 << 20, "mirror");
    create_req(
        &vm,
        &VolumeCreate {
            dg: "dg01".into(),
            name: "sm".into(),
            size: 1 << 20,
            layout: "stripe-mirror".into(),
            ncol: Some(2),
            ..Default::default()
        },
    );
    let (cfg, _) = vm.config("dg01").unwrap();
    let sub = cfg
        .volumes
        .iter()
        .find(|v| v.parent.as_deref() == Some("sm"))
        .expect("a sub-volume of sm")
        .name
        .clone();
    // The generation of each volume's published map: a republished map has a new one.
    let generations = || {
        ["r5", "m", "sm"].map(|v| {
            let b = e.bdevs().get(&format!("dg01/{v}")).unwrap();
            crate::volume::io::driver::shared_of(&b)
                .expect("a volume")
                .map()
                .generation
        })
    };
    let before = vm.config("dg01").unwrap();
    let maps = generations();
    let refused = |dg: &str, vol: &str, set: &VolumeSet, errno: i32, want: &str| {
        let err = vm
            .volume_set(dg, vol, set)
            .expect_err(&format!("volume_set {dg}/{vol} {set:?} was accepted"));
        assert!(err.to_string().contains(want), "{vol} {set:?}: '{err}'");
        assert_eq!(err.errno(), errno, "{vol} {set:?}: '{err}'");
        assert_eq!(
            vm.config("dg01").unwrap(),
            before,
            "{vol} {set:?} changed dg01"
        );
        assert_eq!(generations(), maps, "{vol} {set:?} published a map");
    };
    refused(
        "dg01",
        "r5",
        &VolumeSet::default(),
        libc::EINVAL,
        "volume_set: give at least one property to change (skip_copy)",
    );
    refused("dg09", "r5", &skip_copy(true), libc::ENOENT, "dg09");
    refused(
        "dg01",
        "nosuch",
        &skip_copy(true),
        libc::ENOENT,
        "dg01/nosuch",
    );
    refused(
        "dg01",
        "m",
        &skip_copy(true),
        libc::EINVAL,
        "skip_copy applies to RAID-5 volumes only",
    );
    // Off is what a mirror has, but the property is still not one of a mirror's.
    refused(
        "dg01",
        "m",
        &skip_copy(false),
        libc::EINVAL,
        "a mirror volume has no parity",
    );
    refused(
        "dg01",
        &sub,
        &skip_copy(true),
        libc::EINVAL,
        "sub-volume (a column) of layered volume sm; change sm instead",
    );
    refused(
        "dg01",
        "sm",
        &skip_copy(true),
        libc::EINVAL,
        "a stripe-mirror volume has no parity",
    );
    vm.shutdown();
    e.shutdown();
}
