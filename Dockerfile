# One image for every pvabridge service: the `pvabridge` program, whose subcommand each service
# names (see docker-compose.yml). Build: docker build -t pvabridge .
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin pvabridge

FROM debian:bookworm-slim
# DM stages run as `sh -c` commands (dash and coreutils come with the base image).
RUN useradd --system --create-home --home-dir /var/lib/pvabridge pvabridge
COPY --from=build /src/target/release/pvabridge /usr/local/bin/pvabridge
COPY examples/bluesky/stream-stats.workflow.json /etc/pvabridge/stream-stats.workflow.json
USER pvabridge
WORKDIR /var/lib/pvabridge
ENTRYPOINT ["pvabridge"]
CMD ["--help"]
