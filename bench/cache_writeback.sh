#!/usr/bin/env bash
# cache_writeback against dd, moving the same bytes between the same files.
#
#   bench/cache_writeback.sh        (RUNS=3 by default; BENCH_DIR for the files)
#
# A cache of 65536 blocks of 32 KiB, every block resident and dirty
# (2 GiB), over a 4 GiB origin; the mappings from
# ../shared/bench/gen_cache_xml.py (scattered origin blocks in short runs,
# as a policy promotes them). Each run restores the metadata afresh, so
# every block is dirty again. dd copies the 2 GiB of the fast file to the
# origin file in 1 MiB blocks, once through the page cache with a final
# fdatasync (as cache_writeback flushes the origin) and once with direct
# I/O both ways (as cache_writeback reads and writes). The table gives the
# median wall time and CPU time (user + system).
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${RUNS:-3}
dir=${BENCH_DIR:-bench/cache/writeback}
mkdir -p "$dir"
cargo build --release --quiet
dmpd=$PWD/target/release/dmpd
gen=../shared/bench/gen_cache_xml.py

if [ ! -s "$dir/cache.xml" ]; then
    python3 "$gen" --nr-blocks 65536 --resident 1.0 --dirty 1.0 --block-size 64 \
        --origin-blocks 131072 > "$dir/cache.xml.tmp"
    mv "$dir/cache.xml.tmp" "$dir/cache.xml"
fi
if [ ! -s "$dir/fast" ]; then
    dd if=/dev/urandom of="$dir/fast" bs=1M count=2048 status=none
fi
if [ ! -s "$dir/origin" ]; then
    dd if=/dev/zero of="$dir/origin" bs=1M count=4096 status=none
fi
truncate -s 64M "$dir/meta.orig"
"$dmpd" cache_restore -i "$dir/cache.xml" -o "$dir/meta.orig"

median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

# time_it NAME CMD...: RUNS timed runs (after one untimed) of CMD.
time_it() {
    local name=$1; shift
    local walls=() cpus=()
    for i in $(seq 0 "$runs"); do
        cp "$dir/meta.orig" "$dir/meta"
        sync
        /usr/bin/time -o "$dir/time" -f "%e %U %S" "$@" >/dev/null 2>"$dir/stderr" ||
            { echo "$name failed: $(cat "$dir/stderr")" >&2; exit 1; }
        local t
        t=$(tail -1 "$dir/time")
        [ "$i" = 0 ] && continue
        walls+=("$(echo "$t" | awk '{print $1}')")
        cpus+=("$(echo "$t" | awk '{printf "%.2f", $2 + $3}')")
    done
    printf '| %s | %s | %s |\n' "$name" \
        "$(printf '%s\n' "${walls[@]}" | median)" "$(printf '%s\n' "${cpus[@]}" | median)"
}

echo "| work (2 GiB) | wall (s) | CPU (s) |"
echo "|---|---:|---:|"
time_it "cache_writeback (default 64 MiB buffer)" \
    "$dmpd" cache_writeback --metadata-device "$dir/meta" --origin-device "$dir/origin" --fast-device "$dir/fast"
time_it "cache_writeback --no-metadata-update" \
    "$dmpd" cache_writeback --no-metadata-update --metadata-device "$dir/meta" --origin-device "$dir/origin" --fast-device "$dir/fast"
time_it "dd bs=1M conv=notrunc,fdatasync" \
    dd if="$dir/fast" of="$dir/origin" bs=1M count=2048 conv=notrunc,fdatasync status=none
time_it "dd bs=1M iflag=direct oflag=direct" \
    dd if="$dir/fast" of="$dir/origin" bs=1M count=2048 conv=notrunc iflag=direct oflag=direct status=none
