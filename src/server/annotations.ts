/**
 * User annotations of a run's features (a name and free-text notes per latent) in SQLite: RUN/annotations.sqlite,
 * one row per annotated latent, WAL journal so that readers (a second server, `vitsae site`) never block a writer.
 * All annotations are also kept in memory, so the feature list can sort and filter by them without a query.
 */
import Database from 'better-sqlite3';
import { existsSync } from 'node:fs';
import * as path from 'node:path';
import { UserError } from '../util/errors.js';

export const ANNOTATIONS_FILE = 'annotations.sqlite';
const SCHEMA_VERSION = 1;

export interface Annotation {
  name: string;
  notes: string;
  updated: string;
}

export class Annotations {
  private constructor(
    private readonly db: Database.Database | null,
    private readonly rows: Map<number, Annotation>,
  ) {}

  /** Opens (creating if needed) the annotations of a run with `dSae` latents; `readonly` never creates or writes. */
  static open(runDir: string, dSae: number, opts: { readonly?: boolean } = {}): Annotations {
    const file = path.join(runDir, ANNOTATIONS_FILE);
    if (opts.readonly && !existsSync(file)) return new Annotations(null, new Map());
    let db: Database.Database;
    try {
      db = new Database(file, { readonly: opts.readonly ?? false, fileMustExist: opts.readonly ?? false });
    } catch (e) {
      throw new UserError(`cannot open ${file}: ${(e as Error).message}`);
    }
    if (!opts.readonly) {
      db.pragma('journal_mode = WAL');
      db.exec(`CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
               CREATE TABLE IF NOT EXISTS features (latent INTEGER PRIMARY KEY, name TEXT NOT NULL, notes TEXT NOT NULL, updated TEXT NOT NULL);`);
      db.prepare('INSERT OR IGNORE INTO meta VALUES (?, ?)').run('d_sae', String(dSae));
      db.pragma(`user_version = ${SCHEMA_VERSION}`);
    }
    const stored = db.prepare('SELECT value FROM meta WHERE key = ?').get('d_sae') as { value: string } | undefined;
    if (stored && Number(stored.value) !== dSae)
      throw new UserError(`${file} annotates an SAE with ${stored.value} latents but this run's SAE has ${dSae}; move the file away to start new annotations`);
    const rows = new Map<number, Annotation>();
    for (const r of db.prepare('SELECT latent, name, notes, updated FROM features').all() as ({ latent: number } & Annotation)[])
      rows.set(r.latent, { name: r.name, notes: r.notes, updated: r.updated });
    return new Annotations(db, rows);
  }

  get(latent: number): Annotation | undefined {
    return this.rows.get(latent);
  }

  /** Sets a latent's name and notes; both empty deletes the row. */
  set(latent: number, name: string, notes: string): Annotation {
    if (!this.db || this.db.readonly) throw new Error('annotations are read-only here');
    const updated = new Date().toISOString();
    if (!name && !notes) {
      this.db.prepare('DELETE FROM features WHERE latent = ?').run(latent);
      this.rows.delete(latent);
    } else {
      this.db
        .prepare('INSERT INTO features VALUES (?, ?, ?, ?) ON CONFLICT(latent) DO UPDATE SET name = excluded.name, notes = excluded.notes, updated = excluded.updated')
        .run(latent, name, notes, updated);
      this.rows.set(latent, { name, notes, updated });
    }
    return { name, notes, updated };
  }

  close(): void {
    this.db?.close();
  }
}
