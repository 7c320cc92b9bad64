# callgate container image.
#
#   docker build -t callgate .
#   docker run --rm -p 4000:4000 -e CALLGATE_JWT_SECRET=... callgate
#
# Configuration comes from environment variables (CALLGATE__SECTION__KEY,
# CALLGATE_JWT_SECRET, CALLGATE_MONGODB_URI) and, optionally, a mounted TOML
# file: `-v ./callgate.toml:/etc/callgate/callgate.toml:ro` and the command
# `serve --config /etc/callgate/callgate.toml`. No secret or certificate is
# baked into the image.

# ---- builder -----------------------------------------------------------------
FROM rust:1.95-bookworm AS builder
WORKDIR /src

# rust-toolchain.toml is deliberately not copied: it names the "stable"
# channel, which would make rustup try to download a toolchain instead of
# using the image's 1.95.

# 1. Dependencies. This layer is rebuilt only when Cargo.toml or Cargo.lock
#    changes: stub targets let cargo read the manifest and compile every
#    dependency. The bench stub is needed because Cargo.toml declares
#    [[bench]] login_storm; add a stub here for any new declared target.
COPY Cargo.toml Cargo.lock ./
RUN mkdir -p src benches \
 && echo 'fn main() {}' > src/main.rs \
 && touch src/lib.rs \
 && echo 'fn main() {}' > benches/login_storm.rs \
 && cargo build --release --locked --bin callgate \
 && rm -rf src

# 2. The crate. The policy file and the demo page (demo/web) are compiled in
#    (include_str!). COPY keeps the files' mtimes, which may be older than the
#    stub build: touch them so cargo rebuilds the crate, not just the
#    dependencies.
COPY src ./src
COPY policies ./policies
COPY demo/web ./demo/web
RUN touch src/main.rs src/lib.rs \
 && cargo build --release --locked --bin callgate

# ---- runtime -----------------------------------------------------------------
FROM debian:bookworm-slim

# ca-certificates only (TLS to MongoDB and friends). Versions are not pinned
# so that a rebuild picks up Debian security updates.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 callgate \
 && useradd --system --uid 10001 --gid callgate --no-create-home \
      --home-dir /nonexistent --shell /usr/sbin/nologin callgate

WORKDIR /app
COPY --from=builder /src/target/release/callgate /usr/local/bin/callgate
# Read from the working directory: `serve` loads policies/default.toml when no
# --policy is given. demo/seed.json is for trying the image out only
# (`serve --seed demo/seed.json`); nothing uses it by default.
COPY policies/ ./policies/
COPY demo/seed.json ./demo/seed.json

# Environment variables override the config file, so these two win over
# server.listen and log.format in a mounted callgate.toml: change them with -e.
ENV CALLGATE__SERVER__LISTEN=0.0.0.0:4000 \
    CALLGATE__LOG__FORMAT=json
EXPOSE 4000

USER 10001:10001

# No curl in the image: bash's /dev/tcp speaks just enough HTTP. The port is
# taken from CALLGATE__SERVER__LISTEN.
HEALTHCHECK --interval=30s --timeout=5s --start-period=15s --retries=3 \
  CMD ["bash", "-c", "l=${CALLGATE__SERVER__LISTEN:-:4000}; exec 3<>/dev/tcp/127.0.0.1/${l##*:} && printf 'GET /healthz HTTP/1.0\\r\\nHost: localhost\\r\\n\\r\\n' >&3 && head -n 1 <&3 | grep -q ' 200 '"]

ENTRYPOINT ["/usr/local/bin/callgate"]
CMD ["serve"]
