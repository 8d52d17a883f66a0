/** A problem found in an inventory, addressed by its path (`nodes/2/host`). */
export interface Problem {
  severity: 'error' | 'warning';
  path: string;
  message: string;
  hint?: string;
}

export function problem(severity: Problem['severity'], path: string, message: string, hint?: string): Problem {
  return hint === undefined ? { severity, path, message } : { severity, path, message, hint };
}

export const error = (path: string, message: string, hint?: string): Problem => problem('error', path, message, hint);
export const warning = (path: string, message: string, hint?: string): Problem => problem('warning', path, message, hint);

export function pathOf(segments: readonly PropertyKey[]): string {
  return segments.length === 0 ? '(top)' : segments.map(String).join('/');
}

/** `nodes/2/host: required` — the one-line form tests compare verbatim. */
export function formatProblem(p: Problem): string {
  return `${p.path}: ${p.message}`;
}
