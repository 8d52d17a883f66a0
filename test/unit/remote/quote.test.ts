import { execFileSync } from 'node:child_process';
import { describe, expect, it } from 'vitest';
import { InputError } from '../../../src/errors.js';
import { quoteArg, toCommandLine } from '../../../src/remote/quote.js';

const cases: [string, string, string][] = [
  ['plain word', 'docker', 'docker'],
  ['path', '/opt/new-api/docker-compose.yml', '/opt/new-api/docker-compose.yml'],
  ['image reference', 'calciumion/new-api:v0.9.20', 'calciumion/new-api:v0.9.20'],
  ['option with value', '--format={{json .}}', "'--format={{json .}}'"],
  ['safe punctuation', 'a_b.c/d=e:f@g%h+i,j-k', 'a_b.c/d=e:f@g%h+i,j-k'],
  ['empty string', '', "''"],
  ['space', 'two words', "'two words'"],
  ['command substitution', '$(rm -rf /)', "'$(rm -rf /)'"],
  ['backticks', '`reboot`', "'`reboot`'"],
  ['variable', '$HOME', "'$HOME'"],
  ['single quote', "it's", "'it'\\''s'"],
  ['only a single quote', "'", "''\\'''"],
  ['double quotes', '"x"', `'"x"'`],
  ['newline', 'a\nb', "'a\nb'"],
  ['semicolon and pipes', 'a; b | c && d', "'a; b | c && d'"],
  ['glob', '*.yml', "'*.yml'"],
  ['tilde', '~/x', "'~/x'"],
  ['comment', '#x', "'#x'"],
  ['history expansion', '!!', "'!!'"],
  ['backslash', 'a\\b', "'a\\b'"],
  ['unicode', 'héllo', "'héllo'"],
  ['tab', 'a\tb', "'a\tb'"],
];

describe('quoteArg', () => {
  it.each(cases)('%s', (_name, input, expected) => {
    expect(quoteArg(input)).toBe(expected);
  });

  it.each(cases)('%s survives a real POSIX shell byte for byte', (_name, input) => {
    const out = execFileSync('sh', ['-c', `printf %s ${quoteArg(input)}`], { encoding: 'utf8' });
    expect(out).toBe(input);
  });

  it('rejects a NUL byte without echoing the value', () => {
    expect(() => quoteArg('secret\0value')).toThrow(InputError);
    expect(() => quoteArg('secret\0value')).toThrow(
      'a value passed to a remote command contains a NUL byte, which no remote shell can carry',
    );
    try {
      quoteArg('secret\0value');
    } catch (err) {
      expect((err as Error).message).not.toContain('secret');
    }
  });
});

describe('toCommandLine', () => {
  it('joins quoted words', () => {
    expect(toCommandLine(['docker', 'compose', '-p', 'prod', 'up', '-d'])).toBe('docker compose -p prod up -d');
    expect(toCommandLine(['printf', '%s\\n', "it's $(here)", ''])).toBe("printf '%s\\n' 'it'\\''s $(here)' ''");
  });

  it('prefixes sudo -n -- for sudo targets', () => {
    expect(toCommandLine(['cat', '/etc/nginx/conf.d/new api.conf'], { sudo: true })).toBe(
      "sudo -n -- cat '/etc/nginx/conf.d/new api.conf'",
    );
  });

  it('rejects an empty command and an assignment as the command', () => {
    expect(() => toCommandLine([])).toThrow('toCommandLine: the command (argv[0]) is empty');
    expect(() => toCommandLine([''])).toThrow('toCommandLine: the command (argv[0]) is empty');
    expect(() => toCommandLine(['PATH=/tmp', 'ls'])).toThrow('must be a program name, not an assignment');
  });

  it('runs hostile argv as exactly those arguments in a real shell', () => {
    const hostile = ['$(touch /tmp/pwned)', '`id`', "'", '"', '\n', ' ', '', '; ls', '&', '>x', '$((1+1))'];
    const out = execFileSync('sh', ['-c', toCommandLine(['printf', '[%s]', ...hostile])], { encoding: 'utf8' });
    expect(out).toBe(hostile.map((h) => `[${h}]`).join(''));
  });
});
