#!/usr/bin/env bash
# Extracts promtool and prometheus from Debian's `prometheus` .deb (never installed, so no service
# starts): promtool for the tests that check the PrometheusRule and dashboard queries and unit-test
# the alerts, prometheus for `make dashboard`, which renders the Grafana dashboard from real scrapes.
#
# Output: ${SUBSTRATUS_TOOLS_DIR:-$HOME/.cache/substratus/tools}/{promtool,prometheus}
# Idempotent: does nothing when both exist and run. Best effort: without a reachable Debian
# archive it says so and exits 0, and the promtool tests skip with the reason.
set -euo pipefail

readonly DEST="${SUBSTRATUS_TOOLS_DIR:-${HOME}/.cache/substratus/tools}"
readonly PROG="install-prometheus"

"${DEST}/promtool" --version >/dev/null 2>&1 && "${DEST}/prometheus" --version >/dev/null 2>&1 && exit 0
command -v apt-get >/dev/null 2>&1 || { echo "${PROG}: no apt-get; promtool tests will skip" >&2; exit 0; }

work="$(mktemp -d)"
trap 'rm -rf "${work}"' EXIT
sandbox=()
[[ "$(id -u)" == 0 ]] && sandbox=(-o "APT::Sandbox::User=root")
cd "${work}"
if ! apt-get "${sandbox[@]}" download -qq prometheus >/dev/null 2>&1; then
  if [[ "$(id -u)" == 0 ]]; then apt-get update -qq >/dev/null 2>&1 || true; fi
  apt-get "${sandbox[@]}" download -qq prometheus >/dev/null 2>&1 \
    || { echo "${PROG}: cannot download Debian's prometheus package; promtool tests will skip" >&2; exit 0; }
fi
dpkg -x prometheus_*.deb root
mkdir -p "${DEST}"
for bin in promtool prometheus; do
  install -m 0755 "root/usr/bin/${bin}" "${DEST}/.${bin}.tmp" && mv -f "${DEST}/.${bin}.tmp" "${DEST}/${bin}"
done
echo "${PROG}: $("${DEST}/promtool" --version 2>&1 | head -n 1) -> ${DEST}/{promtool,prometheus}"
