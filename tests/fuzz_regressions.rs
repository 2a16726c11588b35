//! Every input a fuzz target once crashed on (fuzz/regressions/TARGET/)
//! runs through the same entry point again, and must not panic.

use std::path::Path;

fn replay(target: &str, run: fn(&[u8])) -> usize {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/regressions")
        .join(target);
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return 0;
    };
    let mut n = 0;
    for e in entries {
        let data = std::fs::read(e.unwrap().path()).unwrap();
        run(&data);
        n += 1;
    }
    n
}

#[test]
fn crashes_found_by_fuzzing_stay_fixed() {
    let n = replay("check_image", dmpd::testing::exercise_image)
        + replay("parse_blocks", dmpd::testing::exercise_block)
        + replay("xml_reader", dmpd::testing::exercise_xml)
        + replay("pack_reader", dmpd::testing::exercise_pack)
        + replay("cache_reader", dmpd::testing::exercise_cache_image)
        + replay("cache_xml_reader", dmpd::testing::exercise_cache_xml);
    assert!(n >= 1, "no regression inputs found");
}

#[test]
fn the_seed_corpora_run_clean() {
    replay("../corpus/check_image", dmpd::testing::exercise_image);
    replay("../corpus/xml_reader", dmpd::testing::exercise_xml);
    replay("../corpus/pack_reader", dmpd::testing::exercise_pack);
    replay("../corpus/parse_blocks", dmpd::testing::exercise_block);
    replay(
        "../corpus/cache_reader",
        dmpd::testing::exercise_cache_image,
    );
    replay("../corpus/era_image", dmpd::testing::exercise_era_image);
    replay("../corpus/era_xml", dmpd::testing::exercise_era_xml);
    let n = replay(
        "../corpus/cache_xml_reader",
        dmpd::testing::exercise_cache_xml,
    );
    assert!(n >= 3, "the cache XML seeds are missing");
}
