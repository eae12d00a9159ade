# syntax=docker/dockerfile:1.7
# docker build -f infra/docker/runtime-node.Dockerfile -t tessera/runtime-node:0.1.0 .   (from the repository root)
# The image every node replica pod runs: the TypeScript runtime (esbuild loads tenant .ts) and
# npm for npm environments.
ARG NODE_IMAGE=node:20.19-bookworm-slim
FROM ${NODE_IMAGE} AS deps
WORKDIR /app
RUN corepack enable
# The whole workspace (minus node_modules, see the .dockerignore): a frozen install needs every
# project the lockfile names; the filter below installs only what this image runs.
COPY . .
# The runtime package, the workspace packages it depends on, and the root (tsx runs the
# TypeScript sources directly, as in development).
RUN --mount=type=cache,id=pnpm,target=/root/.local/share/pnpm/store \
    pnpm install --frozen-lockfile --prod=false --filter "@tessera/runtime-node..." --filter tessera

FROM ${NODE_IMAGE}
ENV NODE_ENV=production NPM_CONFIG_CACHE=/tmp/.npm NPM_CONFIG_UPDATE_NOTIFIER=false
COPY --from=deps /app /opt/tessera/app
COPY infra/docker/tessera-build-env infra/docker/tessera-runtime-node /usr/local/bin/
RUN groupadd --gid 10001 tessera && useradd --uid 10001 --gid 10001 --home-dir /tmp --no-create-home tessera \
 && mkdir -p /envs /code && chown 10001:10001 /envs
USER 10001:10001
EXPOSE 8000
ENTRYPOINT ["tessera-runtime-node"]
