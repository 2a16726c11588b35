#!/usr/bin/env bash
# Benchmarks dmpd on large generated pools and writes BENCHMARKS.md.
#
#   bench/run.sh [m10|m50|m16g|cache|era|all]...  (default: all; RUNS=5 by default)
#
# Inputs are built once and cached in $BENCH_CACHE (default bench/cache):
# the XML from ../shared/bench/gen_thin_xml.py, the image from dmpd's
# thin_restore.
#   m10: --mappings 10000000 --snaps 8            (1 GiB metadata file)
#   m50: --mappings 50000000 --snaps 8 --seed 2   (4 GiB metadata file)
#   m16g: --mappings 70000000 --snaps 32 --diverge 0.2 --seed 3
#         (16 GiB metadata file, about 8.7 GiB of it used; a 1.4 GB XML
#         that takes minutes to generate and restore): thin_check,
#         thin_ls and thin_dump only.
# cache: two caches from ../shared/bench/gen_cache_xml.py, restored in
# format 2: c33m --nr-blocks 33000000 --resident 0.01 (a 3-level mapping
# index) and c2m --nr-blocks 2000000 --resident 1.0 --dirty 0.25 (dense);
# cache_restore, cache_dump and cache_repair on each.
# Each tool runs RUNS times; the table gives the median wall time, the
# median CPU time (user + system), the largest peak RSS and the largest
# peak heap. Peak RSS counts the pages of the memory-mapped metadata the
# tool touched; peak heap is the largest anonymous resident memory
# (RssAnon, sampled every 10 ms), which leaves the mapping out. "cold" runs drop the page cache first (root only). The
# physical floor is a sequential read of the used part of the image.
# Debian's thin_check/thin_dump 0.9.0 run on m10 for scale when present.
# REF_TOOLS=/path/to/pdata_tools adds the reference tools 1.x (built from
# their own sources elsewhere; nothing of them is kept here), REF_RUNS runs
# each (default 1).
# The durable-write floor is dd writing as many bytes as a restore does,
# with fdatasync: what thin_restore and thin_repair cannot go below.
# cache: two caches from ../shared/bench/gen_cache_xml.py restored by
# dmpd's cache_restore, c33m (--nr-blocks 33000000 --resident 0.01: a
# 3-level mapping index) and c2m (--nr-blocks 2000000 --resident 1.0
# --dirty 0.25); cache_check timed on both (Debian's 0.9.0 and, with
# REF_TOOLS, the reference 1.x beside). Its rows replace the "dm-cache"
# section of BENCHMARKS.md, leaving the thin figures as they are.
# era: e4m from ../shared/bench/gen_era_xml.py --nr-blocks 4000000
# --eras 40 --writesets 8 (a 1.4 GB XML, about 20 MiB of metadata),
# restored by dmpd's era_restore; era_check, era_dump, era_invalidate
# --written-since 20 (before the oldest writeset, so the era array is
# read too) and era_restore, with the reference 1.x beside. Its rows
# replace the "dm-era" section in the same way.
set -euo pipefail
cd "$(dirname "$0")/.."
which=${*:-all}
[ "$which" = all ] && which="m10 m50 m16g cache era"
runs=${RUNS:-5}
ref_runs=${REF_RUNS:-1}
cache=${BENCH_CACHE:-bench/cache}
mkdir -p "$cache"
cargo build --release --quiet
dmpd=$PWD/target/release/dmpd
gen=../shared/bench/gen_thin_xml.py
out=BENCHMARKS.md
rows=()

build_input() {
    local name=$1 size=$2; shift 2
    if [ ! -s "$cache/$name.xml" ]; then
        python3 "$gen" "$@" > "$cache/$name.xml.tmp" && mv "$cache/$name.xml.tmp" "$cache/$name.xml"
    fi
    if [ ! -s "$cache/$name.bin" ] || [ "$cache/$name.xml" -nt "$cache/$name.bin" ]; then
        rm -f "$cache/$name.bin"
        truncate -s "$size" "$cache/$name.bin"
        "$dmpd" thin_restore -i "$cache/$name.xml" -o "$cache/$name.bin"
    fi
}

can_drop() { [ "$(id -u)" = 0 ] && [ -w /proc/sys/vm/drop_caches ]; }
drop_caches() { sync; echo 3 > /proc/sys/vm/drop_caches; }

# peak_heap PID: the largest RssAnon (KiB) of PID until it exits.
peak_heap() {
    local pid=$1 peak=0 kb
    while kb=$(awk '/^RssAnon:/ {print $2}' "/proc/$pid/status" 2>/dev/null) && [ -n "$kb" ]; do
        [ "$kb" -gt "$peak" ] && peak=$kb
        sleep 0.01
    done
    echo "$peak"
}

# measure LABEL MODE(warm|cold) COMMAND...: appends a table row.
measure() {
    local label=$1 mode=$2; shift 2
    local walls=() cpus=() rss=0 heap=0
    for _ in $(seq "$runs"); do
        # Nothing an earlier run wrote may still be on its way to the
        # disk: the reference writes with O_DIRECT and no flush, so the
        # next tool's fsync would pay for its writes.
        sync
        [ "$mode" = cold ] && drop_caches
        /usr/bin/time -o "$cache/time.out" -f "%e %U %S %M" "$@" >/dev/null 2>&1 &
        local timer=$! h=0 child=
        # The tool is /usr/bin/time's only child.
        while [ -z "$child" ] && kill -0 "$timer" 2>/dev/null; do
            child=$(awk '{print $1}' "/proc/$timer/task/$timer/children" 2>/dev/null)
        done
        [ -n "$child" ] && h=$(peak_heap "$child")
        wait "$timer" || true
        [ "$h" -gt "$heap" ] && heap=$h
        read -r wall user sys maxrss < "$cache/time.out"
        walls+=("$wall")
        cpus+=("$(awk -v u="$user" -v s="$sys" 'BEGIN { printf "%.2f", u + s }')")
        [ "$maxrss" -gt "$rss" ] && rss=$maxrss
    done
    local mw mc
    mw=$(printf '%s\n' "${walls[@]}" | sort -g | sed -n "$(( (runs + 1) / 2 ))p")
    mc=$(printf '%s\n' "${cpus[@]}" | sort -g | sed -n "$(( (runs + 1) / 2 ))p")
    rows+=("| $label | $mode | $mw | $mc | $((rss / 1024)) | $((heap / 1024)) |")
    echo "$label ($mode): ${mw}s wall, ${mc}s cpu, $((rss / 1024)) MiB peak, $((heap / 1024)) MiB heap" >&2
}

used_bytes() {
    local free total
    free=$("$dmpd" thin_check "$1" 2>/dev/null | sed -n 's/METADATA_FREE_BLOCKS=//p')
    total=$(( $(stat -c %s "$1") / 4096 ))
    echo $(( (total - free) * 4096 ))
}

# with_reference TIMER NAME: TIMER's rows for the reference 1.x, REF_RUNS
# runs each, when REF_TOOLS names it.
with_reference() {
    [ -n "${REF_TOOLS:-}" ] && [ -x "$REF_TOOLS" ] || return 0
    local saved=$runs
    runs=$ref_runs
    "$1" "$2" "reference 1.x " "$REF_TOOLS"
    runs=$saved
}

# time_tools POOL LABEL BINARY: every tool of BINARY (a multi-call binary
# taking the tool name first) on POOL's image and XML.
time_tools() {
    local name=$1 who=$2 bin=$3
    local img=$cache/$1.bin xml=$cache/$1.xml scratch=$cache/$1.restore.bin
    measure "$name ${who}thin_check" warm "$bin" thin_check -q "$img"
    measure "$name ${who}thin_dump to a file" warm "$bin" thin_dump -o "$cache/$name.dump.xml" "$img"
    measure "$name ${who}thin_ls" warm "$bin" thin_ls "$img"
    measure "$name ${who}thin_delta (origin vs snapshot 1)" warm "$bin" thin_delta --thin1 0 --thin2 1 "$img"
    measure "$name ${who}thin_rmap (first 1M data blocks)" warm "$bin" thin_rmap --region 0..1000000 "$img"
    rm -f "$scratch"; truncate -s "$(stat -c %s "$img")" "$scratch"
    measure "$name ${who}thin_restore ($(( $(stat -c %s "$xml") / 1048576 )) MiB XML)" warm "$bin" thin_restore -i "$xml" -o "$scratch"
    measure "$name ${who}thin_repair (healthy input)" warm "$bin" thin_repair -i "$img" -o "$scratch"
    rm -f "$scratch"
    if can_drop; then
        # The floor right before the cold check: the disk's speed drifts.
        [ -z "$who" ] && measure "$name sequential read of ${mib} MiB (floor)" cold dd if="$img" of=/dev/null bs=1M count="$mib"
        measure "$name ${who}thin_check" cold "$bin" thin_check -q "$img"
    fi
}

# time_big POOL LABEL BINARY: the read-only tools users run at the
# largest sizes (boot-time checks, monitoring).
time_big() {
    local name=$1 who=$2 bin=$3 img=$cache/$1.bin
    measure "$name ${who}thin_check" warm "$bin" thin_check -q "$img"
    measure "$name ${who}thin_ls" warm "$bin" thin_ls "$img"
    measure "$name ${who}thin_dump to a file" warm "$bin" thin_dump -o "$cache/$name.dump.xml" "$img"
    rm -f "$cache/$name.dump.xml"
}

bench_big() {
    local name=$1 img=$cache/$1.bin used mib
    used=$(used_bytes "$img")
    mib=$(( (used + 1048575) / 1048576 ))
    measure "$name sequential read of ${mib} MiB (floor)" warm dd if="$img" of=/dev/null bs=1M count="$mib"
    time_big "$name" "" "$dmpd"
    with_reference time_big "$name"
}

bench_pool() {
    local name=$1 img=$cache/$1.bin xml=$cache/$1.xml
    local scratch=$cache/$name.restore.bin
    local used
    used=$(used_bytes "$img")
    local mib=$(( (used + 1048575) / 1048576 ))
    measure "$name sequential read of ${mib} MiB (floor)" warm dd if="$img" of=/dev/null bs=1M count="$mib"
    rm -f "$scratch"; truncate -s "$(stat -c %s "$img")" "$scratch"
    measure "$name durable write of ${mib} MiB (floor)" warm dd if=/dev/zero of="$scratch" bs=1M count="$mib" conv=fdatasync,notrunc
    time_tools "$name" "" "$dmpd"
    with_reference time_tools "$name"
    if [ "$name" = m10 ] && [ -x /usr/sbin/thin_check ]; then
        local saved=$runs
        runs=1
        measure "$name Debian thin_check 0.9.0" warm /usr/sbin/thin_check -q "$img"
        measure "$name Debian thin_dump 0.9.0 to /dev/null" warm /usr/sbin/thin_dump "$img"
        runs=$saved
    fi
}

# build_restored NAME SIZE GENERATOR RESTORE_TOOL ARGS...: the XML from
# ../shared/bench/GENERATOR and the image RESTORE_TOOL makes of it, once.
build_restored() {
    local name=$1 size=$2 gen=$3 tool=$4; shift 4
    if [ ! -s "$cache/$name.xml" ]; then
        python3 "../shared/bench/$gen" "$@" > "$cache/$name.xml.tmp" && mv "$cache/$name.xml.tmp" "$cache/$name.xml"
    fi
    if [ ! -s "$cache/$name.bin" ] || [ "$cache/$name.xml" -nt "$cache/$name.bin" ]; then
        rm -f "$cache/$name.bin"
        truncate -s "$size" "$cache/$name.bin"
        "$dmpd" "$tool" -i "$cache/$name.xml" -o "$cache/$name.bin"
    fi
}

# time_cache_tools CACHE LABEL BINARY: the cache writers of BINARY.
time_cache_tools() {
    local name=$1 who=$2 bin=$3
    local img=$cache/$1.bin xml=$cache/$1.xml scratch=$cache/$1.restore.bin
    rm -f "$scratch"; truncate -s "$(stat -c %s "$img")" "$scratch"
    measure "$name ${who}cache_restore ($(( $(stat -c %s "$xml") / 1048576 )) MiB XML)" warm "$bin" cache_restore -i "$xml" -o "$scratch"
    measure "$name ${who}cache_dump to a file" warm "$bin" cache_dump -o "$cache/$name.dump.xml" "$img"
    measure "$name ${who}cache_repair (healthy input)" warm "$bin" cache_repair -i "$img" -o "$scratch"
    rm -f "$scratch" "$cache/$name.dump.xml"
}

bench_cache() {
    local name=$1
    check_cache "$name"
    time_cache_tools "$name" "" "$dmpd"
    with_reference time_cache_tools "$name"
}

# time_era_tools ERA LABEL BINARY: every era tool of BINARY.
time_era_tools() {
    local name=$1 who=$2 bin=$3
    local img=$cache/$1.bin xml=$cache/$1.xml scratch=$cache/$1.restore.bin
    measure "$name ${who}era_check" warm "$bin" era_check "$img"
    measure "$name ${who}era_invalidate --written-since 20" warm "$bin" era_invalidate --written-since 20 -o "$cache/$name.inv.xml" "$img"
    measure "$name ${who}era_dump to a file" warm "$bin" era_dump -o "$cache/$name.dump.xml" "$img"
    rm -f "$scratch"; truncate -s "$(stat -c %s "$img")" "$scratch"
    measure "$name ${who}era_restore ($(( $(stat -c %s "$xml") / 1048576 )) MiB XML)" warm "$bin" era_restore -i "$xml" -o "$scratch"
    rm -f "$scratch" "$cache/$name.dump.xml" "$cache/$name.inv.xml"
}

bench_era() {
    local name=$1
    time_era_tools "$name" "" "$dmpd"
    with_reference time_era_tools "$name"
    if [ -x /usr/sbin/era_check ]; then
        local saved=$runs
        runs=1
        measure "$name Debian era_check 0.9.0" warm /usr/sbin/era_check "$cache/$name.bin"
        runs=$saved
    fi
}

load_before=$(uptime | sed 's/.*load average: //')
for pool in $which; do
    case $pool in
        m10)
            build_input m10 1G --mappings 10000000 --snaps 8
            bench_pool m10 ;;
        m50)
            build_input m50 4G --mappings 50000000 --snaps 8 --seed 2
            bench_pool m50 ;;
        m16g)
            build_input m16g 16G --mappings 70000000 --snaps 32 --diverge 0.2 --seed 3
            bench_big m16g ;;
        cache|era) ;; # below, after the pools
        *) echo "unknown size '$pool' (m10, m50, m16g, cache, era, all)" >&2; exit 1 ;;
    esac
done
load_after=$(uptime | sed 's/.*load average: //')


check_cache() {
    local name=$1 img=$cache/$1.bin saved=$runs
    measure "$name cache_check" warm "$dmpd" cache_check -q "$img"
    runs=1
    if [ -n "${REF_TOOLS:-}" ] && [ -x "$REF_TOOLS" ]; then
        measure "$name reference 1.x cache_check" warm "$REF_TOOLS" cache_check -q "$img"
    fi
    if [ -x /usr/sbin/cache_check ]; then
        measure "$name Debian cache_check 0.9.0" warm /usr/sbin/cache_check -q "$img"
    fi
    runs=$saved
    if can_drop; then
        measure "$name cache_check" cold "$dmpd" cache_check -q "$img"
    fi
}

# Sections of their own: the caches and the era device, timed after the
# pools, each written to a section file.
wants() { [[ " $which " == *" $1 "* ]]; }
sections=()
thin_rows=("${rows[@]}")
table_head() {
    echo "| work | cache | wall (s) | CPU (s) | peak RSS (MiB) | peak heap (MiB) |"
    echo "|---|---|---:|---:|---:|---:|"
}
if wants cache; then
    rows=()
    build_restored c33m 1G gen_cache_xml.py cache_restore --nr-blocks 33000000 --resident 0.01
    bench_cache c33m
    build_restored c2m 128M gen_cache_xml.py cache_restore --nr-blocks 2000000 --resident 1.0 --dirty 0.25
    bench_cache c2m
    {
        echo "## dm-cache"
        echo
        echo "Written by \`bench/run.sh $which\` on $(date -u +%Y-%m-%d); median of $runs runs (the reference's: $ref_runs, Debian's: one)."
        echo "c33m: 33,000,000 cache blocks, 1 % resident (a 3-level mapping index); c2m: 2,000,000 blocks, all resident, 25 % dirty."
        echo "Load average when the section was written: $(cut -d' ' -f1-3 /proc/loadavg) ($(nproc) cores). Peak RSS counts the mapped metadata pages read (c33m's image holds about 400 MiB of metadata)."
        echo
        table_head
        printf '%s\n' "${rows[@]}"
    } > "$cache/cache-section.md"
    sections+=("$cache/cache-section.md")
fi
if wants era; then
    rows=()
    build_restored e4m 128M gen_era_xml.py era_restore --nr-blocks 4000000 --eras 40 --writesets 8
    bench_era e4m
    {
        echo "## dm-era"
        echo
        echo "Written by \`bench/run.sh $which\` on $(date -u +%Y-%m-%d); median of $runs runs (the reference's: $ref_runs, Debian's: one)."
        echo "e4m: 4,000,000 blocks, current era 40, writesets for eras 33-40 (gen_era_xml.py --nr-blocks 4000000 --eras 40 --writesets 8)."
        echo "Load average when the section was written: $(cut -d' ' -f1-3 /proc/loadavg) ($(nproc) cores)."
        echo
        table_head
        printf '%s\n' "${rows[@]}"
    } > "$cache/era-section.md"
    sections+=("$cache/era-section.md")
fi
rows=("${thin_rows[@]}")

# The headings of the sections this run wrote, as one awk pattern.
fresh='^$^'
for f in "${sections[@]}"; do
    fresh="$fresh|^$(head -1 "$f")\$"
done

if [ ${#rows[@]} = 0 ]; then
    # Only sections were timed: they replace their namesakes in the
    # existing file, the rest of it stays.
    if [ -f "$out" ]; then
        awk -v drop="$fresh" '/^## / {skip = ($0 ~ drop)} !skip' "$out" > "$out.tmp"
    else
        : > "$out.tmp"
    fi
    { cat "$out.tmp"; for f in "${sections[@]}"; do echo; cat "$f"; done; } > "$out"
    rm -f "$out.tmp"
    echo "wrote the sections '$which' of $out" >&2
    exit 0
fi

# Sections other scripts or people wrote (bench/cache_writeback.sh,
# bench/migrate.sh, notes on a run) are carried over, and those of the
# cache and era runs when this run did not time them.
carried=$cache/carried-sections.md
: > "$carried"
if [ -f "$out" ]; then
    awk -v drop="$fresh" '/^## / {keep = ($0 !~ drop)} keep' "$out" > "$carried"
fi
{
    echo "# Benchmarks"
    echo
    echo "Written by \`bench/run.sh $which\` on $(date -u +%Y-%m-%d) ($(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(free -g | awk '/Mem:/ {print $2}') GiB)."
    echo "Median of $runs runs (the reference 1.x: $ref_runs; Debian's 0.9.0 tools: one). CPU = user + system."
    echo "Peak RSS includes the mapped metadata pages a tool touched; peak heap is anonymous memory only."
    echo "Load average (1, 5, 15 min) before the run: $load_before; after: $load_after."
    echo
    table_head
    printf '%s\n' "${rows[@]}"
    for f in "${sections[@]}"; do
        echo
        cat "$f"
    done
    if [ -s "$carried" ]; then
        echo
        cat "$carried"
    fi
} > "$out.new"
mv "$out.new" "$out"
echo "wrote $out" >&2
