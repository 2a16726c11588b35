#!/usr/bin/env bash
# Benchmarks thin_migrate's offline extraction of a thin device with
# 10 GiB mapped (163840 blocks of 64 KiB) against dd copying the same
# number of bytes, and prints a Markdown table (bench/run.sh writes the
# rest of BENCHMARKS.md; paste this under "thin_migrate").
#
#   bench/migrate.sh            (RUNS=3 by default)
#
# The data file is sparse: every data block holds a 4 KiB marker page,
# the rest is holes (640 MiB of data in 10 GiB). Two layouts of the
# same device: "contiguous" (virtual block v -> data block v) and
# "shuffled" (runs of 16 blocks, 1 MiB, in a random order in data
# space). thin_migrate reads in data-block order and leaves the zero
# pages of a fresh file as holes; dd reads and writes every byte. Each
# run ends with the copy flushed (thin_migrate fsyncs, dd
# conv=fdatasync), and the copy is removed between runs.
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${RUNS:-3}
cache=bench/cache/migrate
mkdir -p "$cache"
cargo build --release --quiet
dmpd=$PWD/target/release/dmpd
blocks=163840
bb=65536

make_pool() {
    local name=$1 layout=$2
    [ -s "$cache/$name.meta" ] && return
    python3 - "$layout" "$blocks" > "$cache/$name.xml" <<'EOF'
import random, sys
layout, blocks = sys.argv[1], int(sys.argv[2])
run = 16
order = list(range(blocks // run))
if layout == "shuffled":
    random.Random(7).shuffle(order)
print(f'<superblock uuid="" time="0" transaction="1" version="2" data_block_size="128" nr_data_blocks="{blocks + 1024}">')
print(f'  <device dev_id="1" mapped_blocks="{blocks}" transaction="0" creation_time="0" snap_time="0">')
for virt_run, data_run in enumerate(order):
    print(f'    <range_mapping origin_begin="{virt_run * run}" data_begin="{data_run * run}" length="{run}" time="0"/>')
print('  </device>')
print('</superblock>')
EOF
    truncate -s 64M "$cache/$name.meta"
    "$dmpd" thin_restore -i "$cache/$name.xml" -o "$cache/$name.meta"
}

make_data() {
    [ -s "$cache/data" ] && return
    python3 - "$cache/data" "$blocks" "$bb" <<'EOF'
import os, sys
path, blocks, bb = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
os.ftruncate(fd, (blocks + 1024) * bb)
for b in range(blocks):
    page = (b"data block %d " % b).ljust(4096, b"x")
    os.pwrite(fd, page, b * bb)
os.close(fd)
EOF
}

make_pool contiguous contiguous
make_pool shuffled shuffled
make_data

echo "| work | wall (s) | CPU (s) | written (MiB) |"
echo "|---|---:|---:|---:|"
measure() {
    local label=$1; shift
    local walls=() cpus=() written=0
    for _ in $(seq "$runs"); do
        rm -f "$cache/out"
        /usr/bin/time -o "$cache/time.out" -f "%e %U %S" "$@" >/dev/null 2>&1
        read -r wall user sys < "$cache/time.out"
        walls+=("$wall")
        cpus+=("$(awk -v u="$user" -v s="$sys" 'BEGIN { printf "%.2f", u + s }')")
        if [ -f "$cache/out" ]; then
            written=$(( $(stat -c %b "$cache/out") * $(stat -c %B "$cache/out") >> 20 ))
        fi
    done
    local mid=$(( (runs + 1) / 2 ))
    local mw mc
    mw=$(printf '%s\n' "${walls[@]}" | sort -g | sed -n "${mid}p")
    mc=$(printf '%s\n' "${cpus[@]}" | sort -g | sed -n "${mid}p")
    echo "| $label | $mw | $mc | $written |"
}
measure "dd bs=64M of the same 10 GiB to a file (conv=fdatasync)" \
    dd if="$cache/data" of="$cache/out" bs=64M count=160 conv=fdatasync
measure "thin_migrate, contiguous layout, to a file" \
    "$dmpd" thin_migrate --metadata-dev "$cache/contiguous.meta" --data-dev "$cache/data" \
    --thin-id 1 --dest-file "$cache/out"
measure "thin_migrate, shuffled 1 MiB runs, to a file" \
    "$dmpd" thin_migrate --metadata-dev "$cache/shuffled.meta" --data-dev "$cache/data" \
    --thin-id 1 --dest-file "$cache/out"
measure "dd bs=64M of the same 10 GiB to /dev/null (read only)" \
    dd if="$cache/data" of=/dev/null bs=64M count=160
measure "thin_migrate, shuffled, to /dev/null (every byte written)" \
    "$dmpd" thin_migrate --metadata-dev "$cache/shuffled.meta" --data-dev "$cache/data" \
    --thin-id 1 --dest-file /dev/null
rm -f "$cache/out"
