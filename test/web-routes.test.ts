/** The web app's routes: every link the app builds parses back to the page and values it names; others do not. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { href, parseRoute } from '../web/src/routes.js';

const upload = 'ab'.repeat(32);

test('web routes: each href parses back to its page and values', () => {
  assert.deepEqual(parseRoute(''), { page: 'home' });
  assert.deepEqual(parseRoute(href.feature('run-a', 12)), { page: 'feature', run: 'run-a', latent: 12 });
  assert.deepEqual(parseRoute(href.image('run-a', 0)), { page: 'image', run: 'run-a', image: 0 });
  assert.deepEqual(parseRoute(href.compare('a', 3, 'b')), { page: 'compare', a: 'a', latent: 3, b: 'b', other: undefined });
  assert.deepEqual(parseRoute(href.compare('a', 3, 'b', 7)), { page: 'compare', a: 'a', latent: 3, b: 'b', other: 7 });
  const list = parseRoute(href.list('r', { sort: 'freq', q: 'red' }));
  assert.equal(list.page, 'list');
  assert.deepEqual(list.page === 'list' && [list.run, list.params.get('sort'), list.params.get('q')], ['r', 'freq', 'red']);
  const matches = parseRoute(href.matches({ list: 'missing', page: '2' }));
  assert.deepEqual(matches.page === 'matches' && [...matches.params], [
    ['list', 'missing'],
    ['page', '2'],
  ]);
  assert.equal(href.edit('r', 1, 4, 9), '#/r/r/edit/1/4?latent=9');
  assert.deepEqual(parseRoute(href.edit('r', 1, 4, 9)), { page: 'edit', run: 'r', head: 1, image: 4, latent: 9 });
  assert.deepEqual(parseRoute(href.edit('r', 0)), { page: 'edit', run: 'r', head: 0, image: undefined, latent: undefined });
  assert.deepEqual(parseRoute(href.edit('r', 0, { upload })), { page: 'edit', run: 'r', head: 0, image: { upload }, latent: undefined });
});

test('web routes: malformed hashes name no page', () => {
  for (const hash of ['#/r/x/f/-1', '#/r/x/f/1e3', '#/r/x/i/', '#/r/x/edit/0/upload-xyz', '#/r/x/edit/0/2?latent=', '#/r/x/edit/0/2?latent=a', '#/compare/a/x/b', '#/nowhere'])
    assert.deepEqual(parseRoute(hash), { page: 'unknown' }, hash);
});
