#!/bin/sh
# Runs inside the tiny guest (busybox sh) with OUT=/out, the guest's writable
# disk, and CDROM=/cdrom, the job's CD-ROM. Reads the numbers in input.txt and
# writes how many there are, their sum, smallest and largest to answer.txt.
set -e
count=0 sum=0 min= max=
while read -r number rest; do
    case "$number" in ''|'#'*) continue ;; esac
    count=$((count + 1))
    sum=$((sum + number))
    if [ -z "$min" ] || [ "$number" -lt "$min" ]; then min=$number; fi
    if [ -z "$max" ] || [ "$number" -gt "$max" ]; then max=$number; fi
done < "$CDROM/input.txt"
echo "count=$count sum=$sum min=$min max=$max" > "$OUT/answer.txt"
cat "$OUT/answer.txt"
sync
