# lvm2 with a cached LV, dmpd's links as its cache tools: create an
# origin LV and a cache pool, attach it (writeback), write, deactivate and
# activate (lvm2 runs cache_check), damage the cache metadata's hint
# array (activation must then fail), lvconvert --repair (lvm2 runs
# cache_repair), activate and read. Expects $D_pv and DAMAGE (a byte
# offset into the hint array's root block).
L="lvm"
run $L pvcreate -q -y "$D_pv"
run $L vgcreate -q vg "$D_pv"
run $L lvcreate -q -y -L 128M -n origin vg
run $L lvcreate -q -y --type cache-pool -L 32M --poolmetadatasize 8M -n cpool vg
run $L lvconvert -q -y --type cache --cachemode writeback --cachepool vg/cpool vg/origin
V=/dev/mapper/vg-origin
pat $V 0 512 1
rnd $V 32768 40 2 5
sync
sha created $V
run $L vgchange -q -an vg
$L vgchange -ay -vv vg 2>&1 | grep -E 'cache_(check|repair)' | while read -r l; do
    say lvm-log "$l"
done
[ -e $V ] || fail "vgchange -ay did not activate the cached LV"
sha activated $V
run $L vgchange -q -an vg
pe_start=$($L pvs --noheadings --units s --nosuffix -o pe_start "$D_pv" | tr -d ' ')
extent=$($L vgs --noheadings --units s --nosuffix -o vg_extent_size vg | tr -d ' ')
# The pool's metadata LV, as lvm2 named it when it attached the pool
# (2.03 renames cpool to cpool_cpool: cpool_cpool_cmeta).
cmeta=$($L lvs -a --noheadings -o lv_name vg | tr -d ' []' | grep '_cmeta$')
seg=$($L lvs -a --noheadings -o seg_pe_ranges "vg/$cmeta" | tr -d ' ')
first=${seg#*:}
first=${first%-*}
len=$($L lvs -a --noheadings --units s --nosuffix -o lv_size "vg/$cmeta" | tr -d ' ')
run dmsetup create dmg --table "0 $len linear $D_pv $((pe_start + first * extent))"
run cache_check -q /dev/mapper/dmg
# Damage the hint array's root node (hint_root: superblock byte 200),
# DAMAGE bytes in. Not the superblock: cache metadata has one, and
# neither dmpd's cache_repair nor the reference's can mend it (both exit
# non-zero on a superblock checksum error); a damaged hint array both
# rebuild, keeping every mapping.
hint=$(dd if=/dev/mapper/dmg bs=1 skip=200 count=8 2>/dev/null | od -An -t u8 | tr -d ' ')
[ "$hint" -gt 0 ] || fail "no hint array root ($hint)"
printf 'XXXXXXXX' | dd of=/dev/mapper/dmg bs=1 seek=$((hint * 4096 + DAMAGE)) conv=notrunc 2>/dev/null
cache_check -q /dev/mapper/dmg && fail "cache_check passes the damaged hint array"
sync
run dmsetup remove dmg
if $L vgchange -q -ay vg 2>/tmp/err; then
    fail "lvm2 activated the cache with damaged metadata"
else
    say lvm-refused "$(tr '\n' ' ' </tmp/err)"
fi
$L vgchange -q -an vg 2>/dev/null
$L lvconvert -y --repair -vv vg/origin 2>&1 | grep -E 'cache_(check|repair)|[Rr]epair' | while read -r l; do
    say lvm-log "$l"
done
run $L vgchange -q -ay vg
sha repaired $V
run $L vgchange -q -an vg
