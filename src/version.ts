import { PACKAGE_MANIFEST } from './package-root.js';

/** The package's own version, from its package.json. */
export const VERSION: string = PACKAGE_MANIFEST.version;
