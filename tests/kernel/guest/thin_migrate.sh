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
# The last 64 KiB block, of which a shorter device sees 36 KiB.
pat /dev/mapper/t0 4080 16 4
sync
pool_msg reserve_metadata_snap
run dmsetup create t0ro --readonly --table "0 32768 thin /dev/mapper/pool 0"
run thin_migrate --source-dev /dev/mapper/t0ro --dest-file /tmp/copy
sha device /dev/mapper/t0ro
sha copy /tmp/copy
# A device ending part way into a pool block (32712 sectors: 255 blocks
# of 128 and 72 sectors of the next) is copied to its last byte.
run dmsetup create t0short --readonly --table "0 32712 thin /dev/mapper/pool 0"
run thin_migrate --source-dev /dev/mapper/t0short --dest-file /tmp/short
sha short_device /dev/mapper/t0short
sha short_copy /tmp/short
say "short_bytes $(stat -c %s /tmp/short)"
remove t0short
pool_msg release_metadata_snap
# --delta-id: snapshot 1 of thin 0 now (the copy holds its contents),
# thin 0 written after it, a new metadata snapshot; the copy brought up
# to date with --delta-id 1 must read as thin 0, and a delta into an
# empty file writes only the blocks that changed (delta_bytes).
remove t0ro
run dmsetup suspend t0
pool_msg create_snap 1 0
run dmsetup resume t0
rnd /dev/mapper/t0 4096 30 3 11
pat /dev/mapper/t0 1024 32 3
sync
pool_msg reserve_metadata_snap
run dmsetup create t0ro --readonly --table "0 32768 thin /dev/mapper/pool 0"
run thin_migrate --source-dev /dev/mapper/t0ro --dest-file /tmp/copy --delta-id 1
sha device2 /dev/mapper/t0ro
sha copy2 /tmp/copy
run thin_migrate --source-dev /dev/mapper/t0ro --dest-file /tmp/delta --delta-id 1
say "delta_bytes $(( $(stat -c %b /tmp/delta) * $(stat -c %B /tmp/delta) ))"
# The 64 KiB blocks the writes after snapshot 1 touched (rnd's places).
say "delta_expected $(awk 'BEGIN { srand(11); for (i = 0; i < 30; i++) c[int(int(rand() * 4096) / 16)] = 1
    c[64] = 1; c[65] = 1; for (x in c) k++; print k * 65536 }')"
refused writable thin_migrate --source-dev /dev/mapper/t0 --dest-file /tmp/x
run dmsetup message pool 0 release_metadata_snap
refused nosnap thin_migrate --source-dev /dev/mapper/t0ro --dest-file /tmp/x
refused notthin thin_migrate --source-dev /dev/mapper/pool --dest-file /tmp/x
remove t0ro t0 pool
