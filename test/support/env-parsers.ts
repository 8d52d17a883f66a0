/**
 * Test oracles: faithful TypeScript ports of the three parsers that read a node's `.env`-style
 * file, so tests can check, byte for byte, what each of them makes of a line that `envValue()`
 * renders. They port the behaviour for what a renderer can produce (KEY=value lines, comments,
 * single and double quotes, escapes, `$` expansion, leading and trailing blanks, inline ` #`),
 * not every corner of each grammar. Where a port meets input its upstream would reject, it
 * throws (compose v2, docker) or drops the binding (compose v1), as upstream does.
 *
 * Each port works on JavaScript strings (UTF-16). Every delimiter these parsers look at is
 * ASCII, and no byte of a multi-byte UTF-8 sequence (nor a UTF-16 surrogate) is ASCII, so
 * walking code units finds the same delimiters as upstream's walk over bytes or runes.
 */

/** Python's `str.isspace()`, which is also what `\s` means in a Python 3 `str` pattern. */
const PY_SPACE = '\\t\\n\\v\\f\\r\\x1c-\\x20\\x85\\xa0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000';
/** The same without the line breaks `\n` and `\r`: Python's `[^\S\r\n]`. */
const PY_BLANK = '\\t\\v\\f\\x1c-\\x20\\x85\\xa0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000';
/** Go's `unicode.IsSpace` (Latin-1 blanks plus the White_Space property). */
const GO_SPACE = '\\t\\n\\v\\f\\r\\x20\\x85\\xa0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000';
/** compose-go's own `isSpace` (dotenv/parser.go): a blank, but never `\n`. */
const GO_DOTENV_SPACE = '\\t\\v\\f\\r\\x20\\x85\\xa0';

export type Env = Readonly<Record<string, string>>;

// ---------------------------------------------------------------------------------------------
// compose v1
// ---------------------------------------------------------------------------------------------

/**
 * docker-compose 1.29.2 (Debian 12 package `docker-compose` 1.29.2-3) reading `env_file:`:
 * compose/config/config.py `resolve_environment` calls compose/config/environment.py
 * `env_vars_from_file(filename, interpolate=True)`, which is
 * `dotenv.dotenv_values(path, encoding='utf-8-sig', interpolate=True)` and keeps the values as
 * they come (only with `--no-interpolate` does it double every `$`). The project's own `.env`
 * (`Environment.from_env_file`) goes through the same function. python-dotenv is Debian's
 * `python3-dotenv` 0.21.0-1: dotenv/main.py (`DotEnv.dict`, `resolve_variables`),
 * dotenv/parser.py (`parse_stream`, `parse_binding`, `parse_value`), dotenv/variables.py.
 *
 * Rules ported:
 * - The file is read in text mode: a leading UTF-8 BOM is dropped (utf-8-sig) and `\r\n`, `\r`
 *   become `\n` (universal newlines).
 * - A binding: any whitespace (Python's, i.e. `str.isspace`), an optional `export `, a key
 *   (`'…'` or `[^=#\s]+`; `#` starts a comment line), blanks, `=`, blanks (all skipped), a value,
 *   then an optional comment `[blanks]#…` and the end of the line. Anything else left on the
 *   line makes the binding an error: it is dropped with a warning, and reading resumes on the
 *   next line. A key without `=` has the value None; compose then takes it from its own
 *   environment (`resolve_env_var`), or leaves it out.
 * - `'…'`: the regex `'((?:\\'|[^'])*)'` (backtracking, greedy, and `[^']` crosses line
 *   breaks), then `\\` → `\` and `\'` → `'`.
 * - `"…"`: the regex `"((?:\\"|[^"])*)"`, then `\\ \' \" \a \b \f \n \r \t \v` are decoded.
 *   Because of the greedy regex, a quoted value whose closing quote follows a backslash runs on
 *   to the next matching quote further down the file, if there is one.
 * - Unquoted: the rest of the line; `\s+#.*` is cut, then trailing whitespace. No escapes.
 * - Then, for every value however quoted, `${NAME}` and `${NAME:-default}` (the regex
 *   `\$\{([^}:]*)(?::-([^}]*))?\}`) are replaced by NAME from the environment (compose's own
 *   environment, overridden by the keys read earlier in the file), else by the default, else by "".
 *   `$NAME`, `$$` and `\$` mean nothing: there is no escape for `${`.
 */
export function parseComposeV1(text: string, env: Env = {}): Record<string, string> {
  const s = text.replace(/^\uFEFF/, '').replace(/\r\n?/g, '\n');
  let pos = 0;
  /** Reader.read_regex: match at the position and move past the match, or fail. */
  const read = (re: RegExp): RegExpExecArray => {
    re.lastIndex = pos;
    const m = re.exec(s);
    if (!m) throw new V1ParseError();
    pos = re.lastIndex;
    return m;
  };
  const multilineWhitespace = new RegExp(`[${PY_SPACE}]*`, 'y');
  const exportPrefix = new RegExp(`(?:export[${PY_BLANK}]+)?`, 'y');
  const whitespace = new RegExp(`[${PY_BLANK}]*`, 'y');
  const singleQuotedKey = /'([^']+)'/y;
  const unquotedKey = new RegExp(`([^=#${PY_SPACE}]+)`, 'y');
  const equalSign = new RegExp(`(=[${PY_BLANK}]*)`, 'y');
  const singleQuotedValue = /'((?:\\'|[^'])*)'/y;
  const doubleQuotedValue = /"((?:\\"|[^"])*)"/y;
  const unquotedValue = /([^\r\n]*)/y;
  const comment = new RegExp(`(?:[${PY_BLANK}]*#[^\\r\\n]*)?`, 'y');
  const endOfLine = new RegExp(`[${PY_BLANK}]*(?:\\r\\n|\\n|\\r|$)`, 'y');
  const restOfLine = /[^\r\n]*(?:\r|\n|\r\n)?/y;
  // Python's `.` is anything but \n (JavaScript's also stops at \r, U+2028 and U+2029).
  const inlineComment = new RegExp(`[${PY_SPACE}]+#[^\\n]*`);
  const trailingSpace = new RegExp(`[${PY_SPACE}]+$`);

  const bindings: [string, string | null][] = [];
  while (pos < s.length) {
    try {
      read(multilineWhitespace);
      if (pos >= s.length) break;
      read(exportPrefix);
      let key: string | null;
      if (s[pos] === '#') key = null;
      else if (s[pos] === "'") key = read(singleQuotedKey)[1]!;
      else key = read(unquotedKey)[1]!;
      read(whitespace);
      let value: string | null = null;
      if (s[pos] === '=') {
        read(equalSign);
        const c = s[pos];
        if (c === "'") value = read(singleQuotedValue)[1]!.replace(/\\[\\']/g, (e) => e[1]!);
        else if (c === '"') value = read(doubleQuotedValue)[1]!.replace(/\\[\\'"abfnrtv]/g, (e) => PY_ESCAPES[e[1]!]!);
        else if (c === undefined || c === '\n' || c === '\r') value = '';
        else value = read(unquotedValue)[1]!.replace(inlineComment, '').replace(trailingSpace, '');
      }
      read(comment);
      read(endOfLine);
      if (key !== null) bindings.push([key, value]);
    } catch (e) {
      if (!(e instanceof V1ParseError)) throw e;
      // "Python-dotenv could not parse statement starting at line N": the binding is dropped and
      // reading goes on after the rest of the line where the failed read stopped.
      read(restOfLine);
    }
  }

  // resolve_variables(values, override=True): os.environ, overridden by the keys read so far.
  const out: Record<string, string> = {};
  const scope: Record<string, string> = { ...env };
  for (const [key, value] of bindings) {
    if (value === null) {
      // compose's resolve_env_var takes a bare KEY from its own environment, or leaves it out.
      if (Object.prototype.hasOwnProperty.call(env, key)) out[key] = env[key]!;
      scope[key] = ''; // a None in resolve_variables' map reads as ""
      continue;
    }
    const result = value.replace(/\$\{([^}:]*)(?::-([^}]*))?\}/g, (_m, name: string, dflt: string | undefined) =>
      Object.prototype.hasOwnProperty.call(scope, name) ? scope[name]! : (dflt ?? ''),
    );
    out[key] = scope[key] = result;
  }
  return out;
}

class V1ParseError extends Error {}

const PY_ESCAPES: Record<string, string> = { '\\': '\\', "'": "'", '"': '"', a: '\x07', b: '\b', f: '\f', n: '\n', r: '\r', t: '\t', v: '\v' };

// ---------------------------------------------------------------------------------------------
// compose v2
// ---------------------------------------------------------------------------------------------

export interface ComposeV2Options {
  /**
   * The quoted-value loop of compose-go v1.16.0 – v1.20.x (from commit 166f12c until 81e1e90,
   * which was first released in v2.0.0-beta.2), used by the docker compose v2 releases built on
   * compose-go v1: the value is the raw text between the quotes, so `\'` stays `\'` inside
   * single quotes (and `\"` stays `\"` until expandEscapes). Default: the current loop, where
   * the backslash before the quote character is dropped.
   */
  legacyQuotes?: boolean;
}

/**
 * compose v2 reading `env_file:` (and the project `.env`): compose-spec/compose-go
 * dotenv/parser.go (`parser.parse`, `getStatementStart`, `locateKeyName`, `extractVarValue`,
 * `expandEscapes`), dotenv/godotenv.go (`expandVariables`) and template/template.go
 * (`Substitute`), as of compose-go v2.x (HEAD e70e961, after v2.13.0). In v1.17 – v1.20
 * parser.go differs only in the quoted-value loop (see `legacyQuotes`), and template.go only in
 * how `${name:-default}` defaults are read, which no value envValue() renders reaches. types/project.go
 * `WithServicesEnvironmentResolved` (v1.x: `ResolveServicesEnvironment`) parses each env_file
 * with a lookup that tries the project environment first (the shell's variables and the
 * project `.env`), then the service's `environment:`; keys already read from the same file
 * are the last resort.
 *
 * Rules ported:
 * - A leading UTF-8 BOM is dropped. Blank space (Go `unicode.IsSpace`) is skipped; `#` skips to
 *   the end of the line. `export ` is dropped. The key runs to the first `=`, `:` (yaml style) or
 *   line break (a line break: the key is taken from the lookup, if it is there); blanks in
 *   it are skipped, and any character other than letters, digits, `_ . - [ ]` is an error.
 * - After the `=`, blanks (`isSpace`: `\t \v \f \r`, space, U+0085, U+00A0) are skipped.
 * - Unquoted: the rest of the line, cut at the first ` #` (a space, not a tab), trailing
 *   `unicode.IsSpace` trimmed, then `$` expansion. No escapes.
 * - `'…'` or `"…"`: bytes up to the first quote that no unpaired backslash precedes. A backslash
 *   before any other byte is kept with it (`\\` stays `\\`); before the quote character it is
 *   dropped (not in `legacyQuotes`). Unterminated: an error. Whatever follows the closing quote
 *   is read as the next statement.
 * - Double quotes only: `\a \b \c? \f \n \r \t \v \" \\` and `\0`+up to 3 digits are unescaped
 *   (as Go's `strconv.UnquoteChar`; `\$` becomes `$$`), then `$` expansion. Single quotes: none.
 * - `$` expansion (compose-go's template): `$$` → `$`; `$name` and `${name}` (name:
 *   `[_a-z][_a-z0-9]*`, case-insensitive with Go's folding, so also ſ and K) → the value, or "";
 *   `${name:-d}`, `${name-d}`, `${name:+d}`, `${name+d}`, `${name:?e}`, `${name?e}`;
 *   any other `${` is an error ("Invalid template"). `$` before anything else is literal.
 */
export function parseComposeV2(text: string, env: Env = {}, options: ComposeV2Options = {}): Record<string, string> {
  const out: Record<string, string> = {};
  const lookup = (k: string): string | undefined => (Object.prototype.hasOwnProperty.call(env, k) ? env[k] : Object.prototype.hasOwnProperty.call(out, k) ? out[k] : undefined);
  let src = text.replace(/^\uFEFF/, '');
  const dotenvSpace = new RegExp(`^[${GO_DOTENV_SPACE}]*`);
  const dotenvSpaceChar = new RegExp(`^[${GO_DOTENV_SPACE}]$`);
  const nonSpace = new RegExp(`[^${GO_SPACE}]`);
  const trailingSpace = new RegExp(`[${GO_SPACE}]+$`);
  for (;;) {
    // getStatementStart
    for (;;) {
      const i = src.search(nonSpace);
      if (i === -1) return out;
      src = src.slice(i);
      if (src[0] !== '#') break;
      const nl = src.indexOf('\n');
      if (nl === -1) return out;
      src = src.slice(nl);
    }
    // locateKeyName
    if (/^export[\t\n\f\r ]/.test(src)) src = src.slice('export'.length).replace(dotenvSpace, '');
    let key = '';
    let offset = -1;
    let inherited = false;
    for (let i = 0; i < src.length; ) {
      const cp = src.codePointAt(i)!;
      const ch = String.fromCodePoint(cp);
      if (dotenvSpaceChar.test(ch)) {
        i += ch.length;
        continue;
      }
      if (ch === '=' || ch === ':' || ch === '\n') {
        key = src.slice(0, i);
        offset = i + 1;
        inherited = ch === '\n';
        break;
      }
      if (!/^[_.\-[\]\p{L}\p{N}]$/u.test(ch)) throw new Error(`compose v2: unexpected character ${JSON.stringify(ch)} in variable name ${JSON.stringify(src.split('\n')[0])}`);
      i += ch.length;
    }
    if (offset === -1) {
      // No `=`, `:` or line break: upstream leaves the key empty and reads all of src as its value.
      key = '';
      offset = 0;
    }
    key = key.replace(trailingSpace, '');
    src = src.slice(offset).replace(dotenvSpace, '');
    if (key.includes(' ')) throw new Error('compose v2: key cannot contain a space');
    if (inherited) {
      const v = lookup(key);
      if (v !== undefined) out[key] = v;
      continue;
    }
    // extractVarValue
    const quote = src[0];
    if (quote !== "'" && quote !== '"') {
      const nl = src.indexOf('\n');
      let value = nl === -1 ? src : src.slice(0, nl);
      src = nl === -1 ? '' : src.slice(nl + 1);
      const cut = value.indexOf(' #');
      if (cut !== -1) value = value.slice(0, cut);
      value = value.replace(trailingSpace, '');
      out[key] = substitute(value, lookup);
      continue;
    }
    let escaped = false;
    let chars = '';
    let end = -1;
    for (let i = 1; i < src.length; i++) {
      const c = src[i]!;
      if (c !== quote) {
        if (!escaped && c === '\\') {
          escaped = true;
          if (options.legacyQuotes) chars += c;
          continue;
        }
        if (escaped) {
          escaped = false;
          if (!options.legacyQuotes) chars += '\\';
        }
        chars += c;
        continue;
      }
      if (escaped) {
        escaped = false;
        chars += c;
        continue;
      }
      end = i;
      break;
    }
    if (end === -1) throw new Error(`compose v2: unterminated quoted value ${src.split('\n')[0]}`);
    out[key] = quote === '"' ? substitute(expandEscapes(chars), lookup) : chars;
    src = src.slice(end + 1);
  }
}

/** compose-go dotenv/parser.go `expandEscapes`. */
function expandEscapes(s: string): string {
  return s.replace(/\\(?:[abcfnrtv$"\\]|0[0-9]{0,3})/g, (m) => {
    if (m === '\\$') return '$$';
    if (m.startsWith('\\0')) {
      // `\0ddd` → `\ddd`, which strconv.UnquoteChar reads only as exactly three octal digits ≤ 255.
      const digits = m.slice(2);
      if (!/^[0-7]{3}$/.test(digits) || parseInt(digits, 8) > 255) return m;
      return String.fromCodePoint(parseInt(digits, 8));
    }
    const c = m[1]!;
    const map: Record<string, string> = { a: '\x07', b: '\b', f: '\f', n: '\n', r: '\r', t: '\t', v: '\v', '"': '"', '\\': '\\' };
    return map[c] ?? m; // `\c` is not an escape strconv knows: kept as it is
  });
}

/** The name class `[_a-z]` under Go's `(?i)`: simple case folding adds ſ (U+017F) and K (U+212A). */
const NAME_START = '_a-zA-Z\\u017f\\u212a';
const NAME_REST = '_a-zA-Z0-9\\u017f\\u212a';
/** compose-go template.DefaultPattern: `\$(?i:(\$)|([_a-z][_a-z0-9]*)|{(?:([_a-z][_a-z0-9]*(?::?[-+?](.*))?)}|()))`. */
const TEMPLATE = new RegExp(`\\$(?:(\\$)|([${NAME_START}][${NAME_REST}]*)|\\{(?:([${NAME_START}][${NAME_REST}]*(?::?[-+?]([^\\n]*))?)\\}|()))`, 'g');

/** compose-go template/template.go `Substitute` with `DefaultReplacementFunc`. */
function substitute(template: string, lookup: (k: string) => string | undefined): string {
  return template.replace(TEMPLATE, (...args: unknown[]) => {
    let substring = args[0] as string;
    const sepOf = pickSeparator(substring);
    const close = firstBraceClosingIndex(substring);
    let rest = '';
    if (close > -1) {
      rest = substring.slice(close + 1);
      substring = substring.slice(0, close + 1);
    }
    const m = new RegExp(TEMPLATE.source).exec(substring)!;
    if (m[1]) return m[1];
    const named = m[2];
    const braced = m[3];
    if (!named && !braced) throw new Error(`compose v2: Invalid template: ${JSON.stringify(template)}`);
    if (braced) {
      const applied = sepOf && braced.includes(sepOf) ? applySeparator(braced, sepOf, lookup) : undefined;
      if (applied !== undefined) return applied + substitute(rest, lookup);
      return lookup(braced) ?? '';
    }
    return lookup(named!) ?? '';
  });
}

/** `getSubstitutionFunctionForTemplate`: the separator that appears first in the matched text. */
function pickSeparator(s: string): string | undefined {
  let best: string | undefined;
  let bestAt = Infinity;
  for (const sep of [':?', '?', ':-', '-', ':+', '+']) {
    const i = s.indexOf(sep);
    if (i >= 0 && i < bestAt) {
      best = sep;
      bestAt = i;
    }
  }
  return best;
}

function applySeparator(substitution: string, sep: string, lookup: (k: string) => string | undefined): string {
  const cut = substitution.indexOf(sep);
  const name = substitution.slice(0, cut);
  const arg = substitution.slice(cut + sep.length);
  const value = lookup(name);
  switch (sep) {
    case ':-':
      return value === undefined || value === '' ? substitute(arg, lookup) : value;
    case '-':
      return value === undefined ? substitute(arg, lookup) : value;
    case ':+':
      return value !== undefined && value !== '' ? substitute(arg, lookup) : (value ?? '');
    case '+':
      return value !== undefined ? substitute(arg, lookup) : '';
    default: {
      const ok = sep === ':?' ? value !== undefined && value !== '' : value !== undefined;
      if (!ok) throw new Error(`compose v2: required variable ${name} is missing a value: ${substitute(arg, lookup)}`);
      return value!;
    }
  }
}

function firstBraceClosingIndex(s: string): number {
  let open = 0;
  for (let i = 0; i < s.length; i++) {
    if (s[i] === '}') {
      open--;
      if (open === 0) return i;
    }
    if (s[i] === '{') {
      open++;
      i++;
    }
  }
  return -1;
}

// ---------------------------------------------------------------------------------------------
// docker run --env-file
// ---------------------------------------------------------------------------------------------

/**
 * `docker run --env-file` (and `--label-file`): docker/cli pkg/kvfile/kvfile.go
 * `parseKeyValueFile` (formerly opts/file.go `parseKeyValueFile`, called from opts/envfile.go
 * `ParseEnvFile`), as of docker/cli v29 (the same rules since Docker 1.x):
 * - lines split by `bufio.ScanLines` (`\n`, a trailing `\r` dropped); the BOM is dropped on line 1;
 *   invalid UTF-8 is an error;
 * - leading whitespace (`unicode.IsSpace`) of the line is dropped; empty lines and lines
 *   starting with `#` are skipped;
 * - the key is everything before the first `=`; an empty key, or one holding a space or tab,
 *   is an error; a line without `=` takes the value from the caller's environment, if set;
 * - the value is the rest of the line exactly: no quotes, no escapes, no comments, no `$`
 *   expansion, trailing blanks kept.
 */
export function parseDockerEnvFile(text: string, env: Env = {}): Record<string, string> {
  const out: Record<string, string> = {};
  const lines = text.split('\n');
  if (lines[lines.length - 1] === '') lines.pop();
  lines.forEach((raw, n) => {
    let line = raw.endsWith('\r') ? raw.slice(0, -1) : raw;
    if (n === 0) line = line.replace(/^\uFEFF/, '');
    line = line.replace(new RegExp(`^[${GO_SPACE}]+`), '');
    if (line === '' || line[0] === '#') return;
    const eq = line.indexOf('=');
    const key = eq === -1 ? line : line.slice(0, eq);
    if (key === '') throw new Error(`docker: no variable name on line '${line}'`);
    if (/[ \t]/.test(key)) throw new Error(`docker: variable '${key}' contains whitespaces`);
    if (eq !== -1) out[key] = line.slice(eq + 1);
    else if (Object.prototype.hasOwnProperty.call(env, key)) out[key] = env[key]!;
  });
  return out;
}
