// Builds the feature browser into dist/app, which `vitsae serve` serves and `vitsae site` copies. Relative asset
// paths (base './') let the same build work from a server root and from any folder of a static site.
import react from '@vitejs/plugin-react';
import { fileURLToPath } from 'node:url';
import { defineConfig } from 'vite';

const here = fileURLToPath(new URL('.', import.meta.url));

export default defineConfig({
  root: here,
  base: './',
  plugins: [react()],
  build: { outDir: fileURLToPath(new URL('../dist/app', import.meta.url)), emptyOutDir: true, chunkSizeWarningLimit: 1000 },
  // The app shares pure modules (API types, list query, file layout, colormap) with src/.
  server: { fs: { allow: [fileURLToPath(new URL('..', import.meta.url))] }, proxy: { '/api': 'http://127.0.0.1:8770', '/files': 'http://127.0.0.1:8770' } },
});
