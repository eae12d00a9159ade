/**
 * The deploy form's code: typed into the editor pane, or uploaded as files or one .zip. Becomes
 * the API's code bundle `{files: {path: contents}, encoding}`; one binary file makes the whole
 * bundle base64.
 */

export interface CodeBundleInput {
  files: Record<string, string>;
  encoding: "utf8" | "base64";
}

const utf8 = new TextDecoder("utf-8", { fatal: true });

function toBase64(bytes: Uint8Array): string {
  let s = "";
  for (let i = 0; i < bytes.length; i += 0x8000) s += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  return btoa(s);
}

/** Path -> bytes into a bundle: text when every file is UTF-8, else everything base64. */
export function bundleFromBytes(entries: [string, Uint8Array][]): CodeBundleInput {
  try {
    return { encoding: "utf8", files: Object.fromEntries(entries.map(([p, b]) => [p, utf8.decode(b)])) };
  } catch {
    return { encoding: "base64", files: Object.fromEntries(entries.map(([p, b]) => [p, toBase64(b)])) };
  }
}

async function inflateRaw(data: Uint8Array): Promise<Uint8Array> {
  const stream = new Blob([data as BlobPart]).stream().pipeThrough(new DecompressionStream("deflate-raw"));
  return new Uint8Array(await new Response(stream).arrayBuffer());
}

/**
 * The files of a .zip (stored or deflated entries, read through the central directory);
 * directories are skipped and a single top-level folder shared by every file is removed.
 */
export async function unzip(buffer: ArrayBuffer): Promise<[string, Uint8Array][]> {
  const view = new DataView(buffer);
  const bytes = new Uint8Array(buffer);
  let eocd = -1;
  for (let i = buffer.byteLength - 22; i >= Math.max(0, buffer.byteLength - 65_557); i--) {
    if (view.getUint32(i, true) === 0x06054b50) {
      eocd = i;
      break;
    }
  }
  if (eocd < 0) throw new Error("not a zip file");
  const count = view.getUint16(eocd + 10, true);
  let p = view.getUint32(eocd + 16, true);
  const names = new TextDecoder();
  const out: [string, Uint8Array][] = [];
  for (let n = 0; n < count; n++) {
    if (view.getUint32(p, true) !== 0x02014b50) throw new Error("corrupt zip central directory");
    const method = view.getUint16(p + 10, true);
    const compressedSize = view.getUint32(p + 20, true);
    const nameLen = view.getUint16(p + 28, true);
    const extraLen = view.getUint16(p + 30, true);
    const commentLen = view.getUint16(p + 32, true);
    const localOffset = view.getUint32(p + 42, true);
    const name = names.decode(bytes.subarray(p + 46, p + 46 + nameLen));
    p += 46 + nameLen + extraLen + commentLen;
    if (name.endsWith("/") || name.startsWith("__MACOSX/")) continue;
    const localNameLen = view.getUint16(localOffset + 26, true);
    const localExtraLen = view.getUint16(localOffset + 28, true);
    const start = localOffset + 30 + localNameLen + localExtraLen;
    const raw = bytes.subarray(start, start + compressedSize);
    if (method === 0) out.push([name, raw]);
    else if (method === 8) out.push([name, await inflateRaw(raw)]);
    else throw new Error(`${name}: unsupported zip compression method ${method}`);
  }
  const first = out[0]?.[0].split("/")[0];
  if (first && out.every(([name]) => name.includes("/") && name.split("/")[0] === first))
    return out.map(([name, b]) => [name.slice(first.length + 1), b]);
  return out;
}

/** Uploaded files: a single .zip is unpacked; other files keep their (relative) names. */
export async function bundleFromUploads(files: File[]): Promise<CodeBundleInput> {
  if (files.length === 1 && files[0]!.name.toLowerCase().endsWith(".zip"))
    return bundleFromBytes(await unzip(await files[0]!.arrayBuffer()));
  const entries: [string, Uint8Array][] = [];
  for (const f of files)
    entries.push([f.webkitRelativePath || f.name, new Uint8Array(await f.arrayBuffer())]);
  return bundleFromBytes(entries);
}
