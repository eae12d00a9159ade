/** @type {import('next').NextConfig} */
const nextConfig = {
  // The workspace packages ship TypeScript sources with ESM `.js` specifiers.
  transpilePackages: [
    "@tessera/api",
    "@tessera/billing",
    "@tessera/core",
    "@tessera/db",
    "@tessera/jobs",
    "@tessera/runtime-python",
  ],
  // Native and driver modules stay plain `require`s on the server.
  serverExternalPackages: ["@node-rs/argon2", "pg", "bullmq", "ioredis"],
  poweredByHeader: false,
  webpack(config) {
    config.resolve.extensionAlias = { ".js": [".ts", ".tsx", ".js"], ".mjs": [".mts", ".mjs"] };
    // `new URL("../../../drizzle", import.meta.url)` in @tessera/db names the migrations folder at
    // run time; it is not an asset for webpack to bundle.
    config.module.parser = {
      ...config.module.parser,
      javascript: { ...config.module.parser?.javascript, url: false },
    };
    return config;
  },
};

export default nextConfig;
