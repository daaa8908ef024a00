#!/bin/sh
# Run rpmlint on .rpm files without letting it write outside its temp dir.
# rpmlint unpacks with `rpm2cpio | cpio -id`, and nfpm's archives hold
# absolute names, which GNU cpio would extract into / itself: a shim cpio
# adds --no-absolute-filenames.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
shim=$(mktemp -d)
trap 'rm -rf "$shim"' EXIT
printf '#!/bin/sh\nexec /usr/bin/cpio --no-absolute-filenames "$@"\n' >"$shim/cpio"
chmod +x "$shim/cpio"
PATH="$shim:$PATH" rpmlint --config "$here/rpmlint.toml" "$@"
