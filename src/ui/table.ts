/** A plain column table. Hand-written: twenty lines, and it must measure coloured text correctly. */
import { stripVTControlCharacters } from 'node:util';

export function table(headers: string[], rows: string[][]): string[] {
  const width = (s: string) => stripVTControlCharacters(s).length;
  const widths = headers.map((h, i) => Math.max(width(h), ...rows.map((r) => width(r[i] ?? ''))));
  const line = (cells: string[]) =>
    cells
      .map((c, i) => (i === cells.length - 1 ? c : c + ' '.repeat(Math.max(0, (widths[i] ?? 0) - width(c)))))
      .join('  ')
      .trimEnd();
  return [line(headers), line(widths.map((w) => '─'.repeat(w))), ...rows.map(line)];
}
