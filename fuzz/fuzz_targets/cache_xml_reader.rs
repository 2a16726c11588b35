//! Fuzz target: see dmpd::testing::exercise_cache_xml.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    dmpd::testing::exercise_cache_xml(data);
});
