#!/usr/bin/env bash
# build-vcsim.sh [OUTBIN] [--force]
#
# Builds "vcsimlite", the vSphere API simulator vmgahp's VMware tests run against,
# offline, from Debian's packaged govmomi source (golang-github-vmware-govmomi-dev).
# Debian ships govmomi's library, simulator package included, but not its vcsim
# command, so this script writes a small main package of its own (below) and
# builds it in GOPATH mode against /usr/share/gocode.
#
# OUTBIN defaults to ${VMGAHP_VCSIM_CACHE:-<checkout>/.cache/vcsim}/vcsimlite. The
# build is cached: OUTBIN.stamp holds the SHA-256 of this script plus the versions of
# Go and of the govmomi package; a run with the same stamp only checks (a few ms).
# --force rebuilds. The Go build cache is kept beside OUTBIN (incremental: ~1 s).
#
# One fix is applied to a private copy of the simulator package: pyVmomi >= 8 reads
# single properties through PropertyCollector.Fetch, and govmomi 0.24's Fetch indexes
# an empty MissingSet when the property is merely unset (vm.snapshot of a VM without
# snapshots), panics, and pyVmomi sees the connection drop. Fixed: an unset property
# answers with an empty value, as later govmomi releases do.
#
# The binary:
#   vcsimlite [-l 127.0.0.1:0] [-esx] [-username U -password P] [-idle 1s]
#             [-method-delay Method=ms[,Method=ms]] [-tlscert F -tlskey K] [-tls=false]
#             [-dc N] [-cluster N] [-host N] [-standalone-host N] [-vm N] [-ds N]
#   prints "export GOVC_URL=https://U:P@127.0.0.1:PORT/sdk GOVC_SIM_PID=PID" once it
#   listens, serves until SIGTERM/SIGINT, then removes its datastore directories
#   (made under $TMPDIR). Without -username any non-empty credentials log in. Go's
#   built-in test certificate is 1024-bit, which OpenSSL 3 refuses: pass -tlscert.
#   -method-delay sleeps before serving those SOAP calls (govmomi 0.24 runs tasks
#   inside the call, so a delayed PowerOnVM_Task delays the call's answer).
#
# Needs: go (golang-go), /usr/share/gocode/src/github.com/vmware/govmomi
# (golang-github-vmware-govmomi-dev), patch, flock, sha256sum. Exit status 3 means
# one is missing (the message names it); scripts/setup.sh installs them.
set -euo pipefail

SELF=$(readlink -f "${BASH_SOURCE[0]}")
TOP=$(cd "$(dirname "$SELF")/.." && pwd)
GOVMOMI=/usr/share/gocode/src/github.com/vmware/govmomi
OUTBIN=""
FORCE=0
for arg in "$@"; do
  case "$arg" in
    --force) FORCE=1 ;;
    -h|--help) sed -n '2,/^set -euo/p' "$SELF" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    -*) echo "build-vcsim: unknown option $arg" >&2; exit 2 ;;
    *) [ -z "$OUTBIN" ] || { echo "build-vcsim: one OUTBIN only" >&2; exit 2; }; OUTBIN=$arg ;;
  esac
done
OUTBIN=${OUTBIN:-${VMGAHP_VCSIM_CACHE:-$TOP/.cache/vcsim}/vcsimlite}

say() { echo "build-vcsim: $*" >&2; }
die() { say "$1"; exit "${2:-1}"; }

missing=()
for tool in go patch flock sha256sum; do
  command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
done
[ -d "$GOVMOMI/simulator" ] || missing+=("$GOVMOMI/simulator")
[ ${#missing[@]} -eq 0 ] || die "missing: ${missing[*]} (Debian: golang-go golang-github-vmware-govmomi-dev patch; run scripts/setup.sh)" 3

OUTDIR=$(dirname "$OUTBIN")
mkdir -p "$OUTDIR"
OUTBIN=$(cd "$OUTDIR" && pwd)/$(basename "$OUTBIN")
OUTDIR=$(dirname "$OUTBIN")
GOVMOMI_VERSION=$(dpkg-query -W -f='${Version}' golang-github-vmware-govmomi-dev 2>/dev/null || echo unknown)
STAMP=$( { sha256sum "$SELF" | cut -d' ' -f1; go version; echo "govmomi $GOVMOMI_VERSION"; } | sha256sum | cut -d' ' -f1)

# One build at a time per OUTBIN (setup.sh and test sessions may race).
exec 9>"$OUTBIN.lock"
flock -w 900 9 || die "another build holds $OUTBIN.lock"

if [ "$FORCE" = 0 ] && [ -x "$OUTBIN" ] && [ "$(cat "$OUTBIN.stamp" 2>/dev/null)" = "$STAMP" ]; then
  say "up to date: $OUTBIN"
  exit 0
fi

started=$(date +%s%N)
rm -f "$OUTBIN.stamp"
# A fixed work path (under the lock): Go's build cache keys on source paths, so a
# rebuild after an edit of this script recompiles only what changed.
WORK=$OUTDIR/.build
rm -rf "$WORK"
mkdir -p "$WORK"
trap 'rm -rf "$WORK"' EXIT

# A tree of symlinks to Debian's govmomi in a private GOPATH entry, with a real copy
# of the one file patched (Debian's stays untouched); google/uuid still comes from
# /usr/share/gocode.
mkdir -p "$WORK/src/github.com/vmware" "$WORK/src/vcsimlite"
cp -as "$GOVMOMI" "$WORK/src/github.com/vmware/"
PC=simulator/property_collector.go
rm "$WORK/src/github.com/vmware/govmomi/$PC"
cp "$GOVMOMI/$PC" "$WORK/src/github.com/vmware/govmomi/$PC"
( cd "$WORK/src/github.com/vmware/govmomi" && patch -s -p1 --no-backup-if-mismatch ) <<'EOF' \
  || die "the Fetch fix no longer applies to govmomi $GOVMOMI_VERSION: look at simulator/property_collector.go"
--- a/simulator/property_collector.go
+++ b/simulator/property_collector.go
@@ -829,8 +829,13 @@
 
 	obj := res.(*methods.RetrievePropertiesExBody).Res.Returnval.Objects[0]
 	if len(obj.PropSet) == 0 {
-		fault := obj.MissingSet[0].Fault
-		body.Fault_ = Fault(fault.LocalizedMessage, fault.Fault)
+		if len(obj.MissingSet) == 0 {
+			// vmgahp: an unset property is an empty value, not a panic (pyVmomi >= 8 uses Fetch)
+			body.Res = &internal.FetchResponse{}
+		} else {
+			fault := obj.MissingSet[0].Fault
+			body.Fault_ = Fault(fault.LocalizedMessage, fault.Fault)
+		}
 		return body
 	}
 
EOF

cat > "$WORK/src/vcsimlite/main.go" <<'EOF'
// vcsimlite: vmgahp's test front end to govmomi's simulator package (see scripts/build-vcsim.sh).
package main

import (
	"crypto/tls"
	"flag"
	"fmt"
	"log"
	"net/url"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"

	"github.com/vmware/govmomi/simulator"
)

// delays parses "Method=ms,Method=ms".
func delays(spec string) map[string]int {
	out := map[string]int{}
	for _, item := range strings.Split(spec, ",") {
		kv := strings.SplitN(strings.TrimSpace(item), "=", 2)
		if len(kv) != 2 {
			log.Fatalf("-method-delay: %q is not Method=ms", item)
		}
		ms, err := strconv.Atoi(kv[1])
		if err != nil || ms < 0 {
			log.Fatalf("-method-delay: %q is not a number of milliseconds", kv[1])
		}
		out[kv[0]] = ms
	}
	return out
}

func main() {
	listen := flag.String("l", "127.0.0.1:0", "listen address (loopback; port 0 picks a free one)")
	esx := flag.Bool("esx", false, "a standalone ESXi host instead of a vCenter")
	useTLS := flag.Bool("tls", true, "serve https")
	certFile := flag.String("tlscert", "", "PEM certificate to serve")
	keyFile := flag.String("tlskey", "", "PEM private key of -tlscert")
	username := flag.String("username", "", "the only user that may log in (empty: any)")
	password := flag.String("password", "", "that user's password")
	idle := flag.Duration("idle", 0, "idle time after which a session expires (0: never)")
	methodDelay := flag.String("method-delay", "", "Method=ms[,Method=ms]: sleep before serving these calls")
	dc := flag.Int("dc", 1, "datacenters (vCenter)")
	cluster := flag.Int("cluster", 1, "clusters per datacenter (vCenter)")
	host := flag.Int("host", 3, "hosts per cluster (vCenter)")
	standalone := flag.Int("standalone-host", 1, "standalone hosts per datacenter (vCenter)")
	vms := flag.Int("vm", 2, "model VMs per resource pool")
	ds := flag.Int("ds", 1, "datastores")
	flag.Parse()

	simulator.SessionIdleTimeout = *idle
	var m *simulator.Model
	if *esx {
		m = simulator.ESX()
	} else {
		m = simulator.VPX()
		m.Datacenter, m.Cluster, m.ClusterHost, m.Host = *dc, *cluster, *host, *standalone
	}
	m.Machine, m.Datastore = *vms, *ds
	if *methodDelay != "" {
		m.DelayConfig.MethodDelay = delays(*methodDelay)
	}
	if err := m.Create(); err != nil {
		log.Fatal(err)
	}
	defer m.Remove()

	m.Service.Listen = &url.URL{Host: *listen}
	if *username != "" {
		m.Service.Listen.User = url.UserPassword(*username, *password)
	}
	if *useTLS {
		m.Service.TLS = new(tls.Config)
		if *certFile != "" {
			pair, err := tls.LoadX509KeyPair(*certFile, *keyFile)
			if err != nil {
				log.Fatal(err)
			}
			m.Service.TLS.Certificates = []tls.Certificate{pair}
		}
	}
	server := m.Service.NewServer()
	defer server.Close()
	fmt.Printf("export GOVC_URL=%s GOVC_SIM_PID=%d\n", server.URL, os.Getpid())

	stop := make(chan os.Signal, 1)
	signal.Notify(stop, os.Interrupt, syscall.SIGTERM)
	<-stop
}
EOF

say "building $OUTBIN (govmomi $GOVMOMI_VERSION, $(go version | cut -d' ' -f3))"
( cd "$WORK/src/vcsimlite" && \
  GOPATH="$WORK:/usr/share/gocode" GO111MODULE=off GOFLAGS= GOCACHE="$OUTDIR/gocache" \
  timeout 900 go build -o "$WORK/vcsimlite" . ) || die "go build failed"
mv -f "$WORK/vcsimlite" "$OUTBIN"
echo "$STAMP" > "$OUTBIN.stamp"
say "built $OUTBIN in $(( ($(date +%s%N) - started) / 1000000 )) ms"
