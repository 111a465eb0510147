/**
 * The kinds the edit engine, its CLI, the server's API schemas and the web app share. No Node imports, so the
 * web app can use it.
 */

/** How an edit changes a latent on its patches: f' = value (set), f + value (add) or f * value (scale). */
export const EDIT_MODES = ['set', 'add', 'scale'] as const;
export type EditMode = (typeof EDIT_MODES)[number];

/** What a frozen task head predicts: a class per image, or a class per patch. */
export const TASKS = ['classify', 'segment'] as const;
export type Task = (typeof TASKS)[number];

export function isEditMode(s: string): s is EditMode {
  return (EDIT_MODES as readonly string[]).includes(s);
}
