# Interactive C client: `docker attach cliente` (Ctrl-P Ctrl-Q detaches, it goes on running).
# It is PID 1 and handles SIGTERM itself, so `docker stop cliente` is immediate.
FROM debian:bookworm-slim

# msgpack-c's package is libmsgpack-c-dev from Debian 13 on, libmsgpack-dev before.
RUN apt-get update \
    && msgpack=$(apt-cache show libmsgpack-c-dev >/dev/null 2>&1 \
                 && echo libmsgpack-c-dev || echo libmsgpack-dev) \
    && apt-get install -y --no-install-recommends \
        build-essential pkg-config libzmq3-dev "$msgpack" \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /app
COPY clients/c clients/c
RUN make -C clients/c

ENV BROKER=tcp://broker:5555 \
    PROXY=tcp://proxy:5558
CMD ["./clients/c/cliente"]
