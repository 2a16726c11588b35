//! No input makes an era tool panic: the fuzz targets' entry points over
//! a few thousand deterministic mutations of the seed corpora (a small
//! restored image, damaged variants of it, and its XML). Each mutation
//! that a checker accepts is also restored and checked again inside
//! the entry points.

use std::path::Path;

/// A small, fixed pseudo-random sequence (no dependency, the same on
/// every run).
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }
}

fn seeds(target: &str) -> Vec<Vec<u8>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let mut v: Vec<Vec<u8>> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| std::fs::read(e.unwrap().path()).unwrap())
        .collect();
    v.sort();
    v
}

/// Mutations: bytes set to edge values in the structures' header areas
/// and anywhere, words overwritten with small numbers.
fn mutate(seed: &[u8], rng: &mut Lcg, header_bias: bool) -> Vec<u8> {
    let mut d = seed.to_vec();
    for _ in 0..1 + rng.next() % 4 {
        let at = if header_bias {
            let block = rng.next() as usize % (d.len() / 4096).max(1);
            block * 4096 + rng.next() as usize % 256
        } else {
            rng.next() as usize % d.len().max(1)
        };
        if at >= d.len() {
            continue;
        }
        match rng.next() % 4 {
            0 => d[at] = 0,
            1 => d[at] = 0xff,
            2 => d[at] ^= 1 << (rng.next() % 8),
            _ => {
                let v = (rng.next() % 70) as u32;
                let end = (at + 4).min(d.len());
                d[at..end].copy_from_slice(&v.to_le_bytes()[..end - at]);
            }
        }
    }
    d
}

#[test]
fn mutated_era_images_never_panic() {
    let mut rng = Lcg(0x5eed);
    for seed in seeds("era_image") {
        dmpd::testing::exercise_era_image(&seed);
        for _ in 0..300 {
            dmpd::testing::exercise_era_image(&mutate(&seed, &mut rng, true));
        }
    }
}

#[test]
fn mutated_era_xml_never_panics() {
    let mut rng = Lcg(0xe7a);
    for seed in seeds("era_xml") {
        dmpd::testing::exercise_era_xml(&seed);
        for _ in 0..2000 {
            dmpd::testing::exercise_era_xml(&mutate(&seed, &mut rng, false));
        }
    }
}
