# One image for every pvabridge service: the `pvabridge` program, whose subcommand each service
# names (see docker-compose.yml). Build: docker build -t pvabridge .
FROM rust:1-bookworm AS build
WORKDIR /src
# A release binary without debug information, stripped (the repository's release profile keeps
# line tables for profiling).
ENV CARGO_PROFILE_RELEASE_DEBUG=0 CARGO_PROFILE_RELEASE_STRIP=symbols
# The dependencies first, in a layer of their own: built against empty crates, it is rebuilt only
# when a manifest or Cargo.lock changes.
COPY Cargo.toml Cargo.lock ./
COPY crates/pva-codec/Cargo.toml crates/pva-codec/
COPY crates/pva/Cargo.toml crates/pva/
COPY crates/dm/Cargo.toml crates/dm/
COPY crates/stream/Cargo.toml crates/stream/
COPY crates/coordinator/Cargo.toml crates/coordinator/
RUN mkdir -p src crates/pva-codec/benches \
 && echo 'fn main() {}' > src/main.rs \
 && echo 'fn main() {}' > crates/pva-codec/benches/codec.rs \
 && for crate in pva-codec pva dm stream coordinator; do mkdir -p "crates/$crate/src" && touch "crates/$crate/src/lib.rs"; done \
 && cargo build --release --locked --bin pvabridge \
 && rm -rf src crates/*/src crates/pva-codec/benches
# Then the sources: a change to them rebuilds only pvabridge's own crates (touched, so that cargo
# does not take the empty crates' builds for them).
COPY . .
RUN find src crates -name '*.rs' -exec touch {} + \
 && cargo build --release --locked --bin pvabridge

FROM debian:bookworm-slim
# DM stages run as `sh -c` commands (dash and coreutils come with the base image); https to a
# facility's DM trusts the system's certificate store.
RUN apt-get update \
 && apt-get install --yes --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/*
# A fixed user id, so that a login secret can be made readable to it (docker-compose.yml runs the
# services as the host's user instead).
RUN groupadd --system --gid 10001 pvabridge \
 && useradd --system --uid 10001 --gid 10001 --create-home --home-dir /var/lib/pvabridge pvabridge
COPY --from=build /src/target/release/pvabridge /usr/local/bin/pvabridge
COPY examples/bluesky/stream-stats.workflow.json /etc/pvabridge/stream-stats.workflow.json
USER 10001:10001
WORKDIR /var/lib/pvabridge
ENTRYPOINT ["pvabridge"]
CMD ["--help"]
