/**
 * The Hungarian assignment (Kuhn-Munkres with Jonker-Volgenant's shortest augmenting paths and dual potentials):
 * a one-to-one matching of the rows and columns of a rectangular weight matrix with the largest total weight.
 * Every row of the smaller side is matched; O(r^2 c) time for r = min(n, m), c = max(n, m), O(r + c) extra memory.
 *
 * Shape letters: N rows, M columns.
 */

/**
 * Returns, for each row of the row-major weights w_NM, its column in a maximum-weight assignment, or -1 when
 * there are more rows than columns and the row is left out. Weights must be finite.
 */
export function maxWeightAssignment(w_NM: Float64Array, n: number, m: number): Int32Array {
  if (w_NM.length !== n * m) throw new Error(`weights hold ${w_NM.length} values, not ${n} x ${m}`);
  // The algorithm assigns every "row" of an r x c problem with r <= c; a tall matrix is read transposed.
  const tall = n > m;
  const r = tall ? m : n;
  const c = tall ? n : m;
  // Minimise the negated weights.
  const cost = tall ? (i: number, j: number) => -w_NM[j * m + i] : (i: number, j: number) => -w_NM[i * m + j];

  // 1-based: index 0 is a virtual column whose row is the one being inserted.
  const u = new Float64Array(r + 1); // row potentials
  const v = new Float64Array(c + 1); // column potentials
  const rowOf = new Int32Array(c + 1); // rowOf[j]: row assigned to column j, 0 = free
  const way = new Int32Array(c + 1); // the previous column on the shortest path to j
  const minv = new Float64Array(c + 1);
  const used = new Uint8Array(c + 1);
  for (let i = 1; i <= r; i++) {
    rowOf[0] = i;
    let j0 = 0;
    minv.fill(Infinity);
    used.fill(0);
    // Dijkstra over reduced costs until a free column is reached.
    do {
      used[j0] = 1;
      const i0 = rowOf[j0];
      let delta = Infinity;
      let j1 = 0;
      for (let j = 1; j <= c; j++) {
        if (used[j]) continue;
        const cur = cost(i0 - 1, j - 1) - u[i0] - v[j];
        if (cur < minv[j]) {
          minv[j] = cur;
          way[j] = j0;
        }
        if (minv[j] < delta) {
          delta = minv[j];
          j1 = j;
        }
      }
      for (let j = 0; j <= c; j++) {
        if (used[j]) {
          u[rowOf[j]] += delta;
          v[j] -= delta;
        } else minv[j] -= delta;
      }
      j0 = j1;
    } while (rowOf[j0] !== 0);
    // Flip the augmenting path.
    do {
      const j1 = way[j0];
      rowOf[j0] = rowOf[j1];
      j0 = j1;
    } while (j0 !== 0);
  }

  const out = new Int32Array(n).fill(-1);
  for (let j = 1; j <= c; j++) {
    if (rowOf[j] === 0) continue;
    if (tall) out[j - 1] = rowOf[j] - 1;
    else out[rowOf[j] - 1] = j - 1;
  }
  return out;
}
