//! SPDK's bdev_raid levels mapped onto volumes.

use std::time::Duration;

use super::*;
use crate::volume::api::raid::RaidLevel;
use crate::volume::copy::task::TaskState;

#[test]
fn raid_levels_map_onto_volumes_and_reassemble_from_their_disks() {
    let e = engine();
    let vm = VolumeManager::new(e.clone());
    let d = disks(&e, 7, 16);
    vm.raid_create("R0", RaidLevel::Raid0, &d[0..2], Some(64), None)
        .unwrap();
    vm.raid_create("R1", RaidLevel::Raid1, &d[2..4], None, None)
        .unwrap();
    vm.raid_create("C", RaidLevel::Concat, &d[4..6], None, None)
        .unwrap();
    let public = 12 * 2048; // 16 MiB minus the 4 MiB private region, in blocks
    for (name, blocks) in [("R0", 2 * public), ("R1", public), ("C", 2 * public)] {
        let b = e.bdevs().get(name).unwrap();
        assert_eq!(b.num_blocks(), blocks, "{name}");
        let data = pattern(b.num_blocks(), 1 << 20);
        write(&e, &b, (b.num_blocks() * 512) - (1 << 20), &data).unwrap();
        assert_eq!(
            read(&e, &b, (b.num_blocks() * 512) - (1 << 20), 1 << 20).unwrap(),
            data
        );
    }
    let list = serde_json::to_value(vm.raid_list("all").unwrap()).unwrap();
    assert_eq!(list.as_array().unwrap().len(), 3);
    let saved =
        crate::volume::manager::raid_config::saved_config(vm.lock().get("R1").unwrap(), "R1");
    assert_eq!(
        saved.unwrap()["params"]["base_bdevs"],
        serde_json::json!(["M2", "M3"])
    );

    // raid1: remove a base bdev, keep serving, add another one back (rebuilt).
    let r1 = e.bdevs().get("R1").unwrap();
    let data = pattern(3, 64 << 10);
    write(&e, &r1, 0, &data).unwrap();
    vm.raid_remove_base("M3").unwrap();
    assert!(e.bdevs().get("M3").unwrap().claimed_by().is_none());
    assert_eq!(read(&e, &r1, 0, 64 << 10).unwrap(), data);
    let id = vm.raid_add_base("R1", "M6").unwrap();
    let t = vm.tasks().wait(id, Duration::from_secs(60)).unwrap();
    assert_eq!(t.state(), TaskState::Done);
    let list = serde_json::to_value(vm.raid_list("online").unwrap()).unwrap();
    let r1_info = list
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "R1")
        .unwrap()
        .clone();
    assert_eq!(r1_info["num_base_bdevs_operational"], 2);
    for p in plex_names(&vm, "R1", "R1") {
        assert_eq!(plex_read(&vm, &r1, &p, 0, 128), data, "plex {p} rebuilt");
    }
    drop(r1);

    // Crash, then the saved config's bdev_raid_create re-assembles R0 with its data.
    let r0 = e.bdevs().get("R0").unwrap();
    let data = pattern(9, 256 << 10);
    write(&e, &r0, 1 << 20, &data).unwrap();
    let uuid = r0.uuid();
    drop(r0);
    vm.crash();
    let vm2 = VolumeManager::new(e.clone());
    vm2.raid_create("R0", RaidLevel::Raid0, &d[0..2], Some(64), Some(uuid))
        .unwrap();
    let r0 = e.bdevs().get("R0").unwrap();
    assert_eq!(r0.uuid(), uuid);
    assert_eq!(read(&e, &r0, 1 << 20, 256 << 10).unwrap(), data);
    drop(r0);
    // Delete frees the disks: they can form a new raid at once.
    vm2.raid_delete("R0").unwrap();
    assert!(e.bdevs().get("R0").is_err());
    vm2.raid_create("R0b", RaidLevel::Raid1, &d[0..2], None, None)
        .unwrap();
    // Bad input changes nothing.
    assert!(vm2
        .raid_create("X", RaidLevel::Raid1, &d[0..1], None, None)
        .is_err());
    assert!(RaidLevel::parse("raid5").is_err());
    assert!(vm2.raid_delete("nope").is_err());
    vm2.shutdown();
    e.shutdown();
}
