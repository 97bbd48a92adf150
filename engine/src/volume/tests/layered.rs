//! stripe-mirror (layered) volumes.

use std::time::Duration;

use super::*;
use crate::drivers::error::{self, Arming, ErrorKind, InjectTarget};
use crate::volume::copy::task::TaskState;
use crate::volume::model::objects::{KernelState, PlexState, VolumeState};

/// A stripe-mirror volume loses only the failed disk's column mirror: the other column
/// keeps both copies, data stays intact, and sub-volumes cannot be handled on their own.
#[test]
fn a_failed_disk_costs_stripe_mirror_only_its_column_mirror() {
    let e = engine();
    let vm = VolumeManager::new(e.clone());
    let d = error_disks(&e, 4, 16);
    vm.dg_create("dg01", &d, false).unwrap();
    let vol = vm
        .volume_create(&VolumeCreate {
            dg: "dg01".into(),
            name: "vol01".into(),
            size: 8 << 20,
            layout: "stripe-mirror".into(),
            ncol: Some(2),
            ..Default::default()
        })
        .unwrap();
    assert_eq!(vol, "dg01/vol01");
    let vol = e.bdevs().get(&vol).unwrap();
    let data = pattern(7, 8 << 20);
    write(&e, &vol, 0, &data).unwrap();
    let (cfg, _) = vm.config("dg01").unwrap();
    assert_eq!(
        cfg.volume("vol01-L01").unwrap().parent.as_deref(),
        Some("vol01")
    );
    let print = vm.vm_print(Some("dg01")).unwrap();
    assert!(print.contains("sv vol01-S01"), "{print}");
    // Sub-volumes belong to their parent.
    for r in [
        vm.volume_stop("dg01", "vol01-L01"),
        vm.volume_delete("dg01", "vol01-L01"),
    ] {
        assert!(r.unwrap_err().to_string().contains("sub-volume"));
    }
    let sub = e.bdevs().get("dg01/vol01-L01").unwrap();
    assert!(sub.claimed_by().is_some(), "the parent claims its columns");
    drop(sub);
    // disk02's writes fail: one mirror of one column goes.
    let victim_plex = plex_on(&vm, "disk02");
    let victim_sv = cfg.plex(&victim_plex).unwrap().volume.clone().unwrap();
    error::state_of(&e.bdevs().get(&d[1]).unwrap())
        .unwrap()
        .inject(InjectTarget::All, &Arming::new(ErrorKind::Failure, 100_000))
        .unwrap();
    let more = pattern(8, 1 << 20);
    write(&e, &vol, 0, &more).unwrap();
    let mut want = data.clone();
    want[..1 << 20].copy_from_slice(&more);
    assert_eq!(read(&e, &vol, 0, 8 << 20).unwrap(), want);
    let (cfg, _) = vm.config("dg01").unwrap();
    for p in &cfg.plexes {
        let vol_of = p.volume.clone().unwrap();
        let expect_failed = p.name == victim_plex;
        assert_eq!(
            p.state == PlexState::Iofail,
            expect_failed,
            "plex {} of {vol_of}: {:?}",
            p.name,
            p.state
        );
    }
    let other_sv = if victim_sv == "vol01-L01" {
        "vol01-L02"
    } else {
        "vol01-L01"
    };
    assert!(cfg
        .plexes_of(other_sv)
        .iter()
        .all(|p| p.state == PlexState::Active && p.kstate == KernelState::Enabled));
    error::state_of(&e.bdevs().get(&d[1]).unwrap())
        .unwrap()
        .clear();
    // Crash: every column resyncs on its own; the layered volume comes back whole.
    drop(vol);
    vm.crash();
    let vm2 = VolumeManager::new(e.clone());
    vm2.dg_import(Some("dg01"), None, None).unwrap();
    let vol = e.bdevs().get("dg01/vol01").unwrap();
    assert_eq!(read(&e, &vol, 0, 8 << 20).unwrap(), want);
    for t in vm2.tasks().list() {
        let t = vm2.tasks().wait(t.id, Duration::from_secs(60)).unwrap();
        assert_eq!(t.state(), TaskState::Done, "{}", t.kind);
    }
    // The failed mirror comes back with plex attach on its sub-volume.
    let id = vm2
        .plex_attach("dg01", &victim_sv, Some(&victim_plex), None, Duration::ZERO)
        .unwrap();
    assert_eq!(
        vm2.tasks()
            .wait(id, Duration::from_secs(60))
            .unwrap()
            .state(),
        TaskState::Done
    );
    let (cfg, _) = vm2.config("dg01").unwrap();
    assert!(cfg.plexes.iter().all(|p| p.state == PlexState::Active));
    assert!(cfg.volumes.iter().all(|v| v.state == VolumeState::Active));
    assert!(vm2
        .plex_attach("dg01", "vol01", None, None, Duration::ZERO)
        .is_err());
    drop(vol);
    vm2.volume_delete("dg01", "vol01").unwrap();
    let (cfg, _) = vm2.config("dg01").unwrap();
    assert!(cfg.volumes.is_empty() && cfg.subdisks.is_empty() && cfg.plexes.is_empty());
    assert!(e.bdevs().get("dg01/vol01-L01").is_err());
    vm2.shutdown();
    e.shutdown();
}

/// A group holding a stripe-mirror volume deports with it (the parent stops first, then its
/// columns), imports again with the data intact, deports again after a crash and re-import,
/// and is destroyed once the volume is deleted. Stopping the parent stops its columns too.
#[test]
fn a_group_with_a_stripe_mirror_volume_deports_and_imports_whole() {
    let e = engine();
    let vm = VolumeManager::new(e.clone());
    let d = disks(&e, 4, 16);
    vm.dg_create("dg01", &d, false).unwrap();
    let vol = vm
        .volume_create(&VolumeCreate {
            dg: "dg01".into(),
            name: "vsm".into(),
            size: 4 << 20,
            layout: "stripe-mirror".into(),
            ncol: Some(2),
            ..Default::default()
        })
        .unwrap();
    let vol = e.bdevs().get(&vol).unwrap();
    let data = pattern(21, 4 << 20);
    write(&e, &vol, 0, &data).unwrap();
    drop(vol);
    let subs = ["dg01/vsm-L01", "dg01/vsm-L02"];

    // volume_stop takes the columns down with the parent; volume_start brings them back.
    vm.volume_stop("dg01", "vsm").unwrap();
    for s in subs {
        assert!(e.bdevs().get(s).is_err(), "{s} still registered after stop");
    }
    // A column does not start on its own (deport would then leave it behind).
    let err = vm.volume_start("dg01", "vsm-L01").map(|()| "started");
    assert!(
        err.as_ref()
            .is_err_and(|e| e.to_string().contains("sub-volume")),
        "volume_start of a sub-volume: {err:?}"
    );
    vm.volume_start("dg01", "vsm").unwrap();
    for s in subs {
        assert!(e.bdevs().get(s).unwrap().claimed_by().is_some(), "{s}");
    }
    vm.volume_stop("dg01", "vsm").unwrap();
    vm.volume_start("dg01", "vsm").unwrap();

    vm.dg_deport("dg01")
        .unwrap_or_else(|err| panic!("deport with a stripe-mirror volume: {err}"));
    assert!(vm.group_names().is_empty());
    for s in ["dg01/vsm"].iter().chain(subs.iter()) {
        assert!(
            e.bdevs().get(s).is_err(),
            "{s} still registered after deport"
        );
    }
    for m in &d {
        assert!(e.bdevs().get(m).unwrap().claimed_by().is_none(), "{m}");
    }
    vm.dg_import(Some("dg01"), None, None).unwrap();
    let vol = e.bdevs().get("dg01/vsm").unwrap();
    assert_eq!(read(&e, &vol, 0, 4 << 20).unwrap(), data);
    drop(vol);

    // After a crash (no clean stop) and re-import, deport still works.
    vm.crash();
    let vm2 = VolumeManager::new(e.clone());
    vm2.dg_import(Some("dg01"), None, None).unwrap();
    for t in vm2.tasks().list() {
        let t = vm2.tasks().wait(t.id, Duration::from_secs(60)).unwrap();
        assert_eq!(t.state(), TaskState::Done, "{}", t.kind);
    }
    vm2.dg_deport("dg01")
        .unwrap_or_else(|err| panic!("deport after re-import: {err}"));
    vm2.dg_import(Some("dg01"), None, None).unwrap();
    let vol = e.bdevs().get("dg01/vsm").unwrap();
    assert_eq!(read(&e, &vol, 0, 4 << 20).unwrap(), data);
    drop(vol);
    let (cfg, _) = vm2.config("dg01").unwrap();
    assert!(
        cfg.volumes.iter().all(|v| v.state == VolumeState::Active),
        "{:?}",
        cfg.volumes
    );

    // An exported parent still refuses the deport, naming the parent.
    e.bdevs()
        .get("dg01/vsm")
        .unwrap()
        .claim("test export")
        .unwrap();
    let err = vm2.dg_deport("dg01").unwrap_err().to_string();
    assert!(
        err.contains("dg01/vsm ") || err.contains("volume vsm "),
        "{err}"
    );
    e.bdevs().get("dg01/vsm").unwrap().release_claim();

    // Destroy: refused naming the top volume only; fine after the volume is deleted.
    let err = vm2.dg_destroy("dg01").unwrap_err().to_string();
    assert!(err.contains("vsm") && !err.contains("vsm-L01"), "{err}");
    vm2.volume_delete("dg01", "vsm").unwrap();
    for s in subs {
        assert!(
            e.bdevs().get(s).is_err(),
            "{s} still registered after delete"
        );
    }
    vm2.dg_destroy("dg01").unwrap();
    vm2.shutdown();
    e.shutdown();
}

/// A stripe-mirror volume that cannot start at import (its bdev name is taken) leaves no
/// column running behind it, and the group still deports whole and imports again later.
#[test]
fn a_stripe_mirror_volume_that_cannot_start_leaves_no_column_behind() {
    let e = engine();
    let vm = VolumeManager::new(e.clone());
    let d = disks(&e, 4, 16);
    vm.dg_create("dg01", &d, false).unwrap();
    let vol = vm
        .volume_create(&VolumeCreate {
            dg: "dg01".into(),
            name: "vsm".into(),
            size: 4 << 20,
            layout: "stripe-mirror".into(),
            ncol: Some(2),
            ..Default::default()
        })
        .unwrap();
    let vol = e.bdevs().get(&vol).unwrap();
    let data = pattern(22, 4 << 20);
    write(&e, &vol, 0, &data).unwrap();
    drop(vol);
    vm.dg_deport("dg01").unwrap();
    // Another bdev took the volume's name meanwhile: the import cannot start it.
    malloc(&e, "dg01/vsm", 1);
    vm.dg_import(Some("dg01"), None, None).unwrap();
    assert!(!vm.is_started("dg01", "vsm"));
    for s in ["dg01/vsm-L01", "dg01/vsm-L02"] {
        assert!(
            e.bdevs().get(s).is_err(),
            "{s} runs although its parent did not start"
        );
    }
    vm.dg_deport("dg01").unwrap();
    for s in ["dg01/vsm-L01", "dg01/vsm-L02"] {
        assert!(e.bdevs().get(s).is_err(), "{s} left behind by the deport");
    }
    e.delete_bdev("dg01/vsm", None).unwrap();
    vm.dg_import(Some("dg01"), None, None).unwrap();
    let vol = e.bdevs().get("dg01/vsm").unwrap();
    assert_eq!(read(&e, &vol, 0, 4 << 20).unwrap(), data);
    drop(vol);
    vm.shutdown();
    e.shutdown();
}
