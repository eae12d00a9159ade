import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

/** Absolute path of the directory holding the `tessera` and `ray` python packages (put it on PYTHONPATH). */
export const PYTHON_RUNTIME_DIR = join(dirname(fileURLToPath(import.meta.url)), "..", "python");
