# One image with the three programs (fedplane-dns, fedplane-controller, fedplane-vipd) in
# /usr/local/bin; the manifests in deploy/ pick one with `command:`.
#   docker build -t registry.example.com/fedplane:0.1.0 .
# It runs as the non-root user 65532. fedplane-vipd needs root with NET_ADMIN and NET_RAW, which
# its DaemonSet sets (deploy/components/member/vipd.yaml); the other two need no privilege.

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

# glibc, libgcc and CA certificates, no shell.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/ /usr/local/bin/
USER 65532:65532
EXPOSE 1053/udp 1053/tcp 9153 9102 9103
CMD ["fedplane-dns", "--help"]
