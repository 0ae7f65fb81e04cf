#!/usr/bin/env bash
# Installs TinCan's systemd units for the installed commands (docs/deployment.md):
#
#   sudo npm install -g ./tincan-VERSION.tgz      # first: the four commands on PATH
#   sudo "$(npm root -g)/tincan/scripts/systemd/install.sh" [--bin-dir DIR] [--node PATH] [--unit-dir DIR] [--dry-run]
#
# --bin-dir   where tincan-datapath, tincan-groupvpn and tincan-socialvpn are (default: where
#             `command -v tincan-datapath` finds them; a built checkout's node_modules/.bin works too).
# --node      the node binary (default: `command -v node`; Node >= 20.10).
# --unit-dir  where units go (default /etc/systemd/system).
# --dry-run   print what would be done, change nothing.
#
# The units run with ProtectHome=yes: node and the commands must not live under /root, /home or
# /run/user (as with nvm); it refuses then and says what to do. It creates the system user "tincan"
# (if missing), /etc/tincan (root:tincan 0750), writes the three template units with @NODE@, @BIN@
# and @PKG@ filled in, and runs `systemctl daemon-reload`. It does not enable or start anything:
# `systemctl enable --now tincan-datapath@NET tincan-groupvpn@NET`.
set -euo pipefail

HERE=$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")
NODE=$(command -v node || true)
BIN_DIR=
UNIT_DIR=/etc/systemd/system
DRY=0

while [[ $# -gt 0 ]]; do
  case $1 in
    --bin-dir) BIN_DIR=$2; shift 2 ;;
    --node) NODE=$2; shift 2 ;;
    --unit-dir) UNIT_DIR=$2; shift 2 ;;
    --dry-run) DRY=1; shift ;;
    -h|--help) sed -n '2,17p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "install.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done

die() { echo "install.sh: $*" >&2; exit 1; }
run() { if [[ $DRY == 1 ]]; then echo "+ $*"; else "$@"; fi; }
# Directories the units' ProtectHome=yes hides from the services.
hidden() { [[ $1 == /root || $1 == /root/* || $1 == /home/* || $1 == /run/user/* ]]; }

if [[ -z $BIN_DIR ]]; then
  dp=$(command -v tincan-datapath || true)
  [[ -n $dp ]] || die "tincan-datapath is not on PATH: install the package first (npm install -g ./tincan-VERSION.tgz), or give --bin-dir DIR"
  BIN_DIR=$(dirname "$dp")
fi
BIN_DIR=$(readlink -f "$BIN_DIR")
for cmd in tincan-datapath tincan-groupvpn tincan-socialvpn; do
  [[ -x $BIN_DIR/$cmd ]] || die "$BIN_DIR/$cmd is missing: install the package (npm install -g ./tincan-VERSION.tgz) or build the checkout (npm ci && npm run build)"
done
REAL=$(readlink -f "$BIN_DIR/tincan-datapath")
PKG=$(dirname "$(dirname "$(dirname "$(dirname "$(dirname "$REAL")")")")")   # …/packages/datapath/dist/bin/x.js
[[ -n $NODE && -x $NODE ]] || die "no node binary (use --node PATH)"
NODE=$(readlink -f "$NODE")

if hidden "$NODE"; then
  die "node is $NODE, which the units cannot see (ProtectHome=yes hides /root, /home and /run/user; nvm puts node there).
  Install Node.js >= 20.10 system-wide (your distribution's package, or NodeSource's, in /usr/bin), or copy this one:
    sudo install -m 0755 $NODE /usr/local/bin/node
  then run install.sh again with --node /usr/local/bin/node (or with it first on PATH)."
fi
for p in "$BIN_DIR" "$REAL"; do
  if hidden "$p"; then
    die "the commands are in $p, which the units cannot see (ProtectHome=yes hides /root, /home and /run/user; nvm's global prefix is there).
  Install the package under /usr/local instead:
    sudo npm install -g --prefix /usr/local ./tincan-VERSION.tgz
  then run install.sh again with --bin-dir /usr/local/bin."
  fi
done
ver=$("$NODE" -p 'process.versions.node')
IFS=. read -r major minor _ <<<"$ver"
(( major > 20 || (major == 20 && minor >= 10) )) || die "node $ver is too old (need >= 20.10)"
[[ $DRY == 1 || $(id -u) == 0 ]] || die "run as root (or with --dry-run)"

if ! getent passwd tincan >/dev/null; then
  run useradd --system --home-dir /var/lib/tincan --no-create-home --shell /usr/sbin/nologin tincan
fi
run install -d -m 0750 -o root -g tincan /etc/tincan
run install -d -m 0755 "$UNIT_DIR"
for unit in tincan-datapath@.service tincan-groupvpn@.service tincan-socialvpn@.service; do
  if [[ $DRY == 1 ]]; then
    echo "+ write $UNIT_DIR/$unit (node $NODE, commands in $BIN_DIR, docs in $PKG/docs)"
  else
    sed -e "s|@NODE@|$NODE|g" -e "s|@BIN@|$BIN_DIR|g" -e "s|@PKG@|$PKG|g" "$HERE/$unit" >"$UNIT_DIR/$unit.tmp"
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
