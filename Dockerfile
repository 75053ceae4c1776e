# syntax=docker/dockerfile:1
# flmon images: one target per binary.
#   docker build --target operator -t ghcr.io/flmon/flmon-operator:0.1.0 .
#   docker build --target agent    -t ghcr.io/flmon/flmon-agent:0.1.0 .
# Both run as uid 65532 on a minimal glibc base with no shell. The agent loads libnvidia-ml at run
# time (the NVIDIA container runtime mounts it), so it is dynamically linked against glibc; fonts
# for plots are embedded in the binaries, so the images need none. The agent is built on its own,
# with the size-optimised `agent` profile, so it carries only its own crates' features (no regex
# engine from the operator's log filter): it runs in every FL pod, and its code is resident.

ARG RUST_VERSION=1.95.0

FROM docker.io/library/rust:${RUST_VERSION}-bookworm AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends cmake libcurl4-openssl-dev zlib1g-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p flmon-operator \
 && cargo build --profile agent --locked -p flmon-agent \
 && mkdir -p /out \
 && cp target/release/flmon-operator target/agent/flmon-agent /out/

FROM gcr.io/distroless/cc-debian12:nonroot AS base
ARG VERSION=0.1.0
LABEL org.opencontainers.image.source="https://github.com/flmon/flmon" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${VERSION}"
USER 65532:65532

FROM base AS operator
LABEL org.opencontainers.image.title="flmon-operator" \
      org.opencontainers.image.description="flmon operator: FLMonitor controller, sidecar-injection webhook, analysis and dashboard"
COPY --from=build /out/flmon-operator /usr/local/bin/flmon-operator
ENTRYPOINT ["/usr/local/bin/flmon-operator"]
CMD ["run"]

FROM base AS agent
# librdkafka compresses with zlib; the distroless cc base has glibc and libgcc but not libz.
COPY --from=build /lib/x86_64-linux-gnu/libz.so.1 /lib/x86_64-linux-gnu/libz.so.1
LABEL org.opencontainers.image.title="flmon-agent" \
      org.opencontainers.image.description="flmon agent: host, GPU, Kafka and FL training metrics for Prometheus"
COPY --from=build /out/flmon-agent /usr/local/bin/flmon-agent
ENTRYPOINT ["/usr/local/bin/flmon-agent"]
