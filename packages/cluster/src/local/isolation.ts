import { chmod, chown, lstat, readdir } from "node:fs/promises";
import { join } from "node:path";

/**
 * Per-cluster Unix users (`runAsUid`): replicas of the cluster in port slot n run as uid = gid =
 * runAsUid + n. Without this every replica runs as the provisioner's user and could read the
 * provisioner's `/proc/<pid>/environ` or another cluster's files; with it, file modes keep each
 * cluster to its own directory and the kernel keeps it away from other processes.
 *
 * Ownership below a cluster directory (all root-owned unless said otherwise):
 * - cluster dir, `replicas/`, each replica dir: 0710 root:<cluster gid> (only that cluster may enter)
 * - `code/`, `bundle/`: dirs 0750, files 0640, root:<cluster gid> (readable, not writable, by tenant code)
 * - `home/`: 0700 <uid>:<gid> (the only place tenant code may write)
 * - replica.json, the log files: 0600 root (the launch command is never tenant-writable)
 */
export function clusterUid(runAsUid: number, slot: number): number {
  return runAsUid + slot;
}

/** Lets only the cluster's group traverse `dirs` (the cluster dir and its replicas/ dir). */
export async function confineClusterDirs(dirs: string[], gid: number): Promise<void> {
  for (const dir of dirs) {
    await chown(dir, 0, gid);
    await chmod(dir, 0o710);
  }
}

/** Applies the ownership above to one replica's directory after its code was written. */
export async function confineReplicaDir(replicaDir: string, uid: number): Promise<void> {
  await confineClusterDirs([replicaDir], uid);
  for (const name of ["code", "bundle"]) await shareReadOnly(join(replicaDir, name), uid);
  const home = join(replicaDir, "home");
  await chown(home, uid, uid);
  await chmod(home, 0o700);
}

async function shareReadOnly(path: string, gid: number): Promise<void> {
  let info: Awaited<ReturnType<typeof lstat>>;
  try {
    info = await lstat(path);
  } catch {
    return;
  }
  // Symlinks (the bundle's node_modules -> the shared environment) are left alone: chown would
  // follow them into the environment.
  if (info.isSymbolicLink()) return;
  await chown(path, 0, gid);
  if (info.isDirectory()) {
    await chmod(path, 0o750);
    for (const entry of await readdir(path)) await shareReadOnly(join(path, entry), gid);
  } else await chmod(path, 0o640);
}
