/**
 * An image with its patch grid, shared by the image page and the edit demos: patches are selected by click or
 * drag, and a hovered feature's value is painted on every patch.
 */
import { useMemo, useState } from 'react';
import type { ImagePage, LatentRef, RunInfo } from '../../src/server/api.js';
import { plasma } from '../../src/analysis/colormap.js';

/** How many features a firing list shows. */
const LISTED = 24;
/** Width of the image on the page, in CSS pixels. */
const VIEW = 448;

export interface Rect {
  r0: number;
  c0: number;
  r1: number;
  c1: number;
}

export function cellsOf(rect: Rect | null, gw: number): number[] {
  if (!rect) return [];
  const out = [];
  for (let r = Math.min(rect.r0, rect.r1); r <= Math.max(rect.r0, rect.r1); r++) for (let c = Math.min(rect.c0, rect.c1); c <= Math.max(rect.c0, rect.c1); c++) out.push(r * gw + c);
  return out;
}

/** What the patch view and the firing list need of an image: also the edit demos' images (uploads too). */
export type PatchData = Pick<ImagePage, 'view' | 'key' | 'grid' | 'patches' | 'latents'>;

/** Features firing on the selected patches: their strongest value there and on how many of them they fire. */
export function firing(page: PatchData, cells: number[]): { ref: LatentRef; max: number; count: number }[] {
  const agg = new Map<number, { max: number; count: number }>();
  for (const p of cells)
    for (const [j, v] of page.patches[p]) {
      const a = agg.get(j) ?? { max: 0, count: 0 };
      agg.set(j, { max: Math.max(a.max, v), count: a.count + 1 });
    }
  return [...agg]
    .sort((a, b) => b[1].max - a[1].max || a[0] - b[0])
    .slice(0, LISTED)
    .map(([j, a]) => ({ ref: page.latents[j], ...a }));
}

export function PatchView({ run, page, selected, onSelect, hover }: { run: RunInfo; page: PatchData; selected: Rect | null; onSelect: (r: Rect | null) => void; hover: number | null }) {
  const [gh, gw] = page.grid;
  const [h, w] = run.image_size;
  const width = VIEW;
  const height = Math.round((VIEW * h) / w);
  const [dragging, setDragging] = useState(false);
  const cells = new Set(cellsOf(selected, gw));
  // The hovered feature's value on every patch, scaled by its maximum on this image.
  const heat = useMemo(() => {
    if (hover === null) return null;
    const v = page.patches.map((row) => row.find(([j]) => j === hover)?.[1] ?? 0);
    const max = Math.max(...v);
    return max > 0 ? v.map((x) => x / max) : null;
  }, [hover, page]);
  return (
    <div className="patch-view" style={{ width, height }} onPointerLeave={() => setDragging(false)} data-testid="patch-view">
      <img src={page.view} width={width} height={height} alt={page.key} draggable={false} />
      <div className="patch-grid" style={{ gridTemplateColumns: `repeat(${gw}, 1fr)`, gridTemplateRows: `repeat(${gh}, 1fr)` }}>
        {Array.from({ length: gh * gw }, (_, p) => {
          const r = Math.floor(p / gw),
            c = p % gw;
          const t = heat?.[p] ?? 0;
          const [R, G, B] = plasma(t);
          return (
            <div
              key={p}
              className={`patch-cell${cells.has(p) ? ' selected' : ''}`}
              data-testid="patch-cell"
              style={t > 0 ? { background: `rgba(${R}, ${G}, ${B}, ${0.75 * t})` } : undefined}
              onPointerDown={(e) => {
                e.preventDefault();
                setDragging(true);
                onSelect({ r0: r, c0: c, r1: r, c1: c });
              }}
              onPointerEnter={() => dragging && selected && onSelect({ ...selected, r1: r, c1: c })}
              onPointerUp={() => setDragging(false)}
              title={`patch ${p} (row ${r}, column ${c})`}
            />
          );
        })}
      </div>
    </div>
  );
}
