#!/bin/sh
# rpm: on removal (not on upgrade: then $1 is 1), stop and disable the
# service: it drains and leaves the cluster cleanly.
set -e
if [ "$1" = 0 ] && [ -d /run/systemd/system ]; then
	systemctl --no-reload disable --now arpshare.service >/dev/null 2>&1 || true
fi
