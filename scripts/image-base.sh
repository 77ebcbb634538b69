#!/usr/bin/env bash
# The Dockerfile's base images, made here from Debian's packages: no
# container registry is needed (or reachable on the test machines).
#
#   scripts/image-base.sh            make sure podman has the base images
#   scripts/image-base.sh --refresh  debootstrap again even if cached
#
# debootstrap --variant=minbase bookworm, slimmed as Debian's official
# bookworm-slim is (no docs, man pages, locales; apt caches emptied, dpkg told
# not to install them again), packed into a tarball cached under
# $PGFLEET_IMAGE_CACHE (default /var/cache/pgfleet-image), and imported into
# podman as docker.io/library/debian:bookworm-slim and debian:bookworm, the
# two names the Dockerfile's FROM lines use (`podman build --pull=never`
# then finds them locally).  A name that already exists is left alone: a
# real Debian image pulled by the user keeps its tag.
#
# Cold: about a minute (debootstrap downloads ~30 MB).  Cached tarball: the
# import takes a few seconds.  Both images present: returns at once.
# The tarball is made again when older than PGFLEET_IMAGE_BASE_MAX_DAYS
# (default 7) so the base's own packages do not fall far behind.
# Needs root (debootstrap, podman's system store) and the packages debootstrap
# and podman (scripts/install-deps.sh --image).
set -euo pipefail

CACHE=${PGFLEET_IMAGE_CACHE:-/var/cache/pgfleet-image}
MAX_DAYS=${PGFLEET_IMAGE_BASE_MAX_DAYS:-7}
SUITE=bookworm
TARBALL=$CACHE/debian-$SUITE-minbase.tar
NAMES=(docker.io/library/debian:bookworm-slim docker.io/library/debian:bookworm)
LABEL=org.pgfleet.base=debootstrap-minbase-$SUITE

refresh=0
[ "${1:-}" = "--refresh" ] && refresh=1

log() { echo "image-base: $*" >&2; }

# The mirror this machine's apt already uses (deb822 .sources or one-line
# sources.list), so the base is fetched the way every other package is.
mirror_of() {   # WHAT: debian | debian-security
  local what=$1 uri
  uri=$(cat /etc/apt/sources.list.d/*.sources 2>/dev/null |
    awk -v w="$what" '/^URIs:/ { for (i = 2; i <= NF; i++) { u = $i; sub(/\/$/, "", u);
        n = split(u, p, "/"); if (p[n] == w) { print u; exit } } }')
  if [ -z "$uri" ]; then
    uri=$(awk -v w="$what" '$1 == "deb" { for (i = 2; i <= NF; i++) if ($i ~ /^[a-z]+:\/\//) {
          u = $i; sub(/\/$/, "", u); n = split(u, p, "/"); if (p[n] == w) { print u; exit } } }' \
      /etc/apt/sources.list 2>/dev/null)
  fi
  echo "${uri:-http://deb.debian.org/$what}"
}

have_image() { podman image exists "$1"; }

missing=()
for n in "${NAMES[@]}"; do
  have_image "$n" || missing+=("$n")
done
if [ ${#missing[@]} -eq 0 ] && [ $refresh -eq 0 ]; then
  exit 0
fi

mkdir -p "$CACHE"
if [ $refresh -eq 1 ] || [ ! -s "$TARBALL" ] ||
   [ -n "$(find "$TARBALL" -mtime +"$MAX_DAYS" 2>/dev/null)" ]; then
  command -v debootstrap >/dev/null ||
    { log "debootstrap not installed (scripts/install-deps.sh --image)"; exit 1; }
  main=$(mirror_of debian)
  security=$(mirror_of debian-security)
  root=$(mktemp -d "$CACHE/rootfs.XXXXXX")
  trap 'rm -rf "$root" "$TARBALL.tmp"' EXIT
  log "debootstrap --variant=minbase $SUITE from $main (about a minute)"
  debootstrap --variant=minbase "$SUITE" "$root" "$main" >"$CACHE/debootstrap.log" 2>&1 ||
    { tail -n 20 "$CACHE/debootstrap.log" >&2; log "debootstrap failed: $CACHE/debootstrap.log"; exit 1; }

  cat >"$root/etc/apt/sources.list" <<EOF
deb $main $SUITE main
deb $main $SUITE-updates main
deb $security $SUITE-security main
EOF
  # What Debian's -slim images do: dpkg never unpacks docs, man pages and
  # translations (copyright files stay), apt keeps no .debs and no
  # translated package lists.
  cat >"$root/etc/dpkg/dpkg.cfg.d/slim" <<'EOF'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/groff/*
path-exclude /usr/share/info/*
path-exclude /usr/share/lintian/*
path-exclude /usr/share/linda/*
path-exclude /usr/share/locale/*
EOF
  cat >"$root/etc/apt/apt.conf.d/slim" <<'EOF'
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
Acquire::Languages "none";
EOF
  rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/* \
    "$root"/var/cache/apt/*.bin "$root"/var/log/*.log "$root"/var/log/apt/* \
    "$root"/usr/share/man/* "$root"/usr/share/info/* "$root"/usr/share/groff/* \
    "$root"/usr/share/lintian/* "$root"/usr/share/locale/*
  find "$root/usr/share/doc" -mindepth 1 -not -name copyright -not -type d -delete
  find "$root/usr/share/doc" -mindepth 1 -type d -empty -delete
  : >"$root/etc/machine-id"
  tar --numeric-owner --xattrs -C "$root" -cf "$TARBALL.tmp" .
  mv "$TARBALL.tmp" "$TARBALL"
  rm -rf "$root"
  trap - EXIT
  missing=("${NAMES[@]}")
fi

log "podman import $TARBALL as ${missing[*]}"
id=$(podman import --change "LABEL $LABEL" --change 'CMD ["bash"]' \
  --message "debootstrap --variant=minbase $SUITE (scripts/image-base.sh)" "$TARBALL")
for n in "${missing[@]}"; do
  podman tag "$id" "$n"
done
