# Broker, proxy, reference and servers: one image, the daemon is picked by the command
# (twistd bbd-broker | bbd-proxy | bbd-reference | bbd-server), see docker-compose.yml.
FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    BBD_CONFIG=/src/etc/bbd.toml

# The source stays in /src; /app only holds the servers' data (/app/dados). After the
# install, build twistd's plugin cache, so daemons need not write into site-packages, and
# fail the build early if the bbd plugins or the defaults (etc/bbd.toml) are not found.
COPY . /src
RUN pip install /src \
    && python -c "from twisted.plugin import IPlugin, getPlugins; list(getPlugins(IPlugin))" \
    && twistd --help | grep -q bbd-server \
    && python -c "from bbd import config; config.defaults()"

# Servers and the reference mount a volume here (see docker-compose.yml); not a VOLUME in
# the image, which would give the broker and proxy useless volumes too.
WORKDIR /app
RUN mkdir -p /app/dados

CMD ["twistd", "--help"]
