#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| fedplane_fuzz::dns_update(data));
