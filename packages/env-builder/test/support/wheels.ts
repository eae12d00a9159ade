import { execFileSync } from "node:child_process";

/**
 * Writes `<name>-<version>-py3-none-any.whl` into `dir` with the python standard library only:
 * a wheel is a zip holding the package and a `.dist-info` with METADATA, WHEEL and RECORD. The
 * package exposes `VERSION` so a replica can say which one it imported.
 */
const MAKE_WHEEL = `
import base64, hashlib, os, sys, zipfile
name, version, out = sys.argv[1:4]
dist = f"{name}-{version}.dist-info"
files = {
    f"{name}/__init__.py": f'VERSION = "{version}"\\n',
    f"{dist}/METADATA": f"Metadata-Version: 2.1\\nName: {name}\\nVersion: {version}\\n",
    f"{dist}/WHEEL": "Wheel-Version: 1.0\\nGenerator: tessera-test\\nRoot-Is-Purelib: true\\nTag: py3-none-any\\n",
}
def record_line(path, data):
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{path},sha256={digest},{len(data)}\\n"
files[f"{dist}/RECORD"] = "".join(record_line(p, c.encode()) for p, c in files.items()) + f"{dist}/RECORD,,\\n"
with zipfile.ZipFile(os.path.join(out, f"{name}-{version}-py3-none-any.whl"), "w") as wheel:
    for path, content in files.items():
        wheel.writestr(path, content)
`;

export function makeWheel(python: string, dir: string, name: string, version: string): void {
  execFileSync(python, ["-c", MAKE_WHEEL, name, version, dir]);
}
