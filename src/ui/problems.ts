import type { ChalkInstance } from 'chalk';
import { formatProblem, type Problem } from '../inventory/problems.js';

/** Problems as lines: `  ✖ nodes/2/host: required` then an indented hint. */
export function problemLines(problems: readonly Problem[], style: ChalkInstance): string[] {
  const lines: string[] = [];
  for (const p of problems) {
    const mark = p.severity === 'error' ? style.red('✖') : style.yellow('!');
    lines.push(`  ${mark} ${formatProblem(p)}`);
    if (p.hint) lines.push(style.dim(`      hint: ${p.hint}`));
  }
  return lines;
}
