#!/usr/bin/env bash
# cluster.sh runs a real single-node Kubernetes cluster with the real Tekton
# Pipelines controller on loopback, for the test tier that exercises CISS's
# cluster backend (Tekton TaskRuns). It needs root and writable cgroups (tested
# on cgroup v1 only), and no Docker: containerd and runc come from Debian, every
# Kubernetes and Tekton binary is built from the Go module proxy, every image
# is built locally.
#
#   cluster.sh install     apt packages; build and cache binaries and images
#   cluster.sh up DIR      start etcd, containerd, the control plane, kubelet and
#                          Tekton; write DIR/kubeconfig and DIR/env
#   cluster.sh smoke DIR   one Tekton v1 TaskRun with a script step and a result
#   cluster.sh down DIR    stop everything, unmount, remove cgroups, restore
#                          sysctls; fail if anything is left behind
#   cluster.sh paths       print the cached binaries' and images' locations
#
# Binaries are cached outside the work tree, keyed by version:
# $CISS_CACHE/k8s/$K8S_VERSION and $CISS_CACHE/tekton/$TEKTON_VERSION. Every
# non-obvious setting is explained in README.md next to this file.
set -euo pipefail

K8S_VERSION="${K8S_VERSION:-v1.37.2}"
TEKTON_VERSION="${TEKTON_VERSION:-v1.9.0}"
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
cache="${CISS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/ciss}"
kdir="$cache/k8s/$K8S_VERSION"
tdir="$cache/tekton/$TEKTON_VERSION"
imgdir="$kdir/images"
APT_PACKAGES=(etcd-server etcd-client runc containerd iptables conntrack busybox-static containernetworking-plugins)
K8S_CMDS=(kube-apiserver kube-controller-manager kube-scheduler kubelet kubectl)
TEKTON_CMDS=(controller entrypoint nop sidecarlogresults workingdirinit)
# Image references the cluster uses; they exist only in the cluster's containerd
# (imported, never pulled). Tags that are not "latest" keep the kubelet's pull
# policy at IfNotPresent.
IMG_PAUSE="ciss.local/k8s/pause:$K8S_VERSION"
IMG_STEP="ciss.local/k8s/busybox:1"
# The catalog's Trivy steps name aquasec/trivy:<version>; the cluster gets an
# image of that name built from the project's own trivy (deploy/tools), so the
# Tasks run unchanged and nothing is pulled.
TRIVY_VERSION="${TRIVY_VERSION:-v0.69.0}"
IMG_TRIVY="aquasec/trivy:${TRIVY_VERSION#v}"
IMG_TEKTON="ciss.local/tekton" # + /<cmd>:$TEKTON_VERSION
NODE_NAME="ciss-k8s"

log() { printf '%s cluster.sh: %s\n' "$(date +%T)" "$*" >&2; }
die() { log "error: $*"; exit 1; }
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1fs", b - a }'; }
need_cmds() { local c; for c in "$@"; do command -v "$c" >/dev/null || die "$c not found in PATH"; done; }
need_root() { [ "$(id -u)" = 0 ] || die "$1 needs root (containerd, kubelet, mounts, cgroups)"; }

# ---------------------------------------------------------------------------
# install

install_packages() {
  local missing=() p
  for p in "${APT_PACKAGES[@]}"; do
    [ "$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)" = "install ok installed" ] || missing+=("$p")
  done
  if [ ${#missing[@]} -eq 0 ]; then
    log "apt packages present"
    return
  fi
  local t0; t0=$(now)
  log "apt-get install ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  local out; out="$(mktemp)"
  # The packages' own services are never used: this script runs its own
  # etcd and containerd with state under DIR.
  if ! { apt-get update -qq && apt-get install -y -qq --no-install-recommends "${missing[@]}"; } > "$out" 2>&1; then
    cat "$out" >&2; rm -f "$out"
    die "apt-get install ${missing[*]} failed"
  fi
  rm -f "$out"
  # Debian starts the packaged daemons where an init system runs; this cluster
  # runs its own instances, so stop the packaged ones if they came up.
  if command -v systemctl >/dev/null && [ -d /run/systemd/system ]; then
    systemctl disable --now containerd etcd >/dev/null 2>&1 || true
  fi
  log "apt packages installed in $(since "$t0")"
}

# gomod_dir prints the extracted module directory, downloading it if needed.
# Outside any module, so the workspace's go.work does not get in the way.
gomod_dir() {
  (cd / && GOWORK=off GOFLAGS= go mod download -json "$1" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
}

# build_k8s builds the control plane, kubelet and kubectl from k8s.io/kubernetes.
# k8s.io/kubernetes replaces its staging modules (k8s.io/api, client-go, ...)
# with directories of its own repository and requires them at v0.0.0; a wrapper
# module has to replace each with its published v0.x.y. The list is taken from
# kubernetes' own go.mod so that it follows the version.
build_k8s() {
  local have=1 c
  for c in "${K8S_CMDS[@]}"; do [ -x "$kdir/$c" ] || have=0; done
  # (Output captured first: with pipefail, grep -q closing the pipe early
  # would fail kubectl with SIGPIPE.)
  local v=""; [ $have = 1 ] && v="$("$kdir/kubectl" version --client 2>/dev/null || true)"
  if grep -qx "Client Version: $K8S_VERSION" <<< "$v"; then
    log "kubernetes $K8S_VERSION binaries cached in $kdir"
    return
  fi
  local t0 work staging; t0=$(now)
  work="$(mktemp -d)"
  mkdir -p "$kdir"
  local kmod; kmod="$(gomod_dir "k8s.io/kubernetes@$K8S_VERSION")"
  [ -f "$kmod/go.mod" ] || die "k8s.io/kubernetes@$K8S_VERSION not downloadable"
  local minor="${K8S_VERSION#v1.}"; minor="${minor%%.*}"
  local staging_version="v0.${K8S_VERSION#v1.}"
  staging="$(sed -n 's#^[[:space:]]*\(k8s.io/[a-z0-9-]*\) => \./staging/src/.*#\1#p' "$kmod/go.mod")"
  [ -n "$staging" ] || die "no staging replaces found in $kmod/go.mod"
  {
    echo "module ciss.dev/k8s-build"
    echo
    echo "go $(sed -n 's/^go //p' "$kmod/go.mod")"
    echo
    echo "require k8s.io/kubernetes $K8S_VERSION"
    echo
    echo "replace ("
    for c in $staging; do
      # Only the staging modules kubernetes itself requires; the sample-*
      # modules are replaced upstream but not required.
      grep -q "^[[:space:]]*$c v0.0.0\$" "$kmod/go.mod" && echo "	$c => $c $staging_version"
    done
    echo ")"
  } > "$work/go.mod"
  {
    echo "//go:build tools"
    echo
    echo "// Package tools pins the commands this module builds."
    echo "package tools"
    echo
    echo "import ("
    for c in "${K8S_CMDS[@]}"; do echo "	_ \"k8s.io/kubernetes/cmd/$c\""; done
    echo ")"
  } > "$work/tools.go"
  log "kubernetes $K8S_VERSION: resolving modules ($(grep -c '=>' "$work/go.mod") staging replaces; the first run downloads them)"
  (cd "$work" && GOWORK=off GOFLAGS=-mod=mod go mod tidy) > "$work/tidy.log" 2>&1 \
    || { cat "$work/tidy.log" >&2; die "go mod tidy for k8s.io/kubernetes failed (work dir $work)"; }
  log "kubernetes $K8S_VERSION: modules resolved in $(since "$t0")"
  local pkgver="k8s.io/component-base/version" cgver="k8s.io/client-go/pkg/version" ld="-s -w" v
  for v in "$pkgver" "$cgver"; do
    ld="$ld -X $v.gitVersion=$K8S_VERSION -X $v.gitMajor=1 -X $v.gitMinor=$minor -X $v.gitTreeState=clean -X $v.buildDate=1970-01-01T00:00:00Z"
  done
  for c in "${K8S_CMDS[@]}"; do
    local t1; t1=$(now)
    (cd "$work" && GOWORK=off GOFLAGS=-mod=mod CGO_ENABLED=0 go build -trimpath -ldflags "$ld" -o "$kdir/$c.tmp" "k8s.io/kubernetes/cmd/$c") >&2 \
      || die "building $c failed (work dir $work)"
    mv "$kdir/$c.tmp" "$kdir/$c"
    log "kubernetes $K8S_VERSION: $c built in $(since "$t1")"
  done
  rm -rf "$work"
  log "kubernetes $K8S_VERSION binaries built in $(since "$t0")"
}

# build_tekton builds the Tekton controller and the helper binaries its pods run.
# Tekton's go.mod replaces two AWS modules; replaces in a dependency are ignored,
# so the wrapper repeats them.
build_tekton() {
  local have=1 c
  for c in "${TEKTON_CMDS[@]}"; do [ -x "$tdir/$c" ] || have=0; done
  if [ $have = 1 ] && [ -d "$tdir/config/300-crds" ]; then
    log "tekton $TEKTON_VERSION binaries cached in $tdir"
    return
  fi
  local t0 work tmod; t0=$(now)
  work="$(mktemp -d)"
  mkdir -p "$tdir"
  tmod="$(gomod_dir "github.com/tektoncd/pipeline@$TEKTON_VERSION")"
  [ -f "$tmod/go.mod" ] || die "github.com/tektoncd/pipeline@$TEKTON_VERSION not downloadable"
  {
    echo "module ciss.dev/tekton-build"
    echo
    echo "go $(sed -n 's/^go //p' "$tmod/go.mod")"
    echo
    echo "require github.com/tektoncd/pipeline $TEKTON_VERSION"
    echo
    echo "replace ("
    # Single-line and block replaces with a module version (never local paths).
    sed -n 's#^\(replace\)\{0,1\}[[:space:]]*\([^ ]*\) => \([^ .][^ ]*\) \(v[^ ]*\).*#	\2 => \3 \4#p' "$tmod/go.mod"
    echo ")"
  } > "$work/go.mod"
  {
    echo "//go:build tools"
    echo
    echo "// Package tools pins the commands this module builds."
    echo "package tools"
    echo
    echo "import ("
    for c in "${TEKTON_CMDS[@]}"; do echo "	_ \"github.com/tektoncd/pipeline/cmd/$c\""; done
    echo ")"
  } > "$work/tools.go"
  log "tekton $TEKTON_VERSION: resolving modules (the first run downloads them)"
  (cd "$work" && GOWORK=off GOFLAGS=-mod=mod go mod tidy) > "$work/tidy.log" 2>&1 \
    || { cat "$work/tidy.log" >&2; die "go mod tidy for tektoncd/pipeline failed (work dir $work)"; }
  log "tekton $TEKTON_VERSION: modules resolved in $(since "$t0")"
  for c in "${TEKTON_CMDS[@]}"; do
    local t1; t1=$(now)
    (cd "$work" && GOWORK=off GOFLAGS=-mod=mod CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$tdir/$c.tmp" "github.com/tektoncd/pipeline/cmd/$c") >&2 || die "building tekton $c failed (work dir $work)"
    mv "$tdir/$c.tmp" "$tdir/$c"
    log "tekton $TEKTON_VERSION: $c built in $(since "$t1")"
  done
  # The CRDs and ConfigMaps the controller needs, from the same module zip.
  rm -rf "$tdir/config"
  mkdir -p "$tdir/config"
  cp -r "$tmod/config/300-crds" "$tmod"/config/config-*.yaml "$tmod/config/controller.yaml" "$tdir/config/"
  chmod -R u+w "$tdir/config"
  rm -rf "$work"
  log "tekton $TEKTON_VERSION binaries built in $(since "$t0")"
}

# build_images builds the OCI images the cluster runs (pause, Tekton's helpers,
# a busybox step and shell image) from local binaries, in Go, as one
# docker-archive tarball that `ctr images import` reads.
build_images() {
  local busybox=/bin/busybox
  [ -x "$busybox" ] || die "$busybox missing (apt package busybox-static)"
  local stamp; stamp="$K8S_VERSION $TEKTON_VERSION $(sha256sum "$busybox" "$here"/cmd/*/*.go "$tdir/entrypoint" | sha256sum | cut -c1-16)"
  if [ -f "$imgdir/images.tar" ] && [ "$(cat "$imgdir/stamp" 2>/dev/null)" = "$stamp" ]; then
    log "images cached in $imgdir"
    return
  fi
  local t0; t0=$(now)
  mkdir -p "$imgdir"
  (cd "$root/test" && CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$imgdir/pause" ./k8s/cmd/ciss-k8s-pause) >&2
  local args=(-out "$imgdir/images.tar.tmp"
    -image "$IMG_PAUSE=/pause:$imgdir/pause"
    -busybox "$IMG_STEP=$busybox")
  local c
  for c in entrypoint nop sidecarlogresults workingdirinit; do
    args+=(-image "$IMG_TEKTON/$c:$TEKTON_VERSION=/ko-app/$c:$tdir/$c")
  done
  (cd "$root/test" && go run ./k8s/cmd/ciss-k8s-image "${args[@]}") >&2
  mv "$imgdir/images.tar.tmp" "$imgdir/images.tar"
  echo "$stamp" > "$imgdir/stamp"
  log "images built in $(since "$t0")"
}

# build_trivy_image builds IMG_TRIVY (busybox + the cached trivy binary) into
# its own tarball: 250 MB that only changes with Trivy.
build_trivy_image() {
  local trivy; trivy=$(TRIVY_VERSION="$TRIVY_VERSION" "$root/deploy/tools/install-trivy.sh")
  local stamp; stamp="$IMG_TRIVY $(sha256sum /bin/busybox "$trivy" "$here"/cmd/ciss-k8s-image/*.go | sha256sum | cut -c1-16)"
  if [ -f "$imgdir/trivy.tar" ] && [ "$(cat "$imgdir/trivy.stamp" 2>/dev/null)" = "$stamp" ]; then
    log "trivy image cached in $imgdir"
    return
  fi
  local t0; t0=$(now)
  mkdir -p "$imgdir"
  (cd "$root/test" && go run ./k8s/cmd/ciss-k8s-image -out "$imgdir/trivy.tar.tmp" \
    -busybox "$IMG_TRIVY=/bin/busybox,/usr/local/bin/trivy:$trivy") >&2
  mv "$imgdir/trivy.tar.tmp" "$imgdir/trivy.tar"
  echo "$stamp" > "$imgdir/trivy.stamp"
  log "trivy image built in $(since "$t0")"
}

cmd_install() {
  need_root install
  need_cmds go apt-get dpkg-query sha256sum
  local t0; t0=$(now)
  install_packages
  build_k8s
  build_tekton
  build_images
  build_trivy_image
  log "install done in $(since "$t0")"
}

# ---------------------------------------------------------------------------
# up

# Sysctls the kubelet sets at start-up (setupKernelTunables: kernel.panic=10,
# kernel.panic_on_oops=1, vm.overcommit_memory=1, ...). On a shared CI machine
# panic_on_oops=1 turns any kernel oops into a reboot, so up saves them and
# down restores them.
# One cluster per machine: the kubelet's device-plugin socket, the sysctls
# and port 6443 are machine-wide. ACTIVE names the running cluster's DIR.
ACTIVE=/run/ciss-k8s.active
HOST_PATHS=(/var/log/containers /var/lib/kubelet /run/containerd)
SYSCTLS=(kernel.panic kernel.panic_on_oops vm.overcommit_memory vm.panic_on_oom kernel.keys.root_maxkeys kernel.keys.root_maxbytes)

picked=" "
pick_port() {
  local p i
  for i in $(seq 500); do
    p=$(( (RANDOM * 32768 + RANDOM) % 28000 + 20000 ))
    case "$picked" in *" $p "*) continue ;; esac
    if [ -z "$(ss -Htan "( sport = :$p )")" ]; then
      picked="$picked$p "
      echo "$p"
      return
    fi
  done
  die "no free port"
}

# start NAME CMD...: runs CMD in its own session (so a signal to the caller's
# process group does not reach it and it outlives this script), output to
# DIR/logs/NAME.log, pid to DIR/pids/NAME.pid.
start() {
  local name="$1"; shift
  setsid "$@" > "$dir/logs/$name.log" 2>&1 < /dev/null &
  echo $! > "$dir/pids/$name.pid"
}

alive() { local f="$dir/pids/$1.pid"; [ -f "$f" ] && kill -0 "$(cat "$f")" 2>/dev/null; }

# wait_for WHAT SECONDS CMD...: polls CMD every 0.2 s; on timeout names WHAT
# and shows the tail of the logs of whatever died.
wait_for() {
  local what="$1" secs="$2"; shift 2
  local end=$(( $(date +%s) + secs ))
  until "$@" >/dev/null 2>&1; do
    local n
    for n in "$dir"/pids/*.pid; do
      n="$(basename "$n" .pid)"
      alive "$n" || { tail -n 30 "$dir/logs/$n.log" >&2 || true; die "$n exited while waiting for $what (log: $dir/logs/$n.log)"; }
    done
    [ "$(date +%s)" -lt "$end" ] || die "timed out after ${secs}s waiting for $what (logs: $dir/logs)"
    sleep 0.2
  done
}

node_ready() {
  [ "$(kc get node "$NODE_NAME" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}')" = True ]
}

# crds_established: every Tekton CRD has Established=True. (`kubectl wait
# --for condition=established -f 300-crds` kept timing out for ~10 s after
# the last CRD was established.)
crds_established() {
  local st n
  st="$(kc get -f "$tdir/config/300-crds" -o jsonpath='{range .items[*]}{.status.conditions[?(@.type=="Established")].status}{" "}{end}')"
  n="$(ls "$tdir"/config/300-crds/*.yaml | wc -l)"
  [ "$(echo "$st" | tr ' ' '\n' | grep -cx True)" -eq "$n" ]
}

kc() { "$kdir/kubectl" --kubeconfig "$dir/kubeconfig" --cache-dir "$dir/kubectl-cache" "$@"; }
ctr_() { ctr --address "$dir/containerd/containerd.sock" -n k8s.io "$@"; }

# cgroup_root is this cluster's kubelet --cgroup-root, unique per DIR, so that
# down removes exactly the cgroups this cluster created.
cgroup_name() { echo "ciss-k8s-$(echo -n "$dir" | sha256sum | cut -c1-10)"; }

# cgroup_hierarchies prints the mount points of the cgroup v1 hierarchies (and
# of the v2 one if the machine is v2-only).
cgroup_hierarchies() {
  awk '$9 == "cgroup" || $9 == "cgroup2" { print $5 }' /proc/self/mountinfo | sort -u
}

gen_pki() {
  local p="$dir/pki"
  mkdir -p "$p"
  openssl req -x509 -newkey rsa:2048 -nodes -keyout "$p/ca.key" -out "$p/ca.crt" -days 7 \
    -subj "/CN=ciss-k8s-ca" -addext "basicConstraints=critical,CA:TRUE" \
    -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
  openssl req -newkey rsa:2048 -nodes -keyout "$p/apiserver.key" -out "$p/apiserver.csr" \
    -subj "/CN=kube-apiserver" 2>/dev/null
  openssl x509 -req -in "$p/apiserver.csr" -CA "$p/ca.crt" -CAkey "$p/ca.key" -CAcreateserial \
    -out "$p/apiserver.crt" -days 7 -extfile <(printf '%s\n' \
      "subjectAltName=IP:127.0.0.1,IP:10.0.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc" \
      "extendedKeyUsage=serverAuth" "keyUsage=critical,digitalSignature,keyEncipherment") 2>/dev/null
  openssl genrsa -out "$p/sa.key" 2048 2>/dev/null
  openssl rsa -in "$p/sa.key" -pubout -out "$p/sa.pub" 2>/dev/null
  local token; token="$(openssl rand -hex 24)"
  # Static token file: one administrator (system:masters) for every component
  # and for the tests; authorization is AlwaysAllow in this tier anyway.
  echo "$token,ciss-admin,ciss-admin,system:masters" > "$p/tokens.csv"
  chmod 600 "$p"/*.key "$p/tokens.csv"
  cat > "$dir/kubeconfig" <<KC
apiVersion: v1
kind: Config
clusters:
- name: ciss-k8s
  cluster:
    server: https://127.0.0.1:$api_port
    certificate-authority: $p/ca.crt
users:
- name: ciss-admin
  user:
    token: $token
contexts:
- name: ciss-k8s
  context:
    cluster: ciss-k8s
    user: ciss-admin
current-context: ciss-k8s
KC
  chmod 600 "$dir/kubeconfig"
}

write_containerd_config() {
  local c="$dir/containerd"
  mkdir -p "$c" "$dir/cni/net.d"
  # Only the loopback plugin: pods run with hostNetwork (Tekton's
  # default-pod-template); a pod network would need a bridge, IP forwarding
  # and iptables rules on the shared machine.
  cat > "$dir/cni/net.d/10-loopback.conflist" <<CNI
{"cniVersion": "0.4.0", "name": "ciss-loopback", "plugins": [{"type": "loopback"}]}
CNI
  cat > "$c/config.toml" <<TOML
version = 2
root = "$c/root"
state = "$c/state"
plugin_dir = ""
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper"]

[grpc]
  address = "$c/containerd.sock"

[ttrpc]
  address = "$c/containerd.sock.ttrpc"

[debug]
  address = ""

[metrics]
  address = ""

[plugins]
  [plugins."io.containerd.internal.v1.opt"]
    path = "$c/opt"
  [plugins."io.containerd.grpc.v1.cri"]
    sandbox_image = "$IMG_PAUSE"
    stream_server_address = "127.0.0.1"
    stream_server_port = "0"
    enable_selinux = false
    # CAP_SYS_RESOURCE is missing here; without this runc fails with
    # "can't get final child's PID from pipe" when the kubelet asks for a
    # negative oom_score_adj.
    restrict_oom_score_adj = true
    # Pod network namespaces under the state dir instead of /var/run/netns.
    netns_mounts_under_state_dir = true
    [plugins."io.containerd.grpc.v1.cri".containerd]
      snapshotter = "overlayfs"
      default_runtime_name = "runc"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
        runtime_type = "io.containerd.runc.v2"
        [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
          SystemdCgroup = false
          # runc's state under DIR too (default /run/containerd/runc).
          Root = "$c/runc"
    [plugins."io.containerd.grpc.v1.cri".cni]
      bin_dir = "/usr/lib/cni"
      conf_dir = "$dir/cni/net.d"
TOML
}

write_kubelet_config() {
  mkdir -p "$dir/kubelet"
  cat > "$dir/kubelet/config.yaml" <<KCFG
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: 127.0.0.1
port: $kubelet_port
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: $kubelet_healthz_port
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: false}
authorization:
  mode: AlwaysAllow
containerRuntimeEndpoint: unix://$dir/containerd/containerd.sock
# cgroup v1 is deprecated in the kubelet and refused unless failCgroupV1 is
# false; the cgroupfs driver because no systemd runs here.
failCgroupV1: false
cgroupDriver: cgroupfs
cgroupRoot: /$cgroup
failSwapOn: false
podLogsDir: $dir/pod-logs
volumePluginDir: $dir/kubelet/volume-plugins
# No iptables chains in the host's tables (nothing here needs them).
makeIPTablesUtilChains: false
# Imported images cannot be pulled again: never garbage-collect them, and
# do not evict pods for a fullish shared disk.
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard:
  memory.available: "100Mi"
  nodefs.available: "1%"
  nodefs.inodesFree: "1%"
  imagefs.available: "1%"
serializeImagePulls: false
oomScoreAdj: 0
registerNode: true
KCFG
}

cmd_up() {
  need_root up
  need_cmds openssl curl ss setsid etcd containerd ctr
  local t0; t0=$(now)
  local c
  for c in "${K8S_CMDS[@]}"; do [ -x "$kdir/$c" ] || die "$kdir/$c missing: run $0 install"; done
  for c in "${TEKTON_CMDS[@]}"; do [ -x "$tdir/$c" ] || die "$tdir/$c missing: run $0 install"; done
  [ -f "$imgdir/images.tar" ] || die "$imgdir/images.tar missing: run $0 install"
  [ -f "$imgdir/trivy.tar" ] || die "$imgdir/trivy.tar missing: run $0 install"
  if ls "$dir"/pids/*.pid >/dev/null 2>&1; then
    for c in "$dir"/pids/*.pid; do
      kill -0 "$(cat "$c")" 2>/dev/null && die "a cluster is already running in $dir (pid file $c): run $0 down $dir"
    done
  fi
  if [ -f "$ACTIVE" ]; then
    local other; other="$(cat "$ACTIVE")"
    if [ "$other" != "$dir" ] && [ -f "$other/pids/kube-apiserver.pid" ] \
      && [[ "$(tr '\0' ' ' < "/proc/$(cat "$other/pids/kube-apiserver.pid")/cmdline" 2>/dev/null)" == *"$other/"* ]]; then
      die "another cluster runs in $other (one per machine): run $0 down $other"
    fi
  fi
  echo "$dir" > "$ACTIVE"
  rm -f "$dir"/pids/*.pid
  mkdir -p "$dir/logs" "$dir/pids" "$dir/pod-logs"
  cgroup="$(cgroup_name)"
  # If up fails half-way, take down what did start (the logs stay in DIR/logs).
  trap 'rc=$?; if [ $rc -ne 0 ]; then log "up failed; tearing down"; cmd_down || true; fi; exit $rc' EXIT

  # Sysctls first: a down after a failed up restores them.
  if [ ! -f "$dir/sysctl.saved" ]; then
    for c in "${SYSCTLS[@]}"; do echo "$c=$(sysctl -n "$c")"; done > "$dir/sysctl.saved"
  fi
  # Host paths the kubelet and containerd write to whatever their
  # configuration says: /var/log/containers (symlinks to container logs),
  # /var/lib/kubelet/device-plugins (the device plugin socket), /run/containerd/s
  # (shim sockets). Those that do not exist yet are removed again by down.
  for c in "${HOST_PATHS[@]}"; do
    [ -e "$c" ] || grep -qx "$c" "$dir/created-host-paths" 2>/dev/null || echo "$c" >> "$dir/created-host-paths"
  done

  api_port=6443
  [ -z "$(ss -Htan "( sport = :$api_port )")" ] || api_port="$(pick_port)"
  local etcd_port etcd_peer kubelet_port kubelet_healthz_port metrics_port
  etcd_port="$(pick_port)"; etcd_peer="$(pick_port)"
  kubelet_port="$(pick_port)"; kubelet_healthz_port="$(pick_port)"
  metrics_port="$(pick_port)"

  gen_pki
  cat > "$dir/env" <<ENV
KUBECONFIG=$dir/kubeconfig
CISS_K8S_API=https://127.0.0.1:$api_port
CISS_K8S_STEP_IMAGE=$IMG_STEP
CISS_K8S_TRIVY_IMAGE=$IMG_TRIVY
CISS_K8S_NODE=$NODE_NAME
CISS_K8S_POD_LOGS=$dir/pod-logs
CISS_K8S_CGROUP=$cgroup
CISS_K8S_CONTAINERD=$dir/containerd/containerd.sock
CISS_K8S_KUBECTL=$kdir/kubectl
ENV

  # etcd ----------------------------------------------------------------------
  local t1; t1=$(now)
  start etcd etcd --name ciss --data-dir "$dir/etcd" \
    --listen-client-urls "http://127.0.0.1:$etcd_port" --advertise-client-urls "http://127.0.0.1:$etcd_port" \
    --listen-peer-urls "http://127.0.0.1:$etcd_peer" --initial-advertise-peer-urls "http://127.0.0.1:$etcd_peer" \
    --initial-cluster "ciss=http://127.0.0.1:$etcd_peer" --logger zap --log-level warn
  # containerd ----------------------------------------------------------------
  write_containerd_config
  start containerd containerd --config "$dir/containerd/config.toml"
  wait_for "etcd" 30 curl -fsS "http://127.0.0.1:$etcd_port/health"
  wait_for "containerd" 30 ctr_ version
  log "etcd and containerd up in $(since "$t1")"

  # control plane ---------------------------------------------------------------
  t1=$(now)
  start kube-apiserver "$kdir/kube-apiserver" \
    --etcd-servers "http://127.0.0.1:$etcd_port" \
    --bind-address 127.0.0.1 --advertise-address 127.0.0.1 --secure-port "$api_port" \
    --endpoint-reconciler-type none \
    --tls-cert-file "$dir/pki/apiserver.crt" --tls-private-key-file "$dir/pki/apiserver.key" \
    --client-ca-file "$dir/pki/ca.crt" \
    --token-auth-file "$dir/pki/tokens.csv" --anonymous-auth=false \
    --authorization-mode AlwaysAllow \
    --service-account-issuer https://kubernetes.default.svc \
    --service-account-key-file "$dir/pki/sa.pub" --service-account-signing-key-file "$dir/pki/sa.key" \
    --service-cluster-ip-range 10.0.0.0/24 \
    --allow-privileged=true --profiling=false
  # images while the apiserver starts
  ctr_ images import "$imgdir/images.tar" >/dev/null
  ctr_ images import "$imgdir/trivy.tar" >/dev/null
  wait_for "kube-apiserver /readyz" 120 kc get --raw /readyz
  log "kube-apiserver ready in $(since "$t1")"
  start kube-controller-manager "$kdir/kube-controller-manager" --kubeconfig "$dir/kubeconfig" \
    --secure-port 0 --leader-elect=false --use-service-account-credentials=false \
    --service-account-private-key-file "$dir/pki/sa.key" --root-ca-file "$dir/pki/ca.crt" \
    --flex-volume-plugin-dir "$dir/kube-controller-manager/volume-plugins" --profiling=false
  start kube-scheduler "$kdir/kube-scheduler" --kubeconfig "$dir/kubeconfig" \
    --secure-port 0 --leader-elect=false --profiling=false

  # kubelet ---------------------------------------------------------------------
  t1=$(now)
  local h
  for h in $(cgroup_hierarchies); do
    mkdir -p "$h/$cgroup"
    if [ -f "$h/cpuset.cpus" ] && [ -f "$h/$cgroup/cpuset.cpus" ]; then
      cat "$h/cpuset.cpus" > "$h/$cgroup/cpuset.cpus"
      cat "$h/cpuset.mems" > "$h/$cgroup/cpuset.mems"
    fi
  done
  write_kubelet_config
  start kubelet "$kdir/kubelet" --config "$dir/kubelet/config.yaml" --kubeconfig "$dir/kubeconfig" \
    --root-dir "$dir/kubelet/root" --cert-dir "$dir/kubelet/pki" --hostname-override "$NODE_NAME"
  wait_for "node $NODE_NAME Ready" 120 node_ready
  # The node lifecycle controller would remove the not-ready taint on its next
  # pass; do it now so the first pod need not wait.
  kc taint node "$NODE_NAME" node.kubernetes.io/not-ready:NoSchedule- >/dev/null 2>&1 || true
  # Pods need the namespace's default ServiceAccount and kube-root-ca.crt
  # (both made by the controller-manager) before they can be admitted and start.
  wait_for "default ServiceAccount" 60 kc -n default get serviceaccount default
  wait_for "kube-root-ca.crt" 60 kc -n default get configmap kube-root-ca.crt
  log "node $NODE_NAME ready in $(since "$t1")"

  # Tekton ----------------------------------------------------------------------
  t1=$(now)
  # Server-side apply: some Tekton CRDs are too big for the client-side
  # last-applied annotation.
  kc create namespace tekton-pipelines --dry-run=client -o yaml | kc apply --server-side -f - >/dev/null
  kc apply --server-side -f "$tdir/config/300-crds" >/dev/null
  local cms=()
  for c in "$tdir"/config/config-*.yaml; do cms+=(-f "$c"); done
  kc apply --server-side "${cms[@]}" >/dev/null
  # Every TaskRun pod gets the host network: only a loopback CNI is configured.
  kc -n tekton-pipelines patch configmap config-defaults --type merge \
    -p '{"data":{"default-pod-template":"hostNetwork: true\n"}}' >/dev/null
  wait_for "Tekton CRDs established" 60 crds_established
  start_tekton_controller
  wait_for "Tekton controller" 60 grep -q '"Starting controllers' "$dir/logs/tekton-controller.log"
  log "tekton ready in $(since "$t1")"

  trap - EXIT
  log "cluster up in $(since "$t0"): KUBECONFIG=$dir/kubeconfig (env in $dir/env)"
}

# start_tekton_controller runs Tekton's controller as a local process with the
# arguments and environment of its Deployment (config/controller.yaml), the
# helper images pointing at the imported ones.
start_tekton_controller() {
  local img="$IMG_TEKTON"
  start tekton-controller env \
    SYSTEM_NAMESPACE=tekton-pipelines \
    KUBERNETES_MIN_VERSION=v1.28.0 \
    CONFIG_DEFAULTS_NAME=config-defaults \
    CONFIG_LOGGING_NAME=config-logging \
    CONFIG_OBSERVABILITY_NAME=config-observability \
    CONFIG_FEATURE_FLAGS_NAME=feature-flags \
    CONFIG_LEADERELECTION_NAME=config-leader-election-controller \
    CONFIG_SPIRE=config-spire \
    METRICS_DOMAIN=tekton.dev/pipeline \
    METRICS_PROMETHEUS_HOST=127.0.0.1 METRICS_PROMETHEUS_PORT="$metrics_port" \
    PROBES_PORT=0 PROFILING_PORT=0 \
    POD_NAME=tekton-pipelines-controller \
    "$tdir/controller" -kubeconfig "$dir/kubeconfig" -disable-ha \
    -entrypoint-image "$img/entrypoint:$TEKTON_VERSION" \
    -nop-image "$img/nop:$TEKTON_VERSION" \
    -sidecarlogresults-image "$img/sidecarlogresults:$TEKTON_VERSION" \
    -workingdirinit-image "$img/workingdirinit:$TEKTON_VERSION" \
    -shell-image "$IMG_STEP" \
    -shell-image-win "mcr.microsoft.com/powershell:nanoserver@sha256:b6d5ff841b78bdf2dfed7550000fd4f3437385b8fa686ec0f010be24777654d6"
}

# ---------------------------------------------------------------------------
# down

# owned PID: PID is alive (not a zombie) and names DIR on its command line,
# as every process up starts does; guards against a recycled pid.
owned() {
  local pid="$1" st
  st="$(sed 's/^.*) //' "/proc/$pid/stat" 2>/dev/null | cut -d' ' -f1)" || return 1
  [ -n "$st" ] && [ "$st" != Z ] && [[ "$(tr '\0' ' ' < "/proc/$pid/cmdline" 2>/dev/null)" == *"$dir/"* ]]
}

# stop NAME: SIGTERM, up to 20 s for a clean exit, then SIGKILL.
stop() {
  local f="$dir/pids/$1.pid" pid i
  [ -f "$f" ] || return 0
  pid="$(cat "$f")"
  if owned "$pid"; then
    kill -TERM "$pid" 2>/dev/null || true
    for i in $(seq 100); do owned "$pid" || break; sleep 0.2; done
    if owned "$pid"; then
      log "warning: $1 (pid $pid) ignored SIGTERM for 20s; killing"
      kill -KILL "$pid" 2>/dev/null || true
      for i in $(seq 25); do owned "$pid" || break; sleep 0.2; done
    fi
  fi
  # Reap it if this shell started it (a failed up tearing down).
  wait "$pid" 2>/dev/null || true
}

# ancestors prints this script's pid and those of its ancestors, which may name
# DIR on their command lines too.
ancestors() {
  local p=$$
  while [ -n "$p" ] && [ "$p" -gt 1 ]; do
    echo "$p"
    p="$(sed 's/^.*) //' "/proc/$p/stat" 2>/dev/null | cut -d' ' -f2)"
  done
}

# strays prints the pids of processes that name DIR on their command line
# (containerd shims, anything up started) or sit in this cluster's cgroups
# (container processes), other than this script and its ancestors.
strays() {
  local skip p h
  skip=" $(ancestors | tr '\n' ' ') "
  {
    for p in /proc/[0-9]*; do
      p="${p#/proc/}"
      case "$skip" in *" $p "*) continue ;; esac
      owned "$p" && echo "$p"
    done
    for h in $(cgroup_hierarchies); do
      [ -d "$h/$cgroup" ] && find "$h/$cgroup" -name cgroup.procs -exec cat {} + 2>/dev/null
    done
  } | sort -un | while read -r p; do case "$skip" in *" $p "*) ;; *) [ -d "/proc/$p" ] && echo "$p" ;; esac; done
}

# mounts_under prints the mount points at or under DIR, deepest first.
mounts_under() {
  awk -v d="$dir" '{ m = $5; gsub(/\\040/, " ", m); if (m == d || index(m, d "/") == 1) print length(m) " " m }' /proc/self/mountinfo \
    | sort -rn | cut -d' ' -f2-
}

cmd_down() {
  need_root down
  [ -d "$dir" ] || die "$dir does not exist"
  local t0; t0=$(now)
  cgroup="$(cgroup_name)"
  stop tekton-controller
  # Pods first, through the API, while the kubelet runs: it stops them through
  # the CRI, which also unmounts their shm and network namespaces.
  if [ -f "$dir/kubeconfig" ] && alive kube-apiserver && alive kubelet; then
    kc delete pods --all --all-namespaces --grace-period 1 --timeout 30s >/dev/null 2>&1 \
      || log "warning: deleting pods through the API failed; killing their containers"
  fi
  stop kube-scheduler
  stop kube-controller-manager
  stop kubelet
  if alive containerd; then
    local id
    for id in $(ctr_ tasks ls -q 2>/dev/null); do ctr_ tasks kill -s SIGKILL "$id" >/dev/null 2>&1 || true; done
    for id in $(ctr_ tasks ls -q 2>/dev/null); do ctr_ tasks delete -f "$id" >/dev/null 2>&1 || true; done
    for id in $(ctr_ containers ls -q 2>/dev/null); do ctr_ containers delete "$id" >/dev/null 2>&1 || true; done
  fi
  stop containerd
  # Shims and container processes that outlived containerd.
  local p i
  for i in $(seq 25); do
    p="$(strays | grep -v -x -f <(for n in kube-apiserver etcd; do [ -f "$dir/pids/$n.pid" ] && cat "$dir/pids/$n.pid"; done) || true)"
    [ -n "$p" ] || break
    kill -KILL $p 2>/dev/null || true
    sleep 0.2
  done
  stop kube-apiserver
  stop etcd
  # Mounts: pod volumes (tmpfs), the kubelet's rshared bind mount of its root
  # dir, container rootfs overlays, sandbox shm, network namespaces.
  local m
  for i in 1 2 3; do
    while read -r m; do
      [ -n "$m" ] || continue
      umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true
    done < <(mounts_under)
    [ -z "$(mounts_under)" ] && break
  done
  # Cgroups: this cluster's --cgroup-root in every hierarchy, deepest first.
  local h
  for i in $(seq 10); do
    local left=0
    for h in $(cgroup_hierarchies); do
      [ -d "$h/$cgroup" ] || continue
      find "$h/$cgroup" -depth -type d -exec rmdir {} + 2>/dev/null || true
      [ -d "$h/$cgroup" ] && left=1
    done
    [ $left = 0 ] && break
    sleep 0.2
  done
  # Sysctls the kubelet changed.
  if [ -f "$dir/sysctl.saved" ]; then
    local kv
    while read -r kv; do sysctl -qw "$kv" >/dev/null || log "warning: cannot restore $kv"; done < "$dir/sysctl.saved"
  fi
  # Host paths (see HOST_PATHS): the kubelet's symlinks into DIR in any case;
  # the rest only where up found nothing.
  if [ -d /var/log/containers ]; then
    find /var/log/containers -maxdepth 1 -type l -lname "$dir/*" -delete 2>/dev/null || true
  fi
  while read -r p; do
    case "$p" in
      /var/lib/kubelet) rm -f /var/lib/kubelet/device-plugins/kubelet.sock ;;
    esac
    [ -d "$p" ] && find "$p" -depth -type d -empty -delete 2>/dev/null || true
  done < <(cat "$dir/created-host-paths" 2>/dev/null)

  # Verify.
  local bad=()
  for p in "$dir"/pids/*.pid; do
    [ -f "$p" ] || continue
    owned "$(cat "$p")" && bad+=("process $(basename "$p" .pid) (pid $(cat "$p")) still running")
  done
  for p in $(strays); do bad+=("process $p still running: $(tr '\0' ' ' < "/proc/$p/cmdline" 2>/dev/null | cut -c1-160)"); done
  while read -r m; do [ -n "$m" ] && bad+=("mount $m still mounted"); done < <(mounts_under)
  for h in $(cgroup_hierarchies); do [ -d "$h/$cgroup" ] && bad+=("cgroup $h/$cgroup still exists"); done
  while read -r p; do [ -e "$p" ] && bad+=("$p (created by this cluster) still exists: $(find "$p" | head -3 | tr '\n' ' ')"); done < <(cat "$dir/created-host-paths" 2>/dev/null)
  if [ -f "$dir/sysctl.saved" ]; then
    local kv
    while read -r kv; do
      [ "$(sysctl -n "${kv%%=*}")" = "${kv#*=}" ] || bad+=("sysctl ${kv%%=*} is $(sysctl -n "${kv%%=*}"), was ${kv#*=}")
    done < "$dir/sysctl.saved"
  fi
  if [ ${#bad[@]} -gt 0 ]; then
    for p in "${bad[@]}"; do log "LEFT BEHIND: $p"; done
    die "down left ${#bad[@]} thing(s) behind in $dir"
  fi
  rm -f "$dir/sysctl.saved" "$dir/created-host-paths" "$dir"/pids/*.pid
  [ "$(cat "$ACTIVE" 2>/dev/null)" = "$dir" ] && rm -f "$ACTIVE"
  log "cluster down in $(since "$t0"): no processes, mounts or cgroups left; sysctls restored"
}

# ---------------------------------------------------------------------------
# smoke

cmd_smoke() {
  [ -f "$dir/kubeconfig" ] || die "no cluster in $dir"
  local t0 name; t0=$(now)
  name="ciss-smoke-$(date +%s)-$RANDOM"
  # There is no Tekton admission webhook in this cluster: nothing defaults or
  # validates these objects on the server (the controller applies defaults when
  # it reconciles). Keep them valid by hand; Go callers use SetDefaults and
  # Validate before Create (see cluster_test.go).
  kc apply -f - >/dev/null <<YAML
apiVersion: tekton.dev/v1
kind: Task
metadata:
  name: ciss-smoke
  namespace: default
spec:
  results:
  - name: greeting
    type: string
  steps:
  - name: greet
    image: $IMG_STEP
    script: |
      #!/bin/sh
      set -e
      printf 'hello from %s' "\$(uname -m)" > \$(results.greeting.path)
YAML
  kc create -f - >/dev/null <<YAML
apiVersion: tekton.dev/v1
kind: TaskRun
metadata:
  name: $name
  namespace: default
spec:
  taskRef:
    name: ciss-smoke
YAML
  local status="" end=$(( $(date +%s) + 180 ))
  while :; do
    status="$(kc -n default get taskrun "$name" -o jsonpath='{.status.conditions[?(@.type=="Succeeded")].status}')"
    [ "$status" = True ] || [ "$status" = False ] && break
    [ "$(date +%s)" -lt "$end" ] || break
    sleep 0.2
  done
  kc -n default get taskrun "$name" -o jsonpath='{.status.conditions[0].reason}: {.status.conditions[0].message}{"\n"}'
  if [ "$status" != True ]; then
    find "$dir/pod-logs" -name '*.log' -path "*$name*" -exec tail -n 20 {} + >&2 2>/dev/null || true
    die "TaskRun $name did not succeed (status '${status:-none}') after $(since "$t0")"
  fi
  kc -n default get taskrun "$name" -o jsonpath='{.status.results}{"\n"}'
  log "TaskRun $name succeeded in $(since "$t0")"
}

cmd_paths() {
  echo "kubernetes $K8S_VERSION: $kdir"
  echo "tekton $TEKTON_VERSION: $tdir"
  echo "images: $imgdir/images.tar ($IMG_PAUSE, $IMG_STEP, $IMG_TEKTON/{entrypoint,nop,sidecarlogresults,workingdirinit}:$TEKTON_VERSION)"
}

# dir_arg turns DIR into an absolute, normalised path (it is matched against
# /proc/*/cmdline and /proc/self/mountinfo).
dir_arg() {
  [ -n "${1:-}" ] || die "usage: $0 $cmd DIR"
  if [ "$cmd" = up ]; then mkdir -p "$1"; else [ -d "$1" ] || die "$1 does not exist"; fi
  dir="$(cd "$1" && pwd -P)"
  [ "$dir" != / ] || die "DIR must not be /"
}

main() {
  cmd="${1:-}"
  case "$cmd" in
    install) cmd_install ;;
    up) dir_arg "${2:-}"; cmd_up ;;
    down) dir_arg "${2:-}"; cmd_down ;;
    smoke) dir_arg "${2:-}"; cmd_smoke ;;
    paths) cmd_paths ;;
    *) echo "usage: $0 install | up DIR | smoke DIR | down DIR | paths" >&2; exit 2 ;;
  esac
}

# One line, read whole before it runs: editing this file while it runs cannot
# make bash execute a half-read command.
main "$@"; exit $?
