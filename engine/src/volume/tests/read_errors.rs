//! Read errors on mirrors: served elsewhere, repaired, budget.

use super::*;
use crate::drivers::error::InjectTarget;
use crate::volume::objects::{KernelState, PlexState};
use crate::volume::resync::READ_ERROR_BUDGET;

fn setup() -> (
    Arc<Engine>,
    Arc<VolumeManager>,
    Vec<String>,
    Arc<Bdev>,
    String,
) {
    let e = engine();
    let vm = VolumeManager::new(e.clone());
    let d = error_disks(&e, 2, 16);
    vm.dg_create("dg01", &d, false).unwrap();
    let vol = create(&vm, "vol01", 4 << 20, "mirror");
    let victim = plex_on(&vm, "disk02");
    (e, vm, d, vol, victim)
}

fn errors_of(vm: &VolumeManager, plex: &str) -> u64 {
    let list = vm.volume_list(Some("dg01"), Some("vol01")).unwrap();
    list[0]["plexes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == plex)
        .map_or(0, |p| p["read_errors"].as_u64().unwrap())
}

/// Scenario 1: a read error on one mirror is served from the other, the block is rewritten
/// on the failing plex, which stays in with its error count raised.
#[test]
fn a_read_error_is_served_from_the_other_mirror_and_repaired() {
    let (e, vm, d, vol, victim) = setup();
    let data = pattern(1, 64 << 10);
    write(&e, &vol, 0, &data).unwrap();
    let raw = e.bdevs().get(&d[1]).unwrap();
    let writes_before = raw.iostat().num_write_ops;
    // The next read on disk02 fails: it is retried on the other plex.
    inject(&e, &d[1], InjectTarget::Read, 1);
    for _ in 0..4 {
        assert_eq!(read(&e, &vol, 0, 64 << 10).unwrap(), data);
    }
    wait_until("the repair", || errors_of(&vm, &victim) == 1);
    assert_eq!(
        plex_state(&vm, &victim),
        (PlexState::Active, KernelState::Enabled)
    );
    assert!(
        raw.iostat().num_write_ops > writes_before,
        "the range was rewritten"
    );
    assert_eq!(plex_read(&vm, &vol, &victim, 0, 128), data);
    drop(vol);
    vm.shutdown();
    e.shutdown();
}

/// Scenario 2: the rewrite fails too: the plex is detached and the volume keeps serving.
#[test]
fn a_read_error_whose_rewrite_fails_detaches_the_plex() {
    let (e, vm, d, vol, victim) = setup();
    let data = pattern(2, 8192);
    write(&e, &vol, 4096, &data).unwrap();
    inject(&e, &d[1], InjectTarget::All, 1000);
    for _ in 0..4 {
        assert_eq!(read(&e, &vol, 4096, 8192).unwrap(), data);
    }
    wait_until("the detach", || {
        plex_state(&vm, &victim).1 == KernelState::Detached
    });
    assert_eq!(plex_state(&vm, &victim).0, PlexState::Iofail);
    assert_eq!(read(&e, &vol, 4096, 8192).unwrap(), data);
    let more = pattern(3, 4096);
    write(&e, &vol, 0, &more).unwrap();
    assert_eq!(read(&e, &vol, 0, 4096).unwrap(), more);
    drop(vol);
    vm.shutdown();
    e.shutdown();
}

/// Past the read-error budget the plex is detached even though each repair worked.
#[test]
fn a_plex_past_its_read_error_budget_is_detached() {
    let (e, vm, d, vol, victim) = setup();
    let data = pattern(4, 4096);
    write(&e, &vol, 0, &data).unwrap();
    for i in 0..=READ_ERROR_BUDGET {
        if plex_state(&vm, &victim).1 == KernelState::Detached {
            break;
        }
        inject(&e, &d[1], InjectTarget::Read, 1);
        // Read until the failing plex has been hit and repaired.
        wait_until("a repaired read error", || {
            assert_eq!(read(&e, &vol, 0, 4096).unwrap(), data);
            errors_of(&vm, &victim) > i as u64
                || plex_state(&vm, &victim).1 == KernelState::Detached
        });
    }
    wait_until("the detach", || {
        plex_state(&vm, &victim).1 == KernelState::Detached
    });
    assert_eq!(read(&e, &vol, 0, 4096).unwrap(), data);
    drop(vol);
    vm.shutdown();
    e.shutdown();
}
