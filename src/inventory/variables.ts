/**
 * `${VAR}` references in inventory strings, resolved from the process environment first, then
 * from the secrets file beside the inventory. `$${` writes a literal `${`.
 */
import { error, pathOf, type Problem } from './problems.js';

const REF_RE = /\$\$\{|\$\{([^}]*)\}/g;
const VAR_NAME_RE = /^[A-Za-z_][A-Za-z0-9_]*$/;

export interface Resolution {
  value: unknown;
  problems: Problem[];
  /** Paths whose value came (wholly or partly) from a variable. */
  fromVariables: Set<string>;
  /** Every value a variable resolved to: redacted wherever output could show it, whatever its key. */
  values: Set<string>;
}

export function resolveVariables(
  doc: unknown,
  lookup: (name: string) => string | undefined,
  secretsFileName: string,
): Resolution {
  const problems: Problem[] = [];
  const fromVariables = new Set<string>();
  const values = new Set<string>();

  const walk = (node: unknown, path: PropertyKey[]): unknown => {
    if (typeof node === 'string') return resolveString(node, path);
    if (Array.isArray(node)) return node.map((item, i) => walk(item, [...path, i]));
    if (node !== null && typeof node === 'object') {
      return Object.fromEntries(Object.entries(node).map(([k, v]) => [k, walk(v, [...path, k])]));
    }
    return node;
  };

  const resolveString = (text: string, path: PropertyKey[]): string => {
    if (!text.includes('$')) return text;
    return text.replace(REF_RE, (whole, name: string | undefined) => {
      if (whole === '$${') return '${';
      const where = pathOf(path);
      if (name === undefined || !VAR_NAME_RE.test(name)) {
        problems.push(error(where, `"\${${name ?? ''}}" is not a valid variable reference`, 'write ${NAME} with letters, digits and _'));
        return '';
      }
      const value = lookup(name);
      if (value === undefined || value === '') {
        problems.push(
          error(where, `\${${name}} is not set`, `export ${name}=… or add ${name}=… to ${secretsFileName}`),
        );
        return '';
      }
      fromVariables.add(where);
      values.add(value);
      return value;
    });
  };

  return { value: walk(doc, []), problems, fromVariables, values };
}
