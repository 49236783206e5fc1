# Interactive C client: `docker attach cliente`.
FROM debian:bookworm-slim

RUN apt-get update \
    && apt-get install -y --no-install-recommends \
        build-essential pkg-config libzmq3-dev libmsgpack-dev \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /app
COPY clients/c clients/c
RUN make -C clients/c

ENV BROKER=tcp://broker:5555 \
    PROXY=tcp://proxy:5558
CMD ["./clients/c/cliente"]
