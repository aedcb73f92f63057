#!/usr/bin/env bash
# Installs a real, local Kubernetes control plane (kube-apiserver 1.20.2 + etcd 3.4) for the test
# suite and `make run`, built only from Debian packages because this project's machines reach
# package registries and nothing else (no release downloads, no kind, no envtest tarballs).
#
#   kube-apiserver: built from Debian bookworm's *source* package `kubernetes`
#                   (1.20.5+really1.20.2, full tree with vendor/) with Debian's Go 1.19.
#   etcd, etcdctl:  extracted from the `etcd-server` / `etcd-client` .debs (never installed, so no
#                   system service is started).
#
# Output: ${SUBSTRATUS_CONTROLPLANE_DIR:-$HOME/.cache/substratus/controlplane}/1.20.2/
#         {kube-apiserver,etcd,etcdctl}
#
# Idempotent: does nothing (and prints nothing) when the binaries exist and run. Only the binaries
# are kept; the source tree and the Go build cache live in a temp dir that is always removed.
# A cold build takes ~5 minutes on 2 cores and ~1.3 GB of memory (see docs/controlplane.md).
set -euo pipefail

readonly KUBE_VERSION=1.20.2
readonly ROOT_DIR="${SUBSTRATUS_CONTROLPLANE_DIR:-${HOME}/.cache/substratus/controlplane}"
readonly DEST="${ROOT_DIR}/${KUBE_VERSION}"
readonly PROG="install-controlplane"

die() {
  echo "${PROG}: ERROR: $*" >&2
  exit 1
}

fmt_secs() { printf '%dm%02ds' $(($1 / 60)) $(($1 % 60)); }

apiserver_ok() { "${DEST}/kube-apiserver" --version 2>/dev/null | grep -q "v${KUBE_VERSION}"; }
etcd_ok() {
  "${DEST}/etcd" --version >/dev/null 2>&1 && "${DEST}/etcdctl" version >/dev/null 2>&1
}

# Fast path: nothing to do.
if apiserver_ok && etcd_ok; then
  exit 0
fi

mkdir -p "${DEST}"
# Serialise concurrent installs (CI and a developer shell, two test sessions, ...).
exec 9>"${ROOT_DIR}/.install.lock"
if command -v flock >/dev/null 2>&1; then
  flock 9
  if apiserver_ok && etcd_ok; then exit 0; fi
fi

SUDO=()
if [[ "$(id -u)" != 0 ]]; then
  command -v sudo >/dev/null 2>&1 || die "must run as root (or have sudo) to install build packages with apt-get"
  SUDO=(sudo)
fi
export DEBIAN_FRONTEND=noninteractive
# apt downloads as the unprivileged _apt user, which can't write into our private temp dir.
APT_SANDBOX=()
[[ "$(id -u)" == 0 ]] && APT_SANDBOX=(-o "APT::Sandbox::User=root")

WORK="$(mktemp -d "${TMPDIR:-/tmp}/substratus-controlplane-build.XXXXXX")"
LOG="${WORK}/build.log"
on_exit() {
  local rc=$?
  if [[ ${rc} != 0 ]]; then
    cp -f "${LOG}" "${ROOT_DIR}/last-build.log" 2>/dev/null || true
    echo "${PROG}: FAILED (exit ${rc}). Last lines of the build log (full log: ${ROOT_DIR}/last-build.log):" >&2
    tail -n 40 "${LOG}" >&2 2>/dev/null || true
  fi
  # Go marks nothing read-only in GOPATH mode, but be safe before deleting.
  chmod -R u+w "${WORK}" 2>/dev/null || true
  rm -rf "${WORK}"
}
trap on_exit EXIT
: >"${LOG}"

# run DESCRIPTION CMD... : runs CMD with its output in the build log; fails loudly naming the step.
run() {
  local what=$1
  shift
  echo "+ [${what}] $*" >>"${LOG}"
  if ! "$@" >>"${LOG}" 2>&1; then
    die "step '${what}' failed: $*"
  fi
}

APT_UPDATED=false
apt_update_once() {
  if ! ${APT_UPDATED}; then
    run "apt-get update" "${SUDO[@]}" apt-get update -qq
    APT_UPDATED=true
  fi
}

ensure_packages() {
  local missing=() p
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "${p}" 2>/dev/null | grep -q "install ok installed" || missing+=("${p}")
  done
  if ((${#missing[@]})); then
    apt_update_once
    run "apt-get install ${missing[*]}" "${SUDO[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"
  fi
}

install_etcd() {
  local t0=${SECONDS} d="${WORK}/etcd"
  mkdir -p "${d}"
  apt-cache show etcd-server etcd-client >/dev/null 2>&1 || apt_update_once
  cd "${d}"
  run "apt-get download etcd-server etcd-client (is Debian's archive reachable?)" \
    apt-get "${APT_SANDBOX[@]}" download -qq etcd-server etcd-client
  cd /
  local deb
  for deb in "${d}"/*.deb; do run "dpkg -x $(basename "${deb}")" dpkg -x "${deb}" "${d}/root"; done
  [[ -x "${d}/root/usr/bin/etcd" ]] || die "etcd-server .deb has no usr/bin/etcd"
  [[ -x "${d}/root/usr/bin/etcdctl" ]] || die "etcd-client .deb has no usr/bin/etcdctl"
  install -m 0755 "${d}/root/usr/bin/etcd" "${DEST}/.etcd.tmp" && mv -f "${DEST}/.etcd.tmp" "${DEST}/etcd"
  install -m 0755 "${d}/root/usr/bin/etcdctl" "${DEST}/.etcdctl.tmp" && mv -f "${DEST}/.etcdctl.tmp" "${DEST}/etcdctl"
  etcd_ok || die "the extracted etcd does not run: $("${DEST}/etcd" --version 2>&1 | tail -n 3)"
  echo "${PROG}: etcd $("${DEST}/etcd" --version | sed -n 's/^etcd Version: //p') installed in $(fmt_secs $((SECONDS - t0))) -> ${DEST}"
}

# Writes a private deb-src list mirroring the machine's enabled Debian archives, so `apt-get source`
# works without touching /etc/apt (the system config usually has only `Types: deb`).
write_deb_src_list() {
  local out=$1 keyring="" targets
  [[ -r /usr/share/keyrings/debian-archive-keyring.gpg ]] && keyring="[signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] "
  targets="$(apt-get indextargets --format '$(REPO_URI) $(RELEASE)' 'Identifier: Packages' 'Origin: Debian' 2>/dev/null | sort -u || true)"
  if [[ -z "${targets}" ]]; then
    apt_update_once
    targets="$(apt-get indextargets --format '$(REPO_URI) $(RELEASE)' 'Identifier: Packages' 'Origin: Debian' 2>/dev/null | sort -u || true)"
  fi
  [[ -n "${targets}" ]] || targets="http://deb.debian.org/debian/ bookworm"
  : >"${out}"
  local uri rel
  while read -r uri rel; do
    echo "deb-src ${keyring}${uri} ${rel} main" >>"${out}"
  done <<<"${targets}"
}

# Same selection as build/root/Makefile.generated_files (KUBE_OPENAPI_*): every Go dir of the tree
# (staging/src/* named as vendor/*, not the rest of vendor/) with a '+k8s:' comment tag, minus
# code-generator and sample-apiserver, whose files mention '+k8s:openapi-gen='.
openapi_input_dirs() {
  set +o pipefail
  find -H . -not \( \( -path './_*' -o -path './.*' -o -path ./vendor \) -prune \) -type f -name '*.go' -print |
    sed -e 's|^\./staging/src/|vendor/|' -e 's|^\./||' |
    grep -v -E '^vendor/k8s\.io/(code-generator|sample-apiserver)/' |
    xargs grep --color=never -l '^// *+k8s:' |
    xargs grep --color=never -l '+k8s:openapi-gen=' |
    xargs -n1 dirname |
    LC_ALL=C sort -u
  set -o pipefail
}

install_apiserver() {
  local t0=${SECONDS} t
  ensure_packages golang-go golang-github-modern-go-reflect2-dev dpkg-dev xz-utils
  local reflect2_src=/usr/share/gocode/src/github.com/modern-go/reflect2
  [[ -f "${reflect2_src}/reflect2.go" ]] || die "${reflect2_src} missing (package golang-github-modern-go-reflect2-dev)"

  # 1. Source: Debian's `kubernetes` source package through a private apt state dir.
  local s="${WORK}/apt-src"
  mkdir -p "${s}/lists/partial" "${s}/dl"
  write_deb_src_list "${s}/sources.list"
  local apt_opts=(
    -o "Dir::Etc::SourceList=${s}/sources.list" -o "Dir::Etc::SourceParts=${s}/none"
    -o "Dir::State::Lists=${s}/lists" -o "Dir::Cache::pkgcache=" -o "Dir::Cache::srcpkgcache="
  )
  apt_opts+=("${APT_SANDBOX[@]}")
  run "apt-get update (deb-src)" apt-get "${apt_opts[@]}" update -qq
  cd "${s}/dl"
  run "apt-get source kubernetes (deb-src: $(tr '\n' ';' <"${s}/sources.list"))" \
    apt-get "${apt_opts[@]}" source -qq --download-only kubernetes
  cd /
  local dsc
  dsc="$(ls "${s}"/dl/kubernetes_*.dsc)"
  [[ "$(basename "${dsc}")" == *"${KUBE_VERSION}-"* ]] ||
    die "Debian's kubernetes source is $(basename "${dsc}"), expected upstream ${KUBE_VERSION}"

  export GOPATH="${WORK}/gopath" GOCACHE="${WORK}/gocache" GO111MODULE=off CGO_ENABLED=0 GOFLAGS="" GOTOOLCHAIN=local
  local kdir="${GOPATH}/src/k8s.io/kubernetes"
  mkdir -p "$(dirname "${kdir}")"
  run "dpkg-source -x" dpkg-source -x "${dsc}" "${kdir}"
  t=$((SECONDS - t0))
  echo "source fetched+unpacked in ${t}s" >>"${LOG}"

  # 2. reflect2 v1.0.1 (vendored) crashes on Go >= 1.18; Debian's 1.0.2 has the fix.
  rm -rf "${kdir}/vendor/github.com/modern-go/reflect2"
  cp -rL "${reflect2_src}" "${kdir}/vendor/github.com/modern-go/reflect2"

  cd "${kdir}"
  # 3. The tarball lacks pkg/generated/openapi/zz_generated.openapi.go: generate it like the tree's
  #    Makefile.generated_files does.
  local t1=${SECONDS}
  run "build openapi-gen" go build -o "${WORK}/bin/openapi-gen" k8s.io/kubernetes/vendor/k8s.io/kube-openapi/cmd/openapi-gen
  local dirs
  dirs="$(openapi_input_dirs)"
  [[ -n "${dirs}" ]] || die "found no +k8s:openapi-gen packages in the kubernetes tree"
  run "openapi-gen" "${WORK}/bin/openapi-gen" --logtostderr \
    -i "$(sed 's|^|k8s.io/kubernetes/|' <<<"${dirs}" | paste -sd, -)" \
    -p k8s.io/kubernetes/pkg/generated/openapi \
    -O zz_generated.openapi \
    -h vendor/k8s.io/code-generator/hack/boilerplate.go.txt \
    -r "${WORK}/openapi-violations.report"
  [[ -s pkg/generated/openapi/zz_generated.openapi.go ]] || die "openapi-gen wrote no pkg/generated/openapi/zz_generated.openapi.go"
  echo "openapi-gen in $((SECONDS - t1))s" >>"${LOG}"

  # 4. kube-apiserver, with the version stamped like hack/lib/version.sh does.
  local t2=${SECONDS} ldflags="-s -w" key val pkg
  local -A ver=([gitVersion]="v${KUBE_VERSION}" [gitMajor]="1" [gitMinor]="20" [gitTreeState]="clean"
    [buildDate]="$(date -u +%Y-%m-%dT%H:%M:%SZ)")
  for key in "${!ver[@]}"; do
    val=${ver[${key}]}
    for pkg in k8s.io/client-go/pkg/version k8s.io/component-base/version; do
      ldflags+=" -X k8s.io/kubernetes/vendor/${pkg}.${key}=${val}"
    done
  done
  run "go build kube-apiserver" go build -ldflags "${ldflags}" -o "${WORK}/bin/kube-apiserver" k8s.io/kubernetes/cmd/kube-apiserver
  echo "kube-apiserver compiled in $((SECONDS - t2))s" >>"${LOG}"
  cd /

  install -m 0755 "${WORK}/bin/kube-apiserver" "${DEST}/.kube-apiserver.tmp"
  mv -f "${DEST}/.kube-apiserver.tmp" "${DEST}/kube-apiserver"
  apiserver_ok || die "the built kube-apiserver does not report v${KUBE_VERSION}: $("${DEST}/kube-apiserver" --version 2>&1 | tail -n 3)"
  echo "${PROG}: kube-apiserver v${KUBE_VERSION} built in $(fmt_secs $((SECONDS - t0))) (openapi-gen $((t2 - t1))s, compile $((SECONDS - t2))s) -> ${DEST}"
}

T_START=${SECONDS}
etcd_ok || install_etcd
apiserver_ok || install_apiserver
echo "${PROG}: control plane ready in ${DEST} (total $(fmt_secs $((SECONDS - T_START))))"
