/**
 * The edit demos' hooks: a run's task heads (a static site has none), and the session that keeps an image's
 * unedited answer and its edited one.
 */
import { useEffect, useRef, useState } from 'react';
import type { RunInfo } from '../../src/server/api.js';
import type { EditAnswer, EditSpec, HeadSummary } from '../../src/server/edit-api.js';
import { useApp } from './app.js';
import { imageView } from './data.js';
import type { PatchData } from './PatchView.js';
import type { DemoImage } from './routes.js';

const headLists = new Map<string, Promise<HeadSummary[]>>();

/** The run's task heads (undefined while loading); none on a static site. Asked once per run and page load. */
export function useHeads(run: RunInfo): HeadSummary[] | undefined {
  const { source } = useApp();
  const [heads, setHeads] = useState<HeadSummary[] | undefined>(source.isStatic ? [] : undefined);
  useEffect(() => {
    if (source.isStatic) return;
    let list = headLists.get(run.id);
    if (!list) {
      list = source.heads(run.id);
      list.catch(() => headLists.delete(run.id));
      headLists.set(run.id, list);
    }
    let live = true;
    list.then(
      (p) => live && setHeads(p),
      () => live && setHeads([]),
    );
    return () => {
      live = false;
    };
  }, [run.id, source.isStatic]);
  return heads;
}

/** Milliseconds a slider must rest before its edit is sent. */
const DEBOUNCE = 120;

export interface EditSession {
  /** The unedited answer with every patch's latents, as the patch view and firing list want them. */
  base?: EditAnswer;
  page?: PatchData;
  /** The answer to the current edits (the base answer while there are none). */
  edited?: EditAnswer;
  /** An edit is on its way. */
  pending: boolean;
  error?: string;
}

/**
 * Loads the unedited answer of `image` under `head`, then answers `edits` as they change: debounced, and only the
 * answer to the latest edits is kept (earlier ones arriving late are dropped).
 */
export function useEditSession(run: RunInfo, head: number, image: DemoImage, edits: EditSpec[]): EditSession {
  const { source } = useApp();
  const imageKey = `${run.id} ${head} ${JSON.stringify(image)}`;
  // The state carries the image it belongs to: in the render after the image changes, before the effect below
  // resets it, the old image's answers must not be shown as this one's.
  const [state, setState] = useState<EditSession & { of?: string }>({ pending: true });
  const latest = useRef(0);
  useEffect(() => {
    let live = true;
    // Answers to edits of the previous image, still on their way, must not land on this one.
    latest.current++;
    setState({ pending: true, of: imageKey });
    source.edit(run.id, { head, image, edits: [], patches: 'all' }).then(
      (base) => {
        if (!live) return;
        const [gh, gw] = base.grid;
        const patches = Array.from({ length: gh * gw }, (_, p) => base.patches[p] ?? []);
        setState({
          of: imageKey,
          base,
          edited: base,
          pending: false,
          page: { view: imageView(run.id, image), key: typeof image === 'number' ? `image ${image}` : 'upload', grid: base.grid, patches, latents: base.latents },
        });
      },
      (e: Error) => live && setState({ of: imageKey, pending: false, error: e.message }),
    );
    return () => {
      live = false;
    };
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [imageKey]);
  const editsKey = JSON.stringify(edits);
  const current = state.of === imageKey;
  const ready = current && state.base !== undefined;
  useEffect(() => {
    if (!ready) return;
    const id = ++latest.current;
    if (!edits.length) {
      setState((s) => ({ ...s, edited: s.base, pending: false, error: undefined }));
      return;
    }
    setState((s) => ({ ...s, pending: true }));
    const timer = setTimeout(() => {
      source.edit(run.id, { head, image, edits }).then(
        (edited) => id === latest.current && setState((s) => ({ ...s, edited, pending: false, error: undefined })),
        (e: Error) => id === latest.current && setState((s) => ({ ...s, pending: false, error: e.message })),
      );
    }, DEBOUNCE);
    return () => clearTimeout(timer);
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [editsKey, ready]);
  return current ? state : { pending: true };
}
