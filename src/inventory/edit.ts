/**
 * Edits of an inventory file that keep everything else byte for byte: comments, layout, key
 * order. They splice the text at the ranges the YAML parser reports, so the diff of an edit is
 * exactly the edited entry.
 */
import { isMap, isScalar, isSeq, parse, parseDocument, type Node, type YAMLMap } from 'yaml';
import { InputError } from '../errors.js';

export interface NewNodeEntry {
  name: string;
  host: string;
  weight?: number;
  ssh?: { user?: string; port?: number };
}

/** Replaces a scalar's value; undefined when the value is a ${VAR} reference (not ours to change). */
export function setScalar(text: string, path: string[], value: string): string | undefined {
  const doc = parseDocument(text);
  const node = doc.getIn(path, true) as Node | undefined;
  if (!isScalar(node) || !node.range) throw new Error(`${path.join('/')} is not a value in the inventory`);
  if (typeof node.value === 'string' && node.value.includes('${')) return undefined;
  const [start, end] = node.range;
  return text.slice(0, start) + plain(value) + text.slice(end);
}

export function addNode(text: string, entry: NewNodeEntry): string {
  const doc = parseDocument(text);
  const seq = doc.get('nodes', true);
  if (!isSeq(seq) || seq.items.length === 0) throw new Error('the inventory has no nodes list to add to');
  if (seq.flow) throw flowListError();
  const last = seq.items.at(-1) as Node;
  const [, lastEnd] = last.range ?? [0, text.length];
  const lastLineStart = text.lastIndexOf('\n', (last.range?.[0] ?? 0) - 1) + 1;
  const indent = /^(\s*)-/.exec(text.slice(lastLineStart))?.[1] ?? '  ';
  const fields: [string, string][] = [
    ['name', plain(entry.name)],
    ['host', plain(entry.host)],
    ...(entry.weight !== undefined ? [['weight', String(entry.weight)] as [string, string]] : []),
  ];
  const sshFields = Object.entries(entry.ssh ?? {})
    .filter(([, v]) => v !== undefined)
    .map(([k, v]) => [k, typeof v === 'number' ? String(v) : plain(String(v))] as [string, string]);
  let block: string;
  if (isMap(last) && (last as YAMLMap).flow) {
    const ssh = sshFields.length ? `, ssh: { ${sshFields.map(([k, v]) => `${k}: ${v}`).join(', ')} }` : '';
    block = `${indent}- { ${fields.map(([k, v]) => `${k}: ${v}`).join(', ')}${ssh} }`;
  } else {
    const pad = `${indent}  `;
    const lines = fields.map(([k, v], i) => `${i === 0 ? `${indent}- ` : pad}${k}: ${v}`);
    if (sshFields.length) lines.push(`${pad}ssh: { ${sshFields.map(([k, v]) => `${k}: ${v}`).join(', ')} }`);
    block = lines.join('\n');
  }
  // After the end of the last item's line (its trailing comment included).
  const lineEnd = text.indexOf('\n', Math.max(lastEnd - 1, 0));
  const at = lineEnd < 0 ? text.length : lineEnd + 1;
  const before = text.slice(0, at);
  return `${before}${before.endsWith('\n') ? '' : '\n'}${block}\n${text.slice(at)}`;
}

export function removeNode(text: string, name: string): string {
  const doc = parseDocument(text);
  const seq = doc.get('nodes', true);
  if (!isSeq(seq)) throw new Error('the inventory has no nodes list');
  if (seq.flow) throw flowListError();
  const item = seq.items.find((i) => isMap(i) && i.get('name') === name) as Node | undefined;
  if (!item?.range) throw new Error(`no node named ${name}`);
  const start = text.lastIndexOf('\n', item.range[0] - 1) + 1;
  const endLine = text.indexOf('\n', Math.max(item.range[1] - 1, item.range[0]));
  const end = endLine < 0 ? text.length : endLine + 1;
  return text.slice(0, start) + text.slice(end);
}

/** Values we write are names, hosts, image references and numbers: plain when YAML reads them back as the same string. */
function plain(value: string): string {
  // yes/no/on/off: YAML 1.1 readers take them for booleans. 1e5, 0x1f: YAML 1.2 takes them for numbers.
  return /^[A-Za-z0-9][A-Za-z0-9._/:@-]*$/.test(value) && !/^(yes|no|on|off)$/i.test(value) && parse(value) === value
    ? value
    : JSON.stringify(value);
}

/** `nodes: [ … ]` on one line has no line per entry to add or remove. */
function flowListError(): InputError {
  return new InputError('nodes is written as a flow list ([ … ])', 'write one entry per line (  - { name: …, host: … }) so newapi-cluster can edit the list');
}
