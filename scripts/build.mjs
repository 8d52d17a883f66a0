/**
 * The build: one ES module bundle of the CLI (dist/cli.js) plus the chunks its lazy imports load
 * (dist/chunks/), so a run loads a few dozen files instead of ~350 module files (zod alone is 95,
 * yaml 72). Type checking is tsc's job (npm run typecheck), not this one's.
 *
 * ssh2 stays outside the bundle, installed as a dependency: it loads optional native addons
 * (sshcrypto.node, cpu-features) by paths relative to its own files.
 *
 *   node scripts/build.mjs [--outdir DIR] [--metafile FILE]
 */
import { rmSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { build } from 'esbuild';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const { values } = parseArgs({ options: { outdir: { type: 'string' }, metafile: { type: 'string' } } });
const outdir = resolve(values.outdir ?? join(root, 'dist'));
rmSync(outdir, { recursive: true, force: true });

const result = await build({
  absWorkingDir: root,
  entryPoints: { cli: 'src/cli/main.ts' },
  outdir,
  chunkNames: 'chunks/[name]-[hash]',
  bundle: true,
  splitting: true,
  format: 'esm',
  platform: 'node',
  target: 'node20.17',
  external: ['ssh2'],
  // CommonJS packages inside an ES module bundle still call require() for Node's own modules.
  banner: { js: "import { createRequire as __newapiCreateRequire } from 'node:module'; const require = __newapiCreateRequire(import.meta.url);" },
  minifySyntax: true,
  minifyWhitespace: true,
  keepNames: false,
  sourcemap: false,
  legalComments: 'none',
  metafile: Boolean(values.metafile),
  logLevel: 'warning',
});
if (values.metafile) writeFileSync(values.metafile, JSON.stringify(result.metafile));
