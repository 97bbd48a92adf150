//! SPDK's `bdev_raid_create` with `raid_level` `raid5f` on plexd's RAID-5 engine: the plex it
//! makes, writes SPDK's raid5f refuses (partial stripes, sub-strip), parity on the disks,
//! `bdev_raid_get_bdevs` while whole, degraded and offline, the saved config re-assembling it,
//! delete, and bad input refused with nothing written.

use super::raid5_io::parity_mismatch;
use super::*;
use crate::drivers::error::InjectTarget;
use crate::volume::api::raid::RaidLevel;
use crate::volume::model::objects::PlexLayout;

/// `bdev_raid_get_bdevs` (category `all`) entry of raid `name`, as JSON.
fn raid_info(vm: &VolumeManager, name: &str) -> serde_json::Value {
    let list = serde_json::to_value(vm.raid_list("all").unwrap()).unwrap();
    list.as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == name)
        .unwrap_or_else(|| panic!("no raid {name} in {list}"))
        .clone()
}

/// Writes `data` at `off` of `vol` and into `model`.
fn put(e: &Engine, vol: &Arc<Bdev>, model: &mut [u8], off: u64, data: &[u8]) {
    write(e, vol, off, data).unwrap_or_else(|err| panic!("write {off}+{}: {err}", data.len()));
    model[off as usize..off as usize + data.len()].copy_from_slice(data);
}

/// A raid5f of 4 base bdevs is one RAID-5 plex with column `i` on base bdev `i` and SPDK's
/// size; writes of every shape SPDK's raid5f refuses read back with the parity right on the
/// disks; `bdev_raid_get_bdevs` and the saved config describe it as SPDK does, and the saved
/// config re-assembles it with its data after a crash; a removed base bdev leaves it online
/// and degraded (a second removal is refused), also after re-assembly; delete frees the base
/// bdevs.
#[test]
fn raid5f_is_a_raid5_plex_that_takes_partial_stripe_writes() {
    let e = engine();
    let vm = VolumeManager::new(e.clone());
    // Unequal base bdevs: the smallest one's data area sets every column's length.
    let base: Vec<String> = [16u64, 20, 16, 18]
        .iter()
        .enumerate()
        .map(|(i, mib)| {
            let n = format!("M{i}");
            malloc(&e, &n, *mib);
            n
        })
        .collect();
    // "5f" is SPDK's short name.
    let level = RaidLevel::parse("5f").unwrap();
    assert_eq!(level, RaidLevel::Raid5f);
    vm.raid_create("R5", level, &base, Some(64), None).unwrap();

    let (cfg, _) = vm.config("R5").unwrap();
    let plexes = cfg.plexes_of("R5");
    assert_eq!(plexes.len(), 1);
    assert_eq!(
        plexes[0].layout,
        PlexLayout::Raid5 {
            ncol: 4,
            stripe_unit: 128
        },
        "64 KiB strips of 512-byte blocks"
    );
    let members = vm.member_bdevs("R5").unwrap();
    for s in cfg.subdisks_of(&plexes[0].name) {
        assert_eq!(
            members[&s.disk], base[s.column as usize],
            "column {} is on base bdev {}",
            s.column, s.column
        );
    }
    // Each base bdev keeps 4 MiB for its label and private region; the smallest has 12 MiB
    // of data, which is whole 64 KiB strips: 3 data columns of 12 MiB.
    let smallest = cfg.disks.iter().map(|d| d.public_len).min().unwrap();
    assert_eq!(smallest, 12 * 2048);
    let vol = e.bdevs().get("R5").unwrap();
    assert_eq!(vol.num_blocks(), 3 * (smallest / 128 * 128));

    let len = vol.num_blocks() * 512;
    let mut model = vec![0u8; len as usize];
    let stripe = 3 * (64 << 10);
    // 128 KiB on 4 columns: two of a stripe's three data strips (SPDK's raid5f fails it).
    put(&e, &vol, &mut model, 0, &pattern(1, 128 << 10));
    // Sub-strip writes: one block, one unaligned 4 KiB across a strip boundary, and a few
    // blocks in the parity-rotated second stripe.
    put(&e, &vol, &mut model, 7 * 512, &pattern(2, 512));
    put(&e, &vol, &mut model, (62 << 10) + 512, &pattern(3, 4096));
    put(
        &e,
        &vol,
        &mut model,
        stripe + (10 << 10),
        &pattern(4, 3 * 512),
    );
    // A full stripe, and a write over parts of three stripes.
    put(
        &e,
        &vol,
        &mut model,
        4 * stripe,
        &pattern(5, stripe as usize),
    );
    put(
        &e,
        &vol,
        &mut model,
        6 * stripe - 1024,
        &pattern(6, 2 * stripe as usize),
    );
    // The last block.
    put(&e, &vol, &mut model, len - 512, &pattern(7, 512));
    assert!(read(&e, &vol, 0, len).unwrap() == model, "read back");
    assert_eq!(parity_mismatch(&vm, &vol), None, "parity on the disks");

    // bdev_raid_get_bdevs: SPDK's shape for a raid5f.
    let r = raid_info(&vm, "R5");
    assert_eq!(r["raid_level"], "raid5f", "{r}");
    assert_eq!(r["strip_size_kb"], 64, "{r}");
    assert_eq!(r["state"], "online", "{r}");
    assert_eq!(r["uuid"], vol.uuid().to_string(), "{r}");
    for k in [
        "num_base_bdevs",
        "num_base_bdevs_discovered",
        "num_base_bdevs_operational",
    ] {
        assert_eq!(r[k], 4, "{k}: {r}");
    }
    let names: Vec<&str> = r["base_bdevs_list"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| {
            assert_eq!(b["is_configured"], true, "{b}");
            b["name"].as_str().unwrap()
        })
        .collect();
    assert_eq!(names, base);

    // The saved config recreates it, and after a crash it re-assembles with its data.
    let saved =
        crate::volume::manager::raid_config::saved_config(vm.lock().get("R5").unwrap(), "R5")
            .unwrap();
    assert_eq!(saved["method"], "bdev_raid_create");
    let p = &saved["params"];
    assert_eq!(p["raid_level"], "raid5f", "{saved}");
    assert_eq!(p["strip_size_kb"], 64, "{saved}");
    assert_eq!(p["base_bdevs"], serde_json::json!(base), "{saved}");
    let uuid = vol.uuid();
    drop(vol);
    vm.crash();
    let vm = VolumeManager::new(e.clone());
    let level = RaidLevel::parse(p["raid_level"].as_str().unwrap()).unwrap();
    let uuid_saved: uuid::Uuid = p["uuid"].as_str().unwrap().parse().unwrap();
    assert_eq!(uuid_saved, uuid);
    vm.raid_create(
        "R5",
        level,
        &base,
        p["strip_size_kb"].as_u64(),
        Some(uuid_saved),
    )
    .unwrap();
    let vol = e.bdevs().get("R5").unwrap();
    assert_eq!(vol.uuid(), uuid);
    assert!(
        read(&e, &vol, 0, len).unwrap() == model,
        "after re-assembly"
    );
    assert_eq!(raid_info(&vm, "R5")["raid_level"], "raid5f");
    // It crashed without a log: its parity resync finishes before a base bdev goes (a column
    // lost before then would leave rows whose parity nobody checked).
    super::wait_until("the parity resync", || !vm.tasks().busy("R5", "R5"));

    // No rebuild of a raid5f base bdev yet: none can be added.
    malloc(&e, "M9", 16);
    let err = vm.raid_add_base("R5", "M9").unwrap_err().to_string();
    assert!(err.contains("only to raid1"), "{err}");

    // Removing a base bdev leaves the raid online, degraded, its slot empty, the bdev free.
    vm.raid_remove_base("M1").unwrap();
    let degraded = |vm: &VolumeManager| {
        let r = raid_info(vm, "R5");
        assert_eq!(r["state"], "online", "{r}");
        assert_eq!(r["num_base_bdevs"], 4, "{r}");
        assert_eq!(r["num_base_bdevs_discovered"], 3, "{r}");
        assert_eq!(r["num_base_bdevs_operational"], 3, "{r}");
        let slots: Vec<serde_json::Value> = r["base_bdevs_list"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| b["name"].clone())
            .collect();
        assert_eq!(
            slots,
            [
                serde_json::json!("M0"),
                serde_json::Value::Null,
                serde_json::json!("M2"),
                serde_json::json!("M3")
            ],
            "{r}"
        );
    };
    degraded(&vm);
    assert!(e.bdevs().get("M1").unwrap().claimed_by().is_none());
    assert!(read(&e, &vol, 0, len).unwrap() == model, "degraded reads");
    put(&e, &vol, &mut model, stripe + 4096, &pattern(8, 100 << 10));
    assert!(read(&e, &vol, 0, len).unwrap() == model, "degraded write");
    // A second removal would take it offline: refused, nothing changed.
    let err = vm.raid_remove_base("M2").unwrap_err().to_string();
    assert!(err.contains("offline"), "{err}");
    degraded(&vm);
    assert!(e.bdevs().get("M2").unwrap().claimed_by().is_some());
    assert!(
        vm.raid_remove_base("M1").is_err(),
        "M1 is no longer in a raid"
    );

    // The saved config lists the base bdevs left, and re-assembles the degraded raid.
    let saved =
        crate::volume::manager::raid_config::saved_config(vm.lock().get("R5").unwrap(), "R5")
            .unwrap();
    let left: Vec<String> = serde_json::from_value(saved["params"]["base_bdevs"].clone()).unwrap();
    assert_eq!(left, ["M0", "M2", "M3"]);
    // A clean stop (a degraded RAID-5 volume that crashed may rightly refuse to start
    // unforced).
    drop(vol);
    vm.shutdown();
    let vm = VolumeManager::new(e.clone());
    vm.raid_create("R5", RaidLevel::Raid5f, &left, Some(64), Some(uuid))
        .unwrap();
    let vol = e.bdevs().get("R5").unwrap();
    assert!(
        read(&e, &vol, 0, len).unwrap() == model,
        "degraded after re-assembly"
    );
    degraded(&vm);

    // Delete frees the base bdevs: they form a new raid5f at once.
    drop(vol);
    vm.raid_delete("R5").unwrap();
    assert!(e.bdevs().get("R5").is_err());
    for b in &base {
        assert!(e.bdevs().get(b).unwrap().claimed_by().is_none(), "{b}");
    }
    // The removed base bdev (M1) included.
    vm.raid_create("R5b", RaidLevel::Raid5f, &base[..3], Some(4), None)
        .unwrap();
    let vol = e.bdevs().get("R5b").unwrap();
    assert_eq!(
        read(&e, &vol, 0, 128 << 10).unwrap(),
        vec![0u8; 128 << 10],
        "a new raid5f reads as zeroes"
    );
    drop(vol);
    vm.shutdown();
    e.shutdown();
}

/// A raid5f that loses a base bdev stays online with one fewer operational (SPDK's degraded
/// raid5f), serving its data, and the failed base bdev can be removed; losing a second takes
/// it offline.
#[test]
fn raid5f_degraded_stays_online_and_a_second_loss_takes_it_offline() {
    let e = engine();
    let vm = VolumeManager::new(e.clone());
    let d = error_disks(&e, 4, 16);
    vm.raid_create("R5", RaidLevel::Raid5f, &d, Some(16), None)
        .unwrap();
    let vol = e.bdevs().get("R5").unwrap();
    let len = vol.num_blocks() * 512;
    let mut model = pattern(1, (4 << 20) as usize);
    write(&e, &vol, 0, &model).unwrap();

    // Base bdev 2 fails a write: its column is detached, the raid stays online.
    inject(&e, &d[2], InjectTarget::Write, 1_000_000);
    put(&e, &vol, &mut model, 3 * 512, &pattern(2, 256 << 10));
    let r = raid_info(&vm, "R5");
    assert_eq!(r["state"], "online", "{r}");
    assert_eq!(r["num_base_bdevs"], 4, "{r}");
    assert_eq!(r["num_base_bdevs_discovered"], 4, "{r}");
    assert_eq!(r["num_base_bdevs_operational"], 3, "{r}");
    let configured: Vec<bool> = r["base_bdevs_list"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["is_configured"].as_bool().unwrap())
        .collect();
    assert_eq!(configured, [true, true, false, true], "{r}");
    // The failed base bdev can be removed (how SPDK frees one): its slot empties.
    vm.raid_remove_base(&d[2]).unwrap();
    let r = raid_info(&vm, "R5");
    assert_eq!(r["state"], "online", "{r}");
    assert_eq!(r["num_base_bdevs_discovered"], 3, "{r}");
    assert_eq!(r["num_base_bdevs_operational"], 3, "{r}");
    assert!(r["base_bdevs_list"][2]["name"].is_null(), "{r}");
    assert!(e.bdevs().get(&d[2]).unwrap().claimed_by().is_none());
    assert_eq!(
        serde_json::to_value(vm.raid_list("online").unwrap()).unwrap()[0]["name"],
        "R5"
    );
    assert!(
        read(&e, &vol, 0, 4 << 20).unwrap() == model,
        "degraded reads"
    );

    // A second base bdev fails: offline, and it says so.
    inject(&e, &d[0], InjectTarget::Write, 1_000_000);
    assert!(write(&e, &vol, 0, &pattern(3, 3 * (16 << 10))).is_err());
    let r = raid_info(&vm, "R5");
    assert_eq!(r["state"], "offline", "{r}");
    assert_eq!(r["num_base_bdevs_operational"], 2, "{r}");
    assert!(vm.raid_list("online").unwrap().is_empty());
    assert_eq!(vm.raid_list("offline").unwrap().len(), 1);
    assert!(read(&e, &vol, 0, 4096).is_err(), "offline returns nothing");
    assert!(len > 4 << 20);
    drop(vol);
    vm.shutdown();
    e.shutdown();
}

/// Bad raid5f input is refused with SPDK's reason, before any base bdev is written: fewer
/// than 3 base bdevs, no strip size, a strip size of 0, not a power of two or outside 4 KiB
/// to 1 MiB, a base bdev listed twice, a missing base bdev.
#[test]
fn bad_raid5f_input_is_refused_and_writes_nothing() {
    let e = engine();
    let vm = VolumeManager::new(e.clone());
    let d = disks(&e, 3, 16);
    let two = vec![d[0].clone(), d[1].clone()];
    let dup = vec![d[0].clone(), d[1].clone(), d[0].clone()];
    let missing = vec![d[0].clone(), d[1].clone(), "nope".to_string()];
    for (bases, strip, want) in [
        (
            &two,
            Some(64),
            "At least 3 base devices required for raid5f",
        ),
        (&d, None, "strip_size_kb is required"),
        (&d, Some(0), "Invalid strip size 0"),
        (&d, Some(48), "Invalid strip size 48"),
        (&d, Some(2), "4 to 1024"),
        (&d, Some(2048), "4 to 1024"),
        (&dup, Some(64), "listed twice"),
        (&missing, Some(64), "nope"),
    ] {
        let err = vm
            .raid_create("R5", RaidLevel::Raid5f, bases, strip, None)
            .unwrap_err();
        assert!(
            matches!(
                err,
                crate::volume::error::VolumeError::Invalid(_)
                    | crate::volume::error::VolumeError::NotFound { .. }
            ),
            "{bases:?} {strip:?}: {err:?}"
        );
        let msg = err.to_string();
        assert!(msg.contains(want), "{bases:?} {strip:?}: {msg}");
        assert!(vm.config("R5").is_err(), "no group made");
        assert!(e.bdevs().get("R5").is_err(), "no bdev made");
        for b in &d {
            let b = e.bdevs().get(b).unwrap();
            assert!(b.claimed_by().is_none(), "{} claimed", b.name());
            assert_eq!(
                read(&e, &b, 0, 1 << 20).unwrap(),
                vec![0u8; 1 << 20],
                "{} written",
                b.name()
            );
        }
    }
    assert!(RaidLevel::parse("raid5").is_err());
    vm.shutdown();
    e.shutdown();
}

/// A 3-base-bdev raid5f with one base bdev removed re-assembles after a restart from its
/// saved config of two base bdevs (fewer than a new raid5f takes), with its data.
#[test]
fn degraded_raid5f_of_three_reassembles_from_two_base_bdevs() {
    let e = engine();
    let vm = VolumeManager::new(e.clone());
    let d = disks(&e, 3, 8);
    vm.raid_create("R5", RaidLevel::Raid5f, &d, Some(8), None)
        .unwrap();
    let vol = e.bdevs().get("R5").unwrap();
    let model = pattern(5, (vol.num_blocks() * 512) as usize);
    write(&e, &vol, 0, &model).unwrap();
    vm.raid_remove_base(&d[0]).unwrap();
    let saved =
        crate::volume::manager::raid_config::saved_config(vm.lock().get("R5").unwrap(), "R5")
            .unwrap();
    let left: Vec<String> = serde_json::from_value(saved["params"]["base_bdevs"].clone()).unwrap();
    assert_eq!(left, d[1..]);
    drop(vol);
    vm.shutdown();
    let vm = VolumeManager::new(e.clone());
    vm.raid_create("R5", RaidLevel::Raid5f, &left, Some(8), None)
        .unwrap();
    let vol = e.bdevs().get("R5").unwrap();
    assert!(read(&e, &vol, 0, model.len() as u64).unwrap() == model);
    let r = raid_info(&vm, "R5");
    assert_eq!(
        (r["state"].clone(), r["num_base_bdevs_operational"].clone()),
        (serde_json::json!("online"), serde_json::json!(2)),
        "{r}"
    );
    // The new-raid rule still holds for bdevs that carry no raid.
    let err = vm
        .raid_create("R6", RaidLevel::Raid5f, &d[..1], Some(8), None)
        .unwrap_err()
        .to_string();
    assert!(err.contains("At least 3"), "{err}");
    drop(vol);
    vm.shutdown();
    e.shutdown();
}
