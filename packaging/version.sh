#!/bin/sh
# Print the package version from `git describe`, in a form that dpkg and rpm
# both sort in release order:
#   at the tag v1.2.3:                       1.2.3
#   4 commits after it:                      1.2.3+4.gabc1234 (after 1.2.3,
#                                            before any later release)
#   before the release CHANGELOG.md names    1.3.0~dev.4.gabc1234 (before
#   and that has no tag yet:                 1.3.0: '~' sorts before anything)
# The count is of commits since the last v* tag (all commits without one).
# Uncommitted changes add .dirty. Neither dpkg nor rpm allows '-'.
set -eu
cd "$(dirname "$0")/.."
next=$(sed -n 's/^## \[\([0-9][0-9.]*\)\].*/\1/p' CHANGELOG.md 2>/dev/null | head -n 1)
dirty=
if [ -n "$(git status --porcelain --untracked-files=no 2>/dev/null)" ]; then
	dirty=.dirty
fi
hash=$(git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)
if tag=$(git describe --tags --abbrev=0 --match 'v[0-9]*' 2>/dev/null); then
	last=${tag#v}
	n=$(git rev-list --count "$tag..HEAD")
else
	last=
	n=$(git rev-list --count HEAD 2>/dev/null || echo 0)
fi
if [ -n "$next" ] && ! git rev-parse -q --verify "refs/tags/v$next" >/dev/null; then
	# CHANGELOG's newest release is not tagged yet: this is its pre-release,
	# unless it is older than the last tag (a stale CHANGELOG).
	if [ -z "$last" ] || [ "$(printf '%s\n%s\n' "$last" "$next" | sort -V | tail -n 1)" = "$next" ]; then
		echo "$next~dev.$n.g$hash$dirty"
		exit 0
	fi
fi
if [ -z "$last" ]; then
	echo "0.0.0~dev.$n.g$hash$dirty"
elif [ "$n" = 0 ]; then
	echo "$last$dirty"
else
	echo "$last+$n.g$hash$dirty"
fi
