# syntax=docker/dockerfile:1.7
# docker build -f infra/docker/provisioner.Dockerfile -t tessera/provisioner:0.1.0 .   (from the repository root)
ARG NODE_IMAGE=node:20.19-bookworm-slim
FROM ${NODE_IMAGE} AS deps
WORKDIR /app
RUN corepack enable
# The whole workspace (minus node_modules, see the .dockerignore): a frozen install needs every
# project the lockfile names; the filter below installs only what this image runs.
COPY . .
# Only this app, the workspace packages it depends on, and the root (for tsx, which runs the
# TypeScript sources directly, as in development).
RUN --mount=type=cache,id=pnpm,target=/root/.local/share/pnpm/store \
    pnpm install --frozen-lockfile --filter "@tessera/provisioner..." --filter tessera

FROM ${NODE_IMAGE}
ENV NODE_ENV=production
WORKDIR /app/apps/provisioner
COPY --from=deps /app /app
# The node image's unprivileged user; the manifests run with runAsNonRoot.
USER 1000:1000
EXPOSE 9090
CMD ["node", "--import", "tsx", "src/main.ts"]
