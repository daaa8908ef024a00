#!/bin/sh
# Print the package version from `git describe`: the tag v1.2.3 gives 1.2.3,
# 4 commits after it 1.2.3+4.gabc1234, uncommitted changes add .dirty. With no
# v* tag yet, the newest version in CHANGELOG.md stands in for the tag. '+'
# sorts after the release in dpkg and rpm alike, and neither allows '-'.
set -eu
cd "$(dirname "$0")/.."
if d=$(git describe --tags --match 'v[0-9]*' --dirty 2>/dev/null); then
	echo "$d" | sed -e 's/^v//' -e 's/-\([0-9]*\)-g/+\1.g/' -e 's/-dirty$/.dirty/'
	exit 0
fi
base=$(sed -n 's/^## \[\([0-9][0-9.]*\)\].*/\1/p' CHANGELOG.md | head -n 1)
d=$(git describe --always --dirty --abbrev=12 2>/dev/null || echo unknown)
n=$(git rev-list --count HEAD 2>/dev/null || echo 0)
echo "${base:-0.0.0}+$n.g$(echo "$d" | sed 's/-dirty$/.dirty/')"
