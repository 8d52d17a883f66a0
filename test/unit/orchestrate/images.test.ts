/** Where a mirror registry serves an image: its registry host (if any) replaced by the mirror. */
import { describe, expect, it } from 'vitest';
import { mirrorReference } from '../../../src/orchestrate/images.js';

describe('mirrorReference', () => {
  it.each([
    ['calciumion/new-api:v0.9.20', 'mirror.example.com:5000', 'mirror.example.com:5000/calciumion/new-api:v0.9.20'],
    ['docker.io/calciumion/new-api:v0.9.20', 'mirror.example.com', 'mirror.example.com/calciumion/new-api:v0.9.20'],
    ['10.77.0.1:5000/calciumion/new-api:v0.9.21', 'mirror.example.com:5000', 'mirror.example.com:5000/calciumion/new-api:v0.9.21'],
    ['registry.example.com/team/new-api:v1.2.3', '10.0.0.5:5000', '10.0.0.5:5000/team/new-api:v1.2.3'],
    ['localhost/new-api:v0.9.20', 'mirror.example.com', 'mirror.example.com/new-api:v0.9.20'],
    ['localhost:5000/calciumion/new-api:v0.9.20', 'mirror.example.com', 'mirror.example.com/calciumion/new-api:v0.9.20'],
    ['calciumion/new-api', 'mirror.example.com', 'mirror.example.com/calciumion/new-api:latest'],
    ['calciumion/new-api:v0.9.20', 'mirror.example.com/hub/', 'mirror.example.com/hub/calciumion/new-api:v0.9.20'],
  ])('%s via %s → %s', (image, mirror, expected) => {
    expect(mirrorReference(image, mirror)).toBe(expected);
  });
});
