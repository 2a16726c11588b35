# cache_writeback of a dirty cache: after the cache workload (blocks still
# dirty), the target is removed and cache_writeback copies the dirty
# blocks to the origin and clears them in the metadata; the origin alone
# must then read as the cache did, and a reloaded cache has nothing dirty.
run cache_writeback --metadata-device "$D_meta" --origin-device "$D_origin" --fast-device "$D_cache"
sha origin "$D_origin"
feat="1 writeback"
[ "$META2" = 1 ] && feat="2 writeback metadata2"
run dmsetup create cache --table "0 $(sectors "$D_origin") cache $D_meta $D_cache $D_origin 64 $feat smq 2 migration_threshold 0"
say after "$(dmsetup status cache)"
remove cache
