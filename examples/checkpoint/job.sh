#!/bin/sh
# Runs inside the tiny guest (busybox sh) with OUT=/out (the guest's disk) and
# CDROM=/cdrom. Appends one line a second to $OUT/ticks.txt until there are
# $TICKS of them. Restored from a checkpoint, the loop simply goes on; after a
# cold boot it continues from the number of lines already on the disk.
TICKS=120
i=0
if [ -f "$OUT/ticks.txt" ]; then i=$(wc -l < "$OUT/ticks.txt"); fi
while [ "$i" -lt "$TICKS" ]; do
    i=$((i + 1))
    echo "tick $i" >> "$OUT/ticks.txt"
    echo "tick $i"
    sync
    sleep 1
done
echo "counted to $TICKS" > "$OUT/answer.txt"
sync
