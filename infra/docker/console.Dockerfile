# syntax=docker/dockerfile:1.7
# docker build -f infra/docker/console.Dockerfile -t tessera/console:0.1.0 .   (from the repository root)
ARG NODE_IMAGE=node:20.19-bookworm-slim
FROM ${NODE_IMAGE} AS build
WORKDIR /app
RUN corepack enable
# The whole workspace (minus node_modules, see the .dockerignore): a frozen install needs every
# project the lockfile names; the filter below installs only what this image runs.
COPY . .
RUN --mount=type=cache,id=pnpm,target=/root/.local/share/pnpm/store \
    pnpm install --frozen-lockfile --filter "@tessera/console..."
ENV NEXT_TELEMETRY_DISABLED=1
RUN pnpm --filter @tessera/console build

FROM ${NODE_IMAGE}
ENV NODE_ENV=production NEXT_TELEMETRY_DISABLED=1 PORT=3000 HOSTNAME=0.0.0.0
WORKDIR /app/apps/console
COPY --from=build /app /app
USER 1000:1000
EXPOSE 3000
# pnpm links next into the app's own node_modules.
CMD ["node", "node_modules/next/dist/bin/next", "start"]
