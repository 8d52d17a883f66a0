/**
 * The node's `.env` holds passwords with any printable character, and is read by compose v1
 * (python-dotenv) and compose v2 (compose-go), each with its own rules. For a table of hostile
 * values: either validation accepts the value and `KEY=${envValue(v)}` reads back exactly v
 * under both (checked with the ports in test/support/env-parsers.ts, and with the real
 * docker-compose 1.29), or validation refuses it with a reason given here verbatim.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { parse as parseYaml } from 'yaml';
import { InputError } from '../../../src/errors.js';
import { checkEnvValue } from '../../../src/inventory/lint.js';
import type { Problem } from '../../../src/inventory/problems.js';
import { envValue } from '../../../src/render/render.js';
import { parseComposeV1, parseComposeV2, parseDockerEnvFile } from '../../support/env-parsers.js';

/** python and docker-compose start in about a second each; leave room for a slow machine. */
const SLOW = 60_000;

/** What compose's own environment holds while it reads the file: any expansion shows. */
const ENV = { HOME: '/root', VAR: 'expanded', USER: 'root', A: 'a-value' };

// The refusals, verbatim (problem message, then hint).
const LINE_BREAK = ['contains a line break', 'environment values must fit on one line'] as const;
const NUL = ['contains a NUL character, which no environment variable can hold', 'remove it'] as const;
const SURROGATE = ['holds a lone UTF-16 surrogate, which cannot be written as UTF-8', 'fix the value'] as const;
const V1_VARIABLE = ['contains ${…}, which compose v1 replaces with a variable even inside quotes (a .env file has no escape for it)', 'choose a value without ${…}'] as const;
const BOTH_HINT = 'choose a value without one of the two';
const QUOTE_AND_DOLLAR = [
  "contains both a single quote (') and $ before a letter, _, $ or {: compose v2 expands such a $ unless the value is in single quotes, and single quotes cannot carry a single quote (older compose v2 keeps the backslash of \\')",
  BOTH_HINT,
] as const;
const BACKSLASHES_AND_DOLLAR = [
  'contains both two backslashes in a row (\\\\) and $ before a letter, _, $ or {: compose v2 expands such a $ unless the value is in single quotes, and inside single quotes compose v1 reads \\\\ as one backslash',
  BOTH_HINT,
] as const;
const finalBackslash = (why: string) =>
  [`ends with a backslash (\\), which compose v1 or v2 misreads before a closing quote, and ${why}, so it needs quotes`, 'choose a value that does not end with a backslash'] as const;

type Refusal = readonly [message: string, hint: string];
/** [value, null when it must be carried, else the refusal] */
type Case = readonly [value: string, refusal: Refusal | null];

const PRINTABLE = Array.from({ length: 0x7f - 0x20 }, (_, i) => String.fromCharCode(0x20 + i));

const CASES: Case[] = [
  // Every printable ASCII character alone, first, inside and last: all of them can be carried.
  ...PRINTABLE.flatMap((c): Case[] => [
    [c, null],
    [`${c}Passw0rd`, null],
    [`Pass${c}w0rd`, null],
    [`Passw0rd${c}`, null],
  ]),
  // Blanks at either end (bare, both parsers trim them; quoted, both keep them).
  [' leading', null],
  ['trailing ', null],
  ['  both ends  ', null],
  ['\ttabs\t', null],
  ['\u00a0nbsp\u00a0', null],
  ['\u3000ideographic\u3000', null],
  ['\x1cfile separator\x1f', null], // Python's isspace() says yes, Go's unicode.IsSpace says no
  // $ in every shape.
  ['$VAR', null],
  ['pa$VARss', null],
  ['$$', null],
  ['pa$$word', null],
  ['$', null],
  ['$1', null],
  ['$-', null],
  ['$ſ', null], // Go's (?i)[_a-z] matches ſ: compose v2 reads "$ſ" as a variable
  ['$\u212a', null], // … and the Kelvin sign
  ['${', null],
  ['${VAR', null],
  ['${a:b}', null], // not a python-dotenv variable (its ":" must be ":-"), and compose v2 sees no $ inside single quotes
  ['${VAR}', V1_VARIABLE],
  ['pa${VAR}ss', V1_VARIABLE],
  ['${}', V1_VARIABLE],
  ['${VAR:-default}', V1_VARIABLE],
  ['${:-$}', V1_VARIABLE],
  ["it's ${VAR}", V1_VARIABLE],
  // Backslashes.
  ['\\', null],
  ['\\\\', null],
  ['a\\\\b', null],
  ['back\\slash\\n not a newline', null],
  ['C:\\path\\', null],
  ['ends in two\\\\', null],
  ['\\"', null],
  ["\\'", null],
  ['\\$VAR', null],
  ['"\\', finalBackslash('starts with a quote')],
  ["'\\", finalBackslash('starts with a quote')],
  [' x\\', finalBackslash('starts with a blank')],
  ['a #b\\', finalBackslash('has # after a blank')],
  ['$VAR\\', finalBackslash('has $ before a letter, _, $ or {, which compose v2 expands')],
  ['pa$$\\', finalBackslash('has $ before a letter, _, $ or {, which compose v2 expands')],
  ['pa$1\\', null],
  // Quotes.
  ["it's", null],
  ["'", null],
  ["''", null],
  ["'quoted'", null],
  ['"double"', null],
  ['"', null],
  ['mixed \'single\' and "double"', null],
  ["it's $1", null],
  ["pa'ss$", null],
  ["it's $VAR", QUOTE_AND_DOLLAR],
  ["pa'ss$$", QUOTE_AND_DOLLAR],
  ["'${", QUOTE_AND_DOLLAR],
  ["'$ſ", QUOTE_AND_DOLLAR],
  ['a\\\\b$VAR', BACKSLASHES_AND_DOLLAR],
  // Comments and =.
  ['a #not a comment', null],
  ['a\t#not a comment', null],
  ['a\u00a0#not a comment', null],
  ['#starts-with-hash', null],
  ['123#not-a-comment', null],
  ['a=b=c', null],
  ['=', null],
  ['==leading', null],
  ['', null],
  // Shell syntax means nothing here, but is carried.
  ['$(rm -rf /)', null],
  ['`reboot`', null],
  ['semi;colon|pipe&amp>redirect<in', null],
  ['glob * ? [a-z] ~user', null],
  ['export FOO=bar', null],
  // Unicode.
  ['unicode: 日本語 ✓ é 🚀', null],
  ['line\u2028separator\u2029', null],
  ['next\u0085line', null],
  ['\ufeffbom', null],
  ['zero\u200bwidth', null],
  // Whole passwords.
  ['P@ss w0rd!', null],
  ['p!a*s$s w#o@r=d\\"`', null],
  ['Tr0ub4dor&3', null],
  ['correct horse battery staple', null],
  ['p@$$w0rd #1 "best" \\ ever', null],
  // Never.
  ['a\nNODE_TYPE=master', LINE_BREAK],
  ['a\rb', LINE_BREAK],
  ['a\r\n', LINE_BREAK],
  ['a\0b', NUL],
  ['lone \ud800 surrogate', SURROGATE],
  ['lone \udc00 surrogate', SURROGATE],
];

function refusalOf(value: string): Problem[] {
  const out: Problem[] = [];
  checkEnvValue(out, 'cluster/env/X', value);
  return out;
}

const ACCEPTED = CASES.filter(([, refusal]) => refusal === null).map(([v]) => v);

describe('envValue and checkEnvValue agree on every hostile value', () => {
  it.each(CASES.map(([v, r]) => [JSON.stringify(v), v, r] as const))('%s', (_name, value, refusal) => {
    if (refusal === null) {
      expect(refusalOf(value)).toEqual([]);
      const rendered = envValue(value);
      const line = `X=${rendered}\n`;
      expect(parseComposeV1(line, ENV), `compose v1 reads ${line}`).toEqual({ X: value });
      expect(parseComposeV2(line, ENV), `compose v2 reads ${line}`).toEqual({ X: value });
      expect(parseComposeV2(line, ENV, { legacyQuotes: true }), `compose v2 (compose-go v1.16–v1.20) reads ${line}`).toEqual({ X: value });
      if (rendered === value) expect(parseDockerEnvFile(line, ENV), `docker --env-file reads ${line}`).toEqual({ X: value });
    } else {
      expect(refusalOf(value)).toEqual([{ severity: 'error', path: 'cluster/env/X', message: refusal[0], hint: refusal[1] }]);
      const thrown = (() => {
        try {
          return envValue(value);
        } catch (e) {
          return e;
        }
      })();
      expect(thrown).toBeInstanceOf(InputError);
      expect({ message: (thrown as InputError).message, hint: (thrown as InputError).hint }).toEqual({ message: `an environment value ${refusal[0]}`, hint: refusal[1] });
    }
  });

  it('and a whole file of them, one after another, reads back exactly (no value runs into the next line)', () => {
    const expected = Object.fromEntries(ACCEPTED.map((v, i) => [`HOSTILE_${i}`, v]));
    const text = `# header comment\n${Object.entries(expected)
      .map(([k, v]) => `${k}=${envValue(v)}\n`)
      .join('')}`;
    expect(parseComposeV1(text, ENV)).toEqual(expected);
    expect(parseComposeV2(text, ENV)).toEqual(expected);
    expect(parseComposeV2(text, ENV, { legacyQuotes: true })).toEqual(expected);
  });

  it('never echoes the value in a refusal (it may be a secret)', () => {
    for (const [value, refusal] of CASES) {
      if (refusal === null || value.length < 4) continue;
      for (const p of refusalOf(value)) expect(`${p.message} ${p.hint}`).not.toContain(value);
    }
  });

  it.each([
    ['plain', 'plain'],
    ['redis://default:pw@10.0.0.6:6379/0', 'redis://default:pw@10.0.0.6:6379/0'],
    ['', ''],
    ['a b', "'a b'"],
    ['$HOME', "'$HOME'"],
    ['a\\b', "'a\\b'"],
    ["it's", `"it's"`],
    ['a\\\\b', '"a\\\\\\\\b"'],
    ['say "hi" it\'s', `"say \\"hi\\" it's"`],
    ['C:\\dir\\', 'C:\\dir\\'],
    ['a b\\', 'a b\\'],
  ])('writes %j as %s', (value, form) => {
    expect(envValue(value)).toBe(form);
  });
});

describe('the oracles themselves', () => {
  it('docker run --env-file keeps quotes, trailing blanks and " #" as part of the value', () => {
    expect(parseDockerEnvFile("A='a b'\nB=\"x\"\nC=v  \nD=v #c\n  # comment\nE=$HOME\n")).toEqual({ A: "'a b'", B: '"x"', C: 'v  ', D: 'v #c', E: '$HOME' });
    expect(() => parseDockerEnvFile('A B=1\n')).toThrow(/contains whitespaces/);
  });

  it('compose v1 unescapes \\\\ inside single quotes, expands ${…} inside any quotes, and keeps $$, $NAME and \\$', () => {
    expect(parseComposeV1("A='a\\\\b'\nB='${VAR}'\nC=\"$$ $VAR \\$\"\nD=${NOPE:-dflt}\nE=x #c\nF=x\t#c\nG=a\u00a0#c\n", ENV)).toEqual({
      A: 'a\\b',
      B: 'expanded',
      C: '$$ $VAR \\$',
      D: 'dflt',
      E: 'x',
      F: 'x',
      G: 'a',
    });
  });

  it('compose v1 runs a double-quoted value whose closing quote follows a backslash on to the next quote, losing both lines', () => {
    expect(parseComposeV1('A="x\\\\"\nB="y"\nC=z\n')).toEqual({ C: 'z' });
    expect(parseComposeV1('A="x\\\\"\nB=y\n')).toEqual({ A: 'x\\', B: 'y' });
  });

  it('compose v2 keeps \\\\ inside single quotes, expands $ outside them, and cuts comments only at " #"', () => {
    expect(parseComposeV2("A='a\\\\b'\nB='${VAR}'\nC=\"$$ $VAR \\$VAR\"\nD=$VAR\nE=x #c\nF=x\t#c\nG=a\u00a0#c\n", ENV)).toEqual({
      A: 'a\\\\b',
      B: '${VAR}',
      C: '$ expanded $VAR',
      D: 'expanded',
      E: 'x',
      F: 'x\t#c',
      G: 'a\u00a0#c',
    });
    expect(() => parseComposeV2('A=${a:b}\n')).toThrow(/Invalid template/);
    expect(() => parseComposeV2("A='x\\'\n")).toThrow(/unterminated/);
  });

  it("compose v2 drops the backslash of \\' inside single quotes since compose-go 2.0, and kept it before", () => {
    expect(parseComposeV2("A='it\\'s'\n")).toEqual({ A: "it's" });
    expect(parseComposeV2("A='it\\'s'\n", {}, { legacyQuotes: true })).toEqual({ A: "it\\'s" });
  });

  // compose-go dotenv/godotenv_test.go TestParsing and TestExpanding, the cases within what the port covers.
  it.each([
    ['FOO=bar', 'bar'],
    ['FOO =bar', 'bar'],
    ['FOO= bar', 'bar'],
    ['FOO="bar"', 'bar'],
    ["FOO='bar'", 'bar'],
    ['FOO="escaped\\"bar"', 'escaped"bar'],
    ['FOO="\\"quoted\\""', '"quoted"'],
    [`FOO="'d'"`, "'d'"],
    ['FOO: 1', '1'],
    ['FOO: Foo=bar', 'Foo=bar'],
    ['FOO=1:B', '1:B'],
    ['export FOO=2', '2'],
    ["export FOO='\\n'", '\\n'],
    ['export\tFOO=2', '2'],
    ['  export FOO=2', '2'],
    ['export FOO="export A"', 'export A'],
    ['FOO="bar\\nbaz"', 'bar\nbaz'],
    ['FOO=a\\tb', 'a\\tb'],
    ['FOO="a\\tb"', 'a\tb'],
    ['FOO="Z\\aZ\\bZ\\fZ\\nZ\\rZ\\tZ\\vZ\\\\Z\\0123Z"', 'Z\x07Z\bZ\fZ\nZ\rZ\tZ\vZ\\ZSZ'],
    ['FOO=foobar=', 'foobar='],
    ['FOO=bar ', 'bar'],
    ['FOO=bar # this is foo', 'bar'],
    ['FOO=bar #', 'bar'],
    ['FOO=123#not-an-inline-comment', '123#not-an-inline-comment'],
    ['FOO="bar#baz"#', 'bar#baz'],
    ['FOO="bar#baz" # comment', 'bar#baz'],
    ["FOO='bar#baz' # comment", 'bar#baz'],
    ['FOO="bar\\n\\ b\\az"', 'bar\n\\ b\x07z'],
    ['FOO="bar\\\\\\n\\ b\\az"', 'bar\\\n\\ b\x07z'],
    ['FOO="bar\\\\r\\ b\\az"', 'bar\\r\\ b\x07z'],
    ['FOO="bar\\nbaz\\\\"', 'bar\nbaz\\'],
    ['FOO="\\0123"', 'S'],
    ['FOO="\\x07"', '\\x07'],
    ['FOO="\\u12e4"', '\\u12e4'],
    ["FOO='Let\\'s go!'", "Let's go!"],
    ['FOO="foo\\$BAR"', 'foo$BAR'],
    ['FOO="foo\\${BAR}"', 'foo${BAR}'],
    ["FOO='quote $BAR'", 'quote $BAR'],
    ['FOO=${UNSET_VAR:-Default Value}', 'Default Value'],
    ['FOO=${UNSET_VAR-Default Value}', 'Default Value'],
  ])('compose v2 agrees with compose-go TestParsing: %s', (line, value) => {
    expect(parseComposeV2(line)).toEqual({ FOO: value });
  });

  it('compose v2 fails where compose-go fails', () => {
    expect(() => parseComposeV2('lol$wut')).toThrow(/unexpected character/);
    for (const line of ['KEY="', 'KEY="value', 'KEY="value\\"', "KEY='value", "KEY='value\\'", `KEY='value"`]) {
      expect(() => parseComposeV2(line), line).toThrow(/unterminated quoted value/);
    }
  });

  it('compose v1 agrees with the installed python-dotenv on generated files', () => {
    const python = requireComposeV1().python;
    // Deterministic junk built from the characters that are syntax to either parser.
    const alphabet = ['a', 'Z', '1', ' ', '\t', '#', "'", '"', '\\', '$', '{', '}', ':', '-', '=', '\n', '\r', '\u00a0', '\x1c', 'é', 'export ', '_', '${', '${VAR}', '${NOPE:-d}', '\\"', "\\'", '\\\\'];
    let seed = 20240601;
    const rnd = (n: number) => ((seed = (seed * 1103515245 + 12345) & 0x7fffffff), seed % n);
    const texts = Array.from({ length: 3000 }, () => {
      let t = '';
      for (let l = 1 + rnd(4); l > 0; l--) {
        t += `${['A', 'B', 'VAR', 'K_1'][rnd(4)]}${rnd(5) === 0 ? ' ' : ''}=`;
        for (let j = rnd(10); j > 0; j--) t += alphabet[rnd(alphabet.length)];
        t += '\n';
      }
      return t;
    });
    const script = [
      'import io, json, os, sys, dotenv',
      'out = []',
      'for t in json.load(sys.stdin):',
      // env_vars_from_file: a file opened with encoding utf-8-sig in text mode (universal newlines).
      "    s = io.TextIOWrapper(io.BytesIO(t.encode('utf-8')), encoding='utf-8-sig').read()",
      '    d = dotenv.dotenv_values(stream=io.StringIO(s), interpolate=True)',
      // compose resolve_env_var: a bare KEY comes from compose's own environment, or is left out.
      '    d = {k: (v if v is not None else os.environ.get(k)) for k, v in d.items()}',
      '    out.append({k: v for k, v in d.items() if v is not None})',
      'json.dump(out, sys.stdout)',
    ].join('\n');
    const real = JSON.parse(
      execFileSync(python, ['-c', script], { input: JSON.stringify(texts), env: { PATH: '/usr/bin:/bin', ...ENV }, maxBuffer: 1 << 26, stdio: ['pipe', 'pipe', 'ignore'] }).toString(),
    ) as Record<string, string>[];
    const mismatches = texts.filter((t, i) => JSON.stringify(sortKeys(parseComposeV1(t, { PATH: '/usr/bin:/bin', ...ENV }))) !== JSON.stringify(sortKeys(real[i]!)));
    expect(mismatches.slice(0, 5)).toEqual([]);
  }, SLOW);
});

describe('the real docker-compose 1.29 reads a rendered .env back exactly', () => {
  const dirs: string[] = [];
  afterAll(() => {
    for (const d of dirs) rmSync(d, { recursive: true, force: true });
  });

  /**
   * `docker-compose config` needs no engine: it prints the service's `environment:` as
   * resolve_environment built it from env_file. compose/config/serialize.py `serialize_config`
   * then writes every string through `serialize_string_escape_dollar`, which doubles each `$`
   * (unless --no-interpolate, which we do not pass: that flag also changes how the env_file is
   * read). So `$$` in the output is one `$` read from the file, and nothing else is escaped.
   */
  function composeConfig(envText: string): Record<string, string> {
    const { bin } = requireComposeV1();
    const dir = mkdtempSync(join(tmpdir(), 'env-format-'));
    dirs.push(dir);
    writeFileSync(join(dir, 'docker-compose.yml'), 'services:\n  app:\n    image: busybox\n    env_file: .env\n');
    writeFileSync(join(dir, '.env'), envText);
    const run = spawnSync(bin, ['-f', join(dir, 'docker-compose.yml'), 'config'], { cwd: dir, env: { PATH: '/usr/bin:/bin', ...ENV, HOME: dir }, encoding: 'utf8' });
    if (run.status !== 0) throw new Error(`docker-compose config failed (${run.status}): ${run.stderr}`);
    // failsafe: every scalar a string, as compose meant it (PyYAML quotes what YAML 1.1 would retype).
    const doc = parseYaml(run.stdout, { schema: 'failsafe' }) as { services: { app: { environment?: Record<string, string> } } };
    const environment = doc.services.app.environment ?? {};
    return Object.fromEntries(Object.entries(environment).map(([k, v]) => [k, v.replaceAll('$$', '$')]));
  }

  const renderedFile = (values: readonly string[]) => {
    const expected = Object.fromEntries(values.map((v, i) => [`HOSTILE_${i}`, v]));
    const text = `# Managed by newapi-cluster\n${Object.entries(expected)
      .map(([k, v]) => `${k}=${envValue(v)}\n`)
      .join('')}`;
    return { expected, text };
  };

  it('for every value validation accepts, all in one file (docker-compose config)', () => {
    // PyYAML's emitter writes U+0085, U+2028 and U+2029 inside a single-quoted scalar as raw
    // YAML 1.1 line breaks followed by indentation (yaml/emitter.py write_single_quoted): PyYAML
    // itself folds U+0085 back into a space, and the yaml package, a YAML 1.2 reader, keeps the
    // indentation. `config` cannot show those values exactly; the next test reads them.
    const { expected, text } = renderedFile(ACCEPTED.filter((v) => !/[\x85\u2028\u2029]/.test(v)));
    const read = composeConfig(text);
    for (const [k, v] of Object.entries(expected)) expect(read[k], `${k}=${envValue(v)}`).toBe(v);
    expect(Object.keys(read).sort()).toEqual(Object.keys(expected).sort());
  }, SLOW);

  it("for every value validation accepts, all in one file (compose's own env_vars_from_file)", () => {
    const { python } = requireComposeV1();
    const { expected, text } = renderedFile(ACCEPTED);
    const dir = mkdtempSync(join(tmpdir(), 'env-format-'));
    dirs.push(dir);
    writeFileSync(join(dir, '.env'), text);
    const script = 'import json, sys\nfrom compose.config.environment import env_vars_from_file\njson.dump(env_vars_from_file(sys.argv[1]), sys.stdout)';
    const read = JSON.parse(execFileSync(python, ['-c', script, join(dir, '.env')], { env: { PATH: '/usr/bin:/bin', ...ENV }, stdio: ['ignore', 'pipe', 'pipe'] }).toString()) as Record<string, string>;
    expect(read).toEqual(expected);
  }, SLOW);

  it('and misreads, exactly as the port predicts, the forms envValue avoids', () => {
    const text = [
      "OLD_BACKSLASHES='a\\\\b'", // the old single-quoted form of a\\b
      "OLD_VARIABLE='${VAR}'", // the old single-quoted form of ${VAR}
      'DOLLARS="pa$$ $VAR \\$x"',
      'RUNS_ON="x\\\\"', // a double-quoted value ending in a backslash…
      'SWALLOWED="y"', // …swallows this line
      'TRIMMED=  x y  # comment',
      "QUOTE='it\\'s'",
      'NBSP=a\u00a0#c',
      'FS=\x1cx\x1c',
      'AFTER=ok',
      '',
    ].join('\n');
    const predicted = parseComposeV1(text, { PATH: '/usr/bin:/bin', ...ENV });
    expect(predicted).toEqual({
      OLD_BACKSLASHES: 'a\\b',
      OLD_VARIABLE: 'expanded',
      DOLLARS: 'pa$$ $VAR \\$x',
      TRIMMED: 'x y',
      QUOTE: "it's",
      NBSP: 'a',
      FS: 'x',
      AFTER: 'ok',
    });
    expect(composeConfig(text)).toEqual(predicted);
  }, SLOW);
});

function sortKeys(o: Record<string, string>): [string, string][] {
  return Object.entries(o).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
}

/** docker-compose 1.29 (and the python3-dotenv it runs on), or a failure that says how to get it. */
function requireComposeV1(): { bin: string; python: string } {
  const missing = 'docker-compose 1.29 (Debian package docker-compose, with python3-dotenv) is not installed: run `bash test/lab/lab.sh install`';
  const which = spawnSync('sh', ['-c', 'command -v docker-compose'], { encoding: 'utf8', env: { PATH: '/usr/local/bin:/usr/bin:/bin' } });
  const bin = which.stdout.trim();
  if (which.status !== 0 || bin === '') throw new Error(missing);
  const version = spawnSync(bin, ['version', '--short'], { encoding: 'utf8', env: { PATH: '/usr/bin:/bin' } });
  if (version.status !== 0 || !version.stdout.trim().startsWith('1.29.')) throw new Error(`${missing} (found ${bin}: ${(version.stdout + version.stderr).trim()})`);
  const python = '/usr/bin/python3';
  const dotenv = spawnSync(python, ['-c', 'import dotenv, dotenv.version; print(dotenv.version.__version__)'], { encoding: 'utf8' });
  if (dotenv.status !== 0) throw new Error(`${missing} (python3-dotenv: ${dotenv.stderr.trim()})`);
  return { bin, python };
}
