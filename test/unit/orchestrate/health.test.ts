/** What the health gate expects /api/status to report for an image. */
import { describe, expect, it } from 'vitest';
import { expectedVersion, normalizeVersion } from '../../../src/orchestrate/health.js';

describe('expectedVersion', () => {
  it.each([
    ['calciumion/new-api:v0.9.20', 'v0.9.20'],
    ['calciumion/new-api:0.9.21', '0.9.21'],
    ['calciumion/new-api:v0.9.21-rc.1', 'v0.9.21-rc.1'],
    ['10.77.0.1:5000/calciumion/new-api:v0.9.22', 'v0.9.22'],
    ['localhost:5000/new-api:v1.0', 'v1.0'],
  ])('%s → %s', (image, version) => {
    expect(expectedVersion(image)).toBe(version);
  });

  it.each([
    ['calciumion/new-api:latest'],
    ['calciumion/new-api'],
    ['localhost:5000/calciumion/new-api'],
    ['calciumion/new-api:nightly'],
    ['calciumion/new-api@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef'],
  ])('%s names no version', (image) => {
    expect(expectedVersion(image)).toBeUndefined();
  });
});

describe('normalizeVersion', () => {
  it('drops one leading v, so v0.9.20 and 0.9.20 compare equal', () => {
    expect(normalizeVersion('v0.9.20')).toBe('0.9.20');
    expect(normalizeVersion('0.9.20')).toBe('0.9.20');
    expect(normalizeVersion('v0.9.21-rc.1')).toBe('0.9.21-rc.1');
    expect(normalizeVersion('vv1')).toBe('v1');
    expect(normalizeVersion('0.9.20-dev')).toBe('0.9.20-dev');
  });

  it('tells different versions apart', () => {
    expect(normalizeVersion('v0.9.20')).not.toBe(normalizeVersion('v0.9.21'));
  });
});
