# Kernel writes: dm-cache in writeback mode with smq. Phase 1 writes whole
# cache blocks and waits until the idle target has written them back;
# then migration_threshold 0 stops background writeback and phase 2
# writes more, which stays dirty. Expects $D_meta, $D_cache, $D_origin,
# META2 (1: metadata2) and SEED.
zero_meta "$D_meta"
feat="1 writeback"
[ "$META2" = 1 ] && feat="2 writeback metadata2"
run dmsetup create cache --table "0 $(sectors "$D_origin") cache $D_meta $D_cache $D_origin 64 $feat smq 0"
C=/dev/mapper/cache
# 32 KiB cache blocks = 8 blocks of 4 KiB
for i in $(awk -v s="$SEED" 'BEGIN { srand(s); for (i = 0; i < 60; i++) print int(rand() * 4000) }'); do
    pat $C $((i * 8)) 8 1
done
sync
n=0
while [ "$(dmsetup status cache | awk '{print $14}')" != 0 ] && [ $n -lt 300 ]; do
    sleep 0.2
    n=$((n + 1))
done
run dmsetup message cache 0 migration_threshold 0
# Phase 2: whole cache blocks in one O_DIRECT write each. With no
# migration bandwidth the kernel promotes only such overwrites (no copy
# needed) or hits, and either leaves the block dirty; 4 KiB writes that
# miss would go to the origin.
for i in $(awk -v s="$SEED" 'BEGIN { srand(s + 1); for (i = 0; i < 60; i++) print int(rand() * 4000) }'); do
    pat /tmp/blk 0 8 "2-$i"
    dd if=/tmp/blk of=$C bs=32768 seek="$i" count=1 oflag=direct conv=notrunc 2>/dev/null ||
        fail "direct write of cache block $i"
done
sync
sha cache $C
status_all
d=$(dmsetup status cache | awk '{print $14}')
[ "$d" -gt 0 ] || fail "no dirty blocks at the end ($d)"
# Live tools: the kernel holds the metadata device.
truncate -s 8M /tmp/out
refused cache_check cache_check "$D_meta"
refused cache_dump cache_dump "$D_meta"
refused cache_repair cache_repair -i "$D_meta" -o /tmp/out
# (cache_writeback only once the build has it: the guest has a link per tool.)
if command -v cache_writeback >/dev/null; then
    refused cache_writeback cache_writeback --metadata-device "$D_meta" --origin-device "$D_origin" --fast-device "$D_cache"
fi
remove cache
