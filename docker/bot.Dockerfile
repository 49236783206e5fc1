# Automatic client (bot); scale with `docker compose up --scale cliente_automatico=N`.
FROM node:20-slim

ENV NODE_ENV=production
WORKDIR /app
# Dependencies first, so editing bot.js does not reinstall them.
COPY clients/js/package.json clients/js/package-lock.json clients/js/
RUN npm ci --omit=dev --prefix clients/js \
    && node -e "require('./clients/js/node_modules/zeromq')"
COPY clients/js clients/js

ENV BROKER=tcp://broker:5555 \
    PROXY=tcp://proxy:5558
CMD ["node", "clients/js/bot.js"]
