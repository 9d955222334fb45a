# syntax=docker/dockerfile:1
#
# postmark-relay as a small, static, non-root image.
#
#   docker build -t postmark-relay .
#   docker run -d --name postmark-relay --stop-timeout 40 \
#       -e POSTMARK_SERVER_TOKEN=your-server-api-token \
#       -v postmark-relay-queue:/var/spool/postmark-relay postmark-relay
#
# Builder: rust on Alpine, whose native target is musl, so the binary comes
# out fully static (ring and the bundled SQLite are C, built by Alpine's gcc
# against musl) without cross toolchains.
# Runtime: distroless "static" (about 2 MB: /etc/passwd with the nonroot
# user 65532, tzdata, CA certificates; no shell, no libc). A glibc build
# would need distroless/cc (about 23 MB before our ~10 MB binary), over the
# 20 MB budget; scratch would save 2 MB but needs a hand-made passwd entry.
# The relay trusts its built-in webpki roots, so nothing else is needed.

ARG RUST_VERSION=1

FROM rust:${RUST_VERSION}-alpine AS build
RUN apk add --no-cache musl-dev
WORKDIR /src
COPY . .
# Caches survive between builds (BuildKit); the binary is copied out of the
# cached target folder because cache mounts are not part of the layer.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p postmark-relay \
 && mkdir -p -m 0700 /out/spool \
 && cp target/release/postmark-relay /out/postmark-relay

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/postmark-relay /usr/local/bin/postmark-relay
# The queue folder must exist and belong to the relay's user before VOLUME:
# a new named volume copies this folder's owner and mode (0700: queued mail
# is private, docs/SECURITY.md), so the non-root relay can write to it.
COPY --from=build --chown=65532:65532 /out/spool /var/spool/postmark-relay
# Configured by environment alone (no file at /etc/postmark-relay/relay.toml;
# mount one there, or set POSTMARK_RELAY_CONFIG, to use a file).
#
# Port 25 as a non-root user: Docker (since 20.10) sets
# net.ipv4.ip_unprivileged_port_start=0 in each container, so any user may
# bind it. Where that is not so (older engines, some Kubernetes runtimes),
# set the sysctl (`docker run --sysctl net.ipv4.ip_unprivileged_port_start=0`,
# a pod's securityContext.sysctls) or listen on 2525 instead:
# -e POSTMARK_RELAY_SERVER__LISTEN=0.0.0.0:2525.
#
# Listening on 0.0.0.0 is only accepted with an allow-list narrower than
# "everyone": loopback and the private ranges container networks use. Clients
# elsewhere get 554. Narrow it further to your network if you like.
ENV POSTMARK_RELAY_SERVER__LISTEN=0.0.0.0:25 \
    POSTMARK_RELAY_SERVER__ALLOWED_NETWORKS='["127.0.0.0/8","::1/128","10.0.0.0/8","172.16.0.0/12","192.168.0.0/16","fc00::/7"]' \
    POSTMARK_RELAY_QUEUE__PATH=/var/spool/postmark-relay \
    POSTMARK_RELAY_ADMIN__LISTEN=0.0.0.0:9925
USER 65532:65532
VOLUME /var/spool/postmark-relay
EXPOSE 25 9925
# `health` reads admin.listen and dials 0.0.0.0 through loopback.
HEALTHCHECK --interval=30s --timeout=10s --start-period=10s --retries=3 \
    CMD ["/usr/local/bin/postmark-relay", "health"]
# SIGTERM: stop accepting, finish sessions and deliveries (up to 30 s), exit
# 0. Give it that long: `docker run --stop-timeout 40`, compose
# `stop_grace_period: 40s` (Docker's default is 10 s; the queue is safe
# either way, in-flight work is just retried after the restart).
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/postmark-relay"]
CMD ["serve"]
