/** Turns zod issues into path-addressed problems with hints, in the words an operator reads. */
import { closest, distance } from 'fastest-levenshtein';
import type { z } from 'zod';
import { error, pathOf, type Problem } from './problems.js';

type Issue = z.core.$ZodIssue;

/** Splits the "message\nhint" convention of schema.ts. */
function split(message: string): { message: string; hint?: string } {
  const i = message.indexOf('\n');
  return i < 0 ? { message } : { message: message.slice(0, i), hint: message.slice(i + 1) };
}

function describe(value: unknown): string {
  if (value === null) return 'null';
  if (Array.isArray(value)) return 'a list';
  if (typeof value === 'object') return 'a mapping';
  return `a ${typeof value}`;
}

/**
 * @param input the raw (variable-resolved) document, to tell "missing" from "wrong type" and
 *   to offer the keys that exist where an unknown key was found.
 * @param knownKeys the keys a mapping at a given path may have.
 */
export function problemsFromIssues(
  issues: readonly Issue[],
  input: unknown,
  knownKeys: (path: readonly PropertyKey[]) => readonly string[],
): Problem[] {
  const out: Problem[] = [];
  for (const issue of issues) {
    if (issue.code === 'unrecognized_keys') {
      const keys = knownKeys(issue.path);
      for (const key of issue.keys) {
        const suggestion = keys.length > 0 ? closest(key, [...keys]) : undefined;
        const close = suggestion !== undefined && distance(key.toLowerCase(), suggestion.toLowerCase()) <= Math.max(2, Math.floor(key.length / 3));
        out.push(
          error(
            pathOf([...issue.path, key]),
            'unknown key',
            close ? `did you mean "${suggestion}"?` : keys.length > 0 ? `known keys here: ${keys.join(', ')}` : undefined,
          ),
        );
      }
      continue;
    }
    const path = pathOf(issue.path);
    if (issue.code === 'invalid_type') {
      const value = valueAt(input, issue.path);
      if (value === undefined) {
        out.push(error(path, 'required'));
        continue;
      }
      // A schema-given message wins (it carries the hint); zod's own default is replaced.
      if (!issue.message.startsWith('Invalid input')) {
        const { message, hint } = split(issue.message);
        out.push(error(path, message, hint));
      } else {
        out.push(error(path, `should be ${article(issue.expected)}, not ${describe(value)}`));
      }
      continue;
    }
    if (issue.code === 'invalid_union' || issue.code === 'invalid_value') {
      const value = valueAt(input, issue.path);
      if (value === undefined) {
        out.push(error(path, 'required'));
        continue;
      }
    }
    const { message, hint } = split(issue.message);
    out.push(error(path, message, hint));
  }
  return out;
}

function article(expected: string): string {
  const noun = expected === 'object' ? 'mapping' : expected === 'array' ? 'list' : expected;
  return /^[aeiou]/.test(noun) ? `an ${noun}` : `a ${noun}`;
}

export function valueAt(input: unknown, path: readonly PropertyKey[]): unknown {
  let cur: unknown = input;
  for (const seg of path) {
    if (cur === null || typeof cur !== 'object') return undefined;
    cur = (cur as Record<PropertyKey, unknown>)[seg];
  }
  return cur;
}
