#!/bin/sh
# After removal: tell systemd the unit is gone. On purge (deb) or erase
# (rpm: $1 is 0; 1 is an upgrade), remove the state folder too: it holds
# only the drained flag, and a reinstall must not start drained.
# DPKG_ROOT is dpkg's --root, empty on a normal install.
set -e
if [ -d /run/systemd/system ]; then
	systemctl --system daemon-reload >/dev/null || true
fi
if [ "$1" = purge ] || [ "$1" = 0 ]; then
	rm -rf "${DPKG_ROOT:-}/var/lib/arpshare"
fi
