# A dfs node in a container. Build: docker build -t dfs .
# Run:   docker run -d --name dfs -p 4001:4001 -v dfs-data:/data dfs
# Use:   docker exec dfs dfs ls        (the API stays on the container's loopback)
# Extra node flags go after the image name, or in /data/config.toml.

FROM rust:1.89-slim-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin dfs

FROM debian:bookworm-slim
RUN useradd --system --uid 10001 --home-dir /data --no-create-home dfs \
    && mkdir /data \
    && chown dfs:dfs /data
COPY --from=build /src/target/release/dfs /usr/local/bin/dfs
USER 10001:10001
ENV DFS_DATA_DIR=/data \
    DFS_LISTEN=/ip4/0.0.0.0/tcp/4001
EXPOSE 4001
VOLUME /data
ENTRYPOINT ["dfs", "node", "--data-dir", "/data"]
