# pgfleet's image: built on Debian bookworm with meson, run on bookworm-slim
# with only the libraries the binary links (`ldd`), as a non-root user.
# Configured from the environment when no file is given (DB_HOST, DB_USER,
# DB_PASSWORD, PGFLEET_<SETTING>: k8s/pgfleet/configmap.yaml), or from a
# mounted ini file passed as the argument (k8s/replication).
#   docker build -t pgfleet:dev .        (minikube: minikube image build -t pgfleet:dev .)
# Without a registry (both FROM images made locally by debootstrap):
#   scripts/image-base.sh && podman build --pull=never --network=host --format docker -t pgfleet:dev .
# tests/integration/test_k8s.py runs this file's steps without a Docker engine;
# tests/integration/test_image.py (PGFLEET_IMAGE_TESTS=1) builds and runs it with podman.

FROM debian:bookworm AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
      gcc libc6-dev meson ninja-build pkg-config \
      libevent-dev libc-ares-dev libssl-dev libpq-dev liburing-dev \
      libpg-query-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY meson.build meson_options.txt ./
COPY include ./include
COPY src ./src
COPY tests ./tests
# Stripped: the symbols are half the binary and nothing in the image reads
# them (a debug build is `meson setup build` from the repository).
RUN meson setup /build --buildtype=release -Db_ndebug=if-release \
 && meson compile -C /build pgfleet \
 && strip --strip-unneeded /build/pgfleet \
 && /build/pgfleet -V

FROM debian:bookworm-slim
# libevent-2.1-7 libc-ares2 libssl3 libpq5 liburing2: what `ldd pgfleet` needs (libc6
# is in the base image; libpg_query is linked statically); ca-certificates: the system CAs that
# server_tls_sslmode=verify-ca/verify-full use when server_tls_ca_file is empty.
# libpq5 brings what libpq links (libldap, libkrb5/libgssapi, libsasl2,
# gnutls for ldap): they stay, the loader needs them.  Docs (but the
# copyright files), man pages, translations and apt's lists go (the slim
# base's dpkg excludes them already; the rm is for a base without them).
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
      libevent-2.1-7 libc-ares2 libssl3 libpq5 liburing2 ca-certificates \
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin /var/log/apt /var/log/dpkg.log \
      /usr/share/man /usr/share/locale /usr/share/info \
 && find /usr/share/doc -type f ! -name copyright -delete \
 && groupadd --system --gid 10001 pgfleet \
 && useradd --system --uid 10001 --gid 10001 --no-create-home \
      --home-dir /nonexistent --shell /usr/sbin/nologin pgfleet
COPY --from=build /build/pgfleet /usr/local/bin/pgfleet
COPY conf/pgfleet.ini /etc/pgfleet/pgfleet.ini.example
COPY conf/userlist.txt /etc/pgfleet/userlist.txt.example
USER 10001:10001
# 6432: clients and the admin console; 9930: http_listen (/metrics, /healthz, /readyz)
EXPOSE 6432 9930
# No curl in the image: bash's /dev/tcp asks /healthz on the port of
# PGFLEET_HTTP_LISTEN (default 0.0.0.0:9930) and wants a 200.
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
  CMD ["bash", "-c", "l=${PGFLEET_HTTP_LISTEN:-0.0.0.0:9930}; h=${l%:*}; h=${h#[}; h=${h%]}; case $h in ''|0.0.0.0|'*') h=127.0.0.1;; ::) h=::1;; esac; exec 3<>/dev/tcp/$h/${l##*:} && printf 'GET /healthz HTTP/1.0\\r\\nHost: localhost\\r\\n\\r\\n' >&3 && read -r -t 3 _ code _ <&3 && [ \"$code\" = 200 ]"]
# Nothing is written at run time: no unix socket (unix_socket_dir is empty),
# no pid file, logs on stderr; so the root file system can be read-only
# (`podman run --read-only`, readOnlyRootFilesystem in k8s/pgfleet).  A
# unix_socket_dir or pidfile must then be on a tmpfs/emptyDir volume.
# No CMD: without a file argument the environment is the whole configuration.
ENTRYPOINT ["/usr/local/bin/pgfleet"]
