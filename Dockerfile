# syntax=docker/dockerfile:1
# The bookstore image: the one `bookstore` binary, running as a non-root user.
#
#   docker build -t bookstore .
#   docker run --rm -p 127.0.0.1:8000:8000 bookstore            # everything, embedded defaults
#   docker run --rm ... bookstore web|trend|recommend            # one service (see compose.yaml)
#
# Configuration: BOOKSTORE_<SECTION>__<KEY> environment variables, or a YAML file mounted into
# the container and named with --config (or BOOKSTORE_CONFIG). See docs/deployment.md.

# ---------------------------------------------------------------- build
FROM rust:1-bookworm AS builder
# rdkafka builds its bundled librdkafka with its configure script and make (gcc, g++, make and
# perl come with the image); it links zlib from the system, found through pkg-config.
RUN apt-get update \
 && apt-get install -y --no-install-recommends pkg-config zlib1g-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY crates ./crates
# The registry and the target dir are BuildKit cache mounts: a rebuild after a source change
# downloads nothing and recompiles only what changed (librdkafka included, once).
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/usr/local/cargo/git \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin bookstore \
 && install -D -m 0755 target/release/bookstore /out/bookstore

# ---------------------------------------------------------------- run
FROM debian:bookworm-slim AS runtime
# The binary needs glibc, libgcc_s and libz (zlib1g) only; curl is for health checks.
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl zlib1g \
 && rm -rf /var/lib/apt/lists/*
RUN groupadd --system --gid 10001 bookstore \
 && useradd --system --uid 10001 --gid bookstore --home-dir /var/lib/bookstore --no-create-home \
      --shell /usr/sbin/nologin bookstore \
 && install -d -o bookstore -g bookstore -m 0750 /var/lib/bookstore
COPY --from=builder /out/bookstore /usr/local/bin/bookstore

# Defaults for a container: data in the volume, every service listening on all interfaces of the
# container (publish ports on 127.0.0.1 or behind a proxy), its operations port (/metrics, and
# the recommendation service's /interests and /stats) too, for the internal network only: never
# publish 9000-9002 to the public; and in `serve` the page calling the trend and recommendation
# services of the same container. Override any of them with -e.
ENV BOOKSTORE_DATA_DIR=/var/lib/bookstore
ENV BOOKSTORE_WEB__LISTEN=0.0.0.0:8000
ENV BOOKSTORE_TREND__LISTEN=0.0.0.0:8001
ENV BOOKSTORE_RECOMMEND__LISTEN=0.0.0.0:8002
ENV BOOKSTORE_WEB__OPS_LISTEN=0.0.0.0:9000
ENV BOOKSTORE_TREND__OPS_LISTEN=0.0.0.0:9001
ENV BOOKSTORE_RECOMMEND__OPS_LISTEN=0.0.0.0:9002
ENV BOOKSTORE_WEB__TREND_URL=http://127.0.0.1:8001
ENV BOOKSTORE_WEB__RECOMMEND_URL=http://127.0.0.1:8002

USER 10001:10001
WORKDIR /var/lib/bookstore
VOLUME ["/var/lib/bookstore"]
# web, trend, recommend; their operations ports (internal network)
EXPOSE 8000 8001 8002 9000 9001 9002
ENTRYPOINT ["bookstore"]
CMD ["serve"]
