// souq-shim (node): the Node runtime's shim. Its mode is argv[2]:
//   session (the default): a warm sandbox of one user that runs many executions,
//     each in a fresh node process; the protocol and the run's rules are in session.js.
//   serve: a long-lived instance of one deployed handler; see serve.js.
'use strict';
const mode = process.argv[2] || 'session';
if (mode === 'serve') {
  require('./serve.js').serve(process.argv[3]);
} else if (mode === 'session') {
  require('./session.js').session();
} else {
  require('fs').writeSync(2, `souq-shim: unknown mode ${JSON.stringify(mode)}\n`);
  process.exit(70);
}
