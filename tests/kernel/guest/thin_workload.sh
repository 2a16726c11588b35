# Kernel writes: a thin pool with a chain of snapshots, a deleted
# snapshot, discards, transaction ids, and a metadata snapshot reserved
# with writes after it (kept when HOLD=1, released when HOLD=0).
# Expects $D_meta, $D_data, HOLD and SEED.
SZ=32768     # sectors per thin device (16 MiB = 4096 4 KiB blocks)
SPAN=4096
zero_meta "$D_meta"
run dmsetup create pool --table "0 $(sectors "$D_data") thin-pool $D_meta $D_data 128 64 0"

thin() { run dmsetup create "t$1" --table "0 $SZ thin /dev/mapper/pool $1"; }
snap() {
    run dmsetup suspend "t$2"
    pool_msg create_snap "$1" "$2"
    run dmsetup resume "t$2"
    thin "$1"
}
T=/dev/mapper/t
pool_msg create_thin 0
thin 0
pat ${T}0 0 1024 1
rnd ${T}0 $SPAN 40 1 $((SEED + 1))
pool_msg set_transaction_id 0 1
snap 1 0
rnd ${T}0 $SPAN 30 2 $((SEED + 2))
rnd ${T}1 $SPAN 30 2 $((SEED + 3))
snap 2 1
rnd ${T}1 $SPAN 30 3 $((SEED + 4))
rnd ${T}2 $SPAN 30 3 $((SEED + 5))
pool_msg create_thin 3
thin 3
pat ${T}3 0 512 1
snap 4 2
rnd ${T}4 $SPAN 20 4 $((SEED + 6))
remove t4
pool_msg delete 4
pool_msg set_transaction_id 1 2
# Discards: whole 64 KiB blocks on 0, 2 and 3, part of a block on 1.
run blkdiscard -o 1048576 -l 524288 ${T}0
run blkdiscard -o 2097152 -l 262144 ${T}2
run blkdiscard -o 0 -l 1048576 ${T}3
run blkdiscard -o 8192 -l 8192 ${T}1
pool_msg set_transaction_id 2 3
pool_msg reserve_metadata_snap
rnd ${T}0 $SPAN 20 5 $((SEED + 7))
rnd ${T}2 $SPAN 20 5 $((SEED + 8))
pool_msg create_thin 5
thin 5
pat ${T}5 2048 64 1
[ "$HOLD" = 1 ] || pool_msg release_metadata_snap
sync
for i in 0 1 2 3 5; do sha "t$i" ${T}$i; done
status_all
remove t0 t1 t2 t3 t5 pool
