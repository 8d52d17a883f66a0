/** Colour, only when wanted: chalk's level is set once from --no-color / NO_COLOR / the terminal. */
import chalk, { Chalk, type ChalkInstance } from 'chalk';

export function makeStyle(color: boolean): ChalkInstance {
  return color ? chalk : new Chalk({ level: 0 });
}
