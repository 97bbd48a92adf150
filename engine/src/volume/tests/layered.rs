//! stripe-mirror (layered) volumes.

use std::time::Duration;

use super::*;
use crate::drivers::error::{self, Arming, ErrorKind, InjectTarget};
use crate::volume::objects::{KernelState, PlexState, VolumeState};
use crate::volume::task::TaskState;

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
