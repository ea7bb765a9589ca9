# Sourced by scripts/test.sh (bash, set -euo pipefail): makes sure `kubectl` is on PATH for the
# deploy tests, which run its built-in `kubectl kustomize` (tests/it/deploy/render.rs).
#
# The machine's own kubectl is used when there is one. Otherwise upstream kubectl is built once
# from the Go module proxy with the wrapper module in scripts/kube/ (the one that builds the test
# cluster's control plane: one pinned Kubernetes version for all three) and cached at
# ~/.cache/backup-remediator/kube/<version>/kubectl; later runs reuse it without building, and
# that directory goes first on PATH. Needs Go (PATH or /usr/local/go/bin) only on the first run.
# Run it alone with `bash scripts/kubectl.sh`; KUBECTL_BUILD=1 builds (or reuses the cache) even
# where a kubectl is on PATH.

kubectl_log() { printf '==> %s\n' "$*" >&2; }

ensure_kubectl() {
  local module version minor cache_dir binary go tmp
  local why="not on PATH"
  if command -v kubectl >/dev/null; then
    if [ "${KUBECTL_BUILD:-0}" != 1 ]; then
      kubectl_log "kubectl: $(command -v kubectl)"
      return 0
    fi
    why="KUBECTL_BUILD=1"
  fi

  module="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/kube"
  # One pin for the whole control plane: k8s.io/kubernetes v1.N.P in go.mod (its k8s.io/kubectl
  # is replaced by v0.N.P there).
  version=$(sed -n 's/^[[:space:]]*k8s\.io\/kubernetes \(v1\.[0-9]*\.[0-9]*\)$/\1/p' "$module/go.mod" | head -1)
  if [ -z "$version" ]; then
    kubectl_log "kubectl: no k8s.io/kubernetes v1.N.P requirement in $module/go.mod"
    return 1
  fi
  minor=${version#v1.}
  minor=${minor%%.*}
  cache_dir="${XDG_CACHE_HOME:-$HOME/.cache}/backup-remediator/kube/$version"
  binary="$cache_dir/kubectl"

  if [ -x "$binary" ]; then
    kubectl_log "kubectl: using the cached $version build, $binary"
  else
    go=$(command -v go || true)
    if [ -z "$go" ] && [ -x /usr/local/go/bin/go ]; then go=/usr/local/go/bin/go; fi
    if [ -z "$go" ]; then
      kubectl_log "kubectl: $why, and no Go toolchain to build it: install kubectl $version or Go 1.26+"
      return 1
    fi
    kubectl_log "kubectl: $why; building $version from the Go module proxy with $($go version | cut -d' ' -f3) (a few minutes, once) into $cache_dir"
    # Built beside its final place and renamed into it, so an interrupted or concurrent build
    # never leaves a partial binary that later runs would trust.
    if ! mkdir -p "$cache_dir" || ! tmp=$(mktemp "$cache_dir/.kubectl.XXXXXX"); then
      kubectl_log "kubectl: cannot write to $cache_dir"
      return 1
    fi
    # -mod=readonly: go.sum decides every module (-buildvcs=false: no git needed); the version
    # variables are what upstream's release build sets, so `kubectl version --client` tells
    # which kubectl this is.
    if ! (cd "$module" && GOTOOLCHAIN=local GOFLAGS="-mod=readonly -buildvcs=false" "$go" build -trimpath \
      -ldflags="-s -w -X k8s.io/component-base/version.gitVersion=$version -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$minor -X k8s.io/client-go/pkg/version.gitVersion=$version" \
      -o "$tmp" ./cmd/kubectl); then
      rm -f "$tmp"
      kubectl_log "kubectl: building $version from $module failed (see the go output above); install kubectl $version instead, or fix the build"
      return 1
    fi
    if ! "$tmp" version --client >/dev/null; then
      rm -f "$tmp"
      kubectl_log "kubectl: the $version build does not run"
      return 1
    fi
    mv -f "$tmp" "$binary"
    kubectl_log "kubectl: built $binary ($(du -h "$binary" | cut -f1))"
  fi
  export PATH="$cache_dir:$PATH"
}

# Run directly: build or find kubectl, say which, and exit non-zero when there is none.
if [ "${BASH_SOURCE[0]}" = "$0" ]; then
  set -euo pipefail
  ensure_kubectl
  kubectl version --client
fi
