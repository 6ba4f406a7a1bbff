#!/usr/bin/env bash
# Builds the lab VM once: a minimal Debian root (debootstrap, from this machine's own apt mirror)
# with python3, python3-yaml and Debian's kernel (linux-image-amd64), plus the pinned
# prometheus-client wheel (pip download on the host) in /opt/lab-pylib, packed into an ext4 image,
# plus that kernel's vmlinuz and initrd for qemu's -kernel/-initrd. Cached under
#   ${XDG_CACHE_HOME:-~/.cache}/memfrag-agent/lab/<key>
# where <key> changes with this script, the suite and the mirror. Prints the cache directory on
# its last line (run.py reads it). Nothing here is committed; nothing is fetched but Debian
# packages through apt/debootstrap.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)

SUITE=${LAB_SUITE:-bookworm}
IMAGE_MIB=${LAB_IMAGE_MIB:-1200}
# Packages in the guest: python3 + yaml for the agent; the kernel; kmod for modprobe (9p, virtio);
# procps for free/sysctl when debugging by hand. No network packages: the guest has no network.
INCLUDE=python3,python3-yaml,linux-image-amd64,kmod,procps

log() { printf '[lab build %5ss] %s\n' "$SECONDS" "$*" >&2; }

# The mirror this machine's apt uses (deb822 "URIs:" or one-line "deb URL suite"), for the suite.
mirror() {
  local f url
  for f in /etc/apt/sources.list.d/*.sources /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
    [ -r "$f" ] || continue
    if [[ $f == *.sources ]]; then
      # the first stanza whose Suites has the suite and whose URI is a debian archive
      url=$(awk -v s="$SUITE" '
        /^URIs:/ {u=$2} /^Suites:/ {for (i=2;i<=NF;i++) if ($i==s) ok=1}
        /^$/ {if (ok && u ~ /debian\/?$/) {print u; exit} ok=0; u=""}
        END {if (ok && u ~ /debian\/?$/) print u}' "$f" | head -n1)
    else
      url=$(awk -v s="$SUITE" '$1=="deb" && $0 !~ /^#/ {for (i=2;i<=NF;i++) if ($i==s && $(i-1) ~ /debian\/?$/) {print $(i-1); exit}}' "$f" | head -n1)
    fi
    [ -n "$url" ] && { echo "${url%/}"; return; }
  done
  return 1
}

MIRROR=${LAB_MIRROR:-$(mirror || true)}
[ -n "$MIRROR" ] || { echo "lab/build.sh: no apt source for $SUITE found in /etc/apt; set LAB_MIRROR" >&2; exit 1; }

# The key covers what debootstrap makes; the image (init script, packing) is redone whenever this
# script changes, without a new debootstrap.
key=$(printf '%s\n' "$SUITE" "$MIRROR" "$INCLUDE" | sha256sum | cut -c1-16)
cache=${XDG_CACHE_HOME:-$HOME/.cache}/memfrag-agent/lab/$key
# The daemon needs prometheus-client >= 0.20 (bookworm has 0.16): the pure-Python wheel the
# image's lock pins (version and sha256), downloaded by the host's pip (--require-hashes) and
# unpacked into the image.
LOCK=$here/../deploy/image-lock.txt
PROM=$(sed -n 's/^prometheus-client==\([0-9][0-9.]*\) *\\\?$/\1/p' "$LOCK" 2>/dev/null)
PROM_HASHES=$(awk '/^prometheus-client==/ {p=1; next} p && /^ *--hash=/ {sub(/\\$/, ""); print $1; next} {p=0}' "$LOCK" 2>/dev/null)
[ -n "$PROM" ] && [ -n "$PROM_HASHES" ] || { echo "lab/build.sh: no prometheus-client pin with a --hash in $LOCK" >&2; exit 1; }
sig=$( (cat "$0"; echo "$PROM"; echo "$PROM_HASHES") | sha256sum | cut -c1-16)

if [ "$(cat "$cache/ready" 2>/dev/null)" = "$sig" ]; then
  log "cached: $cache ($(cat "$cache/kernel-release"))"
  echo "$cache"
  exit 0
fi

# --- host tools -------------------------------------------------------------------------------
need=()
command -v qemu-system-x86_64 >/dev/null || need+=(qemu-system-x86)
command -v debootstrap >/dev/null || need+=(debootstrap)
command -v mke2fs >/dev/null || need+=(e2fsprogs)
if [ ${#need[@]} -gt 0 ]; then
  [ "$(id -u)" = 0 ] || { echo "lab/build.sh: needs root to apt-get install ${need[*]}" >&2; exit 1; }
  log "apt-get install ${need[*]} (host)"
  # apt-cache policy answers 'Candidate: (none)' before an apt-get update on a fresh machine.
  if ! apt-cache policy "${need[0]}" 2>/dev/null | grep -q 'Candidate: [0-9]'; then
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
  fi
  aptlog=$(mktemp)
  if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >"$aptlog" 2>&1; then
    cat "$aptlog" >&2; rm -f "$aptlog"
    echo "lab/build.sh: apt-get install ${need[*]} failed (above)" >&2; exit 1
  fi
  rm -f "$aptlog"
fi
[ "$(id -u)" = 0 ] || { echo "lab/build.sh: debootstrap needs root" >&2; exit 1; }

mkdir -p "$cache"
start=$SECONDS
rm -f "$cache/ready"

# --- root filesystem --------------------------------------------------------------------------
if [ ! -d "$cache/rootfs" ]; then
  rm -rf "$cache/rootfs.partial"
  log "debootstrap $SUITE from $MIRROR (minbase + $INCLUDE): a few minutes on first run"
  debootstrap --variant=minbase --include="$INCLUDE" --components=main \
    "$SUITE" "$cache/rootfs.partial" "$MIRROR" 2>&1 \
    | while IFS= read -r line; do
        # progress without the per-package noise: one line per phase
        case $line in
          I:\ Retrieving\ Release*|I:\ Resolving*|I:\ Found\ additional*|I:\ Checking\ component*|I:\ Extracting\ base-files*|I:\ Installing\ core*|I:\ Unpacking\ the\ base*|I:\ Configuring\ the\ base*|I:\ Base\ system*|E:*|W:*)
            log "  $line";;
          I:\ Retrieving\ *) n=$((${n:-0} + 1)); [ $((n % 25)) = 0 ] && log "  retrieved $n packages";;
        esac
      done
  [ -x "$cache/rootfs.partial/usr/bin/python3" ] || { echo "lab/build.sh: debootstrap failed (see above)" >&2; exit 1; }
  mv "$cache/rootfs.partial" "$cache/rootfs"
  log "debootstrap done"
fi
root=$cache/rootfs

# --- what the guest runs as PID 1 -------------------------------------------------------------
# No systemd: mount what the agent reads, the two 9p shares, run lab/guest.py from the read-only
# repo share, power off. Everything about the scenarios lives in /repo/lab, not in the image.
cat >"$root/sbin/lab-init" <<'EOF'
#!/bin/sh
export PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8
mountpoint -q /proc || mount -t proc proc /proc
mountpoint -q /sys || mount -t sysfs sys /sys
mountpoint -q /dev || mount -t devtmpfs dev /dev
mount -t tmpfs -o size=64m tmp /tmp
mount -t tmpfs run /run
mountpoint -q /sys/kernel/tracing || mount -t tracefs tracefs /sys/kernel/tracing 2>/dev/null
for m in virtio_pci 9pnet_virtio 9p; do modprobe "$m" 2>/dev/null; done
mkdir -p /repo /results
mount -t 9p -o trans=virtio,version=9p2000.L,ro,msize=16384 repo /repo || echo "lab-init: cannot mount the repo share"
mount -t 9p -o trans=virtio,version=9p2000.L,msize=16384 results /results || echo "lab-init: cannot mount the results share"
# The code runs from the guest's own disk, as an agent runs from its image: 9p needs msize-sized
# kernel buffers (order 5 by default), which a fragmented guest cannot allocate (the first runs
# saw the daemon die on ENOMEM listing /repo/agent). Copied before anything is fragmented.
mkdir -p /opt/memfrag
cp -a /repo/agent /repo/lab /opt/memfrag/ || echo "lab-init: cannot copy the repo"
args=$(sed -n 's/.*lab\.args=\([^ ]*\).*/\1/p' /proc/cmdline | tr ',' ' ')
echo "lab-init: kernel $(uname -r); running lab/guest.py $args"
cd /
PYTHONPATH=/opt/memfrag:/opt/lab-pylib python3 /opt/memfrag/lab/guest.py $args
echo "lab-init: guest.py exited $?"
sync
poweroff -f 2>/dev/null || echo o > /proc/sysrq-trigger
sleep 5
EOF
chmod 755 "$root/sbin/lab-init"
echo lab > "$root/etc/hostname"
rm -f "$root"/var/cache/apt/archives/*.deb

# --- the daemon's one non-Debian dependency -------------------------------------------------------
wheels=$cache/wheels
if ! ls "$wheels"/prometheus_client-"$PROM"-py3-none-any.whl >/dev/null 2>&1; then
  log "pip download prometheus-client==$PROM (pure Python wheel, no dependencies)"
  req=$(mktemp)
  printf 'prometheus-client==%s %s\n' "$PROM" "$(echo $PROM_HASHES)" >"$req"
  python3 -m pip download --quiet --no-deps --only-binary=:all: --require-hashes --dest "$wheels" \
    -r "$req" >&2 || { rm -f "$req"; echo "lab/build.sh: pip download prometheus-client==$PROM failed" >&2; exit 1; }
  rm -f "$req"
fi
rm -rf "$root/opt/lab-pylib"
mkdir -p "$root/opt/lab-pylib"
python3 -m zipfile -e "$wheels/prometheus_client-$PROM-py3-none-any.whl" "$root/opt/lab-pylib"

kver=$(basename "$(ls -d "$root"/lib/modules/* | sort -V | tail -n1)")
cp "$root/boot/vmlinuz-$kver" "$cache/vmlinuz"
cp "$root/boot/initrd.img-$kver" "$cache/initrd.img"
echo "$kver" > "$cache/kernel-release"

log "packing the root into an ext4 image (${IMAGE_MIB} MiB, sparse)"
rm -f "$cache/root.img.partial"
mke2fs -q -t ext4 -L labroot -d "$root" "$cache/root.img.partial" "${IMAGE_MIB}M" >&2
mv "$cache/root.img.partial" "$cache/root.img"
elapsed=$((SECONDS - start))
echo "$elapsed" > "$cache/build-seconds"
echo "$sig" > "$cache/ready"
log "built in ${elapsed}s: $cache (kernel $kver, image $(du -sh "$cache/root.img" | cut -f1) used)"
echo "$cache"
