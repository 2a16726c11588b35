# lvm2 in the loop, with dmpd's links as its thin tools (lvm.conf) and no
# udev: a thin pool and a thin volume; deactivate and activate (lvm2 runs
# thin_check); damage the pool's metadata (activation must then fail),
# lvconvert --repair (lvm2 runs thin_repair, then thin_dump for the
# transaction id), activate again and read the volume. Expects $D_pv.
L="lvm"
run $L pvcreate -q -y "$D_pv"
run $L vgcreate -q vg "$D_pv"
run $L lvcreate -q -y -Zn --type thin-pool -L 128M --poolmetadatasize 8M -n pool vg
run $L lvcreate -q -y -V 32M -T vg/pool -n thin1
V=/dev/mapper/vg-thin1
pat $V 0 256 1
rnd $V 8192 20 2 3
sync
sha created $V
run $L vgchange -q -an vg
# lvm2 says what it runs at -vv; keep the lines naming a thin tool
$L vgchange -ay -vv vg 2>&1 | grep -E 'thin_(check|repair|dump)' | while read -r l; do
    say lvm-log "$l"
done
[ -e $V ] || fail "vgchange -ay did not activate thin1"
sha activated $V
run $L vgchange -q -an vg
# The pool's metadata LV lies on the PV: find it and damage it through a
# linear device over the same sectors.
pe_start=$($L pvs --noheadings --units s --nosuffix -o pe_start "$D_pv" | tr -d ' ')
extent=$($L vgs --noheadings --units s --nosuffix -o vg_extent_size vg | tr -d ' ')
seg=$($L lvs -a --noheadings -o seg_pe_ranges vg/pool_tmeta | tr -d ' ')
first=${seg#*:}
first=${first%-*}
len=$($L lvs -a --noheadings --units s --nosuffix -o lv_size vg/pool_tmeta | tr -d ' ')
say tmeta "$seg $pe_start $extent $len"
run dmsetup create dmg --table "0 $len linear $D_pv $((pe_start + first * extent))"
run thin_check -q /dev/mapper/dmg
say damage "$(dmpd thin_generate_damage --kind "$DAMAGE" /dev/mapper/dmg)"
run dmsetup remove dmg
if $L vgchange -q -ay vg 2>/tmp/err; then
    fail "lvm2 activated the pool with damaged metadata"
else
    say lvm-refused "$(tr '\n' ' ' </tmp/err)"
fi
$L vgchange -q -an vg 2>/dev/null
$L lvconvert -y --repair -vv vg/pool 2>&1 | grep -E 'thin_(check|repair|dump)|[Rr]epair' | while read -r l; do
    say lvm-log "$l"
done
run $L vgchange -q -ay vg
sha repaired $V
run $L lvs -a vg
run $L vgchange -q -an vg
