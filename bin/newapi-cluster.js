#!/usr/bin/env node
import { main } from '../dist/cli.js';

main(process.argv).then((code) => {
  process.exitCode = code;
  // Every connection, tunnel and timer of the run is closed by now, and the process ends by
  // itself. Should something still hold it open (a bug: the tests fail on this line), the command
  // ends anyway once what it printed has been written: a finished run never hangs a shell or CI.
  const exitWhenWritten = () => {
    if (process.stdout.writableLength === 0 && process.stderr.writableLength === 0) {
      process.stderr.write(`newapi-cluster: still held open after the run ended (${process.getActiveResourcesInfo().join(', ')}); exiting (please report this bug)\n`);
      process.exit(code);
    }
    setTimeout(exitWhenWritten, 200).unref();
  };
  setTimeout(exitWhenWritten, 2_000).unref();
});
