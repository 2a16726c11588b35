# Live tools: with a pool active on $D_meta/$D_data, every dmpd tool
# refuses the metadata device (the kernel holds it open exclusively);
# with a metadata snapshot reserved, the -m readers read it while the
# pool is in use. /data/snap.xml and /data/snap.pack are inputs.
zero_meta "$D_meta"
run dmsetup create pool --table "0 $(sectors "$D_data") thin-pool $D_meta $D_data 128 64 0"
pool_msg create_thin 0
run dmsetup create t0 --table "0 65536 thin /dev/mapper/pool 0"
pat /dev/mapper/t0 0 256 1
run dmsetup suspend t0
pool_msg create_snap 1 0
run dmsetup resume t0
rnd /dev/mapper/t0 8192 20 2 5
M=$D_meta
truncate -s 8M /tmp/out
refused thin_check thin_check "$M"
refused thin_check-auto-repair thin_check --auto-repair "$M"
refused thin_check-clear-needs-check thin_check --clear-needs-check-flag "$M"
refused thin_dump thin_dump "$M"
refused thin_dump-repair thin_dump --repair "$M"
refused thin_ls thin_ls "$M"
refused thin_delta thin_delta --thin1 0 --thin2 1 "$M"
refused thin_rmap thin_rmap --region 0..10 "$M"
refused thin_repair-input thin_repair -i "$M" -o /tmp/out
refused thin_restore thin_restore -i /data/snap.xml -o "$M"
refused thin_trim thin_trim --metadata-dev "$M" --data-dev "$D_data"
refused thin_shrink thin_shrink --binary -i "$M" -o /tmp/out --data "$D_data" --nr-blocks 100
refused thin_metadata_pack thin_metadata_pack -i "$M" -o /tmp/p.pack
refused thin_metadata_unpack thin_metadata_unpack -f -i /data/snap.pack -o "$M"
pool_msg reserve_metadata_snap
rnd /dev/mapper/t0 8192 20 3 6
for t in "thin_check -m" "thin_ls -m" "thin_delta -m --thin1 0 --thin2 1" "thin_dump -m"; do
    if $t "$M" >/tmp/o 2>/tmp/e; then
        say live-ok "$t" "$(wc -l </tmp/o)"
    else
        fail "$t on the live pool: $(cat /tmp/e)"
    fi
done
pool_msg release_metadata_snap
status_all
remove t0 pool
