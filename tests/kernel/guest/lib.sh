# Helpers for the scenario scripts (sourced first by each).
# Results go to the serial console as lines starting with @@.

say() { echo "@@$*"; }
fail() { echo "@@fail $*"; }

# Runs a command; a non-zero status is reported as a failure.
run() {
    "$@" || fail "status $? from: $*"
}

# Runs a command that must fail; prints its stderr as @@refused NAME TEXT.
refused() {
    name=$1
    shift
    if out=$("$@" 2>&1 >/dev/null); then
        fail "$name: succeeded but should have been refused: $*"
    else
        say "refused $name $(echo "$out" | tr '\n' ' ')"
    fi
}

wait_disks() {
    n=0
    while [ "$(ls /sys/block | grep -c '^vd')" -lt "$1" ]; do
        n=$((n + 1))
        [ "$n" -gt 100 ] && { fail "only $(ls /sys/block | grep -c '^vd') of $1 disks"; return; }
        sleep 0.1
    done
}

zero_meta() { dd if=/dev/zero of="$1" bs=4096 count=1 conv=notrunc 2>/dev/null; }

sectors() { blockdev --getsz "$1"; }

# pat DEV FIRST COUNT GEN: COUNT 4 KiB blocks from 4 KiB block FIRST, each
# one 64-byte line naming the device, the block and the generation,
# repeated.
pat() {
    awk -v d="${1##*/}" -v f="$2" -v n="$3" -v g="$4" 'BEGIN {
        for (b = f; b < f + n; b++) {
            l = sprintf("%-63s\n", d " blk " b " gen " g)
            s = l l l l l l l l; s = s s s s s s s s
            printf "%s", s
        }
    }' | dd of="$1" bs=4096 seek="$2" conv=notrunc iflag=fullblock 2>/dev/null ||
        fail "pat $*"
}

# rnd DEV SPAN COUNT GEN SEED: COUNT patterned 4 KiB blocks at random
# (seeded) places among the first SPAN blocks.
rnd() {
    for b in $(awk -v s="$5" -v span="$2" -v n="$3" 'BEGIN {
        srand(s); for (i = 0; i < n; i++) print int(rand() * span) }'); do
        pat "$1" "$b" 1 "$4"
    done
}

sha() { say "sha $1 $(sha256sum <"$2" | cut -d' ' -f1)"; }

# Every dm device's status and table, as @@status / @@table lines (or
# @@KEY / @@KEY-table with a key).
status_all() {
    k=${1:-status}
    t=table
    [ -n "$1" ] && t=$1-table
    dmsetup status | while read -r l; do say "$k $l"; done
    dmsetup table | while read -r l; do say "$t $l"; done
}

# verify_pool P META DATA ID...: the kernel reads metadata dmpd wrote.
# Activates pool P-pool (64 KiB blocks) and thin devices P-tID ($SZ
# sectors each), prints their sha256 (@@sha P-tID) and the status
# (@@before); then the kernel writes: a new thin 100 with data, a
# snapshot 101 of the first ID with writes to its origin, the deletion of
# the last ID; then the status (@@after) and a clean removal.
verify_pool() {
    p=$1 meta=$2 data=$3
    shift 3
    first=$1
    for last; do :; done
    run dmsetup create "$p-pool" --table "0 $(sectors "$data") thin-pool $meta $data 128 64 0"
    for id; do
        run dmsetup create "$p-t$id" --table "0 $SZ thin /dev/mapper/$p-pool $id"
        sha "$p-t$id" "/dev/mapper/$p-t$id"
    done
    dmsetup status | grep "^$p-" | while read -r l; do say "before $l"; done
    run dmsetup message "$p-pool" 0 create_thin 100
    run dmsetup create "$p-t100" --table "0 $SZ thin /dev/mapper/$p-pool 100"
    pat "/dev/mapper/$p-t100" 0 256 1
    run dmsetup suspend "$p-t$first"
    run dmsetup message "$p-pool" 0 create_snap 101 "$first"
    run dmsetup resume "$p-t$first"
    run dmsetup create "$p-t101" --table "0 $SZ thin /dev/mapper/$p-pool 101"
    rnd "/dev/mapper/$p-t$first" 4096 20 9 77
    remove "$p-t$last"
    run dmsetup message "$p-pool" 0 delete "$last"
    sync
    dmsetup status | grep "^$p-" | while read -r l; do say "after $l"; done
    for d in $(dmsetup ls | cut -f1 | grep "^$p-t"); do remove "$d"; done
    remove "$p-pool"
}

# Suspends and removes dm devices in the order given.
remove() {
    for d in "$@"; do
        run dmsetup suspend "$d"
        run dmsetup remove "$d"
    done
}

pool_msg() { run dmsetup message pool 0 "$@"; }
