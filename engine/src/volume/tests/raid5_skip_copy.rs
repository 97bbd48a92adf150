//! A RAID-5 volume's `skip_copy` setting on the control side: asked for at create, stored
//! on the volume's record, published in its map (off while a log plex works), kept through
//! deport and import, and refused with nothing changed for other layouts. The I/O path's use
//! of it has its own tests.

use super::raid5_io::create_req;
use super::*;
use crate::volume::error::VolumeError;

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
