# Kernel writes: dm-era with rounds of writes each closed by a
# checkpoint, then a metadata snapshot (take_metadata_snap, also a new
# era) with writes after it, kept when HOLD=1. Expects $D_meta,
# $D_origin, NERAS, HOLD and SEED.
zero_meta "$D_meta"
run dmsetup create era --table "0 $(sectors "$D_origin") era $D_meta $D_origin 128"
E=/dev/mapper/era
r=0
while [ $r -lt "$NERAS" ]; do
    rnd $E 16384 15 $r $((SEED + r))
    sync
    run dmsetup message era 0 checkpoint
    r=$((r + 1))
done
run dmsetup message era 0 take_metadata_snap
rnd $E 16384 15 99 $((SEED + 99))
sync
[ "$HOLD" = 1 ] || run dmsetup message era 0 drop_metadata_snap
sha era $E
status_all
# Live tools: the kernel holds the metadata device.
refused era_check era_check "$D_meta"
refused era_dump era_dump "$D_meta"
refused era_invalidate era_invalidate --written-since 1 "$D_meta"
remove era
