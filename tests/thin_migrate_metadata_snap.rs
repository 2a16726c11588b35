//! thin_migrate -m reads a device's mappings from a metadata snapshot.
//! The snapshot's copy of the superblock has its space-map roots zeroed
//! (the kernel's `reserve_metadata_snap` does so, as does
//! thin_reserve_metadata_snap), so the pool's size must come from the
//! live superblock: found by the kernel tier, where thin_migrate refused
//! every mapping of a live pool as "beyond the pool's 0 data blocks".

mod common;

use common::{code, run, stderr, Scratch};

const BLOCK: usize = 64 * 1024;

#[test]
fn thin_migrate_m_copies_from_a_metadata_snapshot() {
    let s = Scratch::new("thin-migrate-msnap");
    let xml = s.path("pool.xml");
    std::fs::write(
        &xml,
        "<superblock uuid=\"\" time=\"0\" transaction=\"1\" version=\"2\" data_block_size=\"128\" nr_data_blocks=\"16\">\n\
         \x20 <device dev_id=\"0\" mapped_blocks=\"3\" transaction=\"0\" creation_time=\"0\" snap_time=\"0\">\n\
         \x20   <single_mapping origin_block=\"0\" data_block=\"3\" time=\"0\"/>\n\
         \x20   <single_mapping origin_block=\"1\" data_block=\"7\" time=\"0\"/>\n\
         \x20   <single_mapping origin_block=\"3\" data_block=\"15\" time=\"0\"/>\n\
         \x20 </device>\n</superblock>\n",
    )
    .unwrap();
    let meta = s.path("meta");
    std::fs::File::create(&meta)
        .unwrap()
        .set_len(4 << 20)
        .unwrap();
    let m = meta.to_str().unwrap();
    let o = run("thin_restore", &["-i", xml.to_str().unwrap(), "-o", m]);
    assert_eq!(code(&o), 0, "thin_restore: {}", stderr(&o));
    let o = run("thin_reserve_metadata_snap", &[m]);
    assert_eq!(code(&o), 0, "thin_reserve_metadata_snap: {}", stderr(&o));

    // Data block b is filled with the byte b + 1.
    let data = s.path("data");
    let bytes: Vec<u8> = (0..16u8)
        .flat_map(|b| std::iter::repeat_n(b + 1, BLOCK))
        .collect();
    std::fs::write(&data, &bytes).unwrap();
    let mut want = vec![0u8; 4 * BLOCK];
    for (v, d) in [(0usize, 3u8), (1, 7), (3, 15)] {
        want[v * BLOCK..(v + 1) * BLOCK].fill(d + 1);
    }

    for (name, snap) in [("live", false), ("snapshot", true)] {
        let out = s.path(&format!("copy-{name}"));
        let mut args = vec![
            "--metadata-dev",
            m,
            "--data-dev",
            data.to_str().unwrap(),
            "--thin-id",
            "0",
            "--dest-file",
            out.to_str().unwrap(),
        ];
        if snap {
            args.push("-m");
        }
        let o = run("thin_migrate", &args);
        assert_eq!(code(&o), 0, "thin_migrate ({name}): {}", stderr(&o));
        assert!(
            std::fs::read(&out).unwrap() == want,
            "thin_migrate ({name}): the copy differs from thin 0"
        );
    }
}
