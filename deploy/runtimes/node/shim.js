// souq-shim (node): the Node runtime's shim. It runs in `session` mode (argv[2], the
// default): a warm sandbox of one user that runs many executions, each in a fresh
// node process. The protocol and the run's rules are in session.js.
'use strict';
const mode = process.argv[2] || 'session';
if (mode !== 'session') {
  require('fs').writeSync(2, `souq-shim: unknown mode ${JSON.stringify(mode)}\n`);
  process.exit(70);
}
require('./session.js').session();
