#!/bin/sh
# On removal (not on upgrade), stop the service: it drains and leaves the
# cluster cleanly. Debian's helpers, as dh_installsystemd uses them.
set -e
if [ "$1" = remove ] && [ -d /run/systemd/system ]; then
	deb-systemd-invoke stop arpshare.service >/dev/null || true
fi
