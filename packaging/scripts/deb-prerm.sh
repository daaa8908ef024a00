#!/bin/sh
# On removal (not on upgrade), stop the service (it drains and leaves the
# cluster cleanly) and disable it, so that a reinstall does not start it
# at the next boot before it is configured again. Stopping uses Debian's
# helper, as dh_installsystemd does; disabling works without a running
# systemd too (a chroot).
set -e
if [ "$1" = remove ]; then
	if [ -d /run/systemd/system ]; then
		deb-systemd-invoke stop arpshare.service >/dev/null || true
	fi
	if command -v systemctl >/dev/null 2>&1; then
		systemctl --no-reload disable arpshare.service >/dev/null 2>&1 || true
	fi
fi
