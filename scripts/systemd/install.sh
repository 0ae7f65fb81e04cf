#!/usr/bin/env bash
# Installs TinCan's systemd units for a built checkout (docs/deployment.md):
#
#   npm ci && npm run build                 # in the checkout, first
#   sudo scripts/systemd/install.sh [--prefix DIR] [--node PATH] [--unit-dir DIR] [--dry-run]
#
# --prefix    the checkout the units run from (default: this checkout); it must stay in place.
# --node      the node binary (default: `command -v node`; Node >= 20.10).
# --unit-dir  where units go (default /etc/systemd/system).
# --dry-run   print what would be done, change nothing.
#
# It creates the system user "tincan" (if missing), /etc/tincan (root:tincan 0750), writes the two
# template units with @PREFIX@ and @NODE@ filled in, and runs `systemctl daemon-reload`. It does not
# enable or start anything: `systemctl enable --now tincan-datapath@NET tincan-groupvpn@NET`.
set -euo pipefail

HERE=$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")
PREFIX=$(dirname "$(dirname "$HERE")")
NODE=$(command -v node || true)
UNIT_DIR=/etc/systemd/system
DRY=0

while [[ $# -gt 0 ]]; do
  case $1 in
    --prefix) PREFIX=$(readlink -f "$2"); shift 2 ;;
    --node) NODE=$2; shift 2 ;;
    --unit-dir) UNIT_DIR=$2; shift 2 ;;
    --dry-run) DRY=1; shift ;;
    -h|--help) sed -n '2,15p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "install.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done

die() { echo "install.sh: $*" >&2; exit 1; }
run() { if [[ $DRY == 1 ]]; then echo "+ $*"; else "$@"; fi; }

[[ -n $NODE && -x $NODE ]] || die "no node binary (use --node PATH)"
ver=$("$NODE" -p 'process.versions.node')
[[ ${ver%%.*} -ge 20 ]] || die "node $ver is too old (need >= 20.10)"
for f in packages/datapath/dist/bin/tincan-datapath.js packages/groupvpn/dist/bin/tincan-groupvpn.js packages/socialvpn/dist/bin/tincan-socialvpn.js packages/tun/build/Release packages/watchdog/build/Release; do
  [[ -e $PREFIX/$f ]] || die "$PREFIX/$f is missing: run 'npm ci && npm run build' in $PREFIX first"
done
[[ $DRY == 1 || $(id -u) == 0 ]] || die "run as root (or with --dry-run)"

if ! getent passwd tincan >/dev/null; then
  run useradd --system --home-dir /var/lib/tincan --no-create-home --shell /usr/sbin/nologin tincan
fi
run install -d -m 0750 -o root -g tincan /etc/tincan
run install -d -m 0755 "$UNIT_DIR"
for unit in tincan-datapath@.service tincan-groupvpn@.service tincan-socialvpn@.service; do
  if [[ $DRY == 1 ]]; then
    echo "+ write $UNIT_DIR/$unit (prefix $PREFIX, node $NODE)"
  else
    sed -e "s|@PREFIX@|$PREFIX|g" -e "s|@NODE@|$NODE|g" "$HERE/$unit" >"$UNIT_DIR/$unit.tmp"
    chmod 0644 "$UNIT_DIR/$unit.tmp"
    mv "$UNIT_DIR/$unit.tmp" "$UNIT_DIR/$unit"
  fi
done
if command -v systemctl >/dev/null && [[ -d /run/systemd/system ]]; then
  run systemctl daemon-reload
else
  echo "install.sh: systemd is not running here: skipped daemon-reload"
fi
echo "installed. Next: write /etc/tincan/NET.json (docs/config.md; mode 0640 root:tincan), then"
echo "  systemctl enable --now tincan-datapath@NET tincan-groupvpn@NET   (or tincan-socialvpn@NET)"
