# One image with the three programs (fedplane-dns, fedplane-controller, fedplane-vipd) in
# /usr/local/bin; the manifests in deploy/ pick one with `command:`.
#   docker build -t registry.example.com/fedplane:0.1.0 .
# It runs as the non-root user 65532. fedplane-vipd needs root with NET_ADMIN and NET_RAW, which
# its DaemonSet sets (deploy/components/member/vipd.yaml); the other two need no privilege.
# fedplane-vipd's BGP mode (--bgp) runs BIRD 2 (`bird`, Debian's bird2) as its child through
# `setpriv --pdeathsig` (util-linux), so the runtime stage is Debian rather than distroless.

# The toolchain the tests run with.
FROM docker.io/library/rust:1.95-bookworm AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends protobuf-compiler \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin fedplane-dns --bin fedplane-controller --bin fedplane-vipd \
 && install -D -m 0755 -t /out \
      target/release/fedplane-dns target/release/fedplane-controller target/release/fedplane-vipd

# glibc, CA certificates, BIRD 2 for fedplane-vipd's BGP mode and setpriv (util-linux, in the
# base) that starts it. bird2's own service and configuration are unused: fedplane-vipd writes
# BIRD's configuration under --bgp-run-dir and talks to it on its control socket there.
FROM docker.io/library/debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends bird2 ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && command -v bird && command -v setpriv
COPY --from=build /out/ /usr/local/bin/
USER 65532:65532
EXPOSE 1053/udp 1053/tcp 9153 9102 9103
CMD ["fedplane-dns", "--help"]
