//! thin_metadata_size against figures worked out by hand from the
//! formula: data blocks = pool / block; leaves = ceil(blocks / 126);
//! metadata blocks = 1 + leaves + max thins (at most 4161600); bytes =
//! metadata blocks x 4096.

mod common;

use common::*;

fn size(args: &str) -> (i32, String, String) {
    let args: Vec<&str> = args.split_whitespace().collect();
    let o = run("thin_metadata_size", &args);
    (code(&o), stdout(&o), stderr(&o))
}

#[test]
fn figures_from_the_formula() {
    for (args, want) in [
        // 2097152 s / 128 s = 16384 blocks; 131 leaves; 133 blocks = 544768 B.
        ("-b 128 -s 2097152 -m 1", "1064 sectors"),
        ("-b 64k -s 1g -m 1", "1064 sectors"),
        ("-b 128 -s 2097152 -m 1 -u b", "544768 bytes"),
        ("-b 128 -s 2097152 -m 1 -u k", "532 kibibytes"),
        // 544768 / 1000 = 544.768
        ("-b 128 -s 2097152 -m 1 -u K", "544.77 kilobytes"),
        // 544768 / 2^20 = 0.51953125: below one, shortest form.
        ("-b 128 -s 2097152 -m 1 -u m -n=short", "0.51953125m"),
        (
            "-b 128 -s 2097152 -m 1 -u G -n=long",
            "0.000544768gigabytes",
        ),
        ("-b 128 -s 2097152 -m 1 -n", "1064"),
        // 2^40 / 2^16 = 16777216 blocks; 133153 leaves; +1 +100 = 133254
        // blocks = 545808384 B = 1066032 sectors.
        ("-b 64k -s 1t -m 100", "1066032 sectors"),
        // 10 GiB / 64 KiB = 163840; 1301 leaves; +1 +1000 = 2302 blocks.
        ("-b 64KiB -s 10GiB -m 1000", "18416 sectors"),
        // 1e11 / 131072 = 762939; 6056 leaves; +1 +10 = 6067 blocks =
        // 24850432 B = 24.850432 MB.
        ("-b 128k -s 100GB -m 10 -u M", "24.85 megabytes"),
        // 2^50 / 2^16 = 2^34 blocks: far past the cap of 4161600 blocks =
        // 17045913600 B = 15.875... GiB.
        ("-b 64k -s 1p -m 1 -u g", "15.88 gibibytes"),
        // 17045913600 / 2^40 = 0.015503168106079102 (shortest form, below one).
        ("-b 64k -s 1p -m 1 -u t -n=short", "0.015503168106079102t"),
        // 1 GiB blocks, one of them: 1 leaf, 2 metadata blocks.
        ("-b 1g -s 1g -m 0 -u b", "8192 bytes"),
        (
            "--block-size 1GiB --pool-size 1GiB --max-thins 0 --unit byte",
            "8192 bytes",
        ),
    ] {
        let (c, out, err) = size(args);
        assert_eq!(c, 0, "{args}: {err}");
        assert_eq!(out, format!("{want}\n"), "{args}");
    }
}

#[test]
fn refusals() {
    // Runtime refusals: exit 64 with a message.
    for args in [
        "-b 32k -s 1g -m 1",
        "-b 2g -s 4g -m 1",
        "-b 96k -s 1g -m 1",
        "-b 1m -s 512k -m 1",
    ] {
        let (c, out, err) = size(args);
        assert_eq!((c, out.as_str()), (64, ""), "{args}");
        assert!(!err.is_empty());
    }
    // Parse errors: exit 2.
    for args in [
        "-b 64q -s 1g -m 1",
        "-b 64k -s 1g -m 1k",
        "-b 64k -s 1g",
        "-b 64k -s 1g -m 1 -u furlong",
        "-b 64k -s 1g -m 1 -n=medium",
        "-b 64k -s 99999999999999999999 -m 1",
    ] {
        assert_eq!(size(args).0, 2, "{args}");
    }
}
