import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { UserError } from './errors.js';

/**
 * Writes a file so that readers see either the old content or the whole new content, never a torn file:
 * write a temp file in the same directory, fsync it, rename it over the target, fsync the directory.
 */
export async function writeFileAtomic(file: string, data: string | Uint8Array | Uint8Array[]): Promise<void> {
  const dir = path.dirname(file);
  const tmp = path.join(dir, `.${path.basename(file)}.${process.pid}.${Date.now()}.tmp`);
  const fh = await fsp.open(tmp, 'w');
  try {
    for (const part of Array.isArray(data) ? data : [data]) await (typeof part === 'string' ? fh.write(part) : fh.write(part));
    await fh.sync();
  } catch (e) {
    await fh.close();
    await fsp.rm(tmp, { force: true });
    throw e;
  }
  await fh.close();
  await fsp.rename(tmp, file);
  await syncDir(dir);
}

/** The folders inside a directory written by writeFilesTogether: files being written, and a complete write. */
const STAGING = '.staging';
const COMMIT = '.commit';

async function syncDir(dir: string): Promise<void> {
  const dh = await fsp.open(dir, 'r');
  try {
    await dh.sync();
  } finally {
    await dh.close();
  }
}

/**
 * Writes several files into `dir` so that, whatever moment a crash comes at, `dir` ends up with all of them from
 * this write or all of them from the previous one: `write` puts them in dir/.staging, which is renamed to
 * dir/.commit once complete (the commit point), and they are then moved into place one by one. settleFiles,
 * run before every write and read, finishes a committed write that was cut short and discards an uncommitted one.
 */
export async function writeFilesTogether(dir: string, write: (staging: string) => Promise<void>): Promise<void> {
  await fsp.mkdir(dir, { recursive: true });
  await settleFiles(dir);
  const staging = path.join(dir, STAGING);
  await fsp.mkdir(staging);
  await write(staging);
  await syncDir(staging);
  await fsp.rename(staging, path.join(dir, COMMIT));
  await syncDir(dir);
  await settleFiles(dir);
}

/** Completes or discards an interrupted writeFilesTogether in `dir` (nothing to do in a settled directory). */
export async function settleFiles(dir: string): Promise<void> {
  const commit = path.join(dir, COMMIT);
  const names = await fsp.readdir(commit).catch(() => null);
  if (names) {
    for (const name of names.sort()) {
      await fsp.rename(path.join(commit, name), path.join(dir, name)).catch((e: NodeJS.ErrnoException) => {
        // Another process settling the same directory may have moved it first.
        if (e.code !== 'ENOENT') throw e;
      });
    }
    await syncDir(dir);
    await fsp.rm(commit, { recursive: true, force: true });
  }
  await fsp.rm(path.join(dir, STAGING), { recursive: true, force: true });
}

/** Whether a path exists (any kind of file). */
export async function exists(p: string): Promise<boolean> {
  return fsp.access(p).then(
    () => true,
    () => false,
  );
}

export async function readJson<T = unknown>(file: string, what: string): Promise<T> {
  let text: string;
  try {
    text = await fsp.readFile(file, 'utf8');
  } catch (e) {
    const err = e as NodeJS.ErrnoException;
    throw new UserError(err.code === 'ENOENT' ? `${file} does not exist: ${what}` : `cannot read ${file}: ${err.message}`);
  }
  try {
    return JSON.parse(text) as T;
  } catch (e) {
    throw new UserError(`${file} is not valid JSON (${(e as Error).message}): ${what}`);
  }
}
