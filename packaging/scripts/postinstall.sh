#!/bin/sh
# Create the service user (from /usr/lib/sysusers.d/arpshare.conf, or with
# useradd where systemd-sysusers is missing) and tell systemd about the
# unit. The service is neither enabled nor started: it needs a gossip key
# and an edited config first (see operations.md).
set -e
if command -v systemd-sysusers >/dev/null 2>&1; then
	systemd-sysusers arpshare.conf
else
	getent group arpshare >/dev/null || groupadd --system arpshare
	getent passwd arpshare >/dev/null || useradd --system --gid arpshare --no-create-home \
		--home-dir /nonexistent --shell /usr/sbin/nologin --comment "arpshare daemon" arpshare
fi
if [ -d /run/systemd/system ]; then
	systemctl --system daemon-reload >/dev/null || true
fi
