/**
 * Sorting, filtering and paging of the feature list; the server runs it over every latent, and a static site runs
 * the same code in the browser. Each sort order is computed once and kept, so a request is one linear filtering
 * pass (tens of thousands of latents in about a millisecond). No Node imports.
 */
import type { FeatureList, FeatureQuery, FeatureRow } from './api.js';

export class FeatureTable {
  private readonly orders = new Map<string, Int32Array>();
  // The filtered columns, packed: scanning them in a sort order touches no row object.
  private readonly frequency: Float64Array;
  private readonly named: Uint8Array;
  private readonly conceptF1: Float64Array;
  /** Each row's best concept as an index into `conceptIds` (-1 = none). */
  private readonly concept: Int32Array;
  private readonly conceptIds = new Map<string, number>();

  /** `notes` gives a latent's notes for the text filter (rows carry only names). */
  constructor(
    readonly rows: FeatureRow[],
    private readonly notes: (latent: number) => string = () => '',
  ) {
    this.frequency = Float64Array.from(rows, (r) => r.frequency);
    this.named = Uint8Array.from(rows, (r) => (r.name ? 1 : 0));
    this.conceptF1 = Float64Array.from(rows, (r) => r.concept_f1);
    this.concept = Int32Array.from(rows, (r) => {
      if (!r.concept) return -1;
      if (!this.conceptIds.has(r.concept)) this.conceptIds.set(r.concept, this.conceptIds.size);
      return this.conceptIds.get(r.concept)!;
    });
  }

  /** Sets a latent's name (the name orders are recomputed on next use). */
  rename(latent: number, name: string): void {
    this.rows[latent].name = name;
    this.named[latent] = name ? 1 : 0;
    this.orders.delete('name asc');
    this.orders.delete('name desc');
  }

  private order(sort: FeatureQuery['sort'], dir: FeatureQuery['order']): Int32Array {
    const cacheKey = `${sort} ${dir}`;
    let order = this.orders.get(cacheKey);
    if (order) return order;
    const rows = this.rows;
    const s = dir === 'asc' ? 1 : -1;
    const ids = Int32Array.from(rows.keys());
    if (sort === 'name') {
      // Unnamed features go last, whichever the order.
      const name = rows.map((r) => r.name);
      order = ids.sort((i, j) => {
        if (!name[i] || !name[j]) return !name[i] === !name[j] ? i - j : name[i] ? -1 : 1;
        return s * name[i].localeCompare(name[j]) || i - j;
      });
    } else {
      const col = Float64Array.from(rows, (r) => r[sort]);
      order = ids.sort((i, j) => s * (col[i] - col[j]) || i - j);
    }
    this.orders.set(cacheKey, order);
    return order;
  }

  query(q: FeatureQuery): FeatureList {
    const text = q.q?.trim().toLowerCase() ?? '';
    const minF = q.min_frequency ?? -Infinity;
    const maxF = q.max_frequency ?? Infinity;
    const want = q.annotated === 'named' ? 1 : q.annotated === 'unnamed' ? 0 : -1;
    // -1: any; a concept that is no feature's best selects nothing (-2 is no row's index).
    const wantConcept = q.concept ? (this.conceptIds.get(q.concept) ?? -2) : -1;
    const minConceptF1 = q.min_concept_f1 ?? -Infinity;
    const { frequency, named, conceptF1, concept, rows } = this;
    const order = this.order(q.sort, q.order);
    const items: FeatureRow[] = [];
    let total = 0;
    for (let k = 0; k < order.length; k++) {
      const i = order[k];
      if (frequency[i] < minF || frequency[i] > maxF || (want >= 0 && named[i] !== want)) continue;
      if (conceptF1[i] < minConceptF1 || (wantConcept !== -1 && concept[i] !== wantConcept)) continue;
      if (text && !rows[i].name.toLowerCase().includes(text) && !this.notes(i).toLowerCase().includes(text)) continue;
      if (total >= q.offset && items.length < q.limit) items.push(rows[i]);
      total++;
    }
    return { total, offset: q.offset, limit: q.limit, items };
  }
}
