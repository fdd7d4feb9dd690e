#!/usr/bin/env bash
# make-tiny-guest.sh [OUTDIR] [--force]
#
# Builds vmgahp's tiny test guest, offline, from two Debian packages: the kernel
# package that linux-image-amd64 depends on, and busybox-static. Both are fetched
# with `apt-get download` and unpacked with dpkg-deb; nothing is installed on the
# host, no loop device is used, nothing is mounted.
#
# OUTDIR defaults to ${VMGAHP_GUEST_CACHE:-<checkout>/.cache/tiny-guest}. The build
# is cached: OUTDIR/stamp holds the SHA-256 of this script, and a second run with
# the same script only checks (a few ms). --force rebuilds. The downloaded .debs
# are kept in OUTDIR/debs, so a rebuild after an edit of this script needs no network.
#
# Artifacts in OUTDIR:
#   vmlinuz       Debian's stock kernel
#   initrd.img    gzip'd newc cpio: busybox + the modules below + /init (described below)
#   boot.img      BIOS-bootable raw disk, 32 MiB: a FAT "superfloppy" (no partition table)
#                 holding SYSLINUX, vmlinuz, initrd.img and syslinux.cfg (kernel args)
#   boot.qcow2    the same disk as qcow2
#   data.img      a blank 32 MiB ext4 file system (label TINYDATA), an output disk
#   syslinux.cfg  the boot configuration that is inside boot.img
#   guest.env     kernel version, package names, module list
#
# What /init does in the guest:
#   1. loads the modules (virtio_pci/blk, ata_piix, ahci, sd_mod, sr_mod + cdrom + isofs,
#      ext4 + jbd2/mbcache/crc16/crc32c, vfat + fat + nls, ACPI button + evdev), in
#      dependency order, and starts busybox acpid: the ACPI power button (libvirt's
#      shutdown, vmgahp's CONDOR_VM_STOP) appends "power button" to /out/progress.txt,
#      syncs, unmounts and powers off at once, as a well-behaved distribution would
#   2. mounts the first iso9660 device read-only on /cdrom, if there is one
#   3. mounts the output disk on /out: the first ext4 disk, else the first FAT disk
#      (the boot disk itself), else a tmpfs
#   4. if /cdrom/job.sh exists: runs it with OUT=/out CDROM=/cdrom, output to /out/job.log
#      else: appends "boot B after tick L" to /out/progress.txt, then counts one-second
#      ticks L+1..N, appending "tick K" to /out/progress.txt and syncing after each.
#      N is the kernel argument tiny.ticks=N (default 10), or the number in
#      /cdrom/tiny.ticks. L is the last tick already in /out/progress.txt (0 on a blank
#      disk): a guest booted again from its disk continues the count and says so with
#      a second "boot" line, while a guest restored from a memory image simply goes on
#      with its loop (one "boot" line)
#   5. writes /out/result.txt, whose last line is "TINY-GUEST DONE rc=N", unmounts /out
#      and powers off with `poweroff -f` (the domain needs ACPI for that to end it).
#   Every step is also printed on the serial console (console=ttyS0).
#   Kernel argument tiny.nopoweroff=1 opens a shell on the console instead of powering off.
#
# Needs: apt-get (package lists present, or root to run apt-get update), dpkg-deb, tar,
# gzip, flock, sha256sum, mkfs.fat + syslinux + mcopy (Debian: dosfstools syslinux
# mtools), qemu-img (qemu-utils), mke2fs (e2fsprogs). Exit status 3 means a tool is
# missing (the message names it); scripts/setup.sh installs them all.
set -euo pipefail

SELF=$(readlink -f "${BASH_SOURCE[0]}")
TOP=$(cd "$(dirname "$SELF")/../.." && pwd)
OUT=""
FORCE=0
for arg in "$@"; do
  case "$arg" in
    --force) FORCE=1 ;;
    -h|--help) sed -n '2,/^set -euo/p' "$SELF" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    -*) echo "make-tiny-guest: unknown option $arg" >&2; exit 2 ;;
    *) [ -z "$OUT" ] || { echo "make-tiny-guest: one OUTDIR only" >&2; exit 2; }; OUT=$arg ;;
  esac
done
OUT=${OUT:-${VMGAHP_GUEST_CACHE:-$TOP/.cache/tiny-guest}}

BOOT_MB=32
DATA_MB=32
DEFAULT_TICKS=10
KERNEL_ARGS="console=ttyS0 quiet tiny.ticks=$DEFAULT_TICKS"
ARTIFACTS="vmlinuz initrd.img boot.img boot.qcow2 data.img syslinux.cfg guest.env"
# Modules wanted in the guest; their dependencies are added below. The crypto
# ones satisfy "softdep pre:" aliases (crypto-crc32c, crct10dif, crc64) that a
# plain dependency walk does not see.
WANT="crc32c_generic crct10dif_generic crc64_rocksoft_generic
      virtio_pci virtio_blk ata_piix ahci sd_mod sr_mod isofs
      ext4 vfat nls_cp437 nls_utf8 nls_ascii nls_iso8859-1
      button evdev"
# Only these parts of the kernel package are unpacked (saves ~2 s and 300 MB).
KERNEL_PARTS="block crypto drivers/acpi drivers/ata drivers/block drivers/cdrom drivers/input drivers/scsi drivers/virtio fs lib"

say() { echo "make-tiny-guest: $*" >&2; }
die() { say "$1"; exit "${2:-1}"; }

missing=()
for tool in apt-get dpkg-deb tar gzip flock sha256sum mkfs.fat syslinux mcopy qemu-img mke2fs; do
  command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
done
[ ${#missing[@]} -eq 0 ] || die "missing tools: ${missing[*]} (Debian: dosfstools syslinux mtools qemu-utils e2fsprogs; run scripts/setup.sh)" 3

mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
STAMP=$(sha256sum "$SELF" | cut -d' ' -f1)

# One build at a time per OUTDIR (setup.sh and a test session may race).
exec 9>"$OUT/.lock"
flock -w 600 9 || die "another build holds $OUT/.lock"

up_to_date() {
  [ "$(cat "$OUT/stamp" 2>/dev/null)" = "$STAMP" ] || return 1
  local f
  for f in $ARTIFACTS; do [ -s "$OUT/$f" ] || return 1; done
}
if [ "$FORCE" = 0 ] && up_to_date; then
  say "up to date in $OUT"
  exit 0
fi

started=$(date +%s.%N)
rm -f "$OUT/stamp"
WORK=$(mktemp -d "$OUT/.build.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
DEBS="$OUT/debs"
mkdir -p "$DEBS"

# ---------------------------------------------------------------- 1. packages
kernel_package() {
  apt-cache depends linux-image-amd64 2>/dev/null | sed -n 's/^ *Depends: \(linux-image-[0-9][^ ]*\)$/\1/p' | head -n1
}
KPKG=$(kernel_package || true)
if [ -z "$KPKG" ] && [ "$(id -u)" = 0 ]; then
  say "apt package lists missing: apt-get update"
  timeout 300 apt-get update -qq || true
  KPKG=$(kernel_package || true)
fi
if [ -z "$KPKG" ]; then
  # Offline and no lists: a kernel downloaded by an earlier build will do.
  cached=$(ls "$DEBS"/linux-image-[0-9]*.deb 2>/dev/null | head -n1 || true)
  [ -n "$cached" ] || die "cannot tell which kernel linux-image-amd64 depends on (no apt lists; run apt-get update)"
  KPKG=$(dpkg-deb -f "$cached" Package)
fi
fetch() {  # fetch PACKAGE: into $DEBS unless a .deb of it is already there
  local pkg=$1
  ls "$DEBS/${pkg}_"*.deb >/dev/null 2>&1 && return 0
  say "downloading $pkg"
  local dl="$WORK/dl"
  mkdir -p "$dl"
  ( cd "$dl" && timeout 600 apt-get -qq -o APT::Sandbox::User=root download "$pkg" ) \
    || die "apt-get download $pkg failed"
  mv "$dl"/*.deb "$DEBS/"
}
fetch "$KPKG"
fetch busybox-static
# Drop .debs of other kernels (an older linux-image-amd64 target).
for deb in "$DEBS"/linux-image-[0-9]*.deb; do
  case "$(basename "$deb")" in "${KPKG}_"*) ;; *) rm -f "$deb" ;; esac
done
KDEB=$(ls "$DEBS/${KPKG}_"*.deb | head -n1)
BDEB=$(ls "$DEBS"/busybox-static_*.deb | head -n1)

# ---------------------------------------------------------------- 2. unpack
KX="$WORK/kernel"
BX="$WORK/busybox"
mkdir -p "$KX" "$BX"
patterns=("./boot/vmlinuz-*" "./lib/modules/*/modules.builtin")
for part in $KERNEL_PARTS; do patterns+=("./lib/modules/*/kernel/$part/*"); done
dpkg-deb --fsys-tarfile "$KDEB" | tar -x -C "$KX" --wildcards "${patterns[@]}"
dpkg-deb -x "$BDEB" "$BX"
KVER=$(ls "$KX/lib/modules")
BB="$BX/bin/busybox"
[ -x "$BB" ] || die "no busybox in $BDEB"
[ -f "$KX/boot/vmlinuz-$KVER" ] || die "no vmlinuz-$KVER in $KDEB"

# ---------------------------------------------------------------- 3. modules
# Resolve dependencies from each module's own .modinfo ("depends=", "softdep=pre:"):
# no depmod, no kmod on the host. Names are compared with '-' read as '_'.
MODROOT="$KX/lib/modules/$KVER"
declare -A MODPATH=()
while IFS= read -r ko; do
  name=${ko##*/}; name=${name%.ko}
  MODPATH[${name//-/_}]=$ko
done < <(cd "$MODROOT" && find kernel -name '*.ko')
declare -A BUILTIN=()
while IFS= read -r line; do
  name=${line##*/}; name=${name%.ko}
  BUILTIN[${name//-/_}]=1
done < "$MODROOT/modules.builtin"

declare -A STATE=()   # 1 = being visited, 2 = done
ORDER=()
modinfo_field() {  # modinfo_field FILE FIELD: the values of FIELD, one a line
  grep -a -o -E "(^|[[:cntrl:]])$2=[^[:cntrl:]]*" "$1" | sed "s/^[[:cntrl:]]*$2=//" || true
}
visit() {
  local name=${1//-/_} path dep
  [ "${STATE[$name]:-0}" = 2 ] && return 0
  [ "${STATE[$name]:-0}" = 1 ] && die "module dependency cycle at $name"
  if [ -z "${MODPATH[$name]:-}" ]; then
    [ -n "${BUILTIN[$name]:-}" ] && { STATE[$name]=2; return 0; }
    return 1
  fi
  STATE[$name]=1
  path="$MODROOT/${MODPATH[$name]}"
  for dep in $(modinfo_field "$path" depends | tr ',' ' '); do
    visit "$dep" || die "$name needs $dep, which is neither a module here nor built in"
  done
  # softdep "pre: a b post: c": only the pre part; names that are aliases, not
  # modules, are skipped (WANT lists the crypto modules that provide them).
  for dep in $(modinfo_field "$path" softdep | sed -n 's/.*pre:\(.*\)/\1/p' | sed 's/post:.*//'); do
    visit "$dep" || true
  done
  STATE[$name]=2
  ORDER+=("${MODPATH[$name]}")
}
for want in $WANT; do
  visit "$want" || die "module $want not found in $KPKG (and not built in)"
done

R="$WORK/root"
mkdir -p "$R"/{bin,sbin,dev,proc,sys,tmp,cdrom,out,lib/modules,etc/acpi/PWRF}
: > "$R/lib/modules/load.order"
for ko in "${ORDER[@]}"; do
  cp "$MODROOT/$ko" "$R/lib/modules/"
  basename "$ko" >> "$R/lib/modules/load.order"
done
cp "$BB" "$R/bin/busybox"
for applet in $("$BB" --list); do
  [ -e "$R/bin/$applet" ] || ln -s busybox "$R/bin/$applet"
done
for applet in poweroff reboot halt; do ln -sf ../bin/busybox "$R/sbin/$applet"; done

# ---------------------------------------------------------------- 4. /init
# busybox acpid runs <confdir>/PWRF/00000080 when the power button is pressed.
cat > "$R/etc/acpi/PWRF/00000080" <<'BUTTON'
#!/bin/sh
echo "tiny-guest: ACPI power button: syncing and powering off" > /dev/console
if grep -q ' /out ' /proc/mounts; then
  echo "power button" >> /out/progress.txt
  sync
  umount /out 2>/dev/null || mount -o remount,ro /out 2>/dev/null
fi
sync
poweroff -f
BUTTON
chmod 755 "$R/etc/acpi/PWRF/00000080"

cat > "$R/init" <<'INIT'
#!/bin/sh
# /init of vmgahp's tiny test guest (PID 1). See tests/guest/make-tiny-guest.sh.
PATH=/bin:/sbin
export PATH
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null

say() { echo "tiny-guest: $*" > /dev/console; }
karg() {  # karg NAME DEFAULT: the value of NAME=... on the kernel command line
  _v=""
  for _w in $(cat /proc/cmdline); do
    case "$_w" in "$1="*) _v=${_w#*=} ;; esac
  done
  echo "${_v:-$2}"
}
number_or() { case "$1" in ''|*[!0-9]*) echo "$2" ;; *) echo "$1" ;; esac; }

say "kernel $(uname -r), cmdline: $(cat /proc/cmdline)"
while read -r ko; do
  insmod "/lib/modules/$ko" 2>/dev/null || say "insmod $ko failed"
done < /lib/modules/load.order

# The power button (evdev input device) -> /etc/acpi/PWRF/00000080.
acpid -c /etc/acpi -l /dev/null 2>/dev/null || say "acpid did not start: the power button is ignored"

# Wait until the set of block devices has stopped changing for 0.5 s (ATA and
# virtio probe asynchronously), at most 6 s.
prev=""; still=0; n=0
while [ $n -lt 60 ]; do
  cur=$(ls /sys/class/block 2>/dev/null | tr '\n' ' ')
  if [ -n "$cur" ] && [ "$cur" = "$prev" ]; then
    still=$((still + 1))
    [ $still -ge 5 ] && break
  else
    still=0
  fi
  prev=$cur; n=$((n + 1)); sleep 0.1
done
say "block devices: $prev"

CDDEV=""
for d in /dev/sr* /dev/hd* /dev/vd* /dev/sd* /dev/xvd*; do
  [ -b "$d" ] || continue
  if mount -t iso9660 -o ro "$d" /cdrom 2>/dev/null; then
    CDDEV=$d; say "CD-ROM $d on /cdrom: $(ls /cdrom | tr '\n' ' ')"; break
  fi
done

OUTDEV=""
for fs in ext4 vfat; do
  for d in /dev/vd* /dev/sd* /dev/hd* /dev/xvd*; do
    [ -b "$d" ] && [ "$d" != "$CDDEV" ] || continue
    if mount -t $fs "$d" /out 2>/dev/null; then OUTDEV=$d; say "output disk $d ($fs) on /out"; break 2; fi
  done
done
if [ -z "$OUTDEV" ]; then
  say "no output disk: results go to a tmpfs and are lost"
  mount -t tmpfs tmpfs /out
fi

finish() {  # finish RC
  sync
  umount /out 2>/dev/null
  umount /cdrom 2>/dev/null
  sync
  say "TINY-GUEST DONE rc=$1"
  if [ "$(karg tiny.nopoweroff 0)" = 1 ]; then
    say "tiny.nopoweroff=1: shell on the console"
    exec setsid cttyhack sh
  fi
  say "powering off"
  poweroff -f
  # Without ACPI the machine only halts; PID 1 must not exit (kernel panic).
  while :; do sleep 3600; done
}

if [ -n "$CDDEV" ] && [ -f /cdrom/job.sh ]; then
  say "running /cdrom/job.sh"
  ( cd /out && OUT=/out CDROM=/cdrom sh /cdrom/job.sh ) > /out/job.log 2>&1
  rc=$?
  sync
  cat /out/job.log > /dev/console
  {
    echo "job=/cdrom/job.sh"
    echo "TINY-GUEST DONE rc=$rc"
  } > /out/result.txt
  finish $rc
fi

TICKS=$(number_or "$(karg tiny.ticks 10)" 10)
if [ -f /cdrom/tiny.ticks ]; then
  TICKS=$(number_or "$(tr -cd 0-9 < /cdrom/tiny.ticks)" "$TICKS")
fi
P=/out/progress.txt
LAST=0
BOOTS=0
if [ -f $P ]; then
  LAST=$(number_or "$(sed -n 's/^tick \([0-9][0-9]*\)$/\1/p' $P | tail -n 1)" 0)
  BOOTS=$(number_or "$(grep -c '^boot ' $P)" 0)
fi
BOOTS=$((BOOTS + 1))
echo "boot $BOOTS after tick $LAST" >> $P
sync
say "boot $BOOTS: ticks $((LAST + 1))..$TICKS"
K=$((LAST + 1))
while [ $K -le "$TICKS" ]; do
  sleep 1
  echo "tick $K" >> $P
  sync
  say "tick $K/$TICKS"
  K=$((K + 1))
done
{
  echo "ticks=$TICKS boots=$BOOTS"
  echo "TINY-GUEST DONE rc=0"
} > /out/result.txt
finish 0
INIT
chmod 755 "$R/init"

# ---------------------------------------------------------------- 5. images
( cd "$R" && find . | LC_ALL=C sort | "$BB" cpio -o -H newc 2>/dev/null ) | gzip -6 > "$WORK/initrd.img"
cp "$KX/boot/vmlinuz-$KVER" "$WORK/vmlinuz"

cat > "$WORK/syslinux.cfg" <<CFG
SERIAL 0 115200
DEFAULT tiny
PROMPT 0
TIMEOUT 0
LABEL tiny
  KERNEL vmlinuz
  INITRD initrd.img
  APPEND $KERNEL_ARGS
CFG
truncate -s "${BOOT_MB}M" "$WORK/boot.img"
mkfs.fat -n TINYBOOT "$WORK/boot.img" >/dev/null   # FAT12/16/32 chosen by size
syslinux --install "$WORK/boot.img"
MTOOLS_SKIP_CHECK=1 mcopy -i "$WORK/boot.img" "$WORK/vmlinuz" "$WORK/initrd.img" "$WORK/syslinux.cfg" ::
qemu-img convert -q -f raw -O qcow2 "$WORK/boot.img" "$WORK/boot.qcow2"

truncate -s "${DATA_MB}M" "$WORK/data.img"
mke2fs -q -F -t ext4 -L TINYDATA "$WORK/data.img"

cat > "$WORK/guest.env" <<ENV
KVER=$KVER
KERNEL_PACKAGE=$KPKG
KERNEL_DEB=$(basename "$KDEB")
BUSYBOX_DEB=$(basename "$BDEB")
KERNEL_ARGS="$KERNEL_ARGS"
DEFAULT_TICKS=$DEFAULT_TICKS
MODULES="$(tr '\n' ' ' < "$R/lib/modules/load.order" | sed 's/ $//')"
ENV

for f in $ARTIFACTS; do
  mv -f "$WORK/$f" "$OUT/$f"
done
echo "$STAMP" > "$OUT/stamp"
elapsed=$(echo "$(date +%s.%N) $started" | awk '{printf "%.1f", $1 - $2}')
say "built in ${elapsed}s: $OUT ($ARTIFACTS; kernel $KVER, ${#ORDER[@]} modules)"
