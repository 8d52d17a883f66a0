#!/usr/bin/env node
import { main } from '../dist/cli.js';

main(process.argv).then((code) => {
  process.exitCode = code;
  // Every connection, tunnel and timer of the run is closed by now. Should a library still hold a
  // handle open, the command must end anyway: a finished run never hangs the operator's shell or CI.
  setTimeout(() => process.exit(code), 2_000).unref();
});
