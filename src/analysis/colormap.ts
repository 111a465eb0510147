/**
 * matplotlib's plasma colormap: perceptually uniform and still ordered in greyscale, so highlight strength reads
 * the same everywhere. Dependency-free, because the web app draws with it too.
 */

// A degree-6 polynomial fit per channel (mattz, CC0, shadertoy.com/view/WlfXRN), within about 1/255 of the table.
const PLASMA = [
  [0.05873234392399702, 0.02333670892565664, 0.5433401826748754],
  [2.176514634195958, 0.2383834171260182, 0.7539604599784036],
  [-2.689460476458034, -7.455851135738909, 3.110799939717086],
  [6.130348345893603, 42.3461881477227, -28.51885465332158],
  [-11.10743619062271, -82.66631109428045, 60.13984767418263],
  [10.02306557647065, 71.41361770095349, -54.07218655560067],
  [-3.658713842777788, -22.93153465461149, 18.19190778539828],
];

/** plasma(t) for t in [0, 1] (clamped) as 8-bit RGB. */
export function plasma(t: number): [number, number, number] {
  const x = Math.max(0, Math.min(1, t));
  return [0, 1, 2].map((ch) => {
    let v = PLASMA[6][ch];
    for (let i = 5; i >= 0; i--) v = v * x + PLASMA[i][ch];
    return Math.max(0, Math.min(255, Math.round(v * 255)));
  }) as [number, number, number];
}
