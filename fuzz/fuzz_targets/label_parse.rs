//! Arbitrary bytes as a VM disk's label block and as a configuration-slot header, through
//! `plexd_engine::volume::ondisk`: no panic; a label or header that decodes is canonical
//! (encoding it again gives the same bytes).
//!
//! Each input is tried twice: as is, and "sealed" (zero-padded to a block, then given the
//! right magic and version and a correct crc32c), so that short inputs reach the field checks
//! (every field lies in the first 280 bytes) that the checksum otherwise keeps the fuzzer from.

#![no_main]

use libfuzzer_sys::fuzz_target;
use plexd_engine::volume::ondisk::format::{
    crc32c, decode_config_header, encode_config_copy, verify_config_payload, Label, RegionLayout,
    CONFIG_MAGIC, FORMAT_VERSION, LABEL_MAGIC, LABEL_SIZE, SLOT_HEADER_SIZE,
};

/// `data`, zero-padded to at least 4096 bytes, with `magic`, the current version and a correct
/// crc32c in its first 4096 bytes.
fn sealed(data: &[u8], magic: &[u8; 8]) -> Vec<u8> {
    let mut b = data.to_vec();
    if b.len() < 4096 {
        b.resize(4096, 0);
    }
    b[..8].copy_from_slice(magic);
    b[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    let crc = crc32c(&b[..4092]);
    b[4092..4096].copy_from_slice(&crc.to_le_bytes());
    b
}

fn check_label(data: &[u8]) {
    if let Ok(label) = Label::decode(data) {
        let again = label.encode().expect("a decoded label encodes");
        assert_eq!(
            &again[..],
            &data[..LABEL_SIZE],
            "label decode is not canonical"
        );
        label.layout.validate().expect("a decoded layout is valid");
    }
}

fn check_config(data: &[u8]) {
    let Ok(h) = decode_config_header(data) else {
        return;
    };
    let rest = &data[SLOT_HEADER_SIZE..];
    let n = usize::try_from(h.payload_len)
        .unwrap_or(usize::MAX)
        .min(rest.len());
    let payload = &rest[..n];
    if verify_config_payload(&h, payload).is_ok() {
        // A payload that verifies re-encodes to the same header, given a slot it fits in.
        let layout = RegionLayout::for_disk(1 << 30, 512).expect("default layout");
        if h.check_fits(&layout).is_ok() {
            let copy = encode_config_copy(h.dg_id, h.seq, h.commit_id, payload, &layout)
                .expect("a fitting payload encodes");
            assert_eq!(&copy[..SLOT_HEADER_SIZE], &data[..SLOT_HEADER_SIZE]);
        }
    }
}

fuzz_target!(|data: &[u8]| {
    check_label(data);
    check_config(data);
    check_label(&sealed(data, &LABEL_MAGIC));
    check_config(&sealed(data, &CONFIG_MAGIC));
});
