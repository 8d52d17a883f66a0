import { existsSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

/**
 * The installed package's own folder (package.json, templates/, schema/) and its package.json,
 * read once. Found by walking up from this module, because where this module sits differs: src/
 * under tests, the bundle's chunks under dist/ when installed.
 */
export const { root: PACKAGE_ROOT, manifest: PACKAGE_MANIFEST } = findPackage(dirname(fileURLToPath(import.meta.url)));

function findPackage(from: string): { root: string; manifest: { name: string; version: string } } {
  for (let dir = from; ; dir = dirname(dir)) {
    const file = join(dir, 'package.json');
    if (existsSync(file)) {
      const manifest = JSON.parse(readFileSync(file, 'utf8')) as { name?: string; version: string };
      if (manifest.name === 'newapi-cluster') return { root: dir, manifest: { name: manifest.name, version: manifest.version } };
    }
    if (dirname(dir) === dir) throw new Error(`newapi-cluster: no package.json of newapi-cluster above ${from} (a broken install?)`);
  }
}
