#!/usr/bin/env node
// Runs the TypeScript sources directly through tsx (a workspace dependency), like the rest of the repo.
import { register } from "tsx/esm/api";

register();
await import("../src/main.ts");
