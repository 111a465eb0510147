/**
 * The architecture, checked with dependency-cruiser: every import between folders of src/ points down the layers
 * (the flow images -> backbone -> shards -> SAE -> analysis -> edits -> server/CLI, with each step's file format
 * below the steps that write and read it), and no module takes part in an import cycle (src/ and web/src/ alike).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { cruise, type IForbiddenRuleType } from 'dependency-cruiser';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');

/** The folders of src/, lowest first: a folder may import only from folders before it. src/*.ts sit on top. */
const LAYERS = ['util', 'shards', 'data', 'backbone', 'sae', 'interop', 'analysis', 'edit', 'server', 'cli'];

function rules(): IForbiddenRuleType[] {
  const upward = LAYERS.slice(0, -1).map((layer, i) => ({
    name: `${layer}-imports-a-higher-layer`,
    severity: 'error' as const,
    from: { path: `^src/${layer}/` },
    to: { path: `^src/(${LAYERS.slice(i + 1).join('|')})/|^src/[^/]+\\.ts$` },
  }));
  return [...upward, { name: 'no-cycles', severity: 'error', from: {}, to: { circular: true } }];
}

test('architecture: imports point down the layers and close no cycle', { timeout: 120_000 }, async () => {
  const cwd = process.cwd();
  process.chdir(ROOT);
  try {
    const result = await cruise(['src', 'web/src'], { ruleSet: { forbidden: rules() }, validate: true, tsPreCompilationDeps: true, doNotFollow: { path: 'node_modules' } }, undefined, {
      tsConfig: { fileName: 'tsconfig.json' },
    });
    const out = typeof result.output === 'string' ? JSON.parse(result.output) : result.output;
    const modules = out.modules.filter((m: { source: string }) => /^(src|web\/src)\//.test(m.source));
    assert.ok(modules.length > 100, `the check saw ${modules.length} modules`);
    const violations = out.summary.violations.map(
      (v: { rule: { name: string }; from: string; to: string; cycle?: { name: string }[] }) =>
        `${v.rule.name}: ${v.from} -> ${v.to}${v.cycle ? ` (cycle ${v.cycle.map((c) => c.name ?? c).join(' -> ')})` : ''}`,
    );
    assert.deepEqual(violations, []);
  } finally {
    process.chdir(cwd);
  }
});
