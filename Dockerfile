# pgfleet: build on Debian bookworm with meson, run on bookworm-slim with only
# the runtime libraries, as a non-root user, configured from the environment
# (DB_HOST, DB_USER, DB_PASSWORD, PGFLEET_<SETTING>) or a mounted ini file.
FROM debian:bookworm AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
      gcc libc6-dev meson ninja-build pkg-config \
      libevent-dev libc-ares-dev libssl-dev libpq-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY meson.build ./
COPY include ./include
COPY src ./src
COPY tests ./tests
RUN meson setup /build --buildtype=release -Db_ndebug=if-release \
 && meson compile -C /build pgfleet

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
      libevent-2.1-7 libc-ares2 libssl3 libpq5 ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin pgfleet
COPY --from=build /build/pgfleet /usr/local/bin/pgfleet
COPY conf/pgfleet.ini /etc/pgfleet/pgfleet.ini.example
USER 10001
# /healthz and /metrics (port 9930) arrive with the HTTP endpoint
EXPOSE 6432 9930
ENTRYPOINT ["/usr/local/bin/pgfleet"]
