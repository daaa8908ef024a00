#!/bin/sh
# On removal (not on upgrade), stop the service: it drains and leaves the
# cluster cleanly. deb passes "remove"; rpm passes 0 when nothing remains.
set -e
case "$1" in
remove|0)
	if [ -d /run/systemd/system ]; then
		systemctl stop arpshare.service >/dev/null 2>&1 || true
		systemctl disable arpshare.service >/dev/null 2>&1 || true
	fi
	;;
esac
