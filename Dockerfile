# syntax=docker/dockerfile:1
# berth: `berth controller` and `berth speaker` in one static-enough binary on distroless.
#   docker build -t REGISTRY/berth:TAG .
# Build stage: `cargo build --release --locked -p berth --no-default-features` — without the
# `demo` feature, so the image does not contain mock-cloud (berth/tests/no_mock_cloud.rs).
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p berth --no-default-features \
 && install -D -m 0755 target/release/berth /out/berth

# Runtime: distroless (glibc, CA certificates, no shell), non-root. The speaker's pod runs
# it as uid 0 with only NET_RAW (see deploy/overlays/l2/speaker.yaml).
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/berth /usr/local/bin/berth
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/berth"]
CMD ["controller", "--help"]
