import type { Command } from 'commander';
import type { CliContext } from '../context.js';
import { registerCheck } from './check.js';
import { registerDeploy } from './deploy.js';
import { registerLock } from './lock.js';
import { registerStatus } from './status.js';
import { registerLogs } from './logs.js';
import { registerUpgrade } from './upgrade.js';
import { registerScale } from './scale.js';
import { registerInit } from './init.js';
import { registerRender } from './render.js';
import { registerValidate } from './validate.js';
import { registerBackup } from './backup.js';
import { registerPrune } from './prune.js';
import { registerReleases } from './releases.js';
import { registerRestore } from './restore.js';
import { registerTls } from './tls.js';

export function registerCommands(program: Command, getContext: () => CliContext): void {
  registerInit(program, getContext);
  registerValidate(program, getContext);
  registerRender(program, getContext);
  registerCheck(program, getContext);
  registerDeploy(program, getContext);
  registerStatus(program, getContext);
  registerLock(program, getContext);
  registerScale(program, getContext);
  registerUpgrade(program, getContext);
  registerLogs(program, getContext);
  registerBackup(program, getContext);
  registerRestore(program, getContext);
  registerReleases(program, getContext);
  registerPrune(program, getContext);
  registerTls(program, getContext);
}
