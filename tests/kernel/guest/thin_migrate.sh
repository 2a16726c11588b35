# thin_migrate on a live pool: thin 0 written, a metadata snapshot
# reserved, a read-only dm device over thin 0, copied to a file while the
# pool is in use; the copy must read as the device. Expects $D_meta,
# $D_data.
zero_meta "$D_meta"
run dmsetup create pool --table "0 $(sectors "$D_data") thin-pool $D_meta $D_data 128 64 0"
pool_msg create_thin 0
run dmsetup create t0 --table "0 32768 thin /dev/mapper/pool 0"
pat /dev/mapper/t0 0 512 1
rnd /dev/mapper/t0 4096 40 2 7
sync
pool_msg reserve_metadata_snap
run dmsetup create t0ro --readonly --table "0 32768 thin /dev/mapper/pool 0"
run thin_migrate --source-dev /dev/mapper/t0ro --dest-file /tmp/copy
sha device /dev/mapper/t0ro
sha copy /tmp/copy
pool_msg release_metadata_snap
remove t0ro t0 pool
