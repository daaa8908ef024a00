#!/bin/sh
# Create the service user, give it read access to /etc/arpshare, and tell
# systemd about the unit. The service is neither enabled nor started: it
# needs a gossip key and an edited config first (see operations.md).
set -e
if ! getent group arpshare >/dev/null; then
	groupadd --system arpshare
fi
if ! getent passwd arpshare >/dev/null; then
	useradd --system --gid arpshare --no-create-home --home-dir /nonexistent \
		--shell /usr/sbin/nologin --comment "arpshare daemon" arpshare
fi
chgrp arpshare /etc/arpshare /etc/arpshare/arpshare.toml
chmod 0750 /etc/arpshare
if [ -d /run/systemd/system ]; then
	systemctl daemon-reload >/dev/null 2>&1 || true
fi
