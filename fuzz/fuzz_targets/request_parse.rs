//! Arbitrary bytes as a guest's descriptor table and memory, through both descriptor-chain
//! walkers and the virtio-blk request parser (see `plexd_fuzz::request_parse`).

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    plexd_fuzz::request_parse::run(data);
});
