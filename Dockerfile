# syntax=docker/dockerfile:1
# One image for every Portcullis service: `gateway` (the default command),
# `admin`, `hub`. docs/operations.md has the variables that configure them.
#
#   docker build -t portcullis .
#   docker run -p 8080:8080 portcullis gateway --config /etc/portcullis/gateway.yaml

FROM rust:1.95-bookworm AS build
# Debian package versions are not pinned (DL3008): the bookworm tag fixes
# the release, and a pinned version disappears from the archive with the
# next point release, breaking the build.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends cmake nodejs npm \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
# The build script compiles the built-in policies to wasm32-wasip2 and
# embeds them in the binary, and builds the web console with npm; the target is added here so the build never
# has to.
RUN rustup target add wasm32-wasip2 \
 && cargo build --release --locked -p portcullis \
 && strip target/release/portcullis

FROM debian:bookworm-slim
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --user-group --home-dir /var/lib/portcullis --create-home portcullis
COPY --from=build /src/target/release/portcullis /usr/local/bin/portcullis
USER 10001:10001
WORKDIR /var/lib/portcullis
# State under one volume; compiled policy modules are kept with it (the
# gateway maps them at the next start instead of compiling again).
ENV XDG_CACHE_HOME=/var/lib/portcullis/cache \
    PORTCULLIS_LOG_FORMAT=json \
    PORTCULLIS_GATEWAY_LISTEN=0.0.0.0:8080 \
    PORTCULLIS_GATEWAY_OPS_LISTEN=0.0.0.0:8081 \
    PORTCULLIS_GATEWAY_DATA_DIR=/var/lib/portcullis/gateway \
    PORTCULLIS_ADMIN_LISTEN=0.0.0.0:8090 \
    PORTCULLIS_ADMIN_DATA_DIR=/var/lib/portcullis/admin \
    PORTCULLIS_HUB_LISTEN=0.0.0.0:8091 \
    PORTCULLIS_HUB_DATA_DIR=/var/lib/portcullis/hub
VOLUME ["/var/lib/portcullis"]
EXPOSE 8080 8081 8090 8091
# The gateway's readiness; admin and hub services override it (compose).
HEALTHCHECK --interval=10s --timeout=4s --start-period=20s --retries=3 \
  CMD ["portcullis", "probe", "http://127.0.0.1:8081/readyz"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["portcullis"]
CMD ["gateway"]
