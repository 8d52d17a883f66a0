/**
 * The template set: the bundled files in templates/, each replaceable by a file of the same
 * name in the inventory's `templates:` folder. Reading them is the only I/O of rendering.
 */
import { readFile, stat } from 'node:fs/promises';
import { isAbsolute, join, resolve } from 'node:path';
import { InputError } from '../errors.js';
import { PACKAGE_ROOT } from '../package-root.js';

export const TEMPLATE_FILES = {
  compose: 'docker-compose.yml.hbs',
  env: 'env.hbs',
  nginx: 'nginx.conf.hbs',
  keepalived: 'keepalived.conf.hbs',
} as const;

export type TemplateName = keyof typeof TEMPLATE_FILES;
export type TemplateSources = Record<TemplateName, string>;

export const BUNDLED_TEMPLATES_DIR = join(PACKAGE_ROOT, 'templates');

export async function loadTemplates(overrideDir: string | null, inventoryDir: string): Promise<TemplateSources> {
  const dir = overrideDir === null ? undefined : isAbsolute(overrideDir) ? overrideDir : resolve(inventoryDir, overrideDir);
  // A mistyped folder would otherwise fall back to the bundled templates without a word.
  if (dir !== undefined && !(await stat(dir).then((s) => s.isDirectory(), () => false))) {
    throw new InputError(`templates: ${dir} is not a folder`, 'create it with the templates to override, or remove templates: from the inventory');
  }
  const entries = await Promise.all(
    (Object.entries(TEMPLATE_FILES) as [TemplateName, string][]).map(async ([name, file]) => {
      if (dir !== undefined) {
        try {
          return [name, await readFile(join(dir, file), 'utf8')] as const;
        } catch (e) {
          if ((e as NodeJS.ErrnoException).code !== 'ENOENT') {
            throw new InputError(`templates: cannot read ${join(dir, file)}`, 'check the file permissions');
          }
        }
      }
      return [name, await readFile(join(BUNDLED_TEMPLATES_DIR, file), 'utf8')] as const;
    }),
  );
  return Object.fromEntries(entries) as TemplateSources;
}
