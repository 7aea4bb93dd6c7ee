# syntax=docker/dockerfile:1
# The `kalshibook` binary in a small runtime image. Used by docker-compose.yml; also works alone:
#   docker build -t kalshibook .
#   docker run --env-file .env -p 8080:8080 kalshibook            # serve
#   docker run --env-file .env kalshibook migrate

# --- build -----------------------------------------------------------------------------------
FROM rust:1.95-bookworm AS build
WORKDIR /src

# Dependencies first, in their own layer: this layer is reused until Cargo.toml or Cargo.lock
# changes, so a code change does not download the crate graph again.
COPY Cargo.toml Cargo.lock ./
RUN cargo fetch --locked

COPY . .
# Cache mounts keep compiled dependencies between builds on the same builder (a clean release
# build of this crate graph takes many minutes). Their contents are not part of the image, so
# the binary is copied out of the target directory before the step ends.
# --offline: everything was fetched above, and a build must not resolve anything new.
RUN --mount=type=cache,target=/src/target,sharing=locked \
    cargo build --release --locked --offline --bin kalshibook \
 && install -m 0755 target/release/kalshibook /usr/local/bin/kalshibook

# --- runtime ---------------------------------------------------------------------------------
FROM debian:bookworm-slim

# ca-certificates: TLS to Kalshi and Stripe (rustls; no OpenSSL at run time). curl: the health
# check in docker-compose.yml.
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl \
 && rm -rf /var/lib/apt/lists/*

# A fixed, unprivileged uid: volume and secret-file ownership can be set on the host to match.
# The spool directory exists in the image and is owned by that uid, so a fresh named volume
# mounted there is created with the same ownership.
RUN groupadd --system --gid 10001 kalshibook \
 && useradd --system --uid 10001 --gid 10001 --home-dir /var/lib/kalshibook \
        --shell /usr/sbin/nologin kalshibook \
 && install -d -o 10001 -g 10001 /var/lib/kalshibook /var/lib/kalshibook/spool

COPY --from=build /usr/local/bin/kalshibook /usr/local/bin/kalshibook

# Defaults that only make sense in a container (the binary's own defaults suit a laptop).
ENV KALSHIBOOK_LISTEN_ADDR=0.0.0.0:8080 \
    KALSHIBOOK_LOG_FORMAT=json \
    KALSHIBOOK_SPOOL_DIR=/var/lib/kalshibook/spool

USER 10001:10001
WORKDIR /var/lib/kalshibook
EXPOSE 8080
ENTRYPOINT ["kalshibook"]
CMD ["serve"]
