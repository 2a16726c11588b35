# Kernel writes: a pool grown while in use. Metadata and data sit on
# dm-linear devices over bigger disks; growing is reloading the linear
# device, then the pool. Both cross a space-map bitmap boundary (16320
# blocks per bitmap): data 900 -> 1100 MiB of 64 KiB blocks, metadata
# 60 -> 72 MiB of 4 KiB blocks (the kernel extends the metadata space
# map in its bootstrap mode). Expects $D_meta (>= 72 MiB), $D_data
# (>= 1100 MiB).
SZ=524288
M1=$((60 * 2048)) M2=$((72 * 2048)) D1=$((900 * 2048)) D2=$((1100 * 2048))
zero_meta "$D_meta"
run dmsetup create meta --table "0 $M1 linear $D_meta 0"
run dmsetup create data --table "0 $D1 linear $D_data 0"
pool_table() { echo "0 $1 thin-pool /dev/mapper/meta /dev/mapper/data 128 1024 0"; }
run dmsetup create pool --table "$(pool_table $D1)"
T=/dev/mapper/t
pool_msg create_thin 0
run dmsetup create t0 --table "0 $SZ thin /dev/mapper/pool 0"
pat ${T}0 0 512 1
rnd ${T}0 65536 30 1 11
run dmsetup suspend t0
pool_msg create_snap 1 0
run dmsetup resume t0
run dmsetup create t1 --table "0 $SZ thin /dev/mapper/pool 1"
rnd ${T}1 65536 30 2 12
# grow: suspend the thin devices and the pool, reload the linear device
# under it, then the pool (resumed first, so it sees the new size)
grow() {
    lin=$1 table=$2 pool_len=$3
    run dmsetup suspend t0
    run dmsetup suspend t1
    run dmsetup suspend pool
    run dmsetup reload "$lin" --table "$table"
    run dmsetup resume "$lin"
    run dmsetup reload pool --table "$(pool_table "$pool_len")"
    run dmsetup resume pool
    run dmsetup resume t0
    run dmsetup resume t1
}
grow data "0 $D2 linear $D_data 0" $D2
rnd ${T}0 65536 30 3 13
say grown-data "$(dmsetup status pool)"
grow meta "0 $M2 linear $D_meta 0" $D2
rnd ${T}1 65536 30 4 14
pool_msg set_transaction_id 0 1
sync
sha t0 ${T}0
sha t1 ${T}1
status_all
remove t0 t1 pool meta data
