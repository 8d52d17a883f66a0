import type { Command } from 'commander';
import type { CliContext } from '../context.js';
import { registerInit } from './init.js';
import { registerRender } from './render.js';
import { registerValidate } from './validate.js';

export function registerCommands(program: Command, getContext: () => CliContext): void {
  registerInit(program, getContext);
  registerValidate(program, getContext);
  registerRender(program, getContext);
}
