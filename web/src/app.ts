/** The app's shared state (its data source and runs) and the hook that loads a page's data. */
import { createContext, useContext, useEffect, useState } from 'react';
import type { RunInfo } from '../../src/server/api.js';
import type { Source } from './data.js';

export interface AppData {
  source: Source;
  runs: RunInfo[];
}

export const AppContext = createContext<AppData>(null as unknown as AppData);

export function useApp(): AppData {
  return useContext(AppContext);
}

export interface Loaded<T> {
  data?: T;
  error?: string;
  loading: boolean;
}

/** Runs `load` whenever `deps` change; results of superseded calls are dropped. */
export function useLoad<T>(load: () => Promise<T>, deps: unknown[]): Loaded<T> {
  const [state, setState] = useState<Loaded<T>>({ loading: true });
  useEffect(() => {
    let live = true;
    setState((s) => ({ ...s, loading: true }));
    load().then(
      (data) => live && setState({ data, loading: false }),
      (e: Error) => live && setState({ error: e.message, loading: false }),
    );
    return () => {
      live = false;
    };
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, deps);
  return state;
}
