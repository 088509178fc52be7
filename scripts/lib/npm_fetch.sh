# Sourced by the setup scripts. npm_fetch_verified PKG VERSION SHA256 WORKDIR LOG_PREFIX
# runs `npm pack PKG@VERSION` in WORKDIR, checks the tarball's sha256 and prints its path.
# A checksum mismatch stops with a clear message and leaves nothing installed.
npm_fetch_verified() {
  local pkg="$1" ver="$2" sha="$3" work="$4" prefix="$5"
  # npm pack names the tarball after the package: "@scope/name" -> "scope-name".
  local tarball
  tarball="$work/$(echo "${pkg#@}" | tr '/' '-')-$ver.tgz"
  echo "$prefix: fetching $pkg@$ver from the npm registry" >&2
  (cd "$work" && npm pack --silent "$pkg@$ver" >/dev/null)
  [ -f "$tarball" ] || { echo "$prefix: npm pack did not produce $tarball" >&2; return 1; }
  local actual
  actual="$(sha256sum "$tarball" | cut -d' ' -f1)"
  if [ "$actual" != "$sha" ]; then
    echo "$prefix: checksum mismatch for $pkg@$ver" >&2
    echo "  expected sha256 $sha" >&2
    echo "  got      sha256 $actual" >&2
    echo "  The registry served a different tarball; not using it. Check the pinned version and checksum." >&2
    return 1
  fi
  echo "$tarball"
}
