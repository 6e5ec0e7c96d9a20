# syntax=docker/dockerfile:1
#
# The idbridge image: `docker build -t idbridge .` (README, "Deployment").
#
# Stage 1 builds the release binary on the Rust image of the workspace's toolchain (Cargo.toml
# `rust-version`), against the committed Cargo.lock. Stage 2 is distroless: the binary links
# glibc and libgcc (a static musl build needs a musl target the builder does not ship), so the
# runtime is gcr.io/distroless/cc (glibc, libgcc, CA certificates, no shell, no package
# manager), running as its unprivileged `nonroot` user (uid/gid 65532).

ARG RUST_VERSION=1.95

FROM docker.io/library/rust:${RUST_VERSION}-bookworm AS builder
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p idbridge \
    && install -D -m 0755 target/release/idbridge /out/idbridge

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=builder /out/idbridge /usr/local/bin/idbridge
USER 65532:65532
# The example serve config's ports (deploy/kubernetes/base/serve.toml): GCE metadata, IMDSv2,
# metrics and health.
EXPOSE 8988 8989 8990
ENTRYPOINT ["/usr/local/bin/idbridge"]
CMD ["serve", "--config", "/etc/idbridge/serve.toml"]
